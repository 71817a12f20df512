"""Scale-out on Dask (issue 17): the pool scan on a local cluster vs the local executor, and
a simulated 10^8-image pool at the hash level.

(a) ``scan_pool`` (phash + near-duplicate search against CIFAR-10 train+test) on a
    WebDataset shard pool made by ``benchmarks/make_shard_pool.py`` (``--pool DIR``, else
    ``--n`` images generated into a temporary folder): the local executor, a Dask
    LocalCluster of 1 worker and of 2 workers (single-threaded processes). Images/s,
    images/s per core, the cluster's overhead per core vs local (target <= 15%) against three
    baselines (``--local``): ``one``, the same scan on one thread (torch's and numba's: a Dask
    worker runs one); ``all``, the local executor on every core's thread; ``side``, one
    one-thread process per core on the pool's shards split, all at once (the same cores
    shared the same way, no engine). And the
    hashes, flagged near-duplicates and kept positions equal to the local executor's
    (checked; the script fails otherwise).
(b) ``--hashes`` random 64-bit pool hashes with planted matches (copies of CIFAR-10
    train+test phashes with 1-10 bits flipped), searched against the 6x10^4 CIFAR-10
    phashes at radius 10 (one ``replicate.hamming.HammingIndex`` broadcast once per worker),
    sharded over the Dask workers: each chunk is generated ON its worker from
    ``(seed, chunk)`` (nothing shipped but the seed). Every planted match must be found;
    time per core extrapolated to 10^8 hashes.

Default (full) sizes, about 20 min on 2 cores: ``--n 20000`` images scanned five times
(the three local baselines, 1 and 2 workers), ``--hashes 10000000`` (10^7) in chunks of 10^6.
``--quick``: 2,000 images and 10^6 hashes, to ``results/distributed_quick.json``.
The load average before and after each part is recorded (``loaded``: above the cores).
The results file is rewritten as each baseline and Dask row lands (``"partial": true``
until the run ends), so a long run's late failure keeps the rows measured before it.

    nice python benchmarks/bench_distributed.py [--quick] [--pool DIR] [--n N] [--hashes N]
        [--chunk-size N] [--workers 1,2] [--local all,one,side] [--no-simulated] [--out NAME]

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
        "malloc_thresholds_raised_in_tasks": sorted({bool(r.get("malloc_thresholds_raised")) for r in tasks}),
        "per_worker": per_worker,
        "shares_of_core_s": {"compute": round(compute["total"] / core_s, 3),
                             "task_outside_compute": round((task_s - compute["total"]) / core_s, 3),
                             "idle_and_serialisation": round((core_s - task_s) / core_s, 3)},
    }


def _scan_inputs() -> tuple[dict, object]:
    """The scan's references (CIFAR-10 train and test) and dedup config, in every run."""
    import replicate
    from replicate.dedup import DedupConfig

    refs = {"cifar10-train": replicate.load(SHARED / "data/cifar10/train.npz", name="cifar10-train"),
            "cifar10-test": replicate.load(SHARED / "data/cifar10/test.npz", name="cifar10-test")}
    return refs, DedupConfig(tiny_k=0, aligned_k=0, edge_max=None, within_query=False)


def _scan_part(listing: Path, chunk_size: int) -> int:
    """Child of ``_side_by_side``: one thread, scan the shards ``listing`` names (a JSON
    list) once the parent writes a line to stdin; print the result as one JSON line."""
    import json

    import numba
    import torch

    from replicate.sources import ImageSource
    from replicate.streaming import scan_pool

    torch.set_num_threads(1)
    numba.set_num_threads(1)
    src = ImageSource.from_shards(json.loads(listing.read_text()), chunk_size=chunk_size, name="bench")
    refs, config = _scan_inputs()
    print("ready", flush=True)
    sys.stdin.readline()
    t = time.perf_counter()
    scan = scan_pool(src, refs, hashes=["phash"], config=config, keep_pairs="flagged")
    s = time.perf_counter() - t
    flagged = sorted(scan.dedup.flagged_ids.tolist())
    print(json.dumps({"n": len(src), "seconds": s, "compute_s": _compute(scan), "flagged": int(scan.dedup.n_flagged),
                      "flagged_ids": flagged}), flush=True)
    return 0


