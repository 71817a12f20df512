"""Hamming-distance search over packed hashes: all pairs within a radius, k nearest.

Hashes are uint64 arrays, (N,) for hashes of up to 64 bits or (N, W) for wider ones
(as :func:`replicate.hashing.hash_images` returns them). Two searches:

* exhaustive, blocked: a compiled kernel (XOR + hardware popcount, SIMD over
  references, threads over queries) streams the reference set in cache-sized blocks;
  it never forms an N x M distance matrix. Exact.
* :class:`HammingIndex`: multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012) for
  reference sets of 10^7-10^8 hashes. The bits are split into ``m`` substrings, each
  with a table of its own (a counting sort by substring value); a pair within radius
  ``r`` agrees within ``r // m`` bits on at least one substring, so probing the tables
  around each query finds every match. Candidates are checked with the full distance,
  so the result is exactly the exhaustive one.

Results are sorted by query index, then reference index (then distance for k-NN).
Within one set (``reference=None``) radius pairs are reported once, with ``i < j``, and
k-NN excludes each item itself.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from replicate._validation import check_int, fail

__all__ = ["radius_search", "knn_search", "HammingIndex", "hamming_distance", "as_hash_array"]


@intrinsic
def _popcount(typingctx, x):  # pragma: no cover - compiled
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


# --------------------------------------------------------------------------------------
# input checks


def as_hash_array(values: Any, name: str = "query", *, allow_empty: bool = False) -> np.ndarray:
    """``values`` as a C-contiguous (N, W) uint64 array (accepts (N,) and Hashes)."""
    arr = getattr(values, "values", values)
    if not isinstance(arr, np.ndarray):
        raise fail(name, values, "a uint64 array of packed hashes (N,) or (N, W)", error=TypeError)
    if arr.dtype != np.uint64:
        raise fail(
            name,
            arr,
            "of dtype uint64 (packed hashes)",
            "Use replicate.hashing.hash_images, or convert with x.astype(np.uint64) / view('u8').",
            error=TypeError,
        )
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise fail(name, arr, "of shape (N,) or (N, W) with W >= 1")
    if arr.shape[0] == 0 and not allow_empty:
        raise fail(name, arr, "non-empty (at least one hash)")
    return np.ascontiguousarray(arr)


def _pair(query: Any, reference: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    q = as_hash_array(query, "query")
    if reference is None:
        return q, q, True
    r = as_hash_array(reference, "reference")
    if r.shape[1] != q.shape[1]:
        raise fail(
            "reference",
            r,
            f"hashes of the same width as query ({q.shape[1]} uint64 word(s))",
            "Compare hashes made with the same method and hash_size.",
        )
    if hasattr(query, "check_compatible") and hasattr(reference, "check_compatible"):
        query.check_compatible(reference, "reference")
    return q, r, False


def _check_radius(radius: Any, bits: int) -> int:
    return check_int("radius", radius, minimum=0, maximum=bits)


# --------------------------------------------------------------------------------------
# exhaustive kernels

_REF_BLOCK = 1 << 15  # references per block (256 KiB of 64-bit hashes: stays in L2)
_SUB = 2048  # references per sub-block: count hits with SIMD, scan only sub-blocks that have one


def _threads() -> int:
    import numba

    return max(1, int(numba.get_num_threads()))


def _run_chunks(kernel: Any, nq: int, args: tuple[Any, ...], weights: str = "flat") -> None:
    """Run ``kernel(*args, a, b)`` over query ranges [a, b) on a few threads (nogil kernels)."""
    threads = _threads()
    pieces = max(1, min(nq, 8 * threads))
    if weights == "triangle":
        # within-set radius search: row i scans M - i - 1 references; equal work per piece
        edges = np.unique(np.round(nq * (1 - np.sqrt(1 - np.linspace(0, 1, pieces + 1)))).astype(np.int64))
    else:
        edges = np.unique(np.linspace(0, nq, pieces + 1).astype(np.int64))
    ranges = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    if threads == 1 or len(ranges) == 1:
        for a, b in ranges:
            kernel(*args, a, b)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as ex:
        for _ in ex.map(lambda ab: kernel(*args, ab[0], ab[1]), ranges):
            pass


@njit(nogil=True, cache=True)
def _radius_kernel_1(q, r, radius, starts, cap, out_ref, out_dist, counts, a, b):  # pragma: no cover
    rad = np.uint64(radius)
    nr = r.shape[0]
    for r0 in range(0, nr, _REF_BLOCK):
        r1 = min(nr, r0 + _REF_BLOCK)
        for i in range(a, b):
            qi = q[i]
            c = counts[i]
            j0 = max(r0, starts[i])
            while j0 < r1:
                rb = r[j0 : min(r1, j0 + _SUB)]
                h = 0
                for t in range(rb.shape[0]):
                    h += np.int64(_popcount(qi ^ rb[t]) <= rad)
                if h > 0:
                    for t in range(rb.shape[0]):
                        d = _popcount(qi ^ rb[t])
                        if d <= rad:
                            if c < cap:
                                out_ref[i, c] = j0 + t
                                out_dist[i, c] = d
                            c += 1
                j0 += _SUB
            counts[i] = c


@njit(nogil=True, cache=True)
def _radius_kernel_w(q, rt, radius, starts, cap, out_ref, out_dist, counts, a, b):  # pragma: no cover
    # rt is the reference transposed, (W, M): one SIMD pass per word into a distance buffer
    w = q.shape[1]
    nr = rt.shape[1]
    dist = np.empty(_SUB, dtype=np.int64)
    for r0 in range(0, nr, _REF_BLOCK):
        r1 = min(nr, r0 + _REF_BLOCK)
        for i in range(a, b):
            c = counts[i]
            j0 = max(r0, starts[i])
            while j0 < r1:
                n = min(r1, j0 + _SUB) - j0
                buf = dist[:n]
                for t in range(n):
                    buf[t] = 0
                for k in range(w):
                    qk = q[i, k]
                    col = rt[k, j0 : j0 + n]
                    for t in range(n):
                        buf[t] += np.int64(_popcount(qk ^ col[t]))
                h = 0
                for t in range(n):
                    h += np.int64(buf[t] <= radius)
                if h > 0:
                    for t in range(n):
                        if buf[t] <= radius:
                            if c < cap:
                                out_ref[i, c] = j0 + t
                                out_dist[i, c] = buf[t]
                            c += 1
                j0 += _SUB
            counts[i] = c


def _layout(q: np.ndarray, r: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
    """Kernel inputs: 1-D arrays for one word, else queries (N, W) and references (W, M)."""
    if q.shape[1] == 1:
        return True, np.ascontiguousarray(q[:, 0]), np.ascontiguousarray(r[:, 0])
    return False, q, np.ascontiguousarray(r.T)


def _radius_exhaustive(q: np.ndarray, r: np.ndarray, radius: int, starts: np.ndarray, cap: int):
    nq = len(q)
    out_ref = np.empty((nq, cap), dtype=np.int64)
    out_dist = np.empty((nq, cap), dtype=np.int64)
    counts = np.zeros(nq, dtype=np.int64)
    one, qk, rk = _layout(q, r)
    kernel = _radius_kernel_1 if one else _radius_kernel_w
    within = bool(starts[0] > 0) if len(starts) else False
    _run_chunks(
        kernel, nq, (qk, rk, radius, starts, cap, out_ref, out_dist, counts), "triangle" if within else "flat"
    )
    return out_ref, out_dist, counts


def _collect(out_ref, out_dist, counts, cap):
    take = np.minimum(counts, cap)
    mask = np.arange(cap)[None, :] < take[:, None]
    qi = np.repeat(np.arange(len(counts), dtype=np.int64), take)
    return qi, out_ref[mask], out_dist[mask]


def _radius_blocked(
    q: np.ndarray, r: np.ndarray, radius: int, within: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nq = len(q)
    starts = np.arange(1, nq + 1, dtype=np.int64) if within else np.zeros(nq, dtype=np.int64)
    cap = int(max(4, min(64, (1 << 24) // max(nq, 1))))
    out_ref, out_dist, counts = _radius_exhaustive(q, r, radius, starts, cap)
    qi, ri, dist = _collect(out_ref, out_dist, counts, cap)
    over = np.flatnonzero(counts > cap)
    if len(over):
        # rows with more hits than the buffer held: search them again with room for all
        cap2 = int(counts[over].max())
        o_ref, o_dist, o_counts = _radius_exhaustive(q[over], r, radius, starts[over], cap2)
        keep = ~np.isin(qi, over)
        q2, r2, d2 = _collect(o_ref, o_dist, o_counts, cap2)
        qi = np.concatenate([qi[keep], over[q2]])
        ri = np.concatenate([ri[keep], r2])
        dist = np.concatenate([dist[keep], d2])
        order = np.lexsort((ri, qi))
        qi, ri, dist = qi[order], ri[order], dist[order]
    return qi, ri, dist


def radius_search(
    query: Any,
    reference: Any = None,
    radius: int = 8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of hashes within Hamming distance ``radius`` (exhaustive, exact).

    Parameters
    ----------
    query, reference
        packed hashes, uint64 (N,) or (N, W) (or :class:`replicate.hashing.Hashes`,
        checked to share method and parameters). ``reference=None`` searches within
        ``query`` and reports each pair once, with ``qi < ri``.
    radius
        largest distance reported, 0..64 W.

    Returns
    -------
    (qi, ri, dist)
        int64 arrays: query index, reference index, distance; sorted by (qi, ri).
    """
    q, r, within = _pair(query, reference)
    radius = _check_radius(radius, 64 * q.shape[1])
    return _radius_blocked(q, r, radius, within)


