"""Shared pieces of replicate.stats: method names, input checks, bootstrap resampling."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeVar

import numpy as np

from replicate._validation import check_choice, check_fraction, fail

L = TypeVar("L", bound=str)

IntervalMethod = Literal["clopper-pearson", "wilson", "jeffreys"]
GapMethod = Literal["newcombe", "agresti-caffo"]
AdjustMethod = Literal["holm", "bh", "bonferroni", "none"]
Scale = Literal["probit", "logit", "linear"]
FitMethod = Literal["ols", "odr"]
Bootstrap = Literal["none", "models", "images"]
RankBootstrap = Literal["auto", "models", "images"]
CompareBootstrap = Literal["auto", "none", "models", "images"]

INTERVAL_METHODS: tuple[IntervalMethod, ...] = ("clopper-pearson", "wilson", "jeffreys")
GAP_METHODS: tuple[GapMethod, ...] = ("newcombe", "agresti-caffo")
ADJUST_METHODS: tuple[AdjustMethod, ...] = ("holm", "bh", "bonferroni", "none")
SCALES: tuple[Scale, ...] = ("probit", "logit", "linear")
FIT_METHODS: tuple[FitMethod, ...] = ("ols", "odr")
BOOTSTRAPS: tuple[Bootstrap, ...] = ("none", "models", "images")
RANK_BOOTSTRAPS: tuple[RankBootstrap, ...] = ("auto", "models", "images")
COMPARE_BOOTSTRAPS: tuple[CompareBootstrap, ...] = ("auto", "none", "models", "images")

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


def choice(name: str, value: Any, choices: tuple[L, ...]) -> L:
    """:func:`~replicate._validation.check_choice` typed by its choices: the member (a Literal) equal to ``value``."""
    return choices[choices.index(check_choice(name, value, choices))]


def clip_accuracy(p: Any, n: Any) -> Any:
    """The boundary rule (:data:`BOUNDARY_RULE`): accuracies clipped to ``[0.5/n, 1 - 0.5/n]``.

    ``n`` is the test set's size (a number or one per accuracy); ``None`` leaves ``p`` as it is.
    """
    if n is None:
        return p
    n = np.asarray(n, dtype=float)
    return np.clip(p, 0.5 / n, 1.0 - 0.5 / n)


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

def _boot_pairs(correct_orig: np.ndarray, correct_new: np.ndarray, n_boot: int, seed: int | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(n_boot, models) accuracies on each set from resampling the images of each set."""
    rng = np.random.default_rng(seed)
    ao = np.concatenate(list(_bootstrap_accuracies(correct_orig, n_boot, rng)), axis=0)
    an = np.concatenate(list(_bootstrap_accuracies(correct_new, n_boot, rng)), axis=0)
    return ao.astype(float), an.astype(float)
