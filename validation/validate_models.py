"""Validate the model zoo on real data: every local network's CIFAR-10 test accuracy, and
the published prediction files (accuracies, model alignment, flagged files).

Checks:
* each zoo network with weights in ../shared/weights, evaluated by ``replicate.evaluate``
  on the full CIFAR-10 test set (fresh, no cache), gives exactly the count in ``EXPECTED``
  below, which is also its card's ``measured_accuracy``, and lies within 0.05 pt of the
  authors' reported accuracy where the card has one;
* the CIFAR-10.1 prediction file reproduces 97.11% for shake_shake_26_2x64d_SSI_cutout16
  and flags no model; the ImageNetV2 file reproduces resnet50 76.13 / 63.33 (top-5 84.65)
  and flags fv_16k on MatchedFrequency and Threshold0.7.

Writes ``validation/results/models.json`` and ``models.md``. Skips with a message when
../shared is absent. ``--quick`` evaluates ResNet-20, ResNet-8 and the Keras CNN only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

SHARED = Path(os.environ.get("REPLICATE_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
RESULTS = Path(__file__).resolve().parent / "results"

# Accuracy (correct out of 10,000) of these exact files, measured with replicate (and for
# the akamaster ResNets equal to the published numbers except ResNet-44: 93.10 published).
EXPECTED = {
    "resnet20": 9173,
    "resnet32": 9263,
    "resnet44": 9311,
    "resnet56": 9339,
    "mlperf_tiny_resnet8": 8721,
    "keras_cnn": 8017,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="three small networks only")
    args = parser.parse_args()
    if not (SHARED / "README.md").is_file():
        print(f"skipped: real data not available ({SHARED} does not exist; set REPLICATE_SHARED)")
        return 0
    os.environ["REPLICATE_WEIGHTS"] = str(SHARED / "weights")
    os.environ["REPLICATE_OFFLINE"] = "1"
    torch.set_num_threads(min(4, os.cpu_count() or 1))

    from replicate.evaluation import evaluate
    from replicate.io import load_npz
    from replicate.models import get_card, load_predictions

    test = load_npz(SHARED / "data/cifar10/test.npz", name="cifar10-test")
    names = ["resnet20", "mlperf_tiny_resnet8", "keras_cnn"]
    if not args.quick:
        names += ["resnet32", "resnet44", "resnet56"]
    rows = []
    with tempfile.TemporaryDirectory() as home:
        os.environ["REPLICATE_HOME"] = home
        for name in names:
            card = get_card(name)
            t = time.perf_counter()
            r = evaluate(name, test, cache=False)
            seconds = time.perf_counter() - t
            reported = card.reported_accuracy
            rows.append(
                {
                    "model": name,
                    "n": r.n,
                    "n_correct": r.n_correct,
                    "accuracy_pct": 100 * r.accuracy,
                    "expected_n_correct": EXPECTED[name],
                    "reported_pct": reported,
                    "weights_sha256": r.weights_sha256,
                    "seconds": seconds,
                    "card_measured_pct": card.measured_accuracy,
                    "within_0.05_of_reported": None if reported is None else abs(100 * r.accuracy - reported) <= 0.05,
                    "ok": r.n_correct == EXPECTED[name]
                    and card.measured_accuracy is not None
                    and round(100 * card.measured_accuracy) == EXPECTED[name]
                    and (reported is None or abs(100 * r.accuracy - reported) <= 0.05 + 1e-9),
                }
            )
            print(f"{name}: {r.n_correct}/{r.n} ({100 * r.accuracy:.2f}%), expected {EXPECTED[name]}, {seconds:.1f} s")

    cifar = load_predictions(SHARED / "data/cifar10_1/labels_and_model_predictions.npz")
    cifar_table = {
        m: {d: 100 * cifar.accuracies(d)[m] for d in cifar.datasets} for m in cifar.models
    }
    cifar_flags = {d: list(cifar.check_alignment(d).flagged) for d in cifar.datasets if d != cifar.reference}
    inet = load_predictions(SHARED / "data/imagenetv2/predictions.npz")
    inet_reports = {d: inet.check_alignment(d).to_dict() for d in inet.datasets if d != inet.reference}
    r50 = inet.result("resnet50", "imagenetv2-matched-frequency")
    checks = {
        "networks": all(r["ok"] for r in rows),
        "cifar10_1_shake_shake_cutout_97.11": round(cifar_table["shake_shake_26_2x64d_SSI_cutout16"]["cifar10-test"], 2)
        == 97.11,
        "cifar10_1_no_flags": not any(cifar_flags.values()),
        "imagenet_resnet50": (inet.result("resnet50", "imagenet-val").n_correct, r50.n_correct, r50.n_top5_correct)
        == (38065, 6333, 8465),
        "imagenet_fv_16k_flagged": inet_reports["imagenetv2-matched-frequency"]["flagged"] == ["fv_16k"]
        and inet_reports["imagenetv2-threshold0.7"]["flagged"] == ["fv_16k"],
    }
    out = {
        "networks": rows,
        "cifar10_1_accuracy_pct": cifar_table,
        "cifar10_1_flags": cifar_flags,
        "imagenetv2_alignment": inet_reports,
        "checks": checks,
        "ok": all(checks.values()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "models.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    md = ["| model | correct / 10,000 | accuracy (%) | reported (%) | expected |", "|---|---|---|---|---|"]
    for r in rows:
        rep = "-" if r["reported_pct"] is None else f"{r['reported_pct']:.2f}"
        md.append(f"| {r['model']} | {r['n_correct']} | {r['accuracy_pct']:.2f} | {rep} | {r['expected_n_correct']} |")
    md += ["", "| CIFAR-10.1 model | CIFAR-10 | v4 | v6 |", "|---|---|---|---|"]
    for m, accs in sorted(cifar_table.items(), key=lambda kv: -kv[1]["cifar10-test"]):
        md.append(f"| {m} | {accs['cifar10-test']:.2f} | {accs['cifar10.1-v4']:.2f} | {accs['cifar10.1-v6']:.2f} |")
    (RESULTS / "models.md").write_text("\n".join(md) + "\n")
    print(json.dumps(checks, indent=2))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
