"""Reanalyse CIFAR-10.1 and ImageNetV2 from their published prediction files with replicate.stats.

CIFAR-10.1 (Recht et al. 2018): 30 models, CIFAR-10 test (10,000) vs CIFAR-10.1 v4 (2,021) and
v6 (2,000): accuracies with 95% Clopper-Pearson intervals, gaps with Newcombe intervals and
Holm-adjusted score tests, linear- and probit-scale fits with image-bootstrap intervals, rank
stability and the overfitting diagnosis.

ImageNetV2 (Recht et al. 2019): 67 models, ImageNet validation (50,000) vs MatchedFrequency
(imagenetv2-b-33), Threshold0.7 (imagenetv2-a-44) and TopImages (imagenetv2-c-12), 10,000 each,
top-1 and top-5, with probit fits. Models whose point lies far off the line (|externally
studentized residual| > 4, e.g. mismatched prediction files) are reported and the fit is
repeated without them.

Also runs the exact coverage computation (validation/coverage_simulation.py).

    python validation/validate_stats.py [--n-bootstrap 1000]

Writes validation/results/stats.json and stats.md (and coverage.json / coverage.md).
Skips with a message when ../shared (or $REPLICATE_SHARED) is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from replicate.manifest import package_versions, sha256_file
from replicate.stats import Comparison, compare

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHARED = Path(os.environ.get("REPLICATE_SHARED", HERE.parent.parent / "shared"))
IMAGENET_SETS = {
    "imagenetv2-b-33": "MatchedFrequency",
    "imagenetv2-a-44": "Threshold0.7",
    "imagenetv2-c-12": "TopImages",
}


def _results(names, correct, top5=None, dataset=""):
    return [
        SimpleNamespace(model=str(m), n=int(correct.shape[1]), n_correct=int(correct[i].sum()), correct=correct[i],
                        top5_correct=None if top5 is None else top5[i], dataset=dataset)
        for i, m in enumerate(names)
    ]


def _pct(x):
    return "" if x is None else f"{100 * x:.2f}"


def _ci(lo, hi):
    return f"[{_pct(lo)}, {_pct(hi)}]"


def _fit_brief(c: Comparison) -> dict:
    f = c.fit
    d = {
        "scale": f.scale, "method": f.method, "n_models": f.n_models, "slope": f.slope, "slope_ci": f.slope_ci,
        "intercept": f.intercept, "intercept_ci": f.intercept_ci, "r2": f.r2, "bootstrap": f.bootstrap,
        "n_bootstrap": f.n_bootstrap, "slope_boot_ci": f.slope_boot_ci, "intercept_boot_ci": f.intercept_boot_ci,
        "outliers": list(f.outliers), "excluded": list(c.fit_excluded),
    }
    if c.ranks is not None:
        d.update(kendall_tau=c.ranks.kendall_tau, kendall_ci=c.ranks.kendall_ci,
                 spearman_rho=c.ranks.spearman_rho, spearman_ci=c.ranks.spearman_ci)
    if c.diagnosis is not None:
        d.update(verdict=c.diagnosis.verdict, diagnosis=c.diagnosis.text)
    keep = np.array([m not in c.fit_excluded for m in c.names])
    gaps = c.gap.gap[keep]
    d.update(gap_mean=float(gaps.mean()), gap_min=float(gaps.min()), gap_max=float(gaps.max()),
             n_significant_drops=int(np.sum((c.gap.p_adjusted[keep] < c.alpha) & (gaps > 0))), n_models=len(c.names))
    return d


def cifar10_1(n_boot: int, checks: list) -> tuple[dict, list[str]]:
    d = np.load(SHARED / "data/cifar10_1/labels_and_model_predictions.npz")
    y = np.load(SHARED / "data/cifar10/test.npz")["labels"]
    names = [str(m) for m in d["model_names"]]
    co = d["pred_original"] == y[None, :]
    orig = _results(names, co, dataset="cifar10-test")
    out: dict = {"n_models": len(names), "versions": {}}
    comps = {}
    for v in ("v4", "v6"):
        cn = d[f"pred_{v}"] == d[f"labels_{v}"][None, :]
        new = _results(names, cn, dataset=f"cifar10.1-{v}")
        lin = compare(orig, new, scale="linear", n_bootstrap=n_boot, original_name="CIFAR-10 test",
                      new_name=f"CIFAR-10.1 {v}")
        prob = compare(orig, new, scale="probit", n_bootstrap=n_boot, original_name="CIFAR-10 test",
                       new_name=f"CIFAR-10.1 {v}")
        comps[v] = lin
        out["versions"][v] = {"rows": lin.rows(), "linear_fit": _fit_brief(lin), "probit_fit": _fit_brief(prob)}
    # published values (CIFAR-10.1 paper, Table 1, v4; README of ../shared): 97.1 -> 93.0 [91.8, 94.0]
    r4 = {r["model"]: r for r in out["versions"]["v4"]["rows"]}
    ss = r4["shake_shake_26_2x64d_SSI_cutout16"]
    checks.append(("CIFAR-10 accuracy of shake_shake_26_2x64d_SSI_cutout16 is 97.11%", round(100 * ss["acc_orig"], 2) == 97.11))
    checks.append(("its CIFAR-10.1 v4 accuracy is 93.0% [91.8, 94.0] (paper, 1 decimal)",
                   (round(100 * ss["acc_new"], 1), round(100 * ss["acc_new_lower"], 1), round(100 * ss["acc_new_upper"], 1))
                   == (93.0, 91.8, 94.0)))
    for v in ("v4", "v6"):
        f = out["versions"][v]["linear_fit"]
        checks.append((f"CIFAR-10.1 {v}: linear slope > 1 (95% CI lower bound {f['slope_ci'][0]:.3f})", f["slope_ci"][0] > 1))
        checks.append((f"CIFAR-10.1 {v}: all 30 drops significant after Holm", f["n_significant_drops"] == 30))

    md = ["## CIFAR-10.1: 30 published models", "",
          "Accuracy in percent with 95% Clopper-Pearson intervals; gap = CIFAR-10 - CIFAR-10.1 in percentage "
          "points with Newcombe 95% intervals; p: Holm-adjusted score test.", "",
          "| model | CIFAR-10 | 95% CI | v4 | 95% CI | gap v4 | 95% CI | v6 | 95% CI | gap v6 | 95% CI | p adj (v6) |",
          "|---|---:|---|---:|---|---:|---|---:|---|---:|---|---:|"]
    r6 = {r["model"]: r for r in out["versions"]["v6"]["rows"]}
    for m in sorted(names, key=lambda m: -r4[m]["acc_orig"]):
        a, b = r4[m], r6[m]
        md.append(f"| {m} | {_pct(a['acc_orig'])} | {_ci(a['acc_orig_lower'], a['acc_orig_upper'])} | "
                  f"{_pct(a['acc_new'])} | {_ci(a['acc_new_lower'], a['acc_new_upper'])} | {_pct(a['gap'])} | "
                  f"{_ci(a['gap_lower'], a['gap_upper'])} | {_pct(b['acc_new'])} | "
                  f"{_ci(b['acc_new_lower'], b['acc_new_upper'])} | {_pct(b['gap'])} | "
                  f"{_ci(b['gap_lower'], b['gap_upper'])} | {b['p_adjusted']:.1e} |")
    md += ["", "| set | scale | slope [95% CI] | bootstrap (images) | intercept [95% CI] | R^2 | Kendall tau [95% CI] | verdict |",
           "|---|---|---|---|---|---:|---|---|"]
    for v in ("v4", "v6"):
        for key in ("linear_fit", "probit_fit"):
            f = out["versions"][v][key]
            md.append(f"| {v} | {f['scale']} | {f['slope']:.3f} [{f['slope_ci'][0]:.3f}, {f['slope_ci'][1]:.3f}] | "
                      f"[{f['slope_boot_ci'][0]:.3f}, {f['slope_boot_ci'][1]:.3f}] | {f['intercept']:.3f} "
                      f"[{f['intercept_ci'][0]:.3f}, {f['intercept_ci'][1]:.3f}] | {f['r2']:.4f} | "
                      f"{f['kendall_tau']:.3f} [{f['kendall_ci'][0]:.3f}, {f['kendall_ci'][1]:.3f}] | {f.get('verdict', '')} |")
    md += ["", f"Diagnosis (v4, linear): {comps['v4'].diagnosis.text}", "",
           f"Diagnosis (v6, linear): {comps['v6'].diagnosis.text}", ""]
    return out, md


def imagenetv2(n_boot: int, checks: list) -> tuple[dict, list[str]]:
    z = np.load(SHARED / "data/imagenetv2/predictions.npz")
    val = "imagenet-validation-original"

    def load(ds):
        lab = z[f"labels__{ds}"]
        c = z[f"top1__{ds}"] == lab[None, :]
        return _results(z[f"models__{ds}"], c, z[f"top5_correct__{ds}"], dataset=ds)

    orig = load(val)
    out: dict = {"n_models_validation": len(orig), "sets": {}}
    md = ["## ImageNetV2: published models, ImageNet validation vs the three new test sets", ""]
    summary = ["| new set | metric | models | excluded from fit | probit slope [95% CI] | bootstrap | intercept | "
               "R^2 | mean gap pp [min, max] (models in the fit) | Kendall tau | verdict |",
               "|---|---|---:|---|---|---|---:|---:|---|---:|---|"]
    mf_rows = None
    for ds, label in IMAGENET_SETS.items():
        new = load(ds)
        first = compare(orig, new, n_bootstrap=10, bootstrap="none", original_name="ImageNet val", new_name=label)
        flagged = sorted(set(first.fit.outliers) | set(first.top5.fit.outliers if first.top5 else ()))
        c = compare(orig, new, n_bootstrap=n_boot, exclude_from_fit=flagged, original_name="ImageNet val",
                    new_name=label)
        entry = {"name": label, "unmatched_validation": list(c.unmatched_original), "unmatched_new": list(c.unmatched_new),
                 "flagged_off_line_with_all_models": flagged,
                 "top1": {"rows": c.rows(), "fit": _fit_brief(c), "fit_all_models": _fit_brief(first)},
                 "top5": {"rows": c.top5.rows(), "fit": _fit_brief(c.top5), "fit_all_models": _fit_brief(first.top5)}}
        out["sets"][ds] = entry
        for metric, cc in (("top-1", c), ("top-5", c.top5)):
            f = _fit_brief(cc)
            summary.append(
                f"| {label} | {metric} | {f['n_models']} | {', '.join(f['excluded']) or '-'} | {f['slope']:.3f} "
                f"[{f['slope_ci'][0]:.3f}, {f['slope_ci'][1]:.3f}] | [{f['slope_boot_ci'][0]:.3f}, "
                f"{f['slope_boot_ci'][1]:.3f}] | {f['intercept']:.3f} | {f['r2']:.4f} | {100 * f['gap_mean']:.2f} "
                f"[{100 * f['gap_min']:.2f}, {100 * f['gap_max']:.2f}] | {f['kendall_tau']:.3f} | {f.get('verdict', '')} |")
        if ds == "imagenetv2-b-33":
            mf_rows = (c.rows(), {r["model"]: r for r in c.top5.rows()})
            r50 = next(r for r in c.rows() if r["model"] == "resnet50")
            r50_5 = next(r for r in c.top5.rows() if r["model"] == "resnet50")
            checks.append(("resnet50: 76.13% -> 63.33% top-1 and 84.65% top-5 on MatchedFrequency",
                           (round(100 * r50["acc_orig"], 2), round(100 * r50["acc_new"], 2),
                            round(100 * r50_5["acc_new"], 2)) == (76.13, 63.33, 84.65)))
            checks.append(("fv_16k flagged as off the line (mismatched prediction file)", "fv_16k" in flagged))
        kept = [r for r in c.rows() if r["model"] not in flagged]
        n_drop = sum(r["gap"] > 0 and r["p_adjusted"] < 0.05 for r in kept)
        n_gain = sum(r["gap"] < 0 and r["p_adjusted"] < 0.05 for r in kept)
        entry["top1"]["significant_drops"], entry["top1"]["significant_gains"] = n_drop, n_gain
        if ds != "imagenetv2-c-12":
            checks.append((f"{label}: every model in the fit loses top-1 accuracy, significantly after Holm "
                           f"({n_drop} of {len(kept)})", n_drop == len(kept)))
        else:
            checks.append((f"{label}: most models gain top-1 accuracy ({n_gain} of {len(kept)} significant "
                           "gains; TopImages is easier than ImageNet validation)", n_gain > len(kept) / 2))
    md += summary
    md += ["", "Excluded from the fit: models whose externally studentized residual on the probit scale exceeded 4 "
           "in a first fit on all models (top-1 or top-5); they are still listed below with their effective robustness.",
           ""]
    for e in out["sets"].values():
        if e["unmatched_validation"] or e["unmatched_new"]:
            md.append(f"- {e['name']}: not in the new set: {', '.join(e['unmatched_validation']) or '-'}; "
                      f"only in the new set: {', '.join(e['unmatched_new']) or '-'}")
    md += ["", "### MatchedFrequency, per model (top-1 with 95% Clopper-Pearson intervals; gap with Newcombe 95% "
           "interval; effective robustness = distance above the probit line, pp)", "",
           "| model | val top-1 | MF top-1 | 95% CI | gap | 95% CI | ER | 95% CI | MF top-5 | in fit |",
           "|---|---:|---:|---|---:|---|---:|---|---:|---|"]
    rows, top5 = mf_rows  # type: ignore[misc]
    for r in sorted(rows, key=lambda r: -r["acc_orig"]):
        md.append(f"| {r['model']} | {_pct(r['acc_orig'])} | {_pct(r['acc_new'])} | "
                  f"{_ci(r['acc_new_lower'], r['acc_new_upper'])} | {_pct(r['gap'])} | {_ci(r['gap_lower'], r['gap_upper'])} | "
                  f"{_pct(r['effective_robustness'])} | {_ci(r['effective_robustness_lower'], r['effective_robustness_upper'])} | "
                  f"{_pct(top5[r['model']]['acc_new'])} | {'yes' if r['in_fit'] else 'no'} |")
    return out, md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    args = ap.parse_args(argv)
    if not (SHARED / "README.md").is_file():
        print(f"skipped: real data not available: {SHARED} does not exist (set REPLICATE_SHARED)")
        return 0
    t0 = time.perf_counter()
    checks: list = []
    c10, md1 = cifar10_1(args.n_bootstrap, checks)
    t1 = time.perf_counter()
    inet, md2 = imagenetv2(args.n_bootstrap, checks)
    t2 = time.perf_counter()
    sys.path.insert(0, str(HERE))
    import coverage_simulation

    cov = coverage_simulation.simulate()
    (RESULTS / "coverage.json").parent.mkdir(parents=True, exist_ok=True)
    (RESULTS / "coverage.json").write_text(json.dumps({**cov, "versions": package_versions()}, indent=1))
    (RESULTS / "coverage.md").write_text(coverage_simulation.markdown(cov))
    checks.append(("Clopper-Pearson covers >= 95% for n in {100, 2000, 10000}, p in [0.50, 0.97]",
                   cov["clopper_pearson_at_least_nominal"]))
    t3 = time.perf_counter()
    inputs = {p: sha256_file(SHARED / p) for p in ("data/cifar10_1/labels_and_model_predictions.npz",
                                                   "data/cifar10/test.npz", "data/imagenetv2/predictions.npz")}
    res = {
        "checks": [{"check": c, "passed": bool(ok)} for c, ok in checks],
        "all_passed": all(ok for _, ok in checks),
        "seconds": {"cifar10_1": round(t1 - t0, 1), "imagenetv2": round(t2 - t1, 1), "coverage": round(t3 - t2, 1)},
        "n_bootstrap": args.n_bootstrap,
        "inputs_sha256": inputs,
        "versions": package_versions(),
        "command": " ".join(sys.argv),
        "cifar10_1": c10,
        "imagenetv2": inet,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stats.json").write_text(json.dumps(res, indent=1, default=float))
    head = ["# Reanalysis of CIFAR-10.1 and ImageNetV2 with replicate.stats", "",
            f"Generated by `python validation/validate_stats.py` ({args.n_bootstrap} bootstrap replicates).", "",
            "| check | passed |", "|---|---|"] + [f"| {c} | {'yes' if ok else 'NO'} |" for c, ok in checks] + [""]
    (RESULTS / "stats.md").write_text("\n".join(head + md1 + [""] + md2 + [""]))
    for c, ok in checks:
        print(f"[{'ok' if ok else 'FAIL'}] {c}")
    print(f"wrote {RESULTS / 'stats.json'} and stats.md in {t3 - t0:.1f} s")
    return 0 if res["all_passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
