"""Near-duplicate detection: exact pixel kNN, aligned distance, detector rules, groups, errors, CLI."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_imageset
from PIL import Image

from replicate._l2 import fastest_exact_product, l2_knn, l2_sq_distances
from replicate.dedup import (
    DedupConfig,
    DedupResult,
    aligned_distance,
    append_blacklist,
    candidate_pairs,
    decide,
    dedup_gallery,
    edge_distance,
    find_near_duplicates,
    hash_pairs,
    prepare,
    read_blacklist,
    window_knn,
)
from replicate.imageset import ImageSet

# ------------------------------------------------------------------------------ helpers


def brute_knn(q: np.ndarray, r: np.ndarray, k: int, within: bool = False):
    """Reference answer: every squared distance in int64, ties to the lower index."""
    a = q.reshape(len(q), -1).astype(np.int64)
    b = r.reshape(len(r), -1).astype(np.int64)
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    if within:
        np.fill_diagonal(d, np.iinfo(np.int64).max)
    order = np.lexsort((np.broadcast_to(np.arange(len(r)), d.shape), d), axis=1)[:, :k]
    return order, np.take_along_axis(d, order, 1), d


def jpeg(x: np.ndarray, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    p = max(abs(dy), abs(dx))
    padded = np.pad(x, ((p, p), (p, p), (0, 0)), mode="edge")
    h, w = x.shape[:2]
    return padded[p - dy : p - dy + h, p - dx : p - dx + w]


@pytest.fixture
def sets():
    """A reference set and a query with planted copies: exact (0), JPEG (1), brightness (2),
    2-pixel shift (3); query 5 duplicates query 4 exactly; query 7 copies query 6 and
    reference 30, so query 6 and 7 form one group that touches the reference."""
    ref = make_imageset(60, seed=1, name="ref")
    q = make_imageset(30, seed=2, name="new")
    imgs = q.images.copy()
    imgs[0] = ref.images[5]
    imgs[1] = jpeg(ref.images[7], 75)
    imgs[2] = np.clip(ref.images[9].astype(int) + 20, 0, 255).astype(np.uint8)
    imgs[3] = shifted(ref.images[11], 2, 1)
    imgs[5] = imgs[4]
    imgs[6] = jpeg(ref.images[30], 90)
    imgs[7] = ref.images[30]
    query = ImageSet(imgs, q.labels, q.class_names, name="new")
    return query, ref


# ------------------------------------------------------------------------------ exact pixel kNN


@pytest.mark.parametrize("product", ["auto", "int8", "float32-exact"])
def test_l2_knn_matches_brute_force_with_ties(product):
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (37, 6, 5, 3), dtype=np.uint8)
    r = rng.integers(0, 256, (53, 6, 5, 3), dtype=np.uint8)
    r[[4, 9, 20]] = q[3]  # three tied exact copies: must come out in position order
    res = l2_knn(q, r, k=5, radius=250.0, product=product, query_chunk=8, reference_chunk=11)
    order, dist, full = brute_knn(q, r, 5)
    np.testing.assert_array_equal(res.indices, order)
    np.testing.assert_array_equal(res.sq_distances, dist)
    np.testing.assert_array_equal(res.indices[3, :3], [4, 9, 20])
    np.testing.assert_array_equal(res.within_radius, (full <= 250**2).sum(1))
    # "auto" records the exact path it took (the faster one on this machine)
    assert res.product == (fastest_exact_product() if product == "auto" else product)
    assert res.product in ("int8", "float32-exact")


@pytest.mark.parametrize("product", ["int8", "float32-exact", "auto"])
def test_exact_products_agree_at_the_extremes(product):
    """Both exact kernels (and "auto", the faster here) give the same integers, even at the
    extremes (every product 128 * 128, 3,072 columns)."""
    from replicate import _l2

    rng = np.random.default_rng(3)
    q = rng.choice(np.array([0, 255], np.uint8), (20, 32, 32, 3))
    r = np.concatenate([rng.choice(np.array([0, 255], np.uint8), (30, 32, 32, 3)), 255 - q[:5], q[5:8]])
    q8, r8 = _l2._shifted(q.reshape(20, -1)), _l2._shifted(r.reshape(len(r), -1))
    want = q8.to(torch.int64) @ r8.to(torch.int64).T
    name = _l2.fastest_exact_product() if product == "auto" else product
    np.testing.assert_array_equal(_l2._dots(q8, r8.T.contiguous(), name), want.numpy())
    res = l2_knn(q, r, k=4, reference_chunk=16, product=product)
    order, dist, _ = brute_knn(q, r, 4)
    np.testing.assert_array_equal(res.sq_distances, dist)
    np.testing.assert_array_equal(res.indices, order)


def test_l2_knn_within_set_excludes_self_and_ignores_chunking():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (41, 4, 4, 3), dtype=np.uint8)
    x[7] = x[30]
    a = l2_knn(x, k=3, query_chunk=5, reference_chunk=7)
    b = l2_knn(x, k=3, query_chunk=64, reference_chunk=64)
    order, dist, _ = brute_knn(x, x, 3, within=True)
    np.testing.assert_array_equal(a.indices, order)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.sq_distances, dist)
    assert a.indices[7, 0] == 30 and a.sq_distances[7, 0] == 0
    assert not np.any(a.indices == np.arange(41)[:, None])


def test_l2_extremes_are_exact():
    # all-0 against all-255 32x32x3 images: 3072 * 255^2, beyond float32's exact integers
    q = np.zeros((2, 32, 32, 3), np.uint8)
    r = np.full((3, 32, 32, 3), 255, np.uint8)
    r[1] = 0
    res = l2_knn(q, r, k=3)
    assert res.sq_distances[0].tolist() == [0, 3072 * 255**2, 3072 * 255**2]
    assert res.indices[0].tolist() == [1, 0, 2]
    np.testing.assert_array_equal(l2_sq_distances(q[:1], r[:1]), [3072 * 255**2])


def test_l2_knn_bad_input():
    x = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"k == 4; must be <= 3 \(the number of other images\)"):
        l2_knn(x, k=4)
    with pytest.raises(ValueError, match=r"values per reference image == 48; must be 192 \(the query's"):
        l2_knn(x, np.zeros((3, 4, 4, 3), np.uint8), k=1)
    with pytest.raises(ValueError, match="query == 'an empty set'; must be at least one image"):
        l2_knn(x[:0], x, k=1)
    with pytest.raises(TypeError, match="images.dtype == 'float32'; must be uint8"):
        l2_knn(x.astype(np.float32), k=1)
    with pytest.raises(ValueError, match="product == 'int'; must be one of: 'auto', 'int8'.*Did you mean 'int8'"):
        l2_knn(x, k=1, product="int")
    with pytest.raises(ValueError, match="radius == -1.0; must be a finite number >= 0"):
        l2_knn(x, k=1, radius=-1)


# ------------------------------------------------------------------------------ aligned distance


def test_aligned_distance_tolerates_shift_and_photometric_change(sets):
    _, ref = sets
    x = ref.images[:20]
    moved = np.stack([shifted(im, 2, -1) for im in x])
    brighter = np.clip(x.astype(int) * 0.8 + 30, 0, 255).astype(np.uint8)
    other = ref.images[20:40]
    d_shift = aligned_distance(moved, x)
    d_bright = aligned_distance(brighter, x)
    d_other = aligned_distance(other, x)
    assert d_shift.max() < 0.05
    assert d_bright.max() < 0.05
    assert d_other.min() > 0.5
    np.testing.assert_allclose(aligned_distance(x, x), 0, atol=2e-3)


def test_aligned_distance_shape_error():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"b.shape == \(3, 8, 8, 3\); must be \(2, 8, 8, 3\)"):
        aligned_distance(a, np.zeros((3, 8, 8, 3), np.uint8))


def test_edge_distance_tolerates_crop_zoom_but_not_other_images(sets):
    import torch

    _, ref = sets
    # smooth images (random 8x8 colour fields upsampled): pixel noise does not survive a zoom
    small = torch.from_numpy(np.random.default_rng(3).uniform(0, 255, (40, 3, 8, 8))).float()
    x = torch.nn.functional.interpolate(small, size=(32, 32), mode="bicubic", align_corners=False)
    x = x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    other = x[20:]
    x = x[:20]
    # a 10% zoom-in (crop 29x29 of the centre, resized back to 32): outside the default
    # aligned window's 0.875-1.0625 zooms, inside the edge window's 0.8125-1.125
    t = torch.from_numpy(x[:, 1:30, 1:30].copy()).permute(0, 3, 1, 2).float()
    zoomed = torch.nn.functional.interpolate(t, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    zoomed = zoomed.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(edge_distance(x, x), 0, atol=2e-3)
    assert edge_distance(np.stack([shifted(im, 1, -1) for im in x]), x).max() < 0.05
    assert np.median(edge_distance(zoomed, x)) < 0.5
    assert edge_distance(other, x).min() > 0.6  # unrelated images
    with pytest.raises(ValueError, match=r"b.shape == \(3, 8, 8, 3\); must be \(2, 8, 8, 3\)"):
        edge_distance(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="max_shift == 4; must be < 4.0"):
        edge_distance(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.uint8), max_shift=4)


def _edge_distance_by_windows(a, b, max_shift, scales):
    """Reference for edge_distance: cut every window out and compare them one by one."""
    import torch
    import torch.nn.functional as F

    def gray(x):  # the library's grayscale: the mean of the channels
        return torch.from_numpy(x.astype(np.float32)).mean(dim=3)[:, None]

    def high_pass(g):
        return g - F.avg_pool2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), 3, 1)

    def unit(v):
        v = v - v.mean()
        return v / max(np.linalg.norm(v), 1e-6)

    h = a.shape[1]
    m, side = max_shift, a.shape[1] - 2 * max_shift
    out = []
    for i in range(len(a)):
        ref = unit(high_pass(gray(b[i : i + 1]))[0, 0, m : m + side, m : m + side].numpy().astype(np.float64))
        best = -2.0
        for z in scales:
            g = gray(a[i : i + 1])
            sz = max(1, round(h * z))
            if sz != h:
                g = F.interpolate(g, size=(sz, sz), mode="bilinear", antialias=True, align_corners=False)
            pad = m + max(0, (h - sz + 1) // 2) + 2
            e = F.pad(high_pass(g), (pad, pad, pad, pad), mode="replicate")[0, 0].numpy().astype(np.float64)
            y0 = pad + (sz - side) // 2
            for dy in range(-m, m + 1):
                for dx in range(-m, m + 1):
                    win = e[y0 + dy : y0 + dy + side, y0 + dx : y0 + dx + side]
                    best = max(best, float(np.sum(unit(win) * ref)))
        out.append(np.sqrt(max(2 - 2 * best, 0)))
    return np.array(out)


def test_edge_distance_matches_window_by_window_reference(sets):
    query, ref = sets
    rng = np.random.default_rng(5)
    a = query.images[:12]
    b = np.concatenate([ref.images[:6], np.roll(query.images[6:12], 1, axis=2)])  # unrelated, and shifted copies

    def cos(d):  # compared as cosines: sqrt(2 - 2 cos) magnifies float noise near 0
        return 1 - np.asarray(d) ** 2 / 2

    for max_shift, scales in ((3, (0.8125, 1.0, 1.125)), (1, (1.0,))):
        got = edge_distance(a, b, max_shift, scales)
        want = _edge_distance_by_windows(a, b, max_shift, scales)
        np.testing.assert_allclose(cos(got), cos(want), atol=2e-6)
        assert got[:6].min() > 0.5 and got[6:].max() < 0.3  # unrelated; shifted copies (the wrapped column differs)
    small = rng.integers(0, 256, (5, 20, 20, 3), dtype=np.uint8)  # another size, and batches of 2
    np.testing.assert_allclose(cos(edge_distance(small, small[::-1], 2, (0.9, 1.0), batch=2)),
                               cos(_edge_distance_by_windows(small, small[::-1], 2, (0.9, 1.0))), atol=2e-6)


def test_grouped_distances_match_the_paired_functions_and_do_not_depend_on_batches(sets):
    """The detector computes aligned and edge distances grouped by query image (windows cut
    once per image, batched products); they must equal aligned_distance and edge_distance,
    pair by pair, and not change with how pairs are batched (chunk-size invariance)."""
    from replicate.dedup import (
        _aligned_query,
        _aligned_reference,
        _cos_to_distance,
        _edge_centre,
        _edge_windows,
        _grouped_max_cos,
    )

    query, ref = sets
    rng = np.random.default_rng(3)
    # 40 pairs on query image 0 (more than one block of 32 slots), the rest scattered
    side = np.concatenate([np.zeros(40, np.int64), rng.integers(0, len(query), 160)])
    other = rng.integers(0, len(ref), len(side))
    other[:3] = [5, 7, 9]
    qi, ri = query.images, ref.images
    z, ez = (0.875, 1.0, 1.0625), (0.8125, 1.0, 1.125)

    def aligned(batch, slots):
        return _cos_to_distance(_grouped_max_cos(
            side, other, lambda u: _aligned_query(qi[u], 2, z), lambda p: torch.from_numpy(_aligned_reference(ri[p], 2)),
            batch, slots))

    def edge(batch, slots):
        return _cos_to_distance(_grouped_max_cos(
            side, other, lambda u: _edge_windows(qi[u], 3, ez), lambda p: _edge_centre(ri[p], 3), batch, slots))

    def cos(d):  # compared as cosines: sqrt(2 - 2 cos) magnifies float noise near 0
        return 1 - np.asarray(d) ** 2 / 2

    np.testing.assert_allclose(cos(aligned(128, 32)), cos(aligned_distance(qi[side], ri[other], 2, z)), atol=2e-6)
    np.testing.assert_allclose(cos(edge(16, 32)), cos(edge_distance(qi[side], ri[other], 3, ez)), atol=2e-6)
    np.testing.assert_array_equal(aligned(128, 32), aligned(1, 1))
    np.testing.assert_array_equal(aligned(128, 32), aligned(7, 5))
    np.testing.assert_array_equal(edge(16, 32), edge(3, 7))
    assert _grouped_max_cos(side[:0], other[:0], None, None, 4).shape == (0,)


def test_paired_l2_reads_rows_by_position_and_checks_them():
    from replicate._l2 import l2_sq_distances_at

    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (9, 4, 4, 3), dtype=np.uint8)
    ai, bi = np.array([0, 0, 5, 3, 5]), np.array([8, 1, 1, 0, 8])
    want = ((a[ai].astype(np.int64) - b[bi].astype(np.int64)) ** 2).reshape(len(ai), -1).sum(1)
    np.testing.assert_array_equal(l2_sq_distances_at(a, b, ai, bi), want)
    assert l2_sq_distances_at(a, b, ai[:0], bi[:0]).shape == (0,)
    with pytest.raises(ValueError, match=r"bi \(a position\) == 9; must be within 0\.\.8 \(the rows of b\)"):
        l2_sq_distances_at(a, b, ai, np.array([0, 1, 2, 3, 9]))
    with pytest.raises(ValueError, match=r"bi.shape == \(2,\); must be \(5,\)"):
        l2_sq_distances_at(a, b, ai, bi[:2])
    with pytest.raises(ValueError, match=r"b.shape == \(9, 75\); must be \(N, 48\)"):
        l2_sq_distances_at(a, rng.integers(0, 256, (9, 5, 5, 3), dtype=np.uint8), ai, bi)


def test_edge_rule_is_on_by_default_and_can_be_switched_off(sets):
    query, ref = sets
    # chosen with the by-eye review (docs/dedup.md); the edge ratio guard is an option
    assert (DedupConfig().edge_max, DedupConfig().edge_ratio_max, DedupConfig().edge_ratio_edge_max) == (1.1, None, 1.1)
    default = find_near_duplicates(query, [ref], within_query=False)
    assert "edge" in default.pairs and "edge_ratio" in default.pairs and default.config.edge_max == 1.1
    off = find_near_duplicates(query, [ref], within_query=False, edge_max=None)
    assert "edge" not in off.pairs and "edge_ratio" not in off.pairs
    assert "edge" not in off.summary()
    assert "with edge <= 1.1 (" in default.summary() and "edge_ratio" not in default.summary()
    guard = find_near_duplicates(query, [ref], within_query=False, edge_max=1.0, edge_ratio_max=0.9)
    assert "with edge <= 1 (" in guard.summary() and "edge <= 1.1 and edge_ratio <= 0.9" in guard.summary()
    on = find_near_duplicates(query, [ref], within_query=False, edge_max=0.3, edge_ratio_max=None)
    near = on.pairs.aligned <= 0.8  # edge_aligned_max
    assert on.pairs.edge[near].notna().all() and on.pairs.edge[~near].isna().all()
    assert set(on.flagged.query_id) >= set(off.flagged.query_id)
    fired = on.pairs.flagged_by.str.contains("edge")
    assert fired.any()  # the planted copies also pass the edge rule
    assert (on.pairs.edge[fired] <= 0.3).all()
    assert DedupConfig.from_dict(on.config.to_dict()) == on.config
    with pytest.raises(ValueError, match="config.edge_max == 0.3; must be None for a candidate table without an 'edge'"):
        decide(off.pairs, query, {"ref": ref}, on.config)


# ------------------------------------------------------------------------------ detector


def test_find_near_duplicates_flags_planted_copies_and_groups(sets):
    query, ref = sets
    res = find_near_duplicates(query, {"ref": ref})
    reasons = dict(zip(res.flagged.query_id, res.flagged.reason))
    ids = query.ids
    # copies of reference images are dropped
    for i in (0, 1, 2, 3, 6, 7):
        assert reasons[ids[i]] == "reference", i
    # a duplicate pair inside the query keeps the first image and drops the second
    assert ids[4] not in reasons and reasons[ids[5]] == "within_query"
    assert ids[4] in set(res.kept_ids)
    # query 6 and 7 copy the same reference image: one group with three members
    g = res.groups[res.groups.id.isin([ids[6], ids[7], "ref/000030"])]
    assert g.group.nunique() == 1 and len(g) == 3 and not g.kept.any()
    # nothing else flagged; kept + flagged partition the query
    assert set(reasons) == {ids[i] for i in (0, 1, 2, 3, 5, 6, 7)}
    assert len(res.kept_ids) + res.n_flagged == len(query)
    # every flagged pair carries every distance; the exact copy has L2 0
    row = res.pairs[(res.pairs.query_id == ids[0]) & (res.pairs.reference_id == "ref/000005")].iloc[0]
    assert row.l2 == 0 and row.l2_rank == 1 and row.hamming_phash == 0 and row.flagged
    assert {"hamming_phash", "hamming_dhash", "l2", "l2_rms", "l2_rank", "tiny", "tiny_rank", "aligned"} <= set(res.pairs)
    shift_row = res.pairs[(res.pairs.query_id == ids[3]) & (res.pairs.reference_id == "ref/000011")].iloc[0]
    assert "aligned" in shift_row.flagged_by.split(",")


def test_chunking_does_not_change_the_result(sets):
    query, ref = sets
    a = find_near_duplicates(query, {"ref": ref}, chunk_size=7)
    b = find_near_duplicates(query, {"ref": ref}, chunk_size=4096)
    cols = ["query_id", "reference_set", "reference_id", "l2", "aligned", "flagged"]
    pd.testing.assert_frame_equal(a.pairs[cols], b.pairs[cols])
    assert a.flagged.equals(b.flagged)


def test_chunk_api_and_rescoring_match_the_one_call(sets):
    query, ref = sets
    cfg = DedupConfig(within_query=False)
    refs = [prepare(ref, cfg)]
    whole = prepare(query, cfg)
    parts = []
    for start in range(0, len(query), 11):  # what a distributed engine would map
        chunk = prepare(query.select(np.arange(start, min(start + 11, len(query)))), cfg)
        parts.append(candidate_pairs(chunk, refs, cfg, offset=start))
    pairs = pd.concat(parts, ignore_index=True)
    a = decide(pairs, query, {"ref": ref}, cfg)
    b = find_near_duplicates(query, {"ref": ref}, config=cfg)
    pd.testing.assert_frame_equal(a.pairs, b.pairs)
    assert whole.tiny.shape == (len(query), 192)
    # stricter thresholds on the same candidates: a subset of the flags
    strict = decide(
        pairs, query, {"ref": ref},
        DedupConfig(within_query=False, aligned_max=0.01, hash_radii={}, ratio_max=None, l2_rms_max=None, edge_max=None),
    )
    assert set(strict.flagged_ids) < set(a.flagged_ids)


def test_thresholds_switch_rules_off(sets):
    query, ref = sets
    res = find_near_duplicates(
        query, [ref], hash_radii={}, l2_rms_max=None, aligned_max=None, ratio_max=None, edge_max=None, within_query=False
    )
    assert res.n_flagged == 0 and not res.pairs.flagged.any()
    assert len(res.pairs) > 0  # the kNN signals still propose candidates
    strict = find_near_duplicates(
        query, [ref], hash_radii={"phash": 0}, l2_rms_max=0.0, aligned_max=None, ratio_max=None, edge_max=None
    )
    assert set(strict.flagged.query_id) >= {query.ids[0], query.ids[7]}
    assert query.ids[3] not in set(strict.flagged.query_id)  # a shifted copy needs the aligned rule


def test_flips_are_found_only_when_asked(sets):
    query, ref = sets
    imgs = query.images.copy()
    imgs[12] = ref.images[40][:, ::-1]
    q = ImageSet(imgs, name="new")
    plain = find_near_duplicates(q, {"ref": ref}, within_query=False)
    assert q.ids[12] not in set(plain.flagged_ids)
    res = find_near_duplicates(q, {"ref": ref}, within_query=False, flips=True)
    row = res.pairs[(res.pairs.query_id == q.ids[12]) & (res.pairs.reference_id == "ref/000040")].iloc[0]
    assert row.flagged and row.flagged_by == "mirror" and row.aligned_mirror < 0.01 and row.aligned > 0.3


def test_feature_signal_uses_extract_features(monkeypatch, sets):
    import replicate.evaluation

    query, ref = sets
    calls = []

    def fake_features(model, imageset, **kw):
        # stands in for a zoo model: 8x8 thumbnails as 192-d "features"
        calls.append((model, imageset.name))
        return imageset.images.reshape(len(imageset), 8, 4, 8, 4, 3).mean(axis=(2, 4)).reshape(len(imageset), -1)

    monkeypatch.setattr(replicate.evaluation, "extract_features", fake_features)
    res = find_near_duplicates(
        query, {"ref": ref}, feature_model="fake", feature_k=2, feature_max=0.01, hash_radii={},
        l2_rms_max=None, aligned_max=None, ratio_max=None, edge_max=None, within_query=False,
    )
    assert sorted(calls) == [("fake", "new"), ("fake", "ref")]
    assert {"feature", "feature_rank"} <= set(res.pairs)
    row = res.pairs[(res.pairs.query_id == query.ids[0]) & (res.pairs.reference_id == "ref/000005")].iloc[0]
    assert row.feature_rank == 1 and row.feature < 1e-6 and row.flagged_by == "feature"
    assert "fake feature <= 0.01" in res.summary()


def test_blacklist_file(tmp_path, sets):
    query, ref = sets
    path = tmp_path / "blacklist.txt"
    assert append_blacklist(path, [query.ids[10], query.ids[11]], comment="reviewed") == 2
    assert append_blacklist(path, [query.ids[11], "elsewhere/1"]) == 1  # append-only, no repeats
    assert read_blacklist(path) == [query.ids[10], query.ids[11], "elsewhere/1"]
    assert path.read_text().splitlines()[0] == "# reviewed"
    res = find_near_duplicates(query, {"ref": ref}, blacklist=path)
    reasons = dict(zip(res.flagged.query_id, res.flagged.reason))
    assert reasons[query.ids[10]] == "blacklist" and reasons[query.ids[11]] == "blacklist"
    assert res.blacklist == {"path": str(path), "n_ids": 3, "n_matched": 2}
    with pytest.raises(FileNotFoundError, match="blacklist == .*; must be an existing text file"):
        read_blacklist(tmp_path / "missing.txt")


def test_blacklisted_member_is_not_the_one_kept(sets):
    query, ref = sets
    res = find_near_duplicates(query, {"ref": ref}, blacklist=[query.ids[4]])
    reasons = dict(zip(res.flagged.query_id, res.flagged.reason))
    # of the duplicate pair (4, 5), 4 is blacklisted, so 5 is kept
    assert query.ids[5] not in reasons and reasons[query.ids[4]] == "within_query"


def test_result_summary_dict_save_load(tmp_path, sets):
    query, ref = sets
    res = find_near_duplicates(query, {"ref": ref})
    text = res.summary()
    assert "7 flagged (6 near an original image, 1 duplicates within the set, 0 blacklisted); 23 kept" in text
    d = json.loads(json.dumps(res.to_dict()))
    assert d["counts"]["flagged"] == 7 and d["config"]["aligned_max"] == res.config.aligned_max
    assert {f["query_id"] for f in d["flagged"]} == set(res.flagged_ids)
    back = DedupResult.load(res.save(tmp_path / "out"))
    pd.testing.assert_frame_equal(back.pairs, res.pairs)
    pd.testing.assert_frame_equal(back.flagged, res.flagged)
    pd.testing.assert_frame_equal(back.groups, res.groups)
    np.testing.assert_array_equal(back.kept_ids, res.kept_ids)
    assert back.config == res.config
    assert (tmp_path / "out/flagged_ids.txt").read_text().split() == list(res.flagged_ids)


def test_gallery_is_self_contained(sets):
    query, ref = sets
    res = find_near_duplicates(query, {"ref": ref})
    html = dedup_gallery(res, query, {"ref": ref}, scale=3)
    n = int(res.pairs.flagged.sum())
    assert html.count("data:image/png;base64,") == 2 * n
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert 'width="96"' in html and "pixelated" in html
    png = re.search(r"base64,([A-Za-z0-9+/=]+)", html).group(1)
    import base64

    img = Image.open(io.BytesIO(base64.b64decode(png)))
    assert img.size == (32, 32)
    with pytest.raises(ValueError, match="references == .*must be the sets named in the result"):
        dedup_gallery(res, query, None)


# ------------------------------------------------------------------------------ bad input


def test_bad_input_errors(sets):
    query, ref = sets
    with pytest.raises(ValueError, match="query == 'an empty set'; must be at least one image"):
        find_near_duplicates(query.select(np.zeros(len(query), bool)), {"ref": ref})
    with pytest.raises(ValueError, match=r"references\['ref'\] == 'an empty set'"):
        find_near_duplicates(query, {"ref": ref.select(np.zeros(len(ref), bool))})
    with pytest.raises(ValueError, match="ids of reference 'b' == \"60 ids shared with reference 'a'"):
        find_near_duplicates(query, {"a": ref, "b": ref})
    clash = ImageSet(ref.images, ids=[f"new/{i:06d}" for i in range(len(ref))], name="ref")
    with pytest.raises(ValueError, match="ids of reference 'ref' == \"30 ids shared with query 'new'"):
        find_near_duplicates(query, {"ref": clash})
    with pytest.raises(ValueError, match="reference name 'new' == 'new'; must be different from the query's name"):
        find_near_duplicates(query, {"new": ref})
    small = make_imageset(10, size=16, name="small")
    with pytest.raises(ValueError, match=r"image shape of references\['small'\] == \(16, 16, 3\); must be \(32, 32, 3\)"):
        find_near_duplicates(query, {"small": small})
    with pytest.raises(ValueError, match=r"aligned_max == 3; must be in \[0, 2\]"):
        find_near_duplicates(query, {"ref": ref}, aligned_max=3)
    with pytest.raises(ValueError, match=r"l2_rms_max == -1; must be in \[0, 255\]"):
        find_near_duplicates(query, {"ref": ref}, l2_rms_max=-1)
    with pytest.raises(ValueError, match=r"hash_radii\['phash'\] == 65; must be <= 64"):
        find_near_duplicates(query, {"ref": ref}, hash_radii={"phash": 65})
    with pytest.raises(ValueError, match="hash_radii key == 'pash'; must be one of: .*Did you mean 'phash'"):
        find_near_duplicates(query, {"ref": ref}, hash_radii={"pash": 4})
    with pytest.raises(ValueError, match="keyword argument == 'aligned'; must be one of: .*'aligned_max'"):
        find_near_duplicates(query, {"ref": ref}, aligned=0.2)
    with pytest.raises(ValueError, match=r"scales == \(3.0,\); must be a non-empty sequence of zoom factors"):
        find_near_duplicates(query, {"ref": ref}, scales=(3.0,))
    with pytest.raises(ValueError, match=r"edge_max == 2.5; must be in \[0, 2\]"):
        find_near_duplicates(query, {"ref": ref}, edge_max=2.5)
    with pytest.raises(ValueError, match=r"edge_scales == \(0.1,\); must be a non-empty sequence of zoom factors"):
        find_near_duplicates(query, {"ref": ref}, edge_max=1.0, edge_scales=(0.1,))
    with pytest.raises(TypeError, match="query == 'ndarray'; must be an ImageSet"):
        find_near_duplicates(query.images, {"ref": ref})


def test_hash_pairs_refuses_different_hashers(sets):
    from replicate.hashing import hash_set

    query, ref = sets
    qp = hash_set(query, "phash")
    pairs = hash_pairs(qp, hash_set(ref, "phash"), radius=0)
    assert (query.ids[0], "ref/000005") in set(zip(pairs.query_id, pairs.reference_id))
    with pytest.raises(ValueError, match="reference == \"dhash .*must be hashes made with the same hasher"):
        hash_pairs(qp, hash_set(ref, "dhash"), radius=4)
    with pytest.raises(ValueError, match="reference == .*must be hashes made with the same hasher"):
        hash_pairs(qp, hash_set(ref, "phash", hash_size=16), radius=4)
    with pytest.raises(ValueError, match="radius == 65; must be <= 64"):
        hash_pairs(qp, hash_set(ref, "phash"), radius=65)


# ------------------------------------------------------------------------------ CLI


def test_cli_writes_tables_and_gallery(tmp_path, sets, capsys):
    from replicate.cli import main

    query, ref = sets
    qp = query.save(tmp_path / "new")
    rp = ref.save(tmp_path / "ref")
    out = tmp_path / "out"
    assert main(["dedup", str(qp), "--reference", f"ref={rp}", "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["flagged"] == 7
    for name in ("pairs.csv", "groups.csv", "flagged.csv", "flagged_ids.txt", "kept_ids.txt", "result.json", "gallery.html"):
        assert (out / name).is_file(), name
    assert set((out / "flagged_ids.txt").read_text().split()) == {f["query_id"] for f in data["flagged"]}
    assert main(["dedup", str(qp), "--reference", str(rp), "--out", str(out)]) == 2
    assert "--reference == " in capsys.readouterr().err
    # the edge verification's threshold, or 'off', from the command line
    assert data["config"]["edge_max"] == 1.1 and data["config"]["edge_ratio_max"] is None
    assert main(["dedup", str(qp), "--reference", f"ref={rp}", "--out", str(tmp_path / "edge"),
                 "--edge-max", "off", "--json"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert off["config"]["edge_max"] is None
    assert off["counts"]["flagged"] <= data["counts"]["flagged"]  # the rule only adds flags
    assert main(["dedup", str(qp), "--reference", f"ref={rp}", "--out", str(tmp_path / "edge"),
                 "--edge-max", "1.05", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["edge_max"] == 1.05
    assert main(["dedup", str(qp), "--reference", f"ref={rp}", "--out", str(tmp_path / "window"),
                 "--aligned-k", "3", "--json"]) == 0
    window = json.loads(capsys.readouterr().out)
    assert window["config"]["aligned_k"] == 3 and data["config"]["aligned_k"] == 5
    assert "aligned_rank" in (out / "pairs.csv").read_text().splitlines()[0]
    assert main(["dedup", str(qp), "--reference", f"ref={rp}", "--out", str(tmp_path / "nowindow"),
                 "--aligned-k", "0", "--edge-max", "1.0", "--edge-ratio-max", "0.9", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["config"]["aligned_k"] == 0 and plain["config"]["edge_ratio_max"] == 0.9
    assert "aligned_rank" not in (tmp_path / "nowindow" / "pairs.csv").read_text().splitlines()[0]
    assert main(["dedup", str(qp), "--reference", f"ref={rp}", "--out", str(tmp_path / "edge"),
                 "--edge-ratio-max", "most"]) == 2
    assert "--edge-ratio-max == 'most'; must be a ratio in [0, 1] or 'off'" in capsys.readouterr().err
    assert main(["dedup", str(qp), "--reference", f"ref={rp}", "--out", str(tmp_path / "edge"),
                 "--edge-max", "loose"]) == 2
    assert "--edge-max == 'loose'; must be a distance in [0, 2] or 'off'" in capsys.readouterr().err


# ------------------------------------------------------------------------------ real images


@pytest.mark.shared
def test_real_cifar_copies_are_found(cifar_train, cifar_test):
    train = cifar_train.select(np.arange(3000))
    test = cifar_test.select(np.arange(400))
    imgs = test.images.copy()
    imgs[0] = jpeg(train.images[100], 50)
    imgs[1] = shifted(train.images[200], 1, 2)
    imgs[2] = np.asarray(Image.fromarray(train.images[300]).crop((2, 2, 30, 30)).resize((32, 32), Image.BICUBIC))
    query = ImageSet(imgs, test.labels, test.class_names, name="cifar10-test")
    res = find_near_duplicates(query, {"cifar10-train": train}, config=DedupConfig(), within_query=False)
    hits = set(zip(res.pairs[res.pairs.flagged].query_id, res.pairs[res.pairs.flagged].reference_id))
    for qi, ri in ((0, 100), (1, 200), (2, 300)):
        assert (query.ids[qi], train.ids[ri]) in hits
    assert res.n_flagged <= 3 + 0.05 * len(query)


def test_grayscale_sets_work_without_hashes():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 16, 16, 1), dtype=np.uint8)
    b = rng.integers(0, 256, (30, 16, 16, 1), dtype=np.uint8)
    b[3] = a[2]
    res = find_near_duplicates(ImageSet(a, name="q"), {"r": ImageSet(b, name="r")}, hash_radii={})
    assert list(res.flagged_ids) == ["q/000002"]
    assert res.flagged.matches.iloc[0] == "r:r/000003"


def test_ratio_to_the_other_candidates():
    from replicate.dedup import _ratio_to_others

    # group 0: 0.1 against median(0.5, 0.7) = 0.6, 0.5 against median(0.1, 0.7) = 0.4, ...
    got = _ratio_to_others(np.array([0, 1, 0, 0]), np.array([0.1, 0.3, 0.5, 0.7]))
    np.testing.assert_allclose(got, [0.1 / 0.6, np.nan, 0.5 / 0.4, 0.7 / 0.3])
    with pytest.raises(ValueError, match=r"ratio_max == 1.5; must be in \[0, 1\]"):
        find_near_duplicates(make_imageset(5), None, ratio_max=1.5)


def test_window_knn_ranks_shifted_and_zoomed_copies_first():
    import torch

    # smooth images (random 8x8 fields upsampled), and copies zoomed in by 10% (a 29x29
    # centre crop resized back) and shifted by 2 pixels: far apart in pixel L2
    small = torch.from_numpy(np.random.default_rng(7).uniform(0, 255, (300, 3, 8, 8))).float()
    ref = torch.nn.functional.interpolate(small, size=(32, 32), mode="bicubic", align_corners=False)
    ref = ref.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    src = np.arange(0, 300, 15)
    t = torch.from_numpy(ref[src, 1:30, 1:30].copy()).permute(0, 3, 1, 2).float()
    zoomed = torch.nn.functional.interpolate(t, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    zoomed = zoomed.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    query = np.stack([shifted(im, 2, -2) for im in zoomed])
    idx = window_knn(query, ref, k=3)
    assert idx.shape == (len(src), 3)
    assert (idx[:, 0] == src).mean() >= 0.9
    from replicate.dedup import _coarse_reference

    np.testing.assert_array_equal(window_knn(query, _coarse_reference(ref, 2), k=3, chunk=7), idx)


def test_aligned_k_only_adds_candidates_and_flags(sets):
    query, ref = sets
    assert DedupConfig().aligned_k == 5  # docs/dedup.md
    off = find_near_duplicates(query, [ref], within_query=False, aligned_k=0)
    on = find_near_duplicates(query, [ref], within_query=False, aligned_k=4)
    assert "aligned_rank" not in off.pairs and "aligned_rank" in on.pairs
    keys = ["query_id", "reference_id"]
    both = off.pairs.merge(on.pairs, on=keys, suffixes=("", "_on"))
    assert len(both) == len(off.pairs) and len(on.pairs) > len(off.pairs)
    # the other candidates keep their ratios; the window-only ones have none
    np.testing.assert_allclose(both.aligned_ratio.fillna(-1), both.aligned_ratio_on.fillna(-1))
    np.testing.assert_allclose(both.edge_ratio.fillna(-1), both.edge_ratio_on.fillna(-1))
    extra = on.pairs.merge(off.pairs[keys], on=keys, how="left", indicator=True)
    window_only = extra[extra._merge == "left_only"]
    assert window_only.aligned_rank.notna().all() and window_only.aligned_ratio.isna().all()
    assert set(on.flagged_ids) >= set(off.flagged_ids)
    assert DedupConfig.from_dict(on.config.to_dict()) == on.config
    # inside the query set too: query 5 is an exact copy of query 4
    within = find_near_duplicates(query, [ref])
    inside = within.pairs[within.pairs.reference_set == "new"]
    assert inside.aligned_rank.notna().any() and (inside.query_id != inside.reference_id).all()
    assert query.ids[5] in set(within.flagged_ids)
    with pytest.raises(ValueError, match=r"aligned_k == -1; must be >= 0"):
        find_near_duplicates(query, [ref], aligned_k=-1)


def test_window_only_candidates_are_the_same_when_built_and_when_read_from_the_table(sets):
    """The candidate build marks coarse-window-only pairs (no ratio, not counted as others);
    the rules read the same set back from the table (_window_only). With the mirrored
    thumbnail on (flips=True), which leaves no rank column, the two must still agree."""
    from replicate.dedup import _window_only

    query, ref = sets
    for flips in (False, True):
        cfg = DedupConfig(flips=flips, aligned_k=8, tiny_k=3, l2_k=1)
        res = find_near_duplicates(query, [ref], config=cfg)
        table = _window_only(res.pairs, res.config)
        inside = (res.pairs.reference_set == query.name).to_numpy()
        built = res.pairs.aligned_ratio.isna().to_numpy() & res.pairs.aligned_rank.notna().to_numpy()
        # a pair alone in its query's group has no ratio either: compare where others exist
        others = res.pairs.groupby(["query_id", "reference_set"]).query_id.transform("size").to_numpy() > 1
        assert table.any() and (~table).any()
        np.testing.assert_array_equal(built[others & ~inside], table[others & ~inside])


def test_edge_rule_is_stricter_for_candidates_only_the_coarse_windows_proposed():
    from replicate.dedup import _flag_rules, _rules_text

    # rows 0-1: proposed only by the coarse-window search; row 2 also by pixel L2; row 3 by a hash
    pairs = pd.DataFrame({
        "aligned": [0.5] * 4, "aligned_ratio": [np.nan, np.nan, 0.9, 0.9], "edge": [1.05, 0.95, 1.05, 1.05],
        "aligned_rank": pd.array([1, 1, 2, 3], dtype="Int64"), "l2_rank": pd.array([None, None, 1, None], dtype="Int64"),
        "tiny_rank": pd.array([None] * 4, dtype="Int64"), "hamming_phash": [30, 30, 30, 2], "hamming_dhash": [30] * 4,
    })
    cfg = DedupConfig(l2_rms_max=None, aligned_max=None, ratio_max=None, aligned_k=5, edge_max=1.1, edge_ratio_max=None)
    assert cfg.window_edge_max == 1.0  # docs/dedup.md
    flagged, by = _flag_rules(pairs, cfg)
    assert flagged.tolist() == [False, True, True, True]
    assert by[2] == "edge" and set(by[3].split(",")) == {"phash", "edge"}
    same, _ = _flag_rules(pairs, DedupConfig(l2_rms_max=None, aligned_max=None, ratio_max=None, aligned_k=5,
                                             window_edge_max=None, edge_max=1.1, edge_ratio_max=None))
    assert same.all()
    assert "coarse-window candidates: edge <= 1" in _rules_text(cfg)
    with pytest.raises(ValueError, match=r"window_edge_max == 3; must be in \[0, 2\]"):
        find_near_duplicates(make_imageset(5), None, window_edge_max=3)


def test_edge_rule_has_its_own_limit_inside_the_query_set():
    from replicate.dedup import _flag_rules, _rules_text

    # edge 1.0 passes edge_max = 1.1 against a reference set, not within_edge_max = 0.9 inside
    # the query set; edge 0.85 passes both; aligned 0.85 is beyond edge_aligned_max = 0.8
    pairs = pd.DataFrame({"aligned": [0.5, 0.5, 0.5, 0.5, 0.85], "aligned_ratio": [0.9] * 5,
                          "edge": [1.0, 1.0, 0.85, 0.85, 0.5]})
    within = np.array([False, True, False, True, False])
    off = {"hash_radii": {}, "l2_rms_max": None, "aligned_max": None, "ratio_max": None}
    cfg = DedupConfig(**off)
    assert (cfg.edge_max, cfg.within_edge_max, cfg.edge_aligned_max) == (1.1, 0.9, 0.8)  # docs/dedup.md
    flagged, by = _flag_rules(pairs, cfg, within=within)
    assert flagged.tolist() == [True, False, True, True, False]
    assert set(by[flagged]) == {"edge"}
    same, _ = _flag_rules(pairs, DedupConfig(**off, within_edge_max=None), within=within)
    assert same.tolist() == [True, True, True, True, False]
    assert "inside the set: edge <= 0.9" in _rules_text(cfg)
    with pytest.raises(ValueError, match=r"within_edge_max == 2.5; must be in \[0, 2\]"):
        find_near_duplicates(make_imageset(5), None, within_edge_max=2.5)


def test_edge_ratio_rule_flags_edges_up_to_1_1_that_stand_out():
    from replicate.dedup import _flag_rules, _rules_text

    # query 0: edge 1.05 against a next-best of 1.2 (ratio 0.875: flagged); query 1: 1.05
    # against 1.1 (0.95: not); query 2: 0.95 (under edge_max = 1.0: flagged whatever its
    # ratio); query 3: 1.12 with ratio 0.5 (beyond 1.1: not); row 8, inside the query set,
    # edge 1.05 with ratio 0.5 (the ratio part does not apply there: not)
    pairs = pd.DataFrame({
        "query_pos": [0, 0, 1, 1, 2, 2, 3, 3, 4],
        "aligned": [0.5] * 9, "aligned_ratio": [0.9] * 9,
        "edge": [1.05, 1.2, 1.05, 1.1, 0.95, 0.96, 1.12, 2.24, 1.05],
        "edge_ratio": [0.875, 1.14, 0.95, 1.05, 0.99, 1.01, 0.5, 2.0, 0.5],
    })
    within = np.array([False] * 8 + [True])
    off = {"hash_radii": {}, "l2_rms_max": None, "aligned_max": None, "ratio_max": None, "within_edge_max": None}
    guard = {"edge_max": 1.0, "edge_ratio_max": 0.9}
    flagged, by = _flag_rules(pairs, DedupConfig(**off, **guard), within=within)
    assert flagged.tolist() == [True, False, False, False, True, True, False, False, False]
    assert set(by[flagged]) == {"edge"}
    assert not _flag_rules(pairs, DedupConfig(**off, edge_max=1.0), within=within)[0][0]
    assert "edge <= 1.1 and edge_ratio <= 0.9 (not inside the set)" in _rules_text(DedupConfig(**guard))
    with pytest.raises(ValueError, match="config.edge_ratio_max == 0.9; must be None for a candidate table without an 'edge_ratio'"):
        _flag_rules(pairs.drop(columns="edge_ratio"), DedupConfig(**off, **guard))
    with pytest.raises(ValueError, match=r"edge_ratio_max == 1.5; must be in \[0, 1\]"):
        find_near_duplicates(make_imageset(5), None, edge_ratio_max=1.5)
    with pytest.raises(ValueError, match=r"edge_ratio_edge_max == 3; must be in \[0, 2\]"):
        find_near_duplicates(make_imageset(5), None, edge_ratio_edge_max=3)


def test_ratio_to_best_other_matches_a_loop_over_each_group():
    from replicate.dedup import _ratio_to_best_other

    def by_loop(groups, values, counted):
        out = np.full(len(values), np.nan)
        for i in range(len(values)):
            if np.isnan(values[i]):
                continue
            others = [values[j] for j in range(len(values))
                      if j != i and groups[j] == groups[i] and counted[j] and not np.isnan(values[j])]
            best = min(others) if others else np.inf
            if values[i] == 0 and best == 0:
                out[i] = 1.0
            elif np.isinf(best):
                out[i] = 0.0
            else:
                out[i] = values[i] / best if best > 0 else np.inf
        return out

    rng = np.random.default_rng(6)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        groups = rng.integers(0, 6, n)
        values = rng.choice([0.0, 0.5, 0.9, 1.0, 1.1, 1.3, np.nan], n)
        counted = rng.random(n) < 0.7
        np.testing.assert_allclose(_ratio_to_best_other(groups, values, counted), by_loop(groups, values, counted))
        np.testing.assert_allclose(_ratio_to_best_other(groups, values), by_loop(groups, values, np.ones(n, bool)))
    assert _ratio_to_best_other(np.zeros(0), np.zeros(0)).shape == (0,)


def test_ratio_to_others_matches_a_loop_over_each_group():
    from replicate.dedup import _ratio_to_others

    def by_loop(groups, values, counted):
        out = np.full(len(values), np.nan)
        for g in np.unique(groups):
            members = np.flatnonzero(groups == g)
            for j in members:
                others = [values[i] for i in members if i != j and counted[i]]
                if len(members) > 1 and others and np.median(others) > 0:
                    out[j] = values[j] / np.median(others)
        return out

    rng = np.random.default_rng(0)
    for t in range(200):
        n = int(rng.integers(0, 40))
        groups = rng.integers(0, int(rng.integers(1, 8)), n)
        values = rng.choice([0.0, 0.3, 0.5, 0.7], n) if t % 3 == 0 else rng.uniform(0, 1.5, n)  # ties, zeros
        counted = np.ones(n, bool) if t % 2 else rng.uniform(size=n) < 0.7
        np.testing.assert_allclose(_ratio_to_others(groups, values, counted), by_loop(groups, values, counted),
                                   equal_nan=True)


def test_ratio_rule_has_its_own_limits_inside_the_query_set():
    from replicate.dedup import _flag_rules

    # the same pair values once against a reference set, once inside the query set:
    # aligned 0.5 with ratio 0.65 passes ratio <= 0.7 within 0.7, not ratio <= 0.6 within 0.45
    pairs = pd.DataFrame({"aligned": [0.5, 0.5, 0.3, 0.3], "aligned_ratio": [0.65, 0.65, 0.5, 0.5]})
    within = np.array([False, True, False, True])
    cfg = DedupConfig(hash_radii={}, l2_rms_max=None, aligned_max=None, edge_max=None)
    assert (cfg.ratio_max, cfg.ratio_aligned_max, cfg.within_ratio_max, cfg.within_ratio_aligned_max) == (
        0.7, 0.7, 0.6, 0.45)  # the defaults chosen by the review in docs/dedup.md
    flagged, _ = _flag_rules(pairs, cfg, within=within)
    assert flagged.tolist() == [True, False, True, True]
    same, _ = _flag_rules(pairs, DedupConfig(hash_radii={}, l2_rms_max=None, aligned_max=None, within_ratio_max=None,
                                             edge_max=None),
                          within=within)
    assert same.tolist() == [True, True, True, True]
    off, _ = _flag_rules(pairs, DedupConfig(hash_radii={}, l2_rms_max=None, aligned_max=None, ratio_max=None,
                                            edge_max=None),
                         within=within)
    assert not off.any()
    with pytest.raises(ValueError, match=r"within_ratio_max == 2; must be in \[0, 1\]"):
        find_near_duplicates(make_imageset(5), None, within_ratio_max=2)
    with pytest.raises(TypeError, match=r"within_ratio_aligned_max == None; must be a number in \[0, 2\]"):
        find_near_duplicates(make_imageset(5), None, within_ratio_aligned_max=None)


def test_rules_own_every_setting_and_the_columns_the_search_computes(sets):
    """A rule is data: each DedupConfig field is checked by exactly one rule (within_query
    by the search), and the columns the rules declare are the ones a search computes."""
    from replicate.dedup.rules import RULES, _check_config, _distance_columns

    owned = [name for rule in RULES for name in rule.settings]
    assert len(owned) == len(set(owned)) and set(owned) | {"within_query"} == set(DedupConfig.__dataclass_fields__)
    assert [r.name for r in RULES] == ["hash", "l2", "aligned", "mirror", "ratio", "tiny", "feature", "edge",
                                       "descriptor"]
    assert [r.name for r in RULES if r.gate] == ["descriptor"]  # a verification gate, after the rules
    query, ref = sets
    for cfg in (DedupConfig(), DedupConfig(aligned_k=0, edge_max=None, flips=True), DedupConfig(hash_radii={})):
        res = find_near_duplicates(query, {"ref": ref}, config=cfg)
        computed = set(res.pairs.columns) - {"query_id", "reference_set", "reference_id", "flagged", "flagged_by"}
        assert set(_distance_columns(_check_config(cfg))) == computed


def test_presets_name_the_measured_settings(sets):
    from replicate.dedup import PRESETS

    assert DedupConfig.preset("recall") == DedupConfig()  # the defaults: docs/dedup.md
    assert DedupConfig.preset("balanced") == DedupConfig(edge_max=1.0, edge_ratio_max=0.9)  # the edge ratio guard
    assert DedupConfig.preset("fast") == DedupConfig(aligned_k=0)
    assert DedupConfig.preset("balanced", within_query=False).within_query is False
    assert sorted(PRESETS) == ["balanced", "clean", "fast", "recall"]  # clean: tests/test_dedup_gate.py
    query, ref = sets
    by_name = find_near_duplicates(query, {"ref": ref}, config="fast", within_query=False)
    by_field = find_near_duplicates(query, {"ref": ref}, aligned_k=0, within_query=False)
    pd.testing.assert_frame_equal(by_name.pairs, by_field.pairs)
    with pytest.raises(ValueError, match=r"preset == 'balance'; must be one of: 'recall', 'balanced', 'clean', 'fast'. "
                                         r"Did you mean 'balanced'"):
        DedupConfig.preset("balance")
    with pytest.raises(ValueError, match=r"keyword argument == 'edge_maxx'; must be one of"):
        DedupConfig.preset("fast", edge_maxx=1.0)


def test_cosine_knn_blocked_over_references_equals_one_block():
    """The tiny-image / feature kNN holds at most chunk x ref_chunk similarities: blocked over
    the references it gives the one-block answer, ties (exact copies in different blocks)
    going to the lower index."""
    from replicate.dedup.signatures import _cosine_knn

    rng = np.random.default_rng(4)
    r = rng.normal(size=(300, 12)).astype(np.float32)
    r[[250, 40, 130]] = r[7]  # three copies of row 7, in three blocks
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    q = np.concatenate([r[:20] + 0.05 * rng.normal(size=(20, 12)).astype(np.float32), r[[7]]])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    one_i, one_d = _cosine_knn(q, r, 6, chunk=8)
    for ref_chunk in (50, 64, 299):
        i, d = _cosine_knn(q, r, 6, chunk=8, ref_chunk=ref_chunk)
        np.testing.assert_array_equal(i, one_i)
        np.testing.assert_array_equal(d, one_d)
    full = (q.astype(np.float64) @ r.T.astype(np.float64))
    np.testing.assert_array_equal(i[:20, 0], np.argmax(full[:20], axis=1))
    np.testing.assert_array_equal(one_i[20, :4], [7, 40, 130, 250])
    np.testing.assert_array_equal(_cosine_knn(q, r, 6, chunk=8, ref_chunk=50)[0][20, :4], [7, 40, 130, 250])
