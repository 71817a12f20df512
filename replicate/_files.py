"""Removing only what replicate wrote.

replicate never deletes a directory wholesale when it replaces an output: it removes the
files its manifest lists (the files it wrote), prunes the subdirectories that this leaves
empty, and keeps everything else (a ``notes.txt`` or ``review.sqlite`` that a user put
next to a run). The caller learns what was kept and says so.

A manifest may come from someone else, so a listed name is only removed when it is a
relative path that stays inside the directory (no absolute paths, no ``..``, no path that
leaves the directory through a symbolic link).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

__all__ = ["remove_written", "remaining", "manifest_files", "inside"]


def inside(directory: str | os.PathLike[str], name: str) -> Path | None:
    """``directory / name`` if ``name`` is a relative path that stays inside ``directory``, else None."""
    pure = PurePosixPath(str(name).replace("\\", "/"))
    if not str(name) or pure.is_absolute() or any(part in ("..", "") for part in pure.parts) or ":" in pure.parts[0]:
        return None
    root = Path(directory)
    target = root.joinpath(*pure.parts)
    # the parent must resolve inside the directory; the file itself may be a link (we unlink the link)
    try:
        parent = target.parent.resolve()
        if parent != root.resolve() and root.resolve() not in parent.parents:
            return None
    except OSError:
        return None
    return target


def manifest_files(directory: str | os.PathLike[str], manifest: str = "manifest.json") -> list[str]:
    """The files a replicate manifest in ``directory`` lists, plus the manifest itself.

    Empty when there is no manifest (then replicate wrote nothing there that it can prove).
    """
    path = Path(directory) / manifest
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    files = data.get("files") if isinstance(data, dict) else None
    names = [str(k) for k in files] if isinstance(files, dict) else []
    return sorted(set(names) | {manifest})


def remove_written(directory: str | os.PathLike[str], names: Iterable[str]) -> list[str]:
    """Remove the files ``names`` (relative to ``directory``) and return what is left there.

    Only regular files and symbolic links are removed (a link is removed, never its target);
    a listed name that is a directory, that does not exist, or that would leave
    ``directory`` is left alone. Subdirectories emptied by the removal are removed too
    (``directory`` itself stays). The return value lists, as sorted relative POSIX paths,
    every file, link or empty directory that remains (what replicate did not write); empty
    when nothing is left, so ``directory.rmdir()`` then succeeds.
    """
    root = Path(directory)
    if not root.is_dir():
        return []
    touched: set[Path] = set()
    for name in names:
        target = inside(root, name)
        if target is None:
            continue
        if target.is_symlink() or target.is_file():
            target.unlink()
            touched.add(target.parent)
    # prune directories that the removal emptied, deepest first, never above root
    for parent in sorted(touched, key=lambda p: len(p.parts), reverse=True):
        d = parent
        while d != root and root in d.parents:
            try:
                d.rmdir()
            except OSError:
                break
            d = d.parent
    return remaining(root)


def remaining(directory: str | os.PathLike[str]) -> list[str]:
    """Every file, link and empty directory under ``directory`` (sorted relative POSIX paths)."""
    root = Path(directory)
    out: list[str] = []
    for here, dirs, files in os.walk(root, followlinks=False):
        base = Path(here)
        for d in list(dirs):
            if (base / d).is_symlink():
                files.append(d)
                dirs.remove(d)
        if base != root and not dirs and not files:
            out.append(base.relative_to(root).as_posix())
        out += [(base / f).relative_to(root).as_posix() for f in files]
    return sorted(out)
