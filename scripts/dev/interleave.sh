#!/usr/bin/env bash
# Interleaved rounds on a noisy machine: two gan-engine binaries (say, main and a branch)
# and the PyTorch peer, one after the other, round after round, at one size. Prints each
# run's median seconds per iteration, then the median over the rounds of each program and
# of the per-round time ratios. Taking the ratios within a round keeps a machine whose
# speed drifts over minutes from deciding the comparison.
#
#   scripts/dev/interleave.sh --base /tmp/old/gan-engine --ours target/release/gan-engine --size 64
#
# Options: --base BIN (optional), --ours BIN (default target/release/gan-engine),
# --size 64, --rounds 4, --iters 3, --warmup 1, --threads 2, --no-torch.
# PYTHON picks the interpreter for scripts/torch_peer.py.
set -euo pipefail
cd "$(dirname "$0")/../.."

base="" ours="target/release/gan-engine" size=64 rounds=4 iters=3 warmup=1 threads=2 torch=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --base) base="$2"; shift 2 ;;
        --ours) ours="$2"; shift 2 ;;
        --size) size="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --iters) iters="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --no-torch) torch=0; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for b in "$ours" ${base:+"$base"}; do
    [[ -x "$b" ]] || { echo "error: $b is not an executable gan-engine binary" >&2; exit 2; }
done
PYTHON=${PYTHON:-python3}
export RAYON_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"

ours_s() { "$1" bench --device cpu --size "$size" --iters "$iters" --warmup "$warmup" --threads "$threads" | grep -o 'median_s=[0-9.]*' | cut -d= -f2; }
torch_s() { "$PYTHON" scripts/torch_peer.py --size "$size" --batch 64 --threads "$threads" --iters "$iters" --warmup "$warmup" | grep -o 'median_s=[0-9.]*' | cut -d= -f2; }

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for r in $(seq "$rounds"); do
    line="round $r $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)"
    [[ -n "$base" ]] && { b=$(ours_s "$base"); line+=" base=$b"; echo "base $r $b" >>"$log"; }
    o=$(ours_s "$ours"); line+=" ours=$o"; echo "ours $r $o" >>"$log"
    [[ $torch == 1 ]] && { t=$(torch_s); line+=" torch=$t"; echo "torch $r $t" >>"$log"; }
    echo "$line"
done

awk -v size="$size" '
    { v[$1, $2] = $3; seen[$1] = 1; if ($2 > n) n = $2 }
    function median(a, k,   i, j, t) {
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    function report(num, den,   i, a) {
        if (!seen[num] || !seen[den]) return
        for (i = 1; i <= n; i++) a[i] = v[num, i] / v[den, i]
        printf "median of per-round ratios %s / %s: %.2f\n", num, den, median(a, n)
    }
    END {
        split("base ours torch", names, " ")
        for (p = 1; p <= 3; p++) if (seen[names[p]]) {
            delete a; for (i = 1; i <= n; i++) a[i] = v[names[p], i]
            printf "%s px, %s: median %.3f s/iter over %d rounds\n", size, names[p], median(a, n), n
        }
        report("ours", "torch"); report("ours", "base"); report("base", "torch")
    }' "$log"
