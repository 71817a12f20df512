"""``replicate build CONFIG``, ``replicate run CONFIG`` and ``replicate demo``."""

from __future__ import annotations

import argparse
import sys

from replicate.cli import print_json


def register(sub: argparse._SubParsersAction) -> None:
    for name, help_text in (
        ("build", "pool -> near-duplicate removal -> matched sample: write the new test set"),
        ("run", "everything: build, evaluate, compare, dataset test, reports"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("config", help="a TOML config (schema: replicate.config; examples in configs/)")
        _common(p)
        p.add_argument("--executor", choices=("local", "dask"),
                       help="where a streamed pool's stages run (replaces [run] executor; docs/scale.md)")
        p.add_argument("--address", help="the Dask scheduler (replaces [run] address; default: "
                       "DASK_SCHEDULER_ADDRESS, else a local cluster)")
        p.set_defaults(func=run_command, stage=name)
    p = sub.add_parser("demo", help="the full run on the embedded default (real data bundled with replicate)")
    _common(p)
    p.set_defaults(func=run_command, stage="demo", config=None)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="output directory (default: the config's [run] out; demo: demo-out)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run with a different config in the output directory (only the files replicate wrote are removed)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")


def run_command(args: argparse.Namespace) -> int:
    from replicate import pipeline

    try:
        return _run(args)
    except (NotADirectoryError, pipeline.OutputDirBusy) as exc:  # one line, not a traceback
        print(f"replicate {args.stage}: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from replicate import pipeline

    result: pipeline.BuildOutput | pipeline.RunOutput
    if args.stage == "demo":
        config = pipeline.demo_config(args.out or "demo-out")
        result = pipeline.run(config, out=args.out, overwrite=args.overwrite, quiet=args.quiet)
    elif args.stage == "build":
        result = pipeline.build_testset(args.config, out=args.out, overwrite=args.overwrite, quiet=args.quiet,
                                        executor=args.executor, address=args.address)
    else:
        result = pipeline.run(args.config, out=args.out, overwrite=args.overwrite, quiet=args.quiet,
                              executor=args.executor, address=args.address)
    data = result.to_dict()
    if args.json:
        print_json(data)
        return 0
    build = data["build"] if "build" in data else data
    print(f"new test set: {build['testset']} ({build['summary']['new_testset']['n']} images)")
    for path in data.get("reports", {}).values():
        print(f"report: {path}")
    return 0
