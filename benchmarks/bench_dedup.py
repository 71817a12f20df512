"""CIFAR-10 test against train end to end (``find_near_duplicates``), and the planted copies.

Target (issue 21): CIFAR-10 test (10^4) against train (5x10^4), within-test search
included, under 60 s on this 2-core box, with the defaults (preset ``"recall"``) and with
the descriptor gate (preset ``"clean"``); the gate keeps at least 2,990 of the 3,000
planted copies of ``validation/validate_dedup.py``'s benchmark.

Baseline in the same run: the defaults with the brute-force pixel search (every pair's
exact distance by matrix products: ``replicate._l2`` with pruning switched off), to show
what the pruned exact search buys; both must flag the same images.

    python benchmarks/bench_dedup.py [--quick] [--skip-planted]

Writes benchmarks/results/dedup.json (dedup_quick.json with --quick: 2,000 test images).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from _common import SHARED, write

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "validation"))

TARGET_SECONDS = 60.0
PLANTED_TARGET = 2990


@contextmanager
def brute_force_l2():
    """The detector's pixel search with every pair computed (the pre-pruning path)."""
    from replicate.dedup import candidates

    saved = candidates.l2_index
    candidates.l2_index = lambda images: None  # a set without an index is searched pair by pair
    try:
        yield
    finally:
        candidates.l2_index = saved


def cifar_run(test, train, preset: str) -> dict:
    from replicate.dedup import DedupConfig, find_near_duplicates

    t = time.perf_counter()
    res = find_near_duplicates(test, {"cifar10-train": train}, config=DedupConfig.preset(preset))
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "flagged_test_images": int(res.n_flagged),
            "flagged_ids": sorted(map(str, res.flagged.query_id.unique())) if len(res.flagged) else []}


def planted(train, preset: str) -> dict:
    """Planted copies found (with their own source) by ``preset``, as validate_dedup scores them."""
    import near_dup_benchmark as ndb
    import validate_dedup as vd

    from replicate.dedup import DedupConfig, _flag_rules, find_near_duplicates
    from replicate.imageset import ImageSet

    n_ref = 40_000
    reference = train.select(np.arange(n_ref)).renamed("reference")
    bench = ndb.build(reference.images, train.images[n_ref : n_ref + 4000], per_transform=200, seed=0)
    query = ImageSet(bench["images"], name="planted")
    cfg = DedupConfig.preset(preset, within_query=False)
    t = time.perf_counter()
    res = find_near_duplicates(query, {"reference": reference}, config=cfg)
    seconds = time.perf_counter() - t
    mask, _ = _flag_rules(res.pairs, cfg)
    s = vd.score(res.pairs, mask, bench, query.ids, reference.ids)
    return {"seconds": seconds, "found": s["found_no_flip"], "n": s["n_no_flip"],
            "distinct_flagged": s["false_flags"], "n_distinct": s["n_distinct"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 test images; no planted copies")
    ap.add_argument("--skip-planted", action="store_true")
    args = ap.parse_args()
    if not (SHARED / "data/cifar10/train.npz").is_file():
        print(f"skipped: real data not available ({SHARED} absent; set REPLICATE_SHARED)")
        return 0
    from replicate.io import load_npz

    train = load_npz(SHARED / "data/cifar10/train.npz", name="cifar10-train")
    test = load_npz(SHARED / "data/cifar10/test.npz", name="cifar10-test")
    if args.quick:
        test = test.select(np.arange(2000))
    from replicate.models.descriptor import embed

    embed(test.images[:64])  # load the descriptor's weights outside the timings
    runs = {"recall": cifar_run(test, train, "recall")}
    with brute_force_l2():
        runs["recall_brute_force_l2"] = cifar_run(test, train, "recall")
    runs["clean"] = cifar_run(test, train, "clean")
    same = runs["recall"]["flagged_ids"] == runs["recall_brute_force_l2"]["flagged_ids"]
    for r in runs.values():
        r.pop("flagged_ids")
    out: dict = {
        "data": f"CIFAR-10 test ({len(test)}) against train ({len(train)}), within-test search included",
        "runs": runs,
        "pruned_equals_brute_force_flags": bool(same),
        "speedup_pruned_vs_brute_force_l2": runs["recall_brute_force_l2"]["seconds"] / runs["recall"]["seconds"],
        "target_seconds": TARGET_SECONDS,
        "target_met": bool(not args.quick and runs["recall"]["seconds"] < TARGET_SECONDS
                           and runs["clean"]["seconds"] < TARGET_SECONDS),
    }
    if not (args.quick or args.skip_planted):
        out["planted"] = {p: planted(train, p) for p in ("recall", "clean")}
        out["planted_target"] = PLANTED_TARGET
        out["planted_target_met"] = bool(out["planted"]["clean"]["found"] >= PLANTED_TARGET)
    write("dedup_quick" if args.quick else "dedup", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
