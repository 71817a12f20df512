"""Exact pixel-space L2 nearest neighbours between image sets, chunk by chunk.

Squared L2 distances between uint8 images are integers, so replicate computes them
exactly: pixels are shifted to int8 (``x - 128``, which leaves every difference
unchanged), the cross terms come from int8 x int8 -> int32 matrix products
(``torch._int_mm``, about 4x the speed of float32 products on CPUs with VNNI), and

    ||q - r||^2 = ||q||^2 + ||r||^2 - 2 q.r

is formed in integer arithmetic. A compiled (numba) scan fuses that formula with the
running k-smallest selection, so the full ``N x M`` distance matrix never exists: only
one ``query_chunk x reference_chunk`` block of dot products at a time.

Ties are broken by the lower reference position, so the result does not depend on the
chunk sizes. Within one set (``reference=None``) an image is never its own neighbour;
other images with identical pixels are (distance 0).

Two more product paths exist for machines without fast int8 products:
``"float32-exact"`` splits the pixel axis into blocks of 1024 values, for which every
partial sum of ``(x - 128)(y - 128)`` is an integer below 2**24 and therefore exact in
float32, and ``"float32"`` is the plain single float32 product (inexact when the dot
products exceed 2**24; kept as the speed baseline).

The default, ``"auto"``, takes the faster of the two exact paths on this machine, timed
once per process on a small block (about 0.2 s at worst). Both give the same distances
and neighbours, so the choice changes the speed only: ``torch._int_mm`` is several times
faster than float32 where the CPU has int8 dot-product instructions (AVX512-VNNI,
AVX-VNNI, AMX), and about 40x slower on a CPU with AVX2 alone, where it falls back to a
reference kernel (measured on a 2-core AVX2 EPYC: 175 M multiply-adds/s vs 7.6 G/s for
float32).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any, Literal

import numba
import numpy as np
import torch

from replicate._validation import check_choice, check_int, fail

__all__ = ["L2Neighbors", "l2_knn", "flatten_pixels", "fastest_exact_product", "PRODUCTS"]

Product = Literal["auto", "int8", "float32-exact", "float32"]
PRODUCTS: tuple[str, ...] = ("auto", "int8", "float32-exact", "float32")

_INT32_MAX = np.iinfo(np.int32).max
# int8 x int8 dot products stay below 2**31 while D * 128 * 128 < 2**31.
_MAX_INT_DIM = (2**31 - 1) // (128 * 128)
# float32 holds every integer up to 2**24 exactly: 1024 products of at most 128*128.
_EXACT_F32_BLOCK = 1024


@dataclass(frozen=True)
class L2Neighbors:
    """The k nearest references of each query in pixel L2, with exact distances.

    Attributes
    ----------
    indices
        ``(N, k)`` int64 reference positions, nearest first (ties: lower position first).
    sq_distances
        ``(N, k)`` int64 exact squared L2 distances (sum over pixels and channels of
        squared uint8 differences).
    within_radius
        ``(N,)`` int64 number of references within ``radius`` of each query (all of
        them, not only the k listed); ``None`` when no radius was given.
    radius
        the radius used (plain L2, not squared), or ``None``.
    product
        the matrix-product path used.
    """

    indices: np.ndarray
    sq_distances: np.ndarray
    within_radius: np.ndarray | None
    radius: float | None
    product: str

    @property
    def distances(self) -> np.ndarray:
        """L2 distances (square roots of the exact squared distances), float64."""
        return np.sqrt(self.sq_distances.astype(np.float64))


def flatten_pixels(images: Any) -> np.ndarray:
    """A uint8 ``(N, D)`` view (or copy) of NHWC images or of an ImageSet's images."""
    arr = images.images if hasattr(images, "images") else images
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise fail("images.dtype", str(arr.dtype), "uint8", "Pass uint8 pixels (0-255).", error=TypeError)
    if arr.ndim < 2:
        raise fail("images.shape", arr.shape, "(N, H, W, C) or (N, D)")
    return arr.reshape(len(arr), int(np.prod(arr.shape[1:])))


@numba.njit(parallel=True, cache=True, nogil=True)
def _scan(dots, nr, col0, row0, self_exclude, best_v, best_i, limit, counts):  # pragma: no cover - compiled
    """Merge one block of dot products into the running k smallest per row.

    value = nr[j] - 2 * dots[i, j] (the squared distance minus the row's constant norm).
    Columns are scanned in increasing global position and only strictly smaller values
    are inserted, so ties keep the lower position.
    """
    q, r = dots.shape
    k = best_v.shape[1]
    for i in numba.prange(q):
        worst = best_v[i, k - 1]
        lim = limit[i]
        cnt = 0
        gi = row0 + i
        for j in range(r):
            v = np.int64(nr[j]) - 2 * np.int64(dots[i, j])
            if v <= lim:
                if self_exclude and col0 + j == gi:
                    continue
                cnt += 1
            if v < worst:
                if self_exclude and col0 + j == gi:
                    continue
                p = k - 1
                while p > 0 and best_v[i, p - 1] > v:
                    best_v[i, p] = best_v[i, p - 1]
                    best_i[i, p] = best_i[i, p - 1]
                    p -= 1
                best_v[i, p] = v
                best_i[i, p] = col0 + j
                worst = best_v[i, k - 1]
        counts[i] += cnt


