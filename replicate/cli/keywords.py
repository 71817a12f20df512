"""``replicate keywords PATH``: the per-class keyword table of an image set or a published table."""

from __future__ import annotations

import argparse

from replicate.cli import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keywords",
        help="per-class keyword counts of an image set, CIFAR-10.1 keyword_metadata.json or CIFAR-10.2 metadata.npz",
    )
    p.add_argument("path", help="an image set replicate.load() reads, a CIFAR-10.1/10.2 keyword file, or a counts JSON")
    p.add_argument("--column", default="keyword", help="metadata column holding each image's keyword (image sets)")
    p.add_argument("--version", choices=("v4", "v6", "v7"), default="v6", help="CIFAR-10.1 table (default v6)")
    p.add_argument("--split", choices=("test", "train", "all"), default="test", help="CIFAR-10.2 split (default test)")
    p.add_argument("--top", type=int, default=10, help="keywords shown per class in the text table (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON: classes, counts (class -> keyword -> count), totals")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from replicate.keywords import load_keyword_counts

    kc = load_keyword_counts(args.path, version=args.version, split=args.split, column=args.column)
    if args.json:
        print_json(kc.to_dict())
        return 0
    print(kc.summary(top=args.top))
    return 0
