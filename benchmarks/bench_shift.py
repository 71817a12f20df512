"""Dataset-test speed: cached features, then 2 x 2,000 images, 5 folds, 200 permutations.

Targets: ResNet-20 penultimate features of the 10,000-image CIFAR-10 test set are
computed once and then read from the evaluation cache; ``dataset_test`` on 2,000
images per set (CIFAR-10 test vs the ImageNet-derived candidate pool) with 5-fold
cross-validation and 200 permutation refits runs in under 30 s on 2 cores once the
features exist (near-duplicate search is a separate stage and is timed separately).

Baseline, measured in the same run: the same permutation test refitting each
permutation on its own with scipy's L-BFGS (one logistic regression per label
vector, the usual loop; scikit-learn's default solver works the same way) instead of
replicate's batched bound-optimisation solver. The baseline is timed on
``--baseline-perms`` permutations and scaled linearly to 200 (stated in the output).
Both paths give the same observed scores.

Needs ../shared (CIFAR-10 test, the candidate pool and the ResNet-20 weights); skips
with a message without it. ``--quick`` uses 2,000 CIFAR-10 images for the cache
timing and 50 permutations.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, write  # noqa: E402

TARGET_S = 30.0


def _lbfgs_cv(x: np.ndarray, y: np.ndarray, folds: np.ndarray, k: int, c: float) -> np.ndarray:
    """Baseline: out-of-fold scores from scipy's L-BFGS, one label vector at a time.

    The same objective as replicate's solver (``sum logloss + ||w||^2 / (2C)``,
    unpenalised intercept; scikit-learn's ``lbfgs`` solver minimises it the same way).
    """
    from scipy.optimize import minimize
    from scipy.special import expit

    scores = np.empty(len(y))
    d = x.shape[1]
    for f in range(k):
        tr, te = folds != f, folds == f
        xt, yt = x[tr], y[tr]

        def fun(theta: np.ndarray, xt: np.ndarray = xt, yt: np.ndarray = yt) -> tuple[float, np.ndarray]:
            z = xt @ theta[:d] + theta[d]
            r = expit(z) - yt
            loss = np.logaddexp(0, z).sum() - yt @ z + theta[:d] @ theta[:d] / (2 * c)
            return loss, np.r_[xt.T @ r + theta[:d] / c, r.sum()]

        th = minimize(fun, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 1000}).x
        scores[te] = x[te] @ th[:d] + th[d]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000-image cache timing, 50 permutations")
    parser.add_argument("--baseline-perms", type=int, default=20, help="permutations timed for the baseline")
    args = parser.parse_args()
    needed = [SHARED / "data/cifar10/test.npz", SHARED / "data/candidates/tinyimagenet_cifar10_32x32.npz",
              SHARED / "weights"]
    if not all(p.exists() for p in needed):
        print(f"skipped: real data not available under {SHARED} (set REPLICATE_SHARED)")
        return
    import torch

    torch.set_num_threads(2)
    os.environ["REPLICATE_WEIGHTS"] = str(SHARED / "weights")
    os.environ["REPLICATE_OFFLINE"] = "1"
    os.environ["REPLICATE_HOME"] = tempfile.mkdtemp(prefix="replicate-bench-shift-")  # a cold cache

    from replicate.evaluation import extract_features
    from replicate.io import load_npz
    from replicate.shift import dataset_test
    from replicate.shift.classifier import _cross_val_scores, _single_thread_blas

    n_cache = 2000 if args.quick else 10000
    perms = 50 if args.quick else 200
    test = load_npz(SHARED / "data/cifar10/test.npz", name="cifar10-test").select(np.arange(n_cache))
    pool = load_npz(SHARED / "data/candidates/tinyimagenet_cifar10_32x32.npz", name="candidates")
    rng = np.random.default_rng(0)
    shared_classes = np.isin(pool.labels, [k for k, c in enumerate(pool.class_counts().values()) if c])
    pool = pool.select(np.sort(rng.permutation(np.flatnonzero(shared_classes))[:2500]))

    t = time.perf_counter()
    extract_features("resnet20", test)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    extract_features("resnet20", test)
    t_cached = time.perf_counter() - t
    extract_features("resnet20", pool)  # the other set's features, also cached once
    # the on-disk cache, from a fresh process (timed inside it; imports of torch and the zoo excluded)
    import subprocess

    code = (
        "import time, numpy as np, torch; import replicate.models; from replicate.io import load_npz; "
        "from replicate.evaluation import extract_features; "
        f"s = load_npz({str(SHARED / 'data/cifar10/test.npz')!r}, name='cifar10-test').select(np.arange({n_cache})); "
        "t = time.perf_counter(); extract_features('resnet20', s); print(time.perf_counter() - t)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                          check=True)
    t_disk = float(proc.stdout.strip().splitlines()[-1])

    kwargs = {"features": "resnet20", "folds": 5, "permutations": perms, "max_per_set": 2000,
              "near_duplicates": None, "seed": 0}
    t = time.perf_counter()
    r = dataset_test(test, pool, **kwargs)
    t_test = time.perf_counter() - t

    # baseline: the same folds and label vectors, one fit per permutation
    from replicate.shift import compute_features
    from replicate.shift.classifier import _assign_folds, _permuted_labels
    from replicate.shift.discriminate import _stratified_sample

    rng = np.random.default_rng(0)
    sample = _stratified_sample(test, pool, 2000, rng)
    xa = compute_features(test, "resnet20")[sample.pos_a]
    xb = compute_features(pool, "resnet20")[sample.pos_b]
    x = np.concatenate([xa, xb]).astype(np.float64)
    x = (x - x.mean(0)) / np.where(x.std(0) > 1e-12, x.std(0), 1.0)
    n = len(sample.pos_a)
    slot = _assign_folds(sample.strata, 5, rng)
    folds = np.concatenate([slot, slot])
    strata = np.concatenate([sample.strata, sample.strata])
    is_b = np.r_[np.zeros(n, bool), np.ones(n, bool)]
    y = _permuted_labels((strata - strata.min()) * 5 + folds, is_b, args.baseline_perms, rng)
    t = time.perf_counter()
    batched, _ = _cross_val_scores(x, y, folds, 5, 1.0, 3000, 1e-6)
    t_batched_small = time.perf_counter() - t
    t = time.perf_counter()
    with _single_thread_blas():
        single = np.column_stack([_lbfgs_cv(x, y[:, j], folds, 5, 1.0) for j in range(y.shape[1])])
    t_single = time.perf_counter() - t
    agree = float(np.mean(np.sign(single) == np.sign(batched)))
    scale = (perms + 1) / y.shape[1]
    baseline_est = t_single * scale
    fit_s = r.params["seconds"]["fit_and_permutations"]
    write(
        "shift" + ("_quick" if args.quick else ""),
        {
            "target": f"dataset_test on 2 x 2,000 images, 5 folds, {perms} permutations, after features: "
            f"< {TARGET_S} s on 2 cores; features for {n_cache} images computed once, then cached",
            "met": bool(t_test < TARGET_S and t_disk < t_first / 10),
            "features_first_s": round(t_first, 3),
            "features_cached_s": round(t_cached, 3),
            "features_cached_new_process_s": round(t_disk, 3),
            "features_images": n_cache,
            "features_speedup_cached": round(t_first / t_cached, 1),
            "dataset_test_s": round(t_test, 3),
            "dataset_test_breakdown_s": r.params["seconds"],
            "n_per_set": r.n_per_set,
            "permutations": perms,
            "folds": 5,
            "result": {"accuracy": r.accuracy, "accuracy_ci": r.accuracy_ci, "auc": r.auc, "p_value": r.p_value},
            "baseline": "scipy L-BFGS-B, one logistic regression per label vector, timed on "
            f"{y.shape[1]} label vectors and scaled x{scale:.2f} to {perms + 1}",
            "baseline_timed_label_vectors": int(y.shape[1]),
            "baseline_timed_s": round(t_single, 3),
            "baseline_estimated_s": round(baseline_est, 3),
            "batched_same_label_vectors_s": round(t_batched_small, 3),
            "speedup_fit_vs_baseline": round(baseline_est / fit_s, 2),
            "sign_agreement_batched_vs_single": agree,
        },
    )


if __name__ == "__main__":
    main()
