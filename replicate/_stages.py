"""Cached, resumable pipeline stages.

A stage's output directory is keyed by the sha256 of its name, its resolved config,
the fingerprints of its inputs and replicate's version. A stage writes into a
temporary directory and renames it into place after writing ``stage.json`` last, so:

- a rerun with the same inputs finds ``stage.json`` and is a no-op (a disk read);
- a run killed mid-stage (even ``kill -9``) leaves only a temporary directory, which
  the next run removes and redoes; its outputs are byte-identical because every stage
  is deterministic given its inputs and seed (manifests differ only in ``created``).

Chunked stages (hashing, dedup) are written so that a distributed engine can run the
same per-chunk functions; this runner is the single-machine scheduler.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["stage_key", "run_stage", "StageInfo"]


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def stage_key(name: str, config: Any, inputs: dict[str, str]) -> str:
    """sha256 over the stage name, its config, its inputs' fingerprints and the code version."""
    from replicate._version import __version__

    payload = _canonical({"stage": name, "config": config, "inputs": inputs, "replicate": __version__})
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class StageInfo:
    """Where a stage's output lives and whether this run computed it or found it cached."""

    name: str
    key: str
    path: Path
    cached: bool
    seconds: float
    summary: dict[str, Any]


def run_stage(
    root: Path,
    name: str,
    config: Any,
    inputs: dict[str, str],
    work: Callable[[Path], dict[str, Any]],
    *,
    log: Callable[[str], None] | None = None,
) -> StageInfo:
    """Run ``work(tmpdir) -> summary`` unless its output for this key already exists."""
    key = stage_key(name, config, inputs)
    stages = root / "stages"
    stages.mkdir(parents=True, exist_ok=True)
    final = stages / f"{name}-{key[:16]}"
    marker = final / "stage.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if log:
            log(f"[{name}] cached ({final.name})")
        return StageInfo(name, key, final, True, 0.0, info.get("summary", {}))
    for stale in stages.glob(f".{name}-{key[:16]}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():  # a directory without its marker: an interrupted rename or a foreign write
        shutil.rmtree(final)
    tmp = stages / f".{name}-{key[:16]}.tmp-{os.getpid()}"
    tmp.mkdir()
    if log:
        log(f"[{name}] running")
    start = time.perf_counter()
    try:
        summary = work(tmp)
        seconds = time.perf_counter() - start
        record = {"stage": name, "key": key, "config": config, "inputs": inputs, "summary": summary}
        (tmp / "stage.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if log:
        log(f"[{name}] done in {seconds:.1f} s")
    return StageInfo(name, key, final, False, seconds, summary)
