"""``replicate dedup QUERY --reference NAME=PATH ... --out DIR``: near-duplicates of a new set."""

from __future__ import annotations

import argparse

from replicate.cli import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dedup",
        help="find near-duplicates of a new set in the original sets (and within itself)",
        description=(
            "Writes pairs.csv (every candidate pair with all distances), groups.csv, flagged.csv, "
            "flagged_ids.txt, kept_ids.txt, result.json and gallery.html (flagged pairs side by side) "
            "into --out."
        ),
    )
    p.add_argument("query", help="the new set: any format replicate.load() reads")
    p.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an original set, e.g. cifar10-train=data/cifar10/train.npz (repeatable)",
    )
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--blacklist", help="file of ids to exclude, one per line (appended by review)")
    p.add_argument("--no-within", action="store_true", help="do not look for duplicates inside the query set")
    p.add_argument("--aligned-max", type=float, help="aligned-distance threshold (default: the library's)")
    p.add_argument("--ratio-max", type=float, help="ratio-test threshold (default: the library's)")
    p.add_argument("--l2-rms-max", type=float, help="RMS pixel difference threshold (default: the library's)")
    p.add_argument("--edge-max", metavar="DIST|off",
                   help="edge-map verification threshold (default: the library's, 1.1); 'off' switches the edge rule "
                        "off: faster, fewer flags, misses more crops and zooms (see docs/dedup.md)")
    p.add_argument("--edge-ratio-max", metavar="RATIO|off",
                   help="also flag edge distances up to 1.1 that are at most RATIO times the query's next-best "
                        "candidate's (default: off); with --edge-max 1.0, 0.9 gives a shorter review queue for a "
                        "little less recall (docs/dedup.md)")
    p.add_argument("--aligned-k", type=int,
                   help="propose the N nearest references by coarse shifted/zoomed windows (default: the library's, "
                        "5; 0 switches them off: faster, misses more zoomed and shifted copies; docs/dedup.md)")
    p.add_argument(
        "--hash",
        action="append",
        default=None,
        metavar="METHOD=RADIUS",
        help="a perceptual hash and its Hamming radius, e.g. phash=4 (repeatable; replaces the defaults)",
    )
    p.add_argument("--preset", metavar="NAME",
                   help="named settings the other options replace: recall (the defaults), balanced, clean (the "
                        "defaults AND the copy-detection descriptor gate), fast (docs/dedup.md)")
    p.add_argument("--descriptor-min", metavar="COS|off",
                   help="verification gate: flag a pair only if the rules flag it AND its copydesc32 descriptor "
                        "cosine is >= COS (in [0, 1]; default: off, or the preset's); 'off' switches it off")
    p.add_argument("--features", metavar="MODEL", help="also compare features of this zoo model (e.g. resnet56)")
    p.add_argument("--feature-max", type=float, help="feature cosine-distance threshold (with --features)")
    p.add_argument("--max-gallery", type=int, default=1000, help="flagged pairs shown in gallery.html")
    p.add_argument("--json", action="store_true", help="print the result as JSON (counts, config, flagged ids)")
    p.set_defaults(func=run)


def _split(text: str, what: str) -> tuple[str, str]:
    from replicate._validation import fail

    if "=" not in text:
        raise fail(what, text, "NAME=VALUE", f"For example {'cifar10-train=train.npz' if what == '--reference' else 'phash=4'}.")
    name, value = text.split("=", 1)
    if not name or not value:
        raise fail(what, text, "NAME=VALUE with both parts non-empty")
    return name, value


def _number_or_off(text: str, option: str, rule: str) -> float | None:
    from replicate._validation import fail

    if text.strip().lower() == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise fail(option, text, f"{rule} or 'off'") from None


def run(args: argparse.Namespace) -> int:
    from replicate._files import check_out_dir
    from replicate._validation import fail
    from replicate.dedup import dedup_gallery, find_near_duplicates
    from replicate.io import load

    paths: dict[str, str] = {}
    for item in args.reference:
        name, path = _split(item, "--reference")
        if name in paths:
            raise fail("--reference", item, "a NAME given once",
                       f"{name!r} is already {paths[name]!r}; give each reference set its own name.")
        paths[name] = path
    out = check_out_dir("--out", args.out)  # before any work: not a file, writable
    query = load(args.query)
    references = {name: load(path) for name, path in paths.items()}
    overrides: dict = {"within_query": not args.no_within}
    if args.aligned_max is not None:
        overrides["aligned_max"] = args.aligned_max
    if args.ratio_max is not None:
        overrides["ratio_max"] = args.ratio_max
    if args.l2_rms_max is not None:
        overrides["l2_rms_max"] = args.l2_rms_max
    if args.edge_max is not None:
        overrides["edge_max"] = _number_or_off(args.edge_max, "--edge-max", "a distance in [0, 2]")
    if args.edge_ratio_max is not None:
        overrides["edge_ratio_max"] = _number_or_off(args.edge_ratio_max, "--edge-ratio-max", "a ratio in [0, 1]")
    if args.aligned_k is not None:
        overrides["aligned_k"] = args.aligned_k
    if args.hash is not None:
        radii = {}
        for item in args.hash:
            method, radius = _split(item, "--hash")
            try:
                radii[method] = int(radius)
            except ValueError:
                radii[method] = radius  # type: ignore[assignment]  # rejected with the house error
        overrides["hash_radii"] = radii
    if args.features:
        overrides["feature_model"] = args.features
        if args.feature_max is not None:
            overrides["feature_max"] = args.feature_max
    if args.descriptor_min is not None:
        overrides["descriptor_min"] = _number_or_off(args.descriptor_min, "--descriptor-min", "a cosine in [0, 1]")
    result = find_near_duplicates(query, references, config=args.preset, blacklist=args.blacklist, **overrides)
    result.save(out)
    html = dedup_gallery(result, query, references, max_pairs=args.max_gallery)
    (out / "gallery.html").write_text(html, encoding="utf-8")
    if args.json:
        print_json({**result.to_dict(), "out": str(out)})
        return 0
    print(result.summary())
    print(f"wrote {out}/pairs.csv, flagged_ids.txt, gallery.html")
    return 0
