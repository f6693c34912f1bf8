#!/usr/bin/env bash
# The one test command (README, CI): builds, runs the Rust tests and the engine selftests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo build --release --locked
# The criterion benches are not run here (they are benchmarks), but they must build.
cargo build --release --locked --benches
cargo test --release --locked
# The readers of untrusted files under libFuzzer: every target briefly, from a fixed seed
# (installs cargo-fuzz and a nightly toolchain when missing; see the script).
bash scripts/fuzz.sh
# The studio page in a real browser (tests/serve_browser.rs, ignored by the plain run above
# because it needs Debian's Chromium and chromedriver): install them when missing, then run it.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
cargo test --release --locked --test serve_browser -- --ignored
./target/release/gan-engine selftest --device cpu
# CUDA kernels without a GPU: NVRTC 12/13 compiles, ptxas spill check, sim selftest.
bash scripts/dev/cuda-tools.sh
