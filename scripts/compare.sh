#!/usr/bin/env bash
# Ours against the PyTorch peer on this machine's CPU, same threads, same model, same
# loop, same batch: one full training iteration, median of --iters timed iterations.
#
#   scripts/compare.sh                           # 64 and 128 px, batch 64, all cores
#   scripts/compare.sh --threads 2 --sizes 64 --iters 5 --amp
#
# Options: --threads N (default: nproc), --sizes 64,128, --batch 64, --iters 5,
# --warmup 2, --amp or --precision bf16 (also ours in --precision bf16 and PyTorch with
# bf16 autocast, side by side).
# GAN_ENGINE=path/to/gan-engine uses that binary instead of building one; PYTHON picks
# the interpreter (PyTorch, numpy, safetensors installed).
#
# Prints each program's own line, then a markdown table (as in the CPU tables of
# docs/log/): ours, PyTorch, ours/PyTorch time ratio, and each against the
# article's 0.864 s/iteration on a GTX 1070 Ti. Numbers taken while other work runs on
# the machine are noisy: the load average is printed before and after.
set -euo pipefail
cd "$(dirname "$0")/.."

threads=$(nproc)
sizes=64,128
batch=64
iters=5
warmup=2
amp=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) threads=$2; shift 2 ;;
        --sizes) sizes=$2; shift 2 ;;
        --batch) batch=$2; shift 2 ;;
        --iters) iters=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --amp) amp=1; shift ;;
        --precision) [[ $2 == bf16 ]] && amp=1; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

python=${PYTHON:-python3}
if ! "$python" -c 'import torch' 2>/dev/null; then
    echo "compare.sh: $python cannot import torch; install it (pip install torch) or set PYTHON" >&2
    exit 2
fi
bin=${GAN_ENGINE:-}
if [[ -z "$bin" ]]; then
    cargo build --release --locked --quiet
    bin=target/release/gan-engine
fi

# Same threads on both sides: rayon for ours, intra-op threads (and OpenMP) for PyTorch.
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads

field() { # field NAME LINE -> the value of NAME=... in LINE
    sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"
}

cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
torch_version=$("$python" -c 'import torch; print(torch.__version__)')
echo "machine: $cpu, $(nproc) cores; threads $threads; $(date -u '+%Y-%m-%d %H:%M UTC'); commit $commit; PyTorch $torch_version"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

rows=()
IFS=, read -ra size_list <<<"$sizes"
for size in "${size_list[@]}"; do
    ours=$("$bin" bench --device cpu --size "$size" --batch "$batch" --iters "$iters" --warmup "$warmup" --threads "$threads" | grep '^ours ')
    echo "$ours"
    torch=$("$python" scripts/torch_peer.py --size "$size" --batch "$batch" --iters "$iters" --warmup "$warmup" --threads "$threads" | grep '^torch ')
    echo "$torch"
    bf16="-" ours16="-" ratio16="-"
    if [[ $amp == 1 ]]; then
        o16=$("$bin" bench --device cpu --precision bf16 --size "$size" --batch "$batch" --iters "$iters" --warmup "$warmup" --threads "$threads" | grep '^ours ')
        echo "$o16"
        t16=$("$python" scripts/torch_peer.py --size "$size" --batch "$batch" --iters "$iters" --warmup "$warmup" --threads "$threads" --amp bf16 | grep '^torch ')
        echo "$t16"
        bf16="$(field median_s "$t16") s"
        ours16="$(field median_s "$o16") s"
        ratio16=$(awk -v o="$(field median_s "$o16")" -v t="$(field median_s "$t16")" 'BEGIN { printf "%.2f", o / t }')
    fi
    o=$(field median_s "$ours")
    t=$(field median_s "$torch")
    rows+=("$(awk -v s="$size" -v b="$batch" -v o="$o" -v t="$t" -v bf="$bf16" -v o16="$ours16" -v r16="$ratio16" \
        'BEGIN { printf "| %s px | %s | %.3f s | %.3f s | %.2f | %s | %s | %s | %.3f | %.3f |", s, b, o, t, o / t, o16, bf, r16, 0.864 / o, 0.864 / t }')")
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| model | batch | ours f32 (median s/iter) | PyTorch fp32 | ours / PyTorch fp32 (time) | ours bf16 | PyTorch bf16 autocast | ours bf16 / PyTorch bf16 | ours f32 vs 1070 Ti | PyTorch fp32 vs 1070 Ti |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
