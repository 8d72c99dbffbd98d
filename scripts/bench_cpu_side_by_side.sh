#!/usr/bin/env bash
# CPU decode/prefill side by side on this machine: caramba (`cargo bench --bench decode`), HF
# transformers f32 (scripts/bench_decode_cpu_hf.py) and, when LLAMA_BENCH points at a llama.cpp
# `llama-bench` binary, llama.cpp on the same GGUF file. Rounds interleave the three so that load
# from other jobs hits all of them alike. One JSON line per run.
#
#   LLAMA_BENCH=/path/to/llama-bench scripts/bench_cpu_side_by_side.sh [threads...]   # default: 1 2
set -euo pipefail
cd "$(dirname "$0")/.."
GGUF=${GGUF:-$HOME/.cache/caramba/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf}
ROUNDS=${ROUNDS:-2}
cargo bench --bench decode --no-run >/dev/null 2>&1
BENCH=$(cargo bench --bench decode --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys; print([j["executable"] for j in map(json.loads, sys.stdin) if j.get("executable") and j["target"]["name"]=="decode"][0])')
for round in $(seq "$ROUNDS"); do
  for t in "${@:-1 2}"; do
    for t1 in $t; do
      RAYON_NUM_THREADS=$t1 "$BENCH" | sed "s/^{/{\"impl\":\"caramba\",\"round\":$round,/"
      python3 scripts/bench_decode_cpu_hf.py --gguf "$GGUF" --threads "$t1" 2>/dev/null | sed "s/^{/{\"round\":$round,/"
      if [ -n "${LLAMA_BENCH:-}" ]; then
        "$LLAMA_BENCH" -m "$GGUF" -t "$t1" -p 512 -n 128 -r 3 -o json 2>/dev/null | python3 -c '
import json, sys
rows = json.load(sys.stdin)
out = {"impl": "llama.cpp", "round": '"$round"', "threads": '"$t1"'}
for r in rows:
    key = "prefill_512_tokens_per_sec" if r["n_prompt"] else "decode_tokens_per_sec"
    out[key] = r["avg_ts"]
print(json.dumps(out))'
      fi
    done
  done
done
