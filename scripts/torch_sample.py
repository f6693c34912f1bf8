#!/usr/bin/env python3
"""Draw from a gan-engine checkpoint in PyTorch: the same images as `gan-engine sample`.

The checkpoint's tensors carry PyTorch's names (`generator.main.0.weight`, ...), so they
load as they are into scripts/torch_peer.py's Generator. Its JSON metadata holds the model
configuration and the TF-IDF vocabulary with its idf. This script reproduces the rest of
`gan-engine sample --text T ... -n N --seed S`:

- the TF-IDF vectors (scikit-learn's default tokens, raw counts times idf, L2-normalised);
- the noise, from our own generator (xoshiro256** seeded through splitmix64, the stream
  `Rng::derive(seed, "sample")`, Box-Muller; src/rng.rs);
- the grid: one row per text, N images per row, 2 px white gaps, small images zoomed.

Only the generator is loaded: the discriminator's options (`train --minibatch-std`, which
adds a layer to its head, and `train --text-in-d projection`, which replaces its text
projection by an embedding) do not matter here, and checkpoints with them draw the same way.
As `gan-engine sample`, it draws with the EMA generator (`generator_ema.*`, `train
--ema-half-life`) when the checkpoint has one, and with the raw one under `--no-ema`.

So the PNG it writes should match ours pixel for pixel, up to rounding: the two programs
compute in fp32 in different orders. `--compare-with PNG` prints how far apart they are.

    gan-engine sample --checkpoint runs/quick --text "Women Red Dress" -n 8 --out ours.png
    python3 scripts/torch_sample.py --checkpoint runs/quick --text "Women Red Dress" -n 8 \\
        --out torch.png --compare-with ours.png

Needs torch, safetensors, numpy and Pillow.
"""

import argparse
import json
import math
import os
import re
import sys
from collections import Counter

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_peer import Generator  # noqa: E402

M64 = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return x, z ^ (z >> 31)


def rotl(v, k):
    return ((v << k) | (v >> (64 - k))) & M64


class Rng:
    """src/rng.rs, value for value."""

    def __init__(self, seed):
        x, self.s = seed & M64, []
        for _ in range(4):
            x, v = splitmix64(x)
            self.s.append(v)

    @classmethod
    def derive(cls, seed, label):
        h = (seed ^ 0xCBF29CE484222325) & M64
        for b in label.encode():
            h = ((h ^ b) * 0x100000001B3) & M64
        return cls(h)

    def next_u64(self):
        s = self.s
        result = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def uniform(self):
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def normal(self):
        u1 = 1.0 - self.uniform()
        u2 = self.uniform()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def encode(text, vocab, idf):
    """src/text/mod.rs: tokens of two or more word characters, lower-cased; raw counts
    times idf in float64, L2-normalised, rounded to float32 once."""
    index = {w: i for i, w in enumerate(vocab)}
    counts = Counter(t for t in re.findall(r"(?u)\b\w\w+\b", text.lower()) if t in index)
    out = np.zeros(len(vocab), dtype=np.float32)
    vals = {index[t]: c * float(np.float32(idf[index[t]])) for t, c in counts.items()}
    norm2 = sum(v * v for v in vals.values())  # in first-seen order, as ours sums
    if norm2 > 0.0:
        inv = 1.0 / math.sqrt(norm2)
        for i, v in vals.items():
            out[i] = np.float32(v * inv)
    return out, not counts


def resolve(path):
    """A run folder (its newest checkpoint) or a checkpoint file, as `--checkpoint` takes."""
    if os.path.isdir(path):
        folder = os.path.join(path, "checkpoints")
        names = sorted(n for n in os.listdir(folder) if re.fullmatch(r"step-\d+\.safetensors", n)) if os.path.isdir(folder) else []
        if not names:
            sys.exit(f"error: --checkpoint {path}: no checkpoints/step-*.safetensors in this folder")
        return os.path.join(folder, names[-1])
    if not os.path.isfile(path):
        sys.exit(f"error: --checkpoint {path} does not exist")
    return path


