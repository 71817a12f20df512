"""Scale-out on Dask (issue 17): the pool scan on a local cluster vs the local executor, and
a simulated 10^8-image pool at the hash level.

(a) ``scan_pool`` (phash + near-duplicate search against CIFAR-10 train+test) on a
    WebDataset shard pool made by ``benchmarks/make_shard_pool.py`` (``--pool DIR``, else
    ``--n`` images generated into a temporary folder): the local executor, a Dask
    LocalCluster of 1 worker and of 2 workers (single-threaded processes). Images/s,
    images/s per core, the cluster's overhead per core vs local (target <= 15%; the local
    baseline per core is the same scan on one thread, torch's and numba's: the default local
    run uses every core's thread, a Dask worker one), and the
    hashes, flagged near-duplicates and kept positions equal to the local executor's
    (checked; the script fails otherwise).
(b) ``--hashes`` random 64-bit pool hashes with planted matches (copies of CIFAR-10
    train+test phashes with 1-10 bits flipped), searched against the 6x10^4 CIFAR-10
    phashes at radius 10 (one ``replicate.hamming.HammingIndex`` broadcast once per worker),
    sharded over the Dask workers: each chunk is generated ON its worker from
    ``(seed, chunk)`` (nothing shipped but the seed). Every planted match must be found;
    time per core extrapolated to 10^8 hashes.

Default (full) sizes, about 15 min on 2 cores: ``--n 20000`` images scanned three times
(local, 1 and 2 workers), ``--hashes 10000000`` (10^7) in chunks of 10^6.
``--quick``: 2,000 images and 10^6 hashes, to ``results/distributed_quick.json``.
The load average before and after each part is recorded (``loaded``: above the cores).

    nice python benchmarks/bench_distributed.py [--quick] [--pool DIR] [--n N] [--hashes N]
        [--chunk-size N] [--workers 1,2] [--no-simulated] [--out NAME]

Each Dask run's ``attribution`` splits its cores x wall seconds into the tasks' own
compute (decode+hash, search, keywords; measured inside each task), time inside tasks
outside that compute, and idle/(de)serialisation/scheduling (the rest); with the driver's
reference preparation, broadcast, wait, absorb and merge seconds, the result bytes, the
kernel threads the tasks ran with, and per worker its busy seconds, when its first task
started and how long it sat idle after its last one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORES = os.cpu_count() or 1
RADIUS = 10


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _chunk(i: int, seed: int, size: int, ref: np.ndarray, planted_per_chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk ``i`` of the simulated pool: random hashes with ``planted_per_chunk`` copies of
    reference hashes flipped in 1..RADIUS bits; returns (hashes, planted reference index)."""
    rng = np.random.default_rng([seed, i])
    h = rng.integers(0, np.iinfo(np.uint64).max, size=size, dtype=np.uint64, endpoint=True)
    pos = rng.choice(size, planted_per_chunk, replace=False)
    src = rng.integers(0, len(ref), planted_per_chunk)
    for p, s in zip(pos, src, strict=True):
        bits = rng.choice(64, rng.integers(1, RADIUS + 1), replace=False)
        h[p] = ref[s] ^ np.uint64(sum(1 << int(b) for b in bits))
    order = np.argsort(pos)
    return h, np.stack([pos[order], src[order]])


def _search_chunk(i: int, seed: int, size: int, index, planted_per_chunk: int) -> dict:
    t = time.perf_counter()
    h, planted = _chunk(i, seed, size, index.reference[:, 0], planted_per_chunk)
    gen = time.perf_counter() - t
    t = time.perf_counter()
    qi, ri, _ = index.radius_search(h, RADIUS)
    search = time.perf_counter() - t
    found = set(zip(qi.tolist(), ri.tolist(), strict=True))
    missing = sum((int(p), int(s)) not in found for p, s in planted.T)
    return {"pairs": len(qi), "planted": planted.shape[1], "missing": missing, "generate_s": gen, "search_s": search}


def _compute(scan) -> dict:
    """A scan's own compute seconds: decode + hash, search, keyword counting."""
    c = {k: round(scan.timings[k], 3) for k in ("decode", "search", "keywords")}
    c["total"] = round(sum(c.values()), 3)
    return c


