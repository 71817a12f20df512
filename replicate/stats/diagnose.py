"""What the accuracies support about adaptive overfitting, in words."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as sps

from replicate._results import Result
from replicate._validation import check_int, fail
from replicate.stats._common import SCALES, Scale, _check_alpha, _names, choice, clip_accuracy
from replicate.stats.fit import _clip, _derivative, _ols, inverse_transform, linear_fit, transform
from replicate.stats.intervals import GapCI

if TYPE_CHECKING:  # pragma: no cover
    pass


# --------------------------------------------------------------------------- diagnosis


@dataclass(frozen=True, eq=False)
class Diagnosis(Result):
    """What the numbers support about adaptive overfitting vs distribution shift.

    Adaptive overfitting to the original test set predicts diminishing returns: the models
    that gained most on the original set should gain less on the new one (slope < 1 on the
    linear scale) and the top models should fall below the line fitted to the others.
    ``verdict`` is one of ``'no evidence of adaptive overfitting'``, ``'evidence consistent
    with adaptive overfitting'``, ``'inconclusive'``; ``text`` says it in sentences with the
    numbers. Fields: the linear-scale OLS slope with its ``1 - alpha`` interval; ``top_names``
    (the ``top_k`` models by original accuracy), ``top_excess`` (their mean distance above the
    line fitted to the remaining models on ``excess_scale``, in accuracy units) with its
    interval (``excess_includes_image_bootstrap``: whether test-set resampling entered it);
    the gaps (mean, min, max, number significant after ``adjust``).
    """

    verdict: str
    text: str
    n_models: int
    slope: float
    slope_ci: tuple[float, float]
    intercept: float
    top_k: int
    top_names: tuple[str, ...]
    top_excess: float
    top_excess_ci: tuple[float, float]
    mean_gap: float
    min_gap: float
    max_gap: float
    n_drop_significant: int
    n_gain_significant: int
    adjust: str
    alpha: float
    excess_scale: str = "probit"
    excess_includes_image_bootstrap: bool = False

    def summary(self) -> str:
        return f"Diagnosis: {self.verdict}.\n{self.text}"


def diagnose(
    orig_acc: Any,
    new_acc: Any,
    gap: GapCI,
    *,
    names: Sequence[str] | None = None,
    top_k: int | None = None,
    alpha: float | None = None,
    excess_scale: Scale = "probit",
    n_orig: Any = None,
    n_new: Any = None,
    boot_accuracies: tuple[np.ndarray, np.ndarray] | None = None,
) -> Diagnosis:
    """State in words what the accuracies support about adaptive overfitting.

    Evidence consistent with adaptive overfitting: the linear-scale slope's interval lies
    below 1, or the ``top_k`` models (default: the top fifth, at least 3) lie significantly
    below the line fitted to the other models. No evidence: neither, a slope of at least 1
    (gains on the original set carry over fully), and a top-model test precise enough to
    have seen a loss (its interval's half-width at most the mean gap) or, without that test,
    a slope interval at or above 1. Otherwise inconclusive (e.g. a handful of models with
    overlapping accuracies). The size and
    significance of the gaps are reported separately (a uniform drop signals distribution
    shift, which is not overfitting).

    The top models' excess is measured against a line fitted to the other models on
    ``excess_scale`` (probit by default, so that a ceiling near 100% does not pass for a
    loss) and mapped back to accuracy. Its interval adds the scatter of models about the line
    (``residual_sd^2 / top_k`` plus the line's variance) and, when ``boot_accuracies``
    (``(replicates, models)`` accuracies from resampling each test set's images, as
    :func:`compare` passes) are given, the variance of the excess over those replicates,
    which carries the correlation of the top models' errors on shared images.
    """
    alpha = gap.alpha if alpha is None else _check_alpha(alpha)
    excess_scale = choice("excess_scale", excess_scale, SCALES)
    x = np.asarray(orig_acc, dtype=float).ravel()
    y = np.asarray(new_acc, dtype=float).ravel()
    k = x.size
    if k < 3:
        raise fail("orig_acc", f"{k} models", "at least 3 models for a diagnosis")
    nm = _names(names, k)
    lin = linear_fit(x, y, scale="linear", alpha=alpha, names=nm)
    if top_k is None:
        top_k = max(1, min(max(3, int(round(k / 5))), k - 3))
    top_k = check_int("top_k", top_k, minimum=1, maximum=k - 1)
    order = np.argsort(-x, kind="stable")
    top, rest = order[:top_k], order[top_k:]
    excess, excess_ci = float("nan"), (float("nan"), float("nan"))
    if rest.size >= 3 and np.ptp(x[rest]) > 0:
        no = None if n_orig is None else np.broadcast_to(np.asarray(n_orig, dtype=float), x.shape)
        nn = None if n_new is None else np.broadcast_to(np.asarray(n_new, dtype=float), y.shape)
        rfit = linear_fit(x[rest], y[rest], scale=excess_scale, alpha=alpha,
                          n_orig=None if no is None else no[rest].astype(np.int64),
                          n_new=None if nn is None else nn[rest].astype(np.int64))
        xt = _clip(x[top], None if no is None else no[top], excess_scale, "orig_acc")[0]
        resid = y[top] - rfit.predict(xt)
        excess = float(resid.mean())
        # model scatter on the scale, mapped to accuracy units by the local slope of f^-1
        zt = rfit.intercept + rfit.slope * transform(xt, excess_scale)
        dacc = 1.0 / _derivative(inverse_transform(zt, excess_scale), excess_scale)
        var = float(np.mean(dacc) ** 2 * (np.mean(rfit.mean_var(xt)) + rfit.residual_std**2 / top_k))
        if boot_accuracies is not None:
            ao, an = (np.asarray(a, dtype=float) for a in boot_accuracies)
            if ao.ndim != 2 or ao.shape[1] != k or an.shape != ao.shape:
                raise fail("boot_accuracies", f"shapes {ao.shape}, {an.shape}", f"(replicates, {k}) each")
            ex = np.full(ao.shape[0], np.nan)
            for r in range(ao.shape[0]):
                xb, yb = ao[r], an[r]
                if excess_scale != "linear":
                    xb, yb = clip_accuracy(xb, no), clip_accuracy(yb, nn)
                with np.errstate(all="ignore"):
                    zb, wb = transform(xb, excess_scale), transform(yb, excess_scale)
                    a_, b_ = _ols(zb[rest], wb[rest])
                    ex[r] = np.mean(yb[top] - inverse_transform(a_ + b_ * zb[top], excess_scale))
            if np.isfinite(ex).sum() > 1:
                var += float(np.nanvar(ex, ddof=1))
        half = float(sps.t.ppf(1 - alpha / 2, rfit.df) * np.sqrt(var))
        excess_ci = (excess - half, excess + half)
    g = np.asarray(gap.gap, dtype=float).ravel()
    sig = np.asarray(gap.p_adjusted < gap.alpha).ravel()
    n_drop, n_gain = int(np.sum(sig & (g > 0))), int(np.sum(sig & (g < 0)))
    level = f"{100 * (1 - alpha):g}%"

    slope_below = lin.slope_ci[1] < 1
    top_below = np.isfinite(excess_ci[1]) and excess_ci[1] < 0
    # "no excess loss" only counts when the test could have seen one: its interval must be
    # narrower than the mean gap (otherwise it cannot tell no loss from losing the gap twice)
    half_width = (excess_ci[1] - excess_ci[0]) / 2 if np.isfinite(excess) else float("inf")
    precise = half_width <= max(abs(float(np.mean(gap.gap))), 0.01)
    if slope_below or top_below:
        verdict = "evidence consistent with adaptive overfitting"
    elif lin.slope >= 1 and (precise or lin.slope_ci[0] >= 1):
        verdict = "no evidence of adaptive overfitting"
    else:
        verdict = "inconclusive"
    s = []
    s.append(f"On the linear scale new accuracy rises with original accuracy at slope {lin.slope:.2f} "
             f"({level} CI {lin.slope_ci[0]:.2f} to {lin.slope_ci[1]:.2f}) over {k} models"
             + ("; the interval lies below 1: gains on the original set carry over only partly "
                "(diminishing returns, as adaptive overfitting predicts)." if slope_below else
                "; each point gained on the original set carries over at least fully (no diminishing returns)."
                if lin.slope_ci[0] >= 1 else
                "; the estimate is at least 1 but its interval reaches below 1, so diminishing returns are not ruled out."
                if lin.slope >= 1 else "; the interval includes 1, so diminishing returns are not established."))
    if np.isfinite(excess):
        top_str = ", ".join(nm[i] for i in top)
        s.append(f"The top {top_k} models ({top_str}) lie {abs(100 * excess):.2f} pp "
                 f"{'below' if excess < 0 else 'above'} the {excess_scale}-scale line fitted to the other {rest.size} "
                 f"({level} CI {100 * excess_ci[0]:.2f} to {100 * excess_ci[1]:.2f} pp)"
                 + (": the best models do worse on the new set than the trend of the others predicts." if top_below
                    else ": no excess loss among the top models." if precise
                    else ": the interval is wider than the mean gap, too wide to rule out an excess loss."))
    else:
        s.append(f"Too few models ({k}) to test the top {top_k} against the others.")
    s.append(f"Gaps (orig - new) range from {100 * g.min():.2f} to {100 * g.max():.2f} pp, mean "
             f"{100 * g.mean():.2f} pp; {n_drop} of {k} drops and {n_gain} gains are significant "
             f"({gap.adjust}-adjusted, alpha {gap.alpha:g}).")
    if n_drop > k / 2 and not (slope_below or top_below):
        s.append("A drop shared by most models while the ordering holds points to a distribution shift "
                 "between the test sets rather than to adaptive overfitting.")
    elif n_gain > k / 2:
        s.append("Most models gain accuracy: the new set is easier than the original.")
    return Diagnosis(verdict, " ".join(s), k, lin.slope, lin.slope_ci, lin.intercept, top_k,
                     tuple(nm[i] for i in top), excess, excess_ci, float(g.mean()), float(g.min()),
                     float(g.max()), n_drop, n_gain, gap.adjust, alpha, excess_scale,
                     boot_accuracies is not None)
