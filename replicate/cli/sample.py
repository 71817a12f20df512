"""``replicate sample POOL``: draw a new test set matching an original's keyword distribution."""

from __future__ import annotations

import argparse

from replicate.cli import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="allocate per-(class, keyword) counts and draw a new test set from a pool")
    p.add_argument("pool", help="labelled candidate pool (anything replicate.load() reads) with a keyword column")
    p.add_argument("--target", required=True,
                   help="the original's keyword counts: CIFAR-10.1 keyword_metadata.json, CIFAR-10.2 metadata.npz, "
                        "a counts JSON or an image set")
    p.add_argument("--version", choices=("v4", "v6", "v7"), default="v6", help="CIFAR-10.1 table (default v6)")
    p.add_argument("--split", choices=("test", "train", "all"), default="test", help="CIFAR-10.2 split (default test)")
    p.add_argument("--size", type=int, default=None, help="images to draw (required except for v4 with --ratio)")
    p.add_argument("--strategy", default="v6", help="allocation: v6 (default), v4 or proportional")
    p.add_argument("--top-k", type=int, default=None, help="keywords per class to keep (v4 default 25)")
    p.add_argument("--ratio", type=float, default=None, help="v4 only: images per keyword = ceil(count / ratio)")
    p.add_argument("--policy", default="report", help="shortfall policy: report (default), redistribute or fail")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--column", default="keyword", help="pool metadata column with each image's keyword")
    p.add_argument("--synonyms", default=None,
                   help="synonym map: a JSON file or a shipped map (tinyimagenet-wordnet-to-cifar10_1)")
    p.add_argument("--exclude", action="append", default=[],
                   help="file of ids to exclude: one per line, a JSON list, or JSON with 'flagged_ids' (repeatable)")
    p.add_argument("--out", default=None, help="directory to save the new test set (with manifest and sampling.json)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is a saved image set")
    p.add_argument("--json", action="store_true", help="print the sampling result as JSON (without the id list)")
    p.set_defaults(func=run)


def _read_ids(path: str) -> list[str]:
    import json
    from pathlib import Path

    from replicate._validation import fail

    p = Path(path)
    if not p.is_file():
        raise fail("--exclude", path, "an existing file of ids", error=FileNotFoundError)
    text = p.read_text()
    if p.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            if "flagged_ids" not in data:
                raise fail("--exclude", path, "a JSON list of ids or an object with 'flagged_ids'", error=KeyError)
            data = data["flagged_ids"]
        return [str(x) for x in data]
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from replicate._validation import check_int
    from replicate.io import load
    from replicate.keywords import allocate, load_keyword_counts
    from replicate.sampling import sample

    if args.size is not None:
        check_int("--size", args.size, minimum=1)
    if args.out:
        from replicate._files import check_out_dir

        check_out_dir("--out", args.out)  # before any work: not a file, writable
        if Path(args.out).exists():  # the rules of ImageSet.save, checked before the work
            from replicate._validation import fail
            from replicate.imageset import is_saved_imageset

            if not args.overwrite:
                raise fail("--out", args.out, "a path that does not exist yet",
                           "Pass --overwrite to replace a saved image set there.", error=FileExistsError)
            if not is_saved_imageset(Path(args.out)):
                raise fail("--out", args.out, "a saved image set when overwriting (it has no imageset.json)",
                           "Refusing to replace a directory that replicate did not write.", error=FileExistsError)
    counts = load_keyword_counts(args.target, version=args.version, split=args.split)
    allocation = allocate(counts, args.size, args.strategy, top_k=args.top_k, ratio=args.ratio)
    pool = load(args.pool)
    exclude = {f"exclude:{Path(f).name}": _read_ids(f) for f in args.exclude} or None
    result = sample(pool, allocation, column=args.column, synonyms=args.synonyms, exclude=exclude,
                    policy=args.policy, seed=args.seed, original=counts.source)
    data = result.to_dict()
    if args.out and result.testset is not None and len(result.testset) == 0:
        from replicate._validation import fail

        raise fail("--out", args.out, "written only when the sample holds images",
                   "Nothing was drawn (see the shortfall above); nothing was written.")
    if args.out and result.testset is not None:
        out = result.testset.save(args.out, overwrite=args.overwrite)
        (out / "sampling.json").write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    if args.json:
        data.pop("selected_ids")
        data["fit"] = result.fit(counts).to_dict()
        if args.out:
            data["out"] = str(args.out)
        print_json(data)
        return 0
    print(result.summary())
    print(result.fit(counts).summary())
    if args.out:
        print(f"saved {result.n_selected} images to {args.out}")
    return 0
