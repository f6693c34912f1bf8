#!/usr/bin/env bash
# Fuzzes the readers of untrusted files with libFuzzer: checkpoints, styles.csv, captions.csv,
# captions.jsonl, the image cache file and JPEG/PNG images (fuzz/, the cargo-fuzz layout;
# bodies in src/fuzzing.rs).
#
#   bash scripts/fuzz.sh                    # the test command's run: every target, seed 1, a
#                                           # fixed number of executions (about a minute on 2
#                                           # cores, after the build)
#   bash scripts/fuzz.sh --time 600 [T...]  # a longer run: 600 s per target (all, or T...);
#                                           # new inputs are kept in fuzz/corpus/T/
#
# Tools: `cargo fuzz` on the nightly toolchain with AddressSanitizer, as cargo-fuzz does by
# default; both are installed when missing (cargo-fuzz from crates.io, nightly through
# rustup). Where nightly cannot be had, the same libFuzzer targets are built on stable with
# SanitizerCoverage alone (what `cargo fuzz build --sanitizer none` does), and the script says
# so. Seeds: the fixture files under tests/fixtures and tests/fixtures/fuzz/T/. A crash fails
# the script; its input is written to fuzz/artifacts/T/. Add it to tests/fixtures/fuzz/T/ with
# the fix: tests/fuzz_regressions.rs runs every file there.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

TARGETS=(checkpoint styles_csv captions_csv captions_jsonl image_cache image)
# Executions per target in the fixed run, sized to about ten seconds each on one core.
declare -A RUNS=([checkpoint]=30000 [styles_csv]=40000 [captions_csv]=50000 [captions_jsonl]=200000 [image_cache]=500000 [image]=15000)
CARGO_FUZZ_VERSION=0.13.2
seconds=""
if [ "${1:-}" = "--time" ]; then
    seconds=${2:?--time needs seconds}
    shift 2
    [ $# -gt 0 ] && TARGETS=("$@")
fi

host=$(rustc -vV | sed -n 's/^host: //p')
mode=stable
if rustup run nightly rustc -V >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal >&2; then
    if cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" >&2; then
        mode=cargo-fuzz
    fi
fi

if [ "$mode" = cargo-fuzz ]; then
    echo "fuzz: cargo fuzz $(cargo fuzz --version | awk '{print $2}') on $(rustc +nightly -V), AddressSanitizer"
    # --target keeps the instrumentation off build scripts and proc macros.
    cargo +nightly fuzz build --target "$host"
else
    echo "fuzz: no nightly toolchain or cargo-fuzz could be installed: building the libFuzzer targets on stable with SanitizerCoverage alone (no AddressSanitizer)"
    flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
    flags+=" -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
    RUSTFLAGS="$flags" cargo build --release --locked --manifest-path fuzz/Cargo.toml --target "$host" --bins
fi
bin=fuzz/target/$host/release

seeds() {
    local f=tests/fixtures
    case $1 in
        styles_csv) echo $f/quirks/styles.csv ;;
        captions_csv) echo $f/captions-csv/captions.csv ;;
        captions_jsonl) echo $f/captions-jsonl/captions.jsonl ;;
        image) ls $f/quirks/images/* $f/captions-csv/images/* $f/captions-jsonl/pics/* ;;
    esac
    [ -d "$f/fuzz/$1" ] && ls "$f/fuzz/$1"/*
    return 0
}

for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/artifacts/$t"
    if [ -n "$seconds" ]; then
        corpus=fuzz/corpus/$t
        limits=(-max_total_time="$seconds")
    else
        # A fresh corpus each time: the fixed run sees the same inputs on every machine.
        corpus=$(mktemp -d)
        limits=(-seed=1 -runs="${RUNS[$t]}")
    fi
    mkdir -p "$corpus"
    seeds "$t" | while read -r f; do cp "$f" "$corpus/"; done
    log=fuzz/artifacts/$t/last-run.log
    status=0
    start=$(date +%s)
    "$bin/$t" "${limits[@]}" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" "$corpus" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 || true)
    echo "fuzz $t: ${limits[*]}: ${execs:-?} executions, $cov, $(($(date +%s) - start)) s, exit $status"
    [ -n "$seconds" ] || rm -rf "$corpus"
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log" >&2
        echo "fuzz $t: libFuzzer found a crash (exit $status); the input is in fuzz/artifacts/$t/, the log in $log" >&2
        exit 1
    fi
done
