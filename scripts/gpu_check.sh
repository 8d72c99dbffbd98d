#!/usr/bin/env bash
# Everything GPU in one call on the device machine (it has no Rust): the CUDA test and bench
# binaries built here by scripts/build_cuda.sh, run side by side with the PyTorch/HF twins.
# Usage there: bash scripts/gpu_check.sh [tests] [kernel] [decode] [long] [attention] [gated] [train] [dba] [hf] [profile] [memory] [phases]
# (all but profile, memory, phases and gated by default; gated: training steps with the kernels not
# yet verified on a GPU (src/kernels/unverified.rs) off, then on; attention: the fused training attention against
# the composite path; profile: where a training step's time goes, by
# phase and by kernel (ncu); phases: by phase only; memory: whether training's GPU memory is flat
# over 200 steps; dba: the train comparison at the DBA student shape of presets/smollm2_135m_dba.yml;
# TORCH_COMPILE=1 adds torch.compile to the train and dba comparisons)
set -uo pipefail
BIN=${BIN:-target/device}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
STEPS="$*"
has() { { [ -z "$STEPS" ] && [ "$1" != profile ] && [ "$1" != memory ] && [ "$1" != phases ] && [ "$1" != gated ]; } || [[ " $STEPS " == *" $1 "* ]]; }
for f in "$BIN"/*.xz; do [ -e "$f" ] && xz -dkf "$f"; done
chmod +x "$BIN"/gpu_kernels "$BIN"/gpu "$BIN"/train "$BIN"/caramba 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/nvidia-smi.txt"
if has tests; then
  echo "== kernel tests"; "$BIN"/gpu_kernels --nocapture --test-threads 1 2>&1 | tee "$OUT/tests.txt"
  echo "== --device cuda without a GPU problem, and with one"; "$BIN"/caramba generate --model "random:presets/configs/llama-3.2-1b.json" --prompt x --device cuda:7 2>&1 | tail -3
fi
if has kernel || has decode || has long; then
  sel=""; for s in kernel decode long; do has $s && sel="$sel $s"; done
  echo "== gpu bench:$sel"; "$BIN"/gpu $sel 2>&1 | tee "$OUT/gpu_bench.txt"
fi
if has attention; then
  # The fused flash-attention training kernels (kernels/flash_attention.cu) against the composite
  # candle ops: one layer's forward and forward+backward, then whole training steps with the
  # composite path (CARAMBA_FUSED_TRAINING=0) next to the default fused one.
  echo "== training attention: fused vs composite, one layer"; "$BIN"/gpu attention 2>&1 | tee "$OUT/gpu_attention.txt"
  SHAPE23="--d-model 576 --layers 30 --heads 9 --kv-heads 3 --d-ff 1536 --vocab 49152 --block 512 --batch 16 --steps 23"
  echo "== train 135M shape, bf16: composite attention, then fused"
  CARAMBA_FUSED_TRAINING=0 "$BIN"/train $SHAPE23 --device cuda --dtype bf16 2>&1 | grep -E "attention:|tokens/s" | sed 's/\x1b\[[0-9;]*m//g' | tail -2 | tee "$OUT/train_composite.txt"
  "$BIN"/train $SHAPE23 --device cuda --dtype bf16 2>&1 | grep -E "attention:|tokens/s" | sed 's/\x1b\[[0-9;]*m//g' | tail -2 | tee "$OUT/train_fused.txt"
fi
if has gated; then
  # The fused RMSNorm backward and cross-entropy (gated off until verified): the same 23 steps with
  # the gate off (the default path) and on, same shapes, back to back.
  G23="--d-model 576 --layers 30 --heads 9 --kv-heads 3 --d-ff 1536 --vocab 49152 --block 512 --batch 16 --steps 23"
  echo "== train 135M shape, bf16: gated kernels off, then on"
  "$BIN"/train $G23 --device cuda --dtype bf16 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | tail -2 | tee "$OUT/train_gated_off.txt"
  CARAMBA_UNVERIFIED_KERNELS=1 "$BIN"/train $G23 --device cuda --dtype bf16 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | tail -2 | tee "$OUT/train_gated_on.txt"
fi
if has hf; then
  echo "== HF transformers decode"; PYTHONUNBUFFERED=1 python3 scripts/bench_decode_hf.py --config presets/configs/llama-3.2-1b.json ${HF_COMPILE:+--compile} 2>&1 | grep -v Warning | tee "$OUT/hf_decode.txt"
fi
SHAPE="--d-model 576 --layers 30 --heads 9 --kv-heads 3 --d-ff 1536 --vocab 49152 --block 512 --batch 16"
if has profile; then
  echo "== train step profile (device synchronized at each phase; GPU memory after each phase)"
  CARAMBA_PROFILE_STEPS=1 "$BIN"/train $SHAPE --steps 8 --device cuda --dtype bf16 2>&1 | grep -E "step profile|GPU memory|tokens/s" | tee "$OUT/train_profile.txt"
  # One whole step (the 5th) under ncu: the trainer opens the profiler's capture range around it.
  echo "== GPU time per kernel over one training step (ncu --profile-from-start off)"
  CARAMBA_CUDA_PROFILE_STEP=5 timeout 300 ncu --profile-from-start off --clock-control none --metrics gpu__time_duration.sum --csv "$BIN"/train $SHAPE --steps 5 --device cuda --dtype bf16 > "$OUT/ncu_train.csv" 2>"$OUT/ncu_train.err"
  python3 scripts/ncu_summary.py "$OUT/ncu_train.csv" 40 | tee "$OUT/ncu_train_summary.txt"
fi
if has memory; then
  # Is training's GPU memory flat step over step? 200 steps at 16 x 512, the train line every 25
  # steps with the CUDA pool's bytes in use (tensors) and the driver's total.
  echo "== GPU memory over 200 training steps (16 x 512)"
  "$BIN"/train $SHAPE --steps 200 --log-every 25 --device cuda --dtype bf16 2>&1 | grep -E "GPU|tokens/s" | sed 's/\x1b\[[0-9;]*m//g' | tee "$OUT/train_memory.txt"
fi
if has phases; then
  echo "== train step phases (device synchronized at each phase boundary)"
  CARAMBA_PROFILE_STEPS=1 "$BIN"/train $SHAPE --steps 8 --device cuda --dtype bf16 2>&1 | grep -E "step profile|GPU memory|tokens/s" | tee "$OUT/train_phases.txt"
fi
if has train; then
  SHAPE="--d-model 576 --layers 30 --heads 9 --kv-heads 3 --d-ff 1536 --vocab 49152 --block 512 --batch 16 --steps 23"
  echo "== train 135M shape, bf16: caramba vs torch eager"
  "$BIN"/train $SHAPE --device cuda --dtype bf16 2>&1 | tail -2 | tee "$OUT/train_caramba.txt"
  PYTHONUNBUFFERED=1 python3 scripts/bench_train_torch.py $SHAPE --device cuda --dtype bf16 --threads 8 2>&1 | tail -2 | tee "$OUT/train_torch.txt"
  [ -n "${TORCH_COMPILE:-}" ] && PYTHONUNBUFFERED=1 python3 scripts/bench_train_torch.py $SHAPE --device cuda --dtype bf16 --threads 8 --compile 2>&1 | tail -2 | tee "$OUT/train_torch_compile.txt"
  "$BIN"/train $SHAPE --device cuda --dtype bf16 2>&1 | tail -1 | tee -a "$OUT/train_caramba.txt"
fi
if has dba; then
  # The student of presets/smollm2_135m_dba.yml (sem 16 + geo 16 q/k and 32 v per head), same
  # 16 x 512 batches, next to the PyTorch twin's DBA block.
  DBA="--d-model 576 --layers 30 --heads 9 --kv-heads 3 --d-ff 1536 --vocab 49152 --block 512 --batch 16 --steps 23 --sem-dim 144 --geo-dim 144 --v-dim 288"
  echo "== train DBA student shape, bf16: caramba vs torch eager"
  "$BIN"/train $DBA --device cuda --dtype bf16 2>&1 | tail -1 | tee "$OUT/train_dba_caramba.txt"
  PYTHONUNBUFFERED=1 python3 scripts/bench_train_torch.py $DBA --device cuda --dtype bf16 --threads 8 2>&1 | tail -2 | tee "$OUT/train_dba_torch.txt"
  [ -n "${TORCH_COMPILE:-}" ] && PYTHONUNBUFFERED=1 python3 scripts/bench_train_torch.py $DBA --device cuda --dtype bf16 --threads 8 --compile 2>&1 | tail -2 | tee "$OUT/train_dba_torch_compile.txt"
  "$BIN"/train $DBA --device cuda --dtype bf16 2>&1 | tail -1 | tee -a "$OUT/train_dba_caramba.txt"
fi
