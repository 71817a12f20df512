"""Pool stages over image sources, chunk by chunk: identical to the in-memory path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from replicate import ImageSet
from replicate.dedup import DedupConfig, find_near_duplicates
from replicate.hashing import hash_set
from replicate.keywords import allocate, keyword_counts
from replicate.sampling import sample
from replicate.sources import open_source, write_shards
from replicate.streaming import (
    keyword_chunk,
    merge_keywords,
    sample_source,
    scan_pool,
    source_hashes,
)
from tests.conftest import make_imageset

# the signals without the (slow) edge and coarse-window searches, for tests that check the plumbing
FAST = DedupConfig(edge_max=None, aligned_k=0)


def _assert_same_dedup(a, b) -> None:
    pd.testing.assert_frame_equal(a.pairs, b.pairs)
    pd.testing.assert_frame_equal(a.groups, b.groups)
    pd.testing.assert_frame_equal(a.flagged, b.flagged)
    np.testing.assert_array_equal(a.kept_ids, b.kept_ids)


def _pool_with_copies(n: int = 60) -> tuple[ImageSet, ImageSet]:
    """A pool with exact and noisy copies of reference images and of its own images."""
    ref = make_imageset(40, seed=1, name="ref")
    pool = make_imageset(n, seed=2, name="pool")
    images = pool.images.copy()
    images[3] = ref.images[5]
    images[7] = np.clip(ref.images[9].astype(int) + 3, 0, 255).astype(np.uint8)
    images[20] = images[11]  # within the pool
    images[n - 5] = np.clip(images[n // 2].astype(int) - 2, 0, 255).astype(np.uint8)
    return ImageSet(images, pool.labels, pool.class_names, pool.ids, pool.metadata, name="pool"), ref


@pytest.mark.parametrize("chunk_size,config", [pytest.param(16, DedupConfig(), marks=pytest.mark.slow), (64, FAST)])
def test_scan_equals_the_in_memory_path(tmp_path, chunk_size, config):
    pool, ref = _pool_with_copies()
    write_shards(pool, tmp_path / "tar", shard_size=25)
    src = open_source(tmp_path / "tar", chunk_size=chunk_size, name="pool")
    scan = scan_pool(src, {"ref": ref}, hashes=["phash", "dhash"], config=config)
    mem = find_near_duplicates(pool, {"ref": ref}, config=config, chunk_size=chunk_size)
    _assert_same_dedup(scan.dedup, mem)
    flagged = set(scan.dedup.flagged_ids)
    assert {"pool/000003", "pool/000007"} <= flagged and ({"pool/000011", "pool/000020"} & flagged)
    for m in ("phash", "dhash"):
        assert scan.hashes[m] == hash_set(pool, m)
    assert scan.keywords.to_dict() == keyword_counts(pool).to_dict()
    assert scan.n_decoded == len(pool) and scan.skipped == ()
    d = scan.to_dict()
    assert d["dedup"]["n_flagged"] == mem.n_flagged and d["source"]["n"] == 60


def test_scan_without_within_pool_search_and_with_workers(tmp_path):
    pool, ref = _pool_with_copies()
    write_shards(pool, tmp_path / "tar", shard_size=25)
    src = open_source(tmp_path / "tar", chunk_size=20, name="pool")
    scan = scan_pool(src, [ref], config=FAST, within_query=False, workers=2)
    mem = find_near_duplicates(pool, [ref], config=FAST, within_query=False, chunk_size=20)
    _assert_same_dedup(scan.dedup, mem)
    assert (scan.dedup.pairs.reference_set == "ref").all()
    # only the flagged pairs kept, chunk by chunk: the same groups, flags and kept ids
    slim = scan_pool(src, [ref], config=FAST, keep_pairs="flagged")
    full = find_near_duplicates(pool, [ref], config=FAST, chunk_size=20)
    pd.testing.assert_frame_equal(slim.dedup.groups, full.groups)
    pd.testing.assert_frame_equal(slim.dedup.flagged, full.flagged)
    pd.testing.assert_frame_equal(slim.dedup.pairs, full.pairs[full.pairs.flagged].reset_index(drop=True))
    assert len(slim.dedup.pairs) < len(full.pairs)


def test_skipped_images_are_counted_and_left_out(tmp_path):
    pool, ref = _pool_with_copies(30)
    paths = write_shards(pool, tmp_path / "tar", shard_size=30)
    # corrupt the bytes of sample 4's image inside the shard (same length, so the tar stays valid)
    import tarfile

    with tarfile.open(paths[0]) as tf:
        m = tf.getmember("000000004.png")
    data = bytearray(paths[0].read_bytes())
    data[m.offset_data : m.offset_data + m.size] = b"\0" * m.size
    paths[0].write_bytes(bytes(data))
    src = open_source(tmp_path / "tar", chunk_size=8, name="pool", on_error="skip")
    scan = scan_pool(src, [ref], config=FAST)
    assert scan.n_decoded == 29 and [s[0] for s in scan.skipped] == ["pool/000004"]
    assert "000000004.png" in scan.skipped[0][1] and scan.to_dict()["skipped"]["n"] == 1
    rest = pool.select(np.delete(np.arange(30), 4))
    _assert_same_dedup(scan.dedup, find_near_duplicates(rest, [ref], config=FAST, chunk_size=8))
    assert scan.keywords.to_dict() == keyword_counts(rest).to_dict()
    with pytest.raises(ValueError, match="member '000000004.png' of shard"):
        scan_pool(src.with_options(on_error="raise"), [ref], config=FAST)


def test_keyword_chunks_merge_to_keyword_counts():
    s = make_imageset(50)
    parts = [keyword_chunk(s.labels[a : a + 7], s.metadata["keyword"][a : a + 7]) for a in range(0, 50, 7)]
    merged = merge_keywords(parts, s.class_names, name=s.name)
    assert merged.to_dict() == keyword_counts(s).to_dict()
    with pytest.raises(ValueError, match="labels of 'x' == '1 of 3 unlabelled"):
        merge_keywords([{(0, "a"): 2, (-1, "b"): 1}], s.class_names, name="x")


def test_sample_source_equals_sample(tmp_path):
    pool = make_imageset(200, seed=4, name="pool")
    write_shards(pool, tmp_path / "tar", shard_size=64)
    src = open_source(tmp_path / "tar", chunk_size=50, name="pool")
    alloc = allocate(keyword_counts(pool), 30)
    got = sample_source(src, alloc, seed=3, exclude=["pool/000010"])
    want = sample(pool, alloc, seed=3, exclude=["pool/000010"], fingerprint=False)
    assert got.selected_ids == want.selected_ids and got.strata == want.strata
    np.testing.assert_array_equal(got.testset.images, want.testset.images)
    np.testing.assert_array_equal(got.testset.labels, want.testset.labels)
    assert got.testset.metadata.keys() == want.testset.metadata.keys()
    assert got.pool["listing_fingerprint"] == src.listing_fingerprint
    assert got.testset.fingerprint == want.testset.fingerprint


def test_source_hashes_and_bad_arguments(tmp_path, toy):
    write_shards(toy, tmp_path / "tar")
    src = open_source(tmp_path / "tar", chunk_size=9)
    assert source_hashes(src, "whash") == hash_set(toy, "whash")
    with pytest.raises(TypeError, match="source == 'ImageSet'; must be an ImageSource"):
        scan_pool(toy)
    with pytest.raises(KeyError, match="keyword_column == 'kw'; must be a metadata column"):
        scan_pool(src, keyword_column="kw")
    with pytest.raises(ValueError, match="keyword argument == 'l2k'; must be one of"):
        scan_pool(src, l2k=3)
    with pytest.raises(ValueError, match="image shape of references"):
        scan_pool(src, [make_imageset(5, size=16, name="small")])


# --------------------------------------------------------------------------- the real pool


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["png", "jpg", "parquet"])
def test_real_pool_scan_equals_in_memory(pool_sources, candidate_pool, cifar_test, kind):
    """The real 12,100-image pool as PNG folder, JPEG-95 shards and Parquet: hashes and keyword
    counts of all of it, and near-duplicates of its first 3,000 images against 1,000 CIFAR-10
    test images and within, equal the in-memory path's on the same (decoded) images."""
    if kind not in pool_sources:
        pytest.skip("pyarrow not installed")
    src = pool_sources[kind].with_options(chunk_size=4096)
    mem_pool = (pool_sources["jpg_decoded"] if kind == "jpg" else candidate_pool).renamed(src.name)
    scan = scan_pool(src, hashes=["phash", "dhash"], dedup=False)
    for m in ("phash", "dhash"):
        assert scan.hashes[m] == hash_set(mem_pool, m)
    assert scan.keywords.to_dict() == keyword_counts(mem_pool).to_dict()
    ref = cifar_test.select(np.arange(1000))
    part = src.select(np.arange(3000)).with_options(chunk_size=1024)
    scan = scan_pool(part, {"cifar10-test": ref}, config=FAST)
    mem = find_near_duplicates(mem_pool.select(np.arange(3000)), {"cifar10-test": ref}, config=FAST, chunk_size=1024)
    _assert_same_dedup(scan.dedup, mem)
    assert mem.n_flagged > 0


