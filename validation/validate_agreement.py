"""Agreement on the line (Baek et al. 2022) on the published CIFAR-10.1 and ImageNetV2 predictions.

For each new set, ALine-S and ALine-D predict every model's new-set accuracy from its
original accuracy and the new-set agreements of all model pairs (the new labels are used
only to score the predictions): mean and maximum absolute error, the agreement and accuracy
lines, and the method's own check. Each set is run with all models and without the models
that ``PredictionSet`` flags as implausible (mismatched prediction files, e.g. ``fv_16k``).

    python validation/validate_agreement.py

Writes validation/results/agreement.json and agreement.md; skips when ../shared is absent.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from replicate.manifest import package_versions
from replicate.models.predictions import load_predictions
from replicate.stats import agreement_on_the_line

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHARED = Path(os.environ.get("REPLICATE_SHARED", HERE.parent.parent / "shared"))
RELEASES = [
    ("data/cifar10_1/labels_and_model_predictions.npz", "cifar10-test", ["cifar10.1-v4", "cifar10.1-v6"]),
    ("data/imagenetv2/predictions.npz", "imagenet-val",
     ["imagenetv2-matched-frequency", "imagenetv2-threshold0.7", "imagenetv2-top-images"]),
]


def run() -> dict:
    rows = []
    for path, original, news in RELEASES:
        ps = load_predictions(SHARED / path)
        ro_all = ps.results(original)
        for new in news:
            rn = ps.results(new)
            common = {r.model for r in rn}
            ro = [r for r in ro_all if r.model in common]
            flagged = sorted({r.model for r in ro + rn if r.flags})
            for exclude in ([], flagged) if flagged else ([],):
                r = agreement_on_the_line(ro, rn, labels_new=rn[0].labels, exclude=exclude, original_name=original,
                                          new_name=new)
                err_d = r.predicted_d - r.accuracy_new
                err_s = r.predicted_s - r.accuracy_new
                rows.append({
                    "original": original, "new": new, "models": len(r), "excluded": list(exclude),
                    "agreement_slope": r.slope, "agreement_intercept": r.intercept, "agreement_r2": r.r2,
                    "accuracy_slope": r.accuracy_slope, "accuracy_intercept": r.accuracy_intercept,
                    "accuracy_r2": r.accuracy_r2, "level_difference": r.level_difference,
                    "mae_s": r.mae_s, "mae_d": r.mae_d, "max_abs_s": float(np.max(np.abs(err_s))),
                    "max_abs_d": float(np.max(np.abs(err_d))), "mean_signed_d": float(np.mean(err_d)),
                    "naive_mae": float(np.mean(np.abs(r.accuracy_original - r.accuracy_new))),
                    "holds": r.holds, "warnings": list(r.warnings), "per_model": r.rows(),
                })
    return {"rows": rows}


def markdown(res: dict) -> str:
    lines = [
        "# Agreement on the line on published predictions",
        "",
        "`validation/validate_agreement.py`. ALine-S / ALine-D (Baek et al. 2022) predict each model's new-set "
        "accuracy from original accuracies and new-set agreements; the new labels only score the predictions. "
        "MAE = mean absolute error in percentage points; naive = |original - new| accuracy (predicting no drop). "
        "Check: agreement-line R^2 >= 0.95, accuracy-line R^2 >= 0.95, slopes within 0.1, lines within 0.05 probit "
        "at the models' mean original probit.",
        "",
        "| original -> new | models | left out | agr. line slope / int. / R^2 | acc. line slope / int. / R^2 "
        "| level diff | MAE ALine-S | MAE ALine-D | max ALine-D | naive MAE | check |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['original']} -> {r['new']} | {r['models']} | {', '.join(r['excluded']) or '-'} | "
            f"{r['agreement_slope']:.3f} / {r['agreement_intercept']:+.3f} / {r['agreement_r2']:.3f} | "
            f"{r['accuracy_slope']:.3f} / {r['accuracy_intercept']:+.3f} / {r['accuracy_r2']:.3f} | "
            f"{r['level_difference']:+.3f} | {100 * r['mae_s']:.2f} | {100 * r['mae_d']:.2f} | "
            f"{100 * r['max_abs_d']:.2f} | {100 * r['naive_mae']:.2f} | {'passed' if r['holds'] else 'FAILED'} |")
    lines += ["", "Failed checks:", ""]
    for r in res["rows"]:
        for w in r["warnings"]:
            lines.append(f"- {r['new']} ({r['models']} models): {w}")
    lines += ["", f"Ran in {res['seconds']} s."]
    return "\n".join(lines) + "\n"


def main() -> int:
    if not (SHARED / "README.md").is_file():
        print(f"skipped: real data not available at {SHARED} (set REPLICATE_SHARED)")
        return 0
    t0 = time.time()
    res = run()
    res["seconds"] = round(time.time() - t0, 1)
    res["versions"] = package_versions()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "agreement.json").write_text(json.dumps(res, indent=1))
    (RESULTS / "agreement.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
