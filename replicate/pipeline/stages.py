"""Cached, resumable pipeline stages.

A stage's output directory is keyed by the sha256 of its name, its resolved config,
the fingerprints of its inputs, replicate's version and the source of the modules the
stage runs (:func:`code_digest`), so changed code recomputes the stages it touches
and only those. A stage writes into a temporary directory and renames it into place
after writing ``stage.json`` last (it lists every file the stage wrote), so:

- a rerun with the same inputs and code finds ``stage.json`` and is a no-op (a disk
  read, and no write: a finished run can be read from a read-only directory);
- a run killed mid-stage (even ``kill -9``) leaves only a temporary directory named
  with its process id, which a later run removes once that process is gone, and
  redoes; its outputs are byte-identical because every stage is deterministic given
  its inputs and seed (manifests differ only in ``created``).

Chunked stages (hashing, dedup) are written so that a distributed engine can run the
same per-chunk functions; this runner is the single-machine scheduler.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replicate._validation import fail

__all__ = ["stage_key", "run_stage", "code_digest", "StageInfo", "pid_alive"]


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def _source_files(module: str) -> list[tuple[str, Path]]:
    """(name, file) of ``module``: its ``.py`` file, or every file under a package's folder."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise fail("stage code module", module, "an importable module", error=ModuleNotFoundError)
    if spec.submodule_search_locations:
        files: list[tuple[str, Path]] = []
        for loc in spec.submodule_search_locations:
            for p in Path(loc).rglob("*"):
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                    files.append((p.relative_to(loc).as_posix(), p))
        return sorted(files)
    if spec.origin is None or not Path(spec.origin).is_file():
        raise fail("stage code module", module, "a module with a source file", error=ModuleNotFoundError)
    return [(Path(spec.origin).name, Path(spec.origin))]


def code_digest(modules: Sequence[str]) -> str:
    """sha256 over the source of ``modules`` (each file's bytes and its path in the module).

    A package counts with every file under its folder (``.py`` files, templates), so
    an edit anywhere in a stage's code changes the stage's key; the same code gives
    the same digest on any machine and checkout path.
    """
    digest = hashlib.sha256()
    for module in sorted(set(modules)):
        for rel, f in _source_files(module):
            data = f.read_bytes()
            digest.update(f"{module}:{rel}:{len(data)}\n".encode())
            digest.update(data)
    return digest.hexdigest()


def stage_key(name: str, config: Any, inputs: dict[str, str], code: Sequence[str] = ()) -> str:
    """sha256 over the stage name, its config, its inputs' fingerprints, the version and the code."""
    from replicate._version import __version__

    payload = {"stage": name, "config": config, "inputs": inputs, "replicate": __version__}
    if code:
        payload["code"] = code_digest(code)
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _tmp_pid(path: Path) -> int | None:
    tail = path.name.rpartition(".tmp-")[2]
    return int(tail) if tail.isdigit() else None


@dataclass(frozen=True)
class StageInfo:
    """Where a stage's output lives and whether this run computed it or found it cached."""

    name: str
    key: str
    path: Path
    cached: bool
    seconds: float
    summary: dict[str, Any]


def _listing(tmp: Path) -> list[str]:
    return sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())


def run_stage(
    root: Path,
    name: str,
    config: Any,
    inputs: dict[str, str],
    work: Callable[[Path], dict[str, Any]],
    *,
    code: Sequence[str] = (),
    writable: bool = True,
    log: Callable[[str], None] | None = None,
) -> StageInfo:
    """Run ``work(tmpdir) -> summary`` unless its output for this key already exists.

    ``code`` names the modules whose source goes into the key. With
    ``writable=False`` (a read-only output directory) a stage that is not cached is an
    error naming it, before anything is attempted.

    Parameters
    ----------
    root
        the output directory; stages live in ``root/stages/<name>-<key[:16]>``.
    name
        the stage's name (part of its directory name and its key).
    config, inputs
        the stage's configuration and its inputs' digests (``{name: digest}``), both in the key.
    work
        computes the stage in the temporary directory it is given and returns its summary.
    code
        module names whose source goes into the key.
    writable
        whether ``root`` may be written (False: an uncached stage raises ``PermissionError``).
    log
        called with progress messages (``None``: silent).

    Returns
    -------
    StageInfo
        the stage's name, key, directory, whether it was cached, seconds taken and summary.
    """
    key = stage_key(name, config, inputs, code)
    stages = root / "stages"
    final = stages / f"{name}-{key[:16]}"
    marker = final / "stage.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if log:
            log(f"[{name}] cached ({final.name})")
        return StageInfo(name, key, final, True, 0.0, info.get("summary", {}))
    if not writable:
        raise fail(
            "out",
            str(root),
            "a writable directory",
            f"Stage {name!r} is not cached there (no {marker.relative_to(root)}), so it must be computed: "
            "make the directory writable or choose another --out.",
            error=PermissionError,
        )
    stages.mkdir(parents=True, exist_ok=True)
    for stale in stages.glob(f".{name}-{key[:16]}.tmp-*"):
        pid = _tmp_pid(stale)
        if pid is not None and pid != os.getpid() and not pid_alive(pid):  # its writer is gone
            shutil.rmtree(stale, ignore_errors=True)
    if final.exists():  # a directory without its marker: an interrupted rename or a foreign write
        raise fail(
            "stage directory",
            str(final),
            "absent or a finished stage (with stage.json)",
            "replicate did not finish writing it or did not write it; move it away and run again.",
            error=FileExistsError,
        )
    tmp = stages / f".{name}-{key[:16]}.tmp-{os.getpid()}"
    if tmp.exists():  # left by an earlier stage attempt of this same process
        shutil.rmtree(tmp)
    tmp.mkdir()
    if log:
        log(f"[{name}] running")
    start = time.perf_counter()
    try:
        summary = work(tmp)
        seconds = time.perf_counter() - start
        record = {
            "stage": name,
            "key": key,
            "config": config,
            "inputs": inputs,
            "code": list(code),
            "summary": summary,
            "files": _listing(tmp),
        }
        (tmp / "stage.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if log:
        log(f"[{name}] done in {seconds:.1f} s")
    return StageInfo(name, key, final, False, seconds, summary)
