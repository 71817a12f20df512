"""Real-data check of the dataset test (Torralba & Efros 2011) and covariate-shift statistics.

Three comparisons, each with pixel, colour-statistic and ResNet-20 features:

1. CIFAR-10 test vs a random 10,000 of CIFAR-10 train: one distribution (both were
   split at random from one labelled pool), so a valid test must come out at chance.
   ResNet-20 was *trained* on CIFAR-10 train, so its features could separate images
   it memorised from unseen ones (membership, not distribution shift); the run
   records whether they do.
2. The control done right: two random halves of CIFAR-10 test.
3. CIFAR-10 test vs the ImageNet-derived candidate pool (../shared/data/candidates),
   restricted to the classes present in both: expected far above chance.

Cross-set near-duplicates are removed first (replicate.dedup, default config).
Also the per-image covariate-shift table of 1 and 3.

Writes validation/results/shift.json and shift.md; skips when ../shared is absent.
``--quick``: 1,000 images per set and 50 permutations, no near-duplicate search.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("REPLICATE_SHARED", ROOT.parent.parent / "shared"))
RESULTS = ROOT / "results"
FEATURES = ("pixels", "colour-stats", "resnet20")


def row(label: str, r, seconds: float) -> dict:
    return {
        "comparison": label,
        "features": r.features,
        "n_per_set": r.n_per_set,
        "n_correct": r.n_correct,
        "n_total": r.n_total,
        "accuracy": r.accuracy,
        "accuracy_ci": list(r.accuracy_ci),
        "auc": r.auc,
        "auc_ci": list(r.auc_ci),
        "p_value": r.p_value,
        "permutations": r.permutations,
        "null_auc_mean": float(np.mean(r.null_auc)) if len(r.null_auc) else None,
        "null_auc_sd": float(np.std(r.null_auc)) if len(r.null_auc) else None,
        "classes_used": list(r.class_n),
        "classes_dropped": {k: list(v) for k, v in r.classes_dropped.items()},
        "near_duplicates_removed": [r.duplicates.get("removed_a"), r.duplicates.get("removed_b")],
        "seconds": round(seconds, 2),
        "top_a": list(r.top_a[:8]),
        "top_b": list(r.top_b[:8]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not (SHARED / "data/cifar10/test.npz").is_file():
        print(f"skipped: real data not available under {SHARED} (set REPLICATE_SHARED)")
        return
    os.environ.setdefault("REPLICATE_WEIGHTS", str(SHARED / "weights"))
    os.environ.setdefault("REPLICATE_OFFLINE", "1")
    import torch

    torch.set_num_threads(2)
    from replicate.io import load_npz
    from replicate.manifest import package_versions
    from replicate.shift import covariate_shift, dataset_test, remove_cross_duplicates, split_halves

    per_set = 1000 if args.quick else 5000
    perms = 50 if args.quick else 200
    rng = np.random.default_rng(0)
    test = load_npz(SHARED / "data/cifar10/test.npz", name="cifar10-test")
    train = load_npz(SHARED / "data/cifar10/train.npz", name="cifar10-train")
    pool = load_npz(SHARED / "data/candidates/tinyimagenet_cifar10_32x32.npz", name="candidates")
    train = train.select(np.sort(rng.permutation(len(train))[: len(test)]), name="cifar10-train-10k")
    if args.quick:
        test = test.select(np.sort(rng.permutation(len(test))[:3000]))
        train = train.select(np.sort(rng.permutation(len(train))[:3000]))
        pool = pool.select(np.sort(rng.permutation(len(pool))[:3000]))

    dedup = {}
    pairs = {"test-vs-train": (test, train), "test-vs-pool": (test, pool)}
    cleaned = {}
    for key, (a, b) in pairs.items():
        t = time.perf_counter()
        a2, b2, rec = remove_cross_duplicates(a, b, near_duplicates=None if args.quick else "auto")
        dedup[key] = {k: v for k, v in rec.items() if not k.startswith("removed_ids")}
        dedup[key]["seconds"] = round(time.perf_counter() - t, 1)
        dedup[key]["examples_a"] = rec["removed_ids_a"][:5]
        dedup[key]["examples_b"] = rec["removed_ids_b"][:5]
        cleaned[key] = (a2, b2)
        print(key, dedup[key], flush=True)
    h1, h2 = split_halves(test, seed=0)
    cleaned["control: test halves"] = (h1, h2)

    rows = []
    galleries = {}
    for key, (a, b) in cleaned.items():
        for feat in FEATURES:
            t = time.perf_counter()
            r = dataset_test(a, b, features=feat, permutations=perms, max_per_set=per_set, seed=0,
                             near_duplicates=None)  # already removed above
            rows.append(row(key, r, time.perf_counter() - t))
            galleries[f"{key}-{feat}"] = r.gallery_html
            print(r.summary().splitlines()[0], f"acc {r.accuracy:.4f} {r.accuracy_ci}", flush=True)

    cov = {}
    for key in ("test-vs-train", "test-vs-pool"):
        a, b = cleaned[key]
        if key == "test-vs-pool":  # compare like with like: shared classes only
            shared = [k for k in range(10) if np.any(a.labels == k) and np.any(b.labels == k)]
            a, b = a.select(np.isin(a.labels, shared)), b.select(np.isin(b.labels, shared))
        c = covariate_shift(a, b, permutations=perms, energy_n=1000, seed=0)
        cov[key] = c.to_dict()
        print(c.summary(), flush=True)

    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    out = {
        "quick": args.quick,
        "per_set_cap": per_set,
        "permutations": perms,
        "dedup": dedup,
        "dataset_tests": rows,
        "covariate_shift": cov,
        "packages": package_versions(),
        "command": sys.argv,
    }
    (RESULTS / f"shift{suffix}.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    gal = RESULTS / f"shift{suffix}_gallery_test_vs_pool_resnet20.html"
    gal.write_text(galleries["test-vs-pool-resnet20"])

    lines = [
        "| comparison | features | images per set | held-out accuracy [95% CP] | AUC [95% DeLong] | p (perm.) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["accuracy_ci"]
        lines.append(
            f"| {r['comparison']} | {r['features']} | {r['n_per_set']} | {r['n_correct']}/{r['n_total']} = "
            f"{100 * r['accuracy']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}] | {r['auc']:.3f} "
            f"[{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}] | {r['p_value']:.3g} |"
        )
    lines += ["", "| comparison | statistic | mean a | mean b | Cohen's d | KS | KS p | energy p (Holm) |",
              "|---|---|---|---|---|---|---|---|"]
    for key, c in cov.items():
        for t in c["table"]:
            lines.append(
                f"| {key} | {t['statistic']} | {t['mean_a']:.4f} | {t['mean_b']:.4f} | {t['cohens_d']:.3f} | "
                f"{t['ks']:.3f} | {t['ks_p']:.2g} | {t['energy_p_holm']:.3g} |"
            )
        hb = c["hash_bits"]
        lines.append(f"| {key} | pHash bit frequencies (64) | | | | max diff {hb['max_abs_diff']:.3f} | | "
                     f"{hb['p_value']:.3g} (not adjusted) |")
    (RESULTS / f"shift{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
