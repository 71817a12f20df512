"""Input checks that fail with one precise sentence.

Every message has the shape ``<argument> == <value>; must be <rule>. <how to fix>``
so a researcher sees which argument was wrong, what it was, and what it should be.
Helpers return the validated value so call sites stay one line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "fail",
    "check_choice",
    "check_int",
    "check_fraction",
    "closest",
    "short_repr",
]


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr`` of a value, shortened for error messages (arrays show dtype and shape).

    Strings (file paths above all) are kept whole up to 400 characters, so an error names
    the file it is about.
    """
    if isinstance(value, np.ndarray):
        return f"array(dtype={value.dtype}, shape={value.shape})"
    if isinstance(value, str):
        limit = max(limit, 400)
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fail(
    name: str,
    value: Any,
    rule: str,
    fix: str | None = None,
    error: type[Exception] = ValueError,
) -> Exception:
    """Build (not raise) the standard error: ``raise fail("alpha", a, "in (0, 1)")``.

    Parameters
    ----------
    name
        the argument's name as the caller wrote it (e.g. ``"alpha"`` or ``"len(ids)"``).
    value
        the value given; shown shortened by :func:`short_repr`.
    rule
        what the value must be, completing "must be ...".
    fix
        an optional sentence appended to the message (how to fix it); ``None`` or empty: none.
    error
        the exception class to build (``ValueError`` by default; ``TypeError`` for wrong types).

    Returns
    -------
    Exception
        ``error("<name> == <value>; must be <rule>. <fix>")``, for the caller to raise.
    """
    message = f"{name} == {short_repr(value)}; must be {rule}."
    if fix:
        message += f" {fix}"
    return error(message)


def closest(name: str, options: Iterable[str], n: int = 3) -> list[str]:
    """The registered names closest to ``name`` (for 'did you mean' hints)."""
    options = list(options)
    hits = difflib.get_close_matches(name, options, n=n, cutoff=0.5)
    if not hits:
        low = name.lower()
        hits = [o for o in options if low in o.lower()][:n]
    return hits


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise fail listing them all."""
    if isinstance(value, str) and value in choices:
        return value
    hint = ""
    if isinstance(value, str):
        near = closest(value, choices)
        if near:
            hint = f"Did you mean {', '.join(repr(x) for x in near)}?"
    raise fail(name, value, "one of: " + ", ".join(repr(c) for c in choices), hint or None)


def check_int(
    name: str,
    value: Any,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """Return ``value`` as ``int`` if it is an integer within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise fail(name, value, "an integer", error=TypeError)
    value = int(value)
    if minimum is not None and value < minimum:
        raise fail(name, value, f">= {minimum}")
    if maximum is not None and value > maximum:
        raise fail(name, value, f"<= {maximum}")
    return value


def check_fraction(name: str, value: Any, *, open_interval: bool = True) -> float:
    """Return ``value`` as ``float`` if it lies in (0, 1) (or [0, 1])."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise fail(name, value, "a number", error=TypeError) from None
    ok = (0.0 < x < 1.0) if open_interval else (0.0 <= x <= 1.0)
    if not ok or np.isnan(x):
        raise fail(name, value, "in (0, 1)" if open_interval else "in [0, 1]")
    return x
