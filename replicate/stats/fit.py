"""The line through (original, new) accuracies on a probit/logit/linear scale, and effective robustness."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as sps
from scipy.special import expit, logit

from replicate._results import Result
from replicate._validation import check_int, fail
from replicate.stats._common import (
    BOOTSTRAPS,
    BOUNDARY_RULE,
    FIT_METHODS,
    SCALES,
    Bootstrap,
    FitMethod,
    Scale,
    _accuracy_matrix,
    _as_counts,
    _boot_pairs,
    _check_alpha,
    _names,
    _pct,
    _percentile_ci,
    _readonly,
    choice,
    clip_accuracy,
)

_BANDS: tuple[Literal["confidence", "prediction"], ...] = ("confidence", "prediction")

def transform(p: Any, scale: Scale = "probit") -> np.ndarray:
    """Map accuracies to the fit scale (probit: ``norm.ppf``, logit, or identity)."""
    scale = choice("scale", scale, SCALES)
    p = np.asarray(p, dtype=float)
    if scale == "probit":
        return sps.norm.ppf(p)
    if scale == "logit":
        return logit(p)
    return p.copy()


def inverse_transform(z: Any, scale: Scale = "probit") -> np.ndarray:
    """Map values on the fit scale back to accuracies."""
    scale = choice("scale", scale, SCALES)
    z = np.asarray(z, dtype=float)
    if scale == "probit":
        return sps.norm.cdf(z)
    if scale == "logit":
        return expit(z)
    return z.copy()


def _derivative(p: np.ndarray, scale: str) -> np.ndarray:
    """d transform(p) / dp, for delta-method standard errors on the scale."""
    if scale == "probit":
        return 1.0 / sps.norm.pdf(sps.norm.ppf(p))
    if scale == "logit":
        return 1.0 / (p * (1.0 - p))
    return np.ones_like(p)


def _clip(p: np.ndarray, n: np.ndarray | None, scale: str, arg: str) -> tuple[np.ndarray, np.ndarray]:
    """Clip accuracies of 0 or 1 to [0.5/n, 1 - 0.5/n] on probit/logit; return (p, clipped mask)."""
    p = np.asarray(p, dtype=float)
    at_edge = (p <= 0.0) | (p >= 1.0)
    if scale == "linear" or not at_edge.any():
        return p, np.zeros(p.shape, dtype=bool)
    if n is None:
        raise fail(arg, float(p[at_edge][0]), f"strictly between 0 and 1 on the {scale} scale",
                   "Pass the test-set sizes (n_orig/n_new) so such points are clipped to "
                   "[0.5/n, 1 - 0.5/n], or use scale='linear'.")
    return clip_accuracy(p, np.broadcast_to(np.asarray(n, dtype=float), p.shape)), at_edge

# --------------------------------------------------------------------------- linear fit


@dataclass(frozen=True, eq=False)
class LinearFit(Result):
    """Line through (original, new) accuracies of many models on a transformed scale.

    On the ``scale`` (probit, logit or linear) the fit is ``f(new) = intercept + slope * f(orig)``
    by ``method`` (``'ols'`` or ``'odr'``: York's errors-in-variables regression with binomial
    variances). ``slope_ci`` / ``intercept_ci`` are ``1 - alpha`` t-intervals from the fit;
    ``slope_boot_ci`` / ``intercept_boot_ci`` percentile bootstrap intervals (``bootstrap`` says
    what was resampled: ``'images'`` within each test set, ``'models'``, or ``'none'``).
    ``grid`` is a grid of original accuracies and ``fitted``, ``conf_lower/upper`` (for the
    line) and ``pred_lower/upper`` (for a new model) the bands there, mapped back to accuracy.
    ``x``, ``y`` are the accuracies used (after the ``boundary_rule``; ``clipped`` marks
    clipped models); ``residuals`` are on the scale; ``outliers`` names models whose externally
    studentized residual exceeds 4 in absolute value (reported, never dropped).
    """

    scale: Scale
    method: FitMethod
    alpha: float
    n_models: int
    names: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray
    n_orig: np.ndarray | None
    n_new: np.ndarray | None
    slope: float
    intercept: float
    slope_se: float
    intercept_se: float
    cov: np.ndarray
    slope_ci: tuple[float, float]
    intercept_ci: tuple[float, float]
    r2: float
    residual_std: float
    residuals: np.ndarray
    df: int
    grid: np.ndarray
    fitted: np.ndarray
    conf_lower: np.ndarray
    conf_upper: np.ndarray
    pred_lower: np.ndarray
    pred_upper: np.ndarray
    bootstrap: str = "none"
    n_bootstrap: int = 0
    slope_boot_ci: tuple[float, float] | None = None
    intercept_boot_ci: tuple[float, float] | None = None
    boundary_rule: str = BOUNDARY_RULE
    clipped: tuple[str, ...] = ()
    outliers: tuple[str, ...] = ()
    seed: int | None = None

    def predict(self, orig_acc: Any) -> np.ndarray:
        """The line's new accuracy at the given original accuracies."""
        z = transform(np.asarray(orig_acc, dtype=float), self.scale)
        return inverse_transform(self.intercept + self.slope * z, self.scale)

    def mean_var(self, orig_acc: Any) -> np.ndarray:
        """Variance of the fitted line at ``orig_acc`` on the scale (from the parameter covariance)."""
        z = transform(np.asarray(orig_acc, dtype=float), self.scale)
        c = self.cov
        return c[0, 0] + 2 * z * c[0, 1] + z * z * c[1, 1]

    def band(self, orig_acc: Any, kind: Literal["confidence", "prediction"] = "confidence"
             ) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper ``1 - alpha`` band at ``orig_acc``, mapped back to accuracy."""
        kind = choice("kind", kind, _BANDS)
        z = transform(np.asarray(orig_acc, dtype=float), self.scale)
        var = self.mean_var(orig_acc) + (self.residual_std**2 if kind == "prediction" else 0.0)
        t = sps.t.ppf(1 - self.alpha / 2, max(self.df, 1))
        mid = self.intercept + self.slope * z
        half = t * np.sqrt(var)
        return (inverse_transform(mid - half, self.scale),
                inverse_transform(mid + half, self.scale))

    def summary(self) -> str:
        level = f"{100 * (1 - self.alpha):g}%"
        lines = [
            f"Linear fit on the {self.scale} scale ({self.method}, {self.n_models} models): "
            f"f(new) = {self.intercept:.4f} + {self.slope:.4f} * f(orig)",
            f"  slope {self.slope:.4f} (se {self.slope_se:.4f}, {level} CI [{self.slope_ci[0]:.4f}, "
            f"{self.slope_ci[1]:.4f}]); intercept {self.intercept:.4f} (se {self.intercept_se:.4f}, "
            f"{level} CI [{self.intercept_ci[0]:.4f}, {self.intercept_ci[1]:.4f}])",
            f"  R^2 {self.r2:.4f}, residual sd {self.residual_std:.4f} on the scale",
        ]
        if self.slope_boot_ci is not None and self.intercept_boot_ci is not None:
            lines.append(
                f"  bootstrap ({self.bootstrap}, {self.n_bootstrap} replicates): slope "
                f"[{self.slope_boot_ci[0]:.4f}, {self.slope_boot_ci[1]:.4f}], intercept "
                f"[{self.intercept_boot_ci[0]:.4f}, {self.intercept_boot_ci[1]:.4f}]")
        if self.clipped:
            lines.append(f"  clipped ({self.boundary_rule}): {', '.join(self.clipped)}")
        if self.outliers:
            lines.append(f"  outliers (|studentized residual| > 4; kept in the fit): {', '.join(self.outliers)}")
        return "\n".join(lines)


def _ols(z: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Closed-form OLS (intercept, slope); used in bootstrap replicates."""
    zm, wm = z.mean(), w.mean()
    sxx = np.sum((z - zm) ** 2)
    b = np.sum((z - zm) * (w - wm)) / sxx if sxx > 0 else np.nan
    return float(wm - b * zm), float(b)


