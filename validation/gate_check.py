"""The "clean" preset (the descriptor gate) end to end on CIFAR-10 test against train: how many
test images it flags, and how many the rules alone flag on the same candidate pairs; prints
JSON. Compare with validation/results/descriptor.md (setting ``and`` at the preset's cosine,
and ``default``). About 10 minutes on a loaded 2-core box.

    python validation/gate_check.py
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import validate_dedup as vd  # noqa: E402

from replicate.dedup import DedupConfig, _flag_rules, find_near_duplicates  # noqa: E402


def main() -> int:
    if not (vd.SHARED / "data/cifar10/train.npz").is_file():
        print(f"skipped: real data not available ({vd.SHARED} absent; set REPLICATE_SHARED)")
        return 0
    t = time.perf_counter()
    train, test = vd.load("train"), vd.load("test")
    cfg = DedupConfig.preset("clean", within_query=False)
    res = find_near_duplicates(test, {"cifar10-train": train}, config=cfg)
    p = res.pairs
    off, _ = _flag_rules(p, replace(cfg, descriptor_min=None))  # the rules alone, same pairs
    out = {"seconds": time.perf_counter() - t, "descriptor_min": cfg.descriptor_min,
           "gated_flagged_test_images": int(res.n_flagged),
           "ungated_flagged_images_same_pairs": int(p.query_id[off].nunique()),
           "gated_subset": bool(set(p.query_id[p.flagged]) <= set(p.query_id[off])),
           "candidate_pairs": len(p), "stopped_pairs": int((off & ~p.flagged.to_numpy()).sum())}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
