"""The pruned exact pixel-L2 search: the same neighbours, distances and radius counts as
every pair's distance, a valid lower bound, the fall-back for images without structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.fft import dctn

from replicate import _l2
from replicate._l2 import l2_index, l2_knn


def brute(q: np.ndarray, r: np.ndarray, k: int, within: bool = False):
    """Every squared distance in int64; neighbours by (distance, position)."""
    a = q.reshape(len(q), -1).astype(np.int64)
    b = r.reshape(len(r), -1).astype(np.int64)
    full = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    if within:
        np.fill_diagonal(full, np.iinfo(np.int64).max)
    order = np.lexsort((np.broadcast_to(np.arange(len(b)), full.shape), full), axis=1)[:, :k]
    return order, np.take_along_axis(full, order, 1), full


def smooth_images(n: int, seed: int, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """Images with the low-frequency structure of photographs: a random 6x6 colour field
    upsampled, plus a little noise."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (n, 3, 6, 6)).astype(np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    x = fine.permute(0, 2, 3, 1).numpy() + rng.normal(0, 6, (n, *size, 3))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def test_projection_is_the_orthonormal_dct_and_bounds_every_distance():
    rng = np.random.default_rng(0)
    for shape in [(32, 32, 3), (24, 40, 3), (48, 64, 1)]:
        x = rng.integers(0, 256, (20, *shape), dtype=np.uint8)
        mask = _l2._projection_mask(*shape)
        got = _l2._project(x.reshape(20, -1), shape, mask)
        centred = x.astype(np.float64) - 128
        colour = _l2._colour_matrix(shape[2])
        full = dctn(centred @ colour.T, type=2, axes=(1, 2), norm="ortho")  # (n, u, v, C)
        want = full.transpose(0, 3, 1, 2)[:, np.transpose(mask, (2, 0, 1))]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
        # orthonormal: the full transform keeps every norm, so the kept part bounds it
        np.testing.assert_allclose((full**2).sum((1, 2, 3)), (centred**2).sum((1, 2, 3)), rtol=1e-12)
        lb = ((got[:, None].astype(np.float64) - got[None]) ** 2).sum(-1)
        exact = ((centred[:, None] - centred[None]) ** 2).sum((2, 3, 4))
        assert np.all(lb <= exact * (1 + 1e-6) + 1e-3)
        assert mask.sum() <= 0.25 * np.prod(shape)


@pytest.mark.parametrize("with_radius", [False, True])
def test_pruned_search_equals_every_pair_with_ties_and_copies(with_radius):
    q = smooth_images(300, 1)
    r = smooth_images(900, 2)
    r[[10, 40, 41]] = q[5]  # three tied exact copies of one query: position order
    r[100] = np.clip(q[7].astype(int) + 3, 0, 255)  # a near copy
    r[[200, 201]] = r[300]  # tied references of other queries
    order, dist, full = brute(q, r, 5)
    # a radius past the 5th neighbour of 30% of the queries: counts beyond the k listed
    radius = float(np.sqrt(np.percentile(dist[:, 4], 30))) if with_radius else None
    idx = l2_index(r)
    assert idx is not None and len(idx) == 900
    res = l2_knn(q, idx, k=5, radius=radius)
    np.testing.assert_array_equal(res.indices, order)
    np.testing.assert_array_equal(res.sq_distances, dist)
    np.testing.assert_array_equal(res.indices[5, :3], [10, 40, 41])
    assert res.indices[7, 0] == 100
    if radius is not None:
        np.testing.assert_array_equal(res.within_radius, (full <= radius**2).sum(1))
        assert (res.within_radius > 5).sum() >= 60  # the radius reaches past the k nearest of some
    else:
        assert res.within_radius is None
    assert res.exact_share is not None and res.exact_share < 0.2  # most pairs ruled out
    # the same via prune=True on the pixels, and the brute-force path
    again = l2_knn(q, r, k=5, radius=radius, prune=True)
    np.testing.assert_array_equal(again.indices, res.indices)
    plain = l2_knn(q, r, k=5, radius=radius, prune=False)
    assert plain.exact_share is None
    np.testing.assert_array_equal(plain.indices, res.indices)


