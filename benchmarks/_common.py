"""Helpers shared by the benchmark scripts: machine info and writing results."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(os.environ.get("REPLICATE_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import numpy as np

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover
        pass
    try:
        info["load_avg_1min"] = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        pass
    return info


def best_of(fn, repeat: int = 3) -> float:
    """Fastest wall time of ``repeat`` calls (seconds)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def write(topic: str, results: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<topic>.json`` and print it."""
    RESULTS.mkdir(exist_ok=True)
    out = {"topic": topic, "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), **results}
    path = RESULTS / f"{topic}.json"
    path.write_text(json.dumps(out, indent=2, sort_keys=True, default=str) + "\n")
    print(json.dumps(out, indent=2, sort_keys=True, default=str))
    return path