def _york(X: np.ndarray, Y: np.ndarray, sx: np.ndarray, sy: np.ndarray, max_iter: int = 200
          ) -> tuple[float, float, np.ndarray, float]:
    """York (1966; York et al. 2004) straight-line fit with errors in both variables.

    Minimises ``sum((x - X)^2 / sx^2 + (y - Y)^2 / sy^2)`` over points (x, y) on the line,
    i.e. weighted Deming / orthogonal distance regression with known per-point standard
    deviations (uncorrelated errors). Returns ``(intercept, slope, cov, mswd)`` where ``cov`` is
    York et al.'s first-order covariance scaled by the MSWD (reduced chi-square), as
    ``scipy.odr`` scales ``sd_beta``. Written out because ``scipy.odr`` is deprecated (SciPy 1.17);
    the test suite checks it against ``scipy.odr`` while that is available.
    """
    wx, wy = 1.0 / sx**2, 1.0 / sy**2
    a0, b = _ols(X, Y)
    for _ in range(max_iter):
        W = wx * wy / (wx + b * b * wy)
        Xb, Yb = np.sum(W * X) / W.sum(), np.sum(W * Y) / W.sum()
        U, V = X - Xb, Y - Yb
        beta = W * (U / wy + b * V / wx)
        b_new = np.sum(W * beta * V) / np.sum(W * beta * U)
        if abs(b_new - b) <= 1e-12 * max(1.0, abs(b)):
            b = b_new
            break
        b = b_new
    W = wx * wy / (wx + b * b * wy)
    Xb, Yb = np.sum(W * X) / W.sum(), np.sum(W * Y) / W.sum()
    U, V = X - Xb, Y - Yb
    beta = W * (U / wy + b * V / wx)
    a = Yb - b * Xb
    xadj = Xb + beta
    xbar = np.sum(W * xadj) / W.sum()
    u = xadj - xbar
    var_b = 1.0 / np.sum(W * u * u)
    var_a = 1.0 / W.sum() + xbar**2 * var_b
    cov_ab = -xbar * var_b
    k = X.size
    mswd = float(np.sum(W * (Y - b * X - a) ** 2) / (k - 2)) if k > 2 else float("nan")
    cov = np.array([[var_a, cov_ab], [cov_ab, var_b]]) * (mswd if np.isfinite(mswd) else 1.0)
    return float(a), float(b), cov, mswd


