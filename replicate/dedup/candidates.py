"""Candidate pairs: prepared sets (signatures computed once), the candidate search of one
query chunk against prepared references, and every distance of each pair."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from replicate._l2 import L2Index, l2_index, l2_knn, l2_sq_distances_at
from replicate._validation import check_int, fail
from replicate.dedup.rules import RANK_COLUMNS, DedupConfig, _distance_columns
from replicate.dedup.signatures import (
    _aligned_query,
    _aligned_reference,
    _coarse_reference,
    _cos_to_distance,
    _cosine_knn,
    _edge_centre,
    _edge_windows,
    _grouped_max_cos,
    _unit_features,
    tiny_signature,
    window_knn,
)
from replicate.imageset import ImageSet

_ALIGN_GROUP = 128  # query images whose aligned windows exist at once (about 20 MB in float64)
_EDGE_GROUP = 16  # query images whose edge windows exist at once (about 25 MB in float64)


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
    descriptors: np.ndarray | None = None  # copydesc32, unit rows: the descriptor gate (descriptor_min)
    l2: L2Index | None = None  # the pruned pixel-L2 search's index (None: too small to prune)

    def __len__(self) -> int:
        return len(self.images)


def prepare(images: ImageSet, config: DedupConfig, name: str | None = None, *, searched: bool = True) -> PreparedSet:
    """Hashes, tiny signatures, aligned windows (and features, and the copy-detection
    descriptors of the gate when ``descriptor_min`` is set) of one set; with ``searched``
    (the default) also the pruned pixel search's index, which only a set searched against
    needs (a streamed pool's chunks are queries only)."""
    from replicate.hashing import hash_images

    hashes = {m: hash_images(images.images, m, hash_size=config.hash_size) for m in config.hash_radii}
    feats = None
    if config.feature_model == "copydesc32":  # replicate's copy-detection descriptor
        from replicate.models.descriptor import embed

        feats = _unit_features(embed(images.images))
    elif config.feature_model is not None:
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
        descriptors=_gate_descriptors(images, config, feats),
        l2=l2_index(images.images) if config.l2_k and searched else None,
    )