def _attribution(scan, wall: float, t_start: float, workers: int, n: int, local_compute: float) -> dict:
    """Where a cluster scan's wall time went. ``core_s = workers x wall`` is split into the
    tasks' own compute (decode+hash, search, keywords, measured inside each task), the time
    tasks spent outside their compute (result assembly), and the rest: cores idle or busy
    with (de)serialisation, transfers and scheduling (``idle_and_serialisation_s``). Driver
    side: preparing the references, the broadcast (scatter to every worker), waiting,
    taking in each result (absorb) and the merge."""
    tm = scan.timings
    compute = _compute(scan)
    tasks = scan.tasks
    busy: dict[str, float] = {}
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for r in tasks:
        busy[r["worker"]] = busy.get(r["worker"], 0.0) + r["end"] - r["start"]
        first[r["worker"]] = min(first.get(r["worker"], np.inf), r["start"])
        last[r["worker"]] = max(last.get(r["worker"], -np.inf), r["end"])
    task_s = sum(busy.values())
    core_s = workers * wall
    t_end = t_start + wall
    per_worker = {w: {"tasks": sum(r["worker"] == w for r in tasks), "busy_s": round(busy[w], 3),
                      "first_task_after_s": round(first[w] - t_start, 3), "idle_after_last_s": round(t_end - last[w], 3)}
                  for w in sorted(busy)}
    return {
        "wall_s": round(wall, 3), "core_s": round(core_s, 3), "tasks": len(tasks),
        "compute_s": compute, "compute_s_per_image": round(compute["total"] / n, 6),
        "compute_vs_local_1_thread": round(compute["total"] / local_compute, 3),
        "task_outside_compute_s": round(task_s - compute["total"], 3),
        "idle_and_serialisation_s": round(core_s - task_s, 3),
        "driver_s": {"references": round(tm["references"], 3), "broadcast": round(tm.get("broadcast", 0.0), 3),
                     "wait": round(tm.get("wait", 0.0), 3), "absorb": round(tm["absorb"], 3),
                     "merge": round(tm["merge"] + tm["within"], 3)},
        "result_bytes": int(sum(r["result_bytes"] for r in tasks)),
        "threads_torch_numba_in_tasks": sorted({tuple(r["threads_torch_numba"]) for r in tasks}),
        "per_worker": per_worker,
        "shares_of_core_s": {"compute": round(compute["total"] / core_s, 3),
                             "task_outside_compute": round((task_s - compute["total"]) / core_s, 3),
                             "idle_and_serialisation": round((core_s - task_s) / core_s, 3)},
    }


