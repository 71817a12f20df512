"""``replicate shift A B``: can a classifier tell image set A from image set B?"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from replicate.cli import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "shift",
        help="dataset test: cross-validated classifier between two image sets, plus covariate-shift statistics",
    )
    p.add_argument("a", help="the first image set (e.g. the original test set); any format replicate.load() reads")
    p.add_argument("b", help="the second image set (e.g. the new test set)")
    p.add_argument(
        "--features",
        default="resnet20",
        help="zoo model name (penultimate layer), 'pixels' or 'colour-stats' (default: resnet20)",
    )
    p.add_argument("--folds", type=int, default=5, help="k of the k-fold cross-validation (default 5)")
    p.add_argument("--permutations", type=int, default=200, help="refits for the permutation p-value (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling, folds and permutations (default 0)")
    p.add_argument("--max-per-set", type=int, default=None, help="cap on images drawn from each set")
    p.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level (default 0.05)")
    p.add_argument(
        "--no-near-duplicates",
        action="store_true",
        help="remove only exact cross-set duplicates (skip the near-duplicate detector)",
    )
    p.add_argument("--no-covariates", action="store_true", help="skip the per-image covariate-shift statistics")
    p.add_argument("--json", action="store_true", help="print JSON ({'dataset_test': ..., 'covariate_shift': ...})")
    p.add_argument(
        "--out",
        default=None,
        help="directory to write shift.json, gallery.html, covariates.csv and manifest.json",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from replicate.io import load
    from replicate.manifest import make_manifest
    from replicate.shift import covariate_shift, dataset_test

    if args.out:
        from replicate._files import check_out_dir

        check_out_dir("--out", args.out)  # before any work: not a file, writable
    a = load(args.a)
    b = load(args.b)
    result = dataset_test(
        a,
        b,
        features=args.features,
        folds=args.folds,
        permutations=args.permutations,
        seed=args.seed,
        max_per_set=args.max_per_set,
        alpha=args.alpha,
        near_duplicates=None if args.no_near_duplicates else "auto",
    )
    cov = None if args.no_covariates else covariate_shift(a, b, seed=args.seed, alpha=args.alpha)
    data = {"dataset_test": result.to_dict(), "covariate_shift": None if cov is None else cov.to_dict()}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "shift.json").write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        (out / "gallery.html").write_text(result.gallery_html)
        result.to_dataframe().to_csv(out / "scores.csv", index=False)
        if cov is not None:
            cov.table.to_csv(out / "covariates.csv", index=False)
        from replicate.manifest import sha256_file

        files = {name: sha256_file(out / name) for name in ("shift.json", "gallery.html", "scores.csv",
                                                              "covariates.csv") if (out / name).exists()}
        config = {k: v for k, v in vars(args).items() if k != "func"}
        manifest = make_manifest(
            kind="shift",
            files=files,
            sources={"a": a.info.get("source"), "b": b.info.get("source")},
            config=config,
            extra={"inputs": {"a": a.fingerprint, "b": b.fingerprint}},
        )
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    if args.json:
        print_json(data)
        return 0
    print(result.summary())
    if cov is not None:
        print()
        print(cov.summary())
    if args.out:
        print(f"\nwrote shift.json, gallery.html, scores.csv, manifest.json to {args.out}", file=sys.stderr)
    return 0

