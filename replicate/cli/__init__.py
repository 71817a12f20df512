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
    except (ValueError, TypeError, KeyError, OSError) as exc:
        print(f"replicate {args.command}: error: {_one_line(exc, args)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException, args: argparse.Namespace) -> str:
    """replicate's error as one line; an OS error names its file (or the command's output)."""
    import errno

    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.strerror and exc.errno is not None:
        where = exc.filename or getattr(args, "out", None) or ""
        if exc.filename2:
            where = f"{exc.filename} -> {exc.filename2}"
        hint = {
            errno.ENOSPC: " Free some space (or choose another --out) and run again; nothing partial was kept.",
            errno.EACCES: " Choose a directory you can write to.",
            errno.EROFS: " Choose a directory you can write to.",
        }.get(exc.errno, "")
        return f"{exc.strerror}: {str(where)!r}.{hint}" if where else f"{exc.strerror}.{hint}"
    return " ".join(str(exc).split("\n")) if str(exc) else type(exc).__name__
