#!/usr/bin/env bash
# One command for a GPU machine that has no Rust toolchain (design.md, ladder step 4).
#
#   scripts/gpu-check.sh [BINARY] [-o REPORT.md] [--base OLDER_BINARY]
#
# BINARY is a gan-engine built elsewhere (default: ./gan-engine, then
# ./target/release/gan-engine); OLDER_BINARY, an earlier build to time beside it in the
# same run (benchmarks in the default GEMM mode and tf32). The script
#   1. finds NVRTC on this machine (already loadable, $CUDA_HOME, /usr/local/cuda*, or a
#      pip-installed nvidia-cuda-nvrtc[-cu12] in any python on PATH), preferring the
#      major version of the driver's CUDA, and names it to the binary (GAN_ENGINE_NVRTC;
#      the binary searches most of these places itself, this makes the choice explicit);
#   2. runs `gan-engine selftest --device cuda` (every kernel against its CPU twin, whole
#      training iterations including 128 px at batch 64, one iteration against the PyTorch
#      reference), then again in GEMM mode tf32x3-async (summary only), then at the small
#      sizes under compute-sanitizer's memcheck, racecheck, synccheck and initcheck when the
#      tool is found ($COMPUTE_SANITIZER, PATH, the CUDA toolkit, or the PyPI wheel
#      nvidia-cuda-sanitizer-api (CUDA 13) / nvidia-cuda-sanitizer-api-cu12 in any python);
#   3. runs the benchmarks in four GEMM modes (default, tf32, tf32x3-async, tf32-async), a
#      by-op profile of the 128 px iteration in two, and the PyTorch peer (64 and 128 px,
#      batch 64, 10 timed iterations) when this build and checkout have them;
#   4. writes one markdown table (stdout and REPORT.md, default gpu-check.md).
# Exit status: 0 when everything ran and passed, 1 on a failed check, 2 when the machine
# lacks what the checks need (driver, GPU, NVRTC).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin="" report="gpu-check.md" base=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -o|--out) report="$2"; shift 2 ;;
        --base) base="$2"; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) bin="$1"; shift ;;
    esac
done
if [[ -z "$bin" ]]; then
    for c in ./gan-engine "$here/target/release/gan-engine"; do [[ -x "$c" ]] && bin="$c" && break; done
fi
[[ -n "$bin" && -x "$bin" ]] || { echo "error: no gan-engine binary: pass its path as the first argument" >&2; exit 2; }
[[ -z "$base" || -x "$base" ]] || { echo "error: --base $base is not an executable gan-engine binary" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- machine ---------------------------------------------------------------------------------
gpu="unknown" driver="unknown" driver_cuda=""
if command -v nvidia-smi >/dev/null; then
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1)
    driver_cuda=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\)\..*/\1/p' | head -n1)
fi

# ---- NVRTC -------------------------------------------------------------------------------------
# Candidates: every libnvrtc.so.<major> we can see. The PTX NVRTC makes must be loadable by
# the driver, so the driver's own CUDA major version comes first.
candidates=()
while IFS= read -r l; do candidates+=("$l"); done < <(
    {
        ldconfig -p 2>/dev/null | awk '/libnvrtc\.so\.[0-9]+ /{print $NF}'
        for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda /usr/local/cuda-*; do
            [[ -n "$d" && -d "$d" ]] && find "$d" -maxdepth 3 -name 'libnvrtc.so.[0-9]*' 2>/dev/null
        done
        for py in python3 python; do
            command -v "$py" >/dev/null || continue
            "$py" - <<'PY' 2>/dev/null
import site, sys, glob, os
for d in site.getsitepackages() + [site.getusersitepackages()]:
    for p in glob.glob(os.path.join(d, "nvidia", "*", "lib", "libnvrtc.so.[0-9]*")):
        print(p)
PY
        done
    } | grep -E 'libnvrtc\.so\.[0-9]+$' | sort -u
)
pick=""
for want in "$driver_cuda" 13 12; do
    [[ -z "$want" ]] && continue
    for c in "${candidates[@]}"; do
        if [[ "$c" == *"libnvrtc.so.$want" ]]; then pick="$c"; break 2; fi
    done
done
nvrtc="not found"
if [[ -n "$pick" ]]; then
    export GAN_ENGINE_NVRTC="$pick"
    nvrtc="$pick"
fi
export GAN_ENGINE_PTX_CACHE="$work/ptx"

# ---- checks --------------------------------------------------------------------------------------
rows=()
row() { rows+=("| $1 | $2 | $3 |"); }
status=0

