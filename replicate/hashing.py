"""Perceptual hashes of whole image sets, bit-identical to ``imagehash``.

Every hasher reproduces imagehash 4.3 exactly, for every input, without a Python loop
over PIL images:

* grayscale is PIL's ``convert("L")``: ``(19595 R + 38470 G + 7471 B + 2**15) >> 16``
  (ITU-R 601-2 luma in 16-bit fixed point);
* resizing is PIL's LANCZOS resampling: the same double-precision filter weights,
  normalised to 22-bit fixed point, two passes each rounded and clipped to 8 bits, in
  the order the installed Pillow runs them (a pass is skipped where PIL skips it);
* the hash rules are imagehash's. Where a rule compares floating-point values (the DCT
  of ``phash``, the wavelets of ``whash``) the batched kernel computes the values in
  its own order; an image whose values lie within rounding distance of the threshold
  (a near-tie, e.g. a constant image) is re-hashed with the very scipy/pywt calls
  imagehash makes, so ties break exactly as imagehash breaks them.

Hashes are packed into unsigned 64-bit words so that ``int(str(imagehash_value), 16)``
is the packed integer: one ``uint64`` per image for hashes of up to 64 bits, else
``ceil(bits / 64)`` words per image, most significant word first.

The API works one chunk at a time (:func:`hash_chunk`); :func:`hash_images` maps it over
an array or image set, so a distributed engine can map it over pools of any size.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numba import njit

from replicate._validation import check_choice, check_int, fail

__all__ = [
    "HashMethod",
    "Hashes",
    "HASHERS",
    "register_hasher",
    "list_hashers",
    "hash_images",
    "hash_chunk",
    "iter_chunks",
    "hash_set",
    "hash_bits",
    "to_gray",
    "resize_lanczos",
    "pack_bits",
    "unpack_bits",
    "hashes_to_hex",
    "hashes_from_hex",
    "check_compatible",
    "hash_input_size",
    "hash_pil",
]

HashMethod = Literal["ahash", "dhash", "dhash_vertical", "phash", "phash_simple", "whash"]

DEFAULT_CHUNK_SIZE = 1 << 15

# --------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class _Hasher:
    name: str
    func: Callable[..., np.ndarray]
    defaults: dict[str, Any]
    bits: Callable[..., int]  # bits(**params) with hash_size included


HASHERS: dict[str, _Hasher] = {}


def register_hasher(
    name: str, *, defaults: dict[str, Any], bits: Callable[..., int]
) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Register a hasher ``func(images, *, hash_size, **params) -> packed uint64``.

    ``defaults`` lists every parameter besides ``hash_size`` with its default value;
    ``bits(hash_size=..., **params)`` gives the number of bits the hash has.
    """

    def deco(func: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        HASHERS[name] = _Hasher(name, func, dict(defaults), bits)
        return func

    return deco


def list_hashers() -> list[str]:
    """Names of the registered hashers, sorted."""
    return sorted(HASHERS)


def _resolve(method: str, hash_size: Any, params: dict[str, Any]) -> tuple[_Hasher, dict[str, Any]]:
    """The hasher for ``method`` and the full parameter dict (defaults filled in)."""
    check_choice("method", method, list_hashers())
    hasher = HASHERS[method]
    hash_size = check_int("hash_size", hash_size, minimum=2, maximum=64)
    unknown = sorted(set(params) - set(hasher.defaults))
    if unknown:
        allowed = ", ".join(["hash_size", *hasher.defaults]) or "hash_size"
        raise fail(
            "params",
            {k: params[k] for k in unknown},
            f"parameters of {method!r} ({allowed})",
            "Remove the other parameters.",
            error=TypeError,
        )
    full = {"hash_size": hash_size, **hasher.defaults, **params}
    return hasher, full


def hash_bits(method: str = "phash", *, hash_size: int = 8, **params: Any) -> int:
    """Number of bits of a ``method`` hash with ``hash_size`` (and other parameters)."""
    hasher, full = _resolve(method, hash_size, params)
    return int(hasher.bits(**full))


def _words(bits: int) -> int:
    return (bits + 63) // 64


# --------------------------------------------------------------------------------------
# input checks


def _as_images(images: Any, name: str = "images") -> np.ndarray:
    """A uint8 NHWC RGB array from an array or an ImageSet (not copied)."""
    arr = getattr(images, "images", images)
    if not isinstance(arr, np.ndarray):
        raise fail(name, images, "a uint8 NHWC RGB array or an ImageSet", error=TypeError)
    if arr.dtype != np.uint8:
        raise fail(
            name,
            arr,
            "of dtype uint8 (pixel values 0..255)",
            "Convert with np.clip(x, 0, 255).astype(np.uint8) (or x * 255 for images in [0, 1]).",
            error=TypeError,
        )
    if arr.ndim != 4 or arr.shape[3] != 3:
        raise fail(
            name,
            arr,
            "of shape (N, H, W, 3) (RGB, channels last)",
            "Stack single images with x[None]; repeat grayscale images to 3 channels.",
        )
    if arr.shape[0] == 0:
        raise fail(name, arr, "non-empty (at least one image)")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise fail(name, arr, "of images at least 1x1 pixels")
    return arr


# --------------------------------------------------------------------------------------
# PIL-exact grayscale and LANCZOS resize

_PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c


def _threads() -> int:
    import numba

    return max(1, int(numba.get_num_threads()))


def _parallel(kernel: Any, n: int, args: tuple[Any, ...]) -> None:
    """Run ``kernel(*args, a, b)`` over image ranges [a, b) on a few threads (nogil kernels)."""
    threads = _threads()
    pieces = max(1, min(n, 4 * threads, max(1, n // 64)))
    edges = np.unique(np.linspace(0, n, pieces + 1).astype(np.int64)).tolist()
    ranges = list(zip(edges[:-1], edges[1:]))
    if threads == 1 or len(ranges) == 1:
        for a, b in ranges:
            kernel(*args, a, b)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(threads, len(ranges))) as ex:
        for _ in ex.map(lambda ab: kernel(*args, ab[0], ab[1]), ranges):
            pass


@njit(inline="always")
def _luma(flat, p):  # pragma: no cover - compiled
    return (
        np.int32(flat[3 * p]) * 19595
        + np.int32(flat[3 * p + 1]) * 38470
        + np.int32(flat[3 * p + 2]) * 7471
        + 32768
    ) >> 16


@njit(nogil=True, cache=True)
def _gray_kernel(images, out, a, b):  # pragma: no cover - compiled
    npix = images.shape[1] * images.shape[2]
    for i in range(a, b):
        flat = images[i].reshape(npix * 3)
        dst = out[i].reshape(npix)
        for p in range(npix):
            dst[p] = np.uint8(_luma(flat, p))


def to_gray(images: Any) -> np.ndarray:
    """PIL's ``Image.convert("L")`` of every image: (N, H, W) uint8, bit-identical."""
    arr = np.ascontiguousarray(_as_images(images))
    out = np.empty(arr.shape[:3], dtype=np.uint8)
    _parallel(_gray_kernel, len(arr), (arr, out))
    return out


def _lanczos(x: float) -> float:
    # Pillow's lanczos_filter: sinc(x) * sinc(x / 3) on [-3, 3)
    def sinc(v: float) -> float:
        if v == 0.0:
            return 1.0
        v = v * math.pi
        return math.sin(v) / v

    if -3.0 <= x < 3.0:
        return sinc(x) * sinc(x / 3)
    return 0.0


@lru_cache(maxsize=256)
def _coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for LANCZOS.

    Returns ``bounds`` (out_size, 2) int64 (first input index, count) and the fixed-point
    weights (out_size, ksize) int64, computed with the same double operations as Pillow.
    """
    support_base = 3.0
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = support_base * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    bounds = np.zeros((out_size, 2), dtype=np.int64)
    kk = np.zeros((out_size, ksize), dtype=np.int64)
    ss = 1.0 / filterscale
    for xx in range(out_size):
        center = 0.0 + (xx + 0.5) * scale
        xmin = int(center - support + 0.5)
        xmin = max(xmin, 0)
        xmax = int(center + support + 0.5)
        xmax = min(xmax, in_size)
        xmax -= xmin
        w = [_lanczos(((x + xmin) - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for v in w:
            ww += v
        if ww != 0.0:
            w = [v / ww for v in w]
        for x, v in enumerate(w):
            kk[xx, x] = (
                int(-0.5 + v * (1 << _PRECISION_BITS)) if v < 0 else int(0.5 + v * (1 << _PRECISION_BITS))
            )
        bounds[xx] = (xmin, xmax)
    return bounds, kk


@njit(inline="always")
def _clip8(ss):  # pragma: no cover - compiled
    if ss >= (1 << 30):
        return np.uint8(255)
    if ss <= 0:
        return np.uint8(0)
    return np.uint8(ss >> 22)


@njit(nogil=True, cache=True)
def _resize_h_kernel(src, out, bounds, kk, a, b):  # pragma: no cover - compiled
    # Pillow's ImagingResampleHorizontal_8bpc; the image is transposed first so that the
    # taps of one output column accumulate with SIMD over all rows at once
    h, w = src.shape[1], src.shape[2]
    ow = out.shape[2]
    tr = np.empty((w, h), dtype=np.int64)
    acc = np.empty(h, dtype=np.int64)
    half = np.int64(1) << 21
    for i in range(a, b):
        img = src[i]
        for y in range(h):
            row = img[y]
            for x in range(w):
                tr[x, y] = row[x]
        for xx in range(ow):
            xmin = bounds[xx, 0]
            acc[:] = half
            for t in range(bounds[xx, 1]):
                col = tr[xmin + t]
                kt = kk[xx, t]
                for y in range(h):
                    acc[y] += col[y] * kt
            for y in range(h):
                out[i, y, xx] = _clip8(acc[y])


@njit(nogil=True, cache=True)
def _resize_v_kernel(src, out, bounds, kk, a, b):  # pragma: no cover - compiled
    # Pillow's ImagingResampleVertical_8bpc, accumulated a row at a time (SIMD over x)
    w = src.shape[2]
    oh = out.shape[1]
    acc = np.empty(w, dtype=np.int64)
    half = np.int64(1) << 21
    for i in range(a, b):
        for yy in range(oh):
            ymin = bounds[yy, 0]
            acc[:] = half
            for t in range(bounds[yy, 1]):
                row = src[i, ymin + t]
                kt = kk[yy, t]
                for x in range(w):
                    acc[x] += np.int64(row[x]) * kt
            dst = out[i, yy]
            for x in range(w):
                dst[x] = _clip8(acc[x])


@lru_cache(maxsize=1)
def _pillow_vertical_first() -> bool:
    """Whether the installed Pillow runs the vertical pass first when height shrinks
    much more than width (newer Pillow: ``in_h - out_h > 2 (in_w - out_w)``).

    Probed once on a tiny image, so the rule follows whichever Pillow is installed.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, size=(1, 24, 6), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(g[0]).resize((5, 8), Image.Resampling.LANCZOS))
    vfirst = _resize_pass(_resize_pass(g, 8, vertical=True), 5, vertical=False)[0]
    hfirst = _resize_pass(_resize_pass(g, 5, vertical=False), 8, vertical=True)[0]
    if np.array_equal(ref, hfirst) == np.array_equal(ref, vfirst):
        raise RuntimeError("could not determine the installed Pillow's resampling pass order")
    return bool(np.array_equal(ref, vfirst))


def _resize_pass(gray: np.ndarray, size: int, *, vertical: bool) -> np.ndarray:
    n, h, w = gray.shape
    if vertical:
        bounds, kk = _coeffs(h, size)
        out = np.empty((n, size, w), dtype=np.uint8)
        _parallel(_resize_v_kernel, n, (gray, out, bounds, kk))
    else:
        bounds, kk = _coeffs(w, size)
        out = np.empty((n, h, size), dtype=np.uint8)
        _parallel(_resize_h_kernel, n, (gray, out, bounds, kk))
    return out


def resize_lanczos(gray: np.ndarray, width: int, height: int) -> np.ndarray:
    """PIL's ``Image.resize((width, height), Image.LANCZOS)`` of (N, H, W) uint8 "L" images.

    Bit-identical to Pillow: same fixed-point weights, two passes each rounded and
    clipped to 8 bits, a pass skipped where its size does not change, and Pillow's
    choice of which pass runs first.
    """
    gray = np.ascontiguousarray(gray)
    n, h, w = gray.shape
    need_h, need_v = w != width, h != height
    if need_h and need_v and h - height > 2 * (w - width) and height < h and _pillow_vertical_first():
        return _resize_pass(_resize_pass(gray, height, vertical=True), width, vertical=False)
    out = gray
    if need_h:
        out = _resize_pass(out, width, vertical=False)
    if need_v:
        out = _resize_pass(out, height, vertical=True)
    return out


def _gray_resized(images: np.ndarray, width: int, height: int) -> np.ndarray:
    return resize_lanczos(to_gray(images), width, height)


# --------------------------------------------------------------------------------------
# bit packing and hex


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack (N, nbits) booleans (imagehash's flattened order) into uint64 words.

    The first bit is the most significant, as in imagehash's hex string; the result is
    (N,) for nbits <= 64, else (N, ceil(nbits / 64)) with the most significant word first.
    """
    bits = np.asarray(bits, dtype=bool)
    n, nbits = bits.shape
    words = _words(nbits)
    padded = np.zeros((n, words * 64), dtype=bool)
    padded[:, words * 64 - nbits :] = bits
    packed = np.packbits(padded, axis=1)  # big-endian bytes
    out = packed.view(">u8").astype(np.uint64)
    return out[:, 0].copy() if words == 1 else out


def unpack_bits(values: np.ndarray, nbits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: (N, nbits) booleans."""
    v = np.asarray(values, dtype=np.uint64)
    v2 = v.reshape(len(v), -1)
    words = v2.shape[1]
    raw = np.unpackbits(v2.astype(">u8").view(np.uint8).reshape(len(v), words * 8), axis=1)
    return raw[:, words * 64 - nbits :].astype(bool)


def hashes_to_hex(values: np.ndarray, nbits: int) -> list[str]:
    """imagehash's ``str(hash)`` of each packed hash (zero-padded to ceil(nbits / 4) digits)."""
    v = np.asarray(values, dtype=np.uint64)
    v2 = v.reshape(len(v), -1)
    width = (nbits + 3) // 4
    out = []
    for row in v2:
        total = 0
        for word in row:
            total = (total << 64) | int(word)
        out.append(f"{total:0{width}x}")
    return out


def hashes_from_hex(hexes: Iterable[str], nbits: int) -> np.ndarray:
    """Packed hashes from imagehash hex strings (``str(imagehash_value)``)."""
    hexes = list(hexes)
    words = _words(nbits)
    out = np.zeros((len(hexes), words), dtype=np.uint64)
    mask = (1 << 64) - 1
    for i, h in enumerate(hexes):
        try:
            total = int(h, 16)
        except (TypeError, ValueError):
            raise fail("hexes", h, "a hexadecimal string") from None
        if total >> nbits:
            raise fail("hexes", h, f"a hash of at most {nbits} bits")
        for w in range(words):
            out[i, words - 1 - w] = (total >> (64 * w)) & mask
    return out[:, 0].copy() if words == 1 else out


# --------------------------------------------------------------------------------------
# hashers


def _square_bits(hash_size: int, **_: Any) -> int:
    return hash_size * hash_size


def _whash_bits(hash_size: int, image_scale: int | None = None, mode: str = "haar", **_: Any) -> int:
    mode = check_choice("mode", mode, ["haar", "db4"])
    if mode == "haar":
        return hash_size * hash_size
    # other wavelets pad the signal: the low band of pywt.wavedec2 is wider than hash_size
    import pywt

    if image_scale is None:
        raise fail(
            "image_scale",
            image_scale,
            f"given for whash with mode={mode!r}",
            "Pass e.g. image_scale=64: the hash length depends on it.",
        )
    length = int(image_scale)
    filt = pywt.Wavelet(mode).dec_len
    for _level in range(int(np.log2(image_scale)) - int(np.log2(hash_size))):
        length = pywt.dwt_coeff_len(length, filt, "symmetric")
    return length * length


@register_hasher("ahash", defaults={}, bits=_square_bits)
def ahash(images: np.ndarray, *, hash_size: int = 8) -> np.ndarray:
    """imagehash.average_hash: pixels of the ``hash_size``-square gray image above the mean."""
    px = _gray_resized(images, hash_size, hash_size).reshape(len(images), -1).astype(np.int64)
    n = px.shape[1]
    # numpy.mean of <= 2**53 integers is S / n rounded once; p > S / n  <=>  p * n > S exactly
    return pack_bits(px * n > px.sum(axis=1, keepdims=True))


@register_hasher("dhash", defaults={}, bits=_square_bits)
def dhash(images: np.ndarray, *, hash_size: int = 8) -> np.ndarray:
    """imagehash.dhash: horizontal gradient signs of a (hash_size + 1) x hash_size image."""
    px = _gray_resized(images, hash_size + 1, hash_size)
    return pack_bits((px[:, :, 1:] > px[:, :, :-1]).reshape(len(images), -1))


@register_hasher("dhash_vertical", defaults={}, bits=_square_bits)
def dhash_vertical(images: np.ndarray, *, hash_size: int = 8) -> np.ndarray:
    """imagehash.dhash_vertical: vertical gradient signs of a hash_size x (hash_size + 1) image."""
    px = _gray_resized(images, hash_size, hash_size + 1)
    return pack_bits((px[:, 1:, :] > px[:, :-1, :]).reshape(len(images), -1))


@lru_cache(maxsize=64)
def _dct_matrix(size: int, rows: int) -> np.ndarray:
    """scipy.fftpack's unnormalised DCT-II: y[k] = 2 sum_n x[n] cos(pi k (2n + 1) / (2 size))."""
    k = np.arange(rows)[:, None]
    n = np.arange(size)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * size))


def _tolerance(size_h: int, size_w: int) -> float:
    # Rounding error of a coefficient is below ~n * eps * (sum of |terms|) <= 1e-9 here;
    # the tolerance leaves a margin of several orders of magnitude.
    return 1e-10 * 4.0 * size_h * size_w * 255.0


@njit(fastmath={"contract", "reassoc", "nsz", "arcp"}, cache=True)
def _phash_core(x, sd, tmp, c, d, s):  # pragma: no cover - compiled
    """Low hash_size x hash_size block of the 2-D DCT-II of x (s*s, float64), into c.

    Uses the (anti)symmetry of the DCT basis: even rows of ``d`` see x[r] + x[s-1-r],
    odd rows x[r] - x[s-1-r], halving the multiplications. Compiled with reassociation
    and fused multiply-add (SIMD reductions): the values are an approximation anyway,
    within the near-tie tolerance, and images near a tie are re-hashed exactly.
    """
    hs = d.shape[0]
    half = s // 2
    for r in range(half):
        top = x[r * s : (r + 1) * s]
        bot = x[(s - 1 - r) * s : (s - r) * s]
        s_ = sd[r * s : (r + 1) * s]
        d_ = sd[(half + r) * s : (half + r + 1) * s]
        for q in range(s):
            s_[q] = top[q] + bot[q]
            d_[q] = top[q] - bot[q]
    # first axis: each source row is read once and added into every output row
    tmp[:] = 0.0
    for r in range(half):
        se = sd[r * s : (r + 1) * s]
        so = sd[(half + r) * s : (half + r + 1) * s]
        for k in range(0, hs, 2):
            row = tmp[k * s : (k + 1) * s]
            dk = d[k, r]
            for q in range(s):
                row[q] += dk * se[q]
        for k in range(1, hs, 2):
            row = tmp[k * s : (k + 1) * s]
            dk = d[k, r]
            for q in range(s):
                row[q] += dk * so[q]
    if s % 2 == 1:
        mid = x[half * s : (half + 1) * s]
        for k in range(0, hs, 2):
            row = tmp[k * s : (k + 1) * s]
            dk = d[k, half]
            for q in range(s):
                row[q] += dk * mid[q]
    for k in range(hs):
        row = tmp[k * s : (k + 1) * s]
        for k2 in range(hs):
            dr = d[k2]
            acc = 0.0
            for q in range(s):
                acc += dr[q] * row[q]
            c[k * hs + k2] = acc


@njit(inline="always")
def _median_bits(c, rank, nbits, out_row, tol):  # pragma: no cover - compiled
    """Set the bits of ``c > median(c)`` in out_row; return True for a near-tie (uncertain).

    Ranks come from counting smaller values (SIMD-friendly for 64 values); the values
    next to the median must be distinct and further than 2 * tol apart, else the image
    is re-hashed with imagehash's own calls.
    """
    m = c.shape[0]
    mid = m // 2
    for j in range(m):
        x = c[j]
        lt = 0
        for q in range(m):
            lt += np.int64(c[q] < x)
        rank[j] = lt
    lo = np.nan
    md = np.nan
    hi = np.nan
    for j in range(m):
        lt = rank[j]
        if lt == mid - 1:
            lo = c[j]
        if lt == mid:
            md = c[j]
        if lt == mid + 1:
            hi = c[j]
    # c[j] > median  <=>  rank >= mid (even count) or rank > mid (odd), values distinct
    thr = mid if m % 2 == 0 else mid + 1
    words = out_row.shape[0]
    if words == 1:
        w = np.uint64(0)
        for j in range(m):
            w = (w << np.uint64(1)) | np.uint64(rank[j] >= thr)
        out_row[0] = w
    else:
        for k in range(words):
            out_row[k] = 0
        for j in range(m):
            if rank[j] >= thr:
                p = nbits - 1 - j
                out_row[words - 1 - p // 64] |= np.uint64(1) << np.uint64(p % 64)
    if m % 2 == 0:
        return not (md - lo > 2 * tol)  # NaN (a missing rank: a tie) is uncertain too
    return not (md - lo > 2 * tol and hi - md > 2 * tol)


@njit(nogil=True, cache=True)
def _phash_rgb_kernel(images, d, nbits, out, uncertain, tol, a, b):  # pragma: no cover - compiled
    s = images.shape[1]
    npix = s * s
    x = np.empty(npix, dtype=np.float64)
    sd = np.empty(npix, dtype=np.float64)
    tmp = np.empty(d.shape[0] * s, dtype=np.float64)
    c = np.empty(d.shape[0] * d.shape[0], dtype=np.float64)
    rank = np.empty(d.shape[0] * d.shape[0], dtype=np.int64)
    for i in range(a, b):
        flat = images[i].reshape(npix * 3)
        for p in range(npix):
            x[p] = np.float64(_luma(flat, p))
        _phash_core(x, sd, tmp, c, d, s)
        uncertain[i] = _median_bits(c, rank, nbits, out[i], tol)


@njit(nogil=True, cache=True)
def _phash_gray_kernel(px, d, nbits, out, uncertain, tol, a, b):  # pragma: no cover - compiled
    s = px.shape[1]
    npix = s * s
    x = np.empty(npix, dtype=np.float64)
    sd = np.empty(npix, dtype=np.float64)
    tmp = np.empty(d.shape[0] * s, dtype=np.float64)
    c = np.empty(d.shape[0] * d.shape[0], dtype=np.float64)
    rank = np.empty(d.shape[0] * d.shape[0], dtype=np.int64)
    for i in range(a, b):
        flat = px[i].reshape(npix)
        for p in range(npix):
            x[p] = np.float64(flat[p])
        _phash_core(x, sd, tmp, c, d, s)
        uncertain[i] = _median_bits(c, rank, nbits, out[i], tol)


def _finish(out: np.ndarray) -> np.ndarray:
    return out[:, 0].copy() if out.shape[1] == 1 else out


def _phash_exact(px: np.ndarray, hash_size: int) -> np.ndarray:
    """imagehash.phash's rule on one resized gray image, with imagehash's own calls."""
    import scipy.fftpack

    dct = scipy.fftpack.dct(scipy.fftpack.dct(px, axis=0), axis=1)
    low = dct[:hash_size, :hash_size]
    return (low > np.median(low)).reshape(-1)


@register_hasher("phash", defaults={"highfreq_factor": 4}, bits=_square_bits)
def phash(images: np.ndarray, *, hash_size: int = 8, highfreq_factor: int = 4) -> np.ndarray:
    """imagehash.phash: DCT of a (hash_size * highfreq_factor)-square gray image, low
    hash_size x hash_size block above its median."""
    highfreq_factor = check_int("highfreq_factor", highfreq_factor, minimum=1, maximum=64)
    size = hash_size * highfreq_factor
    nbits = hash_size * hash_size
    n = len(images)
    out = np.empty((n, _words(nbits)), dtype=np.uint64)
    uncertain = np.empty(n, dtype=np.bool_)
    args = (_dct_matrix(size, hash_size), nbits, out, uncertain, _tolerance(size, size))
    if images.shape[1:3] == (size, size):
        # no resize (PIL returns a copy): fuse grayscale conversion into the DCT kernel
        rgb = np.ascontiguousarray(images)
        _parallel(_phash_rgb_kernel, n, (rgb, *args))
        unc = np.flatnonzero(uncertain)
        px = to_gray(rgb[unc]) if len(unc) else np.empty((0, size, size), dtype=np.uint8)
    else:
        full = _gray_resized(images, size, size)
        _parallel(_phash_gray_kernel, n, (full, *args))
        unc = np.flatnonzero(uncertain)
        px = full[unc]
    for row, i in enumerate(unc):
        out[i] = pack_bits(_phash_exact(px[row], hash_size)[None]).reshape(-1)
    return _finish(out)


def _phash_simple_exact(px: np.ndarray, hash_size: int) -> np.ndarray:
    import scipy.fftpack

    dct = scipy.fftpack.dct(px)
    low = dct[:hash_size, 1 : hash_size + 1]
    return (low > low.mean()).reshape(-1)


@register_hasher("phash_simple", defaults={"highfreq_factor": 4}, bits=_square_bits)
def phash_simple(images: np.ndarray, *, hash_size: int = 8, highfreq_factor: int = 4) -> np.ndarray:
    """imagehash.phash_simple: row DCT of a (hash_size * highfreq_factor)-square image,
    coefficients 1..hash_size of the first hash_size rows above their mean."""
    highfreq_factor = check_int("highfreq_factor", highfreq_factor, minimum=1, maximum=64)
    size = hash_size * highfreq_factor
    if hash_size + 1 > size:
        raise fail(
            "highfreq_factor",
            highfreq_factor,
            ">= 2 for phash_simple",
            "imagehash needs hash_size + 1 DCT coefficients.",
        )
    px = _gray_resized(images, size, size)
    d = _dct_matrix(size, hash_size + 1)[1:]  # (hash_size, size)
    low = px[:, :hash_size, :].astype(np.float64) @ d.T  # (N, hash_size, hash_size)
    flat = low.reshape(len(px), -1)
    mean = flat.mean(axis=1, keepdims=True)
    bits = flat > mean
    uncertain = (np.abs(flat - mean) <= 2 * _tolerance(size, size)).any(axis=1)
    for i in np.flatnonzero(uncertain):
        bits[i] = _phash_simple_exact(px[i], hash_size)
    return pack_bits(bits)


def _whash_scale(images: np.ndarray, hash_size: int, image_scale: int | None) -> int:
    if hash_size & (hash_size - 1):
        raise fail("hash_size", hash_size, "a power of 2 for whash", "Use 2, 4, 8, 16, ...")
    if image_scale is None:
        natural = 2 ** int(np.log2(min(images.shape[1], images.shape[2])))
        return max(natural, hash_size)
    image_scale = check_int("image_scale", image_scale, minimum=2, maximum=1 << 14)
    if image_scale & (image_scale - 1):
        raise fail(
            "image_scale",
            image_scale,
            "a power of 2",
            "Use e.g. 32 or 64, or None for the image's own scale.",
        )
    if image_scale < hash_size:
        raise fail("image_scale", image_scale, f">= hash_size ({hash_size})")
    return image_scale


def _whash_exact(
    px: np.ndarray, hash_size: int, image_scale: int, mode: str, remove_max_haar_ll: bool
) -> np.ndarray:
    """imagehash.whash's rule on one resized gray image, with imagehash's own calls."""
    import pywt

    ll_max_level = int(np.log2(image_scale))
    level = int(np.log2(hash_size))
    dwt_level = ll_max_level - level
    pixels = px / 255.0
    if remove_max_haar_ll:
        coeffs = list(pywt.wavedec2(pixels, "haar", level=ll_max_level))
        coeffs[0] *= 0
        pixels = pywt.waverec2(coeffs, "haar")
    coeffs = pywt.wavedec2(pixels, mode, level=dwt_level)
    low = coeffs[0]
    return (low > np.median(low)).reshape(-1)


@register_hasher(
    "whash",
    defaults={"image_scale": None, "mode": "haar", "remove_max_haar_ll": True},
    bits=_whash_bits,
)
def whash(
    images: np.ndarray,
    *,
    hash_size: int = 8,
    image_scale: int | None = None,
    mode: Literal["haar", "db4"] = "haar",
    remove_max_haar_ll: bool = True,
) -> np.ndarray:
    """imagehash.whash: wavelet low band of an image_scale-square gray image above its median.

    For ``mode="haar"`` the low band is a scaled block sum (minus the image mean when
    ``remove_max_haar_ll``), so the comparison is done exactly on integer block sums;
    ties at the median and ``mode="db4"`` use pywt exactly as imagehash does.

    Parameters
    ----------
    images
        uint8 images ``(N, H, W)`` or ``(N, H, W, C)``.
    hash_size
        the hash is ``hash_size**2`` bits (a power of two for ``mode="haar"``).
    image_scale
        side of the gray image the wavelet runs on (``None``: as imagehash, the largest
        power of two not above the smaller image side, at least ``hash_size``); required
        for ``mode="db4"``.
    mode
        the wavelet: ``"haar"`` or ``"db4"``.
    remove_max_haar_ll
        remove the lowest Haar band first (imagehash's default); True or False.

    Returns
    -------
    numpy.ndarray
        the packed hash bits, one row per image (see :func:`pack_bits`).
    """
    checked_mode = check_choice("mode", mode, ["haar", "db4"])
    if not isinstance(remove_max_haar_ll, (bool, np.bool_)):
        raise fail("remove_max_haar_ll", remove_max_haar_ll, "True or False", error=TypeError)
    scale = _whash_scale(images, hash_size, image_scale)
    _whash_bits(hash_size, image_scale, checked_mode)  # checks image_scale is given for non-haar modes
    px = _gray_resized(images, scale, scale)
    n = len(px)
    if checked_mode != "haar":
        bits = np.stack(
            [_whash_exact(px[i], hash_size, scale, checked_mode, bool(remove_max_haar_ll)) for i in range(n)]
        )
        return pack_bits(bits)
    b = scale // hash_size
    sums = px.reshape(n, hash_size, b, hash_size, b).sum(axis=(2, 4), dtype=np.int64).reshape(n, -1)
    v = np.sort(sums, axis=1)
    m = v.shape[1]
    mid = m // 2
    if m % 2 == 0:
        twice_med = v[:, mid - 1] + v[:, mid]
        uncertain = v[:, mid] == v[:, mid - 1]
    else:
        twice_med = 2 * v[:, mid]
        uncertain = (v[:, mid] == v[:, mid - 1]) | (v[:, mid + 1] == v[:, mid])
    bits = 2 * sums > twice_med[:, None]
    for i in np.flatnonzero(uncertain):
        bits[i] = _whash_exact(px[i], hash_size, scale, checked_mode, bool(remove_max_haar_ll))
    return pack_bits(bits)


# --------------------------------------------------------------------------------------
# public entry points


def hash_chunk(images: Any, method: str = "phash", *, hash_size: int = 8, **params: Any) -> np.ndarray:
    """Hash one chunk of images (uint8 NHWC RGB array or ImageSet) with ``method``.

    The unit of work a distributed engine maps over a pool; :func:`hash_images` calls it
    chunk by chunk. Returns packed hashes (see :func:`pack_bits`).
    """
    arr = _as_images(images)
    hasher, full = _resolve(method, hash_size, params)
    return hasher.func(arr, **full)


def iter_chunks(images: Any, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[np.ndarray]:
    """Consecutive chunks of at most ``chunk_size`` images (views, not copies)."""
    arr = _as_images(images)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    for start in range(0, len(arr), chunk_size):
        yield arr[start : start + chunk_size]


def hash_images(
    images: Any,
    method: str = "phash",
    *,
    hash_size: int = 8,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    **params: Any,
) -> np.ndarray:
    """Perceptual hashes of every image, bit-identical to imagehash.

    Parameters
    ----------
    images
        uint8 array of shape (N, H, W, 3) (RGB), or an ImageSet.
    method
        one of :func:`list_hashers`: ``ahash``, ``dhash``, ``dhash_vertical``, ``phash``,
        ``phash_simple``, ``whash``.
    hash_size
        side of the hash grid, as in imagehash (64 bits for 8).
    chunk_size
        images hashed per call of :func:`hash_chunk` (bounds memory for large pools).
    **params
        the hasher's other imagehash parameters (``highfreq_factor``; ``image_scale``,
        ``mode``, ``remove_max_haar_ll``).

    Returns
    -------
    numpy.ndarray
        uint64, shape (N,) for hashes of <= 64 bits, else (N, ceil(bits / 64)); the
        packed integer equals ``int(str(imagehash_value), 16)``.
    """
    arr = _as_images(images)
    hasher, full = _resolve(method, hash_size, params)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    words = _words(int(hasher.bits(**full)))
    out = np.empty((len(arr), words), dtype=np.uint64)
    for start in range(0, len(arr), chunk_size):
        part = hasher.func(arr[start : start + chunk_size], **full)
        out[start : start + len(part)] = part.reshape(len(part), words)
    return _finish(out)


def hash_input_size(
    method: str, width: int, height: int, *, hash_size: int = 8, **params: Any
) -> tuple[int, int]:
    """The ``(width, height)`` imagehash resizes a ``width`` x ``height`` image to for ``method``.

    imagehash's rules: ``ahash`` (s, s); ``dhash`` (s + 1, s); ``dhash_vertical`` (s, s + 1);
    ``phash``/``phash_simple`` (s * highfreq_factor) squared; ``whash`` ``image_scale``
    squared, by default the largest power of 2 not above the shorter side (at least s).
    """
    _, full = _resolve(method, hash_size, params)
    s = full["hash_size"]
    if method == "ahash":
        return s, s
    if method == "dhash":
        return s + 1, s
    if method == "dhash_vertical":
        return s, s + 1
    if method in ("phash", "phash_simple"):
        side = s * int(full["highfreq_factor"])
        return side, side
    if method == "whash":
        scale = full["image_scale"]
        if scale is None:
            scale = max(2 ** int(np.log2(min(int(width), int(height)))), s)
        return int(scale), int(scale)
    raise fail(  # a hasher registered later must say how it resizes
        "method", method, "a hasher with a known input size (ahash, dhash, dhash_vertical, phash, phash_simple, whash)"
    )


def hash_pil(images: Iterable[Any], method: str = "phash", *, hash_size: int = 8, **params: Any) -> np.ndarray:
    """Hashes of PIL images of any size and mode, bit-identical to imagehash on each image.

    Each image goes through exactly imagehash's preprocessing, by PIL itself:
    ``image.convert("L").resize(hash_input_size(...), LANCZOS)``; the batched hash rule
    then runs on the small gray images (a gray image repeated to three channels converts
    back to the same gray values, and a resize to its own size is skipped, so the rule
    sees imagehash's pixels). Returns packed hashes as :func:`hash_images` does.
    """
    from PIL import Image

    hasher, full = _resolve(method, hash_size, params)
    extra = {k: v for k, v in full.items() if k != "hash_size"}
    words = _words(int(hasher.bits(**full)))
    small: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    n = 0
    for i, im in enumerate(images):
        if not isinstance(im, Image.Image):
            raise fail(f"images[{i}]", type(im).__name__, "a PIL.Image.Image", error=TypeError)
        size = hash_input_size(method, im.width, im.height, hash_size=full["hash_size"], **extra)
        px = np.asarray(im.convert("L").resize(size, Image.Resampling.LANCZOS))
        small.setdefault(size, []).append((i, px))
        n = i + 1
    if n == 0:
        raise fail("images", [], "non-empty (at least one image)")
    out = np.empty((n, words), dtype=np.uint64)
    for group in small.values():
        pos = np.array([i for i, _ in group], dtype=np.int64)
        gray = np.stack([px for _, px in group])
        rgb = np.repeat(gray[..., None], 3, axis=3)
        out[pos] = hasher.func(rgb, **full).reshape(len(pos), words)
    return _finish(out)


# --------------------------------------------------------------------------------------
# stored hashes


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    from replicate._version import __version__

    out: dict[str, str | None] = {"replicate": __version__}
    for pkg in ("Pillow", "ImageHash"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


@dataclass(frozen=True, eq=False)
class Hashes:
    """Packed perceptual hashes of an image set, with what made them.

    ``values`` is uint64 (N,) or (N, W); ``ids`` the image ids (str); ``method`` and
    ``params`` (``hash_size`` included) name the hasher; ``versions`` the package
    versions that affect the bits (replicate, Pillow, ImageHash).
    """

    values: np.ndarray
    ids: np.ndarray
    method: str
    params: dict[str, Any]
    versions: dict[str, str | None] = field(default_factory=_versions)

    def __post_init__(self) -> None:
        values = np.asarray(self.values)
        if values.dtype != np.uint64 or values.ndim not in (1, 2):
            raise fail("values", values, "a uint64 array of shape (N,) or (N, W)", error=TypeError)
        ids = np.asarray(self.ids).astype(str)
        if len(ids) != len(values):
            raise fail("ids", ids, f"of length {len(values)} (one id per hash)")
        check_choice("method", self.method, list_hashers())
        if _words(self.bits) != (1 if values.ndim == 1 else values.shape[1]):
            raise fail("values", values, f"{_words(self.bits)} uint64 word(s) per hash for {self.bits} bits")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "params", dict(self.params))

    def __len__(self) -> int:
        return len(self.values)

    @property
    def bits(self) -> int:
        """Bits per hash."""
        return int(HASHERS[self.method].bits(**self.params))

    def to_hex(self) -> list[str]:
        """imagehash's hex string of every hash."""
        return hashes_to_hex(self.values, self.bits)

    @classmethod
    def from_hex(
        cls,
        hexes: Iterable[str],
        ids: Iterable[str],
        method: str = "phash",
        params: dict[str, Any] | None = None,
        versions: dict[str, str | None] | None = None,
    ) -> Hashes:
        """Hashes from imagehash hex strings (e.g. ``str(imagehash.phash(img))``).

        Parameters
        ----------
        hexes
            the hex strings, one per image, each of the method's bit length.
        ids
            the image ids, in the same order.
        method
            the hash method the strings came from (``"phash"`` by default).
        params
            the method's parameters (``hash_size`` defaults to 8; ``None``: the defaults).
        versions
            library versions to record (``None``: those installed here).
        """
        hasher, full = _resolve(
            method,
            (params or {}).get("hash_size", 8),
            {k: v for k, v in (params or {}).items() if k != "hash_size"},
        )
        values = hashes_from_hex(hexes, int(hasher.bits(**full)))
        return cls(
            values, np.asarray(list(ids)), method, full, versions if versions is not None else _versions()
        )

    def check_compatible(self, other: Hashes, name: str = "other") -> None:
        """Raise ValueError unless ``other`` was made with the same hasher and parameters."""
        check_compatible(self, other, name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hashes):
            return NotImplemented
        return (
            self.method == other.method
            and self.params == other.params
            and np.array_equal(self.values, other.values)
            and np.array_equal(self.ids, other.ids)
        )

    __hash__ = None  # type: ignore[assignment]

    def meta(self) -> dict[str, Any]:
        """JSON-safe description: method, params, bits, count, versions."""
        return {
            "method": self.method,
            "params": self.params,
            "bits": self.bits,
            "n": len(self),
            "versions": self.versions,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: the metadata plus ids and hex strings."""
        return {**self.meta(), "ids": self.ids.tolist(), "hex": self.to_hex()}

    def summary(self) -> str:
        """One paragraph of text."""
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        vers = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        return f"{len(self)} {self.method} hashes ({self.bits} bits; {params}); made with {vers}"

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``values`` and ``ids`` with the metadata (JSON) into one ``.npz`` file."""
        p = Path(path)
        if p.suffix != ".npz":
            p = p.with_name(p.name + ".npz")
        if p.exists() and not overwrite:
            raise fail(
                "path",
                str(p),
                "a path that does not exist yet",
                "Pass overwrite=True to replace it.",
                error=FileExistsError,
            )
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp.npz")
        np.savez(
            tmp, values=self.values, ids=self.ids, meta=np.array(json.dumps(self.meta(), sort_keys=True))
        )
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Hashes:
        """Read a file written by :meth:`save`."""
        p = Path(path)
        if not p.is_file():
            raise fail("path", str(p), "an existing hashes file (.npz)", error=FileNotFoundError)
        with np.load(p, allow_pickle=False) as z:
            if not {"values", "ids", "meta"} <= set(z.files):
                raise fail("path", str(p), "a file written by Hashes.save (keys values, ids, meta)")
            meta = json.loads(str(z["meta"]))
            return cls(z["values"], z["ids"], meta["method"], meta["params"], meta["versions"])


def check_compatible(a: Hashes, b: Hashes, name: str = "other") -> None:
    """Raise ValueError unless ``a`` and ``b`` were made with the same hasher and parameters."""
    if not isinstance(a, Hashes) or not isinstance(b, Hashes):
        raise fail(name, b, "a Hashes object", error=TypeError)
    if a.method != b.method or a.params != b.params:
        raise fail(
            name,
            f"{b.method} {b.params}",
            f"hashes made with the same hasher and parameters ({a.method} {a.params})",
            "Hash both sets with the same method and parameters before comparing them.",
        )


def hash_set(
    images: Any,
    method: str = "phash",
    *,
    hash_size: int = 8,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    **params: Any,
) -> Hashes:
    """Hash an ImageSet (or array; ids are then "0".."N-1") into a :class:`Hashes`."""
    _, full = _resolve(method, hash_size, params)
    values = hash_images(images, method, hash_size=hash_size, chunk_size=chunk_size, **params)
    ids = getattr(images, "ids", None)
    if ids is None:
        ids = np.arange(len(values)).astype(str)
    return Hashes(values, np.asarray(ids), method, full)
