#!/usr/bin/env bash
# CUDA kernel checks on a machine without a GPU (design.md, verification ladder 2 and 3):
#
#   1. installs NVRTC 12, NVRTC 13 and ptxas from PyPI into .tools/cuda/ (once; cached);
#   2. builds the binary with the `sim` feature;
#   3. compiles every kernel module with NVRTC 12 for sm_61, sm_75 and sm_80 (and sm_80 in
#      GEMM modes tf32x3-async and bf16) and with NVRTC 13 for sm_90 in every GEMM mode,
#      through the binary's own run-time compile path;
#   4. runs `ptxas -v` on the sm_90 PTX, prints registers / shared memory / spills per
#      kernel, and fails on any spill; then prints the instruction mix of every GEMM
#      kernel's main loop in SASS (scripts/dev/sass-loops.py; cuobjdump and nvdisasm from PyPI);
#   5. checks the simulation itself (barriers, shuffles, asynchronous copies, reported
#      misuse, and each detector of its access checker against a kernel with that bug),
#      runs tests/cuda_sim.rs (`cargo test --features sim`: a tampered kernel output fails
#      its row, TF32 really rounds, the bf16 tiles against the bf16 twin, the freeze flag in
#      the kernels, resume in the simulation), then `gan-engine selftest --device sim`
#      (every kernel against its CPU twin on the CPU simulation, one row per output tensor,
#      every access checked for races, uninitialised reads and out-of-bounds accesses;
#      whole training iterations and the PyTorch references) in every f32 GEMM mode, two at
#      a time: tf32x3 (printed in full, and every `extern "C"` kernel in kernels/ must have a
#      passing row) and tf32x3-async in three thread orders compared bit for bit, fp32 (the
#      FMA tiles of GPUs before sm_80), tf32 and tf32-async (TF32 tensor cores, with their
#      own error model) in one order.
#
# Also runs NVRTC's own test (src/backend/cuda/nvrtc.rs, ignored without NVRTC) against
# NVRTC 12 and NVRTC 13.
#
# Exits non-zero on any failure. Versions can be overridden with NVRTC12_PKG, NVRTC13_PKG,
# NVCC_PKG, CUOBJDUMP_PKG and NVDISASM_PKG (pip requirement strings).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TERM_COLOR=never

TOOLS=.tools/cuda
NVRTC12_PKG=${NVRTC12_PKG:-nvidia-cuda-nvrtc-cu12==12.9.86}
NVRTC13_PKG=${NVRTC13_PKG:-nvidia-cuda-nvrtc==13.5.37}
NVCC_PKG=${NVCC_PKG:-nvidia-cuda-nvcc==13.5.37}
CUOBJDUMP_PKG=${CUOBJDUMP_PKG:-nvidia-cuda-cuobjdump==13.5.37}
NVDISASM_PKG=${NVDISASM_PKG:-nvidia-cuda-nvdisasm==13.5.37}
PYTHON=${PYTHON:-python3}

step() { printf '\n== %s\n' "$*"; }

# ---- 1. tools from PyPI -------------------------------------------------------------------
install() { # folder, requirement
    local dir="$TOOLS/$1" req="$2"
    if [[ -f "$dir/.installed" && "$(cat "$dir/.installed")" == "$req" ]]; then
        return
    fi
    rm -rf "$dir"
    # --no-cache-dir: the wheels are unpacked into $dir once; a second copy in pip's cache
    # only costs disk (the NVCC wheel alone is hundreds of megabytes).
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps --target "$dir" "$req" || {
        echo "error: pip could not install $req into $dir (free disk where it writes: $(df -h --output=avail "$TOOLS" | tail -n1 | tr -d ' '))" >&2
        return 1
    }
    echo "$req" > "$dir/.installed"
}
step "NVRTC and ptxas from PyPI into $TOOLS"
install nvrtc12 "$NVRTC12_PKG"
install nvrtc13 "$NVRTC13_PKG"
install nvcc "$NVCC_PKG"
install cuobjdump "$CUOBJDUMP_PKG"
install nvdisasm "$NVDISASM_PKG"
lib12=$(dirname "$(find "$TOOLS/nvrtc12" -name 'libnvrtc.so.12' | head -n1)")
lib13=$(dirname "$(find "$TOOLS/nvrtc13" -name 'libnvrtc.so.13' | head -n1)")
ptxas=$(find "$TOOLS/nvcc" -type f -name ptxas | head -n1)
[[ -n "$lib12" && -n "$lib13" && -x "$ptxas" ]] || { echo "error: NVRTC 12, NVRTC 13 or ptxas missing under $TOOLS" >&2; exit 1; }
"$ptxas" --version | tail -n1

