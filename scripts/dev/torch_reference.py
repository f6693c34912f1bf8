#!/usr/bin/env python3
"""Writes the PyTorch reference states that gan-engine's training is compared against.

Training iterations of a small model (default: 32 px, width 8, noise 8, text 16, text
projection 8, batch 4, one iteration), run by the PyTorch peer (scripts/torch_peer.py) in
float64 from weights and inputs that are exactly representable in f32. Every value is
stored as f32, so the stored reference is the float64 result rounded once: the comparison
(src/verify/torch.rs) measures our f32 arithmetic against an exact reference, not against
another f32 implementation.

Stored tensors (all F32), for I iterations of batch N:
- `weights.<name>`  parameters and batchnorm running statistics before the first step
                    (names as Gan::export writes them)
- `inputs.images` [I*N, 3, S, S], `inputs.texts` [I*N, T], `inputs.noise` [I*N, Z], and
  with --matching-aware W > 0 `inputs.mismatched` [I*N, T]: iteration i's batch is rows
  i*N .. (i+1)*N
- `outputs.fake` (G output), `outputs.logits_real`, `outputs.logits_fake` of the first
  iteration's D step; `outputs.logits_g` of the last iteration's G step (D after its Adam
  step); `outputs.loss_d`, `outputs.loss_g`, `outputs.d_real`, `outputs.d_fake` [I]: one
  per iteration
- `grads.<name>`    D parameter gradients of the last D step and G parameter gradients of
                    the last G step (before Adam); `iter<k>.grads.<name>` the same of
                    iteration k < I (1-based): an entry whose gradient is rounding noise in
                    any iteration may take a different Adam step there
- `after.<name>`    parameters and running statistics after the last iteration
- `bf16.<key>`      with one iteration: the same iteration from the same f32 weights under
                    PyTorch's bf16 autocast, for every `outputs.`, `grads.` and `after.`
                    key: the peer that `--precision bf16` is held against
                    (verify::torch::run_bf16)
The safetensors metadata holds `config` (ModelConfig JSON), `batch`, `iterations`,
`matching_aware`, `torch`, `note`, `seed`.

    python3 scripts/dev/torch_reference.py            # src/verify/torch_reference.safetensors
    python3 scripts/dev/torch_reference.py --size 64 --width 4 --batch 2 --iterations 2 \\
        --matching-aware 0.5 -o src/verify/torch_reference_64px_gancls.safetensors
    python3 scripts/dev/torch_reference.py --perturb bn_eps -o tests/fixtures/torch/bn_eps.safetensors

`--perturb NAME` writes a deliberately wrong reference (another convention) as an overlay:
only the tensors that differ from the unperturbed run of the same settings (computed in
the same process), with `overlay` in the metadata. tests/torch_reference.rs lays each
overlay over the committed reference and requires the comparison to fail, naming the
tensors that must. `--all-perturbations DIR` writes every overlay into DIR.
"""

import argparse
import copy
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from safetensors.numpy import save_file

# torch_peer.py stays in scripts/, one folder up.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch_peer as tp  # noqa: E402

SMALL = {"noise_dim": 8, "text_dim": 16, "text_proj": 8, "slope": 0.2}

PERTURBATIONS = {
    "bn_eps": "batchnorm eps 1e-3 instead of 1e-5",
    "bn_momentum": "batchnorm momentum 0.2 instead of 0.1",
    "bce_sum": "BCE summed over the batch instead of averaged",
    "text_first": "text channels before the image features in D's concat",
    "g_before_d_adam": "G step through D's weights before the D Adam step",
}


def f32(t):
    return t.detach().to(torch.float32).contiguous().numpy()


def make_mismatched(texts, n):
    """For each row, the text of another row of the same batch (the next one): a caption
    that does not match the image, as the loader's mismatched texts are."""
    return torch.roll(texts, shifts=1, dims=0) if n > 1 else texts.flip(1)


