"""The output directory of a run: one run at a time, and only replicate's own files touched.

:func:`open_out` checks the directory, takes an exclusive lock on it for the run
(``OUT/.replicate.lock``, ``fcntl.flock``; the file holds the holder's process id, so a
second run on the same directory stops at once with a message naming it), records the
config in ``run.json`` and, with ``overwrite=True``, removes what an earlier run with
another config wrote there: the files listed in its ``stage.json`` files and its run
manifest (:func:`replicate._files.remove_written`; the new test set is replaced by
``ImageSet.save(overwrite=True)``, which also removes only its own files), and nothing else (a ``review.sqlite`` or
``notes.txt`` beside them stays, and the log says so).

A finished run can be read from a read-only directory: when every stage is cached and
every file already holds what would be written, nothing is written and no lock file is
created (a shared lock is taken when the lock file is there).

``fcntl.flock`` rather than the ``filelock`` package: the lock file must carry the
holder's pid, and ``filelock`` truncates the file on every attempt to take it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replicate._files import manifest_files, remove_written
from replicate._validation import fail

__all__ = ["OutputDir", "OutputDirBusy", "open_out", "replicate_files", "LOCK_NAME"]

LOCK_NAME = ".replicate.lock"
RUN_RECORD = "run.json"
# written by the pipeline at the top of OUT (besides the lock file)
TOP_FILES = ("run.json", "build.json", "manifest.json")
# manifest fields that differ between two runs of the same thing
_VOLATILE = ("created", "command")


class OutputDirBusy(RuntimeError):
    """Another replicate run holds the output directory's lock."""


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str, allow_nan=True) + "\n"


@dataclass
class OutputDir:
    """An opened output directory: where it is, whether this run may write, the run's start time."""

    root: Path
    writable: bool
    created: str

    def _refuse(self, path: Path) -> Exception:
        return fail(
            "out",
            str(self.root),
            "a writable directory",
            f"{path.relative_to(self.root)} must be (re)written there: make the directory writable or choose another --out.",
            error=PermissionError,
        )

    def write_text(self, path: Path, text: str) -> None:
        """Write ``text`` to ``path`` atomically, unless the file already holds exactly it."""
        if path.is_file() and path.read_text() == text:
            return
        if not self.writable:
            raise self._refuse(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)

    def write_json(self, path: Path, data: Any) -> None:
        self.write_text(path, _dumps(data))

    def write_manifest(self, path: Path, manifest: Mapping[str, Any]) -> None:
        """Like :meth:`write_json`, but an existing manifest that differs only in its time is kept."""
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except ValueError:
                old = None
            strip = lambda m: {k: v for k, v in m.items() if k not in _VOLATILE}  # noqa: E731
            if isinstance(old, dict) and strip(old) == strip(json.loads(_dumps(manifest))):
                return
        self.write_json(path, manifest)

    def sync_dir(self, src: Path, dst: Path, listed: set[str]) -> None:
        """Make ``dst`` hold ``src``'s files; a file in ``dst`` is removed only if in ``listed``
        (paths relative to the root that an earlier run's manifest named)."""
        wanted = {p.relative_to(src) for p in src.rglob("*") if p.is_file()}
        for rel in sorted(wanted):
            target = dst / rel
            data = (src / rel).read_bytes()
            if target.is_file() and target.read_bytes() == data:
                continue
            if not self.writable:
                raise self._refuse(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        stale = [
            r for r in listed
            if Path(r).parts[:1] == (dst.name,) and Path(*Path(r).parts[1:]) not in wanted
        ]
        if stale and self.writable:
            remove_written(self.root, stale)


# --------------------------------------------------------------------------- removing what replicate wrote


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def replicate_files(root: Path) -> tuple[list[str], list[str]]:
    """(files replicate wrote under ``root`` per its records, leftover temporary folders)."""
    from replicate.pipeline.stages import pid_alive

    files = [name for name in TOP_FILES if (root / name).is_file()]
    manifest = _json(root / "manifest.json")
    if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict):
        files += list(manifest["files"])
    # new-testset/ is left to ImageSet.save(overwrite=True), which replaces only its own files
    temps = []
    stages = root / "stages"
    if stages.is_dir():
        for d in sorted(stages.iterdir()):
            record = _json(d / "stage.json") if d.is_dir() else None
            if isinstance(record, dict) and isinstance(record.get("files"), list):
                files += [f"stages/{d.name}/{f}" for f in record["files"]] + [f"stages/{d.name}/stage.json"]
            elif d.is_dir() and ".tmp-" in d.name:
                tail = d.name.rpartition(".tmp-")[2]
                if tail.isdigit() and not pid_alive(int(tail)):
                    temps.append(f"stages/{d.name}")
    return files, temps


