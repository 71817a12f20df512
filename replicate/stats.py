"""Statistics of the accuracy drop between an original test set and a new one.

Everything here works from counts (``correct`` out of ``n``) and, where available,
per-image correctness, and wraps statsmodels and scipy:

- :func:`accuracy_ci` — binomial intervals (Clopper-Pearson, Wilson, Jeffreys) via
  ``statsmodels.stats.proportion.proportion_confint``.
- :func:`gap_ci` — the drop ``acc_orig - acc_new`` of two independent test sets with an
  interval (Newcombe's hybrid score method or Agresti-Caffo, via
  ``confint_proportions_2indep``), a score test (``test_proportions_2indep``) and a
  multiple-comparison adjustment over models (``multipletests``; Holm by default).
- :func:`mcnemar_test` — two models on the same images (exact McNemar test).
- :func:`group_drops` — per-class or per-keyword drops, as a :class:`GapCI` over groups.
- :func:`linear_fit` — new vs original accuracy on a probit (default), logit or linear
  scale; OLS (statsmodels) or errors-in-variables (York's weighted Deming regression with
  binomial variances on both axes), confidence and prediction bands mapped back to
  accuracy, bootstrap intervals for slope and intercept.
- :func:`effective_robustness` — distance of each model above the fitted line.
- :func:`rank_stability` — Kendall's tau and Spearman's rho with bootstrap intervals.
- :func:`diagnose` — what the numbers say about adaptive overfitting, in words.
- :func:`compare` — all of the above for many models at once, as one :class:`Comparison`.

Conventions: the *gap* is ``acc_orig - acc_new`` (positive = the model lost accuracy
on the new set); accuracies are fractions in [0, 1]; ``alpha = 0.05`` means 95%
intervals. On the probit and logit scales an accuracy of exactly 0 or 1 has no finite
value: such points are clipped to ``[0.5/n, 1 - 0.5/n]`` (``n`` = that set's size) and
the rule is stored in the result (``LinearFit.boundary_rule``, ``LinearFit.clipped``);
without ``n`` the fit refuses them with an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import stats as sps
from scipy.special import expit, logit

from replicate._json import json_safe as _json
from replicate._validation import check_choice, check_fraction, check_int, fail

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "AccuracyCI",
    "GapCI",
    "McNemarResult",
    "LinearFit",
    "EffectiveRobustness",
    "RankStability",
    "Diagnosis",
    "Comparison",
    "accuracy_ci",
    "gap_ci",
    "mcnemar_test",
    "group_drops",
    "adjust_pvalues",
    "interval_coverage",
    "linear_fit",
    "effective_robustness",
    "rank_stability",
    "diagnose",
    "compare",
    "transform",
    "inverse_transform",
    "INTERVAL_METHODS",
    "GAP_METHODS",
    "ADJUST_METHODS",
    "SCALES",
    "FIT_METHODS",
]

IntervalMethod = Literal["clopper-pearson", "wilson", "jeffreys"]
GapMethod = Literal["newcombe", "agresti-caffo"]
AdjustMethod = Literal["holm", "bh", "bonferroni", "none"]
Scale = Literal["probit", "logit", "linear"]
FitMethod = Literal["ols", "odr"]
Bootstrap = Literal["none", "models", "images"]

INTERVAL_METHODS: tuple[str, ...] = ("clopper-pearson", "wilson", "jeffreys")
GAP_METHODS: tuple[str, ...] = ("newcombe", "agresti-caffo")
ADJUST_METHODS: tuple[str, ...] = ("holm", "bh", "bonferroni", "none")
SCALES: tuple[str, ...] = ("probit", "logit", "linear")
FIT_METHODS: tuple[str, ...] = ("ols", "odr")
BOOTSTRAPS: tuple[str, ...] = ("none", "models", "images")

_STATSMODELS_INTERVAL = {"clopper-pearson": "beta", "wilson": "wilson", "jeffreys": "jeffreys"}
_STATSMODELS_GAP = {"newcombe": "newcomb", "agresti-caffo": "agresti-caffo"}
_STATSMODELS_ADJUST = {"holm": "holm", "bh": "fdr_bh", "bonferroni": "bonferroni"}

BOUNDARY_RULE = "accuracies of exactly 0 or 1 clipped to [0.5/n, 1 - 0.5/n] before the scale transform"


# --------------------------------------------------------------------------- helpers


def _pct(x: float, digits: int = 2) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}"


def _names(names: Sequence[str] | None, size: int, arg: str = "names") -> tuple[str, ...]:
    if names is None:
        return tuple(f"model{i}" for i in range(size))
    out = tuple(str(n) for n in names)
    if len(out) != size:
        raise fail(arg, f"{len(out)} names", f"one name per entry ({size})", "Pass as many names as counts.")
    return out


def _check_alpha(alpha: Any) -> float:
    return check_fraction("alpha", alpha)


def _as_counts(name: str, value: Any) -> np.ndarray:
    """Integer counts as an int64 array (integral floats are accepted)."""
    arr = np.asarray(value)
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise fail(name, value, "integer counts", "Pass numbers of images (ints), not accuracies or labels.",
                   error=TypeError)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise fail(name, value, "integer counts", "Pass numbers of images, not accuracies (fractions).")
    return arr.astype(np.int64)


def _check_counts(correct: Any, n: Any, correct_name: str = "correct", n_name: str = "n"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``correct`` out of ``n`` (broadcast together); return int64 arrays."""
    c = _as_counts(correct_name, correct)
    m = _as_counts(n_name, n)
    try:
        c, m = np.broadcast_arrays(c, m)
    except ValueError:
        raise fail(f"{correct_name}, {n_name}", f"shapes {c.shape} and {m.shape}", "broadcastable shapes",
                   "Pass one count per model in both.") from None
    if np.any(m <= 0):
        bad = m[m <= 0].flat[0]
        raise fail(n_name, int(bad), "> 0 (a test set needs images)", "Check that the evaluation ran on a non-empty set.")
    if np.any(c < 0):
        raise fail(correct_name, int(c[c < 0].flat[0]), ">= 0", "Counts of correct predictions cannot be negative.")
    if np.any(c > m):
        i = np.flatnonzero((c > m).ravel())[0]
        raise fail(correct_name, int(c.ravel()[i]), f"<= {n_name} ({int(m.ravel()[i])})",
                   "More correct predictions than images: were the sets or counts swapped?")
    return c.copy(), m.copy()


def _readonly(*arrays: np.ndarray) -> None:
    for a in arrays:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False


def transform(p: Any, scale: Scale = "probit") -> np.ndarray:
    """Map accuracies to the fit scale (probit: ``norm.ppf``, logit, or identity)."""
    scale = check_choice("scale", scale, SCALES)  # type: ignore[assignment]
    p = np.asarray(p, dtype=float)
    if scale == "probit":
        return sps.norm.ppf(p)
    if scale == "logit":
        return logit(p)
    return p.copy()


def inverse_transform(z: Any, scale: Scale = "probit") -> np.ndarray:
    """Map values on the fit scale back to accuracies."""
    scale = check_choice("scale", scale, SCALES)  # type: ignore[assignment]
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
    n = np.broadcast_to(np.asarray(n, dtype=float), p.shape)
    return np.clip(p, 0.5 / n, 1.0 - 0.5 / n), at_edge


# --------------------------------------------------------------------------- accuracy


