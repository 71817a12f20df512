"""The run configuration: a TOML file with a documented schema, checked once.

Every key has a default (see ``DEFAULTS``); an unknown key is an error that suggests
the closest known one. Paths are resolved relative to the config file. The special
prefix ``bundle:`` names a file in the embedded default bundle (``replicate/data``).

Schema (all sections optional)::

    [run]        name, seed, out
    [original]   test, train                  # image sets the new set must not repeat
    [pool]       path                         # a candidate pool (name or path)
    [dedup]      enabled, blacklist, and any DedupConfig field (hash_radii, l2_k,
                 l2_rms_max, aligned_max, tiny_max, feature_model, within_query, ...)
    [keywords]   target (counts file or image set), version (v4/v6/v7 for CIFAR-10.1
                 tables), split (CIFAR-10.2), keyword_column, synonyms
    [sampling]   size, strategy, shortfall, per_class, top_k
    [evaluate]   models, batch_size, device, weights_dirs (searched for weight files)
    [reanalysis] predictions, original, new, labels  # published prediction files
    [shift]      enabled, features, folds, permutations, max_per_set
    [report]     formats, title
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any

from replicate._validation import closest, fail

__all__ = ["DEFAULTS", "load_config", "resolve_path", "BUNDLE", "config_from_dict"]

BUNDLE = Path(__file__).resolve().parent / "data"

DEFAULTS: dict[str, dict[str, Any]] = {
    "run": {"name": "replicate-run", "seed": 0, "out": "out"},
    "original": {"test": None, "train": None},
    "pool": {"path": None},
    "dedup": {"enabled": True, "blacklist": None},  # plus any field of replicate.dedup.DedupConfig
    "keywords": {
        "target": None,
        "version": "v6",
        "split": "test",
        "keyword_column": "keyword",
        "synonyms": None,
    },
    "sampling": {"size": 2000, "strategy": "v6", "shortfall": "report", "per_class": None, "top_k": None},
    "evaluate": {"models": ["resnet20"], "batch_size": 500, "device": "auto", "weights_dirs": []},
    "reanalysis": {"predictions": None, "original": None, "new": [], "labels": None},
    "shift": {"enabled": True, "features": "pixels", "folds": 5, "permutations": 200, "max_per_set": 2000},
    "report": {"formats": ["html", "md", "json", "csv", "tex"], "title": None},
}

_PATH_KEYS = {
    ("original", "test"),
    ("original", "train"),
    ("dedup", "blacklist"),
    ("keywords", "target"),
    ("keywords", "synonyms"),
    ("reanalysis", "predictions"),
    ("reanalysis", "labels"),
    ("run", "out"),
}


def resolve_path(value: str | None, base: Path) -> str | None:
    """``bundle:x`` -> the bundled file; relative paths -> relative to ``base``.

    Values that are neither an existing path nor a ``bundle:`` reference (e.g. a pool
    name or a published keyword table name) are returned unchanged.
    """
    if value is None:
        return None
    if value.startswith("bundle:"):
        target = BUNDLE / value.removeprefix("bundle:")
        if not target.exists():
            known = sorted(str(p.relative_to(BUNDLE)) for p in BUNDLE.rglob("*") if p.is_file())
            raise fail("bundle path", value, f"a file in the bundle, one of {known[:12]}", error=FileNotFoundError)
        return str(target)
    p = Path(os.path.expanduser(value))
    if not p.is_absolute():
        candidate = base / p
        if candidate.exists() or "/" in value or value.endswith((".npz", ".json", ".toml", ".txt")):
            return str(candidate)
    return str(p) if p.is_absolute() else value


def config_from_dict(raw: dict[str, Any], base: Path | None = None) -> dict[str, dict[str, Any]]:
    """Merge ``raw`` over the defaults, rejecting unknown sections and keys."""
    base = base or Path.cwd()
    cfg = copy.deepcopy(DEFAULTS)
    for section, values in raw.items():
        if section not in cfg:
            near = closest(section, cfg)
            raise fail(
                "config section",
                section,
                f"one of: {', '.join(cfg)}",
                f"Did you mean {near[0]!r}?" if near else None,
                error=KeyError,
            )
        if not isinstance(values, dict):
            raise fail(f"config [{section}]", values, "a table of keys", error=TypeError)
        allowed = list(cfg[section])
        if section == "dedup":
            from replicate.dedup import DedupConfig

            allowed += list(DedupConfig.__dataclass_fields__)
        for key, value in values.items():
            if key not in allowed:
                near = closest(key, allowed)
                raise fail(
                    f"config key [{section}]",
                    key,
                    f"one of: {', '.join(allowed)}",
                    f"Did you mean {near[0]!r}?" if near else None,
                    error=KeyError,
                )
            cfg[section][key] = value
    for section, key in _PATH_KEYS:
        value = cfg[section][key]
        if isinstance(value, str):
            cfg[section][key] = resolve_path(value, base)
    dirs = cfg["evaluate"]["weights_dirs"]
    if isinstance(dirs, str):
        dirs = [dirs]
    cfg["evaluate"]["weights_dirs"] = [str(base / d) if not Path(d).is_absolute() else d for d in dirs]
    if isinstance(cfg["pool"]["path"], str) and cfg["pool"]["path"].startswith("bundle:"):
        cfg["pool"]["path"] = resolve_path(cfg["pool"]["path"], base)
    elif isinstance(cfg["pool"]["path"], str) and (base / cfg["pool"]["path"]).exists():
        cfg["pool"]["path"] = str(base / cfg["pool"]["path"])
    return cfg


def load_config(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read and check a TOML config file."""
    p = Path(path)
    if not p.is_file():
        raise fail("config", str(p), "an existing TOML file", error=FileNotFoundError)
    with open(p, "rb") as fh:
        try:
            raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config == {str(p)!r}; must be valid TOML ({exc}).") from exc
    return config_from_dict(raw, p.resolve().parent)
