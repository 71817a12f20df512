"""One JSON-safe conversion for every result's ``to_dict()``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


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
