#!/usr/bin/env bash
# Build the CUDA binaries on a machine without a GPU (shared/cuda recipe: PyPI's CUDA 13.0 wheels in
# /opt/cuda13) and pack them, xz-compressed, into target/device/ for scripts/gpu_check.sh to run on
# the GPU machine: caramba, the kernel test binary, and the gpu/train benchmarks.
set -euo pipefail
export CUDA_HOME=${CUDA_HOME:-/opt/cuda13} PATH=${CUDA_HOME:-/opt/cuda13}/bin:$PATH CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
[ -x "$CUDA_HOME/bin/nvcc" ] || { echo "no nvcc in $CUDA_HOME: run setup-cuda13-toolkit.sh $CUDA_HOME first (docs/gpu.md)"; exit 1; }
cargo build --release --features cuda
pick() { # the newest executable of a test/bench target
  ls -t "$CARGO_TARGET_DIR"/release/deps/"$1"-* | grep -v '\.d$' | head -1
}
cargo test --release --features cuda --test gpu_kernels --no-run
cargo bench --features cuda --bench gpu --bench train --no-run
mkdir -p target/device
for pair in "caramba:$CARGO_TARGET_DIR/release/caramba" "gpu_kernels:$(pick gpu_kernels)" "gpu:$(pick gpu)" "train:$(pick train)"; do
  name=${pair%%:*}; path=${pair#*:}
  strip -o "target/device/$name" "$path"
  xz -T2 -6 -f "target/device/$name"
done
ls -la target/device