echo "== gan-engine selftest --device cuda ($bin; NVRTC: $nvrtc)"
"$bin" selftest --device cuda > "$work/selftest.txt" 2> "$work/selftest.err"
rc=$?
cat "$work/selftest.txt" "$work/selftest.err"
if [[ $rc -eq 2 && ! -s "$work/selftest.txt" ]]; then
    row "selftest --device cuda" "not run" "$(tr '|' '/' < "$work/selftest.err" | head -n1)"
    status=2
else
    [[ $rc -ne 0 ]] && status=1
    # Table rows of the selftest: the last five fields are values, max abs, max rel (err/tol
    # in the PyTorch reference rows), tolerance, result; everything before them is kernel
    # (or reference tensor) and shape.
    awk '/ (PASS|FAIL)$/ {
            res=$NF; tol=$(NF-1); rel=$(NF-2); abs=$(NF-3); n=$(NF-4);
            what = ($1 == "torch-ref:") ? "err/tol" : "max rel";
            $NF=""; $(NF-1)=""; $(NF-2)=""; $(NF-3)=""; $(NF-4)="";
            gsub(/ +$/, ""); gsub(/\|/, "/"); printf "| %s | %s | max abs %s, %s %s (%s values, tol %s) |\n", $0, res, abs, what, rel, n, tol
         }' "$work/selftest.txt" > "$work/rows.md"
    while IFS= read -r l; do rows+=("$l"); done < "$work/rows.md"
    summary=$(grep -E '^[0-9]+ rows:' "$work/selftest.txt" | tail -n1)
    row "selftest --device cuda" "$([[ $rc -eq 0 ]] && echo PASS || echo FAIL)" "${summary:-no summary line; see output above}"
fi

# The tiles fed by asynchronous copies (GEMM modes *-async, sm_80 and newer): the same
# checks in that mode, summary only (its failing rows when there are any).
if [[ $status -ne 2 ]]; then
    echo "== GAN_ENGINE_GEMM=tf32x3-async gan-engine selftest --device cuda"
    GAN_ENGINE_GEMM=tf32x3-async "$bin" selftest --device cuda > "$work/selftest-async.txt" 2>&1
    rc=$?
    summary=$(grep -E '^[0-9]+ rows:' "$work/selftest-async.txt" | tail -n1)
    if [[ $rc -eq 0 ]]; then
        row "selftest --device cuda, GEMM tf32x3-async" "PASS" "$summary"
    else
        status=1
        row "selftest --device cuda, GEMM tf32x3-async" "FAIL" "${summary:-$(tail -n1 "$work/selftest-async.txt" | tr '|' '/')}"
        grep -E ' FAIL$' "$work/selftest-async.txt" | head -n 20 > "$work/async-fails.txt"
        while IFS= read -r l; do row "tf32x3-async row" "FAIL" "$(echo "$l" | tr -s ' ' | tr '|' '/')"; done < "$work/async-fails.txt"
    fi
fi

# compute-sanitizer over the selftest at the simulation's sizes: out-of-bounds and misaligned
# accesses (memcheck), shared-memory races (racecheck), barrier misuse (synccheck) and reads
# of uninitialised device memory (initcheck), what the simulation's checker looks for on the
# CPU, here on the GPU itself.
sanitizer="${COMPUTE_SANITIZER:-}"
if [[ -z "$sanitizer" ]]; then
    sanitizer=$(command -v compute-sanitizer 2>/dev/null || true)
fi
if [[ -z "$sanitizer" ]]; then
    for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda /usr/local/cuda-*; do
        [[ -n "$d" && -x "$d/bin/compute-sanitizer" ]] && sanitizer="$d/bin/compute-sanitizer" && break
    done
fi
if [[ -z "$sanitizer" ]]; then
    for py in python3 python; do
        command -v "$py" >/dev/null || continue
        sanitizer=$("$py" - <<'PY' 2>/dev/null
import site, glob, os
for d in site.getsitepackages() + [site.getusersitepackages()]:
    for p in glob.glob(os.path.join(d, "nvidia", "cuda_sanitizer_api", "bin", "compute-sanitizer")):
        print(p); raise SystemExit
PY
)
        [[ -n "$sanitizer" ]] && break
    done
fi
if [[ $status -eq 2 ]]; then
    row "compute-sanitizer" "not run" "no usable GPU (see the selftest row)"
elif [[ -z "$sanitizer" ]]; then
    row "compute-sanitizer" "not run" "not found: pip install nvidia-cuda-sanitizer-api (or -cu12 for a CUDA 12 driver), or set COMPUTE_SANITIZER"
