"""Signatures and distances of the near-duplicate detector: tiny thumbnails, aligned
(shifted, zoomed) grayscale windows, high-pass edge windows, the coarse windows of
:func:`window_knn`, and the grouped products that score many pairs at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from replicate._validation import fail

_PAIR_BATCH = 8192
_ALIGN_BATCH = 1024


# --------------------------------------------------------------------------------------
# signatures


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(dim=1, keepdim=True)  # a new tensor: the division below can write into it
    return x.div_(x.norm(dim=1, keepdim=True).clamp_min(1e-6))


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

    Parameters
    ----------
    a, b
        paired uint8 NHWC images of one shape; ``a`` is shifted and zoomed.
    max_shift
        the largest shift in pixels, each direction (below half the image side).
    scales
        the zooms of ``a``.
    batch
        pairs compared at once (bounds memory).

    Returns
    -------
    numpy.ndarray
        one distance per pair, 0 for the same picture, about 1 or above for unrelated ones.
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

    A query's score against a reference is the best cosine between any of its coarse
    windows (:func:`_coarse_windows`: 3 x 3 shifts x the zooms) and the reference's centre
    window. Scores are formed for ``chunk`` queries against ``block`` references at a time
    and reduced over the windows at once, so each block stays in cache (2.2x faster than
    one block over all references).

    Parameters
    ----------
    query
        uint8 NHWC images.
    reference
        their coarse centre windows (``_coarse_reference``, computed once per set) or
        uint8 NHWC images.
    k
        neighbours per query (at most the number of references).
    max_shift
        the shift in pixels of the outer windows, and the crop of every centre window.
    scales
        the zooms of the query.
    chunk, block
        queries and references scored at once.

    Returns
    -------
    numpy.ndarray
        reference positions, best first, (N, k) int64.
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


def _cosine_knn(q: np.ndarray, r: np.ndarray, k: int, chunk: int = 4096,
                ref_chunk: int = 32768) -> tuple[np.ndarray, np.ndarray]:
    """k nearest rows of unit vectors by ``sqrt(2 - 2 cos)`` (ties: lower index; float32).

    Blocked over both sides: at most ``chunk * ref_chunk`` similarities (512 MB) are held,
    whatever the number of references (a streamed pool's search within itself passes the
    whole pool, memory-mapped, as ``r``): each block's top k are merged into the running
    top k (value, then index)."""
    qt = torch.from_numpy(q)
    k = min(k, len(r))
    idx = np.empty((len(q), k), dtype=np.int64)
    dist = np.empty((len(q), k), dtype=np.float64)
    for s in range(0, len(q), chunk):
        v, i = _blocked_topk(qt[s : s + chunk], r, k, ref_chunk)
        idx[s : s + len(v)] = i.numpy()
        dist[s : s + len(v)] = torch.sqrt(torch.clamp(2 - 2 * v.double(), min=0)).numpy()
    return idx, dist


def _by_value_then_index(v: torch.Tensor, i: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest values per row, ties in increasing index (``torch.topk`` orders ties
    arbitrarily)."""
    by_index = torch.sort(i, dim=1, stable=True).indices
    v, i = v.gather(1, by_index), i.gather(1, by_index)
    by_value = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
    return v.gather(1, by_value), i.gather(1, by_value)


def _blocked_topk(qs: torch.Tensor, r: np.ndarray, k: int, ref_chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` of ``qs @ r.T`` per row, one block of ``ref_chunk`` references at a time."""
    best_v = best_i = None
    for c0 in range(0, len(r), ref_chunk):
        block = torch.from_numpy(np.ascontiguousarray(r[c0 : c0 + ref_chunk]))
        v, i = torch.topk(qs @ block.T, min(k, len(block)), dim=1, largest=True, sorted=True)
        i = i + c0
        if best_v is not None and best_i is not None:
            v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i], 1)
        best_v, best_i = _by_value_then_index(v, i, k)
    if best_v is None or best_i is None:  # pragma: no cover - r is non-empty (k >= 1 is checked)
        raise RuntimeError("no references to search")
    return best_v, best_i


def _unit_features(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)
