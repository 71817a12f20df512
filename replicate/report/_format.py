"""Number formatting shared by the report's sections and its templates."""

from __future__ import annotations

import math
import re
from typing import Any


def num(x: Any) -> float | None:
    """``x`` as a float; ``None`` for ``None``, NaN or anything that is not a number."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s or "x"


def pct(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "–"
    text = f"{100 * x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def ival(lo: float | None, hi: float | None, digits: int = 1) -> str:
    return "" if lo is None or hi is None else f"[{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]"


def pfmt(p: float | None) -> str:
    if p is None:
        return "–"
    if p == 0:
        return "< 1e-300"
    if p < 1e-3:
        return f"{p:.1e}"
    return f"{p:.3f}"


def num_fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def rank(x: float | None) -> str:
    return "–" if x is None else f"{x:g}"
