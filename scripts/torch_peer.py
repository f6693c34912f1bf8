#!/usr/bin/env python3
"""The gan-engine model and training loop in PyTorch, for side-by-side runs.

Same generator and discriminator as src/model/mod.rs (same layers, same parameter
names under `generator.` / `discriminator.`, same initialisation scheme), same loop as
src/train/gan.rs:

- the fake batch is computed once per iteration; the D step uses it detached;
- D step: loss_D = (BCE(D(x, t), 1) + BCE(D(G(z, t), t), 0)) / 2, real and fake as two
  separate forward passes (separate batchnorm statistics), then Adam on D; with a
  mismatched-caption weight W > 0 (GAN-CLS, `--matching-aware` of gan-engine train) the
  fake term is weighted 1 - W and a third pass adds W BCE(D(x, t'), 0);
- G step: D frozen (no D parameter gradients), D still in training mode (batch
  statistics), flipped labels: loss_G = BCE(D(fake, t), 1), then Adam on G;
- Adam lr 2e-4, betas (0.5, 0.999), eps 1e-8.

The batch is fixed (random images in [-1, 1], sparse non-negative unit text vectors,
standard-normal noise), so the timing measures the model and loop only, like
`gan-engine bench`.

    python3 scripts/torch_peer.py --size 64 --batch 64 --threads 2
    python3 scripts/torch_peer.py --size 128 --amp bf16
    python3 scripts/torch_peer.py --size 64 --threads 2 --profile

Prints the parameter counts and one `torch ...` line with the median seconds per
iteration (scripts/compare.sh parses it).
"""

import argparse
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# The article's run: 300,000 iterations in 72 hours on a GTX 1070 Ti (128 px).
BASELINE_S = 0.864


class Generator(nn.Module):
    """[noise ++ text] as [n, noise + text, 1, 1] -> transposed convs -> tanh image."""

    def __init__(self, size, width, noise_dim, text_dim):
        super().__init__()
        blocks = size.bit_length() - 1 - 2  # log2(size) - 2: down to 4x4
        ch = width << (blocks - 1)
        c_in = noise_dim + text_dim
        layers = []
        for b in range(blocks):
            stride, pad = (1, 0) if b == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(c_in, ch, 4, stride, pad, bias=False), nn.BatchNorm2d(ch), nn.ReLU()]
            c_in, ch = ch, ch // 2
        layers += [nn.ConvTranspose2d(c_in, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, noise, text):
        # Noise first, then text: the channel order of our ConcatTile.
        z = torch.cat([noise, text], dim=1)[:, :, None, None]
        return self.main(z)


class Discriminator(nn.Module):
    """Strided convs to 4x4; text projected, tiled over the grid and concatenated after
    the image features; 1x1 conv, batchnorm, LeakyReLU, 4x4 conv -> one logit."""

    def __init__(self, size, width, text_dim, text_proj, slope=0.2):
        super().__init__()
        blocks = size.bit_length() - 1 - 2
        layers = []
        c_in, ch = 3, width
        for b in range(blocks):
            layers.append(nn.Conv2d(c_in, ch, 4, 2, 1, bias=False))
            if b > 0:
                layers.append(nn.BatchNorm2d(ch))
            layers.append(nn.LeakyReLU(slope))
            c_in, ch = ch, ch * 2
        top = width << (blocks - 1)
        self.main = nn.Sequential(*layers)
        self.text = nn.Sequential(nn.Linear(text_dim, text_proj), nn.LeakyReLU(slope))
        self.head = nn.Sequential(
            nn.Conv2d(top + text_proj, top, 1, 1, 0, bias=False),
            nn.BatchNorm2d(top),
            nn.LeakyReLU(slope),
            nn.Conv2d(top, 1, 4, 1, 0, bias=False),
        )

    def forward(self, image, text):
        f = self.main(image)
        t = self.text(text)
        t = t[:, :, None, None].expand(-1, -1, f.shape[2], f.shape[3])
        return self.head(torch.cat([f, t], dim=1)).view(-1)


def dcgan_init(module, gen):
    """DCGAN initialisation, as in our Conv::new / BatchNorm2d::new: conv weights
    N(0, 0.02), batchnorm gamma N(1, 0.02), beta 0; Linear keeps PyTorch's default.
    (The values differ from ours, the distributions do not.)"""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            with torch.no_grad():
                m.weight.normal_(0.0, 0.02, generator=gen)
        elif isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.normal_(1.0, 0.02, generator=gen)
                m.bias.zero_()


def build(size, width, noise_dim=100, text_dim=256, text_proj=128, seed=0, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the Linear's default init
    g = Generator(size, width, noise_dim, text_dim)
    d = Discriminator(size, width, text_dim, text_proj)
    dcgan_init(g, gen)
    dcgan_init(d, gen)
    return g.to(device=device, dtype=dtype), d.to(device=device, dtype=dtype)


def named_state(g, d):
    """Parameters and batchnorm running statistics under our checkpoint names
    (`generator.main.0.weight`, ...); num_batches_tracked is PyTorch-only."""
    out = {}
    for prefix, m in (("generator", g), ("discriminator", d)):
        for k, v in m.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                out[f"{prefix}.{k}"] = v
    return out


def make_optimizers(g, d):
    # foreach=False: the plain per-tensor loop, the same arithmetic as our adam_step.
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-8, foreach=False)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-8, foreach=False)
    return opt_d, opt_g