def _remove_previous_run(root: Path, log: Callable[[str], None]) -> None:
    files, temps = replicate_files(root)
    for t in temps:  # a killed run's partial stage: replicate wrote everything in it
        shutil.rmtree(root / t, ignore_errors=True)
    later = {f"new-testset/{f}" for f in manifest_files(root / "new-testset")}  # replaced by the build
    kept = [p for p in remove_written(root, files) if p != LOCK_NAME and p not in later]
    log(f"[out] removed the files of the earlier run that replicate wrote ({len(files)} listed)")
    if kept:
        shown = ", ".join(kept[:8]) + (f" and {len(kept) - 8} more" if len(kept) > 8 else "")
        log(f"[out] kept {len(kept)} files replicate did not write (or did not list): {shown}")


# --------------------------------------------------------------------------- the lock


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return f"process {text}" if text.isdigit() else "another process"


@contextmanager
def _lock(root: Path, writable: bool) -> Iterator[None]:
    import fcntl

    path = root / LOCK_NAME
    if writable:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_EX
    elif path.is_file():
        fd = os.open(path, os.O_RDONLY)
        mode = fcntl.LOCK_SH
    else:  # read-only and never locked: nothing can be running there as this user
        yield
        return
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise fail(
                "out",
                str(root),
                "a directory no other replicate run is using",
                f"{_holder(fd)} holds its lock ({path}); wait for that run to finish, or choose another --out.",
                error=OutputDirBusy,
            ) from None
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a waiting run)


# --------------------------------------------------------------------------- opening


def _check_path(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise fail(
            "out",
            str(root),
            "a directory or a path that does not exist yet",
            "It is a file; choose another --out.",
            error=NotADirectoryError,
        )
    parent = root
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise fail("out", str(root), "a path whose parents are directories", f"{parent} is a file.", error=NotADirectoryError)
    if parent != root and not os.access(parent, os.W_OK | os.X_OK):
        raise fail(
            "out",
            str(root),
            "a directory replicate can create",
            f"{parent} is not writable; choose another --out.",
            error=PermissionError,
        )


def _check_same_run(root: Path, digest: str, overwrite: bool) -> bool:
    """True when ``root`` holds an earlier run with another config that may be replaced."""
    record = root / RUN_RECORD
    if record.is_file():
        old = _json(record)
        if not isinstance(old, dict) or old.get("config_hash") != digest:
            if not overwrite:
                raise fail(
                    "out",
                    str(root),
                    "an empty directory or one holding this same run",
                    "It holds a run with a different config (see its run.json); pass "
                    "overwrite=True (--overwrite) to replace it (only the files replicate wrote "
                    "there are removed), or choose another --out.",
                    error=FileExistsError,
                )
            return True
    elif root.is_dir() and any(p.name != LOCK_NAME for p in root.iterdir()):
        raise fail(
            "out",
            str(root),
            "an empty directory or one holding a replicate run (with run.json)",
            "It holds other files, which replicate will not delete even with --overwrite; "
            "choose another --out.",
            error=FileExistsError,
        )
    return False


def _writable(root: Path) -> bool:
    """Whether this process may create files in ``root`` (false on a read-only mount too)."""
    return os.access(root, os.W_OK | os.X_OK)


@contextmanager
def open_out(
    root: Path, config: Mapping[str, Any], digest: str, overwrite: bool, log: Callable[[str], None]
) -> Iterator[OutputDir]:
    """Check, lock and record the output directory for the length of a run (see the module doc).

    Parameters
    ----------
    root
        the output directory (created when missing).
    config
        the run's config as a mapping, recorded in the run record.
    digest
        the config's hash; a directory holding a run with another hash is refused unless ``overwrite``.
    overwrite
        remove the previous run's files (only those replicate wrote) and start afresh.
    log
        called with progress messages.

    Yields
    ------
    OutputDir
        the checked, locked directory; the lock is released when the ``with`` block ends.
    """
    _check_path(root)
    _check_same_run(root, digest, overwrite)  # before anything is written
    if not root.exists():
        root.mkdir(parents=True)
    writable = _writable(root)
    with _lock(root, writable):
        if _check_same_run(root, digest, overwrite):  # again, under the lock
            if not writable:
                raise fail("out", str(root), "a writable directory to replace the run in", error=PermissionError)
            _remove_previous_run(root, log)
        record = root / RUN_RECORD
        old = _json(record) if record.is_file() else None
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if isinstance(old, dict) and old.get("config_hash") == digest:  # the same run again: keep its start time
            created = old.get("created", created)
        out = OutputDir(root, writable, created)
        out.write_json(record, {"config_hash": digest, "created": created, "config": config})
        yield out