@dataclass(frozen=True, eq=False)
class AccuracyCI:
    """Accuracy with a binomial confidence interval, per model (arrays in the input's shape).

    Attributes: ``correct``, ``n`` (int64 counts), ``accuracy`` (= correct / n), ``lower``,
    ``upper`` (interval bounds in [0, 1]), ``method`` (``'clopper-pearson'``, ``'wilson'`` or
    ``'jeffreys'``), ``alpha`` (1 - confidence level) and ``names`` (one per model).
    """

    correct: np.ndarray
    n: np.ndarray
    accuracy: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    method: str
    alpha: float
    names: tuple[str, ...] = ()

    def __iter__(self):  # unpack like statsmodels: acc, lo, hi = accuracy_ci(...)
        return iter((self.accuracy, self.lower, self.upper))

    def __len__(self) -> int:
        return int(np.size(self.accuracy))

    def summary(self) -> str:
        """Text table: model, correct/n, accuracy and interval in percent."""
        level = f"{100 * (1 - self.alpha):g}%"
        names = self.names or tuple(f"#{i}" for i in range(len(self)))
        width = max([len("model")] + [len(x) for x in names])
        lines = [f"Accuracy with {level} {self.method} intervals",
                 f"{'model':<{width}}  {'correct':>15}  {'acc %':>7}  {level + ' CI':>17}"]
        for name, c, m, a, lo, hi in zip(names, np.ravel(self.correct), np.ravel(self.n),
                                         np.ravel(self.accuracy), np.ravel(self.lower), np.ravel(self.upper)):
            lines.append(f"{name:<{width}}  {f'{c}/{m}':>15}  {_pct(a):>7}  [{_pct(lo):>6}, {_pct(hi):>6}]")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of counts, accuracies, bounds, method and alpha."""
        return {
            "names": list(self.names), "correct": _json(self.correct), "n": _json(self.n),
            "accuracy": _json(self.accuracy), "lower": _json(self.lower), "upper": _json(self.upper),
            "method": self.method, "alpha": self.alpha,
        }


def accuracy_ci(
    correct: Any,
    n: Any,
    alpha: float = 0.05,
    method: IntervalMethod = "clopper-pearson",
    names: Sequence[str] | None = None,
) -> AccuracyCI:
    """Accuracy ``correct / n`` with a ``1 - alpha`` binomial interval, vectorised over models.

    Parameters
    ----------
    correct, n
        counts of correct predictions and of images (ints or int arrays, broadcast together).
    alpha
        in (0, 1); 0.05 gives 95% intervals.
    method
        ``'clopper-pearson'`` (exact, the default; statsmodels ``'beta'``), ``'wilson'``
        (score) or ``'jeffreys'`` (equal-tailed Beta(1/2, 1/2) posterior interval).

    Examples
    --------
    >>> r = accuracy_ci(9711, 10000)          # shake_shake cutout on CIFAR-10
    >>> round(float(r.lower), 4), round(float(r.upper), 4)
    (0.9676, 0.9743)
    """
    from statsmodels.stats.proportion import proportion_confint

    alpha = _check_alpha(alpha)
    method = check_choice("method", method, INTERVAL_METHODS)  # type: ignore[assignment]
    c, m = _check_counts(correct, n)
    lo, hi = proportion_confint(c, m, alpha=alpha, method=_STATSMODELS_INTERVAL[method])
    lo = np.clip(np.asarray(lo, dtype=float), 0.0, 1.0)
    hi = np.clip(np.asarray(hi, dtype=float), 0.0, 1.0)
    if method == "jeffreys":
        # Brown, Cai & DasGupta (2001): the equal-tailed Jeffreys interval excludes the observed
        # 0 (or 1); set lower = 0 at correct = 0 and upper = 1 at correct = n (as DescTools does)
        lo = np.where(c == 0, 0.0, lo)
        hi = np.where(c == m, 1.0, hi)
    acc = c / m
    # all three intervals contain correct / n in exact arithmetic; undo rounding (e.g. Wilson's
    # upper bound 0.9999999999999999 at correct = n)
    lo, hi = np.minimum(lo, acc), np.maximum(hi, acc)
    _readonly(c, m, acc, lo, hi)
    return AccuracyCI(c, m, acc, lo, hi, method, alpha, _names(names, c.size) if (names is not None or c.ndim) else ())


def interval_coverage(
    n: int,
    p: Any,
    alpha: float = 0.05,
    method: IntervalMethod = "clopper-pearson",
) -> np.ndarray:
    """Exact coverage probability of :func:`accuracy_ci` intervals for true accuracies ``p``.

    Sums the binomial probabilities of the outcomes ``k = 0..n`` whose interval contains ``p``
    (no simulation error). Clopper-Pearson's coverage is at least ``1 - alpha`` for every ``p``.
    """
    n = check_int("n", n, minimum=1)
    alpha = _check_alpha(alpha)
    pv = np.asarray(p, dtype=float)
    if np.any(~np.isfinite(pv) | (pv < 0) | (pv > 1)):
        raise fail("p", p, "true accuracies in [0, 1]")
    k = np.arange(n + 1)
    ci = accuracy_ci(k, n, alpha=alpha, method=method)
    flat = pv.ravel()
    inside = (ci.lower[:, None] <= flat[None, :]) & (flat[None, :] <= ci.upper[:, None])
    pmf = sps.binom.pmf(k[:, None], n, flat[None, :])
    return np.sum(pmf * inside, axis=0).reshape(pv.shape)


# --------------------------------------------------------------------------- the gap


def adjust_pvalues(p_values: Any, method: AdjustMethod = "holm", alpha: float = 0.05) -> np.ndarray:
    """Adjust p-values for multiple comparisons (``statsmodels.stats.multitest.multipletests``).

    ``'holm'`` (default; controls the family-wise error rate), ``'bh'`` (Benjamini-Hochberg,
    controls the false discovery rate), ``'bonferroni'`` or ``'none'``. NaN p-values stay NaN
    and do not count as tests.
    """
    from statsmodels.stats.multitest import multipletests

    method = check_choice("adjust", method, ADJUST_METHODS)  # type: ignore[assignment]
    alpha = _check_alpha(alpha)
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if method == "none" or not ok.any():
        out[ok] = p[ok]
        return out
    if method == "holm":
        # Holm's step-down written out: statsmodels' multipletests runs gc.collect() in its Holm
        # branch on every call (about 0.5 s in a process holding torch), which would dominate
        # compare() with per-class drops. Tested against multipletests(method='holm').
        q = p[ok]
        order = np.argsort(q, kind="stable")
        m = q.size
        adj = np.maximum.accumulate(q[order] * (m - np.arange(m)))
        res = np.empty(m)
        res[order] = np.minimum(adj, 1.0)
        out[ok] = res
        return out
    out[ok] = multipletests(p[ok], alpha=alpha, method=_STATSMODELS_ADJUST[method])[1]
    return out


@dataclass(frozen=True, eq=False)
class GapCI:
    """Drop in accuracy between two independent test sets, per model (or per group).

    ``gap = acc_orig - acc_new`` (positive: lower accuracy on the new set) with a ``1 - alpha``
    interval ``[lower, upper]`` by ``method`` (``'newcombe'`` or ``'agresti-caffo'``); ``statistic``
    and ``p_value`` of the two-sided ``test`` of equal accuracies, ``p_adjusted`` after the
    multiple-comparison ``adjust`` method over all entries. Counts are stored as given.
    """

    correct_orig: np.ndarray
    n_orig: np.ndarray
    correct_new: np.ndarray
    n_new: np.ndarray
    acc_orig: np.ndarray
    acc_new: np.ndarray
    gap: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    statistic: np.ndarray
    p_value: np.ndarray
    p_adjusted: np.ndarray
    method: str
    test: str
    adjust: str
    alpha: float
    names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(np.size(self.gap))

    @property
    def significant(self) -> np.ndarray:
        """Whether each adjusted p-value is below alpha."""
        return np.asarray(self.p_adjusted < self.alpha)

    def summary(self) -> str:
        """Text table: accuracies, gap with interval (percentage points) and adjusted p-value."""
        level = f"{100 * (1 - self.alpha):g}%"
        names = self.names or tuple(f"#{i}" for i in range(len(self)))
        width = max([len("name")] + [len(x) for x in names])
        lines = [f"Accuracy drop (orig - new), {level} {self.method} intervals, {self.test} test, "
                 f"{self.adjust}-adjusted p",
                 f"{'name':<{width}}  {'orig %':>7}  {'new %':>7}  {'gap pp':>7}  {level + ' CI':>17}  {'p adj':>9}"]
        for i, name in enumerate(names):
            lines.append(
                f"{name:<{width}}  {_pct(np.ravel(self.acc_orig)[i]):>7}  {_pct(np.ravel(self.acc_new)[i]):>7}  "
                f"{_pct(np.ravel(self.gap)[i]):>7}  [{_pct(np.ravel(self.lower)[i]):>6}, "
                f"{_pct(np.ravel(self.upper)[i]):>6}]  {np.ravel(self.p_adjusted)[i]:>9.2g}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of counts, accuracies, gaps, bounds, p-values and methods."""
        keys = ("correct_orig", "n_orig", "correct_new", "n_new", "acc_orig", "acc_new", "gap", "lower",
                "upper", "statistic", "p_value", "p_adjusted")
        out: dict[str, Any] = {"names": list(self.names)}
        out.update({k: _json(getattr(self, k)) for k in keys})
        out.update(method=self.method, test=self.test, adjust=self.adjust, alpha=self.alpha)
        return out


