"""A near-duplicate benchmark built from real CIFAR-10 images.

Planted copies: real images passed through one transform each (JPEG re-encoding, small
shifts, crop-and-resize, brightness/contrast/colour changes, slight scaling, and
horizontal flips, which are reported separately) are mixed with real distinct images.
A detector is then asked, for every query image, whether it has a near-duplicate in the
reference set; the planted copies should be flagged (recall per transform) and the
distinct images should not (false flags).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(x)


def jpeg(quality: int) -> Transform:
    def f(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        buf = io.BytesIO()
        _pil(x).save(buf, format="JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))

    return f


def shift(pixels: int) -> Transform:
    """Translate by ``pixels`` in a random direction, filling the border by edge replication."""

    def f(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        dy, dx = [(pixels, 0), (0, pixels), (pixels, pixels), (-pixels, 0), (0, -pixels)][rng.integers(5)]
        p = pixels
        padded = np.pad(x, ((p, p), (p, p), (0, 0)), mode="edge")
        h, w = x.shape[:2]
        return padded[p - dy : p - dy + h, p - dx : p - dx + w]

    return f


def crop_resize(crop: int) -> Transform:
    """Crop ``crop`` pixels in total from the borders (random split), resize back (bicubic)."""

    def f(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = x.shape[:2]
        top, left = rng.integers(0, crop + 1, size=2)
        box = (int(left), int(top), int(w - (crop - left)), int(h - (crop - top)))
        return np.asarray(_pil(x).crop(box).resize((w, h), Image.BICUBIC))

    return f


def scale(factor: float) -> Transform:
    """Resize by ``factor`` and centre-crop (zoom in) or edge-pad (zoom out) to the original size."""

    def f(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = x.shape[:2]
        s = max(1, round(h * factor))
        y = np.asarray(_pil(x).resize((s, s), Image.BICUBIC))
        if s >= h:
            o = (s - h) // 2
            return y[o : o + h, o : o + w]
        a = (h - s) // 2
        return np.pad(y, ((a, h - s - a), (a, w - s - a), (0, 0)), mode="edge")

    return f


def brightness(delta: int) -> Transform:
    def f(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(x.astype(np.int16) + delta, 0, 255).astype(np.uint8)

    return f


def contrast(factor: float) -> Transform:
    def f(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(ImageEnhance.Contrast(_pil(x)).enhance(factor))

    return f


def colour_shift(amount: int) -> Transform:
    """Add a random per-channel offset in [-amount, amount] (a white-balance change)."""

    def f(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        off = rng.integers(-amount, amount + 1, size=3)
        return np.clip(x.astype(np.int16) + off, 0, 255).astype(np.uint8)

    return f


def saturation(factor: float) -> Transform:
    def f(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(ImageEnhance.Color(_pil(x)).enhance(factor))

    return f


def hflip() -> Transform:
    def f(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return x[:, ::-1]

    return f


TRANSFORMS: dict[str, Transform] = {
    "jpeg50": jpeg(50),
    "jpeg75": jpeg(75),
    "jpeg90": jpeg(90),
    "shift1": shift(1),
    "shift2": shift(2),
    "crop_resize_2px": crop_resize(2),
    "crop_resize_4px": crop_resize(4),
    "scale_1.06": scale(1.06),
    "scale_0.94": scale(0.94),
    "brightness+20": brightness(20),
    "brightness-20": brightness(-20),
    "contrast_0.8": contrast(0.8),
    "contrast_1.2": contrast(1.2),
    "colour_shift_12": colour_shift(12),
    "saturation_0.7": saturation(0.7),
}
FLIP = {"hflip": hflip()}


def build(
    reference: np.ndarray,
    distinct: np.ndarray,
    per_transform: int,
    seed: int = 0,
    include_flips: bool = True,
) -> dict[str, np.ndarray]:
    """Query images: planted copies of ``reference`` images plus the ``distinct`` images.

    Returns ``images`` (the query), ``transform`` (name, ``"distinct"`` for real distinct
    images) and ``source`` (the reference position a planted copy came from, -1 else).
    """
    rng = np.random.default_rng(seed)
    transforms = {**TRANSFORMS, **(FLIP if include_flips else {})}
    images, names, sources = [], [], []
    for name, fn in transforms.items():
        src = rng.choice(len(reference), size=per_transform, replace=False)
        for s in src:
            images.append(fn(reference[s], rng))
            names.append(name)
            sources.append(int(s))
    images.extend(distinct)
    names.extend(["distinct"] * len(distinct))
    sources.extend([-1] * len(distinct))
    return {
        "images": np.stack(images).astype(np.uint8),
        "transform": np.array(names),
        "source": np.array(sources, dtype=np.int64),
    }
