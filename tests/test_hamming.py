"""Hamming search must return exactly what a brute-force distance matrix gives.

The reference here is numpy: ``np.bitwise_count(q[:, None] ^ r[None]).sum(-1)`` over
small sets, with pairs and neighbours read off the full matrix.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicate.hamming import HammingIndex, as_hash_array, hamming_distance, knn_search, radius_search
from replicate.hashing import hash_set


def brute_matrix(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    q2 = q.reshape(len(q), -1)
    r2 = r.reshape(len(r), -1)
    return np.bitwise_count(q2[:, None, :] ^ r2[None, :, :]).sum(-1).astype(np.int64)


def brute_radius(q: np.ndarray, r: np.ndarray | None, radius: int):
    within = r is None
    d = brute_matrix(q, q if r is None else r)
    qi, ri = np.nonzero(d <= radius)
    if within:
        keep = qi < ri
        qi, ri = qi[keep], ri[keep]
    return qi, ri, d[qi, ri]


def brute_knn(q: np.ndarray, r: np.ndarray | None, k: int):
    within = r is None
    d = brute_matrix(q, q if r is None else r).astype(float)
    if within:
        np.fill_diagonal(d, np.inf)
    idx = np.broadcast_to(np.arange(d.shape[1]), d.shape)
    order = np.lexsort((idx, d), axis=1)[:, :k]
    return order, np.take_along_axis(d, order, 1).astype(np.int64)


def planted(seed: int, n: int, words: int, copies: int = 60, flips: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Random hashes plus queries that are near copies (up to ``flips`` bits) of some of them."""
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 2**64 - 1, size=(n, words), dtype=np.uint64, endpoint=True)
    q = ref[rng.choice(n, copies, replace=False)].copy()
    for row in q:
        for _ in range(int(rng.integers(0, flips + 1))):
            w = int(rng.integers(words))
            row[w] ^= np.uint64(1) << np.uint64(rng.integers(64))
    q = np.concatenate([q, rng.integers(0, 2**64 - 1, size=(40, words), dtype=np.uint64, endpoint=True)])
    ref = np.concatenate([ref, ref[:15]])  # exact duplicates inside the reference set
    if words == 1:
        return q[:, 0].copy(), ref[:, 0].copy()
    return q, ref


def assert_same(got, want) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == np.int64
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("words", [1, 2, 4])
@pytest.mark.parametrize("radius", [0, 3, 8, 20])
def test_radius_search_equals_brute_force(words: int, radius: int) -> None:
    q, ref = planted(words * 100 + radius, 2500, words)
    assert_same(radius_search(q, ref, radius), brute_radius(q, ref, radius))
    assert_same(radius_search(ref, None, radius), brute_radius(ref, None, radius))


@pytest.mark.parametrize("words", [1, 3])
def test_knn_equals_brute_force(words: int) -> None:
    q, ref = planted(7 + words, 2100, words)
    assert_same(knn_search(q, ref, 5), brute_knn(q, ref, 5))
    assert_same(knn_search(ref[:700], None, 3), brute_knn(ref[:700], None, 3))


def test_many_equal_hashes_overflow_the_buffers() -> None:
    # 300 identical hashes: 44,850 pairs within the set, 300 hits per query (> the buffer)
    ref = np.full(300, 0xDEADBEEF, dtype=np.uint64)
    qi, ri, d = radius_search(ref, None, 0)
    assert len(qi) == 300 * 299 // 2
    assert np.all(qi < ri) and np.all(d == 0)
    assert_same(radius_search(ref[:5], ref, 0), brute_radius(ref[:5], ref, 0))
    index = HammingIndex(ref)
    assert_same(index.radius_search(ref[:5], 0), brute_radius(ref[:5], ref, 0))
    assert_same(index.radius_search(None, 1), brute_radius(ref, None, 1))


@pytest.mark.parametrize("words", [1, 2])
@pytest.mark.parametrize("radius", [0, 2, 5, 8, 12])
def test_index_equals_exhaustive(words: int, radius: int) -> None:
    q, ref = planted(radius + 10 * words, 20000, words, copies=200, flips=10)
    index = HammingIndex(ref)
    assert index.m >= 3
    assert index.probe_cost(radius) < 0.25 * len(index)  # the tables are probed, not scanned
    got = index.radius_search(q, radius)
    assert_same(got, radius_search(q, ref, radius))
    assert_same(index.radius_search(None, radius), radius_search(ref, None, radius))