def _side_by_side(shards: list[Path], chunk_size: int, parts: int) -> dict:
    """The pool's shards (the source's own ``paths``, the ones the whole-pool scan read) split into ``parts`` contiguous groups, each scanned by its own
    one-thread process, all at once: what ``parts`` cores do with no engine between them
    (same memory-bandwidth and cache sharing as ``parts`` single-threaded workers). The
    wall time runs from the start signal (after every child has imported and loaded its
    inputs) to the last child's result; each child prepares its own references, as each
    worker receives them."""
    import json

    parts = min(parts, len(shards))  # a part is whole shards
    groups = [g.tolist() for g in np.array_split(np.array([str(x) for x in shards], dtype=object), parts)]
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(prefix="bench-side-") as d:
        procs = []
        for i, g in enumerate(groups):
            f = Path(d) / f"part{i}.json"
            f.write_text(json.dumps(g))
            procs.append(subprocess.Popen([sys.executable, __file__, "--scan-part", str(f), "--chunk-size", str(chunk_size)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env))
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise SystemExit("a side-by-side scan process did not start")
        t = time.perf_counter()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        rows = [json.loads(p.stdout.readline()) for p in procs]
        wall = time.perf_counter() - t
        for p in procs:
            if p.wait() != 0:
                raise SystemExit("a side-by-side scan process failed")
    n = sum(r["n"] for r in rows)
    compute = sum(r["compute_s"]["total"] for r in rows)
    return {"parts": parts, "seconds": round(wall, 2), "images_per_s": round(n / wall, 1),
            "images_per_s_per_core": round(n / wall / parts, 1), "cores": parts,
            "part_seconds": [round(r["seconds"], 2) for r in rows], "compute_s_total": round(compute, 3),
            "flagged": sum(r["flagged"] for r in rows),
            "flagged_ids": sorted(i for r in rows for i in r["flagged_ids"])}


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
    ap.add_argument("--local", type=str, default="all,one,side",
                    help="local baselines to run: all (the executor's default threads), one (one thread), "
                         "side (one one-thread process per core, side by side, on the pool's shards split)")
    ap.add_argument("--scan-part", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.scan_part is not None:
        return _scan_part(a.scan_part, a.chunk_size)
    baselines = set(a.local.split(","))
    if not baselines <= {"all", "one", "side"} or not baselines & {"all", "one"}:
        raise SystemExit(f"--local {a.local!r}: a comma list of all, one, side holding all or one "
                         "(the cluster's results are compared with a local run)")
    pool_sizes = [int(w) for w in a.workers.split(",")]
    n = a.n or (2_000 if a.quick else 20_000)
    n_hashes = a.hashes or (1_000_000 if a.quick else 10_000_000)

    from replicate.distributed import connect
    from replicate.hamming import HammingIndex
    from replicate.hashing import phash
    from replicate.sources import open_source
    from replicate.streaming import scan_pool

    results: dict = {"quick": a.quick, "cores": CORES, "radius": RADIUS}
    out_name = a.out or ("distributed_quick" if a.quick else "distributed")

    def checkpoint(scan: dict) -> None:
        # a long run (10^6 images: about 2 h on 2 cores) writes each row as it lands, marked
        # partial, so that a late failure loses only the row it was on
        write(out_name, {**results, "scan": scan, "partial": True})
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
    refs, config = _scan_inputs()
    train, test = refs["cifar10-train"], refs["cifar10-test"]

    # ---- (a) the scan: local, 1 worker, 2 workers
    scan: dict = {"n": n, "chunk_size": a.chunk_size, "pool": str(a.pool) if a.pool else "generated"}
    load0 = _load()
    # the local executor's kernels (torch, numba) use every core's thread ("all"); a Dask
    # worker runs one. Per core, "one" (the same scan on one thread) is the scaling baseline,
    # "side" (one one-thread process per core at once, no engine) the same-contention one.
    import numba
    import torch

    threads = (torch.get_num_threads(), numba.get_num_threads())
    local = one = None
    if "all" in baselines:
        t = time.perf_counter()
        local = scan_pool(src, refs, hashes=["phash"], config=config, keep_pairs="flagged")
        local_s = time.perf_counter() - t
        scan["local"] = {"seconds": round(local_s, 2), "images_per_s": round(n / local_s, 1),
                         "images_per_s_per_core": round(n / local_s / threads[0], 1), "cores": threads[0],
                         "threads_torch_numba": list(threads), "compute_s": _compute(local)}
        checkpoint(scan)
    if "one" in baselines:
        torch.set_num_threads(1)
        numba.set_num_threads(1)
        try:
            t = time.perf_counter()
            one = scan_pool(src, refs, hashes=["phash"], config=config, keep_pairs="flagged")
            one_s = time.perf_counter() - t
        finally:
            torch.set_num_threads(threads[0])
            numba.set_num_threads(threads[1])
        if local is not None:
            _same(local, one)
        one_compute = _compute(one)
        scan["local_1_thread"] = {"seconds": round(one_s, 2), "images_per_s": round(n / one_s, 1),
                                  "images_per_s_per_core": round(n / one_s, 1), "cores": 1,
                                  "compute_s": one_compute, "compute_s_per_image": round(one_compute["total"] / n, 6),
                                  "driver_s": {"references": round(one.timings["references"], 3),
                                               "absorb": round(one.timings["absorb"], 3),
                                               "merge": round(one.timings["merge"] + one.timings["within"], 3)}}
        checkpoint(scan)
    ref_scan = local if local is not None else one
    if "side" in baselines:
        side = _side_by_side(src.paths, a.chunk_size, CORES)
        ids = side.pop("flagged_ids")
        local_ids = sorted(ref_scan.dedup.flagged_ids.tolist())
        if side["flagged"] != int(ref_scan.dedup.n_flagged) or ids != local_ids:
            raise SystemExit("the side-by-side parts' near-duplicates differ from the whole pool's")
        side["identical_flagged_to_local"] = True
        scan["local_side_by_side"] = side
        checkpoint(scan)
    # per-image compute of a one-thread scan, for the attribution (the side-by-side parts'
    # when "one" did not run: the same one-thread scan, with the cores shared)
    local_compute = (scan["local_1_thread"]["compute_s"]["total"] if "local_1_thread" in scan
                     else scan["local_side_by_side"]["compute_s_total"] if "local_side_by_side" in scan
                     else scan["local"]["compute_s"]["total"])
    for workers in pool_sizes:
        with connect(n_workers=workers) as ex:
            t_start = time.time()
            t = time.perf_counter()
            dist = scan_pool(src, refs, hashes=["phash"], config=config, keep_pairs="flagged", executor=ex)
            s = time.perf_counter() - t
        _same(ref_scan, dist)
        per_core = n / s / workers
        row = {"seconds": round(s, 2), "images_per_s": round(n / s, 1),
               "images_per_s_per_core": round(per_core, 1), "cores": workers}
        # overhead per core = (baseline images/s per core) / (cluster images/s per core) - 1
        if "local_1_thread" in scan:
            row["overhead_per_core_vs_local"] = round(scan["local_1_thread"]["images_per_s"] / per_core - 1, 3)
        if "local" in scan and scan["local"]["cores"] == workers:
            row["overhead_per_core_vs_local_executor_same_cores"] = round(scan["local"]["images_per_s_per_core"] / per_core - 1, 3)
        if "local_side_by_side" in scan and scan["local_side_by_side"]["cores"] == workers:
            row["overhead_per_core_vs_side_by_side"] = round(scan["local_side_by_side"]["images_per_s_per_core"] / per_core - 1, 3)
        row["identical_to_local"] = True
        row["attribution"] = _attribution(dist, s, t_start, workers, n, local_compute)
        scan[f"dask_{workers}"] = row
        checkpoint(scan)
    scan["flagged"] = int(ref_scan.dedup.n_flagged)
    scan["loadavg_before_after"] = [load0, _load()]
    scan["loaded"] = max(load0[0], scan["loadavg_before_after"][1][0]) > CORES
    scan["overhead_target"] = 0.15
    results["scan"] = scan
    if a.no_simulated:
        write(out_name, results)
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
    write(out_name, results)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
