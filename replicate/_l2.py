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

For natural images most distances need not be computed at all: the default search
first bounds every distance from below by the images' low-frequency DCT coefficients and
computes exact distances only for the references that bound cannot rule out (the pruned
search, below; the same neighbours and counts as the brute-force products).

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
from replicate.hamming import _insert  # the sorted k-smallest insertion (ties keep the earlier index)

__all__ = ["L2Index", "L2Neighbors", "l2_index", "l2_knn", "flatten_pixels", "fastest_exact_product", "PRODUCTS"]

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
        the matrix-product path used (by the brute-force search, and by the pruned one
        for query chunks it searched by brute force).
    exact_share
        the pruned search: the share of all query-reference pairs whose exact distance
        was computed; ``None`` when every pair was (no pruning).
    """

    indices: np.ndarray
    sq_distances: np.ndarray
    within_radius: np.ndarray | None
    radius: float | None
    product: str
    exact_share: float | None = None

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
                _insert(best_i, best_v, i, best_v.shape[1], v, col0 + j)
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


# --------------------------------------------------------------------------------------
# pruned exact search: a low-frequency lower bound, exact distances for the survivors
#
# For any matrix V with orthonormal columns, ||V^T (x - y)|| <= ||x - y||, so the distance
# between two images' projections on a few low-frequency 2-d DCT basis images is a lower
# bound on their pixel distance. Natural images keep most of their energy there, so for
# CIFAR-10 test against train (projection on 366 of 3,072 dimensions) on average about 26
# of the 50,000 references have a lower bound below a query's third-nearest distance
# (measured on 500 test images). The pruned search computes every lower bound with one
# float32 product (366 instead of 3,072 values per image), takes an upper bound U on the
# k-th distance from the exact distances of the k + 7 references with the smallest lower
# bounds, and computes the exact integer distance of every reference whose lower bound,
# less its rounding allowance, is <= max(U, radius^2). No reference outside that set can
# be among the k nearest or within the radius, so the result equals the brute-force one,
# ties included (references are scanned in increasing position).

# Luma / chroma cut-offs of the projection: DCT frequencies (u, v) with u/H + v/W below
# these fractions (20/32 and 12/32 for 32x32 images: 210 + 2 x 78 = 366 dimensions).
_LUMA_CUT = 0.625
_CHROMA_CUT = 0.375
# Pruning pays when the projection is much smaller than the image.
_MAX_PROJECTION_SHARE = 0.25
# A query chunk whose survivors exceed this share of all pairs (data without a
# low-frequency structure, e.g. noise) is searched by brute force instead.
_MAX_SURVIVOR_SHARE = 0.03
_PROBES = 7  # extra references (beyond k) whose exact distances give the upper bound U
# Rounding allowance of the float32 lower bound, relative to (|a| + |b|)^2: the
# projections are formed in float64 and rounded to float32 (error <= 2u (|a|+|b|)^2 in the
# squared distance), and |a|^2 + |b|^2 - 2 a.b over P terms in float32 errs by at most
# (P + 3) u (|a| + |b|)^2 (u = 2^-24): 2.2e-5 for P = 366; the allowance is 4.5x that.
_ROUNDING = 1e-4
_PRUNE_QUERY_CHUNK = 256
_PRUNE_BOUNDS = 1 << 24  # lower bounds held at once (64 MB): fewer queries per chunk against many references
_AUTO_PRUNE_IMAGES = 2048  # prune by default when both sets are at least this large


def _colour_matrix(channels: int) -> np.ndarray | None:
    """Rows: the orthonormal opponent colours (R+G+B)/sqrt 3, (R-B)/sqrt 2, (R-2G+B)/sqrt 6
    (one channel: itself)."""
    if channels == 1:
        return np.ones((1, 1))
    if channels != 3:
        return None
    colour = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=np.float64)
    return colour / np.linalg.norm(colour, axis=1, keepdims=True)


def _projection_mask(height: int, width: int, channels: int) -> np.ndarray | None:
    """Which coefficients of the orthonormal 2-d DCT-II of each opponent colour channel
    the projection keeps (``(H, W, C)`` bool: frequencies ``u/H + v/W`` below the luma
    or chroma cut-off), or ``None`` when the projection would not be much smaller than
    the image or the images are not 1- or 3-channel."""
    if _colour_matrix(channels) is None:
        return None
    u, v = np.meshgrid(np.arange(height) / height, np.arange(width) / width, indexing="ij")
    cuts = [_LUMA_CUT] + [_CHROMA_CUT] * (channels - 1)
    mask = np.stack([u + v < cut for cut in cuts], axis=-1)
    if mask.sum() > _MAX_PROJECTION_SHARE * height * width * channels:
        return None
    return mask


def _project(pixels: np.ndarray, image_shape: tuple[int, int, int], mask: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """The kept coefficients of uint8 ``(N, D)`` rows (centred at 128), in the ``(C, u, v)``
    order of ``mask``'s ``(u, v, C)`` entries: the orthonormal DCT-II along width and
    height (only the frequencies kept) as float64 matrix products (torch), the colour
    rotation of those coefficients (it commutes with the spatial transform), rounded to
    float32."""
    from scipy.fft import dct

    h, w, c = image_shape
    colour = _colour_matrix(c)
    if colour is None:  # pragma: no cover - l2_index checks the channels first
        raise RuntimeError("no colour rotation for these channels")
    used = np.any(mask, axis=2)
    nu, nv = int(np.nonzero(used.any(1))[0].max()) + 1, int(np.nonzero(used.any(0))[0].max()) + 1
    dh_t = torch.from_numpy(dct(np.eye(h), norm="ortho", axis=0)[:nu].T.copy())  # (y, u)
    dw_t = torch.from_numpy(dct(np.eye(w), norm="ortho", axis=0)[:nv].T.copy())  # (x, v)
    col = torch.from_numpy(colour)
    keep = torch.from_numpy(np.ascontiguousarray(np.transpose(mask[:nu, :nv], (2, 0, 1))))
    out = np.empty((len(pixels), int(mask.sum())), dtype=np.float32)
    for s in range(0, len(pixels), chunk):
        x = torch.from_numpy(pixels[s : s + chunk].astype(np.float64)).sub_(128.0)  # a writable copy
        x = x.view(-1, h, w, c).permute(0, 3, 1, 2) @ dw_t  # (n, C, y, v)
        x = (x.transpose(2, 3) @ dh_t).transpose(2, 3)  # (n, C, u, v)
        x = torch.einsum("dc,ncuv->nduv", col, x)
        out[s : s + chunk] = x[:, keep].to(torch.float32).numpy()
    return out


@dataclass(frozen=True, eq=False)
class L2Index:
    """Reference images prepared for the pruned exact search of :func:`l2_knn` (made
    once, searched by many query chunks): the pixels, their low-frequency projection
    (float32), its squared norms and norms. Build with :func:`l2_index`."""

    pixels: np.ndarray
    image_shape: tuple[int, int, int]
    mask: np.ndarray
    projected: torch.Tensor
    projected_sq: torch.Tensor
    norms: np.ndarray

    def __len__(self) -> int:
        return len(self.pixels)


def l2_index(reference: Any) -> L2Index | None:
    """The :class:`L2Index` of uint8 ``(N, H, W, C)`` / ``(N, H, W)`` images (or an
    ImageSet), or ``None`` when pruning cannot pay: the images are flat ``(N, D)``, not
    1- or 3-channel, or so small that the projection is over a quarter of the image."""
    arr = np.asarray(reference.images if hasattr(reference, "images") else reference)
    pixels = np.ascontiguousarray(flatten_pixels(arr))
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or len(arr) == 0:
        return None
    shape = (int(arr.shape[1]), int(arr.shape[2]), int(arr.shape[3]))
    mask = _projection_mask(*shape)
    if mask is None:
        return None
    proj = _project(pixels, shape, mask)
    norms = np.sqrt((proj.astype(np.float64) ** 2).sum(1))
    t = torch.from_numpy(proj)
    return L2Index(pixels, shape, mask, t, (t * t).sum(1), norms)


@numba.njit(cache=True, nogil=True)
def _sq_dist(a, b):  # pragma: no cover - compiled
    """Exact squared L2 distance of two uint8 rows."""
    acc = np.int64(0)
    for t in range(a.shape[0]):
        dv = np.int32(a[t]) - np.int32(b[t])
        acc += dv * dv
    return acc


@numba.njit(parallel=True, cache=True, nogil=True)
def _prune_thresholds(lb, qn, rn, qpix, rpix, row0, within, k, lim, out_thr, out_count):  # pragma: no cover - compiled
    """Per row: the upper bound max(U, lim) and how many references survive it."""
    q, m = lb.shape
    probes = min(k + _PROBES, m - (1 if within else 0))
    for i in numba.prange(q):
        gi = row0 + i
        pv = np.full(probes, np.inf)
        pj = np.full(probes, -1, dtype=np.int64)
        for j in range(m):
            if within and j == gi:
                continue
            v = lb[i, j]
            if v < pv[probes - 1]:
                p = probes - 1
                while p > 0 and pv[p - 1] > v:
                    pv[p] = pv[p - 1]
                    pj[p] = pj[p - 1]
                    p -= 1
                pv[p] = v
                pj[p] = j
        ex = np.empty(probes, dtype=np.int64)
        for p in range(probes):
            ex[p] = _sq_dist(qpix[i], rpix[pj[p]])
        ex.sort()
        thr = max(ex[k - 1], lim)
        out_thr[i] = thr
        cnt = 0
        for j in range(m):
            if within and j == gi:
                continue
            s = qn[i] + rn[j]
            if lb[i, j] - _ROUNDING * s * s <= thr:
                cnt += 1
        out_count[i] = cnt


@numba.njit(parallel=True, cache=True, nogil=True)
def _prune_exact(lb, qn, rn, qpix, rpix, row0, within, thr, lim, best_v, best_i, counts):  # pragma: no cover - compiled
    """Exact distances of the surviving references, merged into the k nearest per row."""
    q, m = lb.shape
    k = best_v.shape[1]
    for i in numba.prange(q):
        gi = row0 + i
        a = qpix[i]
        cnt = 0
        for j in range(m):
            if within and j == gi:
                continue
            s = qn[i] + rn[j]
            if lb[i, j] - _ROUNDING * s * s > thr[i]:
                continue
            acc = _sq_dist(a, rpix[j])
            if acc <= lim:
                cnt += 1
            if acc < best_v[i, k - 1]:
                _insert(best_i, best_v, i, best_v.shape[1], acc, j)
        counts[i] = cnt


def l2_knn(
    query: Any,
    reference: Any = None,
    k: int = 10,
    *,
    radius: float | None = None,
    product: Product = "auto",
    prune: bool | None = None,
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
    prune
        ``True``: the pruned exact search (a low-frequency lower bound, exact distances
        for the references it cannot rule out; the same result, several times faster on
        natural images); ``False``: every distance by matrix products; ``None`` (the
        default): prune when ``reference`` is an :class:`L2Index` or both sets hold at
        least 2,048 images. Images too small or flat ``(N, D)`` rows are never pruned.
        ``reference`` may be an :class:`L2Index` (:func:`l2_index`), built once for many
        query chunks.
    query_chunk, reference_chunk
        block sizes of the matrix products; memory is about ``query_chunk *
        reference_chunk * 4`` bytes plus one int8 copy of each chunk (the pruned search:
        the index, and lower bounds of up to 256 queries against every reference, at most
        2^24 float32 values at a time).
    """
    product_name = check_choice("product", product, PRODUCTS)
    if product_name == "auto":
        product_name = fastest_exact_product()
    k = check_int("k", k, minimum=1)
    query_chunk = check_int("query_chunk", query_chunk, minimum=1)
    reference_chunk = check_int("reference_chunk", reference_chunk, minimum=1)
    if prune is not None and not isinstance(prune, bool):
        raise fail("prune", prune, "True, False or None (prune when it pays)", error=TypeError)
    q = flatten_pixels(query)
    within = reference is None
    index = reference if isinstance(reference, L2Index) else None
    r = q if within else index.pixels if index is not None else flatten_pixels(reference)
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

    lim = -1 if radius is None else int(np.floor(radius * radius + 1e-9))
    if prune is None:
        prune = index is not None or min(len(q), len(r)) >= _AUTO_PRUNE_IMAGES
    if prune and index is None:
        index = l2_index(query if within else reference)
    if prune and index is not None:
        best_i, sq, counts, share = _pruned_knn(q, index, k, within, lim, product_name, query_chunk, reference_chunk)
    else:
        best_i, sq, counts = _brute_knn(q, r, k, 0 if within else None, lim, product_name, query_chunk, reference_chunk)
        share = None
    return L2Neighbors(
        indices=best_i,
        sq_distances=sq,
        within_radius=counts if radius is not None else None,
        radius=radius,
        product=product_name,
        exact_share=share,
    )


