"""``replicate compare``: accuracy drop of many models between an original and a new test set.

Inputs are either two evaluation-result JSON files (as ``replicate evaluate --json`` writes:
one result object, a list of them, or ``{"results": [...]}``), or one published prediction
file (``--predictions FILE --original NAME --new NAME``, read by
``replicate.models.predictions.load_predictions``) holding predicted labels per model for each
set. Prints the summary table, or the machine-readable form with ``--json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from replicate._validation import fail
from replicate.cli import print_json


def register(sub: argparse._SubParsersAction) -> None:
    from replicate.stats import ADJUST_METHODS, FIT_METHODS, GAP_METHODS, INTERVAL_METHODS, SCALES

    p = sub.add_parser(
        "compare",
        help="intervals, gaps, fit, effective robustness and rank stability between two test sets",
        description="Compare many models' accuracy on an original and a new test set.",
    )
    p.add_argument("results", nargs="*", metavar="JSON",
                   help="two files: original and new evaluation results (replicate evaluate --json)")
    p.add_argument("--predictions", metavar="FILE",
                   help="a prediction file (.npz) with predicted labels per model for both sets")
    p.add_argument("--original", metavar="NAME", help="the original set in the prediction file (canonical name "
                   "such as cifar10-test / imagenet-val, or the file's key such as original / "
                   "imagenet-validation-original; default: the file's original test set)")
    p.add_argument("--new", metavar="NAME", help="the new set's name in the prediction file")
    p.add_argument("--labels", "--original-labels", dest="original_labels", metavar="FILE",
                   help="labels of the original set when the prediction file lacks them (.npz with 'labels', or .npy)")
    p.add_argument("--new-labels", metavar="FILE", help="labels of the new set when the prediction file lacks them")
    p.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level (default 0.05)")
    p.add_argument("--interval", default="clopper-pearson", choices=INTERVAL_METHODS)
    p.add_argument("--gap-method", default="newcombe", choices=GAP_METHODS)
    p.add_argument("--adjust", default="holm", choices=ADJUST_METHODS)
    p.add_argument("--scale", default="probit", choices=SCALES, help="scale of the linear fit (default probit)")
    p.add_argument("--fit-method", default="ols", choices=FIT_METHODS)
    p.add_argument("--bootstrap", default="auto", choices=("auto", "none", "models", "images"))
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exclude-from-fit", action="append", default=[], metavar="MODEL",
                   help="leave a model out of the fit (repeatable); it is still compared")
    p.add_argument("--exclude-flagged", action="store_true",
                   help="leave models whose results carry flags (e.g. a mismatched prediction file) out of the fit")
    p.add_argument("--agreement", action="store_true",
                   help="with --predictions: predict the new set's accuracies without its labels (agreement on "
                   "the line, ALine-S/-D; the new set may have predictions only); its labels, if any, only score them")
    p.add_argument("--json", action="store_true", help="print the full comparison as JSON")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- inputs


def _read_results(path: str) -> tuple[list[dict[str, Any]], str | None]:
    """Evaluation results from JSON: one object, a list, or {"results": [...]}; plus the dataset name."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"results == {path!r}; must be an existing JSON file. Write one with "
                                "'replicate evaluate --json'.")
    data = json.loads(p.read_text())
    if isinstance(data, dict) and "results" in data:
        data = data["results"]
    items = [data] if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise fail("results", path, "a JSON object or list of objects with model, n and n_correct")
    datasets = {str(x["dataset"]) for x in items if x.get("dataset")}
    return items, (datasets.pop() if len(datasets) == 1 else None)


def _labels_file(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"labels == {path!r}; must be an existing .npz or .npy file.")
    if p.suffix == ".npy":
        return np.load(p)
    with np.load(p) as z:
        if "labels" not in z.files:
            raise fail("labels", path, "an .npz with a 'labels' array", f"It holds: {', '.join(z.files)}.")
        return z["labels"]


def _prediction_comparison(args: argparse.Namespace, options: dict[str, Any]) -> Any:
    """The comparison of two sets of a published prediction file (``replicate.stats.compare_predictions``).

    ``--original`` defaults to the file's reference set (its original test set); ``--new``
    defaults to the only other set, and must be given when there are several.
    """
    from replicate.models.predictions import load_predictions
    from replicate.stats import compare_predictions, prediction_set_name

    ps = load_predictions(args.predictions)
    original = prediction_set_name(ps, args.original, "--original") if args.original else ps.reference
    if args.new is None:
        others = [k for k in ps.datasets if k != original]
        if len(others) != 1:
            raise fail("--new", None, f"one of the file's other sets: {', '.join(others)}",
                       "Pass --new NAME (once per comparison).")
        new = others[0]
    else:
        new = prediction_set_name(ps, args.new, "--new")
    labels = {name: _labels_file(path) for name, path in ((original, args.original_labels), (new, args.new_labels))
              if path is not None}
    (result,) = compare_predictions(ps, new, original=original, labels=labels, **options)
    return result


def _agreement(args: argparse.Namespace) -> Any:
    """``--agreement``: ALine-S/-D on a prediction file; the new set needs predictions only."""
    from replicate.stats import agreement_from_predictions

    if not args.predictions or args.results or not args.new:
        raise fail("--agreement", True, "used with --predictions FILE --new NAME (and no JSON files)",
                   "Agreement on the line needs every model's predictions on both sets.")
    labels = None if args.original_labels is None else _labels_file(args.original_labels)
    return agreement_from_predictions(args.predictions, args.new, original=args.original, labels=labels,
                                      exclude=args.exclude_from_fit, exclude_flagged=args.exclude_flagged)


def run(args: argparse.Namespace) -> int:
    from replicate.stats import compare

    options = dict(
        alpha=args.alpha, interval=args.interval, gap_method=args.gap_method, adjust=args.adjust,
        scale=args.scale, fit_method=args.fit_method, bootstrap=args.bootstrap, n_bootstrap=args.n_bootstrap,
        exclude_from_fit=args.exclude_from_fit, exclude_flagged=args.exclude_flagged, seed=args.seed,
    )
    if args.agreement:
        result = _agreement(args)
    elif args.predictions:
        if args.results:
            raise fail("results", args.results, "empty with --predictions", "Pass either JSON files or --predictions.")
        result = _prediction_comparison(args, options)
    else:
        if len(args.results) != 2:
            raise fail("results", args.results, "two JSON files (original, new)",
                       "Or use --predictions FILE --original NAME --new NAME.")
        orig, oname = _read_results(args.results[0])
        new, nname = _read_results(args.results[1])
        result = compare(orig, new, original_name=oname, new_name=nname, **options)
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.summary())
    return 0