def gap_ci(
    correct_orig: Any,
    n_orig: Any,
    correct_new: Any,
    n_new: Any,
    alpha: float = 0.05,
    method: GapMethod = "newcombe",
    adjust: AdjustMethod = "holm",
    names: Sequence[str] | None = None,
) -> GapCI:
    """Interval and test for ``acc_orig - acc_new`` on two independent test sets.

    The interval is Newcombe's hybrid score interval (default) or Agresti-Caffo
    (``statsmodels.stats.proportion.confint_proportions_2indep``); the test is the score test
    of equal proportions (``test_proportions_2indep(method='score')``). With several models the
    p-values are adjusted with ``adjust`` (Holm by default, ``'bh'``, ``'bonferroni'``, ``'none'``).
    When both accuracies are 0 or both are 1 the score statistic is undefined; it is reported
    as 0 with p = 1 (the observed accuracies are identical).
    """
    from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep

    alpha = _check_alpha(alpha)
    method = check_choice("method", method, GAP_METHODS)  # type: ignore[assignment]
    adjust = check_choice("adjust", adjust, ADJUST_METHODS)  # type: ignore[assignment]
    c1, m1 = _check_counts(correct_orig, n_orig, "correct_orig", "n_orig")
    c2, m2 = _check_counts(correct_new, n_new, "correct_new", "n_new")
    try:
        c1, m1, c2, m2 = (np.array(a) for a in np.broadcast_arrays(c1, m1, c2, m2))
    except ValueError:
        raise fail("correct_new", f"shape {c2.shape}", f"the shape of correct_orig {c1.shape}",
                   "Pass one count per model for both sets.") from None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = confint_proportions_2indep(c1, m1, c2, m2, method=_STATSMODELS_GAP[method], alpha=alpha)
        res = test_proportions_2indep(c1, m1, c2, m2, method="score")
    stat = np.array(np.broadcast_to(res.statistic, c1.shape), dtype=float)
    p = np.array(np.broadcast_to(res.pvalue, c1.shape), dtype=float)
    a1, a2 = c1 / m1, c2 / m2
    degenerate = ~np.isfinite(p) & (a1 == a2)
    stat[degenerate] = 0.0
    p[degenerate] = 1.0
    lo = np.clip(np.array(np.broadcast_to(lo, c1.shape), dtype=float), -1.0, 1.0)  # rounding at +-1
    hi = np.clip(np.array(np.broadcast_to(hi, c1.shape), dtype=float), -1.0, 1.0)
    p_adj = adjust_pvalues(p.ravel(), adjust, alpha).reshape(p.shape)
    gap = a1 - a2
    _readonly(c1, m1, c2, m2, a1, a2, gap, lo, hi, stat, p, p_adj)
    nm = _names(names, c1.size) if (names is not None or c1.ndim) else ()
    return GapCI(c1, m1, c2, m2, a1, a2, gap, lo, hi, stat, p, p_adj, method, "score", adjust, alpha, nm)


@dataclass(frozen=True, eq=False)
class McNemarResult:
    """Exact McNemar test of two models (or two sets of predictions) on the same images.

    ``both`` / ``neither``: images both / neither got right; ``only_a`` / ``only_b``: images only
    model a / only model b got right. ``statistic`` is ``min(only_a, only_b)`` for the exact
    (binomial) test, ``p_value`` its two-sided p-value; ``diff = acc_a - acc_b``.
    """

    both: int
    only_a: int
    only_b: int
    neither: int
    n: int
    acc_a: float
    acc_b: float
    diff: float
    statistic: float
    p_value: float
    exact: bool
    names: tuple[str, str] = ("a", "b")

    def summary(self) -> str:
        a, b = self.names
        return (f"McNemar ({'exact' if self.exact else 'chi-square'}) {a} vs {b} on {self.n} images: "
                f"{_pct(self.acc_a)}% vs {_pct(self.acc_b)}% (diff {_pct(self.diff)} pp); "
                f"only {a} right: {self.only_a}, only {b} right: {self.only_b}; p = {self.p_value:.3g}")

    def to_dict(self) -> dict[str, Any]:
        return {k: _json(getattr(self, k)) for k in self.__dataclass_fields__}


def mcnemar_test(correct_a: Any, correct_b: Any, exact: bool = True,
                 names: tuple[str, str] = ("a", "b")) -> McNemarResult:
    """McNemar test of two models evaluated on the same images (per-image correctness).

    Wraps ``statsmodels.stats.contingency_tables.mcnemar`` (exact binomial test by default;
    ``exact=False`` uses the chi-square statistic with continuity correction).
    """
    from statsmodels.stats.contingency_tables import mcnemar

    a = np.asarray(correct_a)
    b = np.asarray(correct_b)
    if a.dtype != bool or a.ndim != 1:
        raise fail("correct_a", a, "a 1-D bool array (per-image correctness)", error=TypeError)
    if b.dtype != bool or b.ndim != 1:
        raise fail("correct_b", b, "a 1-D bool array (per-image correctness)", error=TypeError)
    if a.shape != b.shape:
        raise fail("correct_b", f"{b.size} images", f"the same images as correct_a ({a.size})",
                   "McNemar compares two models on the same images; use gap_ci for independent sets.")
    if a.size == 0:
        raise fail("correct_a", "0 images", "non-empty")
    both = int(np.sum(a & b))
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    neither = int(np.sum(~a & ~b))
    if only_a + only_b == 0:
        stat, p = 0.0, 1.0
    else:
        res = mcnemar([[both, only_a], [only_b, neither]], exact=exact, correction=True)
        stat, p = float(res.statistic), float(res.pvalue)
    acc_a, acc_b = float(a.mean()), float(b.mean())
    return McNemarResult(both, only_a, only_b, neither, int(a.size), acc_a, acc_b, acc_a - acc_b,
                         stat, p, bool(exact), (str(names[0]), str(names[1])))