def _brute_knn(
    q: np.ndarray, r: np.ndarray, k: int, self_offset: int | None, lim: int, product_name: str,
    query_chunk: int, reference_chunk: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, squared distances, counts within ``lim``) by matrix products of every
    pair. ``self_offset``: within one set, the position in ``r`` of ``q``'s first row
    (each row is then never its own neighbour); ``None`` between sets."""
    n = len(q)
    within = self_offset is not None
    off = self_offset or 0
    best_v = np.full((n, k), np.iinfo(np.int64).max, dtype=np.int64)
    best_i = np.full((n, k), -1, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    q_norm = _sq_norms(q)
    limit = np.full(n, np.iinfo(np.int64).min, dtype=np.int64) if lim < 0 else np.int64(lim) - q_norm
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
            r0 = off + qi * query_chunk
            self_ex = within and not (r0 >= c0 + len(block) or c0 >= r0 + len(q8))
            dots = _dots(q8, rT8, product_name)
            s0 = qi * query_chunk
            _scan(
                dots, nr, c0, r0, self_ex,
                best_v[s0 : s0 + len(q8)], best_i[s0 : s0 + len(q8)],
                limit[s0 : s0 + len(q8)], counts[s0 : s0 + len(q8)],
            )  # fmt: skip
    return best_i, best_v + q_norm[:, None], counts


def _pruned_knn(
    q: np.ndarray, index: L2Index, k: int, within: bool, lim: int, product_name: str,
    query_chunk: int, reference_chunk: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """:func:`_brute_knn`'s result by the pruned search (module notes above), with the
    share of all pairs whose exact distance was computed."""
    n, m = len(q), len(index)
    best_v = np.full((n, k), np.iinfo(np.int64).max, dtype=np.int64)
    best_i = np.full((n, k), -1, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    qpix = np.ascontiguousarray(q)
    proj = torch.from_numpy(_project(qpix, index.image_shape, index.mask))
    qn_all = np.sqrt((proj.numpy().astype(np.float64) ** 2).sum(1))
    exact = 0
    step = max(1, min(_PRUNE_QUERY_CHUNK, _PRUNE_BOUNDS // m))
    for s in range(0, n, step):
        a = proj[s : s + step]
        c = len(a)
        lb = torch.addmm(index.projected_sq.unsqueeze(0), a, index.projected.T, beta=1.0, alpha=-2.0)
        lb.add_((a * a).sum(1, keepdim=True))
        lbn = lb.numpy()
        qn, qp = qn_all[s : s + c], qpix[s : s + c]
        thr = np.empty(c, dtype=np.int64)
        survivors = np.empty(c, dtype=np.int64)
        _prune_thresholds(lbn, qn, index.norms, qp, index.pixels, s, within, k, lim, thr, survivors)
        if survivors.sum() > _MAX_SURVIVOR_SHARE * c * m:  # no low-frequency structure: every pair
            i, d, cnt = _brute_knn(qp, index.pixels, k, s if within else None, lim, product_name,
                                   query_chunk, reference_chunk)
            best_i[s : s + c], best_v[s : s + c], counts[s : s + c] = i, d, cnt
            exact += c * m
            continue
        _prune_exact(lbn, qn, index.norms, qp, index.pixels, s, within, thr, lim,
                     best_v[s : s + c], best_i[s : s + c], counts[s : s + c])
        exact += int(survivors.sum())
    return best_i, best_v, counts, exact / max(1, n * m)


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