def test_index_on_short_hashes_and_explicit_substrings() -> None:
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 2**36, size=3000, dtype=np.uint64)  # 36-bit hashes (hash_size=6)
    q = ref[:50] ^ np.uint64(0b101)
    for m in (2, 4, 9):
        index = HammingIndex(ref, bits=36, substrings=m)
        assert_same(index.radius_search(q, 4), brute_radius(q, ref, 4))
    with pytest.raises(ValueError, match="radius == 37; must be <= 36"):
        HammingIndex(ref, bits=36).radius_search(q, 37)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 60),
    st.integers(1, 60),
    st.integers(0, 70),
    st.integers(0, 2**32),
)
def test_searches_on_hypothesis_sets(words: int, nq: int, nr: int, radius: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # few distinct bit patterns so that many pairs are close
    base = rng.integers(0, 2**64 - 1, size=(4, words), dtype=np.uint64, endpoint=True)
    noise = np.where(
        rng.random((nq + nr, words)) < 0.5, rng.integers(0, 2**8, size=(nq + nr, words)), 0
    ).astype(np.uint64)
    data = base[rng.integers(0, 4, nq + nr)] ^ noise
    q, ref = data[:nq], data[nq:]
    radius = min(radius, 64 * words)
    assert_same(radius_search(q, ref, radius), brute_radius(q, ref, radius))
    assert_same(radius_search(q, None, radius), brute_radius(q, None, radius))
    assert_same(HammingIndex(ref).radius_search(q, radius), brute_radius(q, ref, radius))
    k = min(3, nr)
    assert_same(knn_search(q, ref, k), brute_knn(q, ref, k))


def test_hashes_objects_are_accepted_and_checked(toy) -> None:
    a = hash_set(toy, "phash")
    qi, ri, d = radius_search(a, a, 0)
    assert np.all(d == 0) and set(zip(qi.tolist(), ri.tolist())) >= {(i, i) for i in range(len(toy))}
    b = hash_set(toy, "phash", highfreq_factor=2)
    with pytest.raises(ValueError, match="must be hashes made with the same hasher and parameters"):
        radius_search(a, b, 4)
    with pytest.raises(ValueError, match="must be hashes made with the same hasher and parameters"):
        knn_search(a, b, 2)


def test_hamming_distance_elementwise() -> None:
    a = np.array([0, 0xFF, 2**64 - 1], dtype=np.uint64)
    b = np.array([1, 0x0F, 0], dtype=np.uint64)
    np.testing.assert_array_equal(hamming_distance(a, b), [1, 4, 64])
    assert hamming_distance(a[:0], b[:0]).shape == (0,)
    with pytest.raises(ValueError, match=r"b == array.*must be of the same shape as a \(3, 1\)"):
        hamming_distance(a, b[:2])


def test_bad_input() -> None:
    h = np.arange(10, dtype=np.uint64)
    with pytest.raises(ValueError, match="radius == -1; must be >= 0"):
        radius_search(h, h, -1)
    with pytest.raises(ValueError, match="radius == 65; must be <= 64"):
        radius_search(h, h, 65)
    with pytest.raises(TypeError, match="radius == 2.5; must be an integer"):
        radius_search(h, h, 2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="query == array.*must be of dtype uint64"):
        radius_search(h.astype(np.int64), h, 2)
    with pytest.raises(TypeError, match="reference == array.*must be of dtype uint64"):
        knn_search(h, h.astype(np.float64), 2)
    with pytest.raises(
        ValueError, match=r"reference == array.*must be hashes of the same width as query \(1 uint64"
    ):
        radius_search(h, np.zeros((10, 2), np.uint64), 2)
    with pytest.raises(ValueError, match="query == array.*must be non-empty"):
        radius_search(h[:0], h, 2)
    with pytest.raises(ValueError, match="reference == array.*must be non-empty"):
        HammingIndex(h[:0])
    with pytest.raises(
        ValueError,
        match=r"k == 10; must be <= 9 \(the number of reference hashes other than the query itself\)",
    ):
        knn_search(h, None, 10)
    with pytest.raises(ValueError, match="k == 0; must be >= 1"):
        knn_search(h, h, 0)
    with pytest.raises(ValueError, match=r"query == array.*must be hashes of the indexed width"):
        HammingIndex(h).radius_search(np.zeros((3, 2), np.uint64), 2)
    with pytest.raises(TypeError, match="query == .*must be a uint64 array of packed hashes"):
        as_hash_array([1, 2, 3])
