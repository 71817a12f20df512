"""Exact coverage of replicate's accuracy intervals for test-set sizes and accuracies seen in practice.

For n in {100, 2,000, 10,000} and true accuracy p from 0.50 to 0.97 (step 0.01), the coverage
probability of each interval method is computed exactly: the sum of the binomial
probabilities of the outcomes k = 0..n whose interval contains p (no Monte Carlo error).
Clopper-Pearson must cover at least its nominal level everywhere.

    python validation/coverage_simulation.py [--alpha 0.05]

Writes validation/results/coverage.json and coverage.md. Needs no data.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from replicate.manifest import package_versions
from replicate.stats import INTERVAL_METHODS, interval_coverage

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (100, 2000, 10000)
P_GRID = np.round(np.arange(0.50, 0.9701, 0.01), 2)


def simulate(alpha: float = 0.05, sizes=SIZES, p_grid=P_GRID) -> dict:
    """Coverage per method, n and p, with per-(method, n) minimum, mean and the p of the minimum."""
    out: dict = {"alpha": alpha, "nominal": 1 - alpha, "sizes": list(sizes), "p": p_grid.tolist(), "methods": {}}
    for method in INTERVAL_METHODS:
        per_n = {}
        for n in sizes:
            cov = interval_coverage(n, p_grid, alpha=alpha, method=method)
            per_n[str(n)] = {
                "coverage": cov.tolist(),
                "min": float(cov.min()),
                "p_at_min": float(p_grid[int(cov.argmin())]),
                "mean": float(cov.mean()),
                "share_below_nominal": float(np.mean(cov < 1 - alpha - 1e-12)),
            }
        out["methods"][method] = per_n
    cp_ok = all(v["min"] >= 1 - alpha - 1e-12 for v in out["methods"]["clopper-pearson"].values())
    out["clopper_pearson_at_least_nominal"] = bool(cp_ok)
    return out


def markdown(res: dict) -> str:
    level = f"{100 * res['nominal']:g}%"
    lines = [
        f"Exact coverage of {level} intervals, true accuracy p = {res['p'][0]:.2f} ... {res['p'][-1]:.2f} "
        f"(step 0.01, {len(res['p'])} values)",
        "",
        "| method | n | min coverage | at p | mean coverage | share of p below nominal |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method, per_n in res["methods"].items():
        for n, v in per_n.items():
            lines.append(f"| {method} | {int(n):,} | {v['min']:.4f} | {v['p_at_min']:.2f} | {v['mean']:.4f} | "
                         f"{100 * v['share_below_nominal']:.0f}% |")
    lines.append("")
    lines.append(f"Clopper-Pearson covers at least {level} at every (n, p): "
                 f"{'yes' if res['clopper_pearson_at_least_nominal'] else 'NO'}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=0.05)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = simulate(args.alpha)
    res["seconds"] = round(time.perf_counter() - t0, 2)
    res["versions"] = package_versions()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "coverage.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (RESULTS / "coverage.md").write_text(md)
    print(md)
    return 0 if res["clopper_pearson_at_least_nominal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
