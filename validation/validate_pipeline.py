"""The full-scale real run: CIFAR-10 train + test, the 12,100-image pool, CIFAR-10.1's
keyword counts, six zoo models with published weights, the 30 prediction-file models.

Runs `configs/cifar10-full.toml` end to end and writes validation/results/pipeline.json
(what it found: new set, shortfalls, flagged duplicates, accuracies, drops, fits, dataset
test) and copies the Markdown report to validation/results/pipeline-report.md.
Skips when ../shared is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("REPLICATE_SHARED", ROOT.parent.parent / "shared"))
RESULTS = ROOT / "results"


def main() -> int:
    if not (SHARED / "README.md").is_file():
        print(f"skipped: real data not available ({SHARED} does not exist; set REPLICATE_SHARED)")
        return 0
    from replicate import pipeline

    out = ROOT.parent / "out" / "cifar10-full"
    t = time.perf_counter()
    result = pipeline.run(ROOT.parent / "configs/cifar10-full.toml", out=out)
    seconds = time.perf_counter() - t
    report = json.loads(result.reports["json"].read_text())
    comparisons = []
    for c in report["comparisons"]:
        comparisons.append(
            {
                "original": c["original"]["name"],
                "new": c["new"]["name"],
                "metric": c.get("metric"),
                "models": [
                    {k: m.get(k) for k in ("model", "correct_orig", "n_orig", "acc_orig", "correct_new",
                                           "n_new", "acc_new", "gap", "gap_lower", "gap_upper", "p_adjusted")}
                    for m in c["models"]
                ],
                "fit": {k: (c.get("fit") or {}).get(k) for k in ("scale", "method", "n_models", "slope", "slope_ci",
                                                                 "intercept", "r2")},
                "verdict": c.get("verdict"),
                "diagnosis": c.get("diagnosis"),
            }
        )
    stages = {s.name: {"cached": s.cached, "seconds": round(s.seconds, 1)} for s in (*result.build.stages, *result.stages)}
    shift = json.loads(next((out / "stages").glob("shift-*/shift.json")).read_text()) if list((out / "stages").glob("shift-*")) else None
    summary = {
        "seconds": round(seconds, 1),
        "stages": stages,
        "build": result.build.summary,
        "evaluate": result.summary["evaluate"],
        "comparisons": comparisons,
        "shift": {k: shift.get(k) for k in ("accuracy", "accuracy_ci", "auc", "auc_ci", "p_value", "n_per_set", "features")} if shift else None,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    shutil.copyfile(result.reports["md"], RESULTS / "pipeline-report.md")
    print(json.dumps({k: summary[k] for k in ("seconds", "stages", "evaluate")}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