step "NVRTC's compile test against NVRTC 12 and NVRTC 13"
for lib in "$lib12/libnvrtc.so.12" "$lib13/libnvrtc.so.13"; do
    GAN_ENGINE_NVRTC="$lib" cargo test --release --locked --lib -- --ignored --exact backend::cuda::nvrtc::tests::compiles_a_kernel_and_rejects_a_wrong_one
done

# ---- 2. build ------------------------------------------------------------------------------
step "cargo build --release --locked --features sim"
cargo build --release --locked --features sim
bin=./target/release/gan-engine

# ---- 3. NVRTC compile of every kernel for every target ------------------------------------
ptx="$TOOLS/ptx"
rm -rf "$ptx"
kernels_with() { # expected NVRTC major, then the command; fails unless that NVRTC was loaded
    local major="$1"; shift
    "$@" | tee "$TOOLS/kernels.txt"
    grep -q "^NVRTC $major\." "$TOOLS/kernels.txt" || { echo "error: the binary did not load NVRTC $major" >&2; exit 1; }
}
# NVRTC 12 is named exactly: by name, a libnvrtc.so.13 elsewhere on the machine comes first.
# Each architecture in its default GEMM mode: fp32 FMAs below sm_80, tf32x3 tensor cores
# from sm_80 (A100, the first with TF32).
step "NVRTC 12: sm_61 (GTX 1070 Ti), sm_75, sm_80"
kernels_with 12 env GAN_ENGINE_NVRTC="$lib12/libnvrtc.so.12" "$bin" kernels --arch sm_61,sm_75,sm_80 --out "$ptx"
step "NVRTC 12: sm_80, GEMM tf32x3-async (cp.async, the oldest architecture that has it)"
kernels_with 12 env GAN_ENGINE_NVRTC="$lib12/libnvrtc.so.12" "$bin" kernels --arch sm_80 --gemm tf32x3-async --out "$ptx/sm_80-async"
step "NVRTC 12: sm_80, GEMM bf16 (mma.m16n8k16 bf16, the oldest architecture that has it)"
kernels_with 12 env GAN_ENGINE_NVRTC="$lib12/libnvrtc.so.12" "$bin" kernels --arch sm_80 --gemm bf16 --out "$ptx/sm_80-bf16"
# NVRTC 13 as users install it: its folder on LD_LIBRARY_PATH, nothing renamed or linked.
# sm_90 in every GEMM mode (GAN_ENGINE_GEMM), each into its own folder for ptxas below.
for mode in tf32x3 tf32 fp32 tf32x3-async tf32-async bf16 bf16-async; do
    step "NVRTC 13: sm_90, GEMM $mode"
    kernels_with 13 env LD_LIBRARY_PATH="$lib13" "$bin" kernels --arch sm_90 --gemm "$mode" --out "$ptx/$mode"
done

