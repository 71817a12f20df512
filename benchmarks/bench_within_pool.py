"""The exact pixel-L2 kNN within a pool, as a streamed pool's search runs it: time and memory.

The pool's 32x32 thumbnails are memory-mapped from a ``.npy`` file (as ``scan_pool`` spills
them); each chunk of ``--chunk`` images is the query against the whole memory-mapped pool
(``l2_knn`` walks it in blocks of 4,096). Reports seconds, multiply-adds/s and the peak RSS
growth of the process (the pool is never held as one array, and no N x N matrix is made).
Checked against ``l2_knn`` of the whole in-memory pool within itself: the same neighbours.

    nice -n 10 python benchmarks/bench_within_pool.py [--n 12100] [--chunk 4096] [--no-check]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import SHARED, write  # noqa: E402


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12_100)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--topic", default="sources-within")
    ap.add_argument("--no-check", action="store_true", help="skip the in-memory comparison (halves the time)")
    a = ap.parse_args(argv)
    from replicate._l2 import fastest_exact_product, l2_knn

    results: dict = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()], "chunk": a.chunk, "k": a.k}
    with np.load(SHARED / "data/candidates/tinyimagenet_cifar10_32x32.npz") as d:
        images = d["images"]
    if a.n > len(images):  # larger pools: the real images again, each copy with its own pixel noise
        rng = np.random.default_rng(0)
        reps = [images] + [np.clip(images.astype(np.int16) + rng.integers(-3, 4, images.shape), 0, 255).astype(np.uint8)
                           for _ in range(a.n // len(images))]
        images = np.concatenate(reps)
    images = np.ascontiguousarray(images[: a.n])
    n = len(images)
    results["n"] = n
    results["exact_product_kernel"] = fastest_exact_product()
    with tempfile.TemporaryDirectory(prefix="within-") as tmp:
        path = Path(tmp) / "images.npy"
        np.save(path, images)
        del images
        base = _rss_mib()
        mm = np.load(path, mmap_mode="r")
        t = time.perf_counter()
        idx = np.empty((n, a.k + 1), np.int64)
        for s in range(0, n, a.chunk):
            q = np.ascontiguousarray(mm[s : s + a.chunk])
            idx[s : s + len(q)] = l2_knn(q, mm, k=a.k + 1).indices
        seconds = time.perf_counter() - t
        results["streamed"] = {"seconds": round(seconds, 1),
                               "multiply_adds_per_s": float(f"{n * n * 3072 / seconds:.3g}"),
                               "peak_rss_growth_mib": round(_rss_mib() - base, 1),
                               "pool_thumbnails_mib": round(n * 3072 / 2**20, 1),
                               "n_x_n_int32_matrix_would_be_mib": round(n * n * 4 / 2**20, 1)}
        if a.no_check:
            del mm
            results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
            write(a.topic, results)
            return 0
        t = time.perf_counter()
        whole = l2_knn(np.asarray(mm), k=a.k)
        results["in_memory_within_seconds"] = round(time.perf_counter() - t, 1)
        # the chunked search includes each image itself at distance 0: drop it (ties: lower index first)
        own = idx == np.arange(n)[:, None]
        streamed = np.array([row[~m][: a.k] for row, m in zip(idx, own)])
        results["same_neighbours_as_in_memory"] = bool(np.array_equal(streamed[:, 0], whole.indices[:, 0]))
        del mm
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write(a.topic, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
