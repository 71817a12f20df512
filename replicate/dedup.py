"""Near-duplicate detection between a new test set and the original sets.

A new test set is worthless if it contains near-duplicates of the original train or test
images. CIFAR-10.1 rejected candidates close to a CIFAR-10 image in pixel L2 and checked
the nearest neighbours by hand; ImageNetV2 combined pixel L2, feature L2 and SSIM with
human review. :func:`find_near_duplicates` combines several signals:

* perceptual hashes (``phash``, ``dhash``, ... from :mod:`replicate.hashing`): every
  pair within a Hamming radius (:func:`replicate.hamming.radius_search`);
* exact pixel L2 (:func:`replicate._l2.l2_knn`, int8 products): the ``l2_k`` nearest
  references of each query; flagged when the RMS pixel difference is small;
* a tiny-image signature (mean-removed, unit-norm 8x8 colour thumbnail, robust to
  brightness, contrast and small shifts): the ``tiny_k`` nearest references;
* an aligned distance, computed for every candidate pair: the correlation distance
  between 2x2-pooled grayscale windows after the best shift of up to ``max_shift``
  pixels and the best of a few zooms (robust to shifts, slight crops and scaling, JPEG
  noise, photometric and colour changes); with ``flips=True`` also of the mirror image;
* optionally, model features (:func:`replicate.evaluation.extract_features`): cosine
  distance of penultimate-layer features, the ``feature_k`` nearest references.

Every candidate pair carries all distances and ranks. Flagged pairs form duplicate groups
(connected components, :func:`scipy.sparse.csgraph.connected_components`). The rule of
CIFAR-10.1 and ImageNetV2: a group that touches an original (reference) set is dropped
whole; a group within the new set keeps one image (the first in set order). Ids in a
blacklist file (appended by human review) are dropped too.

Work is organised per query chunk (:func:`candidate_pairs` on one chunk against
prepared references), so a distributed engine can map it over a large pool and join
the pair tables before :func:`decide`.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from replicate._l2 import l2_knn, l2_sq_distances_at
from replicate._validation import check_int, fail
from replicate.imageset import ImageSet

__all__ = [
    "DedupConfig",
    "DedupResult",
    "PreparedSet",
    "find_near_duplicates",
    "prepare",
    "candidate_pairs",
    "decide",
    "hash_pairs",
    "aligned_distance",
    "edge_distance",
    "window_knn",
    "tiny_signature",
    "read_blacklist",
    "append_blacklist",
    "dedup_gallery",
    "SIGNALS",
]

SIGNALS: tuple[str, ...] = ("hash", "l2", "tiny", "aligned", "feature")
_PAIR_BATCH = 8192
_ALIGN_BATCH = 1024
_ALIGN_GROUP = 128  # query images whose aligned windows exist at once (about 20 MB in float64)
_EDGE_GROUP = 16  # query images whose edge windows exist at once (about 25 MB in float64)


# --------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class DedupConfig:
    """Signals and thresholds of the near-duplicate detector.

    A candidate pair is flagged when any rule fires:

    * ``hash_radii``: ``{method: radius}``; flagged when the Hamming distance of that
      hash is <= radius (``hash_size`` bits per side, 64 for 8);
    * ``l2_rms_max``: flagged when the RMS difference per pixel value,
      ``sqrt(||q - r||^2 / (H W C))``, is <= this (0-255 scale);
    * ``aligned_max``: flagged when the aligned distance is <= this (0..2);
    * ``ratio_max``: flagged when the aligned distance is <= ``ratio_aligned_max`` and
      at most ``ratio_max`` times the median aligned distance of the query's other
      candidates in that set (column ``aligned_ratio``): a match that stands out from the
      query's other neighbours (a ratio test, as in Lowe's SIFT matching). It keeps
      low-texture images (a ship on an empty sea), which resemble many others, out of the
      queue;
    * ``within_ratio_max``, ``within_ratio_aligned_max``: the limits of the ratio rule
      for pairs inside the query set (``within_query``), stricter by default: there the
      reference-set limits flag mostly distinct images (``None``: the same limits as for
      reference sets; ``ratio_max=None`` switches the rule off everywhere);
    * ``tiny_max``: flagged when the tiny-image distance is <= this (0..2);
    * ``feature_max``: flagged when the feature cosine distance is <= this (0..2);
    * ``edge_max``: flagged when the aligned distance is <= ``edge_aligned_max`` and the
      edge distance (column ``edge``) is <= this (0..2). The edge distance compares
      high-pass maps (grayscale minus its 3x3 box blur) at full resolution over a wider
      window, shifts up to ``edge_max_shift`` and the zooms in ``edge_scales``; it is near
      0 for the same photograph and near 1 or above for look-alikes. It is computed only
      for pairs with ``aligned <= edge_aligned_max`` (NaN elsewhere) and, inside the query
      set, in one direction. It finds crops, zooms and borders the aligned window misses;
      ``None`` switches it off (and skips computing it);
    * ``edge_ratio_max``, ``edge_ratio_edge_max``: the edge rule also fires when the edge
      distance is <= ``edge_ratio_edge_max`` and at most ``edge_ratio_max`` times the
      smallest edge distance of the query's other candidates in that set (column
      ``edge_ratio``; candidates without an edge distance count as infinitely far, the
      coarse-window ones are not counted). A ratio test again: between 1.0 and 1.1 the
      same photograph usually stands out from the query's next-best candidate, while a
      look-alike resembles several. Off by default; with ``edge_max=1.0`` and
      ``edge_ratio_max=0.9`` (the "edge ratio guard") the review queue on CIFAR-10 test
      against train is 11% shorter (0.67 instead of 0.86 false flags per true one) for an
      estimated 1.2 points less recall. Not inside the query set;
    * ``within_edge_max``: the edge rule's limit for pairs inside the query set, stricter
      by default: there 1.1 flags mostly distinct images (``None``: ``edge_max`` there too);
    * ``window_edge_max``: the edge rule's limit for candidates only the coarse-window
      search (``aligned_k``) proposed, stricter by default: being the nearest by design,
      they pass 1.1 as look-alikes far more often (``None``: ``edge_max`` for them too).

    ``None`` switches a rule off (the signal may still propose candidates). Candidates
    come from the hash radii and the ``l2_k``, ``tiny_k``, ``aligned_k`` and ``feature_k`` nearest
    references of each query in each reference set (0 switches a kNN signal off). The
    ``aligned_k`` nearest are by a coarse aligned distance (:func:`window_knn`): shifted
    and zoomed grayscale windows pooled to 7x7, robust to the shifts and zooms that move
    a copy far down the pixel-L2 and tiny-image rankings. Being the nearest by design, its
    candidates have no ``aligned_ratio``, do not count towards the other candidates'
    median or edge ratio, so switching it on only adds flags, through the other rules
    (mostly edge, with ``window_edge_max``). The defaults (``aligned_k=5``, edge <= 1.1,
    ``window_edge_max=1.0``) were chosen with the by-eye review of CIFAR-10 test against
    train (``docs/dedup.md``).
    The aligned distance tries shifts up to ``max_shift`` pixels and the zooms in
    ``scales``. ``flips=True`` also compares the mirror image of each query (horizontal
    flip): its tiny signature proposes candidates, its aligned distance is the column
    ``aligned_mirror``, and the rule ``mirror`` fires when that is <= ``aligned_max``.
    ``feature_model`` names a zoo model for :func:`replicate.evaluation.extract_features`.
    ``within_query`` also searches for duplicates inside the query set.
    The defaults were measured on real CIFAR-10 images (``validation/validate_dedup.py``;
    tables and the by-eye review of CIFAR-10 test against train in ``docs/dedup.md``).
    """

    hash_radii: Mapping[str, int] = field(default_factory=lambda: {"phash": 2, "dhash": 2})
    hash_size: int = 8
    l2_k: int = 3
    l2_rms_max: float | None = 4.0
    tiny_k: int = 10
    aligned_k: int = 5
    tiny_size: int = 8
    tiny_max: float | None = None
    aligned_max: float | None = 0.25
    ratio_max: float | None = 0.7
    ratio_aligned_max: float = 0.7
    within_ratio_max: float | None = 0.6
    within_ratio_aligned_max: float = 0.45
    max_shift: int = 2
    scales: tuple[float, ...] = (0.875, 0.9375, 1.0, 1.0625)
    feature_model: str | None = None
    feature_k: int = 5
    feature_max: float | None = None
    within_query: bool = True
    flips: bool = False
    edge_max: float | None = 1.1
    edge_ratio_max: float | None = None
    edge_ratio_edge_max: float = 1.1
    within_edge_max: float | None = 0.9
    window_edge_max: float | None = 1.0
    edge_aligned_max: float = 0.8
    edge_max_shift: int = 3
    edge_scales: tuple[float, ...] = (0.8125, 0.875, 0.9375, 1.0, 1.0625, 1.125)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash_radii", dict(self.hash_radii))
        object.__setattr__(self, "scales", tuple(float(x) for x in self.scales))
        object.__setattr__(self, "edge_scales", tuple(float(x) for x in self.edge_scales))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe copy of every setting."""
        d = asdict(self)
        d["hash_radii"] = dict(self.hash_radii)
        d["scales"] = list(self.scales)
        d["edge_scales"] = list(self.edge_scales)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DedupConfig:
        """Inverse of :meth:`to_dict`."""
        d = dict(data)
        for key in ("scales", "edge_scales"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def _check_threshold(name: str, value: Any, hi: float) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise fail(name, value, f"a number in [0, {hi:g}] or None", error=TypeError) from None
    if not (0.0 <= x <= hi):
        raise fail(name, value, f"in [0, {hi:g}] (or None to switch the rule off)")
    return x


def _required(value: float | None, name: str) -> float:
    if value is None:
        raise fail(name, None, "a number in [0, 2]", "Switch the ratio rule off with ratio_max=None.", error=TypeError)
    return value


def _check_scales(scales: Any, name: str = "scales") -> tuple[float, ...]:
    try:
        out = tuple(float(z) for z in scales)
    except (TypeError, ValueError):
        raise fail(name, scales, "a sequence of numbers in [0.5, 2]", error=TypeError) from None
    if not out or any(not (0.5 <= z <= 2.0) for z in out):
        raise fail(name, scales, "a non-empty sequence of zoom factors in [0.5, 2]", "Use (1.0,) for shifts only.")
    return out


def _check_config(config: DedupConfig) -> DedupConfig:
    from replicate._validation import check_choice
    from replicate.hashing import hash_bits, list_hashers

    hs = check_int("hash_size", config.hash_size, minimum=2)
    radii = {}
    for method, radius in config.hash_radii.items():
        check_choice("hash_radii key", method, list_hashers())
        bits = hash_bits(method, hash_size=hs)
        radii[method] = check_int(f"hash_radii[{method!r}]", radius, minimum=0, maximum=bits)
    return replace(
        config,
        hash_radii=radii,
        hash_size=hs,
        l2_k=check_int("l2_k", config.l2_k, minimum=0),
        tiny_k=check_int("tiny_k", config.tiny_k, minimum=0),
        aligned_k=check_int("aligned_k", config.aligned_k, minimum=0),
        feature_k=check_int("feature_k", config.feature_k, minimum=0),
        tiny_size=check_int("tiny_size", config.tiny_size, minimum=2),
        max_shift=check_int("max_shift", config.max_shift, minimum=0, maximum=8),
        scales=_check_scales(config.scales),
        l2_rms_max=_check_threshold("l2_rms_max", config.l2_rms_max, 255.0),
        aligned_max=_check_threshold("aligned_max", config.aligned_max, 2.0),
        ratio_max=_check_threshold("ratio_max", config.ratio_max, 1.0),
        ratio_aligned_max=_required(_check_threshold("ratio_aligned_max", config.ratio_aligned_max, 2.0), "ratio_aligned_max"),
        within_ratio_max=_check_threshold("within_ratio_max", config.within_ratio_max, 1.0),
        within_ratio_aligned_max=_required(
            _check_threshold("within_ratio_aligned_max", config.within_ratio_aligned_max, 2.0), "within_ratio_aligned_max"
        ),
        tiny_max=_check_threshold("tiny_max", config.tiny_max, 2.0),
        feature_max=_check_threshold("feature_max", config.feature_max, 2.0),
        within_query=bool(config.within_query),
        flips=bool(config.flips),
        edge_max=_check_threshold("edge_max", config.edge_max, 2.0),
        edge_ratio_max=_check_threshold("edge_ratio_max", config.edge_ratio_max, 1.0),
        edge_ratio_edge_max=_required(
            _check_threshold("edge_ratio_edge_max", config.edge_ratio_edge_max, 2.0), "edge_ratio_edge_max"
        ),
        within_edge_max=_check_threshold("within_edge_max", config.within_edge_max, 2.0),
        window_edge_max=_check_threshold("window_edge_max", config.window_edge_max, 2.0),
        edge_aligned_max=_required(_check_threshold("edge_aligned_max", config.edge_aligned_max, 2.0), "edge_aligned_max"),
        edge_max_shift=check_int("edge_max_shift", config.edge_max_shift, minimum=0, maximum=8),
        edge_scales=_check_scales(config.edge_scales, "edge_scales"),
    )


# --------------------------------------------------------------------------------------
# signatures


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)