def _same(a, b) -> None:
    if not (a.hashes["phash"] == b.hashes["phash"]):
        raise SystemExit("cluster hashes differ from the local executor's")
    if not a.dedup.flagged.equals(b.dedup.flagged) or not np.array_equal(a.kept_positions, b.kept_positions):
        raise SystemExit("cluster near-duplicates differ from the local executor's")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pool", type=Path, default=None, help="a shard pool from make_shard_pool.py")
    ap.add_argument("--n", type=int, default=None, help="images to generate when --pool is not given")
    ap.add_argument("--hashes", type=int, default=None, help="simulated pool hashes (part b)")
    ap.add_argument("--hash-chunk", type=int, default=1_000_000)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=str, default="1,2", help="Dask LocalCluster sizes to run, e.g. 1,2")
    ap.add_argument("--no-simulated", action="store_true", help="skip part (b)")
    ap.add_argument("--out", type=str, default=None, help="results file name (default distributed[_quick])")
    a = ap.parse_args(argv)
    pool_sizes = [int(w) for w in a.workers.split(",")]
    n = a.n or (2_000 if a.quick else 20_000)
    n_hashes = a.hashes or (1_000_000 if a.quick else 10_000_000)

    import replicate
    from replicate.dedup import DedupConfig
    from replicate.distributed import connect
    from replicate.hamming import HammingIndex
    from replicate.hashing import phash
    from replicate.sources import open_source
    from replicate.streaming import scan_pool

    results: dict = {"quick": a.quick, "cores": CORES, "radius": RADIUS}
    tmp = None
    pool_dir = a.pool
    if pool_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-dist-")
        pool_dir = Path(tmp.name)
        subprocess.run([sys.executable, str(ROOT / "benchmarks/make_shard_pool.py"), str(pool_dir), "--n", str(n),
                        "--planted", str(max(10, n // 100)), "--shard-size", "1000", "--workers", str(CORES)],
                       check=True)
    src = open_source(pool_dir, chunk_size=a.chunk_size, name="bench")
    n = len(src)
    train = replicate.load(SHARED / "data/cifar10/train.npz", name="cifar10-train")
    test = replicate.load(SHARED / "data/cifar10/test.npz", name="cifar10-test")
    refs = {"cifar10-train": train, "cifar10-test": test}
    config = DedupConfig(tiny_k=0, aligned_k=0, edge_max=None, within_query=False)

    # ---- (a) the scan: local, 1 worker, 2 workers
    scan: dict = {"n": n, "chunk_size": a.chunk_size, "pool": str(a.pool) if a.pool else "generated"}
    load0 = _load()
    t = time.perf_counter()
    local = scan_pool(src, refs, hashes=["phash"], config=config, keep_pairs="flagged")
    local_s = time.perf_counter() - t
    # the local executor's kernels (torch, numba) use every core's thread: the per-core
    # baseline is the same scan with one thread, as a single-threaded Dask worker runs it
    import numba
    import torch

    threads = (torch.get_num_threads(), numba.get_num_threads())
    scan["local"] = {"seconds": round(local_s, 2), "images_per_s": round(n / local_s, 1),
                     "images_per_s_per_core": round(n / local_s / threads[0], 1), "cores": threads[0],
                     "threads_torch_numba": list(threads)}
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        t = time.perf_counter()
        one = scan_pool(src, refs, hashes=["phash"], config=config, keep_pairs="flagged")
        one_s = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])
    _same(local, one)
    scan["local"]["compute_s"] = _compute(local)
    local_compute = _compute(one)
    scan["local_1_thread"] = {"seconds": round(one_s, 2), "images_per_s": round(n / one_s, 1),
                              "images_per_s_per_core": round(n / one_s, 1), "cores": 1,
                              "compute_s": local_compute, "compute_s_per_image": round(local_compute["total"] / n, 6),
                              "driver_s": {"references": round(one.timings["references"], 3),
                                           "absorb": round(one.timings["absorb"], 3),
                                           "merge": round(one.timings["merge"] + one.timings["within"], 3)}}
    for workers in pool_sizes:
        with connect(n_workers=workers) as ex:
            t_start = time.time()
            t = time.perf_counter()
            dist = scan_pool(src, refs, hashes=["phash"], config=config, keep_pairs="flagged", executor=ex)
            s = time.perf_counter() - t
        _same(local, dist)
        per_core = n / s / workers
        scan[f"dask_{workers}"] = {"seconds": round(s, 2), "images_per_s": round(n / s, 1),
                                   "images_per_s_per_core": round(per_core, 1), "cores": workers,
                                   "overhead_per_core_vs_local": round(scan["local_1_thread"]["images_per_s"] / per_core - 1, 3),
                                   "identical_to_local": True,
                                   "attribution": _attribution(dist, s, t_start, workers, n, local_compute["total"])}
    scan["flagged"] = int(local.dedup.n_flagged)
    scan["loadavg_before_after"] = [load0, _load()]
    scan["loaded"] = max(load0[0], scan["loadavg_before_after"][1][0]) > CORES
    scan["overhead_target"] = 0.15
    results["scan"] = scan
    if a.no_simulated:
        write(a.out or ("distributed_quick" if a.quick else "distributed"), results)
        if tmp is not None:
            tmp.cleanup()
        return 0

    # ---- (b) simulated pool at the hash level
    ref = np.concatenate([phash(train.images), phash(test.images)]).reshape(-1)
    index = HammingIndex(ref)
    n_chunks = max(1, n_hashes // a.hash_chunk)
    per_chunk_planted = 100
    sim: dict = {"hashes": n_chunks * a.hash_chunk, "chunk": a.hash_chunk, "reference": len(ref),
                 "planted_per_chunk": per_chunk_planted}
    load0 = _load()
    with connect(n_workers=min(2, CORES)) as ex:
        fut = ex.broadcast(index)
        t = time.perf_counter()
        rows = list(ex.imap(_search_chunk, range(n_chunks), a.seed, a.hash_chunk, fut, per_chunk_planted))
        wall = time.perf_counter() - t
        workers = ex.n_workers
    planted = sum(r["planted"] for r in rows)
    missing = sum(r["missing"] for r in rows)
    if missing:
        raise SystemExit(f"{missing} of {planted} planted matches not found")
    busy = sum(r["generate_s"] + r["search_s"] for r in rows)
    search = sum(r["search_s"] for r in rows)
    total = n_chunks * a.hash_chunk
    sim.update({
        "workers": workers, "wall_s": round(wall, 2), "planted": planted, "planted_found": planted - missing,
        "pairs": sum(r["pairs"] for r in rows),
        "search_core_s_per_1e6": round(search / total * 1e6, 3),
        "generate_core_s_per_1e6": round((busy - search) / total * 1e6, 3),
        "hashes_per_s_per_core_search": round(total / search, 1),
        "extrapolated_1e8_core_hours_search": round(search / total * 1e8 / 3600, 3),
        "extrapolated_1e8_wall_hours_on_these_workers": round(wall / total * 1e8 / 3600, 3),
        "loadavg_before_after": [load0, _load()],
    })
    sim["loaded"] = max(load0[0], sim["loadavg_before_after"][1][0]) > CORES
    results["simulated"] = sim
    write(a.out or ("distributed_quick" if a.quick else "distributed"), results)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