def _gate_descriptors(images: ImageSet, config: DedupConfig, feats: np.ndarray | None) -> np.ndarray | None:
    """copydesc32 descriptors for the gate (``None`` when it is off); the features when they
    are copydesc32 already. Missing or altered weights fail naming the gate."""
    if config.descriptor_min is None:
        return None
    if config.feature_model == "copydesc32" and feats is not None:
        return feats
    from replicate.models._weights import WeightsError
    from replicate.models.descriptor import embed

    try:
        return _unit_features(embed(images.images))
    except WeightsError as exc:
        raise WeightsError(f"descriptor_min == {config.descriptor_min:g} (the copy-detection gate) needs the "
                           f"copydesc32 weights: {exc} Or switch the gate off with descriptor_min=None.") from exc


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
    within_index: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Candidate pairs of one query chunk against prepared references, with every distance.

    Parameters
    ----------
    query
        the prepared chunk (:func:`prepare`, then sliced).
    references
        the prepared reference sets.
    config
        the signals that propose candidates and the distances to compute.
    offset
        the chunk's first position in the whole query set.
    within
        the whole prepared query set, for pairs inside the query (reported once, with the
        lower position first); None for none.
    within_index
        optional :class:`~replicate.hamming.HammingIndex` per hash method over ``within``'s
        hashes, built once for all chunks: the hash signal inside the query then probes
        the index instead of scanning every hash (the same pairs).

    Returns
    -------
    pandas.DataFrame
        positions (``query_pos``, ``reference_set``, ``reference_pos``) plus the distance
        and rank columns; :func:`decide` turns the joined tables of all chunks into a
        :class:`DedupResult`.
    """
    targets: list[tuple[PreparedSet, bool]] = [(r, False) for r in references]
    if within is not None:
        targets.append((within, True))
    frames: list[pd.DataFrame] = []
    edge_jobs: list[_EdgeJob] = []
    tables: list[tuple[pd.DataFrame, PreparedSet, bool]] = []
    for ref, is_within in targets:
        keys = _candidate_keys(query, ref, config, offset, is_within, within_index if is_within else None)
        if not keys:
            continue
        cand = pd.concat(keys, ignore_index=True)
        for col in RANK_COLUMNS:
            if col not in cand:
                cand[col] = np.nan
        if is_within:
            cand = cand[cand.query_pos != cand.reference_pos]
            lo = np.minimum(cand.query_pos, cand.reference_pos)
            hi = np.maximum(cand.query_pos, cand.reference_pos)
            cand = cand.assign(query_pos=lo, reference_pos=hi)
        cand = cand.groupby(["query_pos", "reference_pos"], as_index=False, sort=True).min()
        cand["window_only"] = cand.window_only.fillna(0.0).astype(bool)  # min skips NaN: window and mirror -> 1
        tables.append((cand, ref, is_within))
    if not tables:
        return _empty_pairs(config)
    for (cand, ref, is_within), al in zip(tables, _aligned_all(tables, query, offset, within, config)):
        out, job = _distances(cand, query, ref, offset, within if is_within else None, config, al, len(frames))
        frames.append(out)
        if job is not None:
            edge_jobs.append(job)
    if edge_jobs:
        _fill_edges(frames, edge_jobs, query, offset, within, config)
    return pd.concat(frames, ignore_index=True)


def _aligned_all(tables: list[tuple[pd.DataFrame, PreparedSet, bool]], query: PreparedSet, offset: int,
                 within: PreparedSet | None, config: DedupConfig) -> list[np.ndarray]:
    """The aligned distance of every pair of a chunk's candidate tables, in one pass (as
    :func:`_fill_edges`: each query image's shifted and zoomed windows are made once per
    chunk, for its pairs in every set and in both directions inside the query; the values
    are those of a pass per table). Inside the query both ends are query images and the
    zoom range applies either way round: the smaller of the two directions."""
    whole = within is not None
    side_img = within.images.images if within is not None else query.images.images
    sides, others, centres, spans = [], [], [], []
    base = 0
    for cand, ref, is_within in tables:
        qpos = cand.query_pos.to_numpy(np.int64)
        rpos = cand.reference_pos.to_numpy(np.int64)
        # the side: the whole query's positions when it is given (the chunk is its slice)
        side = qpos if (is_within or whole) else qpos - offset
        sides.append(side)
        others.append(rpos + base)
        if is_within:  # the other direction: the higher position's windows against the lower's centre
            sides.append(rpos)
            others.append(qpos + base)
        spans.append((len(qpos), is_within))
        centres.append((base, ref.aligned))
        base += len(ref.aligned)

    def centre_rows(p: np.ndarray) -> torch.Tensor:
        out = torch.empty((len(p), centres[0][1].shape[1]))
        for b0, aligned in centres:
            sel = np.flatnonzero((p >= b0) & (p < b0 + len(aligned)))
            if len(sel):
                out[torch.from_numpy(sel)] = torch.from_numpy(aligned[p[sel] - b0])
        return out

    cos = _grouped_max_cos(np.concatenate(sides), np.concatenate(others),
                           lambda u: _aligned_query(side_img[u], config.max_shift, config.scales), centre_rows,
                           _ALIGN_GROUP)
    dist = _cos_to_distance(cos)
    result, at = [], 0
    for n, is_within in spans:
        al = dist[at : at + n]
        at += n
        if is_within:
            al = np.minimum(al, dist[at : at + n])
            at += n
        result.append(al)
    return result


@dataclass(frozen=True, eq=False)
class _EdgeJob:
    """The pairs of one candidate table (``frames[frame]``) whose edge distance is computed:
    rows ``near``, the side image at ``side`` (chunk positions, or the whole query's with
    ``whole``), the centre image ``other`` in ``images``; ``qpos`` and ``window_only`` of
    every row, for the edge ratio."""

    frame: int
    near: np.ndarray
    side: np.ndarray
    whole: bool
    other: np.ndarray
    images: np.ndarray
    qpos: np.ndarray
    window_only: np.ndarray


def _fill_edges(frames: list[pd.DataFrame], jobs: list[_EdgeJob], query: PreparedSet, offset: int,
                within: PreparedSet | None, config: DedupConfig) -> None:
    """The edge distances of every candidate table of one query chunk, in one pass.

    The query side's edge windows are the expensive part (294 windows of 676 values per
    image); a chunk's pairs against every reference set and inside the query share them, so
    each query image's windows are made once per chunk instead of once per set. The values
    are those of a pass per set: :func:`_grouped_max_cos` gives each pair the same result
    whatever pairs share its batch.
    """
    em = config.edge_max_shift
    side_img = within.images.images if within is not None else query.images.images
    if min(side_img.shape[1:3]) - 2 * em < 1:
        raise fail("edge_max_shift", em, f"< {min(side_img.shape[1:3]) / 2} (half the image side)")
    sides, others, bases = [], [], []
    base = 0
    for job in jobs:
        # one side index: the whole query's positions when it is given (the chunk is its slice)
        sides.append(job.side + (offset if within is not None and not job.whole else 0))
        others.append(job.other + base)
        bases.append((base, job.images))
        base += len(job.images)

    def centres(p: np.ndarray) -> torch.Tensor:
        out = torch.empty((len(p), (side_img.shape[1] - 2 * em) * (side_img.shape[2] - 2 * em)))
        for b0, images in bases:
            sel = np.flatnonzero((p >= b0) & (p < b0 + len(images)))
            if len(sel):
                out[torch.from_numpy(sel)] = _edge_centre(images[p[sel] - b0], em)
        return out

    cos = _grouped_max_cos(np.concatenate(sides), np.concatenate(others),
                           lambda u: _edge_windows(side_img[u], em, config.edge_scales), centres, _EDGE_GROUP)
    dist = _cos_to_distance(cos)
    at = 0
    for job in jobs:
        out = frames[job.frame]
        edge = np.full(len(out), np.nan)
        edge[job.near] = dist[at : at + len(job.near)]
        at += len(job.near)
        out["edge"] = edge
        # as for aligned_ratio, the coarse-window candidates are not others: switching
        # them on only adds candidates and flags
        out["edge_ratio"] = _ratio_to_best_other(job.qpos, edge, ~job.window_only)


def _candidate_keys(
    query: PreparedSet, ref: PreparedSet, config: DedupConfig, offset: int, is_within: bool,
    index: Mapping[str, Any] | None = None,
) -> list[pd.DataFrame]:
    """What each signal proposes for one query chunk in one set: (``query_pos``,
    ``reference_pos``, the signal's rank, ``window_only``: 1 for the coarse-window search,
    NaN for the mirrored thumbnail, 0 for the others) per signal; several rows per pair."""
    from replicate.hamming import radius_search

    keys: list[pd.DataFrame] = []
    extra = 1 if is_within else 0
    for method, radius in config.hash_radii.items():
        if index is not None and method in index:
            qi, ri, _ = index[method].radius_search(query.hashes[method], radius)
        else:
            qi, ri, _ = radius_search(query.hashes[method], ref.hashes[method], radius)
        keys.append(pd.DataFrame({"query_pos": qi + offset, "reference_pos": ri}))
    available = len(ref) - extra
    if available <= 0:
        return _mark_window_only(keys)

    def knn(idx: np.ndarray, rank: str | None, **more: float) -> None:
        qp, rp, rk = _knn_pairs(idx, offset, is_within)
        cols: dict[str, Any] = {"query_pos": qp, "reference_pos": rp}
        if rank is not None:
            cols[rank] = rk
        keys.append(pd.DataFrame({**cols, **more}))

    if config.l2_k:
        # pruned against the set's index; without one (too small, or a streamed pool too large
        # to hold its projection) every pair, so that no index is rebuilt for each chunk
        refs, prune = (ref.l2, True) if ref.l2 is not None else (ref.images.images, False)
        knn(l2_knn(query.images.images, refs, k=min(config.l2_k, available) + extra, prune=prune).indices, "l2_rank")
    if config.tiny_k:
        knn(_cosine_knn(query.tiny, ref.tiny, min(config.tiny_k, available) + extra)[0], "tiny_rank")
    if config.flips and config.tiny_k:
        if query.tiny_flipped is None:  # pragma: no cover - prepare() makes it when flips is on
            raise RuntimeError("prepared query has no mirrored thumbnails; prepare() it with flips=True")
        # NaN: the mirrored thumbnail leaves no rank in the table, so it does not make a
        # coarse-window candidate any less window-only (as _window_only reads the table)
        knn(_cosine_knn(query.tiny_flipped, ref.tiny, min(config.tiny_k, available) + extra)[0], None,
            window_only=np.nan)
    if config.feature_model is not None and config.feature_k:
        if query.features is None or ref.features is None:  # pragma: no cover - made by prepare()
            raise RuntimeError("prepared sets have no model features; prepare() them with feature_model set")
        knn(_cosine_knn(query.features, ref.features, min(config.feature_k, available) + extra)[0], "feature_rank")
    keys = _mark_window_only(keys)
    if config.aligned_k:
        if ref.coarse is None:  # pragma: no cover - prepare() makes it when aligned_k is set
            raise RuntimeError("prepared reference has no coarse windows; prepare() it with aligned_k set")
        idx = window_knn(query.images.images, ref.coarse, min(config.aligned_k, available) + extra,
                         config.max_shift, config.scales)
        knn(idx, "aligned_rank", window_only=1.0)
    return keys


def _mark_window_only(keys: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """The signals other than the coarse windows and the mirror: not window-only."""
    for key in keys:
        if "window_only" not in key:
            key["window_only"] = 0.0
    return keys


def _empty_pairs(config: DedupConfig) -> pd.DataFrame:
    cols = ["query_pos", "reference_set", "reference_pos"] + _distance_columns(config)
    return pd.DataFrame({c: pd.Series(dtype="object" if c == "reference_set" else "float64") for c in cols})


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
    al: np.ndarray,
    frame: int = 0,
) -> tuple[pd.DataFrame, _EdgeJob | None]:
    """All distances of candidate pairs (positions; ``whole_query`` for pairs within the
    query; ``al`` their aligned distances, from :func:`_aligned_all`), but the edge columns:
    those are NaN here, and the returned job (``frame``: this
    table's place among the chunk's) says which pairs :func:`_fill_edges` computes them for."""
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
        out["aligned_mirror"] = _aligned_at(qimg, qloc, ref, rpos, config, flip=True)
    job = None
    if config.edge_max is not None:
        # filled in by _fill_edges for all of the chunk's tables at once (the columns keep their place)
        out["edge"] = np.nan
        out["edge_ratio"] = np.nan
        near = np.flatnonzero(al <= config.edge_aligned_max)  # computed only for pairs already close
        job = _EdgeJob(frame=frame, near=near, side=qloc[near], whole=whole_query is not None, other=rpos[near],
                       images=rimg, qpos=qpos, window_only=window_only)
    if config.feature_model is not None:
        if qsrc.features is None or ref.features is None:  # pragma: no cover - made by prepare()
            raise RuntimeError("prepared sets have no model features; prepare() them with feature_model set")
        out["feature"] = _row_distance(qsrc.features[qloc], ref.features[rpos])
        out["feature_rank"] = cand.feature_rank.to_numpy()
    if config.descriptor_min is not None:
        out["descriptor_cos"] = _row_cosine(qsrc, qloc, ref, rpos)
    for col in RANK_COLUMNS:
        if col in out:
            out[col] = out[col].astype("Int64")
    return out, job


def _row_cosine(qsrc: PreparedSet, qloc: np.ndarray, ref: PreparedSet, rpos: np.ndarray) -> np.ndarray:
    """copydesc32 cosine of each pair (float64 dot product of the unit rows)."""
    if qsrc.descriptors is None or ref.descriptors is None:  # pragma: no cover - made by prepare()
        raise RuntimeError("prepared sets have no descriptors; prepare() them with descriptor_min set")
    a = np.asarray(qsrc.descriptors[qloc], dtype=np.float64)
    b = np.asarray(ref.descriptors[rpos], dtype=np.float64)
    return np.einsum("ij,ij->i", a, b)


def _aligned_at(
    side_img: np.ndarray, side: np.ndarray, other: PreparedSet, at: np.ndarray, config: DedupConfig, flip: bool = False
) -> np.ndarray:
    """Aligned distance of each pair p: the windows of image ``side_img[side[p]]`` (mirrored
    with ``flip``) against the centre window of ``other`` at ``at[p]``."""

    def windows(u: np.ndarray) -> torch.Tensor:
        img = side_img[u]
        return _aligned_query(img[:, :, ::-1] if flip else img, config.max_shift, config.scales)

    cos = _grouped_max_cos(side, at, windows, lambda p: torch.from_numpy(other.aligned[p]), _ALIGN_GROUP)
    return _cos_to_distance(cos)


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
        descriptors=None if p.descriptors is None else p.descriptors[sl],
    )
