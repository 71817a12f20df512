"""Rank stability of models between the two test sets (Kendall, Spearman, bootstrap)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import stats as sps

from replicate._results import Result
from replicate._validation import check_int, fail
from replicate.stats._common import (
    RANK_BOOTSTRAPS,
    _accuracy_matrix,
    _boot_pairs,
    _check_alpha,
    _names,
    _percentile_ci,
    _readonly,
    choice,
)

if TYPE_CHECKING:  # pragma: no cover
    pass


# --------------------------------------------------------------------------- ranks


@dataclass(frozen=True, eq=False)
class RankStability(Result):
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


def _ranks(acc: np.ndarray) -> np.ndarray:
    return sps.rankdata(-np.asarray(acc, dtype=float), method="average")



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
    bootstrap = choice("bootstrap", bootstrap, RANK_BOOTSTRAPS)
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