def _shifted(block: np.ndarray) -> torch.Tensor:
    """uint8 -> int8 ``x - 128`` (an XOR of the sign bit), as a torch tensor."""
    arr = block if block.flags.writeable and block.flags.c_contiguous else np.array(block, copy=True)
    t = torch.from_numpy(arr)
    return t.view(torch.int8) ^ -128


@functools.cache  # the "auto" choice of this process: timed once
def fastest_exact_product() -> str:
    """``"int8"`` or ``"float32-exact"``: whichever runs a small block faster here.

    Timed once per process on one thread (a busy machine then delays both alike, where
    with several threads one descheduled thread stalls the float32 product), alternating
    the two, best of five each; int8 must win by a clear margin (0.8x the float32 time).
    """
    gen = torch.Generator().manual_seed(0)
    q8 = torch.randint(-128, 128, (128, 1024), dtype=torch.int8, generator=gen)
    rT8 = torch.randint(-128, 128, (1024, 256), dtype=torch.int8, generator=gen)
    best = {"int8": float("inf"), "float32-exact": float("inf")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(5):
            for name in best:
                t = time.perf_counter()
                _dots(q8, rT8, name)
                best[name] = min(best[name], time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    return "int8" if best["int8"] < 0.8 * best["float32-exact"] else "float32-exact"


def _dots(q8: torch.Tensor, rT8: torch.Tensor, product: str) -> np.ndarray:
    if product == "int8":
        return torch._int_mm(q8, rT8).numpy()
    qf = q8 if q8.dtype == torch.float32 else q8.to(torch.float32)  # l2_knn converts each chunk once
    rf = rT8 if rT8.dtype == torch.float32 else rT8.to(torch.float32)
    if product == "float32":
        return (qf @ rf).numpy()
    d = q8.shape[1]
    out = None
    for s in range(0, d, _EXACT_F32_BLOCK):
        part = (qf[:, s : s + _EXACT_F32_BLOCK] @ rf[s : s + _EXACT_F32_BLOCK]).to(torch.int32)
        out = part if out is None else out.add_(part)
    if out is None:  # pragma: no cover - d >= 1 is checked by the caller
        raise RuntimeError("no pixel columns to multiply")
    return out.numpy()


def l2_knn(
    query: Any,
    reference: Any = None,
    k: int = 10,
    *,
    radius: float | None = None,
    product: Product = "auto",
    query_chunk: int = 2048,
    reference_chunk: int = 4096,
) -> L2Neighbors:
    """The ``k`` nearest references of every query image in pixel L2, exactly.

    Parameters
    ----------
    query, reference
        uint8 images ``(N, H, W, C)`` (or ``(N, D)``, or ImageSets) of the same size.
        ``reference=None`` searches within ``query``, excluding each image itself.
    k
        neighbours per query; at most the number of references (minus one within a set).
    radius
        also count, per query, every reference within this L2 distance (exactly, not
        only among the k nearest), so callers can tell when k was too small.
    product
        ``"auto"`` (the faster exact path here: :func:`fastest_exact_product`),
        ``"int8"`` (exact, fastest on CPUs with int8 dot products), ``"float32-exact"`` (exact, blocked float32
        products) or ``"float32"`` (plain float32 products: distances may be off by a
        few units; a speed baseline).
    query_chunk, reference_chunk
        block sizes; memory is about ``query_chunk * reference_chunk * 4`` bytes plus
        one int8 copy of each chunk.
    """
    product_name = check_choice("product", product, PRODUCTS)
    if product_name == "auto":
        product_name = fastest_exact_product()
    k = check_int("k", k, minimum=1)
    query_chunk = check_int("query_chunk", query_chunk, minimum=1)
    reference_chunk = check_int("reference_chunk", reference_chunk, minimum=1)
    q = flatten_pixels(query)
    within = reference is None
    r = q if within else flatten_pixels(reference)
    if len(q) == 0:
        raise fail("query", "an empty set", "at least one image")
    if len(r) == 0:
        raise fail("reference", "an empty set", "at least one image")
    if q.shape[1] != r.shape[1]:
        raise fail(
            "values per reference image",
            r.shape[1],
            f"{q.shape[1]} (the query's: images must have one size)",
            "Resize both sets to one size before comparing pixels.",
        )
    if product_name != "float32" and q.shape[1] > _MAX_INT_DIM:
        raise fail(
            "values per image",
            q.shape[1],
            f"<= {_MAX_INT_DIM} for exact int32 dot products",
            "Downsample the images (e.g. to 64x64) before a pixel search.",
        )
    available = len(r) - 1 if within else len(r)
    if k > available:
        raise fail("k", k, f"<= {available} (the number of {'other images' if within else 'references'})")
    if radius is not None:
        radius = float(radius)
        if not np.isfinite(radius) or radius < 0:
            raise fail("radius", radius, "a finite number >= 0")

    n = len(q)
    best_v = np.full((n, k), np.iinfo(np.int64).max, dtype=np.int64)
    best_i = np.full((n, k), -1, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    q_norm = _sq_norms(q)
    if radius is None:
        limit = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    else:
        limit = np.int64(np.floor(radius * radius + 1e-9)) - q_norm
    as_float = product_name != "int8"  # the float paths multiply float32 copies (made once per chunk)
    q8_all = [_shifted(q[s : s + query_chunk]) for s in range(0, n, query_chunk)]
    if as_float:
        q8_all = [t.to(torch.float32) for t in q8_all]
    for c0 in range(0, len(r), reference_chunk):
        block = r[c0 : c0 + reference_chunk]
        rT8 = _shifted(block).T.contiguous()
        if as_float:
            rT8 = rT8.to(torch.float32)
        nr = _sq_norms(block)
        for qi, q8 in enumerate(q8_all):
            r0 = qi * query_chunk
            if within and (r0 >= c0 + len(block) or c0 >= r0 + len(q8)):
                self_ex = False
            else:
                self_ex = within
            dots = _dots(q8, rT8, product_name)
            _scan(
                dots, nr, c0, r0, self_ex,
                best_v[r0 : r0 + len(q8)], best_i[r0 : r0 + len(q8)],
                limit[r0 : r0 + len(q8)], counts[r0 : r0 + len(q8)],
            )  # fmt: skip
    sq = best_v + q_norm[:, None]
    return L2Neighbors(
        indices=best_i,
        sq_distances=sq,
        within_radius=counts if radius is not None else None,
        radius=radius,
        product=product_name,
    )


def _sq_norms(x: np.ndarray) -> np.ndarray:
    """Squared norms of the int8-shifted rows ``x - 128``, int64 (exact)."""
    return _sq_norms_kernel(np.ascontiguousarray(x))


@numba.njit(parallel=True, cache=True, nogil=True)
def _sq_norms_kernel(x):  # pragma: no cover - compiled
    out = np.empty(x.shape[0], dtype=np.int64)
    for i in numba.prange(x.shape[0]):
        acc = 0
        for j in range(x.shape[1]):
            v = np.int64(x[i, j]) - 128
            acc += v * v
        out[i] = acc
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _paired_sq_kernel(x, y, xi, yi):  # pragma: no cover - compiled
    out = np.empty(xi.shape[0], dtype=np.int64)
    for p in numba.prange(xi.shape[0]):
        a = x[xi[p]]
        b = y[yi[p]]
        acc = 0
        for j in range(x.shape[1]):
            v = np.int64(a[j]) - np.int64(b[j])
            acc += v * v
        out[p] = acc
    return out


def l2_sq_distances(a: Any, b: Any) -> np.ndarray:
    """Exact squared L2 distances between paired rows ``a[i]`` and ``b[i]`` (int64)."""
    x = flatten_pixels(a)
    y = flatten_pixels(b)
    if x.shape != y.shape:
        raise fail("b.shape", y.shape, f"{x.shape} (the shape of a)")
    idx = np.arange(len(x), dtype=np.int64)
    return l2_sq_distances_at(x, y, idx, idx)


def l2_sq_distances_at(a: Any, b: Any, ai: np.ndarray, bi: np.ndarray) -> np.ndarray:
    """Exact squared L2 distances between ``a[ai[p]]`` and ``b[bi[p]]`` for each p (int64).

    A compiled loop over the pairs reads the rows in place, so no gathered copy of the
    images is made (the detector's candidate tables hold tens of pairs per query).
    """
    x = np.ascontiguousarray(flatten_pixels(a))
    y = np.ascontiguousarray(flatten_pixels(b))
    if x.shape[1:] != y.shape[1:]:
        raise fail("b.shape", y.shape, f"(N, {x.shape[1]}) (the values per image of a)")
    ai = np.asarray(ai, dtype=np.int64)
    bi = np.asarray(bi, dtype=np.int64)
    if ai.shape != bi.shape:
        raise fail("bi.shape", bi.shape, f"{ai.shape} (the shape of ai)")
    if len(ai) == 0:
        return np.zeros(0, dtype=np.int64)
    for name, ix, n in (("ai", ai, len(x)), ("bi", bi, len(y))):
        bad = ix[(ix < 0) | (ix >= n)]
        if len(bad):
            raise fail(f"{name} (a position)", int(bad[0]), f"within 0..{n - 1} (the rows of {name[0]})")
    return _paired_sq_kernel(x, y, ai, bi)
