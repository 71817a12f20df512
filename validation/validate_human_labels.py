"""Accuracy against human labels: CIFAR-10H votes and the 30 CIFAR-10.1 models' CIFAR-10 test predictions.

Per model: accuracy against the CIFAR-10 labels, against the CIFAR-10H majority and under the
CIFAR-10H soft labels (95% intervals), and the share of its errors on contested images (human
majority != label) and split images (top class < 80% of the votes). Then the probit fit of
CIFAR-10.1 (v4, v6) against CIFAR-10 accuracy with all 10,000 test images and with label-error
images removed from CIFAR-10: (a) cleanlab's 275 MTurk-checked candidate label errors,
(b) the CIFAR-10H contested images; and the label-noise-adjusted gaps (an upper bound: the
CIFAR-10.1 images carry no human votes here).

    python validation/validate_human_labels.py

Writes validation/results/human_labels.json and human_labels.md; skips when ../shared is absent.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from replicate.manifest import package_versions
from replicate.stats import human_label_accuracy, human_majority, label_noise_adjusted_gap, linear_fit

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHARED = Path(os.environ.get("REPLICATE_SHARED", HERE.parent.parent / "shared"))


def run() -> dict:
    z = np.load(SHARED / "data/cifar10/test_extra_labels.npz")
    d = np.load(SHARED / "data/cifar10_1/labels_and_model_predictions.npz")
    names = [str(x) for x in d["model_names"]]
    labels = z["labels"]
    votes = z["cifar10h_counts"]
    pred_o = d["pred_original"].astype(np.int64)
    table = human_label_accuracy(pred_o, votes, labels, names=names)
    maj, _ = human_majority(votes, labels)
    removals = {
        "none": np.zeros(len(labels), bool),
        "cleanlab 275 candidates": np.isin(np.arange(len(labels)), z["cleanlab_mturk_ids"]),
        "CIFAR-10H contested": maj != labels,
    }
    fits = []
    for version in ("v4", "v6"):
        pred_n = d[f"pred_{version}"].astype(np.int64)
        lab_n = d[f"labels_{version}"]
        acc_n = (pred_n == lab_n).mean(axis=1)
        for what, drop in removals.items():
            keep = ~drop
            acc_o = (pred_o[:, keep] == labels[keep]).mean(axis=1)
            f = linear_fit(acc_o, acc_n, n_orig=int(keep.sum()), n_new=len(lab_n), scale="probit", names=names)
            fits.append({"new": f"cifar10.1-{version}", "removed": what, "n_removed": int(drop.sum()),
                         "slope": f.slope, "slope_ci": list(f.slope_ci), "intercept": f.intercept,
                         "intercept_ci": list(f.intercept_ci), "r2": f.r2,
                         "mean_acc_orig": float(acc_o.mean()), "mean_gap": float((acc_o - acc_n).mean())})
        gap = label_noise_adjusted_gap(pred_o, votes, labels, pred_n, lab_n, names=names)
        fits[-1]["label_noise_gap"] = gap.to_dict()
    return {"table": table.to_dict(), "rows": table.rows(), "summary": table.summary(), "fits": fits,
            "n_contested": table.n_contested, "n_split": table.n_split, "n_ties": table.n_ties}


def markdown(res: dict) -> str:
    lines = ["# Accuracy against human labels (CIFAR-10H)", "",
             "`validation/validate_human_labels.py`: the 30 CIFAR-10.1 models' CIFAR-10 test predictions against "
             f"CIFAR-10H ({res['n_contested']} contested images, {res['n_split']} split, {res['n_ties']} ties). "
             "95% intervals: Clopper-Pearson (labels, majority, error shares), t (soft).", "",
             "| model | labels % | majority % [95%] | soft % [95%] | errors | on contested % [95%] | on split % [95%] |",
             "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(
            f"| {r['model']} | {100 * r['acc_labels']:.2f} | {100 * r['acc_majority']:.2f} "
            f"[{100 * r['acc_majority_lower']:.2f}, {100 * r['acc_majority_upper']:.2f}] | {100 * r['acc_soft']:.2f} "
            f"[{100 * r['acc_soft_lower']:.2f}, {100 * r['acc_soft_upper']:.2f}] | {r['errors']} | "
            f"{100 * r['error_share_contested']:.1f} [{100 * r['error_share_contested_lower']:.1f}, "
            f"{100 * r['error_share_contested_upper']:.1f}] | {100 * r['error_share_split']:.1f} "
            f"[{100 * r['error_share_split_lower']:.1f}, {100 * r['error_share_split_upper']:.1f}] |")
    lines += ["", "## Probit fit of CIFAR-10.1 vs CIFAR-10 with label-error images removed from CIFAR-10", "",
              "| new set | removed | images removed | slope [95%] | intercept [95%] | R^2 | mean gap pp |",
              "|---|---|---|---|---|---|---|"]
    for f in res["fits"]:
        lines.append(f"| {f['new']} | {f['removed']} | {f['n_removed']} | {f['slope']:.3f} [{f['slope_ci'][0]:.3f}, "
                     f"{f['slope_ci'][1]:.3f}] | {f['intercept']:+.3f} [{f['intercept_ci'][0]:+.3f}, "
                     f"{f['intercept_ci'][1]:+.3f}] | {f['r2']:.4f} | {100 * f['mean_gap']:.2f} |")
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
    (RESULTS / "human_labels.json").write_text(json.dumps(res, indent=1))
    (RESULTS / "human_labels.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
