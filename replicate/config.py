"""The run configuration (kept importable here; it lives in :mod:`replicate.pipeline.config`)."""

from __future__ import annotations

from replicate.pipeline.config import (
    BUNDLE,
    DEFAULTS,
    PipelineConfig,
    config_from_dict,
    load_config,
    resolve_path,
)

__all__ = ["DEFAULTS", "load_config", "resolve_path", "BUNDLE", "config_from_dict", "PipelineConfig"]
