"""``replicate info PATH``: what an image set holds."""

from __future__ import annotations

import argparse

from replicate.cli import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="count, class counts, metadata columns and fingerprint of an image set")
    p.add_argument("path", help="any format replicate.load() reads (saved set, .npz, CIFAR folder, ...)")
    p.add_argument("--json", action="store_true", help="print JSON (keys n, class_counts, columns, fingerprint)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from replicate.io import load

    s = load(args.path)
    counts = s.class_counts()
    data: dict[str, object] = {
        "name": s.name,
        "n": len(s),
        "image_shape": list(s.image_shape),
        "class_counts": counts,
        "columns": s.columns,
        "fingerprint": s.fingerprint,
    }
    if args.json:
        print_json(data)
        return 0
    print(f"{s.name}: {len(s)} images of {s.image_shape[0]}x{s.image_shape[1]}x{s.image_shape[2]}")
    width = max((len(c) for c in counts), default=0)
    for cls, count in counts.items():
        print(f"  {cls:<{width}}  {count}")
    print(f"columns: {', '.join(s.columns) if s.columns else '(none)'}")
    print(f"fingerprint: {s.fingerprint}")
    return 0
