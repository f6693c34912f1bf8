#!/usr/bin/env bash
# The one test command (README, CI): builds, runs the Rust tests and the engine selftests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# The whole run writes about 8 GB here (release builds with and without `sim`, the fuzz
# build, the CUDA tools); say how much room there is, so that a full disk is named as such.
avail_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
echo "test.sh: $((avail_kb / 1024 / 1024)) GB free in $(pwd)"
if [ "$avail_kb" -lt $((10 * 1024 * 1024)) ]; then
    echo "test.sh: warning: less than 10 GB free; the builds and tools below need about 8 GB" >&2
fi
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