def run(c, batch, iterations, w, seed, perturb=None):
    """The reference tensors of `iterations` iterations with `perturb` applied."""
    torch.use_deterministic_algorithms(True)
    # Built in f32 (so every weight is an f32 value), then widened to f64 exactly.
    g, d = tp.build(c["size"], c["width"], c["noise_dim"], c["text_dim"], c["text_proj"], seed=seed)
    g16, d16 = copy.deepcopy(g), copy.deepcopy(d)
    g, d = g.double(), d.double()
    batches, batch32 = [], None
    for i in range(iterations):
        b32 = tp.make_batch(batch, c["size"], c["noise_dim"], c["text_dim"], seed=seed + 1 + i)
        batch32 = batch32 or b32
        images, texts, noise = (t.double() for t in b32)
        batches.append((images, texts, noise, make_mismatched(texts, batch)))

    p = perturb
    if p in ("bn_eps", "bn_momentum"):
        for m in list(g.modules()) + list(d.modules()):
            if isinstance(m, nn.BatchNorm2d):
                if p == "bn_eps":
                    m.eps = 1e-3
                else:
                    m.momentum = 0.2
    if p == "text_first":

        def forward(image, text, d=d):
            f = d.main(image)
            t = d.text(text)[:, :, None, None].expand(-1, -1, f.shape[2], f.shape[3])
            return d.head(torch.cat([t, f], dim=1)).view(-1)

        d.forward = forward

    before = {k: v.clone() for k, v in tp.named_state(g, d).items()}
    opt_d, opt_g = tp.make_optimizers(g, d)
    orig_bce = tp.F.binary_cross_entropy_with_logits
    if p == "bce_sum":
        tp.F.binary_cross_entropy_with_logits = lambda x, y: orig_bce(x, y, reduction="sum")
    recs = []
    try:
        for images, texts, noise, mismatched in batches:
            rec = {}
            if p == "g_before_d_adam":
                step, opt_d.step = opt_d.step, lambda: None
            tp.iteration(g, d, opt_d, opt_g, images, texts, noise, record=rec, mismatched=mismatched, w=w)
            if p == "g_before_d_adam":
                opt_d.step = step
                step()
            recs.append(rec)
    finally:
        tp.F.binary_cross_entropy_with_logits = orig_bce
    after = tp.named_state(g, d)

    out = {}
    for k, v in before.items():
        out[f"weights.{k}"] = f32(v)
    cat = lambda i: f32(torch.cat([b[i] for b in batches]))  # noqa: E731
    out["inputs.images"], out["inputs.texts"], out["inputs.noise"] = cat(0), cat(1), cat(2)
    if w > 0:
        out["inputs.mismatched"] = cat(3)
    first, last = recs[0], recs[-1]
    for k in ("fake", "logits_real", "logits_fake"):
        out[f"outputs.{k}"] = f32(first[k])
    out["outputs.logits_g"] = f32(last["logits_g"])
    for k in ("loss_d", "loss_g", "d_real", "d_fake"):
        out[f"outputs.{k}"] = f32(torch.stack([r[k].reshape(()) for r in recs]))
    for i, rec in enumerate(recs):
        prefix = "grads" if i + 1 == len(recs) else f"iter{i + 1}.grads"
        for k, v in rec["grads_d"].items():
            out[f"{prefix}.discriminator.{k}"] = f32(v)
        for k, v in rec["grads_g"].items():
            out[f"{prefix}.generator.{k}"] = f32(v)
    for k, v in after.items():
        out[f"after.{k}"] = f32(v)
    if not p and iterations == 1:
        # The peer of --precision bf16: the same iteration from the same f32 weights and
        # batch under bf16 autocast (autocast lowers f32 operations only, so this run is in
        # f32).
        rec16 = {}
        opt_d16, opt_g16 = tp.make_optimizers(g16, d16)
        mismatched16 = make_mismatched(batch32[1], batch)
        tp.iteration(g16, d16, opt_d16, opt_g16, *batch32, amp=torch.bfloat16, record=rec16, mismatched=mismatched16, w=w)
        after16 = tp.named_state(g16, d16)
        for k in ("fake", "logits_real", "logits_fake", "logits_g"):
            out[f"bf16.outputs.{k}"] = f32(rec16[k])
        for k in ("loss_d", "loss_g", "d_real", "d_fake"):
            out[f"bf16.outputs.{k}"] = f32(rec16[k].reshape(1))
        for k, v in rec16["grads_d"].items():
            out[f"bf16.grads.discriminator.{k}"] = f32(v)
        for k, v in rec16["grads_g"].items():
            out[f"bf16.grads.generator.{k}"] = f32(v)
        for k, v in after16.items():
            out[f"bf16.after.{k}"] = f32(v)
    return out, recs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("-o", "--out", default=os.path.join(here, "..", "..", "src", "verify", "torch_reference.safetensors"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--size", type=int, default=32, choices=[32, 64, 128])
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=1, help="training iterations (Adam's t reaches this)")
    ap.add_argument("--matching-aware", type=float, default=0.0, help="weight W of the mismatched-caption term (gan-engine train --matching-aware)")
    ap.add_argument("--perturb", choices=sorted(PERTURBATIONS), default=None, help="write a deliberately wrong reference, as an overlay")
    ap.add_argument("--all-perturbations", metavar="DIR", default=None, help="write every perturbation's overlay into DIR as NAME.safetensors")
    a = ap.parse_args()

    c = {"size": a.size, "width": a.width, **SMALL}
    w = a.matching_aware
    base, recs = run(c, a.batch, a.iterations, w, a.seed)
    meta = {
        "config": json.dumps(c),
        "batch": str(a.batch),
        "iterations": str(a.iterations),
        "matching_aware": repr(w),
        "torch": torch.__version__,
        "seed": str(a.seed),
    }
    note = "PyTorch float64 from f32-exact weights and inputs, stored as f32"
    if a.iterations == 1:
        note += "; bf16.*: PyTorch bf16 autocast from the same f32 weights"

    jobs = []
    if a.all_perturbations:
        jobs = [(p, os.path.join(a.all_perturbations, f"{p}.safetensors")) for p in sorted(PERTURBATIONS)]
    elif a.perturb:
        jobs = [(a.perturb, a.out)]
    if not jobs:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        save_file(base, a.out, metadata={**meta, "note": note})
        losses = ", ".join(f"loss_D {r['loss_d'].item():.6f} loss_G {r['loss_g'].item():.6f}" for r in recs)
        print(f"wrote {os.path.normpath(a.out)}: {len(base)} tensors, {os.path.getsize(a.out) / 1024:.0f} KiB; {losses}")
        return
    for p, path in jobs:
        wrong, _ = run(c, a.batch, a.iterations, w, a.seed, perturb=p)
        changed = {k: v for k, v in wrong.items() if not np.array_equal(v, base[k])}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        pnote = f"{note}; DELIBERATELY WRONG: {PERTURBATIONS[p]}; overlay: only the tensors that differ from the unperturbed run"
        save_file(changed, path, metadata={**meta, "note": pnote, "overlay": p})
        print(f"wrote {path}: {len(changed)} of {len(base)} tensors differ, {os.path.getsize(path) / 1024:.0f} KiB [{PERTURBATIONS[p]}]")


if __name__ == "__main__":
    main()
