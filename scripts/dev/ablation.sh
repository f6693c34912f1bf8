#!/usr/bin/env bash
# An ablation table from `gan-engine eval`: one training run per row, all at the same
# budget, each scored on the held-out products, then one markdown table (and the real
# images' floor as the last row). Rows are NAME=FLAGS (extra `train` flags; NAME= alone is
# the article's loop). A row whose eval.json exists is not run again.
#
#   scripts/dev/ablation.sh --out /tmp/ablation --data ../shared/data/fashion-products \
#       --size 32 --width 32 --iters 1000 article= mbstd='--minibatch-std 4'
#
# Options: --bin BIN (default target/release/gan-engine), --out DIR (required), --data DIR
# (default: the built-in synthetic catalogue), --size 32, --width 32, --batch 64,
# --iters 1000, --seed 1, --eval-flags '...' (passed to every eval, e.g. '--no-ema').
# PYTHON picks the interpreter that prints the table (standard library only).
set -euo pipefail
cd "$(dirname "$0")/../.."

bin="target/release/gan-engine" out="" data="" size=32 width=32 batch=64 iters=1000 seed=1 eval_flags=""
rows=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --data) data="$2"; shift 2 ;;
        --size) size="$2"; shift 2 ;;
        --width) width="$2"; shift 2 ;;
        --batch) batch="$2"; shift 2 ;;
        --iters) iters="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --eval-flags) eval_flags="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
        *=*) rows+=("$1"); shift ;;
        *) echo "error: a row is NAME=FLAGS, not '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[[ -n "$out" ]] || { echo "error: --out DIR is required (see --help)" >&2; exit 2; }
[[ ${#rows[@]} -gt 0 ]] || { echo "error: give at least one row NAME=FLAGS (see --help)" >&2; exit 2; }
[[ -x "$bin" ]] || { echo "error: --bin $bin is not an executable gan-engine binary (cargo build --release)" >&2; exit 2; }
mkdir -p "$out"
PYTHON=${PYTHON:-python3}

names=()
for row in "${rows[@]}"; do
    name="${row%%=*}" flags="${row#*=}"
    [[ "$name" =~ ^[A-Za-z0-9_.+-]+$ ]] || { echo "error: row name '$name' must be letters, digits, _ . + -" >&2; exit 2; }
    names+=("$name")
    run="$out/$name"
    if [[ -f "$run/eval.json" ]]; then
        echo "$name: $run/eval.json exists, not run again" >&2
        continue
    fi
    # A row may set its own --seed (a second seed of one setting shows the noise).
    row_seed=(--seed "$seed")
    [[ " $flags " == *" --seed "* ]] && row_seed=()
    # shellcheck disable=SC2086 # the row's flags are words
    "$bin" train ${data:+--data "$data"} --size "$size" --width "$width" --batch "$batch" --iters "$iters" \
        "${row_seed[@]}" --quiet --out "$run" $flags 2>&1 | tee "$run.train.log" >&2
    # shellcheck disable=SC2086
    "$bin" eval --checkpoint "$run" --json "$run/eval.json" $eval_flags > "$run.eval.log"
    echo "$name: $(grep -o 'done: .*s;' "$run.train.log")" >&2
done

"$PYTHON" - "$out" "${names[@]}" <<'PY'
import json, re, sys
out, names = sys.argv[1], sys.argv[2:]
rows = []
for name in names:
    j = json.load(open(f"{out}/{name}/eval.json"))
    log = open(f"{out}/{name}.train.log").read()
    m = re.search(r"done: (\d+) iterations in ([0-9.]+) s", log)
    j["s_per_it"] = float(m.group(2)) / int(m.group(1)) if m else float("nan")
    rows.append((name, j))
conds = sorted(k for k in rows[0][1] if k.startswith("cond_"))
cols = ["swd", "fd", "kid", "precision", "recall"] + conds + ["diversity", "background", "s_per_it"]
def cell(v, k):
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if k == "kid":
        return f"{v:.4f}"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
print("| row | " + " | ".join(c.replace("_", " ") for c in cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for name, j in rows:
    print(f"| {name} | " + " | ".join(cell(j.get(c), c) for c in cols) + " |")
real = rows[0][1]
print("| real images (floor) | " + " | ".join(cell(real.get("real_" + c), c) for c in cols) + " |")
PY
