"""The pool stages on a real local Dask cluster (a scheduler and two worker processes):
the same results as the local executor, clear errors before any work, a killed worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from replicate import ImageSet
from replicate.dedup import DedupConfig
from replicate.keywords import allocate, keyword_counts
from replicate.sources import open_source, write_shards
from replicate.streaming import sample_source, scan_pool
from tests.conftest import make_imageset

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")

# Dask's own servers leave sockets for the garbage collector at teardown: not replicate's.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")

FAST = DedupConfig(edge_max=None, aligned_k=0)


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of two single-threaded worker processes (nannies restart killed ones)."""
    from replicate.distributed import connect

    with connect(n_workers=2) as ex:
        assert ex.n_workers == 2
        yield ex


def _same(a, b) -> None:
    assert a.hashes.keys() == b.hashes.keys()
    for k in a.hashes:
        assert a.hashes[k] == b.hashes[k]
    pd.testing.assert_frame_equal(a.dedup.pairs, b.dedup.pairs)
    pd.testing.assert_frame_equal(a.dedup.groups, b.dedup.groups)
    pd.testing.assert_frame_equal(a.dedup.flagged, b.dedup.flagged)
    np.testing.assert_array_equal(a.dedup.kept_ids, b.dedup.kept_ids)
    assert a.keywords.to_dict() == b.keywords.to_dict()
    np.testing.assert_array_equal(a.kept_positions, b.kept_positions)
    assert a.skipped == b.skipped


def _synthetic(tmp_path, n: int = 90) -> tuple:
    ref = make_imageset(40, seed=1, name="ref")
    pool = make_imageset(n, seed=2, name="pool")
    images = pool.images.copy()
    images[3] = ref.images[5]
    images[min(50, n - 1)] = np.clip(ref.images[9].astype(int) + 3, 0, 255).astype(np.uint8)
    images[min(20, n - 2)] = images[11]
    pool = ImageSet(images, pool.labels, pool.class_names, pool.ids, pool.metadata, name="pool")
    write_shards(pool, tmp_path / "tar", shard_size=25)
    return open_source(tmp_path / "tar", chunk_size=16, name="pool"), pool, ref


def test_synthetic_pool_scan_and_sample_equal_local(tmp_path, cluster):
    src, pool, ref = _synthetic(tmp_path)
    local = scan_pool(src, {"ref": ref}, hashes=["phash", "dhash"], config=FAST)
    dist = scan_pool(src, {"ref": ref}, hashes=["phash", "dhash"], config=FAST, executor=cluster)
    _same(local, dist)
    assert {"pool/000003", "pool/000050"} <= set(dist.dedup.flagged_ids)
    assert dist.timings["decode"] > 0
    alloc = allocate(keyword_counts(pool), 30, strategy="v6")
    a = sample_source(src, alloc, positions=local.kept_positions, seed=3, policy="report")
    b = sample_source(src, alloc, positions=dist.kept_positions, seed=3, policy="report", executor=cluster)
    assert a.selected_ids == b.selected_ids and len(b.selected_ids) > 0
    np.testing.assert_array_equal(a.testset.images, b.testset.images)
    assert a.testset.info == b.testset.info and a.pool == b.pool


def test_executor_started_on_demand_and_by_env(tmp_path, cluster, monkeypatch):
    src, _, ref = _synthetic(tmp_path, n=40)
    local = scan_pool(src, [ref], config=FAST, dedup=False)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.client.scheduler.address)
    import dask

    with dask.config.set({"scheduler-address": cluster.client.scheduler.address}):
        via_env = scan_pool(src, [ref], config=FAST, dedup=False, executor="dask")
    assert via_env.hashes["phash"] == local.hashes["phash"]
    assert via_env.keywords.to_dict() == local.keywords.to_dict()
    # the cluster of the test fixture is still up (the scan closed only its own client)
    assert cluster.n_workers == 2


def test_bad_executor_name_and_arguments(tmp_path):
    src, _, ref = _synthetic(tmp_path, n=20)
    with pytest.raises(ValueError, match="executor == 'ray'; must be one of"):
        scan_pool(src, [ref], executor="ray")
    with pytest.raises(TypeError, match="executor == 'int'"):
        scan_pool(src, [ref], executor=3)
    with pytest.raises(ValueError, match="address == 'tcp://x:1'; must be None with executor='local'"):
        sample_source(src, {}, executor="local", address="tcp://x:1")


def test_no_scheduler_at_the_address(tmp_path):
    src, _, ref = _synthetic(tmp_path, n=20)
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"address == 'tcp://127.0.0.1:{port}'; must be the address of a "
                                              "running Dask scheduler"):
        from replicate.distributed import connect

        connect(f"tcp://127.0.0.1:{port}", timeout=1.0)


