"""Kept for modules that still import ``json_safe`` from here; it lives in :mod:`replicate._results`."""

from __future__ import annotations

from replicate._results import json_safe

__all__ = ["json_safe"]