def group_drops(
    correct_orig: Any,
    groups_orig: Any,
    correct_new: Any,
    groups_new: Any,
    alpha: float = 0.05,
    method: GapMethod = "newcombe",
    adjust: AdjustMethod = "holm",
    groups: Sequence[Any] | None = None,
) -> GapCI:
    """Per-class or per-keyword drops of one model: a :class:`GapCI` whose names are the groups.

    ``correct_*`` are per-image correctness (bool) and ``groups_*`` the per-image group (class
    name, label or keyword) on each set. ``groups`` fixes the order (default: sorted union).
    A group present on only one set has no gap and is an error (pass ``groups`` to restrict).
    """
    co, go = np.asarray(correct_orig), np.asarray(groups_orig)
    cn, gn = np.asarray(correct_new), np.asarray(groups_new)
    for nm, c, g in (("orig", co, go), ("new", cn, gn)):
        if c.dtype != bool or c.ndim != 1:
            raise fail(f"correct_{nm}", c, "a 1-D bool array (per-image correctness)", error=TypeError)
        if g.shape != c.shape:
            raise fail(f"groups_{nm}", f"{g.size} entries", f"one group per image ({c.size})")
    if groups is None:
        keys = sorted(set(go.tolist()) | set(gn.tolist()), key=str)
    else:
        keys = list(groups)
    so, sn = set(go.tolist()), set(gn.tolist())
    missing = [k for k in keys if k not in so or k not in sn]
    if missing:
        raise fail("groups", missing[:5], "present on both sets",
                   "Pass groups=[...] with the groups both sets share.")
    k_o = np.array([np.sum(co[go == k]) for k in keys], dtype=np.int64)
    n_o = np.array([np.sum(go == k) for k in keys], dtype=np.int64)
    k_n = np.array([np.sum(cn[gn == k]) for k in keys], dtype=np.int64)
    n_n = np.array([np.sum(gn == k) for k in keys], dtype=np.int64)
    return gap_ci(k_o, n_o, k_n, n_n, alpha=alpha, method=method, adjust=adjust, names=[str(k) for k in keys])


# --------------------------------------------------------------------------- linear fit


@dataclass(frozen=True, eq=False)
class LinearFit:
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

    scale: str
    method: str
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
        z = transform(np.asarray(orig_acc, dtype=float), self.scale)  # type: ignore[arg-type]
        return inverse_transform(self.intercept + self.slope * z, self.scale)  # type: ignore[arg-type]

    def mean_var(self, orig_acc: Any) -> np.ndarray:
        """Variance of the fitted line at ``orig_acc`` on the scale (from the parameter covariance)."""
        z = transform(np.asarray(orig_acc, dtype=float), self.scale)  # type: ignore[arg-type]
        c = self.cov
        return c[0, 0] + 2 * z * c[0, 1] + z * z * c[1, 1]

    def band(self, orig_acc: Any, kind: Literal["confidence", "prediction"] = "confidence"
             ) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper ``1 - alpha`` band at ``orig_acc``, mapped back to accuracy."""
        kind = check_choice("kind", kind, ("confidence", "prediction"))  # type: ignore[assignment]
        z = transform(np.asarray(orig_acc, dtype=float), self.scale)  # type: ignore[arg-type]
        var = self.mean_var(orig_acc) + (self.residual_std**2 if kind == "prediction" else 0.0)
        t = sps.t.ppf(1 - self.alpha / 2, max(self.df, 1))
        mid = self.intercept + self.slope * z
        half = t * np.sqrt(var)
        return (inverse_transform(mid - half, self.scale),  # type: ignore[arg-type]
                inverse_transform(mid + half, self.scale))  # type: ignore[arg-type]

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

    def to_dict(self) -> dict[str, Any]:
        return {k: _json(getattr(self, k)) for k in self.__dataclass_fields__}


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


def _accuracy_matrix(name: str, correct: Any, n_models: int) -> np.ndarray:
    c = np.asarray(correct)
    if c.dtype != bool or c.ndim != 2 or c.shape[0] != n_models:
        raise fail(name, c, f"a bool array of shape (models={n_models}, images)",
                   "Pass per-image correctness, one row per model, for bootstrap='images'.", error=TypeError)
    if c.shape[1] == 0:
        raise fail(name, "0 images", "at least one image per test set")
    return c


def _bootstrap_accuracies(correct: np.ndarray, n_boot: int, rng: np.random.Generator,
                          chunk: int = 64) -> Iterable[np.ndarray]:
    """Yield (replicates, models) accuracy matrices from resampling the images (columns).

    All models are resampled with the same image indices (they share the test set). The
    multiplicity of each image in a replicate is a bincount, so a chunk of replicates is one
    matrix product ``correct @ counts.T`` (float32 holds the integer counts exactly).
    """
    m, n = correct.shape
    cf = np.ascontiguousarray(correct, dtype=np.float32)
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        counts = np.empty((b, n), dtype=np.float32)
        for r in range(b):
            counts[r] = np.bincount(idx[r], minlength=n)
        yield (cf @ counts.T).T / n
        done += b


def _percentile_ci(values: np.ndarray, alpha: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


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
    bootstrap
        ``'none'``, ``'models'`` (resample models with replacement) or ``'images'`` (resample
        the images of each test set, the same indices for all models; needs ``correct_orig``
        and ``correct_new``, bool arrays of shape (models, images)). ``n_bootstrap`` replicates,
        percentile intervals, ``seed`` for the generator.
    grid
        original accuracies at which to tabulate the bands (default: 101 points spanning the
        models' range).
    boot_accuracies
        precomputed ``(n_bootstrap, models)`` accuracies on each set from resampling images
        (as :func:`compare` shares them with :func:`rank_stability`); default: drawn here.
    """
    import statsmodels.api as sm

    scale = check_choice("scale", scale, SCALES)  # type: ignore[assignment]
    method = check_choice("method", method, FIT_METHODS)  # type: ignore[assignment]
    bootstrap = check_choice("bootstrap", bootstrap, BOOTSTRAPS)  # type: ignore[assignment]
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

    # --- point fit, covariance, residual scatter
    if method == "ols":
        res = sm.OLS(w, sm.add_constant(z)).fit()
        intercept, slope = (float(v) for v in res.params)
        cov = np.asarray(res.cov_params(), dtype=float)
        resid = np.asarray(res.resid, dtype=float)
        r2 = float(res.rsquared)
        infl = res.get_influence()
        with np.errstate(all="ignore"):
            stud = np.asarray(infl.resid_studentized_external, dtype=float)
    else:
        sx = _binomial_se_on_scale(x, no, scale)  # type: ignore[arg-type]
        sy = _binomial_se_on_scale(y, nn, scale)  # type: ignore[arg-type]
        intercept, slope, cov, _ = _york(z, w, sx, sy)
        resid = w - (intercept + slope * z)
        r2 = float(1 - np.sum(resid**2) / np.sum((w - w.mean()) ** 2))
        s_all = np.sqrt(np.sum(resid**2) / (k - 2)) if k > 2 else np.nan
        stud = resid / s_all if s_all > 0 else np.zeros_like(resid)
    df = k - 2
    resid_std = float(np.sqrt(np.sum(resid**2) / df))
    t = sps.t.ppf(1 - alpha / 2, df)
    se_a, se_b = float(np.sqrt(cov[0, 0])), float(np.sqrt(cov[1, 1]))
    slope_ci = (slope - t * se_b, slope + t * se_b)
    intercept_ci = (intercept - t * se_a, intercept + t * se_a)

    # --- bands on a grid, mapped back to accuracy
    if grid is None:
        lo_g, hi_g = x.min(), x.max()
        grid_arr = np.linspace(lo_g, hi_g, 101)
    else:
        grid_arr = np.asarray(grid, dtype=float).ravel()
        if np.any((grid_arr <= 0) | (grid_arr >= 1)) and scale != "linear":
            raise fail("grid", grid, "accuracies strictly between 0 and 1 on the probit/logit scale")
    gz = transform(grid_arr, scale)
    mid = intercept + slope * gz
    mvar = cov[0, 0] + 2 * gz * cov[0, 1] + gz * gz * cov[1, 1]
    conf = t * np.sqrt(mvar)
    pred = t * np.sqrt(mvar + resid_std**2)
    inv = inverse_transform
    fitted = inv(mid, scale)
    bands = (inv(mid - conf, scale), inv(mid + conf, scale), inv(mid - pred, scale), inv(mid + pred, scale))

    # --- bootstrap
    slope_boot = intercept_boot = None
    n_boot = 0
    if bootstrap != "none":
        n_boot = check_int("n_bootstrap", n_bootstrap, minimum=10)
        rng = np.random.default_rng(seed)
        params = np.full((n_boot, 2), np.nan)

        def fit_one(xb: np.ndarray, yb: np.ndarray, nob: Any, nnb: Any) -> tuple[float, float]:
            if scale != "linear":
                xb = np.clip(xb, 0.5 / nob, 1 - 0.5 / nob) if nob is not None else xb
                yb = np.clip(yb, 0.5 / nnb, 1 - 0.5 / nnb) if nnb is not None else yb
            zb, wb = transform(xb, scale), transform(yb, scale)
            if not (np.all(np.isfinite(zb)) and np.all(np.isfinite(wb))) or np.ptp(zb) == 0:
                return (np.nan, np.nan)
            if method == "ols":
                return _ols(zb, wb)
            a_, b_, _, _ = _york(zb, wb, _binomial_se_on_scale(xb, nob, scale), _binomial_se_on_scale(yb, nnb, scale))
            return (a_, b_)

        if bootstrap == "models":
            for r in range(n_boot):
                i = rng.integers(0, k, size=k)
                params[r] = fit_one(x[i], y[i], None if no is None else no[i], None if nn is None else nn[i])
        else:
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
                params[r] = fit_one(ao[r], an[r], bo, bn)
        intercept_boot = _percentile_ci(params[:, 0], alpha)
        slope_boot = _percentile_ci(params[:, 1], alpha)

    outliers = tuple(nm[i] for i in np.flatnonzero(np.abs(np.nan_to_num(stud)) > 4))
    x_r, y_r = x.copy(), y.copy()
    _readonly(x_r, y_r, resid, grid_arr, fitted, *bands, cov)
    return LinearFit(
        scale=scale, method=method, alpha=alpha, n_models=k, names=nm, x=x_r, y=y_r,
        n_orig=None if no is None else np.asarray(no, dtype=np.int64),
        n_new=None if nn is None else np.asarray(nn, dtype=np.int64),
        slope=slope, intercept=intercept, slope_se=se_b, intercept_se=se_a, cov=cov,
        slope_ci=(float(slope_ci[0]), float(slope_ci[1])),
        intercept_ci=(float(intercept_ci[0]), float(intercept_ci[1])),
        r2=r2, residual_std=resid_std, residuals=resid, df=df, grid=grid_arr, fitted=fitted,
        conf_lower=bands[0], conf_upper=bands[1], pred_lower=bands[2], pred_upper=bands[3],
        bootstrap=bootstrap, n_bootstrap=n_boot, slope_boot_ci=slope_boot, intercept_boot_ci=intercept_boot,
        boundary_rule=BOUNDARY_RULE, clipped=tuple(nm[i] for i in np.flatnonzero(clipped)),
        outliers=outliers, seed=seed if bootstrap != "none" else None,
    )


