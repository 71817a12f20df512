"""Selection-frequency bias (Engstrom et al. 2020): simulation with known truth.

Simulates the ImageNetV2 MatchedFrequency process many times and checks that the naive gap
is biased and that :func:`replicate.selection_bias.selection_bias_correction` recovers the
true gap within its interval at the stated coverage.

One simulation, for ``n`` annotators per image:

1. true selection probabilities ``s`` of 10,000 original images from the beta mixture
   ``ORIGINAL`` and of 40,000 candidates from ``POOL`` (lower frequencies);
2. votes ``k ~ Binomial(n, s)``;
3. one model, correct with probability ``expit(ALPHA + BETA * s)`` on the original and
   ``expit(ALPHA - SHIFT + BETA * s)`` on candidates (a real shift on top of the bias);
4. 10,000 candidates drawn so that their histogram of ``k / n`` over the bins
   ``EDGES`` matches the original's (within each bin at random: what
   ``sample_matched_histogram`` does);
5. naive gap = original accuracy - new accuracy; corrected gaps by both estimators.

True gap: ``E_orig[A_orig(s)] - sum_b P_orig(s in b) E_pool[A_pool(s) | s in b]`` -- the
population gap had the true frequencies been matched in the same bins (numerical
integration of the known densities).

    nice -n 10 python validation/selection_bias_simulation.py [--sims 1000] [--annotators 5 10 20 40] [--jobs 2]

Writes validation/results/selection_bias.json and selection_bias.md. Seeded; needs no data.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread per process: the fits are many small problems

import numpy as np  # noqa: E402
from scipy import integrate, special, stats  # noqa: E402

from replicate.manifest import package_versions  # noqa: E402
from replicate.stats.selection_bias import selection_bias_correction  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
EDGES = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
ORIGINAL = {"weights": (0.65, 0.35), "a": (8.0, 3.0), "b": (1.5, 3.0)}
POOL = {"weights": (0.45, 0.55), "a": (6.0, 2.0), "b": (2.0, 3.0)}
ALPHA, BETA, SHIFT = -1.0, 4.0, 0.25
N_ORIGINAL, N_POOL, N_NEW = 10_000, 40_000, 10_000


def _draw_s(rng: np.random.Generator, mix: dict, size: int) -> np.ndarray:
    comp = rng.choice(len(mix["weights"]), size=size, p=mix["weights"])
    return rng.beta(np.asarray(mix["a"])[comp], np.asarray(mix["b"])[comp])


def _pdf(mix: dict, s: float) -> float:
    return float(sum(w * stats.beta.pdf(s, a, b) for w, a, b in zip(mix["weights"], mix["a"], mix["b"])))


def truth() -> dict:
    acc_o = integrate.quad(lambda s: _pdf(ORIGINAL, s) * special.expit(ALPHA + BETA * s), 0, 1)[0]
    target = 0.0
    for lo, hi in zip(EDGES[:-1], EDGES[1:]):
        q = integrate.quad(lambda s: _pdf(ORIGINAL, s), lo, hi)[0]
        num = integrate.quad(lambda s: _pdf(POOL, s) * special.expit(ALPHA - SHIFT + BETA * s), lo, hi)[0]
        den = integrate.quad(lambda s: _pdf(POOL, s), lo, hi)[0]
        target += q * num / den
    return {"accuracy_original": acc_o, "corrected_new": target, "gap": acc_o - target}


def _bins(k: np.ndarray, n: int) -> np.ndarray:
    b = np.searchsorted(EDGES, k / n, side="right") - 1
    return np.minimum(b, len(EDGES) - 2)


def one(rng: np.random.Generator, n: int, methods: tuple[str, ...], n_bootstrap: int) -> dict:
    s_o, s_p = _draw_s(rng, ORIGINAL, N_ORIGINAL), _draw_s(rng, POOL, N_POOL)
    k_o, k_p = rng.binomial(n, s_o), rng.binomial(n, s_p)
    c_o = rng.random(N_ORIGINAL) < special.expit(ALPHA + BETA * s_o)
    c_p = rng.random(N_POOL) < special.expit(ALPHA - SHIFT + BETA * s_p)
    # matched histogram: per-bin targets by largest remainder, random candidates within each bin
    nb = len(EDGES) - 1
    ref = np.bincount(_bins(k_o, n), minlength=nb) / N_ORIGINAL * N_NEW
    target = np.floor(ref).astype(int)
    target[np.argsort(-(ref - target))[: N_NEW - target.sum()]] += 1
    b_p = _bins(k_p, n)
    order = np.lexsort((rng.random(N_POOL), b_p))
    starts = np.searchsorted(b_p[order], np.arange(nb))
    avail = np.bincount(b_p, minlength=nb)
    if np.any(avail < target):
        raise RuntimeError(f"pool too small for the targets: {avail} < {target}")
    chosen = np.concatenate([order[starts[b] : starts[b] + target[b]] for b in range(nb)])
    r = selection_bias_correction(k_o, n, c_o[None], k_p, n, k_p[chosen], n, c_p[chosen][None], edges=EDGES,
                                  methods=methods, n_bootstrap=n_bootstrap, seed=int(rng.integers(2**31)))
    out = {"naive": float(r.naive_gap[0]), "acc_orig": float(r.accuracy_original[0])}
    for m in methods:
        out[m] = (float(r.corrected_gap[m][0]), float(r.lower[m][0]), float(r.upper[m][0]))
    return out


METHODS = ("mixture", "jackknife")


def _row(args: tuple[int, int, int, int, float]) -> dict:
    n, sims, n_bootstrap, seed, alpha = args
    tr = truth()
    rng = np.random.default_rng([seed, n])
    res = [one(rng, n, METHODS, n_bootstrap) for _ in range(sims)]
    naive = np.array([r["naive"] for r in res])
    row = {"annotators": n, "sims": sims, "true_gap": tr["gap"], "naive_mean": float(naive.mean()),
           "naive_bias": float(naive.mean() - tr["gap"]), "naive_sd": float(naive.std(ddof=1))}
    for m in METHODS:
        g = np.array([r[m][0] for r in res])
        lo = np.array([r[m][1] for r in res])
        hi = np.array([r[m][2] for r in res])
        cover = (lo <= tr["gap"]) & (tr["gap"] <= hi)
        row[m] = {"mean": float(g.mean()), "bias": float(g.mean() - tr["gap"]), "sd": float(g.std(ddof=1)),
                  "rmse": float(np.sqrt(np.mean((g - tr["gap"]) ** 2))),
                  "coverage": float(cover.mean()),
                  "coverage_mc_se": float(np.sqrt(cover.mean() * (1 - cover.mean()) / sims)),
                  "mean_width": float(np.mean(hi - lo))}
    print(json.dumps(row), flush=True)
    return row


def simulate(sims: int, annotators: tuple[int, ...], alpha: float = 0.05, n_bootstrap: int = 200,
             seed: int = 20200518, jobs: int = 2, progress: Any = None) -> dict:
    """Each annotator count in its own process (seeded by (seed, n): results do not depend on jobs)."""
    t0 = time.time()
    tr = truth()
    tasks = [(n, sims, n_bootstrap, seed, alpha) for n in annotators]
    rows = []
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            futures = [ex.submit(_row, t) for t in tasks]
            for f in as_completed(futures):
                rows.append(f.result())
                if progress is not None:
                    progress(sorted(rows, key=lambda r: r["annotators"]))
    else:
        for t in tasks:
            rows.append(_row(t))
            if progress is not None:
                progress(rows)
    rows.sort(key=lambda r: r["annotators"])
    return {"truth": tr, "alpha": alpha, "nominal": 1 - alpha, "rows": rows, "seed": seed,
            "n_bootstrap": n_bootstrap, "sizes": {"original": N_ORIGINAL, "pool": N_POOL, "new": N_NEW},
            "edges": EDGES.tolist(), "original_mixture": ORIGINAL, "pool_mixture": POOL,
            "accuracy_model": {"alpha": ALPHA, "beta": BETA, "shift": SHIFT, "link": "logit"},
            "seconds": round(time.time() - t0, 1), "jobs": jobs, "versions": package_versions()}


def markdown(res: dict) -> str:
    tr = res["truth"]
    lines = [
        "# Selection-frequency bias: simulation with known truth",
        "",
        f"`validation/selection_bias_simulation.py`, seed {res['seed']}, {res['rows'][0]['sims']} simulations per "
        f"row, {res['sizes']['original']:,} original / {res['sizes']['pool']:,} pool / {res['sizes']['new']:,} new "
        f"images, bins {res['edges']}; {100 * res['nominal']:g}% intervals (mixture: delta method; jackknife: "
        f"percentile bootstrap, {res['n_bootstrap']} replicates). True gap {100 * tr['gap']:.2f} pp "
        f"(original {100 * tr['accuracy_original']:.2f}%, corrected new {100 * tr['corrected_new']:.2f}%).",
        "",
        "| annotators | naive gap (bias) pp | mixture gap (bias) pp | mixture coverage | mixture width pp "
        "| jackknife gap (bias) pp | jackknife coverage | jackknife width pp |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        mx, jk = r["mixture"], r["jackknife"]
        lines.append(
            f"| {r['annotators']} | {100 * r['naive_mean']:.2f} ({100 * r['naive_bias']:+.2f}) | "
            f"{100 * mx['mean']:.2f} ({100 * mx['bias']:+.2f}) | {mx['coverage']:.3f} +- {mx['coverage_mc_se']:.3f} | "
            f"{100 * mx['mean_width']:.2f} | {100 * jk['mean']:.2f} ({100 * jk['bias']:+.2f}) | "
            f"{jk['coverage']:.3f} +- {jk['coverage_mc_se']:.3f} | {100 * jk['mean_width']:.2f} |")
    lines += ["", f"Ran in {res['seconds']} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=1000)
    ap.add_argument("--annotators", type=int, nargs="+", default=[5, 10, 20, 40])
    ap.add_argument("--n-bootstrap", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def partial(rows: list[dict]) -> None:  # rows so far, in case the run is stopped
        (out / "selection_bias.partial.json").write_text(json.dumps(rows, indent=1))

    res = simulate(args.sims, tuple(args.annotators), n_bootstrap=args.n_bootstrap, jobs=args.jobs,
                   progress=partial)
    (out / "selection_bias.partial.json").unlink(missing_ok=True)
    (out / "selection_bias.json").write_text(json.dumps(res, indent=1))
    (out / "selection_bias.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