else
    for tool in memcheck racecheck synccheck initcheck; do
        echo "== compute-sanitizer --tool $tool gan-engine selftest --device cuda --small"
        "$sanitizer" --tool "$tool" --error-exitcode 97 --print-limit 20 "$bin" selftest --device cuda --small > "$work/san-$tool.txt" 2>&1
        rc=$?
        summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$work/san-$tool.txt" | tail -n1 | tr '|' '/')
        if [[ $rc -eq 0 ]]; then
            row "compute-sanitizer $tool" "PASS" "${summary:-no errors}; selftest --small"
        else
            status=1
            row "compute-sanitizer $tool" "FAIL" "${summary:-exit $rc}: $(grep -m1 -E '^=+ +(Invalid|Race|Barrier|Uninitialized|ERROR)' "$work/san-$tool.txt" | tr -s ' ' | tr '|' '/')"
        fi
    done
fi

# Rows labelled $2 for binary $1's benchmarks in each GEMM mode after it ("" = its default).
bench_rows() {
    local b="$1" label="$2" out="$work/bench-rows.txt" mode
    shift 2
    : > "$out"
    for mode in "$@"; do
        if ! GAN_ENGINE_GEMM="$mode" "$b" bench --device cuda --size 64,128 --batch 64 --iters 10 --warmup 3 >> "$out" 2>&1; then
            row "$label" "FAIL" "$(tail -n1 "$out" | tr '|' '/')"
            status=1
            return
        fi
    done
    while IFS= read -r l; do row "$label" "ran" "$(echo "$l" | tr '|' '/')"; done < "$out"
}

if [[ $status -eq 2 ]]; then
    row "benchmarks" "not run" "no usable GPU (see the selftest row)"
elif "$bin" --help 2>/dev/null | grep -qE '^\s+bench\b'; then
    echo "== gan-engine bench --device cuda"
    # The default GEMM mode (tf32x3 from sm_80: fp32 accuracy on the tensor cores), then
    # tf32, the precision of PyTorch's default for fp32 convolutions, then both fed by
    # asynchronous copies.
    bench_rows "$bin" "bench" "" tf32 tf32x3-async tf32-async
    # The earlier build, right after, in the two modes that matter most.
    [[ -z "$base" ]] || bench_rows "$base" "bench, base build $base" "" tf32
    # Where the 128 px iteration's time goes, by op and pass (each op synchronised on its
    # own), in the default mode and fed by asynchronous copies.
    for mode in "" tf32x3-async; do
        if GAN_ENGINE_GEMM="$mode" "$bin" bench --device cuda --size 128 --batch 64 --iters 3 --warmup 2 --profile > "$work/profile.txt" 2>&1; then
            awk '/^by op and pass:/ {on=1; next} on && /^  / {print}' "$work/profile.txt" | head -n 12 > "$work/profile-rows.txt"
            while IFS= read -r l; do row "profile 128 px, GEMM ${mode:-default}" "ran" "$(echo "$l" | tr -s ' ' | tr '|' '/')"; done < "$work/profile-rows.txt"
        else
            row "bench --profile, GEMM ${mode:-default}" "FAIL" "$(tail -n1 "$work/profile.txt" | tr '|' '/')"; status=1
        fi
    done
else
    row "benchmarks" "not run" "this binary has no bench command yet"
fi

if [[ -f "$here/scripts/torch_peer.py" ]] && python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    echo "== PyTorch peer"
    # The same sizes, batch and iterations as our bench above: the 128 px row is the target's.
    # PyTorch's defaults (cuDNN convolutions in TF32), then true fp32 (TF32 off).
    if (for tf32 in default off; do for size in 64 128; do python3 "$here/scripts/torch_peer.py" --device cuda --size "$size" --batch 64 --iters 10 --warmup 3 --tf32 "$tf32" || exit 1; done; done) > "$work/torch.txt" 2>&1; then
        while IFS= read -r l; do row "torch peer" "ran" "$(echo "$l" | tr '|' '/')"; done < "$work/torch.txt"
    else
        row "torch peer" "FAIL" "$(tail -n1 "$work/torch.txt" | tr '|' '/')"; status=1
    fi
else
    row "PyTorch peer" "not run" "scripts/torch_peer.py or a CUDA-enabled torch is missing"
fi

{
    echo "## GPU check $(date -u +%Y-%m-%dT%H:%MZ): $gpu, driver $driver (CUDA $driver_cuda), NVRTC $(basename "$nvrtc")"
    echo
    echo "| check | result | detail |"
    echo "|---|---|---|"
    printf '%s\n' "${rows[@]}"
} | tee "$report"
echo "report written to $report"
exit $status