# --------------------------------------------------------------------------- effective robustness


@dataclass(frozen=True, eq=False)
class EffectiveRobustness:
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
    scale: str
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

    def to_dict(self) -> dict[str, Any]:
        return {k: _json(getattr(self, k)) for k in self.__dataclass_fields__}


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
    sc: Scale = fit.scale  # type: ignore[assignment]
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


# --------------------------------------------------------------------------- ranks


@dataclass(frozen=True, eq=False)
class RankStability:
    """How well the ranking of models on the original set carries over to the new set.

    Ranks are 1 = most accurate (ties get the average rank). ``kendall_tau`` (tau-b) and
    ``spearman_rho`` come from scipy with their p-values; ``*_ci`` are percentile bootstrap
    intervals (``bootstrap``: ``'images'`` or ``'models'``, ``n_bootstrap`` replicates).
    ``largest_changes`` lists ``(name, rank_orig, rank_new)`` by decreasing ``|rank change|``.
    """

    names: tuple[str, ...]
    acc_orig: np.ndarray
    acc_new: np.ndarray
    rank_orig: np.ndarray
    rank_new: np.ndarray
    kendall_tau: float
    kendall_p: float
    kendall_ci: tuple[float, float]
    spearman_rho: float
    spearman_p: float
    spearman_ci: tuple[float, float]
    bootstrap: str
    n_bootstrap: int
    alpha: float
    largest_changes: tuple[tuple[str, float, float], ...]
    seed: int | None = None

    def summary(self) -> str:
        level = f"{100 * (1 - self.alpha):g}%"
        lines = [
            f"Rank stability over {len(self.names)} models: Kendall tau {self.kendall_tau:.3f} "
            f"({level} bootstrap CI [{self.kendall_ci[0]:.3f}, {self.kendall_ci[1]:.3f}], p = {self.kendall_p:.2g}), "
            f"Spearman rho {self.spearman_rho:.3f} ([{self.spearman_ci[0]:.3f}, {self.spearman_ci[1]:.3f}], "
            f"p = {self.spearman_p:.2g}); bootstrap over {self.bootstrap}, {self.n_bootstrap} replicates",
        ]
        if self.largest_changes:
            lines.append("  largest rank changes: " + "; ".join(
                f"{n} {ro:g} -> {rn:g}" for n, ro, rn in self.largest_changes))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {k: _json(getattr(self, k)) for k in self.__dataclass_fields__}


def _ranks(acc: np.ndarray) -> np.ndarray:
    return sps.rankdata(-np.asarray(acc, dtype=float), method="average")


