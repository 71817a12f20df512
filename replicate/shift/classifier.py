"""The dataset classifier: batched L2 logistic regression, cross-validation, DeLong AUC, permuted labels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from replicate._validation import fail

if TYPE_CHECKING:  # pragma: no cover
    pass


def delong_auc(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """AUC and its DeLong variance (DeLong, DeLong & Clarke-Pearson 1988).

    Uses the midrank formulation of Sun & Xu (2014): ties count one half. ``y`` is
    1 for positives, 0 for negatives. Returns ``(auc, variance)``.
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    pos, neg = scores[y], scores[~y]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        raise fail("y", f"{m} positives and {n} negatives", "at least 2 of each for an AUC variance")
    tx = rankdata(pos)
    ty = rankdata(neg)
    tz = rankdata(np.concatenate([pos, neg]))
    auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:m] - tx) / n  # per positive: fraction of negatives below it
    v01 = 1.0 - (tz[m:] - ty) / m  # per negative: fraction of positives above it
    var = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    return float(auc), float(var)


def _auc_columns(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of each column of ``scores`` (n, P) against labels ``y`` (n, P)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=0)
    m = y.sum(axis=0)
    n = len(y) - m
    return ((ranks * y).sum(axis=0) - m * (m + 1) / 2) / (m * n)


def _fit_logistic(
    x: np.ndarray, y: np.ndarray, c: float, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Fit P independent L2 logistic regressions that share one design matrix.

    ``x`` (n, D), ``y`` (n, P) in {0, 1}: column ``p`` minimises
    ``sum_i logloss_i + ||w_p||^2 / (2 C)`` (scikit-learn's parametrisation; the
    intercept is not penalised).

    Solver: the quadratic bound of Boehning & Lindsay (1988). The logistic loss has
    curvature at most 1/4, so ``H0 = X'X / 4 + I / C`` (centred ``X``) bounds every
    column's Hessian everywhere. After reparametrising ``w = H0^(-1/2) v`` that bound
    is the identity, so a unit gradient step is a guaranteed descent step for every
    column at once; Nesterov acceleration (FISTA) makes it converge in tens of steps.
    Each step is two (n, D) x (D, P) products and no line search, so all columns run
    as one batched problem with no coupling: each column reaches its own optimum.
    Stops when every column's gradient (of the mean loss) is below ``tol`` in every
    coordinate. Returns weights (D, P), intercepts (P,) and the iterations used.
    """
    from scipy.special import expit

    n, d = x.shape
    xm = x.mean(axis=0)
    xc = x - xm
    evals, evecs = np.linalg.eigh(xc.T @ xc / 4.0 + np.eye(d) / c)
    r = (evecs * (1.0 / np.sqrt(np.maximum(evals, 1e-12)))) @ evecs.T  # H0^(-1/2), symmetric
    xr = xc @ r  # centred, so the intercept decouples in the bound: its curvature is <= n / 4
    pen = (r @ r) / c
    prior = np.clip(y.mean(axis=0), 1e-6, 1 - 1e-6)
    v = np.zeros((d, y.shape[1]))
    b = np.log(prior / (1 - prior))
    v_prev, b_prev, t = v, b, 1.0
    it = 0
    for it in range(1, max_iter + 1):
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        mom = (t - 1.0) / t_next
        t = t_next
        zv = v + mom * (v - v_prev)
        zb = b + mom * (b - b_prev)
        resid = expit(xr @ zv + zb) - y
        v_prev, b_prev = v, b
        v = zv - (xr.T @ resid + pen @ zv)
        b = zb - resid.sum(axis=0) / (n / 4.0)
        if it % 10 == 0 or it == max_iter:
            resid = expit(xr @ v + b) - y
            grad = max(np.abs(xr.T @ resid + pen @ v).max(), np.abs(resid.sum(axis=0)).max()) / n
            if grad < tol:
                break
    w = r @ v
    return w, b - xm @ w, it


def _single_thread_blas() -> Any:
    """Limit BLAS to one thread: the products here are small (D <= a few hundred), and
    a multithreaded BLAS spends more time waking threads than computing (100x slower
    on a loaded 2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional speed-up
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _cross_val_scores(
    x: np.ndarray, y: np.ndarray, folds: np.ndarray, k: int, c: float, max_iter: int, tol: float
) -> tuple[np.ndarray, list[int]]:
    """Out-of-fold decision scores (n, P) for label columns ``y`` (n, P)."""
    scores = np.empty(y.shape, dtype=np.float64)
    iters = []
    with _single_thread_blas():
        for f in range(k):
            test = folds == f
            w, b, it = _fit_logistic(x[~test], y[~test], c, max_iter, tol)
            scores[test] = x[test] @ w + b
            iters.append(it)
    return scores, iters


# =========================================================================== sampling

def _assign_folds(strata: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold per pair slot: within each stratum a random order dealt round-robin.

    Slot ``j`` holds one image of a and one of b, so every (class, fold) cell holds
    equally many images of each set.
    """
    folds = np.empty(len(strata), dtype=np.int64)
    offset = 0
    for s in np.unique(strata):
        where = np.flatnonzero(strata == s)
        folds[rng.permutation(where)] = (np.arange(len(where)) + offset) % k
        offset += len(where)
    return folds


def _permuted_labels(cells: np.ndarray, is_b: np.ndarray, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """Label matrix (n, 1 + permutations): the observed labels, then shuffles within cells."""
    y = np.empty((len(is_b), 1 + permutations), dtype=np.float64)
    y[:, 0] = is_b
    order = np.argsort(cells, kind="stable")
    bounds = np.flatnonzero(np.diff(cells[order])) + 1
    groups = np.split(order, bounds)
    for p in range(1, permutations + 1):
        col = np.empty(len(is_b), dtype=np.float64)
        for g in groups:
            col[g] = is_b[rng.permutation(g)]
        y[:, p] = col
    return y