def tiny_signature(images: np.ndarray, size: int = 8) -> np.ndarray:
    """Mean-removed, unit-norm ``size x size`` thumbnails (area averages), float32 (N, C size^2)."""
    channels = images.shape[3] if images.ndim == 4 else 1
    out = np.empty((len(images), channels * size * size), dtype=np.float32)
    for s in range(0, len(images), _PAIR_BATCH):
        t = torch.from_numpy(np.array(images[s : s + _PAIR_BATCH], copy=True)).permute(0, 3, 1, 2).float()
        t = torch.nn.functional.adaptive_avg_pool2d(t, size).reshape(len(t), -1)
        out[s : s + len(t)] = _unit_rows(t).numpy()
    return out


def _gray(images: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.array(images, copy=True)).float()
    return t.mean(dim=3) if t.shape[3] > 1 else t[..., 0]


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run many small torch ops on one thread: thread start-up and spinning cost more
    than they save on tensors this small, badly so on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _zoom_and_pad(
    g: torch.Tensor, z: float, m: int, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> tuple[torch.Tensor, int, int]:
    """``g`` (N, 1, H, W) resized by ``z`` (bilinear, antialiased), optionally transformed,
    and padded (edges replicated) so that the centre window of ``(H - 2m) x (W - 2m)``
    pixels can move by up to ``m`` pixels: the padded map and that window's top-left corner."""
    h, w = g.shape[2:]
    sh, sw = max(1, round(h * z)), max(1, round(w * z))
    gz = g
    if (sh, sw) != (h, w):
        gz = torch.nn.functional.interpolate(g, size=(sh, sw), mode="bilinear", antialias=True, align_corners=False)
    if transform is not None:
        gz = transform(gz)
    pad = m + max(0, (h - sh + 1) // 2, (w - sw + 1) // 2) + 2
    gz = torch.nn.functional.pad(gz, (pad, pad, pad, pad), mode="replicate")
    return gz, pad + (sh - (h - 2 * m)) // 2, pad + (sw - (w - 2 * m)) // 2


def _windows(images: np.ndarray, m: int, scales: Sequence[float], shifts: bool, batch: int = 256) -> torch.Tensor:
    with _one_thread():
        return _windows_impl(images, m, scales, shifts, batch)


def _windows_impl(images: np.ndarray, m: int, scales: Sequence[float], shifts: bool, batch: int) -> torch.Tensor:
    """Grayscale windows of each image: (N, B, P) float32, mean-removed and unit-norm.

    For each scale ``z`` the image is resized to ``round(z H) x round(z W)`` (bilinear,
    antialiased); the centre window of ``(H - 2m) x (W - 2m)`` pixels, moved by every
    shift up to ``m`` pixels (edges replicated where it leaves the image), is 2x2
    average-pooled (windows of fewer than 2 pixels a side are not pooled).
    """
    g_all = _gray(images)[:, None]
    n, _, h, w = g_all.shape
    wh, ww = h - 2 * m, w - 2 * m
    pool = min(wh, ww) >= 2
    oh, ow = (wh // 2, ww // 2) if pool else (wh, ww)
    rng = range(-m, m + 1) if shifts else range(0, 1)
    parts = []
    for b0 in range(0, n, batch):
        g = g_all[b0 : b0 + batch]
        outs = []
        for z in scales:
            gz, y0, x0 = _zoom_and_pad(g, z, m)
            if pool:  # the four 2x2-pooled phases: a pooled window is a slice of one of them
                phase = {(py, px): torch.nn.functional.avg_pool2d(gz[:, :, py:, px:], 2) for py in (0, 1) for px in (0, 1)}
            for dy in rng:
                for dx in rng:
                    y, x = y0 + dy, x0 + dx
                    if pool:
                        outs.append(phase[(y % 2, x % 2)][:, 0, y // 2 : y // 2 + oh, x // 2 : x // 2 + ow])
                    else:
                        outs.append(gz[:, 0, y : y + oh, x : x + ow])
        win = torch.stack(outs, dim=1)
        parts.append(_unit_rows(win.reshape(len(g) * len(outs), -1)).reshape(len(g), len(outs), -1))
    return torch.cat(parts) if parts else torch.zeros((0, 1, oh * ow))


def _aligned_reference(images: np.ndarray, max_shift: int) -> np.ndarray:
    """The centre window of each image, resampled and normalised: (N, P) float32."""
    out = []
    for s in range(0, len(images), _PAIR_BATCH):
        out.append(_windows(images[s : s + _PAIR_BATCH], max_shift, (1.0,), False)[:, 0].numpy())
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def _aligned_query(images: np.ndarray, max_shift: int, scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """Every shifted (and zoomed) window of each image: (N, S, P) float32."""
    return _windows(images, max_shift, scales, True)


def _aligned_pairs(qa: torch.Tensor, rb: torch.Tensor) -> np.ndarray:
    with _one_thread():
        cos = torch.einsum("nsp,np->ns", qa, rb).max(dim=1).values
    return _cos_to_distance(cos.numpy())


def aligned_distance(
    a: np.ndarray, b: np.ndarray, max_shift: int = 2, scales: Sequence[float] = (1.0,)
) -> np.ndarray:
    """Shift-tolerant distance of paired images ``a[i]``, ``b[i]`` (uint8 NHWC), float64.

    The grayscale centre window of ``b`` (``max_shift`` pixels cropped from each side)
    is compared with every window of ``a`` shifted by up to ``max_shift`` pixels in
    each direction, after resizing ``a`` by each of ``scales`` (bilinear, antialiased);
    windows are 2x2 average-pooled, mean-removed and scaled to unit norm, and the smallest ``sqrt(2 - 2 cos)`` is returned: 0 for identical content up to a
    shift and an affine brightness/contrast change, about 1 for unrelated images.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise fail("b.shape", b.shape, f"{a.shape} (the shape of a)")
    out = np.empty(len(a), dtype=np.float64)
    for s in range(0, len(a), _ALIGN_BATCH):
        qa = _aligned_query(a[s : s + _ALIGN_BATCH], max_shift, scales)
        rb = torch.from_numpy(_aligned_reference(b[s : s + _ALIGN_BATCH], max_shift))
        out[s : s + len(rb)] = _aligned_pairs(qa, rb)
    return out


def _box_sums(x: torch.Tensor, bh: int, bw: int) -> torch.Tensor:
    """Sums of every ``bh`` x ``bw`` window of ``x`` (N, H, W), through an integral image:
    (N, H - bh + 1, W - bw + 1). Faster than ``avg_pool2d`` for large windows."""
    c = torch.nn.functional.pad(x.cumsum(1).cumsum(2), (1, 0, 1, 0))
    return c[:, bh:, bw:] - c[:, :-bh, bw:] - c[:, bh:, :-bw] + c[:, :-bh, :-bw]


def _high_pass(g: torch.Tensor) -> torch.Tensor:
    """Grayscale (N, 1, H, W) minus its 3x3 box mean (edges replicated)."""
    padded = torch.nn.functional.pad(g, (1, 1, 1, 1), mode="replicate")[:, 0]
    return g - (_box_sums(padded.double(), 3, 3) / 9).float()[:, None]


def edge_distance(
    a: np.ndarray,
    b: np.ndarray,
    max_shift: int = 3,
    scales: Sequence[float] = (0.8125, 0.875, 0.9375, 1.0, 1.0625, 1.125),
    batch: int = 256,
) -> np.ndarray:
    """Edge distance of paired images ``a[i]``, ``b[i]`` (uint8 NHWC, square), float64.

    Like :func:`aligned_distance` with high-pass maps instead of pooled grayscale: ``a``
    is resized by each of ``scales`` (bilinear, antialiased), its high-pass map (grayscale
    minus the 3x3 box mean) is cut into every window shifted by up to ``max_shift``
    pixels, and each window (mean-removed, unit norm, full resolution) is compared with
    the centre window of ``b``'s high-pass map; the smallest ``sqrt(2 - 2 cos)`` is
    returned. Fine texture must line up, so look-alikes with similar layouts (a ship on
    an empty sea) score near 1 or above while crops of the same photograph score low.

    The windows are never cut out: the dot products with ``b``'s (mean-removed) window
    are one grouped convolution per zoom, and each window's norm after mean removal
    comes from integral images of the map and its square (float64).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise fail("b.shape", b.shape, f"{a.shape} (the shape of a)")
    out = np.empty(len(a), dtype=np.float64)
    if len(a) == 0:
        return out
    h, w = a.shape[1:3]
    m = max_shift
    wh, ww = h - 2 * m, w - 2 * m
    if min(wh, ww) < 1:
        raise fail("max_shift", max_shift, f"< {min(h, w) / 2} (half the image side)")
    nf = torch.nn.functional
    with _one_thread():
        for s in range(0, len(a), batch):
            ref = _edge_centre(b[s : s + batch], m)
            n = len(ref)
            ref = ref.reshape(n, 1, wh, ww)
            g = _gray(a[s : s + batch])[:, None]
            best = torch.full((n,), -2.0)
            for z in scales:
                e, y0, x0 = _zoom_and_pad(g, z, m, _high_pass)
                region = e[:, :, y0 - m : y0 + m + wh, x0 - m : x0 + m + ww]  # every shifted window
                dots = nf.conv2d(region.reshape(1, n, wh + 2 * m, ww + 2 * m), ref, groups=n)[0]
                r64 = region[:, 0].double()
                s1, s2 = _box_sums(r64, wh, ww), _box_sums(r64 * r64, wh, ww)
                norms = torch.sqrt(torch.clamp(s2 - s1 * s1 / (wh * ww), min=0)).float().clamp_min(1e-6)
                best = torch.maximum(best, (dots / norms).reshape(n, -1).max(dim=1).values)
            out[s : s + n] = _cos_to_distance(best.numpy())
    return out


def _edge_windows(images: np.ndarray, max_shift: int, scales: Sequence[float]) -> torch.Tensor:
    """Every window :func:`edge_distance` compares, cut out: (N, Z (2m+1)^2, wh ww) float32,
    mean-removed and unit-norm (for the detector, which compares each query with many
    references and so cuts its windows once)."""
    m = max_shift
    g = _gray(images)[:, None]
    n, _, h, w = g.shape
    wh, ww = h - 2 * m, w - 2 * m
    out = []
    for z in scales:
        e, y0, x0 = _zoom_and_pad(g, z, m, _high_pass)
        region = e[:, 0, y0 - m : y0 + m + wh, x0 - m : x0 + m + ww]
        out.append(region.unfold(1, wh, 1).unfold(2, ww, 1).reshape(n, -1, wh * ww))
    win = torch.cat(out, dim=1)
    return _unit_rows(win.reshape(-1, wh * ww)).reshape(n, -1, wh * ww)


def _edge_centre(images: np.ndarray, max_shift: int) -> torch.Tensor:
    """The centre window of each image's high-pass map: (N, wh ww) float32, unit rows."""
    m = max_shift
    e = _high_pass(_gray(images)[:, None])[:, 0]
    h, w = e.shape[1:]
    return _unit_rows(e[:, m : h - m, m : w - m].reshape(len(e), -1))


def _grouped_max_cos(
    side: np.ndarray,
    other: np.ndarray,
    windows: Callable[[np.ndarray], torch.Tensor],
    centres: Callable[[np.ndarray], torch.Tensor],
    batch: int,
    slots: int = 32,
) -> np.ndarray:
    """For each pair p, the largest cosine between any window of image ``side[p]``
    (``windows(positions)``: (U, S, P) unit rows) and the centre of image ``other[p]``
    (``centres(positions)``: (n, P) unit rows); float32.

    Pairs are grouped by ``side``: each image's windows are made once for all its pairs
    (``batch`` images at a time), and the products are batched matrix products of those
    windows with up to ``slots`` of their centres at a time, so no window is copied per
    pair. The products are in float64 and the result rounded to float32, so a pair's
    value does not depend on which other pairs share its batch (float32 products would
    differ in the last bit with the blocking, enough to move a distance near 0 by 5e-4).
    """
    n = len(side)
    out = np.empty(n, dtype=np.float32)
    if n == 0:
        return out
    order = np.argsort(side, kind="stable")
    uniq, start, count = np.unique(side[order], return_index=True, return_counts=True)
    slot = np.arange(n) - np.repeat(start, count)
    for u0 in range(0, len(uniq), batch):
        u1 = min(u0 + batch, len(uniq))
        win = windows(uniq[u0:u1]).double()
        p0, p1 = start[u0], start[u1 - 1] + count[u1 - 1]
        rows = order[p0:p1]
        cen = centres(other[rows])
        grp = np.repeat(np.arange(u1 - u0), count[u0:u1])
        sl = slot[p0:p1]
        for k0 in range(0, int(sl.max()) + 1, slots):
            sel = np.flatnonzero((sl >= k0) & (sl < k0 + slots))
            g, k = grp[sel], sl[sel] - k0
            used, gi = np.unique(g, return_inverse=True)
            w = win if len(used) == len(win) else win[torch.from_numpy(used)]
            r = torch.zeros((len(used), int(k.max()) + 1, win.shape[2]), dtype=torch.float64)
            r[torch.from_numpy(gi), torch.from_numpy(k)] = cen[torch.from_numpy(sel)].double()
            cos = torch.bmm(w, r.transpose(1, 2)).amax(dim=1)
            out[rows[sel]] = cos[torch.from_numpy(gi), torch.from_numpy(k)].float().numpy()
    return out


def _cos_to_distance(cos: np.ndarray) -> np.ndarray:
    return torch.sqrt(torch.clamp(2 - 2 * torch.from_numpy(cos), min=0)).double().numpy()


def _coarse_windows(images: np.ndarray, max_shift: int, scales: Sequence[float]) -> torch.Tensor:
    """Coarse windows of each image: (N, W, 49) float32, unit rows.

    The grayscale centre window (``max_shift`` pixels cropped from each side, as for the
    aligned distance) of the image zoomed by each of ``scales`` and shifted by
    ``-max_shift``, 0 and ``max_shift`` pixels in each direction, average-pooled to 7x7,
    mean-removed and scaled to unit norm.
    """
    nf = torch.nn.functional
    g = _gray(images)[:, None]
    h, w = g.shape[2:]
    m = max_shift
    wh, ww = h - 2 * m, w - 2 * m
    steps = sorted({-m, 0, m})  # 3 x 3 shifts (1 without max_shift)
    out = []
    for z in scales:
        gz, y0, x0 = _zoom_and_pad(g, z, m)
        for dy in steps:
            for dx in steps:
                win = gz[:, :, y0 + dy : y0 + dy + wh, x0 + dx : x0 + dx + ww]
                out.append(_unit_rows(nf.adaptive_avg_pool2d(win, 7).reshape(len(g), -1)))
    return torch.stack(out, dim=1)


def _coarse_reference(images: np.ndarray, max_shift: int) -> np.ndarray:
    """The coarse centre window of each image (no shift, no zoom): (N, 49) float32, the
    reference side of :func:`window_knn`."""
    m = max_shift
    out = []
    for s in range(0, len(images), _PAIR_BATCH):
        g = _gray(images[s : s + _PAIR_BATCH])[:, None]
        win = g[:, :, m : g.shape[2] - m, m : g.shape[3] - m]
        out.append(_unit_rows(torch.nn.functional.adaptive_avg_pool2d(win, 7).reshape(len(g), -1)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 49), np.float32)


def window_knn(
    query: np.ndarray, reference: np.ndarray, k: int, max_shift: int = 2,
    scales: Sequence[float] = (0.875, 0.9375, 1.0, 1.0625), chunk: int = 64, block: int = 512,
) -> np.ndarray:
    """The ``k`` nearest references of each query image by a coarse aligned distance.

    ``query``: uint8 NHWC images; ``reference``: their coarse centre windows
    (``_coarse_reference``) or uint8 NHWC images. A query's score against a reference is
    the best cosine between any of its coarse windows (:func:`_coarse_windows`: 3 x 3
    shifts x the zooms) and the reference's centre window; returns reference positions,
    best first (N, k). Scores are formed for ``chunk`` queries against ``block``
    references at a time and reduced over the windows at once, so each block stays in
    cache (2.2x faster than one block over all references).
    """
    ref = np.asarray(reference)
    if ref.ndim == 4:
        ref = _coarse_reference(ref, max_shift)
    rt = torch.from_numpy(np.ascontiguousarray(ref, dtype=np.float32))
    k = min(k, len(rt))
    idx = np.empty((len(query), k), dtype=np.int64)
    for s in range(0, len(query), chunk):
        q = _coarse_windows(query[s : s + chunk], max_shift, scales)
        n, w, d = q.shape
        flat = q.reshape(n * w, d)
        best = torch.empty((n, len(rt)))
        for r in range(0, len(rt), block):
            best[:, r : r + block] = (flat @ rt[r : r + block].T).reshape(n, w, -1).amax(dim=1)
        idx[s : s + n] = torch.topk(best, k, dim=1, largest=True, sorted=True).indices.numpy()
    return idx


def _cosine_knn(q: np.ndarray, r: np.ndarray, k: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """k nearest rows of unit vectors by ``sqrt(2 - 2 cos)`` (ties: lower index; float32)."""
    qt = torch.from_numpy(q)
    rt = torch.from_numpy(r)
    k = min(k, len(r))
    idx = np.empty((len(q), k), dtype=np.int64)
    dist = np.empty((len(q), k), dtype=np.float64)
    for s in range(0, len(q), chunk):
        sim = qt[s : s + chunk] @ rt.T
        v, i = torch.topk(sim, k, dim=1, largest=True, sorted=True)
        idx[s : s + len(v)] = i.numpy()
        dist[s : s + len(v)] = torch.sqrt(torch.clamp(2 - 2 * v.double(), min=0)).numpy()
    return idx, dist


def _unit_features(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


# --------------------------------------------------------------------------------------
# prepared sets and candidate pairs


@dataclass(frozen=True, eq=False)
class PreparedSet:
    """An image set with the signatures the detector compares (computed once)."""

    name: str
    images: ImageSet
    hashes: dict[str, np.ndarray]
    tiny: np.ndarray
    tiny_flipped: np.ndarray | None
    aligned: np.ndarray
    features: np.ndarray | None
    coarse: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)


def prepare(images: ImageSet, config: DedupConfig, name: str | None = None) -> PreparedSet:
    """Hashes, tiny signatures, aligned windows (and features) of one set."""
    from replicate.hashing import hash_images

    hashes = {m: hash_images(images.images, m, hash_size=config.hash_size) for m in config.hash_radii}
    feats = None
    if config.feature_model is not None:
        from replicate.evaluation import extract_features

        feats = _unit_features(extract_features(config.feature_model, images))
    return PreparedSet(
        name=name or images.name,
        images=images,
        hashes=hashes,
        tiny=tiny_signature(images.images, config.tiny_size),
        tiny_flipped=tiny_signature(images.images[:, :, ::-1], config.tiny_size) if config.flips else None,
        aligned=_aligned_reference(images.images, config.max_shift),
        features=feats,
        coarse=_coarse_reference(images.images, config.max_shift) if config.aligned_k else None,
    )


def hash_pairs(query: Any, reference: Any, radius: int) -> pd.DataFrame:
    """All pairs of precomputed :class:`~replicate.hashing.Hashes` within ``radius``.

    Both must come from the same hasher with the same parameters. Returns columns
    ``query_id``, ``reference_id``, ``hamming``.
    """
    from replicate.hamming import radius_search
    from replicate.hashing import Hashes, check_compatible

    for name, h in (("query", query), ("reference", reference)):
        if not isinstance(h, Hashes):
            raise fail(name, type(h).__name__, "a replicate.hashing.Hashes", "Make it with hash_set().", error=TypeError)
    check_compatible(query, reference, "reference")
    radius = check_int("radius", radius, minimum=0, maximum=query.bits)
    qi, ri, d = radius_search(query.values, reference.values, radius)
    return pd.DataFrame({"query_id": query.ids[qi], "reference_id": reference.ids[ri], "hamming": d})


def _knn_pairs(idx: np.ndarray, offset: int, within: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query position, reference position, 1-based rank) from a kNN index table.

    Within the query set the search asked for one extra neighbour; each row drops its
    own position (or, if absent, its last entry).
    """
    n, k = idx.shape
    rows = np.repeat(np.arange(n), k).reshape(n, k)
    if within:
        own = idx == (rows + offset)
        drop_last = ~own.any(axis=1)
        own[drop_last, k - 1] = True
        keep = ~own
        idx = idx[keep].reshape(n, k - 1)
        rows = rows[keep].reshape(n, k - 1)
        k -= 1
    ranks = np.tile(np.arange(1, k + 1), n)
    return rows.ravel() + offset, idx.ravel(), ranks


def candidate_pairs(
    query: PreparedSet,
    references: Sequence[PreparedSet],
    config: DedupConfig,
    *,
    offset: int = 0,
    within: PreparedSet | None = None,
) -> pd.DataFrame:
    """Candidate pairs of one query chunk against prepared references, with every distance.

    ``offset`` is the chunk's first position in the whole query set; ``within`` is the
    whole prepared query set (for pairs inside the query, reported once with the lower
    position first). Returns positions (``query_pos``, ``reference_set``,
    ``reference_pos``) plus the distance and rank columns; :func:`decide` turns the
    joined tables of all chunks into a :class:`DedupResult`.
    """
    from replicate.hamming import radius_search

    targets: list[tuple[PreparedSet, bool]] = [(r, False) for r in references]
    if within is not None:
        targets.append((within, True))
    frames = []
    for ref, is_within in targets:
        keys: list[pd.DataFrame] = []
        extra = 1 if is_within else 0
        for method, radius in config.hash_radii.items():
            qi, ri, _ = radius_search(query.hashes[method], ref.hashes[method], radius)
            keys.append(pd.DataFrame({"query_pos": qi + offset, "reference_pos": ri}))
        available = len(ref) - (1 if is_within else 0)
        if config.l2_k and available > 0:
            k = min(config.l2_k, available) + extra
            nn = l2_knn(query.images.images, ref.images.images, k=k)
            qp, rp, rk = _knn_pairs(nn.indices, offset, is_within)
            keys.append(pd.DataFrame({"query_pos": qp, "reference_pos": rp, "l2_rank": rk}))
        if config.tiny_k and available > 0:
            idx, _ = _cosine_knn(query.tiny, ref.tiny, min(config.tiny_k, available) + extra)
            qp, rp, rk = _knn_pairs(idx, offset, is_within)
            keys.append(pd.DataFrame({"query_pos": qp, "reference_pos": rp, "tiny_rank": rk}))
        if config.flips and config.tiny_k and available > 0:
            if query.tiny_flipped is None:  # pragma: no cover - prepare() makes it when flips is on
                raise RuntimeError("prepared query has no mirrored thumbnails; prepare() it with flips=True")
            idx, _ = _cosine_knn(query.tiny_flipped, ref.tiny, min(config.tiny_k, available) + extra)
            qp, rp, _ = _knn_pairs(idx, offset, is_within)
            # NaN: the mirrored thumbnail leaves no rank in the table, so it does not make a
            # coarse-window candidate any less window-only (as _window_only reads the table)
            keys.append(pd.DataFrame({"query_pos": qp, "reference_pos": rp, "window_only": np.nan}))
        if config.feature_model is not None and config.feature_k and available > 0:
            if query.features is None or ref.features is None:  # pragma: no cover - made by prepare()
                raise RuntimeError("prepared sets have no model features; prepare() them with feature_model set")
            idx, _ = _cosine_knn(query.features, ref.features, min(config.feature_k, available) + extra)
            qp, rp, rk = _knn_pairs(idx, offset, is_within)
            keys.append(pd.DataFrame({"query_pos": qp, "reference_pos": rp, "feature_rank": rk}))
        for key in keys:
            if "window_only" not in key:
                key["window_only"] = 0.0
        if config.aligned_k and available > 0:
            if ref.coarse is None:  # pragma: no cover - prepare() makes it when aligned_k is set
                raise RuntimeError("prepared reference has no coarse windows; prepare() it with aligned_k set")
            idx = window_knn(query.images.images, ref.coarse, min(config.aligned_k, available) + extra,
                             config.max_shift, config.scales)
            qp, rp, rk = _knn_pairs(idx, offset, is_within)
            keys.append(pd.DataFrame({"query_pos": qp, "reference_pos": rp, "aligned_rank": rk, "window_only": 1.0}))
        if not keys:
            continue
        cand = pd.concat(keys, ignore_index=True)
        for col in ("l2_rank", "tiny_rank", "feature_rank", "aligned_rank"):
            if col not in cand:
                cand[col] = np.nan
        if is_within:
            cand = cand[cand.query_pos != cand.reference_pos]
            lo = np.minimum(cand.query_pos, cand.reference_pos)
            hi = np.maximum(cand.query_pos, cand.reference_pos)
            cand = cand.assign(query_pos=lo, reference_pos=hi)
        cand = cand.groupby(["query_pos", "reference_pos"], as_index=False, sort=True).min()
        cand["window_only"] = cand.window_only.fillna(0.0).astype(bool)  # min skips NaN: window and mirror -> 1
        frames.append(_distances(cand, query, ref, offset, within if is_within else None, config))
    if not frames:
        return _empty_pairs(config)
    return pd.concat(frames, ignore_index=True)


def _empty_pairs(config: DedupConfig) -> pd.DataFrame:
    cols = ["query_pos", "reference_set", "reference_pos"] + _distance_columns(config)
    return pd.DataFrame({c: pd.Series(dtype="object" if c == "reference_set" else "float64") for c in cols})


def _distance_columns(config: DedupConfig) -> list[str]:
    cols = [f"hamming_{m}" for m in config.hash_radii]
    cols += ["l2", "l2_rms", "l2_rank", "tiny", "tiny_rank", "aligned", "aligned_ratio"]
    if config.aligned_k:
        cols += ["aligned_rank"]
    if config.flips:
        cols += ["aligned_mirror"]
    if config.feature_model is not None:
        cols += ["feature", "feature_rank"]
    if config.edge_max is not None:
        cols += ["edge", "edge_ratio"]
    return cols


def _row_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance of paired unit rows, ``sqrt(2 - 2 cos)``, from the difference (float64)."""
    d = a.astype(np.float64) - b.astype(np.float64)
    return np.sqrt(np.einsum("ij,ij->i", d, d))


def _ratio_to_others(groups: np.ndarray, values: np.ndarray, counted: np.ndarray | None = None) -> np.ndarray:
    """Each value over the median of the other values in its group (NaN when alone);
    with ``counted``, only those values make up the median.

    Vectorised: each group's counted values are sorted once, and the median of the
    others is read from that order, skipping the value's own position.
    """
    groups = np.asarray(groups)
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    c = np.ones(n, bool) if counted is None else np.asarray(counted, bool)
    ci = np.flatnonzero(c)
    order = ci[np.lexsort((values[ci], groups[ci]))]
    cg, cv = groups[order], values[order]
    ug, start, size = np.unique(cg, return_index=True, return_counts=True)
    if len(ug) == 0:
        return out
    gi = np.minimum(np.searchsorted(ug, groups), len(ug) - 1)
    has = ug[gi] == groups
    first = np.where(has, start[gi], 0)
    m = np.where(has, size[gi], 0)
    pos = np.full(n, -1, dtype=np.int64)
    pos[order] = np.arange(len(order)) - np.repeat(start, size)
    others = m - c.astype(np.int64)  # how many values make up this value's median
    ok = has & (others >= 1)

    def at(k: np.ndarray) -> np.ndarray:  # k-th smallest of the others (own position skipped)
        idx = first + k + (c & (k >= pos))
        return cv[np.clip(idx, 0, len(cv) - 1)]

    k1, k2 = (others - 1) // 2, others // 2
    med = (at(k1) + at(k2)) / 2
    good = ok & (med > 0)
    out[good] = values[good] / med[good]
    return out


def _ratio_to_best_other(groups: np.ndarray, values: np.ndarray, counted: np.ndarray | None = None) -> np.ndarray:
    """Each value over the smallest other value in its group; with ``counted``, only those
    values are others. NaN values (not computed) count as infinitely far, so a value with
    no finite other gets 0; ``0 / 0`` (two exact matches) is 1; NaN where the value is NaN."""
    groups = np.asarray(groups)
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n == 0:
        return np.full(0, np.nan)
    c = np.ones(n, bool) if counted is None else np.asarray(counted, bool)
    w = np.where(np.isnan(v) | ~c, np.inf, v)  # what each row is as another row's other
    order = np.lexsort((w, groups))
    g, ws = groups[order], w[order]
    first = np.r_[True, g[1:] != g[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    after = np.r_[g[1:] == g[:-1], False]  # the next row is in the same group
    second = np.where(after, np.r_[ws[1:], np.inf], np.inf)
    # the group's smallest, or for the smallest itself the second smallest
    best_other = np.where(first, second, ws[start])
    other = np.empty(n)
    other[order] = best_other
    with np.errstate(divide="ignore", invalid="ignore"):
        r = v / other
    r[(v == 0) & (other == 0)] = 1.0
    r[np.isinf(other) & ~np.isnan(v)] = 0.0
    r[np.isnan(v)] = np.nan
    return r


def _distances(
    cand: pd.DataFrame,
    query: PreparedSet,
    ref: PreparedSet,
    offset: int,
    whole_query: PreparedSet | None,
    config: DedupConfig,
) -> pd.DataFrame:
    """All distances of candidate pairs (positions; ``whole_query`` for pairs within the query)."""
    qpos = cand.query_pos.to_numpy(np.int64)
    rpos = cand.reference_pos.to_numpy(np.int64)
    # Within the query set both ends are query positions: read them from the whole set.
    qsrc = whole_query if whole_query is not None else query
    qloc = qpos if whole_query is not None else qpos - offset
    out = pd.DataFrame({"query_pos": qpos, "reference_set": ref.name, "reference_pos": rpos})
    from replicate.hamming import hamming_distance

    for m in config.hash_radii:
        out[f"hamming_{m}"] = hamming_distance(qsrc.hashes[m][qloc], ref.hashes[m][rpos])
    qimg = qsrc.images.images
    rimg = ref.images.images
    sq = l2_sq_distances_at(qimg, rimg, qloc, rpos)
    ms, zs = config.max_shift, config.scales

    def aligned(side_img: np.ndarray, side: np.ndarray, other: PreparedSet, at: np.ndarray, flip: bool = False) -> np.ndarray:
        # windows of side_img[side[p]] (mirrored with flip) against other's centre windows at at[p]
        def windows(u: np.ndarray) -> torch.Tensor:
            img = side_img[u]
            return _aligned_query(img[:, :, ::-1] if flip else img, ms, zs)

        cos = _grouped_max_cos(side, at, windows, lambda p: torch.from_numpy(other.aligned[p]), _ALIGN_GROUP)
        return _cos_to_distance(cos)

    al = aligned(qimg, qloc, ref, rpos)
    if whole_query is not None:
        # both ends are query images: the zoom range applies either way round
        al = np.minimum(al, aligned(rimg, rpos, qsrc, qloc))
    alf = aligned(qimg, qloc, ref, rpos, flip=True) if config.flips else np.full(len(qpos), np.inf)
    values_per_image = int(np.prod(qimg.shape[1:]))
    out["l2"] = np.sqrt(sq.astype(np.float64))
    out["l2_rms"] = np.sqrt(sq / values_per_image)
    out["l2_rank"] = cand.l2_rank.to_numpy()
    out["tiny"] = _row_distance(qsrc.tiny[qloc], ref.tiny[rpos])
    out["tiny_rank"] = cand.tiny_rank.to_numpy()
    out["aligned"] = al
    # candidates only the coarse-window search proposed are the query's nearest by design:
    # they stay out of the median the ratio rule compares against, and have no ratio
    window_only = cand.window_only.to_numpy(bool)
    out["aligned_ratio"] = _ratio_to_others(qpos, al, ~window_only)
    out.loc[window_only, "aligned_ratio"] = np.nan
    if config.aligned_k:
        out["aligned_rank"] = cand.aligned_rank.to_numpy()
    if config.flips:
        out["aligned_mirror"] = alf
    if config.edge_max is not None:
        edge = np.full(len(qpos), np.nan)
        near = np.flatnonzero(al <= config.edge_aligned_max)
        if len(near):
            em = config.edge_max_shift
            if min(qimg.shape[1:3]) - 2 * em < 1:
                raise fail("edge_max_shift", em, f"< {min(qimg.shape[1:3]) / 2} (half the image side)")
            cos = _grouped_max_cos(
                qloc[near], rpos[near],
                lambda u: _edge_windows(qimg[u], em, config.edge_scales),
                lambda p: _edge_centre(rimg[p], em),
                _EDGE_GROUP,
            )
            edge[near] = _cos_to_distance(cos)
        out["edge"] = edge
        # as for aligned_ratio, the coarse-window candidates are not others: switching
        # them on only adds candidates and flags
        out["edge_ratio"] = _ratio_to_best_other(qpos, edge, ~window_only)
    if config.feature_model is not None:
        if qsrc.features is None or ref.features is None:  # pragma: no cover - made by prepare()
            raise RuntimeError("prepared sets have no model features; prepare() them with feature_model set")
        out["feature"] = _row_distance(qsrc.features[qloc], ref.features[rpos])
        out["feature_rank"] = cand.feature_rank.to_numpy()
    for col in ("l2_rank", "tiny_rank", "feature_rank", "aligned_rank"):
        if col in out:
            out[col] = out[col].astype("Int64")
    return out


# --------------------------------------------------------------------------------------
# blacklist


def read_blacklist(path: str | os.PathLike[str] | None) -> list[str]:
    """Ids in a blacklist file: one per line; blank lines and ``#`` comments ignored.

    A missing file is an empty blacklist only when ``path`` is None.
    """
    if path is None:
        return []
    p = Path(path)
    if not p.is_file():
        raise fail("blacklist", str(p), "an existing text file with one id per line", error=FileNotFoundError)
    ids = []
    for line in p.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            ids.append(text)
    return ids


def append_blacklist(path: str | os.PathLike[str], ids: Iterable[str], comment: str | None = None) -> int:
    """Append ids (not already listed) to a blacklist file; returns how many were added."""
    p = Path(path)
    have = set(read_blacklist(p)) if p.exists() else set()
    new = [str(i) for i in ids if str(i) not in have]
    new = list(dict.fromkeys(new))
    for i in new:
        if not i or "\n" in i or "#" in i:
            raise fail("ids", i, "non-empty ids without newlines or '#'")
    if new:
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("a", encoding="utf-8") as f:
            if comment:
                f.write(f"# {comment}\n")
            f.write("".join(f"{i}\n" for i in new))
    return len(new)


# --------------------------------------------------------------------------------------
# result


@dataclass(frozen=True, eq=False)
class DedupResult:
    """Near-duplicates of a query set in reference sets (and within itself).

    Attributes
    ----------
    pairs
        one row per candidate pair: ``query_id``, ``reference_set``, ``reference_id``,
        ``hamming_<method>`` per hash, ``l2`` (exact pixel L2), ``l2_rms``, ``l2_rank``,
        ``tiny``, ``tiny_rank``, ``aligned`` (and ``feature``, ``feature_rank``),
        ``flagged`` and ``flagged_by`` (the rules that fired). Ranks are 1-based among
        the query's neighbours in that set, missing when outside the k searched.
        Pairs within the query set have ``reference_set`` equal to the query's name.
    groups
        members of every duplicate group: ``group``, ``set``, ``id``, ``is_query``,
        ``kept``.
    flagged
        query images to exclude: ``query_id``, ``reason`` (``reference`` — in a group
        with an original image; ``within_query`` — a group inside the new set, one other
        member kept; ``blacklist``), ``group`` (-1 for none) and ``matches``.
    kept_ids
        query ids not flagged, in set order.
    config
        the signals and thresholds used.
    """

    pairs: pd.DataFrame
    groups: pd.DataFrame
    flagged: pd.DataFrame
    kept_ids: np.ndarray
    config: DedupConfig
    query_name: str
    n_query: int
    reference_sizes: dict[str, int]
    blacklist: dict[str, Any]

    @property
    def flagged_ids(self) -> np.ndarray:
        """Query ids to exclude (every reason)."""
        return self.flagged.query_id.to_numpy(dtype=str)

    @property
    def n_flagged(self) -> int:
        return len(self.flagged)

    def counts(self) -> dict[str, int]:
        """Flagged query images per reason, and pair/group counts."""
        reasons = self.flagged.reason.value_counts()
        return {
            "query": self.n_query,
            "flagged": self.n_flagged,
            "kept": len(self.kept_ids),
            "reference": int(reasons.get("reference", 0)),
            "within_query": int(reasons.get("within_query", 0)),
            "blacklist": int(reasons.get("blacklist", 0)),
            "candidate_pairs": len(self.pairs),
            "flagged_pairs": int(self.pairs.flagged.sum()) if len(self.pairs) else 0,
            "groups": int(self.groups.group.nunique()) if len(self.groups) else 0,
        }

    def flagged_by_signal(self) -> dict[str, int]:
        """Flagged pairs per rule (a pair can count under several)."""
        out: dict[str, int] = {}
        for s in self.pairs.flagged_by[self.pairs.flagged] if len(self.pairs) else []:
            for r in str(s).split(","):
                out[r] = out.get(r, 0) + 1
        return dict(sorted(out.items()))

    def summary(self) -> str:
        """A few lines of text."""
        c = self.counts()
        refs = ", ".join(f"{k} ({v})" for k, v in self.reference_sizes.items()) or "none"
        rules = _rules_text(self.config)
        lines = [
            f"Near-duplicates of {self.query_name} ({self.n_query} images) in: {refs}"
            + ("; and within the set" if self.config.within_query else ""),
            f"rules: {rules}",
            f"{c['flagged']} flagged ({c['reference']} near an original image, "
            f"{c['within_query']} duplicates within the set, {c['blacklist']} blacklisted); "
            f"{c['kept']} kept",
            f"{c['candidate_pairs']} candidate pairs, {c['flagged_pairs']} flagged, in {c['groups']} groups; "
            f"flagged pairs per rule: {self.flagged_by_signal()}",
        ]
        if self.blacklist.get("path"):
            lines.append(
                f"blacklist {self.blacklist['path']}: {self.blacklist['n_ids']} ids, "
                f"{self.blacklist['n_matched']} in this set"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: counts, config, the flagged ids with reasons."""
        return {
            "query": self.query_name,
            "n_query": self.n_query,
            "references": dict(self.reference_sizes),
            "counts": self.counts(),
            "flagged_pairs_by_rule": self.flagged_by_signal(),
            "config": self.config.to_dict(),
            "blacklist": dict(self.blacklist),
            "flagged": [
                {"query_id": str(r.query_id), "reason": str(r.reason), "group": int(r.group), "matches": str(r.matches)}
                for r in self.flagged.itertuples()
            ],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``pairs.csv``, ``groups.csv``, ``flagged.csv``, ``flagged_ids.txt``,
        ``kept_ids.txt`` and ``result.json`` into directory ``path``."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self.pairs.to_csv(p / "pairs.csv", index=False)
        self.groups.to_csv(p / "groups.csv", index=False)
        self.flagged.to_csv(p / "flagged.csv", index=False)
        (p / "flagged_ids.txt").write_text("".join(f"{i}\n" for i in self.flagged_ids))
        (p / "kept_ids.txt").write_text("".join(f"{i}\n" for i in self.kept_ids))
        meta = {k: v for k, v in self.to_dict().items() if k != "flagged"}
        (p / "result.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DedupResult:
        """Read a directory written by :meth:`save`."""
        p = Path(path)
        if not (p / "result.json").is_file():
            raise fail("path", str(p), "a directory written by DedupResult.save (with result.json)", error=FileNotFoundError)
        meta = json.loads((p / "result.json").read_text())
        str_cols = {"query_id": str, "reference_set": str, "reference_id": str, "id": str, "set": str, "matches": str}
        pairs = pd.read_csv(p / "pairs.csv", dtype={**str_cols, "flagged_by": str}, keep_default_na=False, na_values=[""])
        for col in ("l2_rank", "tiny_rank", "feature_rank"):
            if col in pairs:
                pairs[col] = pairs[col].astype("Int64")
        if "flagged_by" in pairs:
            pairs["flagged_by"] = pairs["flagged_by"].fillna("")
        groups = pd.read_csv(p / "groups.csv", dtype=str_cols, keep_default_na=False)
        flagged = pd.read_csv(p / "flagged.csv", dtype=str_cols, keep_default_na=False)
        kept = np.array([x for x in (p / "kept_ids.txt").read_text().splitlines() if x], dtype=str)
        return cls(
            pairs=pairs,
            groups=groups,
            flagged=flagged,
            kept_ids=kept,
            config=DedupConfig.from_dict(meta["config"]),
            query_name=meta["query"],
            n_query=int(meta["n_query"]),
            reference_sizes={k: int(v) for k, v in meta["references"].items()},
            blacklist=meta["blacklist"],
        )


def _rules_text(config: DedupConfig) -> str:
    parts = [f"{m} <= {r}" for m, r in config.hash_radii.items()]
    if config.l2_rms_max is not None:
        parts.append(f"l2_rms <= {config.l2_rms_max:g} (among {config.l2_k} nearest)")
    if config.aligned_max is not None:
        flips = ", flips too" if config.flips else ""
        parts.append(f"aligned <= {config.aligned_max:g} (shift <= {config.max_shift}, zoom {min(config.scales):g}-{max(config.scales):g}{flips})")
    if config.ratio_max is not None:
        parts.append(f"aligned <= {config.ratio_aligned_max:g} with aligned_ratio <= {config.ratio_max:g}")
        if config.within_query and config.within_ratio_max is not None:
            parts[-1] += (f" (inside the set: aligned <= {config.within_ratio_aligned_max:g} with aligned_ratio"
                          f" <= {config.within_ratio_max:g})")
    if config.tiny_max is not None:
        parts.append(f"tiny <= {config.tiny_max:g}")
    if config.feature_model is not None and config.feature_max is not None:
        parts.append(f"{config.feature_model} feature <= {config.feature_max:g}")
    if config.edge_max is not None:
        parts.append(f"aligned <= {config.edge_aligned_max:g} with edge <= {config.edge_max:g} "
                     f"(shift <= {config.edge_max_shift}, zoom {min(config.edge_scales):g}-{max(config.edge_scales):g}")
        if config.within_query and config.within_edge_max is not None:
            parts[-1] += f"; inside the set: edge <= {config.within_edge_max:g}"
        if config.aligned_k and config.window_edge_max is not None and config.window_edge_max < config.edge_max:
            parts[-1] += f"; coarse-window candidates: edge <= {config.window_edge_max:g}"
        parts[-1] += ")"
        if config.edge_ratio_max is not None:
            parts[-1] += (f" or aligned <= {config.edge_aligned_max:g} with edge <= {config.edge_ratio_edge_max:g} and "
                          f"edge_ratio <= {config.edge_ratio_max:g}")
            if config.within_query:
                parts[-1] += " (not inside the set)"
    return " or ".join(parts) if parts else "(none)"


# --------------------------------------------------------------------------------------
# the detector


def _as_references(references: Any, query: ImageSet) -> list[tuple[str, ImageSet]]:
    if references is None:
        items: list[tuple[str, ImageSet]] = []
    elif isinstance(references, ImageSet):
        items = [(references.name, references)]
    elif isinstance(references, Mapping):
        items = [(str(k), v) for k, v in references.items()]
    elif isinstance(references, Sequence) and not isinstance(references, (str, bytes)):
        items = [(getattr(v, "name", f"reference{i}"), v) for i, v in enumerate(references)]
    else:
        raise fail("references", type(references).__name__, "a mapping name -> ImageSet, a list of ImageSets, or None", error=TypeError)
    names = [n for n, _ in items]
    for name, s in items:
        if not isinstance(s, ImageSet):
            raise fail(f"references[{name!r}]", type(s).__name__, "an ImageSet", error=TypeError)
        if names.count(name) > 1:
            raise fail("references", names, "sets with distinct names", "Pass a mapping {name: set} or rename with s.renamed().")
        if name == query.name:
            raise fail(
                f"reference name {name!r}",
                name,
                f"different from the query's name ({query.name!r}), which labels pairs within the query",
                "Rename one of them with s.renamed().",
            )
        if len(s) == 0:
            raise fail(f"references[{name!r}]", "an empty set", "at least one image")
        if s.image_shape != query.image_shape:
            raise fail(
                f"image shape of references[{name!r}]",
                s.image_shape,
                f"{query.image_shape} (the query's)",
                "Resize both sets to one size before looking for near-duplicates.",
            )
    seen: dict[str, np.ndarray] = {}
    for label, ids in [(f"query {query.name!r}", query.ids)] + [(f"reference {n!r}", s.ids) for n, s in items]:
        for other_label, other_ids in seen.items():
            clash = np.intersect1d(ids, other_ids)
            if len(clash):
                raise fail(
                    f"ids of {label}",
                    f"{len(clash)} ids shared with {other_label}, e.g. {clash[:3].tolist()}",
                    "unique across the query and reference sets",
                    "Give each set its own ids (the default ids are '<name>/<index>'), or pass a set only once.",
                )
        seen[label] = ids
    return items


def find_near_duplicates(
    query: ImageSet,
    references: Mapping[str, ImageSet] | Sequence[ImageSet] | ImageSet | None = None,
    *,
    config: DedupConfig | None = None,
    blacklist: str | os.PathLike[str] | Iterable[str] | None = None,
    chunk_size: int = 4096,
    **overrides: Any,
) -> DedupResult:
    """Find the near-duplicates of ``query`` images in ``references`` and within ``query``.

    Parameters
    ----------
    query
        the new set (e.g. candidate test images).
    references
        the original sets, ``{"cifar10-train": train, "cifar10-test": test}`` or a list
        (named by ``ImageSet.name``); ``None`` checks only within ``query``.
    config
        signals and thresholds (:class:`DedupConfig`); keyword ``overrides`` replace
        single fields, e.g. ``aligned_max=0.3`` or ``feature_model="resnet56"``.
    blacklist
        a blacklist file (one id per line, appended by review) or an iterable of ids;
        listed query images are dropped.
    chunk_size
        query images compared at once (bounds memory).

    Returns
    -------
    DedupResult
        pairs with every distance, duplicate groups, flagged and kept ids.
    """
    if not isinstance(query, ImageSet):
        raise fail("query", type(query).__name__, "an ImageSet", "Wrap arrays with ImageSet(images).", error=TypeError)
    if len(query) == 0:
        raise fail("query", "an empty set", "at least one image")
    base = config if config is not None else DedupConfig()
    unknown = sorted(set(overrides) - set(DedupConfig.__dataclass_fields__))
    if unknown:
        from replicate._validation import check_choice

        check_choice("keyword argument", unknown[0], sorted(DedupConfig.__dataclass_fields__))
    cfg = _check_config(replace(base, **overrides))
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    refs = _as_references(references, query)
    if isinstance(blacklist, (str, os.PathLike)):
        bl_ids, bl_path = read_blacklist(blacklist), str(blacklist)
    else:
        bl_ids, bl_path = [str(i) for i in (blacklist or [])], None

    prepared_refs = [prepare(s, cfg, name) for name, s in refs]
    whole = prepare(query, cfg)
    frames = []
    for start in range(0, len(query), chunk_size):
        stop = min(start + chunk_size, len(query))
        chunk = _slice_prepared(whole, start, stop)
        frames.append(
            candidate_pairs(chunk, prepared_refs, cfg, offset=start, within=whole if cfg.within_query and len(query) > 1 else None)
        )
    pairs = pd.concat(frames, ignore_index=True) if frames else _empty_pairs(cfg)
    if cfg.within_query and len(pairs):
        # a pair inside the query is found from both of its chunks: keep one row
        inside = pairs.reference_set == query.name
        dup = pairs[inside].duplicated(["query_pos", "reference_pos"])
        pairs = pairs.drop(index=pairs[inside].index[dup.to_numpy()]).reset_index(drop=True)
    return decide(pairs, query, dict(refs), cfg, blacklist=bl_ids, blacklist_path=bl_path)


def _slice_prepared(p: PreparedSet, start: int, stop: int) -> PreparedSet:
    sl = slice(start, stop)
    return PreparedSet(
        name=p.name,
        images=p.images.select(np.arange(start, stop)),
        hashes={m: v[sl] for m, v in p.hashes.items()},
        tiny=p.tiny[sl],
        tiny_flipped=None if p.tiny_flipped is None else p.tiny_flipped[sl],
        aligned=p.aligned[sl],
        features=None if p.features is None else p.features[sl],
        coarse=None if p.coarse is None else p.coarse[sl],
    )


def _window_only(pairs: pd.DataFrame, config: DedupConfig) -> np.ndarray:
    """Candidate pairs that only the coarse-window search proposed: an ``aligned_rank``, no
    other rank, and no hash within its radius."""
    only = pairs["aligned_rank"].notna().to_numpy().copy()
    for col in ("l2_rank", "tiny_rank", "feature_rank"):
        if col in pairs:
            only &= pairs[col].isna().to_numpy()
    for m, r in config.hash_radii.items():
        only &= ~(pairs[f"hamming_{m}"].to_numpy() <= r)
    return only


def _flag_rules(
    pairs: pd.DataFrame, config: DedupConfig, within: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Which rules fire for each pair; ``within`` marks pairs inside the query set, which
    use the ``within_ratio_*`` limits of the ratio rule."""
    fired: list[tuple[str, np.ndarray]] = []
    for m, r in config.hash_radii.items():
        fired.append((m, pairs[f"hamming_{m}"].to_numpy() <= r))
    if config.l2_rms_max is not None:
        fired.append(("l2", pairs["l2_rms"].to_numpy() <= config.l2_rms_max))
    if config.aligned_max is not None:
        fired.append(("aligned", pairs["aligned"].to_numpy() <= config.aligned_max))
        if "aligned_mirror" in pairs:
            fired.append(("mirror", pairs["aligned_mirror"].to_numpy() <= config.aligned_max))
    if "aligned_ratio" in pairs:
        ratio = np.nan_to_num(pairs["aligned_ratio"].to_numpy(dtype=float), nan=np.inf)
        aligned = pairs["aligned"].to_numpy()
        inside = np.zeros(len(pairs), bool) if within is None else np.asarray(within, bool)
        if config.ratio_max is not None:
            fires = ~inside & (aligned <= config.ratio_aligned_max) & (ratio <= config.ratio_max)
            if config.within_ratio_max is None:  # inside the set too, with the same limits
                fires |= inside & (aligned <= config.ratio_aligned_max) & (ratio <= config.ratio_max)
            else:
                fires |= inside & (aligned <= config.within_ratio_aligned_max) & (ratio <= config.within_ratio_max)
            fired.append(("ratio", fires))
    if config.tiny_max is not None:
        fired.append(("tiny", pairs["tiny"].to_numpy() <= config.tiny_max))
    if config.feature_max is not None and "feature" in pairs:
        fired.append(("feature", pairs["feature"].to_numpy() <= config.feature_max))
    if config.edge_max is not None:
        if "edge" not in pairs:
            raise fail("config.edge_max", config.edge_max, "None for a candidate table without an 'edge' column",
                       "Search again with edge_max set to compute it.")
        edge = np.nan_to_num(pairs["edge"].to_numpy(dtype=float), nan=np.inf)
        limit = np.full(len(pairs), config.edge_max)
        if within is not None and config.within_edge_max is not None:
            limit[np.asarray(within, bool)] = config.within_edge_max
        if config.window_edge_max is not None and "aligned_rank" in pairs:
            only = _window_only(pairs, config)
            limit[only] = np.minimum(limit[only], config.window_edge_max)
        fires = edge <= limit
        if config.edge_ratio_max is not None:
            if "edge_ratio" not in pairs:
                raise fail("config.edge_ratio_max", config.edge_ratio_max, "None for a candidate table without an "
                           "'edge_ratio' column", "Search again to compute it.")
            ratio = np.nan_to_num(pairs["edge_ratio"].to_numpy(dtype=float), nan=np.inf)
            outside = np.ones(len(pairs), bool) if within is None else ~np.asarray(within, bool)
            fires |= outside & (edge <= config.edge_ratio_edge_max) & (ratio <= config.edge_ratio_max)
        fired.append(("edge", (pairs["aligned"].to_numpy() <= config.edge_aligned_max) & fires))
    n = len(pairs)
    flagged = np.zeros(n, dtype=bool)
    labels = np.full(n, "", dtype=object)
    for name, mask in fired:
        flagged |= mask
        labels[mask] = [f"{x},{name}" if x else name for x in labels[mask]]
    return flagged, labels.astype(str) if n else np.array([], dtype=str)


def decide(
    pairs: pd.DataFrame,
    query: ImageSet,
    references: Mapping[str, ImageSet],
    config: DedupConfig,
    *,
    blacklist: Iterable[str] = (),
    blacklist_path: str | None = None,
) -> DedupResult:
    """Apply the rules to a candidate-pair table (positions), form groups, pick what to drop.

    ``pairs`` is the concatenation of :func:`candidate_pairs` over all query chunks.
    Re-running :func:`decide` with another ``config`` (thresholds only) re-scores the
    same candidates without searching again.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = pairs.reset_index(drop=True)
    flagged, labels = _flag_rules(pairs, config, within=pairs.reference_set.to_numpy(str) == query.name)
    names = list(references)
    sizes = {n: len(references[n]) for n in names}
    offsets: dict[str, int] = {query.name: 0}
    total = len(query)
    for n in names:
        offsets[n] = total
        total += sizes[n]
    ref_ids = {n: references[n].ids for n in names}
    ref_ids[query.name] = query.ids
    qpos = pairs.query_pos.to_numpy(np.int64)
    rpos = pairs.reference_pos.to_numpy(np.int64)
    rset = pairs.reference_set.to_numpy(str)
    out = pd.DataFrame(
        {
            "query_id": query.ids[qpos] if len(pairs) else np.array([], dtype=str),
            "reference_set": rset,
            "reference_id": np.array([ref_ids[s][p] for s, p in zip(rset, rpos)], dtype=str)
            if len(pairs)
            else np.array([], dtype=str),
        }
    )
    for col in pairs.columns:
        if col not in ("query_pos", "reference_set", "reference_pos"):
            out[col] = pairs[col].to_numpy() if not isinstance(pairs[col].dtype, pd.Int64Dtype) else pairs[col]
    out["flagged"] = flagged
    out["flagged_by"] = labels

    # groups: connected components of flagged pairs over query + reference nodes
    fq = qpos[flagged]
    fr = np.array([offsets[s] for s in rset[flagged]], dtype=np.int64) + rpos[flagged]
    nodes = np.unique(np.concatenate([fq, fr]))
    local = {int(v): i for i, v in enumerate(nodes)}
    a = np.array([local[int(v)] for v in fq], dtype=np.int64)
    b = np.array([local[int(v)] for v in fr], dtype=np.int64)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(nodes), len(nodes)))
    ncomp, comp = connected_components(graph, directed=False)
    bl = set(blacklist)
    q_black = np.isin(query.ids, list(bl)) if bl else np.zeros(len(query), bool)
    set_of_node = np.empty(len(nodes), dtype=object)
    id_of_node = np.empty(len(nodes), dtype=object)
    bounds = sorted(offsets.items(), key=lambda kv: kv[1])
    for i, v in enumerate(nodes):
        for n, off in reversed(bounds):
            if v >= off:
                set_of_node[i] = n
                id_of_node[i] = ref_ids[n][v - off]
                break
    is_query = nodes < len(query)
    # number groups in order of their first query member (deterministic)
    order = np.argsort(nodes)
    first_seen: dict[int, int] = {}
    for i in order:
        first_seen.setdefault(int(comp[i]), len(first_seen))
    group_rows = []
    reason: dict[int, tuple[str, int, str]] = {}
    for c in range(ncomp):
        members = np.flatnonzero(comp == c)
        members = members[np.argsort(nodes[members])]
        gid = first_seen[c]
        qm = members[is_query[members]]
        rm = members[~is_query[members]]
        kept_node: int = -1
        if len(rm):
            matches = "; ".join(f"{set_of_node[i]}:{id_of_node[i]}" for i in rm[:5]) + (
                f"; ... ({len(rm)} in all)" if len(rm) > 5 else ""
            )
            for i in qm:
                reason[int(nodes[i])] = ("reference", gid, matches)
        else:
            free = [i for i in qm if not q_black[nodes[i]]]
            kept_node = int(free[0]) if free else -1
            for i in qm:
                if int(i) != kept_node:
                    keep_id = id_of_node[kept_node] if kept_node >= 0 else "(none: all blacklisted)"
                    reason[int(nodes[i])] = ("within_query", gid, f"{query.name}:{keep_id}")
        for node in members:
            group_rows.append(
                {
                    "group": gid,
                    "set": set_of_node[node],
                    "id": id_of_node[node],
                    "is_query": bool(is_query[node]),
                    "kept": bool(node == kept_node),
                }
            )
    for p in np.flatnonzero(q_black):
        # a blacklisted image already dropped by a group keeps that (more specific) reason
        reason.setdefault(int(p), ("blacklist", -1, ""))
    groups = pd.DataFrame(group_rows, columns=["group", "set", "id", "is_query", "kept"])
    groups = groups.sort_values(["group", "is_query", "set", "id"], ascending=[True, False, True, True], kind="stable")
    groups = groups.reset_index(drop=True)
    fl_pos = np.array(sorted(reason), dtype=np.int64)
    flagged_df = pd.DataFrame(
        {
            "query_id": query.ids[fl_pos] if len(fl_pos) else np.array([], dtype=str),
            "reason": [reason[int(p)][0] for p in fl_pos],
            "group": np.array([reason[int(p)][1] for p in fl_pos], dtype=np.int64),
            "matches": [reason[int(p)][2] for p in fl_pos],
        }
    )
    keep_mask = np.ones(len(query), dtype=bool)
    keep_mask[fl_pos] = False
    out = out.sort_values(["query_id", "reference_set", "reference_id"], kind="stable").reset_index(drop=True)
    return DedupResult(
        pairs=out,
        groups=groups,
        flagged=flagged_df,
        kept_ids=query.ids[keep_mask],
        config=config,
        query_name=query.name,
        n_query=len(query),
        reference_sizes=sizes,
        blacklist={"path": blacklist_path, "n_ids": len(bl), "n_matched": int(q_black.sum())},
    )


# --------------------------------------------------------------------------------------
# review gallery


def _png_b64(image: np.ndarray) -> str:
    """The image as a base64 PNG at its own resolution (the page scales it up)."""
    from PIL import Image

    arr = np.asarray(image)
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


_GALLERY = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Near-duplicates of {{ query_name }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
td, th { border-bottom: 1px solid #ddd; padding: 6px 10px; vertical-align: middle; text-align: left; }
img { image-rendering: pixelated; image-rendering: crisp-edges; display: block; }
.ids { font-family: monospace; font-size: 12px; }
.dist { font-family: monospace; font-size: 12px; white-space: pre; }
pre { white-space: pre-wrap; }
</style></head><body>
<h1>Near-duplicates of {{ query_name }}</h1>
<pre>{{ summary }}</pre>
<p>{{ shown }} of {{ total }} flagged pairs, ordered by aligned distance (closest first).
Thumbnails are shown {{ scale }}x with nearest-neighbour scaling (image-rendering: pixelated). To exclude an image,
append its id to the blacklist file (one id per line).</p>
<table>
<tr><th>#</th><th>query</th><th>reference</th><th>ids</th><th>distances</th></tr>
{% for row in rows %}
<tr>
<td>{{ loop.index }}</td>
<td><img alt="{{ row.query_id }}" width="{{ width }}" height="{{ height }}" src="data:image/png;base64,{{ row.q_png }}"></td>
<td><img alt="{{ row.reference_id }}" width="{{ width }}" height="{{ height }}" src="data:image/png;base64,{{ row.r_png }}"></td>
<td class="ids">{{ row.query_id }}<br>{{ row.reference_set }}:{{ row.reference_id }}<br>flagged by {{ row.flagged_by }}</td>
<td class="dist">{{ row.dist }}</td>
</tr>
{% endfor %}
</table></body></html>
"""


def dedup_gallery(
    result: DedupResult,
    query: ImageSet,
    references: Mapping[str, ImageSet] | Sequence[ImageSet] | ImageSet | None = None,
    *,
    max_pairs: int = 1000,
    scale: int = 4,
) -> str:
    """A self-contained HTML page showing flagged pairs side by side, for review.

    Pairs are ordered by aligned distance (closest first), at most ``max_pairs``. Each
    image is embedded as a base64 PNG at its own resolution and displayed ``scale``
    times larger with nearest-neighbour scaling; the page needs no network access.
    """
    import jinja2

    max_pairs = check_int("max_pairs", max_pairs, minimum=1)
    scale = check_int("scale", scale, minimum=1, maximum=32)
    refs = dict(_as_references(references, query)) if references is not None else {}
    refs[query.name] = query
    fl = result.pairs[result.pairs.flagged]
    missing = sorted(set(fl.reference_set) - set(refs))
    if missing:
        raise fail("references", sorted(refs), f"the sets named in the result (missing {missing})")
    closest = fl.aligned if "aligned_mirror" not in fl else np.minimum(fl.aligned, fl.aligned_mirror)
    fl = fl.assign(_key=closest).sort_values(["_key", "l2"], kind="stable").head(max_pairs)
    dist_cols = [
        c
        for c in fl.columns
        if c.startswith("hamming_")
        or c in ("l2", "l2_rms", "l2_rank", "tiny", "aligned", "aligned_ratio", "aligned_mirror", "feature")
    ]
    rows = []
    qpos = query.positions(fl.query_id.to_numpy(str)) if len(fl) else np.array([], np.int64)
    for (_, r), qp in zip(fl.iterrows(), qpos):
        rp = refs[r.reference_set].positions([r.reference_id])[0]
        parts = []
        for c in dist_cols:
            v = r[c]
            if pd.isna(v):
                continue
            parts.append(f"{c}: {v:.3f}" if isinstance(v, float) and not float(v).is_integer() else f"{c}: {int(v)}")
        rows.append(
            {
                "query_id": r.query_id,
                "reference_set": r.reference_set,
                "reference_id": r.reference_id,
                "flagged_by": r.flagged_by,
                "q_png": _png_b64(query.images[qp]),
                "r_png": _png_b64(refs[r.reference_set].images[rp]),
                "dist": "\n".join(parts),
            }
        )
    env = jinja2.Environment(autoescape=True)
    return env.from_string(_GALLERY).render(
        query_name=result.query_name,
        summary=result.summary(),
        rows=rows,
        shown=len(rows),
        total=int(result.pairs.flagged.sum()),
        scale=scale,
        width=query.image_shape[1] * scale,
        height=query.image_shape[0] * scale,
    )