def test_source_path_workers_cannot_read(tmp_path, cluster):
    src, _, ref = _synthetic(tmp_path, n=20)
    shard = src.paths[0]
    mode = shard.stat().st_mode
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    shard.chmod(0)
    try:
        with pytest.raises(FileNotFoundError, match="source path on Dask worker .*; must be readable by every worker"):
            scan_pool(src, [ref], config=FAST, executor=cluster)
    finally:
        shard.chmod(mode)


def test_worker_without_replicate(tmp_path):
    """A worker process in which ``import replicate`` fails (``sys.modules['replicate'] = None``
    before Dask's own worker entry point runs; Dask itself imports fine there): an error
    naming that worker and the rule, before any chunk is sent."""
    from distributed import Client, LocalCluster

    from replicate.distributed import connect

    def imports_replicate() -> bool:  # nested: pickled by value, so the worker needs no module of this test
        import importlib

        try:
            importlib.import_module("replicate")
        except ImportError:
            return False
        return True

    hide = ("import sys; sys.modules['replicate'] = None; "
            "from distributed.cli.dask_worker import main; sys.argv[0] = 'dask-worker'; main()")
    with LocalCluster(n_workers=0, processes=True, dashboard_address=":0") as lc:
        proc = subprocess.Popen([sys.executable, "-c", hide, lc.scheduler_address, "--nthreads", "1", "--no-nanny",
                                 "--name", "no-replicate", "--no-dashboard"], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with Client(lc.scheduler_address, set_as_default=False) as probe:
                probe.wait_for_workers(1, timeout=60)
                # the worker really cannot import replicate, and really runs Dask
                assert probe.run(imports_replicate) == {w: False for w in probe.scheduler_info(n_workers=-1)["workers"]}
                before = probe.run_on_scheduler(_tasks_seen)
            with pytest.raises(RuntimeError, match=r"Dask worker tcp://[0-9.:]+ == \"ModuleNotFoundError: No module "
                                                   r"named 'replicate.distributed'.*\"; must be able to import replicate\. Install replicate-testsets"):
                connect(lc.scheduler_address, timeout=30.0)
            with Client(lc.scheduler_address, set_as_default=False) as probe:
                assert probe.run_on_scheduler(_tasks_seen) == before  # no task was submitted
        finally:
            proc.terminate()
            proc.wait(10)


def _tasks_seen(dask_scheduler=None) -> int:
    return len(dask_scheduler.task_prefixes)


def test_descriptor_features_on_the_workers_equal_local(tmp_path, cluster):
    """``feature_model="copydesc32"``: each worker embeds its own chunks with replicate's
    descriptor, loaded once per worker process (a second scan finds the same model object),
    and the pairs, feature distances included, are the local executor's."""
    src, _, ref = _synthetic(tmp_path, n=60)
    cfg = DedupConfig(edge_max=None, aligned_k=0, feature_model="copydesc32")
    local = scan_pool(src, {"ref": ref}, config=cfg)
    dist = scan_pool(src, {"ref": ref}, config=cfg, executor=cluster)
    _same(local, dist)
    assert {"feature", "feature_rank"} <= set(dist.dedup.pairs.columns)
    assert dist.dedup.pairs["feature"].notna().sum() >= len(src)  # every pool image has its feature neighbours

    def loaded_model() -> int | None:  # nested: pickled by value
        from replicate.models import descriptor

        model = descriptor._CACHE.get("default")
        return None if model is None else id(model)

    # the scheduler may run every chunk on one worker (the other then holds no model)
    first = {w: m for w, m in cluster.client.run(loaded_model).items() if m is not None}
    assert first  # a worker embedded chunks and keeps its model
    again = scan_pool(src, {"ref": ref}, config=cfg, executor=cluster)
    _same(local, again)
    later = cluster.client.run(loaded_model)
    assert {w: later[w] for w in first} == first  # not loaded again per task


def test_feature_model_the_workers_cannot_load(tmp_path, cluster):
    """A zoo model as the dedup feature model with executor 'dask': a clear error naming the
    key and the rule, before any connection or task (the workers would each load it per chunk,
    from weights or a registration that may exist only on the driver)."""
    src, _, ref = _synthetic(tmp_path, n=20)
    cfg = DedupConfig(edge_max=None, aligned_k=0, feature_model="resnet56")
    before = cluster.client.run_on_scheduler(_tasks_seen)
    rule = r"feature_model == 'resnet56'; must be None or one of \('copydesc32',\) with executor 'dask'"
    with pytest.raises(ValueError, match=rule):
        scan_pool(src, [ref], config=cfg, executor=cluster)
    with pytest.raises(ValueError, match=rule):  # refused before connecting to the (absent) scheduler
        scan_pool(src, [ref], config=cfg, executor="dask", address="tcp://127.0.0.1:1")
    assert cluster.client.run_on_scheduler(_tasks_seen) == before


def test_task_records_for_the_overhead_attribution(tmp_path, cluster):
    """On the cluster a scan records each task (its worker, wall-clock span, compute seconds,
    kernel threads, result bytes) and the driver's broadcast and wait; locally none. Tasks
    run numba with torch's thread count (one), and the worker thread's own numba setting is
    restored after each task."""
    src, _, ref = _synthetic(tmp_path, n=50)
    local = scan_pool(src, {"ref": ref}, config=FAST)
    dist = scan_pool(src, {"ref": ref}, config=FAST, executor=cluster)
    assert local.tasks == () and "broadcast" not in local.timings
    assert [r["index"] for r in dist.tasks] == list(range(src.n_chunks))
    workers = set(cluster.client.scheduler_info(n_workers=-1)["workers"])
    import dask

    from replicate.streaming import _mallopt

    environ = dask.config.get("distributed.nanny.pre-spawn-environ", {})
    nanny_fixes_malloc = bool(_mallopt()) and any(k.startswith("MALLOC_") for k in environ)
    for r in dist.tasks:
        assert r["worker"] in workers
        assert r["end"] - r["start"] >= r["decode"] + r["search"] + r["keywords"] - 1e-6
        # the nanny's OMP_NUM_THREADS=1 holds for torch, and numba follows torch inside a task
        assert tuple(r["threads_torch_numba"]) == (1, 1)
        # the nanny's MALLOC_TRIM_THRESHOLD_ turns glibc's dynamic mmap threshold off: raised in the task
        assert r["malloc_thresholds_raised"] is nanny_fixes_malloc
    assert sum(r["result_bytes"] for r in dist.tasks) >= 16 * len(src)  # int64 positions + uint64 phashes at least
    assert sum(r["decode"] for r in dist.tasks) == pytest.approx(dist.timings["decode"], abs=1e-6 * len(dist.tasks))
    assert dist.timings["broadcast"] > 0 and dist.timings["wait"] >= 0 and dist.timings["absorb"] > 0

    def numba_threads() -> int:  # nested: pickled by value; a task like the scan's, outside it
        import numba

        return numba.get_num_threads(), numba.config.NUMBA_NUM_THREADS

    now, default = cluster.client.submit(numba_threads, pure=False).result()
    assert now == default


def test_killed_worker_mid_stage_gives_the_same_result(tmp_path, cluster):
    """kill -9 of one worker process while the scan runs: the nanny restarts it, the
    scheduler reruns its tasks, and the result equals the local executor's."""
    src, _, ref = _synthetic(tmp_path, n=90)
    src = src.with_options(chunk_size=4)
    local = scan_pool(src, {"ref": ref}, config=FAST)
    pids = sorted(cluster.client.run(os.getpid).values())
    started = threading.Event()
    out: dict = {}

    def run() -> None:
        started.set()
        out["scan"] = scan_pool(src, {"ref": ref}, config=FAST, executor=cluster)

    th = threading.Thread(target=run)
    th.start()
    started.wait()
    # wait until the cluster is working on the stage's tasks, then kill one worker
    deadline = time.time() + 30
    while time.time() < deadline and not any(cluster.client.processing().values()):
        time.sleep(0.02)
    os.kill(pids[0], signal.SIGKILL)
    th.join(120)
    assert not th.is_alive()
    _same(local, out["scan"])
    deadline = time.time() + 30
    while cluster.n_workers < 2 and time.time() < deadline:  # the nanny brings it back
        time.sleep(0.2)
    new = sorted(cluster.client.run(os.getpid).values())
    assert pids[0] not in new


@pytest.mark.shared
def test_real_pool_dedup_and_sampling_equal_local(pool_sources, candidate_pool, cifar_test, cluster):
    """The real 12,100-image pool (JPEG shards): hashes and keyword counts of all of it, near-
    duplicates of its first 3,000 images against 1,000 CIFAR-10 test images (and within),
    and a 2,000-image sample: the two-worker cluster gives the local executor's results."""
    src = pool_sources["jpg"].with_options(chunk_size=1024)
    whole_local = scan_pool(src, hashes=["phash"], dedup=False)
    whole_dist = scan_pool(src, hashes=["phash"], dedup=False, executor=cluster)
    assert whole_local.hashes["phash"] == whole_dist.hashes["phash"]
    assert whole_local.keywords.to_dict() == whole_dist.keywords.to_dict()
    assert whole_dist.n_decoded == len(candidate_pool) == 12_100
    ref = {"cifar10-test": cifar_test.select(np.arange(1000))}
    part = src.select(np.arange(3000)).with_options(chunk_size=512)
    local = scan_pool(part, ref, config=FAST)
    dist = scan_pool(part, ref, config=FAST, executor=cluster)
    _same(local, dist)
    assert dist.dedup.n_flagged > 0
    alloc = allocate(whole_dist.keywords, 2000, strategy="proportional")  # the pool lacks some classes' keywords
    a = sample_source(src, alloc, seed=0, policy="report")
    b = sample_source(src, alloc, seed=0, policy="report", executor=cluster)
    assert a.selected_ids == b.selected_ids and len(b.selected_ids) > 500  # 909: 12 strata fall short
    np.testing.assert_array_equal(a.testset.images, b.testset.images)
