"""``replicate models [PATTERN]``: the model zoo (published weights and prediction files)."""

from __future__ import annotations

import argparse

from replicate.cli import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo (glob PATTERN, e.g. 'resnet*')")
    p.add_argument("pattern", nargs="?", default="*", help="glob over model names (default: all)")
    p.add_argument("--kind", choices=("weights", "predictions"), help="only models with weights, or only prediction-file models")
    p.add_argument("--local", action="store_true", help="only models whose weights or prediction file are on this machine")
    p.add_argument("--json", action="store_true", help="print the cards as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from replicate.models import get_card, list_models
    from replicate.models._weights import find_local

    names = list_models(args.pattern, kind=args.kind)
    if not names and not any(ch in args.pattern for ch in "*?["):
        get_card(args.pattern)  # an unknown exact name fails with the closest names
    cards = [get_card(n) for n in names]
    local = {c.name: find_local(c) for c in cards}
    if args.local:
        cards = [c for c in cards if local[c.name] is not None]
    if args.json:
        print_json([{**c.to_dict(), "local_path": None if local[c.name] is None else str(local[c.name])} for c in cards])
        return 0
    if not cards:
        print(f"no models match {args.pattern!r}")
        return 0
    width = max(len(c.name) for c in cards)
    for c in cards:
        acc = "" if c.reported_accuracy is None else f"{c.reported_accuracy:6.2f}%"
        where = "local" if local[c.name] is not None else ("url" if c.url and c.kind == "weights" else "-")
        print(f"{c.name:<{width}}  {c.kind:<11}  {acc:>7}  {where:<5}  {c.architecture}")
    print(f"{len(cards)} models")
    return 0
