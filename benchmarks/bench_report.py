"""Benchmark: render time of the CIFAR-10.1 reanalysis report (target: under 5 s).

Builds the statistics once (``replicate.stats.compare``, 30 published models, CIFAR-10 test
vs CIFAR-10.1 v4 and v6, per-class drops), then times ``build_report`` (figures) plus
``render`` in every format. Baseline, measured in the same run: the least any report of
these results costs, a pandas ``to_html`` of each model table and one bare matplotlib
scatter per comparison saved as PNG. Without ``--quick`` the ImageNetV2 reanalysis (67
models, three new sets, top-1 and top-5) is timed as well.

    python benchmarks/bench_report.py [--quick] [--repeat N]

Writes benchmarks/results/report.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("REPLICATE_SHARED", ROOT.parent / "shared"))
TARGET_S = 5.0


def cifar10_1_comparisons() -> list:
    from replicate import stats
    from replicate.imageset import CIFAR10_CLASSES

    d = np.load(SHARED / "data/cifar10_1/labels_and_model_predictions.npz")
    y0 = np.load(SHARED / "data/cifar10/test.npz")["labels"]

    def records(pred: np.ndarray, y: np.ndarray) -> list[dict]:
        out = []
        for name, p in zip(d["model_names"], pred, strict=True):
            ok = p == y
            out.append({"model": str(name), "n": int(y.size), "n_correct": int(ok.sum()), "class_names": CIFAR10_CLASSES,
                        "class_n": tuple(np.bincount(y, minlength=10).tolist()),
                        "class_correct": tuple(np.bincount(y[ok], minlength=10).tolist())})
        return out

    orig = records(d["pred_original"], y0)
    return [
        stats.compare(orig, records(d[f"pred_{v}"], d[f"labels_{v}"]), original_name="cifar10-test",
                      new_name=f"cifar10.1-{v}", bootstrap="models", n_bootstrap=200)
        for v in ("v4", "v6")
    ]


def imagenetv2_comparisons() -> list:
    from replicate import stats

    d = np.load(SHARED / "data/imagenetv2/predictions.npz")

    def records(ds: str) -> list[dict]:
        y = d[f"labels__{ds}"]
        top1 = (d[f"top1__{ds}"] == y).sum(1)
        top5 = d[f"top5_correct__{ds}"].sum(1)
        return [{"model": str(m), "n": int(y.size), "n_correct": int(a), "n_top5_correct": int(b)}
                for m, a, b in zip(d[f"models__{ds}"], top1, top5, strict=True)]

    orig = records("imagenet-validation-original")
    names = {"imagenetv2-b-33": "MatchedFrequency", "imagenetv2-a-44": "Threshold0.7", "imagenetv2-c-12": "TopImages"}
    return [stats.compare(orig, records(ds), original_name="imagenet-val", new_name=name, bootstrap="models",
                          n_bootstrap=200) for ds, name in names.items()]


def render_all(comparisons: list, title: str) -> dict[str, int]:
    from replicate.report import FORMATS, build_report, render

    report = build_report(comparisons, title=title)
    return {fmt: len(render(report, fmt)) for fmt in FORMATS}


def baseline(comparisons: list) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = 0
    for c in comparisons:
        size += len(c.to_dataframe().to_html())
        fig, ax = plt.subplots()
        ax.scatter(c.original.accuracy, c.new.accuracy)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        size += buf.tell()
    return size


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CIFAR-10.1 only, 2 repeats")
    ap.add_argument("--repeat", type=int, default=None)
    args = ap.parse_args()
    if not (SHARED / "data/cifar10_1/labels_and_model_predictions.npz").is_file():
        print(f"skipped: real data not available under {SHARED} (set REPLICATE_SHARED)")
        return 0
    repeat = args.repeat or (2 if args.quick else 3)
    t = time.perf_counter()
    cifar = cifar10_1_comparisons()
    compare_s = time.perf_counter() - t
    render_all(cifar, "warm-up")  # imports, font cache
    report_t = timed(lambda: render_all(cifar, "CIFAR-10.1 reanalysis"), repeat)
    base_t = timed(lambda: baseline(cifar), repeat)
    med, base = statistics.median(report_t), statistics.median(base_t)
    result: dict = {
        "topic": "report",
        "what": "build_report + render(html, md, json, csv, tex) of the CIFAR-10.1 reanalysis "
                "(30 models, CIFAR-10 test vs v4 and v6, per-class drops for both)",
        "target": f"< {TARGET_S} s",
        "seconds": report_t,
        "median_s": med,
        "baseline": "pandas to_html of each model table + one bare matplotlib PNG scatter per comparison",
        "baseline_seconds": base_t,
        "baseline_median_s": base,
        "ratio_to_baseline": med / base,
        "met": med < TARGET_S,
        "compare_s_not_timed_in_target": compare_s,
        "output_chars": render_all(cifar, "sizes"),
        "quick": args.quick,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "processor": platform.processor(), "cpus": os.cpu_count()},
    }
    if not args.quick:
        inet = imagenetv2_comparisons()
        inet_t = timed(lambda: render_all(inet, "ImageNetV2 reanalysis"), repeat)
        result["imagenetv2"] = {
            "what": "67 models, validation vs MatchedFrequency / Threshold0.7 / TopImages, top-1 and top-5 (6 comparisons)",
            "seconds": inet_t,
            "median_s": statistics.median(inet_t),
            "baseline_median_s": statistics.median(timed(lambda: baseline(inet), repeat)),
        }
    out = ROOT / "benchmarks/results/report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"CIFAR-10.1 report: median {med:.2f} s (target < {TARGET_S} s: {'met' if result['met'] else 'NOT met'}); "
          f"baseline {base:.2f} s; ratio {med / base:.1f}x")
    if "imagenetv2" in result:
        print(f"ImageNetV2 report: median {result['imagenetv2']['median_s']:.2f} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