def _boot_pairs(correct_orig: np.ndarray, correct_new: np.ndarray, n_boot: int, seed: int | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(n_boot, models) accuracies on each set from resampling the images of each set."""
    rng = np.random.default_rng(seed)
    ao = np.concatenate(list(_bootstrap_accuracies(correct_orig, n_boot, rng)), axis=0)
    an = np.concatenate(list(_bootstrap_accuracies(correct_new, n_boot, rng)), axis=0)
    return ao.astype(float), an.astype(float)


def rank_stability(
    orig_acc: Any,
    new_acc: Any,
    *,
    names: Sequence[str] | None = None,
    correct_orig: Any = None,
    correct_new: Any = None,
    bootstrap: Literal["auto", "models", "images"] = "auto",
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int | None = 0,
    top: int = 5,
    boot_accuracies: tuple[np.ndarray, np.ndarray] | None = None,
) -> RankStability:
    """Kendall's tau and Spearman's rho between the two rankings, with bootstrap intervals.

    ``bootstrap='images'`` resamples the images of each test set (needs ``correct_orig`` /
    ``correct_new``, bool (models, images)): the interval then reflects the test sets'
    finite size. ``'models'`` resamples models (pairs with identical ranks drop out of a
    replicate's tau-b as ties). ``'auto'`` picks images when per-image correctness is given.
    """
    alpha = _check_alpha(alpha)
    bootstrap = check_choice("bootstrap", bootstrap, ("auto", "models", "images"))  # type: ignore[assignment]
    x = np.asarray(orig_acc, dtype=float).ravel()
    y = np.asarray(new_acc, dtype=float).ravel()
    if x.shape != y.shape:
        raise fail("new_acc", f"{y.size} values", f"one per model, as orig_acc ({x.size})")
    k = x.size
    if k < 3:
        raise fail("orig_acc", f"{k} models", "at least 3 models to compare rankings")
    nm = _names(names, k)
    n_boot = check_int("n_bootstrap", n_bootstrap, minimum=10)
    if bootstrap == "auto":
        bootstrap = "images" if correct_orig is not None and correct_new is not None else "models"
    tau, tau_p = sps.kendalltau(x, y)
    rho, rho_p = sps.spearmanr(x, y)
    taus = np.full(n_boot, np.nan)
    rhos = np.full(n_boot, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant replicates give NaN (and a scipy warning)
        if bootstrap == "images":
            if correct_orig is None or correct_new is None:
                raise fail("correct_orig" if correct_orig is None else "correct_new", None,
                           "per-image correctness (bool, models x images) for bootstrap='images'",
                           "Pass correct_orig and correct_new, or use bootstrap='models'.")
            if boot_accuracies is None:
                boot_accuracies = _boot_pairs(_accuracy_matrix("correct_orig", correct_orig, k),
                                              _accuracy_matrix("correct_new", correct_new, k), n_boot, seed)
            ao, an = boot_accuracies
            for r in range(n_boot):
                taus[r] = sps.kendalltau(ao[r], an[r])[0]
                rhos[r] = sps.spearmanr(ao[r], an[r])[0]
        else:
            rng = np.random.default_rng(seed)
            for r in range(n_boot):
                i = rng.integers(0, k, size=k)
                taus[r] = sps.kendalltau(x[i], y[i])[0]
                rhos[r] = sps.spearmanr(x[i], y[i])[0]
    ro, rn = _ranks(x), _ranks(y)
    order = np.argsort(-np.abs(ro - rn), kind="stable")[: max(0, int(top))]
    changes = tuple((nm[i], float(ro[i]), float(rn[i])) for i in order if ro[i] != rn[i])
    _readonly(ro, rn)
    return RankStability(nm, x, y, ro, rn, float(tau), float(tau_p), _percentile_ci(taus, alpha),
                         float(rho), float(rho_p), _percentile_ci(rhos, alpha), bootstrap, n_boot, alpha,
                         changes, seed)


# --------------------------------------------------------------------------- diagnosis


@dataclass(frozen=True, eq=False)
class Diagnosis:
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

    def to_dict(self) -> dict[str, Any]:
        return {k: _json(getattr(self, k)) for k in self.__dataclass_fields__}


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
    excess_scale = check_choice("excess_scale", excess_scale, SCALES)  # type: ignore[assignment]
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
                    xb = np.clip(xb, 0.5 / no, 1 - 0.5 / no) if no is not None else xb
                    yb = np.clip(yb, 0.5 / nn, 1 - 0.5 / nn) if nn is not None else yb
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


# --------------------------------------------------------------------------- comparison of many models


@dataclass(frozen=True)
class _Record:
    name: str
    n: int
    n_correct: int
    correct: np.ndarray | None = None
    top5_correct: np.ndarray | None = None
    n_top5_correct: int | None = None
    class_names: tuple[str, ...] | None = None
    class_n: tuple[int, ...] | None = None
    class_correct: tuple[int, ...] | None = None
    flags: tuple[str, ...] = ()
    dataset: str | None = None


def _record(name: Any, item: Any, arg: str) -> _Record:
    """One model's counts from an EvalResult-like object, a JSON dict or an (n_correct, n) pair."""
    if isinstance(item, Mapping):
        get: Callable[[str], Any] = item.get
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        c, m = _check_counts(item[0], item[1], f"{arg}[{name!r}] n_correct", f"{arg}[{name!r}] n")
        return _Record(str(name), int(m), int(c))
    else:
        def get(key: str) -> Any:
            return getattr(item, key, None)
    if name is None:
        name = get("model")
    if name is None or get("n") is None or get("n_correct") is None:
        raise fail(arg, item, "evaluation results with .model, .n and .n_correct, or a mapping "
                   "model -> (n_correct, n)", "Pass EvalResult objects or counts.", error=TypeError)
    c, m = _check_counts(get("n_correct"), get("n"), f"{arg}[{name!r}].n_correct", f"{arg}[{name!r}].n")
    correct = get("correct")
    if correct is not None:
        correct = np.asarray(correct)
        if correct.dtype != bool or correct.shape != (int(m),) or int(correct.sum()) != int(c):
            raise fail(f"{arg}[{name!r}].correct", correct,
                       f"a bool array of {int(m)} images with {int(c)} True (matching n and n_correct)")
    top5 = get("top5_correct")
    top5 = None if top5 is None else np.asarray(top5, dtype=bool)
    n5 = get("n_top5_correct")
    if n5 is None and top5 is not None:
        n5 = int(top5.sum())
    cn, cc, cls = get("class_n"), get("class_correct"), get("class_names")
    flags = get("flags")
    return _Record(str(name), int(m), int(c), correct, top5, None if n5 is None else int(n5),
                   None if cls is None else tuple(str(v) for v in cls),
                   None if cn is None else tuple(int(v) for v in cn),
                   None if cc is None else tuple(int(v) for v in cc),
                   tuple(str(f) for f in flags) if flags else (),
                   None if get("dataset") is None else str(get("dataset")))


def _collect(results: Any, arg: str) -> dict[str, _Record]:
    out: dict[str, _Record] = {}
    if isinstance(results, Mapping):
        items: Iterable[tuple[Any, Any]] = results.items()
    else:
        if isinstance(results, (str, bytes)) or not isinstance(results, Iterable):
            raise fail(arg, results, "a sequence of evaluation results or a mapping model -> (n_correct, n)",
                       error=TypeError)
        items = ((None, r) for r in results)
    for key, item in items:
        rec = _record(key, item, arg)
        if rec.name in out:
            raise fail(arg, rec.name, "unique model names", "Each model may appear once per test set.")
        out[rec.name] = rec
    if not out:
        raise fail(arg, "no results", "at least one model's results")
    return out


@dataclass(frozen=True, eq=False)
class Comparison:
    """Original vs new test set for many models: everything the drop statistics say.

    ``names`` are the models found in both inputs (in the original's order);
    ``unmatched_original`` / ``unmatched_new`` those found in only one (reported, not used).
    ``original`` / ``new``: accuracies with intervals; ``gap``: drops with intervals and
    adjusted p-values; ``fit``: the line on ``fit.scale`` (``None`` with fewer than 3 models);
    ``effective_robustness``: distance above that line per model; ``ranks``: rank
    stability; ``diagnosis``: the overfitting verdict in words; ``top5``: the same comparison
    for top-5 accuracy where every model has it; ``class_drops``: per-model per-class drops
    where class counts are known. ``fit_excluded`` lists models left out of the fit (their
    effective robustness is still reported).
    """

    names: tuple[str, ...]
    original: AccuracyCI
    new: AccuracyCI
    gap: GapCI
    fit: LinearFit | None
    effective_robustness: EffectiveRobustness | None
    ranks: RankStability | None
    diagnosis: Diagnosis | None
    unmatched_original: tuple[str, ...] = ()
    unmatched_new: tuple[str, ...] = ()
    fit_excluded: tuple[str, ...] = ()
    top5: Comparison | None = None
    class_drops: Mapping[str, GapCI] = field(default_factory=dict)
    original_name: str = "original"
    new_name: str = "new"
    metric: str = "top-1"
    alpha: float = 0.05
    flags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-safe dict per model (the columns of :meth:`to_dataframe`)."""
        er = self.effective_robustness
        rk = self.ranks
        out = []
        for i, name in enumerate(self.names):
            row = {
                "model": name,
                "n_orig": int(self.original.n[i]), "correct_orig": int(self.original.correct[i]),
                "acc_orig": float(self.original.accuracy[i]),
                "acc_orig_lower": float(self.original.lower[i]), "acc_orig_upper": float(self.original.upper[i]),
                "n_new": int(self.new.n[i]), "correct_new": int(self.new.correct[i]),
                "acc_new": float(self.new.accuracy[i]),
                "acc_new_lower": float(self.new.lower[i]), "acc_new_upper": float(self.new.upper[i]),
                "gap": float(self.gap.gap[i]), "gap_lower": float(self.gap.lower[i]),
                "gap_upper": float(self.gap.upper[i]),
                "p_value": _json(self.gap.p_value[i]), "p_adjusted": _json(self.gap.p_adjusted[i]),
                "effective_robustness": None if er is None else _json(er.effective_robustness[i]),
                "effective_robustness_lower": None if er is None else _json(er.lower[i]),
                "effective_robustness_upper": None if er is None else _json(er.upper[i]),
                "rank_orig": None if rk is None else float(rk.rank_orig[i]),
                "rank_new": None if rk is None else float(rk.rank_new[i]),
                "in_fit": self.fit is not None and name not in self.fit_excluded,
                "flags": list(self.flags.get(name, ())),
            }
            out.append(row)
        return out

    def to_dataframe(self) -> pd.DataFrame:
        """One row per model: counts, accuracies, bounds, gap, p-values, effective robustness, ranks."""
        import pandas as pd

        return pd.DataFrame(self.rows()).set_index("model")

    def summary(self) -> str:
        """A text table per model, then the fit, rank stability and the diagnosis."""
        level = f"{100 * (1 - self.alpha):g}%"
        width = max([len("model")] + [len(x) for x in self.names])
        head = (f"{self.original_name} vs {self.new_name} ({self.metric}, {len(self.names)} models; "
                f"{level} {self.original.method} intervals, {self.gap.method} gap intervals, "
                f"{self.gap.adjust}-adjusted p)")
        lines = [head, f"{'model':<{width}}  {'orig %':>7} {level + ' CI':>17}  {'new %':>7} {level + ' CI':>17}  "
                 f"{'gap pp':>7} {level + ' CI':>17}  {'p adj':>8}  {'ER pp':>6}  {'rank':>9}"]
        for r in self.rows():
            er = "" if r["effective_robustness"] is None else f"{100 * r['effective_robustness']:6.2f}"
            rank = "" if r["rank_orig"] is None else f"{r['rank_orig']:g}->{r['rank_new']:g}"
            p = r["p_adjusted"]
            lines.append(
                f"{r['model']:<{width}}  {_pct(r['acc_orig']):>7} [{_pct(r['acc_orig_lower']):>6}, "
                f"{_pct(r['acc_orig_upper']):>6}]  {_pct(r['acc_new']):>7} [{_pct(r['acc_new_lower']):>6}, "
                f"{_pct(r['acc_new_upper']):>6}]  {_pct(r['gap']):>7} [{_pct(r['gap_lower']):>6}, "
                f"{_pct(r['gap_upper']):>6}]  {'nan' if p is None else f'{p:.2g}':>8}  {er:>6}  {rank:>9}")
        if self.fit is not None:
            lines.append(self.fit.summary())
            if self.fit_excluded:
                lines.append(f"  left out of the fit: {', '.join(self.fit_excluded)}")
        else:
            lines.append("No fit: fewer than 3 models.")
        if self.ranks is not None:
            lines.append(self.ranks.summary())
        if self.diagnosis is not None:
            lines.append(self.diagnosis.summary())
        for name, fl in self.flags.items():
            for f in fl:
                lines.append(f"WARNING {name}: {f}")
        if self.unmatched_original or self.unmatched_new:
            lines.append(f"Not compared (in one set only): original only: "
                         f"{', '.join(self.unmatched_original) or '-'}; new only: {', '.join(self.unmatched_new) or '-'}")
        if self.top5 is not None:
            lines.append("")
            lines.append(self.top5.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: per-model rows plus every component result and the settings."""
        return {
            "original_name": self.original_name, "new_name": self.new_name, "metric": self.metric,
            "alpha": self.alpha, "interval_method": self.original.method, "gap_method": self.gap.method,
            "test": self.gap.test, "adjust": self.gap.adjust,
            "models": self.rows(),
            "unmatched_original": list(self.unmatched_original), "unmatched_new": list(self.unmatched_new),
            "fit_excluded": list(self.fit_excluded),
            "fit": None if self.fit is None else self.fit.to_dict(),
            "effective_robustness": None if self.effective_robustness is None else self.effective_robustness.to_dict(),
            "ranks": None if self.ranks is None else self.ranks.to_dict(),
            "diagnosis": None if self.diagnosis is None else self.diagnosis.to_dict(),
            "top5": None if self.top5 is None else self.top5.to_dict(),
            "class_drops": {k: v.to_dict() for k, v in self.class_drops.items()},
            "flags": {k: list(v) for k, v in self.flags.items()},
        }


def compare(
    original_results: Any,
    new_results: Any,
    *,
    alpha: float = 0.05,
    interval: IntervalMethod = "clopper-pearson",
    gap_method: GapMethod = "newcombe",
    adjust: AdjustMethod = "holm",
    scale: Scale = "probit",
    fit_method: FitMethod = "ols",
    bootstrap: Literal["auto", "none", "models", "images"] = "auto",
    n_bootstrap: int = 1000,
    exclude_from_fit: Sequence[str] = (),
    exclude_flagged: bool = False,
    top_k: int | None = None,
    seed: int | None = 0,
    original_name: str | None = None,
    new_name: str | None = None,
    metric: str = "top-1",
    _with_top5: bool = True,
) -> Comparison:
    """Compare many models' accuracy on an original and a new test set.

    Parameters
    ----------
    original_results, new_results
        sequences of evaluation results (objects with ``.model``, ``.n``, ``.n_correct`` and
        optionally ``.correct`` (per-image bool), ``.top5_correct``, ``.class_n`` /
        ``.class_correct`` / ``.class_names``; e.g. :class:`replicate.models.results.EvalResult` or
        the dicts ``replicate evaluate --json`` writes), or mappings model -> ``(n_correct, n)``.
        Models are matched by name; names found in only one input are reported in
        ``unmatched_original`` / ``unmatched_new``.
    alpha, interval, gap_method, adjust
        interval level and methods (see :func:`accuracy_ci`, :func:`gap_ci`).
    scale, fit_method
        the line of :func:`linear_fit` used for effective robustness.
    bootstrap, n_bootstrap, seed
        bootstrap of slope/intercept and rank correlations: ``'images'`` when every model has
        per-image correctness (``'auto'``), else ``'models'``; ``'none'`` skips the fit's
        bootstrap (rank intervals then resample models).
    exclude_from_fit
        model names left out of the fit (e.g. flagged prediction files); they are still
        compared and get an effective robustness.
    exclude_flagged
        also leave out of the fit every model whose results carry ``flags`` (e.g. an
        implausible gap flagged when a prediction file was read).

    original_name, new_name
        the test sets' names; default: the results' common ``.dataset``, else
        ``'original'`` / ``'new'``.

    Per-model warnings are collected in ``Comparison.flags``: the inputs' own ``flags`` and
    models far off the fitted line (``LinearFit.outliers``).
    """
    alpha = _check_alpha(alpha)
    interval = check_choice("interval", interval, INTERVAL_METHODS)  # type: ignore[assignment]
    gap_method = check_choice("gap_method", gap_method, GAP_METHODS)  # type: ignore[assignment]
    adjust = check_choice("adjust", adjust, ADJUST_METHODS)  # type: ignore[assignment]
    scale = check_choice("scale", scale, SCALES)  # type: ignore[assignment]
    fit_method = check_choice("fit_method", fit_method, FIT_METHODS)  # type: ignore[assignment]
    bootstrap = check_choice("bootstrap", bootstrap, ("auto", "none", "models", "images"))  # type: ignore[assignment]
    orig = _collect(original_results, "original_results")
    new = _collect(new_results, "new_results")
    names = tuple(n for n in orig if n in new)
    un_o = tuple(n for n in orig if n not in new)
    un_n = tuple(n for n in new if n not in orig)
    if not names:
        raise fail("new_results", f"models {list(new)[:5]}", f"sharing model names with original_results "
                   f"({list(orig)[:5]})", "Models are matched by name; check the names.")
    excluded = tuple(str(e) for e in exclude_from_fit)
    unknown = [e for e in excluded if e not in names]
    if unknown:
        raise fail("exclude_from_fit", unknown, "names of compared models",
                   f"Compared models include: {', '.join(names[:8])}...")

    ro = [orig[n] for n in names]
    rn = [new[n] for n in names]

    def common_dataset(rs: list[_Record], default: str) -> str:
        found = {r.dataset for r in rs}
        return found.pop() or default if len(found) == 1 else default  # type: ignore[return-value]

    original_name = original_name if original_name is not None else common_dataset(ro, "original")
    new_name = new_name if new_name is not None else common_dataset(rn, "new")
    flags: dict[str, tuple[str, ...]] = {}
    for a, b in zip(ro, rn):
        fl = tuple(dict.fromkeys(a.flags + b.flags))
        if fl:
            flags[a.name] = fl
    if exclude_flagged:
        excluded = excluded + tuple(n for n in flags if n not in excluded)
    c_o = np.array([r.n_correct for r in ro], dtype=np.int64)
    n_o = np.array([r.n for r in ro], dtype=np.int64)
    c_n = np.array([r.n_correct for r in rn], dtype=np.int64)
    n_n = np.array([r.n for r in rn], dtype=np.int64)
    acc_o = accuracy_ci(c_o, n_o, alpha=alpha, method=interval, names=names)
    acc_n = accuracy_ci(c_n, n_n, alpha=alpha, method=interval, names=names)
    gap = gap_ci(c_o, n_o, c_n, n_n, alpha=alpha, method=gap_method, adjust=adjust, names=names)

    per_image = all(r.correct is not None for r in ro + rn) and len({r.n for r in ro}) == 1 \
        and len({r.n for r in rn}) == 1
    if bootstrap == "auto":
        bootstrap = "images" if per_image else "models"
    if bootstrap == "images" and not per_image:
        raise fail("bootstrap", "images", "'models' or 'none' here",
                   "Resampling images needs per-image correctness (.correct) for every model on one set each.")
    co_mat = np.stack([r.correct for r in ro]) if per_image else None  # type: ignore[misc]
    cn_mat = np.stack([r.correct for r in rn]) if per_image else None  # type: ignore[misc]

    n_bootstrap = check_int("n_bootstrap", n_bootstrap, minimum=10)
    boot = _boot_pairs(co_mat, cn_mat, n_bootstrap, seed) if bootstrap == "images" and len(names) >= 3 else None  # type: ignore[arg-type]

    fit = er = ranks = diag = None
    in_fit = np.array([n not in excluded for n in names])
    if int(in_fit.sum()) >= 3:
        idx = np.flatnonzero(in_fit)
        fit = linear_fit(
            acc_o.accuracy[idx], acc_n.accuracy[idx], n_orig=n_o[idx], n_new=n_n[idx], scale=scale,
            method=fit_method, alpha=alpha, names=[names[i] for i in idx], bootstrap=bootstrap,
            n_bootstrap=n_bootstrap, correct_orig=None if co_mat is None else co_mat[idx],
            correct_new=None if cn_mat is None else cn_mat[idx], seed=seed,
            boot_accuracies=None if boot is None else (boot[0][:, idx], boot[1][:, idx]),
        )
        er = effective_robustness(acc_o.accuracy, acc_n.accuracy, fit, n_orig=n_o, n_new=n_n, names=names,
                                  alpha=alpha)
        diag = diagnose(acc_o.accuracy[idx], acc_n.accuracy[idx],
                        gap_ci(c_o[idx], n_o[idx], c_n[idx], n_n[idx], alpha=alpha, method=gap_method,
                               adjust=adjust),
                        names=[names[i] for i in idx], top_k=top_k, alpha=alpha,
                        excess_scale=scale, n_orig=n_o[idx], n_new=n_n[idx],
                        boot_accuracies=None if boot is None else (boot[0][:, idx], boot[1][:, idx])) \
            if idx.size >= 4 else None
    if len(names) >= 3:
        ranks = rank_stability(acc_o.accuracy, acc_n.accuracy, names=names, correct_orig=co_mat,
                               correct_new=cn_mat, bootstrap="images" if bootstrap == "images" else "models",
                               n_bootstrap=n_bootstrap, alpha=alpha, seed=seed, boot_accuracies=boot)

    class_drops: dict[str, GapCI] = {}
    for a, b in zip(ro, rn):
        if a.class_n and b.class_n and a.class_names == b.class_names and a.class_correct and b.class_correct:
            keep = [i for i, (m1, m2) in enumerate(zip(a.class_n, b.class_n)) if m1 > 0 and m2 > 0]
            if keep:
                class_drops[a.name] = gap_ci(
                    [a.class_correct[i] for i in keep], [a.class_n[i] for i in keep],
                    [b.class_correct[i] for i in keep], [b.class_n[i] for i in keep],
                    alpha=alpha, method=gap_method, adjust=adjust,
                    names=[a.class_names[i] for i in keep])  # type: ignore[index]

    top5 = None
    if _with_top5 and all(r.n_top5_correct is not None for r in ro + rn):
        def t5(rs: list[_Record]) -> list[dict[str, Any]]:
            return [{"model": r.name, "n": r.n, "n_correct": r.n_top5_correct, "correct": r.top5_correct,
                     "flags": r.flags} for r in rs]
        have_arrays = all(r.top5_correct is not None for r in ro + rn)
        top5 = compare(t5(ro), t5(rn), alpha=alpha, interval=interval, gap_method=gap_method, adjust=adjust,
                       scale=scale, fit_method=fit_method,
                       bootstrap=bootstrap if (have_arrays or bootstrap in ("none", "models")) else "models",
                       n_bootstrap=n_bootstrap, exclude_from_fit=excluded, top_k=top_k, seed=seed,
                       exclude_flagged=False,
                       original_name=original_name, new_name=new_name, metric="top-5", _with_top5=False)

    if fit is not None:
        for o in fit.outliers:
            flags[o] = flags.get(o, ()) + (
                f"far off the {fit.scale} line (|studentized residual| > 4); kept in the fit",)
    return Comparison(names, acc_o, acc_n, gap, fit, er, ranks, diag, un_o, un_n,
                      tuple(e for e in names if e in excluded), top5, class_drops,
                      original_name, new_name, metric, alpha, flags)
