#!/usr/bin/env python3
"""The instruction mix of each GEMM kernel's main loop, from its SASS.

    python3 scripts/dev/sass-loops.py --cuobjdump PATH CUBIN [CUBIN ...]

(cuobjdump needs nvdisasm on PATH.)

Each CUBIN is one module compiled by ptxas (scripts/dev/cuda-tools.sh builds them at sm_90 for
every GEMM mode, named <mode>/<module>.sm_90.cubin). Every outermost loop with tensor-core
(HMMA) or fp32 (FFMA) math in it is a GEMM's BK-deep step; a kernel with several (the
GEMM tiles pick one of three feeds per block, gemm.cuh) gets rows #1, #2, ... in address
order. For each, this prints how many instructions one warp issues per step, how many of
them are the math, shared and global memory, and integer work (address arithmetic,
compares and selects), and the instructions issued per math instruction.

A static count, not a timing: it says how much work each step asks of the SM's issue
slots, which is what limits a tile that is not waiting on memory, and it changes with the
code, not with the machine's mood. The benchmark log (docs/log/) quotes it next to the GPU
timings.
"""

import argparse
import collections
import os
import re
import subprocess
import sys

INTEGER = {"IMAD", "IADD3", "ISETP", "LEA", "SEL", "SHF", "LOP3", "VIADD", "IABS", "IMNMX", "PLOP3", "UIADD3", "UIMAD",
           "ULEA", "USEL", "ULOP3", "USHF", "VIMNMX", "I2F", "F2I", "MOV", "IMUL", "UMOV", "VIADDMNMX", "PRMT", "SGXT"}
MATH = ("HMMA", "FFMA")


def loops(sass_text):
    """{kernel: [opcodes of each outermost loop that holds math]} from `cuobjdump -sass`."""
    kernels = {}
    cur, code, targets = None, None, None
    for line in sass_text.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            cur = m.group(1)
            code, targets = [], []
            kernels[cur] = (code, targets)
            continue
        if cur is None:
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)([^;]*);", line)
        if not m:
            continue
        addr, op, rest = int(m.group(1), 16), m.group(2).split(".")[0], m.group(3)
        code.append((addr, op))
        if op == "BRA":
            t = re.search(r"(0x[0-9a-f]+)", rest)
            if t and int(t.group(1), 16) < addr:
                targets.append((int(t.group(1), 16), addr))
    out = {}
    for name, (code, backs) in kernels.items():
        index = {a: i for i, (a, _) in enumerate(code)}
        # A loop inside another one is counted with it: keep the outermost.
        spans = sorted((index[s], index[e]) for s, e in backs if s in index)
        keep = []
        for (start, end) in sorted(backs):
            if start not in index:
                continue
            i, j = index[start], index[end]
            if any(a <= i and j <= b and (a, b) != (i, j) for a, b in spans):
                continue
            body = [op for _, op in code[i:j + 1]]
            if any(op in MATH for op in body):
                keep.append(body)
        if keep:
            out[name] = keep
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cuobjdump", required=True)
    ap.add_argument("cubins", nargs="+")
    a = ap.parse_args()
    rows = []
    for path in a.cubins:
        mode = os.path.basename(os.path.dirname(path)) or "."
        run = subprocess.run([a.cuobjdump, "-sass", path], capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"error: {a.cuobjdump} -sass {path} failed: {(run.stderr or run.stdout).strip()}")
        sass = run.stdout
        for name, bodies in loops(sass).items():
            for n, body in enumerate(bodies):
                c = collections.Counter(body)
                math = sum(c[m] for m in MATH)
                label = name + (f" #{n + 1}" if len(bodies) > 1 else "")
                rows.append((label, mode, len(body), math, c["LDS"], c["STS"], c["LDG"] + c["LDGSTS"],
                             sum(v for k, v in c.items() if k in INTEGER), len(body) / math))
    if not rows:
        sys.exit("error: no GEMM loops found (no HMMA or FFMA inside a loop)")
    print(f"{'kernel':<40} {'mode':<13} {'instr/step':>10} {'math':>5} {'LDS':>4} {'STS':>4} {'LDG':>4} {'integer':>7} {'instr/math':>10}")
    for r in sorted(rows):
        print(f"{r[0]:<40} {r[1]:<13} {r[2]:>10} {r[3]:>5} {r[4]:>4} {r[5]:>4} {r[6]:>4} {r[7]:>7} {r[8]:>10.1f}")


if __name__ == "__main__":
    main()
