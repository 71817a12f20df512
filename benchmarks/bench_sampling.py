"""Allocation and stratified sampling: 2,000 images from a 10^6-candidate pool.

Target: ``allocate(..., "v6")`` plus ``sample(...)`` (keyword matching, 10,000 excluded
ids, redistribution of shortfalls) in under 2 s on a simulated pool of 10^6 candidates
(10 classes, 50 keywords per class, Zipf-like keyword frequencies). Baseline in the same
run: a naive per-stratum loop (boolean mask over the whole pool per (class, keyword),
then ``rng.choice``), the way a one-off script would do it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, write  # noqa: E402

from replicate import ImageSet  # noqa: E402
from replicate.keywords import KeywordCounts, allocate  # noqa: E402
from replicate.sampling import sample  # noqa: E402

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def simulated_pool(n: int, n_kw: int = 50, seed: int = 0) -> tuple[ImageSet, KeywordCounts]:
    """A pool of ``n`` 1x1 images with labels and keywords, and an original keyword table."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    zipf = 1.0 / np.arange(1, n_kw + 1)
    kw_idx = rng.choice(n_kw, size=n, p=zipf / zipf.sum())
    names = np.array([f"{c}_keyword_{k:02d}" for c in CLASSES for k in range(n_kw)])
    keywords = names[labels * n_kw + kw_idx]
    ids = np.char.add("cand/", np.arange(n).astype(str))
    pool = ImageSet(np.zeros((n, 1, 1, 1), dtype=np.uint8), labels, CLASSES, ids=ids,
                    metadata={"keyword": keywords}, name="simulated-pool")
    # the original: the same keywords with different (flatter) frequencies, a few missing from the pool
    orig = {c: {f"{c}_keyword_{k:02d}": int(1000 / (1 + k) ** 0.5) for k in range(n_kw + 3)} for c in CLASSES}
    return pool, KeywordCounts.from_dict(orig, classes=CLASSES)


def naive(pool: ImageSet, counts: KeywordCounts, size: int, exclude: np.ndarray, seed: int) -> list[str]:
    """Per-stratum masks and rng.choice: the straightforward script."""
    rng = np.random.default_rng(seed)
    alloc = allocate(counts, size, "v6").targets
    excluded = np.isin(pool.ids, exclude)
    kws = pool.metadata["keyword"]
    chosen: list[str] = []
    for ci, c in enumerate(pool.class_names):
        for kw, t in alloc[c].items():
            idx = np.flatnonzero((pool.labels == ci) & (kws == kw) & ~excluded)
            take = min(t, idx.size)
            chosen += pool.ids[rng.choice(idx, take, replace=False)].tolist()
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--n", type=int, default=1_000_000, help="pool size (default 10^6)")
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    size, seed = 2000, 0

    t = time.perf_counter()
    pool, counts = simulated_pool(args.n)
    setup = time.perf_counter() - t
    exclude = pool.ids[np.random.default_rng(1).choice(args.n, 10_000, replace=False)]

    def ours() -> None:
        a = allocate(counts, size, "v6")
        r = sample(pool, a, exclude={"near_duplicate": exclude}, policy="redistribute", seed=seed, fingerprint=False)
        assert r.n_selected == size

    t_ours = best_of(ours, repeat)
    t_naive = best_of(lambda: naive(pool, counts, size, exclude, seed), repeat)
    # provenance: hashing the pool's pixels once for its fingerprint (cached on the pool afterwards)
    t = time.perf_counter()
    _ = pool.fingerprint
    t_fp = time.perf_counter() - t
    t_ours_fp = best_of(
        lambda: sample(pool, allocate(counts, size, "v6"), exclude={"near_duplicate": exclude}, policy="redistribute"),
        repeat,
    )

    target = 2.0
    write(
        "sampling",
        {
            "task": f"allocate (v6) + sample {size} images from a {args.n}-candidate pool "
                    "(500 keywords, 10,000 excluded ids, policy redistribute)",
            "pool_size": args.n,
            "size": size,
            "setup_seconds": round(setup, 3),
            "seconds": round(t_ours, 4),
            "baseline": "naive per-(class, keyword) mask + rng.choice loop",
            "baseline_seconds": round(t_naive, 4),
            "speedup_vs_baseline": round(t_naive / t_ours, 2),
            "pool_fingerprint_once_seconds": round(t_fp, 3),
            "seconds_with_cached_fingerprint": round(t_ours_fp, 4),
            "repeat": repeat,
            "target_seconds": target,
            "met": bool(t_ours < target),
        },
    )


if __name__ == "__main__":
    main()