@njit(inline="always")
def _insert(best_idx, best_dist, i, k, d, j):  # pragma: no cover - compiled
    # keep (distance, index) order; an earlier index wins ties (references arrive in order)
    p = k - 1
    while p > 0 and best_dist[i, p - 1] > d:
        best_dist[i, p] = best_dist[i, p - 1]
        best_idx[i, p] = best_idx[i, p - 1]
        p -= 1
    best_dist[i, p] = d
    best_idx[i, p] = j


@njit(nogil=True, cache=True)
def _knn_kernel_1(q, r, k, within, best_idx, best_dist, a, b):  # pragma: no cover
    nr = r.shape[0]
    for r0 in range(0, nr, _REF_BLOCK):
        r1 = min(nr, r0 + _REF_BLOCK)
        for i in range(a, b):
            qi = q[i]
            worst = np.uint64(best_dist[i, k - 1])
            j0 = r0
            while j0 < r1:
                rb = r[j0 : min(r1, j0 + _SUB)]
                h = 0
                for t in range(rb.shape[0]):
                    h += np.int64(_popcount(qi ^ rb[t]) < worst)
                if h > 0:
                    for t in range(rb.shape[0]):
                        d = _popcount(qi ^ rb[t])
                        if d < worst and not (within and j0 + t == i):
                            _insert(best_idx, best_dist, i, k, np.int64(d), j0 + t)
                            worst = np.uint64(best_dist[i, k - 1])
                j0 += _SUB


