"""The ``replicate`` command line: a thin shell over the library.

Each module in this package adds its subcommands through ``register(subparsers)``,
setting ``func`` on its parser; ``func(args)`` calls one library function, prints or
writes its result, and returns an exit code. Modules are found automatically, so a
stage adds a command by adding a module here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    from replicate import __version__

    parser = argparse.ArgumentParser(
        prog="replicate",
        description="Build fresh test sets, re-evaluate published models, and measure the drop.",
    )
    parser.add_argument("--version", action="version", version=f"replicate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def print_json(data: Any) -> None:
    """Print JSON the same way for every command (sorted keys, 2-space indent)."""
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, PermissionError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"replicate {args.command}: error: {message}", file=sys.stderr)
        return 2
