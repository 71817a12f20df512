"""``replicate report INPUTS... --out DIR``: render a report from saved results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from replicate._validation import fail


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="render an HTML/Markdown/JSON/CSV/LaTeX report from comparison results and manifests",
        description=(
            "Render a report from JSON results: comparisons written by 'replicate compare --json' "
            "(one comparison or a list), manifests, and sampling/dedup/shift results (JSON with a "
            "'result' key naming the stage, or passed with --sampling/--dedup/--shift)."
        ),
    )
    p.add_argument("inputs", nargs="*",
                   help="JSON files (comparisons from 'replicate compare --json', manifests; kind detected from their "
                        "keys) or prediction files (.npz in the CIFAR-10.1 / ImageNetV2 release layout, with --new)")
    p.add_argument("--out", required=True, help="output directory (created if needed)")
    p.add_argument("--format", default="html,md,json", help="comma-separated: html, md, json, csv, tex (default html,md,json)")
    p.add_argument("--title", default="Replication report")
    p.add_argument("--label", action="append", default=None, help="label per comparison, in input order (repeat)")
    p.add_argument("--sampling", action="append", default=[], help="sampling result JSON (repeat)")
    p.add_argument("--dedup", action="append", default=[], help="near-duplicate result JSON (repeat)")
    p.add_argument("--shift", action="append", default=[], help="dataset-shift result JSON (repeat)")
    p.add_argument("--images", action="append", default=[], help="image set (any format replicate.load reads) for image grids (repeat)")
    p.add_argument("--original", metavar="NAME", help="prediction files: the original set (default: the file's first set)")
    p.add_argument("--new", action="append", default=[], metavar="NAME",
                   help="prediction files: a new set to compare with the original (repeat for several)")
    p.add_argument("--bootstrap", default="auto", choices=("auto", "none", "models", "images"),
                   help="prediction files: bootstrap of the fit and rank intervals (see replicate compare)")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="prediction files: bootstrap replicates")
    p.add_argument("--exclude-flagged", action="store_true",
                   help="prediction files: leave models whose results carry flags out of the fit")
    p.add_argument("--figure-format", default="png", help="png (default) or svg for charts")
    p.add_argument("--seed", type=int, default=0, help="seed for the random images shown per class")
    p.add_argument("--stem", default="report", help="file name stem (default 'report')")
    p.add_argument("--json", action="store_true", help="print the written paths as JSON")
    p.set_defaults(func=run)


def _read_json(path: str) -> Any:
    file = Path(path)
    if not file.is_file():
        raise fail("input", path, "an existing JSON file", error=FileNotFoundError)
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise fail("input", path, "a JSON file", f"It does not parse ({exc.msg} at line {exc.lineno}).") from None


def classify(data: Any, path: str) -> list[tuple[str, Any]]:
    """Split one JSON document into (kind, object) pairs: comparison, manifest, sampling, dedup, shift."""
    if isinstance(data, list):
        out: list[tuple[str, Any]] = []
        for item in data:
            out.extend(classify(item, path))
        return out
    if not isinstance(data, dict):
        raise fail("input", path, "a JSON object or a list of objects")
    if "manifest_version" in data:
        return [("manifest", data)]
    stage = data.get("result") or data.get("stage")
    if stage in ("sampling", "dedup", "shift", "comparison"):
        return [(stage, data)]
    if "comparisons" in data and isinstance(data["comparisons"], list):
        return [("comparison", c) for c in data["comparisons"]]
    if isinstance(data.get("models"), list) and "new_name" in data:  # replicate.stats.Comparison.to_dict()
        return [("comparison", data)]
    raise fail(
        "input",
        path,
        "a comparison (from 'replicate compare --json'), a manifest, or a result with 'result': "
        "'sampling' | 'dedup' | 'shift'",
        "Pass sampling, dedup and shift results with --sampling/--dedup/--shift.",
    )


def _compare_predictions(path: str, args: argparse.Namespace) -> tuple[list[Any], dict[str, str]]:
    """One comparison per --new set of a published prediction file, and the sets' fingerprints."""
    from replicate.models.predictions import load_predictions
    from replicate.stats import compare_predictions, prediction_set_name

    if not args.new:
        raise fail("--new", None, "at least one new set in the prediction file", f"Pass --new NAME for {path}.")
    ps = load_predictions(path)
    original = prediction_set_name(ps, args.original, "--original") if args.original else ps.reference
    new = [prediction_set_name(ps, name, "--new") for name in args.new]
    out = compare_predictions(ps, new, original=original, bootstrap=args.bootstrap, n_bootstrap=args.n_bootstrap,
                              exclude_flagged=args.exclude_flagged, seed=args.seed)
    # the sets' fingerprints, as the evaluation results state them (the same for every model)
    fps = {ds: ps.result(ps.models_on(ds)[0], ds, check=False).dataset_fingerprint
           for ds in dict.fromkeys([original, *new]) if ps.models_on(ds)}
    return out, fps


def run(args: argparse.Namespace) -> int:
    from replicate._validation import check_choice
    from replicate.cli import print_json
    from replicate.report import FORMATS, build_report, write_report

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    for f in formats:
        check_choice("--format", f, FORMATS)
    groups: dict[str, list[Any]] = {k: [] for k in ("comparison", "manifest", "sampling", "dedup", "shift")}
    fingerprints: dict[str, str] = {}
    for path in args.inputs:
        if path.endswith(".npz"):
            comps, fps = _compare_predictions(path, args)
            groups["comparison"].extend(comps)
            fingerprints.update(fps)
            continue
        for kind, obj in classify(_read_json(path), path):
            groups[kind].append(obj)
    if args.new and not any(p.endswith(".npz") for p in args.inputs):
        raise fail("--new", args.new, "used with a prediction file (.npz) among the inputs")
    for kind in ("sampling", "dedup", "shift"):
        groups[kind].extend(_read_json(p) for p in getattr(args, kind))
    from replicate.manifest import make_manifest, sha256_file

    groups["manifest"].append(
        make_manifest("report", files={str(p): sha256_file(p) for p in [*args.inputs, *args.sampling, *args.dedup, *args.shift]},
                      config={"formats": formats, "title": args.title, "seed": args.seed,
                              "figure_format": args.figure_format, "images": list(args.images)})
    )
    sets = []
    if args.images:
        from replicate.io import load

        sets = [load(p) for p in args.images]
    report = build_report(
        groups["comparison"],
        sampling=groups["sampling"],
        dedup=groups["dedup"],
        shift=groups["shift"],
        manifests=groups["manifest"],
        test_sets=sets,
        title=args.title,
        labels=args.label,
        figure_format=args.figure_format,
        seed=args.seed,
        fingerprints=fingerprints,
    )
    paths = write_report(report, args.out, formats, stem=args.stem)
    if args.json:
        print_json({k: str(v) for k, v in paths.items()})
    else:
        for f, path in paths.items():
            print(f"{f}: {path}")
    return 0