def test_pruned_within_set_excludes_self_and_keeps_duplicates():
    x = smooth_images(700, 3)
    x[[3, 500]] = x[250]
    res = l2_knn(x, k=3, prune=True)
    order, dist, _ = brute(x, x, 3, within=True)
    np.testing.assert_array_equal(res.indices, order)
    np.testing.assert_array_equal(res.sq_distances, dist)
    assert res.indices[250, :2].tolist() == [3, 500] and res.sq_distances[250, 0] == 0
    assert not np.any(res.indices == np.arange(700)[:, None])
    assert res.exact_share is not None


def test_noise_falls_back_to_every_pair_with_the_same_answer():
    rng = np.random.default_rng(4)
    q = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    r = rng.integers(0, 256, (120, 32, 32, 3), dtype=np.uint8)
    res = l2_knn(q, r, k=4, radius=4000.0, prune=True)
    order, dist, full = brute(q, r, 4)
    np.testing.assert_array_equal(res.indices, order)
    np.testing.assert_array_equal(res.sq_distances, dist)
    np.testing.assert_array_equal(res.within_radius, (full <= 4000.0**2).sum(1))
    assert res.exact_share == 1.0  # no low-frequency structure: every pair computed


def test_grayscale_and_non_square_images_are_pruned_exactly():
    q = smooth_images(60, 5, size=(24, 40))[..., 0]
    r = smooth_images(200, 6, size=(24, 40))[..., 0]
    res = l2_knn(q, r, k=2, prune=True)
    order, dist, _ = brute(q, r, 2)
    np.testing.assert_array_equal(res.indices, order)
    np.testing.assert_array_equal(res.sq_distances, dist)
    assert res.exact_share is not None


def test_what_is_not_pruned():
    assert l2_index(np.zeros((5, 3, 3, 3), np.uint8)) is None  # the projection would be over a quarter of the image
    assert l2_index(np.zeros((5, 8, 8, 2), np.uint8)) is None  # two channels: no colour rotation
    assert l2_index(np.zeros((5, 300), np.uint8)) is None  # flat rows: no image shape
    res = l2_knn(np.zeros((3, 300), np.uint8), np.ones((4, 300), np.uint8), k=1, prune=True)
    assert res.exact_share is None  # searched by brute force
    small = l2_knn(smooth_images(30, 7), smooth_images(40, 8), k=1)
    assert small.exact_share is None  # the default prunes only sets of 2,048+ images


def test_prune_argument_and_index_shape_errors():
    x = smooth_images(10, 9)
    with pytest.raises(TypeError, match=r"prune == 'yes'; must be True, False or None"):
        l2_knn(x, k=1, prune="yes")
    idx = l2_index(smooth_images(10, 10, size=(16, 16)))
    with pytest.raises(ValueError, match=r"values per reference image == 768; must be 3072 \(the query's"):
        l2_knn(x, idx, k=1)


def test_real_cifar_test_against_train_slice_equals_every_pair(cifar_test, cifar_train):
    q = cifar_test.images[:400]
    r = cifar_train.images[:6000]
    res = l2_knn(q, r, k=3, radius=4.0 * np.sqrt(3072), prune=True)
    plain = l2_knn(q, r, k=3, radius=4.0 * np.sqrt(3072), prune=False)
    np.testing.assert_array_equal(res.indices, plain.indices)
    np.testing.assert_array_equal(res.sq_distances, plain.sq_distances)
    np.testing.assert_array_equal(res.within_radius, plain.within_radius)
    assert res.exact_share is not None and res.exact_share < 0.01  # measured: about 0.1%


def test_bounds_held_at_once_do_not_change_the_result(monkeypatch):
    """Against many references the pruned search takes fewer queries per chunk (at most
    ``_PRUNE_BOUNDS`` lower bounds at once); the answer stays the same."""
    q, r = smooth_images(50, 11), smooth_images(400, 12)
    want = l2_knn(q, r, k=3, radius=500.0, prune=True)
    monkeypatch.setattr(_l2, "_PRUNE_BOUNDS", 2000)  # 5 queries per chunk against 400
    got = l2_knn(q, r, k=3, radius=500.0, prune=True)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.sq_distances, want.sq_distances)
    np.testing.assert_array_equal(got.within_radius, want.within_radius)
    order, dist, _ = brute(q, r, 3)
    np.testing.assert_array_equal(got.indices, order)