# ---- 4. ptxas resource report, spills fail ---------------------------------------------------
step "ptxas -v at sm_90, every GEMM mode: registers, shared memory, spills per kernel"
report="$TOOLS/ptxas-sm_90.txt"
: > "$report"
for f in "$ptx"/*/*.sm_90.ptx; do
    mode=$(basename "$(dirname "$f")")
    "$ptxas" -arch=sm_90 -v "$f" -o /dev/null 2>&1 | sed "s/Compiling entry function '\([a-z0-9_]*\)'/Compiling entry function '\1 [$mode]'/" >> "$report"
done
"$PYTHON" - "$report" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rows, cur = [], None
for line in text.splitlines():
    m = re.search(r"Compiling entry function '([\w\[\] ]+)'", line)
    if m:
        cur = {"name": m.group(1), "regs": 0, "smem": 0, "stack": 0, "spill_st": 0, "spill_ld": 0}
        rows.append(cur)
        continue
    if cur is None:
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m:
        cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
    m = re.search(r"Used (\d+) registers", line)
    if m:
        cur["regs"] = int(m.group(1))
        s = re.search(r"(\d+) bytes smem", line)
        cur["smem"] = int(s.group(1)) if s else 0
print(f"{'kernel':<50} {'registers':>9} {'smem B':>7} {'stack B':>7} {'spill st':>8} {'spill ld':>8}")
for r in sorted(rows, key=lambda r: r["name"]):
    print(f"{r['name']:<50} {r['regs']:>9} {r['smem']:>7} {r['stack']:>7} {r['spill_st']:>8} {r['spill_ld']:>8}")
print("(static shared memory; the block reductions add REDUCE_THREADS/32 floats of dynamic shared memory)")
spills = [r["name"] for r in rows if r["spill_st"] or r["spill_ld"]]
if not rows:
    sys.exit("error: ptxas reported no kernels")
if spills:
    sys.exit("error: register spills at sm_90 in: " + ", ".join(spills))
print(f"{len(rows)} kernels, no spills")
PY

# ---- 5. the simulation itself, then every kernel on it -----------------------------------------
step "SASS at sm_90: the instruction mix of each GEMM kernel's main loop, every GEMM mode"
cuobjdump=$(find "$TOOLS/cuobjdump" -type f -name cuobjdump | head -n1)
nvdisasm=$(find "$TOOLS/nvdisasm" -type f -name nvdisasm | head -n1)
[[ -x "$cuobjdump" && -x "$nvdisasm" ]] || { echo "error: cuobjdump or nvdisasm missing under $TOOLS" >&2; exit 1; }
for f in "$ptx"/*/conv.sm_90.ptx "$ptx"/*/linear.sm_90.ptx; do
    "$ptxas" -arch=sm_90 "$f" -o "${f%.ptx}.cubin"
done
PATH="$(dirname "$nvdisasm"):$PATH" "$PYTHON" scripts/dev/sass-loops.py --cuobjdump "$cuobjdump" "$ptx"/*/conv.sm_90.cubin "$ptx"/*/linear.sm_90.cubin | tee "$TOOLS/sass-loops.txt"

step "simulation semantics (tests/sim/sim_semantics.cpp)"
# params.cuh (the structs and constants shared with Rust) is the one `kernels --out` wrote.
# The test kernels are instrumented as the real ones are (build.rs); sim.cpp, which holds
# the hooks the instrumentation calls, is not.
"${CXX:-g++}" -std=c++17 -O1 -Wno-unknown-pragmas -Ikernels -I"$ptx" -c kernels/sim.cpp -o "$TOOLS/sim_runtime.o"
"${CXX:-g++}" -std=c++17 -O1 -Wno-unknown-pragmas -fsanitize=thread -Ikernels -I"$ptx" -c tests/sim/sim_semantics.cpp -o "$TOOLS/sim_semantics.o"
"${CXX:-g++}" "$TOOLS/sim_semantics.o" "$TOOLS/sim_runtime.o" -o "$TOOLS/sim_semantics"
"$TOOLS/sim_semantics"

step "tests/cuda_sim.rs: cargo test --release --locked --features sim --test cuda_sim"
cargo test --release --locked --features sim --test cuda_sim

# Every GEMM mode, two selftests at a time (the simulation runs one thread per process),
# the longest first.
# The tiles fed by cp.async keep a ring of shared buffers, where a missing wait or barrier
# would hide: tf32x3 and tf32x3-async run every launch in three thread orders; the other
# modes change the arithmetic of the same tiles and run in one order (the access checker
# is on in every run).
modes=(tf32x3 tf32x3-async tf32 tf32-async fp32)
declare -A orders=([tf32x3]=3 [tf32x3-async]=3 [tf32]=1 [tf32-async]=1 [fp32]=1)
step "gan-engine selftest --device sim in GEMM modes ${modes[*]}, two at a time"
selftest_mode() { # mode
    local out="$TOOLS/selftest-sim-$1.txt" t0=$SECONDS
    local rc=0
    GAN_ENGINE_GEMM=$1 GAN_ENGINE_SIM_ORDERS=${orders[$1]} "$bin" selftest --device sim > "$out" 2>&1 || rc=$?
    echo "$rc" > "$out.rc"
    echo "GEMM $1 (${orders[$1]} thread order(s)): exit $rc after $((SECONDS - t0)) s: $(tail -n 1 "$out")"
}
t0=$SECONDS
running=0
for mode in "${modes[@]}"; do
    selftest_mode "$mode" &
    running=$((running + 1))
    if (( running == 2 )); then wait -n || true; running=$((running - 1)); fi
done
wait
echo "all modes in $((SECONDS - t0)) s"
log="$TOOLS/selftest-sim-tf32x3.txt"
cat "$log"
failed=0
for mode in "${modes[@]}"; do
    out="$TOOLS/selftest-sim-$mode.txt"
    if [[ "$(cat "$out.rc")" != 0 ]]; then
        echo "error: gan-engine selftest --device sim failed in GEMM mode $mode:" >&2
        grep -E ' FAIL$' "$out" >&2 || true
        tail -n 3 "$out" >&2
        failed=1
    fi
done
(( failed == 0 )) || exit 1
"$PYTHON" - "$log" kernels/*.cu <<'PY'
import re, sys
log = open(sys.argv[1]).read().splitlines()
passing = [l for l in log if l.rstrip().endswith("PASS")]
names = []
for path in sys.argv[2:]:
    src = open(path).read()
    names += re.findall(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\((?:[^()]|\([^()]*\))*\)\s+)?(\w+)\s*\(', src)
missing = [n for n in names if not any(re.search(r"\b" + n + r"\b", l) for l in passing)]
if not names:
    sys.exit("error: found no extern \"C\" kernels in kernels/*.cu")
if missing:
    sys.exit("error: kernels without a passing sim selftest row: " + ", ".join(missing))
print(f"coverage: all {len(names)} extern \"C\" kernels in kernels/ have passing sim rows")
PY

step "CUDA kernel checks passed"
