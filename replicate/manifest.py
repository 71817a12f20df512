"""Manifests: what went into an output, so that a result can be traced and re-made.

A manifest is a JSON object with the content fingerprint, the sha256 of each file,
the sources and parents, the resolved config, the code and package versions, the
command line and the time. Same inputs give the same manifest except for ``created``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["make_manifest", "package_versions", "sha256_file", "code_version", "TRACKED_PACKAGES"]

TRACKED_PACKAGES = (
    "numpy",
    "scipy",
    "torch",
    "torchvision",
    "pillow",
    "imagehash",
    "statsmodels",
    "pandas",
    "numba",
)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change replicate's outputs."""
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


@lru_cache(maxsize=1)
def code_version() -> dict[str, str | None]:
    """replicate's version, and the git commit when running from a checkout."""
    from replicate._version import __version__

    commit = None
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        try:
            commit = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"replicate": __version__, "git_commit": commit}


def make_manifest(
    kind: str,
    fingerprint: str | None = None,
    files: dict[str, str] | None = None,
    sources: Any = None,
    parents: Any = None,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A manifest dictionary (JSON-serialisable, keys sorted when written).

    Parameters
    ----------
    kind
        what the manifest describes (``"imageset"``, ``"image-source"``, ``"run"``, ``"shift"``, ``"report"``).
    fingerprint
        the content fingerprint of what was written.
    files
        file name -> sha256 of each file written.
    sources, parents
        what it was made from (files, image sets, earlier manifests).
    config
        the settings that made it.
    extra
        further top-level keys.

    The code version, package versions, command line and UTC time are added.
    """
    return {
        "manifest_version": 1,
        "kind": kind,
        "fingerprint": fingerprint,
        "files": dict(sorted((files or {}).items())),
        "sources": sources,
        "parents": parents,
        "config": config,
        "code": code_version(),
        "packages": package_versions(),
        "command": list(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
