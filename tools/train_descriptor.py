"""Train replicate's copy-detection descriptor (``copydesc32``) on CPU, SSCD-style.

Self-supervised: every training image is augmented twice with the edits that make
near-duplicates in practice, and the network learns to map the two edits close together
and every other image of the batch far away.

* Data: CIFAR-10 train (50,000) and the Tiny-ImageNet candidate pool (12,100),
  ``$REPLICATE_SHARED/data/...``; no labels are used. CIFAR-10 test is not used (it is
  the query set of the evaluation).
* Augmentations (:func:`augment`, torch ops on a whole batch, both views): affine
  zoom 0.8-1.25 (log-uniform) with aspect change up to +-8%, shifts up to +-3 pixels,
  rotation up to +-6 degrees (30% of images), the uncovered border filled by edge
  replication, reflection or a constant colour; a constant-colour frame of 1-3 pixels
  (10%); a caption-like filled box (8%); down- and up-sampling blur (10%); brightness
  +-0.12, contrast 0.7-1.4, saturation 0.5-1.5, per-channel offsets +-0.06 (80%), grayscale
  (5%); Gaussian noise (10%); rounding to uint8, then JPEG at quality 30-95 (40%,
  ``torchvision.io.encode_jpeg``). Horizontal flips are not used: mirrored copies are a
  separate option of the detector (``flips=True``).
* Loss: InfoNCE over the 2B descriptors of a batch (each view's positive is the other
  view of its image, the 2B - 2 others are negatives), temperature 0.05, plus
  ``entropy_weight`` (30, SSCD's value) times the KoLeo entropy regulariser
  ``-mean log(distance to the nearest descriptor of another image)``, as in SSCD.
* Optimiser: AdamW (lr 3e-3, weight decay 1e-4), linear warm-up over 5% of the steps then
  cosine decay; batch 256 images (512 views); 3,000 steps (768,000 pairs: 12.4 passes
  over the 62,100 images; the first shipped weights had 200 steps, less than one pass).
* Seeded (``--seed``): torch and numpy generators; batch order and every augmentation
  parameter come from them. With the same torch build and thread count the weights are
  expected to be the same (not checked by a second run); other builds or thread counts
  give slightly different floats.

Command used for the shipped weights (47 minutes on the 2-core box, half of it shared
with other work):

    python tools/train_descriptor.py --out replicate/data/weights --steps 3000

It writes ``copydesc32-<sha256 prefix>.npz`` and ``training_log.json`` next to it and
prints the sha256 to put into ``replicate/models/descriptor.py`` and the model card.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replicate.models.descriptor import MEAN, STD, CopyDescriptor, save_weights  # noqa: E402

SHARED = Path(os.environ.get("REPLICATE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def load_training_images() -> np.ndarray:
    """CIFAR-10 train followed by the Tiny-ImageNet candidate pool, uint8 NHWC."""
    train = np.load(SHARED / "data/cifar10/train.npz")["images"]
    pool = np.load(SHARED / "data/candidates/tinyimagenet_cifar10_32x32.npz")["images"]
    return np.concatenate([train, pool])


def _u(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def _geometric(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Affine zoom / aspect / shift / rotation; the uncovered border filled by edge
    replication, reflection or a constant colour (a third each)."""
    n, _, h, w = x.shape
    zoom = torch.exp(_u(g, n, math.log(0.8), math.log(1.25)))  # > 1: zoom in (crop), < 1: zoom out
    aspect = torch.exp(_u(g, n, -0.08, 0.08))
    rot = torch.where(torch.rand(n, generator=g) < 0.3, _u(g, n, -6.0, 6.0), torch.zeros(n)) * math.pi / 180
    tx = _u(g, n, -3.0, 3.0) * 2 / w
    ty = _u(g, n, -3.0, 3.0) * 2 / h
    sx, sy = aspect / zoom, 1 / (aspect * zoom)
    cos, sin = torch.cos(rot), torch.sin(rot)
    theta = torch.stack([torch.stack([sx * cos, -sx * sin, tx], 1), torch.stack([sy * sin, sy * cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    mode = torch.randint(0, 3, (n,), generator=g)
    out = torch.empty_like(x)
    for m, pad in enumerate(("border", "reflection", "zeros")):
        idx = (mode == m).nonzero().flatten()
        if len(idx) == 0:
            continue
        xi = x[idx]
        if pad == "zeros":  # a constant colour: shift so that the colour is 0, sample, shift back
            colour = torch.rand(len(idx), 3, 1, 1, generator=g)
            out[idx] = F.grid_sample(xi - colour, grid[idx], mode="bilinear", padding_mode="zeros",
                                     align_corners=False) + colour
        else:
            out[idx] = F.grid_sample(xi, grid[idx], mode="bilinear", padding_mode=pad, align_corners=False)
    return out


def _frame_and_box(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    yy = torch.arange(h).view(1, h, 1)
    xx = torch.arange(w).view(1, 1, w)
    # a constant-colour frame of 1-3 pixels (10%)
    width = torch.randint(1, 4, (n, 1, 1), generator=g)
    frame = (yy < width) | (yy >= h - width) | (xx < width) | (xx >= w - width)
    frame &= (torch.rand(n, 1, 1, generator=g) < 0.10)
    colour = torch.rand(n, 3, 1, 1, generator=g)
    x = torch.where(frame.unsqueeze(1), colour, x)
    # a caption-like filled box (8%): 3-8 pixels high, 8-32 wide, anywhere
    bh = torch.randint(3, 9, (n, 1, 1), generator=g)
    bw = torch.randint(8, 33, (n, 1, 1), generator=g)
    y0 = (torch.rand(n, 1, 1, generator=g) * (h - bh + 1)).long()
    x0 = (torch.rand(n, 1, 1, generator=g) * (w - bw + 1)).long()
    box = (yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw) & (torch.rand(n, 1, 1, generator=g) < 0.08)
    colour = torch.rand(n, 3, 1, 1, generator=g)
    return torch.where(box.unsqueeze(1), colour, x)


def _resample_blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    sel = (torch.rand(n, generator=g) < 0.10).nonzero().flatten()
    if len(sel):
        size = int(torch.randint(16, 29, (1,), generator=g))
        small = F.interpolate(x[sel], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x[sel] = F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)
    return x


def _colour(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = len(x)
    on = (torch.rand(n, 1, 1, 1, generator=g) < 0.8).float()
    gray_w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    gray = (x * gray_w).sum(1, keepdim=True)
    sat = _u(g, n, 0.5, 1.5).view(n, 1, 1, 1)
    y = gray + (x - gray) * sat
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    con = torch.exp(_u(g, n, math.log(0.7), math.log(1.4))).view(n, 1, 1, 1)
    y = mean + (y - mean) * con
    y = y + _u(g, n, -0.12, 0.12).view(n, 1, 1, 1) + (torch.rand(n, 3, 1, 1, generator=g) * 0.12 - 0.06)
    x = on * y + (1 - on) * x
    to_gray = (torch.rand(n, 1, 1, 1, generator=g) < 0.05).float()
    x = to_gray * (x * gray_w).sum(1, keepdim=True).expand_as(x) + (1 - to_gray) * x
    noise = (torch.rand(n, 1, 1, 1, generator=g) < 0.10).float() * _u(g, n, 0.0, 0.03).view(n, 1, 1, 1)
    return x + noise * torch.randn(x.shape, generator=g)


def _jpeg(u8: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = len(u8)
    sel = (torch.rand(n, generator=g) < 0.4).nonzero().flatten().tolist()
    quality = torch.randint(30, 96, (n,), generator=g).tolist()
    for i in sel:
        u8[i] = decode_jpeg(encode_jpeg(u8[i], quality=quality[i]))
    return u8


def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """uint8 NCHW -> one augmented view, uint8 NCHW (see the module docstring)."""
    x = images.float() / 255.0
    x = _geometric(x, g)
    x = _frame_and_box(x, g)
    x = _resample_blur(x, g)
    x = _colour(x, g)
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return _jpeg(u8, g)


def normalise(u8: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return ((u8.float() / 255.0 - mean) / std).contiguous(memory_format=torch.channels_last)


def losses(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE and KoLeo of ``z`` (2B unit vectors: views 0..B-1 then their pairs)."""
    n = len(z)
    b = n // 2
    sim = z @ z.T
    eye = torch.eye(n, dtype=torch.bool)
    target = torch.cat([torch.arange(b, n), torch.arange(0, b)])
    logits = (sim / temperature).masked_fill(eye, float("-inf"))
    infonce = F.cross_entropy(logits, target)
    # KoLeo over other images only: mask the view itself and its positive
    same = eye.clone()
    same[torch.arange(n), target] = True
    nearest = sim.masked_fill(same, -2.0).max(dim=1).values
    dist = torch.sqrt((2 - 2 * nearest).clamp(min=1e-8))
    koleo = -torch.log(dist + 1e-8).mean()
    return infonce, koleo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="replicate/data/weights", help="folder for the weights and the log")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=256, help="images per step (two views each)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument("--entropy-weight", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=20261206)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images = torch.from_numpy(load_training_images()).permute(0, 3, 1, 2).contiguous()
    model = CopyDescriptor().to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warm = max(1, args.steps // 20)

    def lr_at(step: int) -> float:
        if step < warm:
            return args.lr * (step + 1) / warm
        return args.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, args.steps - warm)))

    order = rng.permutation(len(images))
    pos = 0
    log = []
    t0 = time.perf_counter()
    for step in range(args.steps):
        if pos + args.batch > len(order):
            order, pos = rng.permutation(len(images)), 0
        idx = torch.from_numpy(order[pos : pos + args.batch])
        pos += args.batch
        batch = images[idx]
        with torch.no_grad():
            v = torch.cat([augment(batch, g), augment(batch, g)])
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        z = model(normalise(v))
        infonce, koleo = losses(z, args.temperature)
        loss = infonce + args.entropy_weight * koleo
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == args.steps - 1:
            with torch.no_grad():
                b = len(batch)
                pos_cos = (z[:b] * z[b:]).sum(1).mean().item()
            row = {"step": step, "seconds": round(time.perf_counter() - t0, 1), "loss": round(loss.item(), 4),
                   "infonce": round(infonce.item(), 4), "koleo": round(koleo.item(), 4),
                   "positive_cos": round(pos_cos, 4), "lr": lr_at(step)}
            log.append(row)
            print(json.dumps(row), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "copydesc32.npz.tmp"
    sha = save_weights(model.eval(), tmp)
    final = out / f"copydesc32-{sha[:8]}.npz"
    os.replace(tmp, final)
    meta = {"weights_file": final.name, "sha256": sha, "args": vars(args), "training_images": len(images),
            "seconds": round(time.perf_counter() - t0, 1), "torch": torch.__version__, "log": log}
    (out / "copydesc32_training_log.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {final} sha256 {sha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