def test_within_pool_search_without_the_pool_index_is_the_same(tmp_path, monkeypatch):
    """A pool over ``_WITHIN_INDEX_MAX`` images searches itself pair by pair over the
    memory-mapped thumbnails instead of holding an index of its projection: same result."""
    from replicate import streaming

    pool, ref = _pool_with_copies()
    write_shards(pool, tmp_path / "tar", shard_size=25)
    src = open_source(tmp_path / "tar", chunk_size=64, name="pool")
    with_index = scan_pool(src, {"ref": ref}, hashes=["phash", "dhash"], config=FAST)
    monkeypatch.setattr(streaming, "_WITHIN_INDEX_MAX", 0)
    without = scan_pool(src, {"ref": ref}, hashes=["phash", "dhash"], config=FAST)
    _assert_same_dedup(with_index.dedup, without.dedup)
    assert {"pool/000011", "pool/000020"} & set(without.dedup.flagged_ids)


def test_scan_returns_free_heap_memory_after_every_chunk(tmp_path, monkeypatch):
    """The memory model (docs/sources.md): the C heap's free pages go back after each chunk,
    so resident memory follows what the scan holds, not what it has freed (the 10^6-image
    benchmark grew to 3.6 GB without it)."""
    import replicate.streaming as st

    calls = []
    real = st._return_free_heap
    monkeypatch.setattr(st, "_return_free_heap", lambda: calls.append(1) or real())
    pool, ref = _pool_with_copies()
    write_shards(pool, tmp_path / "tar", shard_size=25)
    src = open_source(tmp_path / "tar", chunk_size=20, name="pool")
    scan = scan_pool(src, [ref], config=FAST, within_query=False)
    assert scan.n_decoded == 60
    assert len(calls) == 1 + 3  # after the references, then after each of the 3 chunks


