#!/usr/bin/env bash
# The SmolLM2 → DBA `paper` target on a GPU machine that has no network and no Rust (the device
# machine here): the CUDA binary from scripts/build_cuda.sh, the teacher GGUF and the prepared
# token file are carried in (the GGUF in pieces when one transfer cannot hold it).
#
#   bash scripts/gpu_paper.sh stage DIR   # copy DIR's files to $STAGE (call once per piece)
#   bash scripts/gpu_paper.sh start       # assemble the model, check its sha256, start the run (background)
#   bash scripts/gpu_paper.sh wait SECS   # follow the log for up to SECS seconds, or until it ends
#   bash scripts/gpu_paper.sh collect OUT # pack the artifacts (report, CSV, PNG, LaTeX, logs) into OUT
set -uo pipefail
STAGE=${STAGE:-/tmp/stage}
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=${GGUF_SHA256:-}
export CARAMBA_CACHE=$STAGE/cache
RUNS=$STAGE/runs
LOG=$STAGE/paper.log
mkdir -p "$STAGE"
case "${1:-}" in
  stage)
    cp -v "$2"/* "$STAGE"/
    for f in "$STAGE"/*.xz; do [ -e "$f" ] && xz -dfT0 "$f"; done
    ls -la "$STAGE"
    ;;
  start)
    mkdir -p "$CARAMBA_CACHE/smollm2-135m" data
    gguf=$CARAMBA_CACHE/smollm2-135m/$GGUF_NAME
    if ls "$STAGE"/gguf.part* >/dev/null 2>&1; then cat "$STAGE"/gguf.part* > "$gguf.tmp" && mv "$gguf.tmp" "$gguf"; fi
    got=$(sha256sum "$gguf" | cut -d' ' -f1)
    [ -z "$GGUF_SHA256" ] || [ "$got" = "$GGUF_SHA256" ] || { echo "model checksum mismatch: $got"; exit 1; }
    # Prepared token files (the training text and the out-of-domain held-out text) go where the
    # manifest's `data:` paths expect them.
    for f in "$STAGE"/*.npy "$STAGE"/*.npy.source.json; do [ -e "$f" ] && cp "$f" data/; done
    chmod +x "$STAGE"/caramba
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo "model sha256 $got"
    # setsid: the run outlives this call; later calls follow it with `wait`. One process life
    # by default; ATTEMPTS=N resumes a failed attempt from its last checkpoint up to N times.
    # CARAMBA_CUDA_TRIM=1 hands the memory pool's unused memory back after every step (slower;
    # an experiment from when the GPU memory grew every step: docs/gpu.md).
    setsid nohup bash -c "cd $PWD && date > $LOG; status=1; for attempt in \$(seq 1 ${ATTEMPTS:-1}); do $STAGE/caramba run presets/smollm2_135m_dba.yml --target paper --device cuda --runs-dir $RUNS >> $LOG 2>&1; status=\$?; [ \$status -eq 0 ] && break; echo \"attempt \$attempt failed (exit \$status); resuming from the last checkpoint\" >> $LOG; done; echo EXIT \$status >> $LOG; date >> $LOG" > /dev/null 2>&1 &
    sleep 20; tail -5 "$LOG"
    ;;
  wait)
    end=$((SECONDS + ${2:-540}))
    while [ $SECONDS -lt $end ] && ! grep -q '^EXIT' "$LOG"; do sleep 10; done
    grep -v '^\s*$' "$LOG" | grep -E "INFO|WARN|ERROR|error|EXIT" | tail -25
    tail -c 600 "$LOG"; echo
    ;;
  collect)
    out=$2; mkdir -p "$out"
    art=$RUNS/smollm2_135m_dba/paper
    tar -C "$art" -cJf "$out/paper_artifacts.tar.xz" --exclude='*.safetensors' --exclude='checkpoints' . 2>/dev/null
    cp "$LOG" "$out/paper.log" 2>/dev/null
    ls -la "$out"
    ;;
  *) echo "usage: $0 stage DIR | start | wait SECS | collect OUT"; exit 2 ;;
esac