def to_rgb(img):
    """[3, s, s] in [-1, 1] -> [s, s, 3] bytes, as src/train/report.rs rounds (half away
    from zero, then clamped)."""
    v = (img.astype(np.float32) + np.float32(1.0)) * np.float32(127.5)
    return np.clip(np.floor(v + np.float32(0.5)), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def grid(images, rows, cols, size):
    zoom, gap = max(128 // size, 1), 2
    cell = size * zoom
    out = np.full((rows * cell + (rows + 1) * gap, cols * cell + (cols + 1) * gap, 3), 255, dtype=np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        y0, x0 = gap + r * (cell + gap), gap + c * (cell + gap)
        out[y0 : y0 + cell, x0 : x0 + cell] = to_rgb(img).repeat(zoom, axis=0).repeat(zoom, axis=1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a run folder (its newest checkpoint) or a .safetensors file")
    ap.add_argument("--text", action="append", required=True, help="a product description; repeat for several rows")
    ap.add_argument("-n", type=int, default=8, help="images per text (grid columns)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="torch-samples.png")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compare-with", help="a grid PNG from `gan-engine sample` with the same arguments")
    ap.add_argument("--no-ema", action="store_true", help="the raw generator even when the checkpoint has an EMA generator")
    a = ap.parse_args()
    if a.n < 1:
        sys.exit("error: -n must be at least 1")

    path = resolve(a.checkpoint)
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            prefix = "generator_ema." if not a.no_ema and any(k.startswith("generator_ema.") for k in f.keys()) else "generator."
            weights = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    except Exception as e:  # safetensors raises its own error types for unreadable files
        sys.exit(f"error: --checkpoint {path} is not a readable safetensors file ({e})")
    if "gan_engine" not in meta:
        sys.exit(f"error: --checkpoint {path} is not a gan-engine checkpoint (no gan_engine metadata)")
    state = json.loads(meta["gan_engine"])
    cfg, tfidf = state["config"], state["tfidf"]
    size = cfg["size"]
    if cfg.get("progressive"):
        sys.exit(f"error: --checkpoint {path} is a progressive model (train --progressive); this script rebuilds the DCGAN generator only: draw it with gan-engine sample")

    g = Generator(size, cfg["width"], cfg["noise_dim"], cfg["text_dim"])
    missing, unexpected = g.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        sys.exit(f"error: {path}: the generator's tensors do not match (missing {missing}, unexpected {unexpected})")
    g = g.to(a.device).eval()

    rng = Rng.derive(a.seed, "sample")
    texts, noise = [], []
    for t in a.text:
        v, unknown = encode(t, tfidf["vocab"], tfidf["idf"])
        if unknown:
            print(f"warning: no word of {t!r} is in the model's vocabulary; it is drawn from noise alone", file=sys.stderr)
        for _ in range(a.n):
            texts.append(v)
            noise.append(np.array([rng.normal() for _ in range(cfg["noise_dim"])], dtype=np.float32))
    with torch.no_grad():
        images = g(torch.from_numpy(np.stack(noise)).to(a.device), torch.from_numpy(np.stack(texts)).to(a.device)).cpu().numpy()

    picture = grid(images, len(a.text), a.n, size)
    Image.fromarray(picture).save(a.out)
    print(f"wrote a {len(a.text)}x{a.n} grid of {size} px images to {a.out} (checkpoint {path}, iteration {state['iteration']})")
    if a.compare_with:
        ours = np.asarray(Image.open(a.compare_with).convert("RGB"))
        if ours.shape != picture.shape:
            sys.exit(f"error: --compare-with {a.compare_with} is {ours.shape[1]}x{ours.shape[0]} pixels, this grid {picture.shape[1]}x{picture.shape[0]}")
        diff = np.abs(ours.astype(np.int16) - picture.astype(np.int16))
        print(f"against {a.compare_with}: max difference {diff.max()} of 255, {np.count_nonzero(diff)} of {diff.size} channel values differ, mean {diff.mean():.4f}")


if __name__ == "__main__":
    main()