@njit(nogil=True, cache=True)
def _knn_kernel_w(q, rt, k, within, best_idx, best_dist, a, b):  # pragma: no cover
    w = q.shape[1]
    nr = rt.shape[1]
    dist = np.empty(_SUB, dtype=np.int64)
    for r0 in range(0, nr, _REF_BLOCK):
        r1 = min(nr, r0 + _REF_BLOCK)
        for i in range(a, b):
            worst = best_dist[i, k - 1]
            j0 = r0
            while j0 < r1:
                n = min(r1, j0 + _SUB) - j0
                buf = dist[:n]
                for t in range(n):
                    buf[t] = 0
                for kk in range(w):
                    qk = q[i, kk]
                    col = rt[kk, j0 : j0 + n]
                    for t in range(n):
                        buf[t] += np.int64(_popcount(qk ^ col[t]))
                h = 0
                for t in range(n):
                    h += np.int64(buf[t] < worst)
                if h > 0:
                    for t in range(n):
                        d = buf[t]
                        if d < worst and not (within and j0 + t == i):
                            _insert(best_idx, best_dist, i, k, d, j0 + t)
                            worst = best_dist[i, k - 1]
                j0 += _SUB


def knn_search(query: Any, reference: Any = None, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest reference hashes of every query (exhaustive, exact).

    Ties in distance go to the lower reference index. ``reference=None`` searches
    within ``query``, excluding each hash itself.

    Returns
    -------
    (indices, distances)
        int64 arrays of shape (N, k), nearest first.
    """
    q, r, within = _pair(query, reference)
    available = len(r) - 1 if within else len(r)
    k = check_int("k", k, minimum=1)
    if k > available:
        raise fail(
            "k",
            k,
            f"<= {available} (the number of reference hashes{' other than the query itself' if within else ''})",
            "Ask for fewer neighbours.",
        )
    nq = len(q)
    best_idx = np.full((nq, k), -1, dtype=np.int64)
    best_dist = np.full((nq, k), 64 * q.shape[1] + 1, dtype=np.int64)
    one, qk, rk = _layout(q, r)
    kernel = _knn_kernel_1 if one else _knn_kernel_w
    _run_chunks(kernel, nq, (qk, rk, k, within, best_idx, best_dist))
    return best_idx, best_dist


def hamming_distance(a: Any, b: Any) -> np.ndarray:
    """Element-wise Hamming distance of two equally long hash arrays (int64)."""
    x = as_hash_array(a, "a", allow_empty=True)
    y = as_hash_array(b, "b", allow_empty=True)
    if x.shape != y.shape:
        raise fail("b", y, f"of the same shape as a {x.shape}")
    return np.bitwise_count(x ^ y).sum(axis=1).astype(np.int64)


# --------------------------------------------------------------------------------------
# multi-index hashing


@njit(inline="always")
def _extract(row, start, length):  # pragma: no cover - compiled
    """``length`` (<= 32) bits of a (W,) uint64 row from global bit ``start`` (0 = MSB of word 0)."""
    w = start // 64
    o = start % 64
    mask = (np.uint64(1) << np.uint64(length)) - np.uint64(1)
    if o + length <= 64:
        return (row[w] >> np.uint64(64 - o - length)) & mask
    hi_len = 64 - o
    lo_len = length - hi_len
    hi = row[w] & ((np.uint64(1) << np.uint64(hi_len)) - np.uint64(1))
    lo = row[w + 1] >> np.uint64(64 - lo_len)
    return ((hi << np.uint64(lo_len)) | lo) & mask


@njit(nogil=True, cache=True)
def _build_table(values, start, length, order, offsets):  # pragma: no cover - compiled
    n = values.shape[0]
    nb = offsets.shape[0] - 1
    counts = np.zeros(nb + 1, dtype=np.int64)
    for i in range(n):
        counts[_extract(values[i], start, length) + 1] += 1
    for b in range(nb):
        counts[b + 1] += counts[b]
    for b in range(nb + 1):
        offsets[b] = counts[b]
    for i in range(n):
        key = _extract(values[i], start, length)
        order[counts[key]] = i
        counts[key] += 1


@njit(nogil=True, cache=True)
def _gather(values, order, out):  # pragma: no cover - compiled
    for i in range(order.shape[0]):
        for k in range(values.shape[1]):
            out[i, k] = values[order[i], k]


@njit(parallel=True, cache=True)
def _mih_query(
    q,
    ids,
    within,
    starts,
    lengths,
    radii,
    radius,
    tables_order,
    tables_values,
    tables_offsets,
    cap,
    out_ref,
    out_dist,
    counts,
):  # pragma: no cover
    # within one set, ids[i] is the query's own position: only later positions are reported
    nq, w = q.shape
    m = starts.shape[0]
    for i in prange(nq):
        c = 0
        me = ids[i]
        flips = np.empty(64, dtype=np.int64)
        for t in range(m):
            rt = radii[t]
            if rt < 0:
                continue
            length = lengths[t]
            key = _extract(q[i], starts[t], length)
            order = tables_order[t]
            vals = tables_values[t]
            offs = tables_offsets[t]
            for s in range(rt + 1):
                # every combination of s bit flips, in lexicographic order
                for a in range(s):
                    flips[a] = a
                while True:
                    probe = key
                    for a in range(s):
                        probe ^= np.uint64(1) << np.uint64(flips[a])
                    for p in range(offs[probe], offs[probe + 1]):
                        j = np.int64(order[p])
                        if within and j <= me:
                            continue
                        d = 0
                        for kk in range(w):
                            d += _popcount(q[i, kk] ^ vals[p, kk])
                        if d > radius:
                            continue
                        # report once: skip if an earlier table already found it
                        seen = False
                        for t2 in range(t):
                            if radii[t2] >= 0:
                                ds = _popcount(
                                    _extract(q[i], starts[t2], lengths[t2])
                                    ^ _extract(vals[p], starts[t2], lengths[t2])
                                )
                                if ds <= radii[t2]:
                                    seen = True
                                    break
                        if seen:
                            continue
                        if c < cap:
                            out_ref[i, c] = j
                            out_dist[i, c] = d
                        c += 1
                    # next combination
                    a = s - 1
                    while a >= 0 and flips[a] == length - s + a:
                        a -= 1
                    if a < 0:
                        break
                    flips[a] += 1
                    for b in range(a + 1, s):
                        flips[b] = flips[b - 1] + 1
        counts[i] = c


class HammingIndex:
    """A multi-index hashing table over reference hashes for sub-linear radius search.

    ``HammingIndex(reference).radius_search(query, radius)`` returns exactly what
    :func:`radius_search` returns, probing only the table buckets within ``radius // m``
    bits of each query substring instead of scanning every reference.

    Parameters
    ----------
    reference
        packed hashes, uint64 (N,) or (N, W).
    bits
        the hash length in bits (default 64 W; e.g. 36 for ``hash_size=6``).
    substrings
        number of tables ``m``; default ``max(ceil(bits / log2 N), ceil(bits / 24))``,
        so buckets hold about one hash and no table has more than 2^24 buckets.

    Memory: each table holds the reordered hashes and a permutation (8 W + 4 bytes per
    hash, 8 W + 8 above 2^32 hashes) plus 8 bytes per bucket.
    """

    def __init__(self, reference: Any, *, bits: int | None = None, substrings: int | None = None) -> None:
        r = as_hash_array(reference, "reference")
        self.reference = r
        self.width = r.shape[1]
        self.bits = check_int(
            "bits", 64 * self.width if bits is None else bits, minimum=1, maximum=64 * self.width
        )
        n = len(r)
        if substrings is None:
            m = max(math.ceil(self.bits / max(math.log2(max(n, 2)), 1.0)), math.ceil(self.bits / 24))
        else:
            m = check_int("substrings", substrings, minimum=1, maximum=self.bits)
            if math.ceil(self.bits / m) > 28:
                raise fail("substrings", m, f">= {math.ceil(self.bits / 28)} (at most 28 bits per table)")
        m = min(m, self.bits)
        self.m = m
        base, extra = divmod(self.bits, m)
        self.lengths = np.array([base + (1 if t < extra else 0) for t in range(m)], dtype=np.int64)
        offset = 64 * self.width - self.bits
        self.starts = offset + np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        idx_dtype = np.uint32 if n < (1 << 32) else np.int64

        def build(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            # a counting sort by substring t; the tables are built on parallel threads
            order = np.empty(n, dtype=np.int64)
            offsets = np.empty((1 << int(self.lengths[t])) + 1, dtype=np.int64)
            _build_table(r, int(self.starts[t]), int(self.lengths[t]), order, offsets)
            vals = np.empty_like(r)
            _gather(r, order, vals)
            return order.astype(idx_dtype), vals, offsets

        threads = min(_threads(), m)
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads) as ex:
                tables = list(ex.map(build, range(m)))
        else:
            tables = [build(t) for t in range(m)]
        self._orders = [t[0] for t in tables]
        self._values = [t[1] for t in tables]
        self._offsets = [t[2] for t in tables]

    def __len__(self) -> int:
        return len(self.reference)

    def _radii(self, radius: int) -> np.ndarray:
        # pigeonhole (Norouzi et al.): the first (radius mod m) + 1 tables at radius // m,
        # the others at radius // m - 1 (negative: not probed)
        f, rem = divmod(radius, self.m)
        return np.array([f if t <= rem else f - 1 for t in range(self.m)], dtype=np.int64)

    def probe_cost(self, radius: int) -> float:
        """Expected candidates per query (buckets probed x mean bucket size)."""
        radii = self._radii(radius)
        cost = 0.0
        for length, rt in zip(self.lengths, radii):
            if rt >= 0:
                keys = sum(math.comb(int(length), s) for s in range(int(rt) + 1))
                cost += keys * (1.0 + len(self) / 2.0 ** int(length))
        return cost

    def radius_search(self, query: Any = None, radius: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query, reference) pairs within ``radius``; same output as :func:`radius_search`.

        ``query=None`` searches within the indexed set (pairs ``qi < ri``). Where probing
        would touch more candidates than a scan, the exhaustive kernel is used instead.
        """
        within = query is None
        q = self.reference if within else as_hash_array(query, "query")
        if q.shape[1] != self.width:
            raise fail("query", q, f"hashes of the indexed width ({self.width} uint64 word(s))")
        radius = _check_radius(radius, self.bits)
        if self.probe_cost(radius) > 0.25 * len(self):
            return _radius_blocked(q, self.reference, radius, within)
        radii = self._radii(radius)
        nq = len(q)
        cap = int(max(4, min(64, (1 << 24) // nq)))
        from numba.typed import List

        orders = List(self._orders)
        values = List(self._values)
        offsets = List(self._offsets)

        def run(qq: np.ndarray, ids: np.ndarray, cap: int):
            out_ref = np.empty((len(qq), cap), dtype=np.int64)
            out_dist = np.empty((len(qq), cap), dtype=np.int64)
            counts = np.zeros(len(qq), dtype=np.int64)
            _mih_query(
                qq,
                ids,
                within,
                self.starts,
                self.lengths,
                radii,
                radius,
                orders,
                values,
                offsets,
                cap,
                out_ref,
                out_dist,
                counts,
            )
            return out_ref, out_dist, counts

        ids = np.arange(nq, dtype=np.int64)
        out_ref, out_dist, counts = run(q, ids, cap)
        qi, ri, dist = _collect(out_ref, out_dist, counts, cap)
        over = np.flatnonzero(counts > cap)
        if len(over):
            cap2 = int(counts[over].max())
            o_ref, o_dist, o_counts = run(q[over], over.astype(np.int64), cap2)
            keep = ~np.isin(qi, over)
            q2, r2, d2 = _collect(o_ref, o_dist, o_counts, cap2)
            qi = np.concatenate([qi[keep], over[q2]])
            ri = np.concatenate([ri[keep], r2])
            dist = np.concatenate([dist[keep], d2])
        order = np.lexsort((ri, qi))
        return qi[order], ri[order], dist[order]
