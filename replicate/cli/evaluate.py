"""``replicate evaluate --model NAME --dataset PATH``: accuracy of zoo models on an image set."""

from __future__ import annotations

import argparse
import sys

from replicate.cli import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate zoo models on an image set (cached)")
    p.add_argument("--model", "-m", action="append", required=True, metavar="NAME",
                   help="zoo model name or glob (repeatable), e.g. resnet20 or 'cifar10.1/*'")
    p.add_argument("--dataset", "-d", required=True, metavar="PATH", help="any format replicate.load() reads")
    p.add_argument("--weights", metavar="FILE", help="explicit weights file (one model only)")
    p.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default: 256 on CPU, 1000 on GPU)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the evaluation cache")
    p.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    p.add_argument("--allow-remote-code", action="store_true",
                   help="allow --model hub:owner/repo:entry, which downloads and RUNS that repository's "
                        "Python code (only for repositories you trust; refused under REPLICATE_OFFLINE)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--per-image", action="store_true", help="with --json: include per-image predictions")
    p.add_argument("--json", action="store_true",
                   help="print JSON (keys model, dataset, n, n_correct, accuracy, ...; a list for several models)")
    p.set_defaults(func=run)


def _expand(patterns: list[str], allow_remote_code: bool = False) -> list[str]:
    from replicate.evaluation import _check_remote_code
    from replicate.models import get_card, list_models

    names: list[str] = []
    for pat in patterns:
        if pat.startswith("hub:"):  # checked here so no dataset is read first
            _check_remote_code(pat, allow_remote_code)
            names += [pat] if pat not in names else []
            continue
        hits = list_models(pat) if any(ch in pat for ch in "*?[") else [get_card(pat).name]
        if not hits:
            get_card(pat)  # fails with the closest names
        names += [h for h in hits if h not in names]
    return names


def run(args: argparse.Namespace) -> int:
    from replicate.evaluation import evaluate
    from replicate.io import load

    names = _expand(args.model, args.allow_remote_code)
    if args.weights and len(names) != 1:
        raise ValueError(f"--weights == {args.weights!r}; must go with exactly one --model (got {len(names)}).")
    dataset = load(args.dataset)
    results = []
    for name in names:
        r = evaluate(
            name,
            dataset,
            batch_size=args.batch_size,
            device=args.device,
            threads=args.threads,
            cache=not args.no_cache,
            compile=args.compile,
            progress=not args.quiet and sys.stderr.isatty(),
            weights=args.weights,
            allow_remote_code=args.allow_remote_code,
        )
        results.append(r)
        if not args.json:
            print(r.summary())
    if args.json:
        data = [r.to_dict(per_image=args.per_image) for r in results]
        print_json(data[0] if len(data) == 1 else data)
    return 0
