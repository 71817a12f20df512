"""Pool -> new test set on the full real data, and the main job on the embedded default.

Runs with an empty evaluation cache ($REPLICATE_HOME in a temporary folder).
Targets: `build_testset` on CIFAR-10 train + test and the 12,100-image candidate pool in
under 2 minutes on 2 cores (fresh output directory, so nothing is cached); the demo
(`replicate demo`) in under 3 minutes. Baselines in the same run: the cached rerun of
the same build (a no-op, the floor of the pipeline's own overhead) and loading the inputs.
The full build needs ../shared (skipped with a message otherwise).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, write  # noqa: E402

import replicate  # noqa: E402
from replicate import pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the demo run")
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as d:
        # a fresh evaluation/feature cache, as on a new machine
        os.environ["REPLICATE_HOME"] = str(Path(d) / "home")
        if (SHARED / "README.md").is_file():
            cfg = ROOT / "configs/cifar10-full.toml"
            t_load, _ = timed(lambda: [replicate.load(SHARED / f"data/cifar10/{s}.npz") for s in ("train", "test")])
            t_build, build = timed(lambda: pipeline.build_testset(cfg, out=Path(d) / "full", quiet=True))
            t_cached, _ = timed(lambda: pipeline.build_testset(cfg, out=Path(d) / "full", quiet=True))
            results["full_build"] = {
                "seconds": t_build,
                "stage_seconds": {s.name: s.seconds for s in build.stages},
                "new_testset_images": build.summary["new_testset"]["n"],
                "cached_rerun_seconds": t_cached,
                "baseline_load_cifar10_seconds": t_load,
                "target_seconds": 120,
                "target_met": t_build < 120,
            }
        else:
            results["full_build"] = f"skipped: {SHARED} not found"
        if not args.quick:
            t_demo, run = timed(lambda: pipeline.run(pipeline.demo_config(Path(d) / "demo"), quiet=True))
            t_demo_cached, _ = timed(lambda: pipeline.run(pipeline.demo_config(Path(d) / "demo"), quiet=True))
            results["demo"] = {
                "seconds": t_demo,
                "stage_seconds": {s.name: s.seconds for s in (*run.build.stages, *run.stages)},
                "cached_rerun_seconds": t_demo_cached,
                "target_seconds": 180,
                "target_met": t_demo < 180,
            }
    write("pipeline", results)


if __name__ == "__main__":
    main()
