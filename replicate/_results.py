"""The base of replicate's frozen result objects and the one JSON-safe conversion.

A result is a frozen dataclass that derives from :class:`Result`. It gets

- ``to_dict()``: every field through :func:`json_safe` (numpy arrays and scalars become lists
  and numbers, NaN/inf become ``None``, nested results their own ``to_dict()``);
- ``from_dict(d)``: the inverse, guided by the field annotations (lists back to arrays,
  ``None`` back to NaN where the field is a float or float array, tuples back to tuples,
  nested results through their own ``from_dict``), so that
  ``type(r).from_dict(r.to_dict()).to_dict() == r.to_dict()``;
- ``summary()``: a text rendering, which each result defines.

Results whose ``to_dict`` is not field-by-field (e.g. :class:`replicate.stats.Comparison`)
override both methods.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

import numpy as np

from replicate._validation import fail

__all__ = ["Result", "json_safe"]

R = TypeVar("R", bound="Result")


def json_safe(x: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays, tuples, NaN/inf -> None, paths -> str.

    Objects with ``to_dict()`` are converted through it; anything else becomes ``str``.
    """
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return None if math.isnan(v) or math.isinf(v) else v
    if x is None or isinstance(x, str):
        return x
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "to_dict") and callable(x.to_dict):
        return json_safe(x.to_dict())
    return str(x)


class Result:
    """Mixin for frozen result dataclasses: ``to_dict`` / ``from_dict`` / ``summary``."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def summary(self) -> str:  # pragma: no cover - every result defines its own
        raise NotImplementedError(f"{type(self).__name__}.summary")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        return {f.name: json_safe(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """Rebuild the result from :meth:`to_dict` output (or the same dict read back from JSON)."""
        if not isinstance(data, Mapping):
            raise fail("data", data, f"a mapping (the to_dict() of a {cls.__name__})", error=TypeError)
        fields = dataclasses.fields(cls)
        missing = [f.name for f in fields if f.name not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise fail("data", sorted(data)[:8], f"a {cls.__name__} dict with the fields {', '.join(missing)}",
                       "Pass the to_dict() output of the same replicate version.")
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: _restore(hints[f.name], data[f.name]) for f in fields if f.name in data})


def _array(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object:  # None (NaN) among numbers
        arr = np.asarray([np.nan if v is None else v for v in np.ravel(arr)], dtype=float).reshape(arr.shape)
    arr.flags.writeable = False
    return arr


def _restore(tp: Any, value: Any) -> Any:
    """``value`` (JSON-safe) as the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return float("nan") if options == [float] else None
        return _restore(options[0], value)
    if tp is float:
        return float("nan") if value is None else float(value)
    if tp is np.ndarray:
        return _array(value)
    if isinstance(tp, type) and issubclass(tp, Result):
        return tp.from_dict(value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_restore(args[0], v) for v in value)
        return tuple(_restore(a, v) for a, v in zip(args, value))
    if origin in (dict, Mapping, typing.Mapping):
        _, vt = typing.get_args(tp)
        return {k: _restore(vt, v) for k, v in value.items()}
    return value