_HEAP_PROBE = """
import json, resource
import numpy as np
from replicate import streaming as st

def faults(n=12, size=16 << 20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        a = np.ones(size, np.uint8)  # touched: a fresh mapping faults every page in
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

out = {"available": bool(st._mallopt()), "fixed": st._fixed_malloc_settings()}
out["outside"] = faults()
with st._task_heap():
    faults(1)  # the first buffer of the task is new memory either way
    out["inside"] = faults()
    out["raised"] = st._HEAP_TASKS > 0
out["after"] = faults()
print(json.dumps(out))
"""


@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "65536"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=65536"}])
def test_task_heap_reuses_large_buffers_under_a_fixed_malloc_setting(env):
    """A Dask nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which turns glibc's
    dynamic mmap threshold off: every large temporary is then fresh memory that faults in
    page by page (a chunk computed 25-30% slower, docs/scale.md). Inside a cluster task the
    thresholds are raised, so a freed 16 MiB buffer is reused (almost no page faults), and
    restored after it (faults again, as the environment asked)."""
    import json
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True, check=True,
                          env={**os.environ, **env})
    out = json.loads(proc.stdout)
    if not out["available"]:
        pytest.skip("no glibc mallopt in this process (the setting is glibc's)")
    assert out["fixed"] == {"trim_threshold": 65536}
    assert out["raised"] is True
    # a fresh 16 MiB mapping faults in 4,096 pages, or 8 transparent huge pages at the least
    assert out["outside"] >= 12 * 8, out
    assert out["inside"] * 10 < out["outside"], out
    assert out["after"] >= 12 * 8, out


def test_task_heap_leaves_glibc_alone_where_nothing_is_fixed(monkeypatch):
    """Without a MALLOC_*_ variable or malloc tunable the dynamic threshold is on: _task_heap
    changes nothing (it would otherwise turn the dynamic threshold off for good)."""
    import replicate.streaming as st

    for var in (*st._MALLOC_ENV, "GLIBC_TUNABLES"):
        monkeypatch.delenv(var, raising=False)
    assert st._fixed_malloc_settings() is None
    calls = []
    monkeypatch.setattr(st, "_mallopt", lambda: lambda *a: calls.append(a) or 1)
    with st._task_heap():
        assert st._HEAP_TASKS == 0
    assert calls == []
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.top_pad=0x0:glibc.pthread.rseq=0")
    assert st._fixed_malloc_settings() == {"mmap_threshold": 1 << 20, "top_pad": 0}
    with st._task_heap():
        assert st._HEAP_TASKS == 1
    assert calls == [(st._M_MMAP_THRESHOLD, 32 << 20), (st._M_TRIM_THRESHOLD, 64 << 20),
                     (st._M_TRIM_THRESHOLD, 128 * 1024), (st._M_MMAP_THRESHOLD, 1 << 20)]
    assert st._HEAP_TASKS == 0
