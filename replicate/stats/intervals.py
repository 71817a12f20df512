"""Accuracy intervals, the gap between two test sets, McNemar, per-group drops, p-value adjustment."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as sps

from replicate._results import Result
from replicate._results import json_safe as _json
from replicate._validation import check_int, fail
from replicate.stats._common import (
    _STATSMODELS_ADJUST,
    _STATSMODELS_GAP,
    _STATSMODELS_INTERVAL,
    ADJUST_METHODS,
    GAP_METHODS,
    INTERVAL_METHODS,
    AdjustMethod,
    GapMethod,
    IntervalMethod,
    _check_alpha,
    _check_counts,
    _names,
    _pct,
    _readonly,
    choice,
)

if TYPE_CHECKING:  # pragma: no cover
    pass


# --------------------------------------------------------------------------- accuracy


@dataclass(frozen=True, eq=False)
class AccuracyCI(Result):
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
    names
        one name per model, recorded in the result (``None``: none).

    Examples
    --------
    >>> r = accuracy_ci(9711, 10000)          # shake_shake cutout on CIFAR-10
    >>> round(float(r.lower), 4), round(float(r.upper), 4)
    (0.9676, 0.9743)
    """
    from statsmodels.stats.proportion import proportion_confint

    alpha = _check_alpha(alpha)
    method = choice("method", method, INTERVAL_METHODS)
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

    method = choice("adjust", method, ADJUST_METHODS)
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
class GapCI(Result):
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

    Parameters
    ----------
    correct_orig, n_orig
        correct predictions and images on the original set (ints or one per model).
    correct_new, n_new
        the same on the new set (broadcast with the original's counts).
    alpha
        in (0, 1); 0.05 gives 95% intervals.
    method
        ``'newcombe'`` (default) or ``'agresti-caffo'``.
    adjust
        multiple-comparison adjustment over the entries: ``'holm'`` (default), ``'bh'``,
        ``'bonferroni'`` or ``'none'``.
    names
        one name per entry (models, or groups as :func:`group_drops` passes).
    """
    from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep

    alpha = _check_alpha(alpha)
    method = choice("method", method, GAP_METHODS)
    adjust = choice("adjust", adjust, ADJUST_METHODS)
    c1, m1 = _check_counts(correct_orig, n_orig, "correct_orig", "n_orig")
    c2, m2 = _check_counts(correct_new, n_new, "correct_new", "n_new")
    raw = (correct_orig, n_orig, correct_new, n_new)
    shaped = {k: np.shape(v) for k, v in zip(("correct_orig", "n_orig", "correct_new", "n_new"), raw) if np.ndim(v)}
    if len(set(shaped.values())) > 1:  # no broadcasting of a length-1 array against several models
        first = next(iter(shaped))
        bad = next(k for k, v in shaped.items() if v != shaped[first])
        raise fail(bad, f"shape {shaped[bad]}", f"a scalar or the shape of {first} {shaped[first]}",
                   "Pass one count per model for both sets (equal lengths), or one number for all.")
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
class McNemarResult(Result):
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

    Parameters
    ----------
    correct_orig, groups_orig
        per-image correctness (1-D bool) and group on the original set.
    correct_new, groups_new
        the same on the new set.
    alpha, method, adjust
        as in :func:`gap_ci`; the adjustment runs over the groups.
    groups
        the groups to report, in this order (default: the sorted union of both sets' groups).
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
