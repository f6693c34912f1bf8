#!/usr/bin/env bash
# The one test command (README, CI): builds, runs the Rust tests and the engine selftests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo build --release --locked
# The criterion benches are not run here (they are benchmarks), but they must build.
cargo build --release --locked --benches
cargo test --release --locked
./target/release/gan-engine selftest --device cpu
# CUDA kernels without a GPU: NVRTC 12/13 compiles, ptxas spill check, sim selftest.
bash scripts/dev/cuda-tools.sh
