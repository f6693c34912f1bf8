#!/usr/bin/env python3
"""Writes the PyTorch reference state that tests/torch_reference.rs compares against.

One training iteration of the small model (32 px, width 8, noise 8, text 16, text
projection 8, batch 4), run by the PyTorch peer (scripts/torch_peer.py) in float64 from
weights and inputs that are exactly representable in f32. Every value is stored as f32,
so the stored reference is the float64 result rounded once: the comparison measures our
f32 arithmetic against an exact reference, not against another f32 implementation.

Stored tensors (all F32):
- `weights.<name>`  parameters and batchnorm running statistics before the step
                    (names as Gan::export writes them)
- `inputs.images` [4, 3, 32, 32], `inputs.texts` [4, 16], `inputs.noise` [4, 8]
- `outputs.fake` (G output), `outputs.logits_real`, `outputs.logits_fake` (D step),
  `outputs.logits_g` (G step, after the D Adam step), `outputs.loss_d`,
  `outputs.loss_g`, `outputs.d_real`, `outputs.d_fake` (mean sigmoid, [1] each)
- `grads.<name>`    D parameter gradients of the D step and G parameter gradients of
                    the G step (before Adam)
- `after.<name>`    parameters after one Adam step each, and the running statistics
                    after the iteration (D's batchnorms ran three times: real, fake, G step)
- `bf16.<key>`      the same iteration from the same f32 weights under PyTorch's bf16
                    autocast, for every `outputs.`, `grads.` and `after.` key: the peer that
                    `--precision bf16` is held against (verify::torch::run_bf16)
The safetensors metadata holds `config` (ModelConfig JSON), `batch`, `torch`, `note`.

    python3 scripts/dev/torch_reference.py                   # src/verify/torch_reference.safetensors
    python3 scripts/dev/torch_reference.py --perturb bn_eps -o target/wrong.safetensors

`--perturb` writes a deliberately wrong reference (another convention) so one can see
the Rust test fail: TORCH_REFERENCE=target/wrong.safetensors cargo test --release --test torch_reference
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

CONFIG = {"size": 32, "width": 8, "noise_dim": 8, "text_dim": 16, "text_proj": 8, "slope": 0.2}
BATCH = 4

PERTURBATIONS = {
    "bn_eps": "batchnorm eps 1e-3 instead of 1e-5",
    "bn_momentum": "batchnorm momentum 0.2 instead of 0.1",
    "bce_sum": "BCE summed over the batch instead of averaged",
    "text_first": "text channels before the image features in D's concat",
    "g_before_d_adam": "G step through D's weights before the D Adam step",
}


def f32(t):
    return t.detach().to(torch.float32).contiguous().numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("-o", "--out", default=os.path.join(here, "..", "..", "src", "verify", "torch_reference.safetensors"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--perturb", choices=sorted(PERTURBATIONS), default=None, help="write a deliberately wrong reference")
    a = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    c = CONFIG
    # Built in f32 (so every weight is an f32 value), then widened to f64 exactly.
    g, d = tp.build(c["size"], c["width"], c["noise_dim"], c["text_dim"], c["text_proj"], seed=a.seed)
    g16, d16 = copy.deepcopy(g), copy.deepcopy(d)
    g, d = g.double(), d.double()
    batch32 = tp.make_batch(BATCH, c["size"], c["noise_dim"], c["text_dim"], seed=a.seed + 1)
    images, texts, noise = (t.double() for t in batch32)

    p = a.perturb
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
    rec = {}
    if p == "bce_sum":
        orig = tp.F.binary_cross_entropy_with_logits
        tp.F.binary_cross_entropy_with_logits = lambda x, y: orig(x, y, reduction="sum")
    if p == "g_before_d_adam":
        step, opt_d.step = opt_d.step, lambda: None
    tp.iteration(g, d, opt_d, opt_g, images, texts, noise, record=rec)
    if p == "g_before_d_adam":
        step()
    after = tp.named_state(g, d)

    # The peer of --precision bf16: the same iteration from the same f32 weights and batch
    # under bf16 autocast (autocast lowers f32 operations only, so this run is in f32).
    rec16 = {}
    opt_d16, opt_g16 = tp.make_optimizers(g16, d16)
    tp.iteration(g16, d16, opt_d16, opt_g16, *batch32, amp=torch.bfloat16, record=rec16)
    after16 = tp.named_state(g16, d16)

    out = {}
    for k, v in before.items():
        out[f"weights.{k}"] = f32(v)
    out["inputs.images"] = f32(images)
    out["inputs.texts"] = f32(texts)
    out["inputs.noise"] = f32(noise)
    for k in ("fake", "logits_real", "logits_fake", "logits_g"):
        out[f"outputs.{k}"] = f32(rec[k])
    for k in ("loss_d", "loss_g", "d_real", "d_fake"):
        out[f"outputs.{k}"] = f32(rec[k].reshape(1))
    for k, v in rec["grads_d"].items():
        out[f"grads.discriminator.{k}"] = f32(v)
    for k, v in rec["grads_g"].items():
        out[f"grads.generator.{k}"] = f32(v)
    for k, v in after.items():
        out[f"after.{k}"] = f32(v)
    if not p:
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

    note = "PyTorch float64 from f32-exact weights and inputs, stored as f32; bf16.*: PyTorch bf16 autocast from the same f32 weights"
    if p:
        note += f"; DELIBERATELY WRONG: {PERTURBATIONS[p]}"
    meta = {"config": json.dumps(c), "batch": str(BATCH), "torch": torch.__version__, "note": note, "seed": str(a.seed)}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_file(out, a.out, metadata=meta)
    size = os.path.getsize(a.out)
    print(f"wrote {a.out}: {len(out)} tensors, {size / 1024:.0f} KiB; loss_D {rec['loss_d'].item():.6f}, loss_G {rec['loss_g'].item():.6f}" + (f" [{note}]" if p else ""))


if __name__ == "__main__":
    main()