def make_batch(n, size, noise_dim, text_dim, seed=1, dtype=torch.float32, device="cpu"):
    """Images in [-1, 1]; TF-IDF-like text vectors (about 8 non-zero, non-negative
    entries, unit length); standard-normal noise."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=gen, dtype=torch.float64) * 2 - 1
    keep = torch.rand(n, text_dim, generator=gen, dtype=torch.float64) < min(1.0, 8 / text_dim)
    texts = torch.rand(n, text_dim, generator=gen, dtype=torch.float64) * keep
    texts = texts / texts.norm(dim=1, keepdim=True).clamp_min(1e-12)
    noise = torch.randn(n, noise_dim, generator=gen, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (images, texts, noise))


def iteration(g, d, opt_d, opt_g, images, texts, noise, amp=None, record=None, mismatched=None, w=0.0):
    """One training iteration exactly as Gan::iteration. `record`, when a dict, receives
    the intermediate values the reference file stores (losses, outputs, gradients).
    `mismatched` (captions that do not match the images) and `w` are the matching-aware
    loss's, as train/gan.rs: the fake term weighted 1 - w, the mismatched term w."""
    n = images.shape[0]
    ones = torch.ones(n, dtype=images.dtype, device=images.device)
    zeros = torch.zeros_like(ones)

    def bce(logits, target):
        # Mean BCE on logits, in the batch's dtype (fp32 under bf16 autocast, f64 in
        # the reference).
        return F.binary_cross_entropy_with_logits(logits.to(target.dtype), target)

    def autocast():
        if amp is None:
            return torch.autocast(images.device.type, enabled=False)
        return torch.autocast(images.device.type, dtype=amp)

    # D step. The fake batch is computed once; the D step sees it detached.
    with autocast():
        fake = g(noise, texts)
    opt_d.zero_grad(set_to_none=False)
    with autocast():
        logits_real = d(images, texts)
        loss_real = bce(logits_real, ones)
    (0.5 * loss_real).backward()
    with autocast():
        logits_fake = d(fake.detach(), texts)
        loss_fake = bce(logits_fake, zeros)
    (0.5 * (1 - w) * loss_fake).backward()
    loss_d = 0.5 * (loss_real + (1 - w) * loss_fake)
    if w > 0:
        with autocast():
            loss_mismatch = bce(d(images, mismatched), zeros)
        (0.5 * w * loss_mismatch).backward()
        loss_d = loss_d + 0.5 * w * loss_mismatch
    if record is not None:
        record["fake"] = fake.detach().clone()
        record["logits_real"] = logits_real.detach().clone()
        record["logits_fake"] = logits_fake.detach().clone()
        record["loss_d"] = loss_d.detach().clone()
        record["d_real"] = torch.sigmoid(logits_real.detach()).mean()
        record["d_fake"] = torch.sigmoid(logits_fake.detach()).mean()
        record["grads_d"] = {name: p.grad.detach().clone() for name, p in d.named_parameters()}
    opt_d.step()

    # G step: D frozen (its parameters get no gradient) but still in training mode, so
    # it normalises with this batch's statistics and updates its running statistics.
    for p in d.parameters():
        p.requires_grad_(False)
    opt_g.zero_grad(set_to_none=False)
    with autocast():
        logits_g = d(fake, texts)
        loss_g = bce(logits_g, ones)
    loss_g.backward()
    for p in d.parameters():
        p.requires_grad_(True)
    if record is not None:
        record["logits_g"] = logits_g.detach().clone()
        record["loss_g"] = loss_g.detach().clone()
        record["grads_g"] = {name: p.grad.detach().clone() for name, p in g.named_parameters()}
    opt_g.step()
    return loss_d, loss_g


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64, choices=[32, 64, 128])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=5, help="timed iterations (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's choice)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--amp", choices=["bf16"], default=None, help="bf16 autocast for the forward passes")
    ap.add_argument("--precision", choices=["f32", "bf16"], default=None, help="as gan-engine's flag: bf16 is --amp bf16")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="after the timing, run --iters more iterations under torch.profiler and print the ops by input "
        "shape (self time per iteration), to set beside `gan-engine bench --profile`",
    )
    ap.add_argument(
        "--tf32",
        choices=["default", "on", "off"],
        default="default",
        help="TF32 for fp32 convolutions and matmuls on the GPU: PyTorch's defaults (cuDNN convolutions "
        "in TF32, matmuls in fp32), on for both, or off for both (true fp32, what gan-engine's default "
        "GEMM mode tf32x3 matches)",
    )
    a = ap.parse_args()
    if a.precision == "bf16":
        a.amp = "bf16"
    if a.tf32 != "default":
        torch.backends.cudnn.allow_tf32 = a.tf32 == "on"
        torch.backends.cuda.matmul.allow_tf32 = a.tf32 == "on"

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device == "cuda" and not torch.cuda.is_available():
        print("skipped: PyTorch sees no CUDA device", file=sys.stderr)
        sys.exit(3)
    dev = torch.device(a.device)
    g, d = build(a.size, a.width, device=dev)
    opt_d, opt_g = make_optimizers(g, d)
    images, texts, noise = make_batch(a.batch, a.size, 100, 256, device=dev)
    count = lambda m: sum(p.numel() for p in m.parameters())
    print(f"parameters: generator {count(g):,}, discriminator {count(d):,}")
    amp = torch.bfloat16 if a.amp == "bf16" else None

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for i in range(a.warmup + a.iters):
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss_d, loss_g = iteration(g, d, opt_d, opt_g, images, texts, noise, amp)
            end.record()
            end.synchronize()
            dt = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            loss_d, loss_g = iteration(g, d, opt_d, opt_g, images, texts, noise, amp)
            dt = time.perf_counter() - t0
        sync()
        if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
            sys.exit(f"non-finite loss at iteration {i}: loss_D {loss_d.item()}, loss_G {loss_g.item()}")
        if i >= a.warmup:
            times.append(dt)
    med = statistics.median(times)
    dtype = "bf16-autocast" if amp else "fp32"
    if dev.type == "cuda" and not amp:
        dtype += f" tf32={a.tf32}(conv:{'on' if torch.backends.cudnn.allow_tf32 else 'off'},matmul:{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})"
    print(
        f"torch {torch.__version__} device={a.device} size={a.size} width={a.width} batch={a.batch} dtype={dtype} "
        f"threads={torch.get_num_threads()} iters={a.iters} median_s={med:.4f} min_s={min(times):.4f} "
        f"it_per_s={1 / med:.3f} vs_1070ti={BASELINE_S / med:.3f}"
    )
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=activities, record_shapes=True) as prof:
            for _ in range(a.iters):
                iteration(g, d, opt_d, opt_g, images, texts, noise, amp)
            sync()
        key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        rows = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: getattr(e, key), reverse=True)
        print(f"profile of {a.iters} iterations, by op and input shapes (self time per iteration):")
        for e in rows[:40]:
            ms = getattr(e, key) / 1e3 / a.iters
            if ms >= 0.05:
                print(f"  {e.key:<36} {ms:9.2f} ms  {e.count / a.iters:5.1f} calls  {str(e.input_shapes)[:90]}")


if __name__ == "__main__":
    main()