def _binomial_se_on_scale(p: np.ndarray, n: np.ndarray, scale: str) -> np.ndarray:
    """Delta-method standard error of f(p_hat) for a binomial proportion of n trials."""
    return np.sqrt(p * (1 - p) / n) * _derivative(p, scale)



def _prepare_xy(orig_acc: Any, new_acc: Any, n_orig: Any, n_new: Any, scale: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    x = np.asarray(orig_acc, dtype=float).ravel()
    y = np.asarray(new_acc, dtype=float).ravel()
    if x.shape != y.shape:
        raise fail("new_acc", f"{y.size} values", f"one per model, as orig_acc ({x.size})")
    for nm, v in (("orig_acc", x), ("new_acc", y)):
        if not np.all(np.isfinite(v)) or np.any((v < 0) | (v > 1)):
            bad = v[~np.isfinite(v) | (v < 0) | (v > 1)][0]
            raise fail(nm, float(bad), "an accuracy in [0, 1]", "Pass fractions (0.93), not percentages (93).")
    no = None if n_orig is None else np.broadcast_to(_as_counts("n_orig", n_orig), x.shape).astype(float)
    nn = None if n_new is None else np.broadcast_to(_as_counts("n_new", n_new), y.shape).astype(float)
    for label, cnt in (("n_orig", no), ("n_new", nn)):
        if cnt is not None and np.any(cnt <= 0):
            raise fail(label, int(cnt[cnt <= 0][0]), "> 0 (a test set needs images)")
    x, cx = _clip(x, no, scale, "orig_acc")
    y, cy = _clip(y, nn, scale, "new_acc")
    return x, y, no, nn, cx | cy


@dataclass(frozen=True)
class _Point:
    """The point fit on the scale: parameters, their covariance, residuals, R^2, studentized residuals."""

    intercept: float
    slope: float
    cov: np.ndarray
    resid: np.ndarray
    r2: float
    stud: np.ndarray


def _fit_ols(z: np.ndarray, w: np.ndarray) -> _Point:
    import statsmodels.api as sm

    res = sm.OLS(w, sm.add_constant(z)).fit()
    intercept, slope = (float(v) for v in res.params)
    infl = res.get_influence()
    with np.errstate(all="ignore"):
        stud = np.asarray(infl.resid_studentized_external, dtype=float)
    return _Point(intercept, slope, np.asarray(res.cov_params(), dtype=float), np.asarray(res.resid, dtype=float),
                  float(res.rsquared), stud)


def _fit_odr(z: np.ndarray, w: np.ndarray, x: np.ndarray, y: np.ndarray, no: np.ndarray, nn: np.ndarray,
             scale: Scale) -> _Point:
    sx = _binomial_se_on_scale(x, no, scale)
    sy = _binomial_se_on_scale(y, nn, scale)
    intercept, slope, cov, _ = _york(z, w, sx, sy)
    resid = w - (intercept + slope * z)
    k = z.size
    r2 = float(1 - np.sum(resid**2) / np.sum((w - w.mean()) ** 2))
    s_all = np.sqrt(np.sum(resid**2) / (k - 2)) if k > 2 else np.nan
    stud = resid / s_all if s_all > 0 else np.zeros_like(resid)
    return _Point(intercept, slope, cov, resid, r2, stud)


def _bands(grid: Any, x: np.ndarray, scale: Scale, pt: _Point, resid_std: float, t: float
           ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The grid, the fitted line there and its confidence and prediction bands, in accuracy."""
    if grid is None:
        grid_arr = np.linspace(x.min(), x.max(), 101)
    else:
        grid_arr = np.asarray(grid, dtype=float).ravel()
        if np.any((grid_arr <= 0) | (grid_arr >= 1)) and scale != "linear":
            raise fail("grid", grid, "accuracies strictly between 0 and 1 on the probit/logit scale")
    gz = transform(grid_arr, scale)
    cov = pt.cov
    mid = pt.intercept + pt.slope * gz
    mvar = cov[0, 0] + 2 * gz * cov[0, 1] + gz * gz * cov[1, 1]
    conf = t * np.sqrt(mvar)
    pred = t * np.sqrt(mvar + resid_std**2)
    inv = inverse_transform
    bands = (inv(mid - conf, scale), inv(mid + conf, scale), inv(mid - pred, scale), inv(mid + pred, scale))
    return grid_arr, inv(mid, scale), bands


def _refit(xb: np.ndarray, yb: np.ndarray, nob: Any, nnb: Any, scale: Scale, method: FitMethod
           ) -> tuple[float, float]:
    """(intercept, slope) of one bootstrap replicate (NaN where the replicate has no line)."""
    if scale != "linear":
        xb, yb = clip_accuracy(xb, nob), clip_accuracy(yb, nnb)
    zb, wb = transform(xb, scale), transform(yb, scale)
    if not (np.all(np.isfinite(zb)) and np.all(np.isfinite(wb))) or np.ptp(zb) == 0:
        return (np.nan, np.nan)
    if method == "ols":
        return _ols(zb, wb)
    a_, b_, _, _ = _york(zb, wb, _binomial_se_on_scale(xb, nob, scale), _binomial_se_on_scale(yb, nnb, scale))
    return (a_, b_)


def _bootstrap_line(x: np.ndarray, y: np.ndarray, no: np.ndarray | None, nn: np.ndarray | None, *,
                    scale: Scale, method: FitMethod, bootstrap: Bootstrap, n_boot: int, seed: int | None,
                    correct_orig: Any, correct_new: Any,
                    boot_accuracies: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """(n_boot, 2) replicates of (intercept, slope), resampling models or images."""
    k = x.size
    params = np.full((n_boot, 2), np.nan)
    if bootstrap == "models":
        rng = np.random.default_rng(seed)
        for r in range(n_boot):
            i = rng.integers(0, k, size=k)
            params[r] = _refit(x[i], y[i], None if no is None else no[i], None if nn is None else nn[i], scale, method)
        return params
    if correct_orig is None or correct_new is None:
        raise fail("correct_orig" if correct_orig is None else "correct_new", None,
                   "per-image correctness (bool, models x images) for bootstrap='images'",
                   "Pass correct_orig and correct_new, or use bootstrap='models'.")
    co = _accuracy_matrix("correct_orig", correct_orig, k)
    cn = _accuracy_matrix("correct_new", correct_new, k)
    bo, bn = float(co.shape[1]), float(cn.shape[1])
    if boot_accuracies is None:
        boot_accuracies = _boot_pairs(co, cn, n_boot, seed)
    ao, an = boot_accuracies
    if ao.shape != (n_boot, k) or an.shape != (n_boot, k):
        raise fail("boot_accuracies", f"shapes {ao.shape}, {an.shape}", f"({n_boot}, {k}) each")
    for r in range(n_boot):
        params[r] = _refit(ao[r], an[r], bo, bn, scale, method)
    return params


def linear_fit(
    orig_acc: Any,
    new_acc: Any,
    *,
    n_orig: Any = None,
    n_new: Any = None,
    scale: Scale = "probit",
    method: FitMethod = "ols",
    alpha: float = 0.05,
    names: Sequence[str] | None = None,
    bootstrap: Bootstrap = "none",
    n_bootstrap: int = 1000,
    correct_orig: Any = None,
    correct_new: Any = None,
    seed: int | None = 0,
    grid: Any = None,
    boot_accuracies: tuple[np.ndarray, np.ndarray] | None = None,
) -> LinearFit:
    """Fit ``f(new) = intercept + slope * f(orig)`` over models, with bands and intervals.

    Parameters
    ----------
    orig_acc, new_acc
        accuracies in [0, 1], one per model (at least 3 models).
    n_orig, n_new
        test-set sizes (int or one per model); needed for ``method='odr'`` (binomial
        variances) and to clip accuracies of exactly 0 or 1 on the probit/logit scale.
    scale
        ``'probit'`` (default, as in ImageNetV2 and "Accuracy on the Line"), ``'logit'`` or
        ``'linear'`` (as CIFAR-10.1's main figure).
    method
        ``'ols'`` (statsmodels OLS; regresses new on original) or ``'odr'`` (York's
        errors-in-variables fit with the binomial variance of each accuracy on both axes,
        delta method on the scale; standard errors scaled by the reduced chi-square).
    alpha
        in (0, 1); intervals and bands are ``1 - alpha``.
    names
        one name per model (default ``model0``, ``model1``, ...).
    bootstrap
        ``'none'``, ``'models'`` (resample models with replacement) or ``'images'`` (resample
        the images of each test set, the same indices for all models; needs ``correct_orig``
        and ``correct_new``).
    n_bootstrap
        number of bootstrap replicates (at least 10); percentile intervals.
    correct_orig, correct_new
        per-image correctness, bool arrays of shape (models, images), for ``bootstrap='images'``.
    seed
        seed of the bootstrap's random generator.
    grid
        original accuracies at which to tabulate the bands (default: 101 points spanning the
        models' range).
    boot_accuracies
        precomputed ``(n_bootstrap, models)`` accuracies on each set from resampling images
        (as :func:`compare` shares them with :func:`rank_stability`); default: drawn here.
    """
    scale = choice("scale", scale, SCALES)
    method = choice("method", method, FIT_METHODS)
    bootstrap = choice("bootstrap", bootstrap, BOOTSTRAPS)
    alpha = _check_alpha(alpha)
    x, y, no, nn, clipped = _prepare_xy(orig_acc, new_acc, n_orig, n_new, scale)
    k = x.size
    if k < 3:
        raise fail("orig_acc", f"{k} models", "at least 3 models for a line with an error estimate",
                   "Evaluate more models before fitting.")
    nm = _names(names, k)
    if method == "odr" and (no is None or nn is None):
        raise fail("n_orig" if no is None else "n_new", None, "the test-set size(s) for method='odr'",
                   "ODR weights each accuracy by its binomial variance, which needs n.")
    z, w = transform(x, scale), transform(y, scale)
    if np.ptp(z) == 0:
        raise fail("orig_acc", "all equal", "at least two distinct original accuracies")
    # method == 'odr' has both sizes (checked above)
    pt = _fit_odr(z, w, x, y, no, nn, scale) if method == "odr" and no is not None and nn is not None \
        else _fit_ols(z, w)
    df = k - 2
    resid_std = float(np.sqrt(np.sum(pt.resid**2) / df))
    t = sps.t.ppf(1 - alpha / 2, df)
    se_a, se_b = float(np.sqrt(pt.cov[0, 0])), float(np.sqrt(pt.cov[1, 1]))
    grid_arr, fitted, bands = _bands(grid, x, scale, pt, resid_std, t)
    slope_boot = intercept_boot = None
    n_boot = 0
    if bootstrap != "none":
        n_boot = check_int("n_bootstrap", n_bootstrap, minimum=10)
        params = _bootstrap_line(x, y, no, nn, scale=scale, method=method, bootstrap=bootstrap, n_boot=n_boot,
                                 seed=seed, correct_orig=correct_orig, correct_new=correct_new,
                                 boot_accuracies=boot_accuracies)
        intercept_boot, slope_boot = _percentile_ci(params[:, 0], alpha), _percentile_ci(params[:, 1], alpha)
    x_r, y_r = x.copy(), y.copy()
    _readonly(x_r, y_r, pt.resid, grid_arr, fitted, *bands, pt.cov)
    return LinearFit(
        scale=scale, method=method, alpha=alpha, n_models=k, names=nm, x=x_r, y=y_r,
        n_orig=None if no is None else np.asarray(no, dtype=np.int64),
        n_new=None if nn is None else np.asarray(nn, dtype=np.int64),
        slope=pt.slope, intercept=pt.intercept, slope_se=se_b, intercept_se=se_a, cov=pt.cov,
        slope_ci=(float(pt.slope - t * se_b), float(pt.slope + t * se_b)),
        intercept_ci=(float(pt.intercept - t * se_a), float(pt.intercept + t * se_a)),
        r2=pt.r2, residual_std=resid_std, residuals=pt.resid, df=df, grid=grid_arr, fitted=fitted,
        conf_lower=bands[0], conf_upper=bands[1], pred_lower=bands[2], pred_upper=bands[3],
        bootstrap=bootstrap, n_bootstrap=n_boot, slope_boot_ci=slope_boot, intercept_boot_ci=intercept_boot,
        boundary_rule=BOUNDARY_RULE, clipped=tuple(nm[i] for i in np.flatnonzero(clipped)),
        outliers=tuple(nm[i] for i in np.flatnonzero(np.abs(np.nan_to_num(pt.stud)) > 4)),
        seed=seed if bootstrap != "none" else None,
    )


# --------------------------------------------------------------------------- effective robustness


@dataclass(frozen=True, eq=False)
class EffectiveRobustness(Result):
    """Distance of each model above the line fitted to (original, new) accuracies.

    ``effective_robustness = acc_new - predicted`` in accuracy units, where ``predicted`` is the
    line's new accuracy at the model's original accuracy (Taori et al. 2020; the
    imagenet-testbed definition). ``on_scale`` is the same distance on the fit scale. The
    ``1 - alpha`` interval ``[lower, upper]`` is formed on the scale from the binomial variance of
    the new accuracy, the slope times the binomial variance of the original accuracy, and the
    variance of the fitted line at that point (delta method, t quantile with the fit's degrees
    of freedom), then mapped back as ``f^-1(fit + d) - f^-1(fit)``.
    """

    names: tuple[str, ...]
    acc_orig: np.ndarray
    acc_new: np.ndarray
    predicted: np.ndarray
    effective_robustness: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    on_scale: np.ndarray
    scale: Scale
    alpha: float
    fit_models: tuple[str, ...]
    interval: str = "delta method on the fit scale: binomial variance of both accuracies + variance of the line"

    def summary(self) -> str:
        level = f"{100 * (1 - self.alpha):g}%"
        width = max([len("model")] + [len(x) for x in self.names])
        lines = [f"Effective robustness (new - line at orig, {self.scale} fit on {len(self.fit_models)} models), "
                 f"percentage points with {level} intervals",
                 f"{'model':<{width}}  {'orig %':>7}  {'new %':>7}  {'line %':>7}  {'ER pp':>7}  {level + ' CI':>17}"]
        for i, name in enumerate(self.names):
            lines.append(f"{name:<{width}}  {_pct(self.acc_orig[i]):>7}  {_pct(self.acc_new[i]):>7}  "
                         f"{_pct(self.predicted[i]):>7}  {_pct(self.effective_robustness[i]):>7}  "
                         f"[{_pct(self.lower[i]):>6}, {_pct(self.upper[i]):>6}]")
        return "\n".join(lines)


def effective_robustness(
    orig_acc: Any,
    new_acc: Any,
    fit: LinearFit | None = None,
    *,
    n_orig: Any = None,
    n_new: Any = None,
    names: Sequence[str] | None = None,
    scale: Scale = "probit",
    alpha: float | None = None,
) -> EffectiveRobustness:
    """Effective robustness of each model: its new accuracy minus the line's prediction.

    ``fit`` is a :class:`LinearFit` (e.g. fitted on a reference set of standard models); by
    default an OLS line is fitted on the given models themselves on ``scale``. ``n_orig`` /
    ``n_new`` (test-set sizes) add the binomial uncertainty of each model's accuracies to the
    interval, and allow accuracies of 0 or 1 (clipped as in :func:`linear_fit`).
    """
    if fit is None:
        fit = linear_fit(orig_acc, new_acc, n_orig=n_orig, n_new=n_new, scale=scale, names=names,
                         alpha=0.05 if alpha is None else alpha)
    alpha = fit.alpha if alpha is None else _check_alpha(alpha)
    sc = fit.scale
    x, y, no, nn, _ = _prepare_xy(orig_acc, new_acc, n_orig, n_new, sc)
    nm = _names(names, x.size)
    z, w = transform(x, sc), transform(y, sc)
    line = fit.intercept + fit.slope * z
    var = fit.mean_var(x)
    if nn is not None:
        var = var + _binomial_se_on_scale(y, nn, sc) ** 2
    if no is not None:
        var = var + (fit.slope * _binomial_se_on_scale(x, no, sc)) ** 2
    half = sps.t.ppf(1 - alpha / 2, max(fit.df, 1)) * np.sqrt(var)
    d = w - line
    base = inverse_transform(line, sc)
    acc_o = np.asarray(orig_acc, dtype=float).ravel()
    acc_n = np.asarray(new_acc, dtype=float).ravel()
    er = acc_n - base
    lo = inverse_transform(line + d - half, sc) - base
    hi = inverse_transform(line + d + half, sc) - base
    _readonly(acc_o, acc_n, base, er, lo, hi, d)
    return EffectiveRobustness(nm, acc_o, acc_n, base, er, lo, hi, d, sc, alpha, fit.names)
