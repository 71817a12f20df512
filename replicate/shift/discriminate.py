"""The dataset test (Torralba & Efros 2011): cross-set duplicates, a stratified sample, the classifier, the control."""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from replicate._html import png_data_uri
from replicate._results import Result
from replicate._results import json_safe as _json_safe
from replicate._validation import check_fraction, check_int, fail, short_repr
from replicate.imageset import ImageSet
from replicate.shift.classifier import (
    _assign_folds,
    _auc_columns,
    _cross_val_scores,
    _permuted_labels,
    delong_auc,
)
from replicate.shift.features import (
    BUILTIN_FEATURES,
    FeatureSpec,
    NearDuplicates,
    _check_features,
    _feature_name,
    compute_features,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def remove_cross_duplicates(
    a: ImageSet, b: ImageSet, near_duplicates: NearDuplicates = "auto"
) -> tuple[ImageSet, ImageSet, dict[str, Any]]:
    """Drop images that appear in both sets: exact (content hash) and near duplicates.

    Both members of every cross-set pair are removed. ``near_duplicates`` is
    ``"auto"`` (replicate's near-duplicate detector,
    :func:`replicate.dedup.find_near_duplicates` with its default configuration, b
    queried against a), ``None`` (exact
    duplicates only) or a callable ``(a, b) -> (ids_in_a, ids_in_b)``. Returns the
    cleaned sets and a record of what was removed and how.
    """
    ha = a.content_hash_hex()
    hb = b.content_hash_hex()
    common = np.intersect1d(ha, hb)
    drop_a = set(a.ids[np.isin(ha, common)].tolist())
    drop_b = set(b.ids[np.isin(hb, common)].tolist())
    record: dict[str, Any] = {"exact_hashes": int(len(common)), "near_method": None}
    n_exact_a, n_exact_b = len(drop_a), len(drop_b)
    detector: Callable[[ImageSet, ImageSet], Any] | None = None
    if near_duplicates == "auto":
        detector = _replicate_near_duplicates
        record["near_method"] = "replicate.dedup.find_near_duplicates (default config, b against a)"
    elif near_duplicates is None:
        record["near_method"] = "none (exact duplicates only)"
    elif callable(near_duplicates):
        detector = near_duplicates
        record["near_method"] = _feature_name(near_duplicates)
    else:
        raise fail("near_duplicates", near_duplicates, "'auto', None or a callable (a, b) -> (ids_a, ids_b)",
                   error=TypeError)
    if detector is not None:
        ids_a, ids_b = _near_pairs(detector(a, b), a, b)
        drop_a |= set(ids_a)
        drop_b |= set(ids_b)
    record.update(
        removed_a=len(drop_a),
        removed_b=len(drop_b),
        removed_exact_a=n_exact_a,
        removed_exact_b=n_exact_b,
        removed_ids_a=sorted(drop_a),
        removed_ids_b=sorted(drop_b),
    )
    keep_a = ~np.isin(a.ids, list(drop_a)) if drop_a else np.ones(len(a), bool)
    keep_b = ~np.isin(b.ids, list(drop_b)) if drop_b else np.ones(len(b), bool)
    return a.select(keep_a), b.select(keep_b), record


def _replicate_near_duplicates(a: ImageSet, b: ImageSet) -> tuple[list[str], list[str]]:
    """Cross-set near-duplicate pairs from replicate's detector (b as query, a as reference)."""
    from replicate.dedup import find_near_duplicates

    found = find_near_duplicates(b, {"a": a}, within_query=False)
    pairs = found.pairs
    pairs = pairs[pairs["flagged"].astype(bool) & (pairs["reference_set"] == "a")]
    return pairs["reference_id"].astype(str).tolist(), pairs["query_id"].astype(str).tolist()


def _near_pairs(found: Any, a: ImageSet, b: ImageSet) -> tuple[list[str], list[str]]:
    """Normalise a near-duplicate detector's answer to (ids in a, ids in b)."""
    if not (isinstance(found, tuple) and len(found) == 2):
        raise fail(
            "near_duplicates(a, b)",
            type(found).__name__,
            "a tuple (ids_in_a, ids_in_b) of the images to remove from each set",
            error=TypeError,
        )
    ids_a, ids_b = (np.asarray(x).astype(str).tolist() for x in found)
    for name, ids, s in (("a", ids_a, a), ("b", ids_b, b)):
        unknown = sorted(set(ids) - set(s.ids.tolist()))
        if unknown:
            raise fail(f"near_duplicates(a, b) ids for {name}", unknown[:3], f"ids of images in {s.name!r}",
                       error=KeyError)
    return ids_a, ids_b


# =========================================================================== statistics

def _check_pair(a: ImageSet, b: ImageSet) -> None:
    for name, s in (("a", a), ("b", b)):
        if not isinstance(s, ImageSet):
            raise fail(name, s, f"an ImageSet, not {type(s).__name__}", "Open files with replicate.load(path).",
                       error=TypeError)
    if a.image_shape != b.image_shape:
        raise fail(
            f"image shape of b ({b.name!r})",
            b.image_shape,
            f"{a.image_shape}, the image shape of a ({a.name!r})",
            "Resize one set to the other's size first: a classifier would separate the sets by size alone.",
        )
    if a.class_names != b.class_names:
        only_a = [c for c in a.class_names if c not in b.class_names]
        only_b = [c for c in b.class_names if c not in a.class_names]
        detail = f"only in a: {only_a}, only in b: {only_b}" if (only_a or only_b) else "same names, other order"
        raise fail(
            f"class_names of b ({b.name!r})",
            list(b.class_names),
            f"equal to the class names of a ({a.name!r}: {short_repr(list(a.class_names))})",
            f"{detail}. Map both sets' labels to one class list first.",
        )


def _strata(s: ImageSet) -> np.ndarray:
    """Stratum per image: the label, with -1 (unlabelled) as its own stratum."""
    return s.labels


def _stratum_name(s: ImageSet, k: int) -> str:
    return "<unlabelled>" if k < 0 else s.class_names[k]


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Scale integer ``counts`` down to sum to ``total`` (largest remainders)."""
    if counts.sum() <= total:
        return counts.copy()
    exact = counts * (total / counts.sum())
    out = np.floor(exact).astype(np.int64)
    rest = total - out.sum()
    order = np.argsort(-(exact - out), kind="stable")
    out[order[:rest]] += 1
    return out


@dataclass(frozen=True)
class _Sample:
    pos_a: np.ndarray  # positions in a (class-grouped order)
    pos_b: np.ndarray
    strata: np.ndarray  # stratum of each sampled pair slot
    used: dict[str, int]
    dropped: dict[str, tuple[int, int]]


def _stratified_sample(a: ImageSet, b: ImageSet, max_per_set: int | None, rng: np.random.Generator) -> _Sample:
    sa, sb = _strata(a), _strata(b)
    keys = sorted(set(np.unique(sa).tolist()) | set(np.unique(sb).tolist()))
    na = np.array([np.sum(sa == k) for k in keys], dtype=np.int64)
    nb = np.array([np.sum(sb == k) for k in keys], dtype=np.int64)
    take = np.minimum(na, nb)
    if max_per_set is not None:
        take = _allocate(take, max_per_set)
    used, dropped = {}, {}
    pos_a, pos_b, strata = [], [], []
    for k, ka, kb, t in zip(keys, na, nb, take):
        name = _stratum_name(a, k)
        if ka == 0 or kb == 0:
            dropped[name] = (int(ka), int(kb))
            continue
        used[name] = int(t)
        pos_a.append(rng.permutation(np.flatnonzero(sa == k))[:t])
        pos_b.append(rng.permutation(np.flatnonzero(sb == k))[:t])
        strata.append(np.full(t, k, dtype=np.int64))
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
    return _Sample(cat(pos_a), cat(pos_b), cat(strata), used, dropped)


# =========================================================================== result


@dataclass(frozen=True, eq=False)
class ShiftResult(Result):
    """The outcome of :func:`dataset_test`: can a classifier tell set a from set b?

    Counts are stored, not rounded rates: ``n_correct`` of ``n_total`` held-out
    predictions were right (chance is ``n_total / 2``, the sample being balanced).

    Attributes
    ----------
    name_a, name_b
        the two sets' names.
    features, classifier
        the feature extractor and classifier used.
    n_per_set
        images used from each set (equal by construction); ``class_n`` per class.
    classes_dropped
        classes present in only one set, with their counts ``(in a, in b)``.
    duplicates
        what cross-set duplicate removal found and removed, and how.
    n_correct, n_total, accuracy, accuracy_ci
        held-out accuracy with a Clopper-Pearson interval at level ``1 - alpha``.
    auc, auc_se, auc_ci
        held-out AUC (set b is the positive class) with a DeLong standard error
        and normal interval, clipped to [0, 1].
    p_value
        permutation p-value against chance: ``(1 + #{null AUC >= observed}) /
        (1 + permutations)``, the null refitting the whole cross-validation with set
        labels shuffled within (class, fold) cells.
    null_auc, null_accuracy
        the permutation distribution (one value per permutation).
    fold_correct, fold_n
        per-fold held-out counts.
    class_correct
        held-out correct predictions per class (out of ``2 * class_n[c]``).
    top_a, top_b
        ids of the images most confidently recognised as coming from a (from b):
        the "most distinguishing images" of each set; ``top_*_scores`` are their
        held-out probabilities of the true set.
    ids, is_b, scores, folds
        per-image sample: id, set (True = b), held-out decision score, fold.
    params
        everything needed to re-run: folds, permutations, seed, C, alpha, ...
    gallery_html
        an HTML page of the most distinguishing images of each set (Torralba &
        Efros 2011, Fig. 2 style).

    ``to_dict()`` holds the counts, intervals, methods, permutation distribution and
    params; ``ShiftResult.from_dict(d)`` (the :class:`~replicate._results.Result` base,
    guided by the field types) rebuilds the result from it, without the per-image sample
    (``ids``, ``is_b``, ``scores``, ``folds``) and the gallery, which the dict leaves out.
    """

    name_a: str
    name_b: str
    features: str
    classifier: str
    n_per_set: int
    class_n: Mapping[str, int]
    classes_dropped: Mapping[str, tuple[int, int]]
    duplicates: Mapping[str, Any]
    n_correct: int
    n_total: int
    accuracy_ci: tuple[float, float]
    auc: float
    auc_se: float
    auc_ci: tuple[float, float]
    p_value: float
    permutations: int
    null_auc: np.ndarray = field(repr=False)
    null_accuracy: np.ndarray = field(repr=False)
    fold_correct: tuple[int, ...] = ()
    fold_n: tuple[int, ...] = ()
    class_correct: Mapping[str, int] = field(default_factory=dict)
    top_a: tuple[str, ...] = ()
    top_a_scores: tuple[float, ...] = ()
    top_b: tuple[str, ...] = ()
    top_b_scores: tuple[float, ...] = ()
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, str), repr=False)
    is_b: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    folds: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    alpha: float = 0.05
    params: Mapping[str, Any] = field(default_factory=dict)
    gallery_html: str = field(default="", repr=False)

    @property
    def accuracy(self) -> float:
        """Held-out accuracy, ``n_correct / n_total``."""
        return self.n_correct / self.n_total

    @property
    def chance(self) -> float:
        """Chance accuracy (0.5: the two sets contribute equally)."""
        return 0.5

    @property
    def distinguishable(self) -> bool:
        """True when the permutation test rejects chance at level ``alpha``."""
        return self.p_value < self.alpha

    def class_accuracy(self) -> dict[str, float]:
        """Held-out accuracy per class."""
        return {c: self.class_correct[c] / (2 * m) for c, m in self.class_n.items() if m}

    def summary(self) -> str:
        """A few lines of text: the verdict, accuracy, AUC, p-value, per class."""
        pct = 100 * (1 - self.alpha)
        lo, hi = self.accuracy_ci
        verdict = (
            "the sets are distinguishable" if self.distinguishable
            else "no evidence that the sets differ"
        )
        lines = [
            f"Dataset test {self.name_a!r} vs {self.name_b!r} ({self.features} features, {self.classifier}, "
            f"{self.params.get('folds')}-fold CV): {verdict} (p = {self.p_value:.4g}).",
            f"  images: {self.n_per_set} per set, {len(self.class_n)} classes"
            + (f" (not in both, not used: {', '.join(self.classes_dropped)})" if self.classes_dropped else ""),
            f"  cross-set duplicates removed: {self.duplicates.get('removed_a', 0)} from a, "
            f"{self.duplicates.get('removed_b', 0)} from b ({self.duplicates.get('near_method')})",
            f"  held-out accuracy: {self.n_correct}/{self.n_total} = {100 * self.accuracy:.2f}% "
            f"[{100 * lo:.2f}, {100 * hi:.2f}] ({pct:g}% Clopper-Pearson; chance 50%)",
            f"  AUC: {self.auc:.4f} [{self.auc_ci[0]:.4f}, {self.auc_ci[1]:.4f}] ({pct:g}% DeLong)",
            f"  permutation test: {self.permutations} refits, null AUC "
            f"{np.mean(self.null_auc):.4f} +- {np.std(self.null_auc):.4f}, p = {self.p_value:.4g}",
        ]
        if self.permutations and 1 / (self.permutations + 1) >= self.alpha:
            need = int(np.ceil(1 / self.alpha)) - 1
            lines.append(
                f"  WARNING: {self.permutations} permutations cannot give p < alpha={self.alpha:g} "
                f"(smallest attainable p is {1 / (self.permutations + 1):.3g}); use at least {need}."
            )
        if not self.params.get("solver_converged", True):
            lines.append(
                f"  WARNING: the solver stopped at max_iter={self.params.get('max_iter')} before reaching "
                f"tol={self.params.get('tol')}; raise max_iter or lower C."
            )
        if self.class_n:
            width = max(len(c) for c in self.class_n)
            lines.append("  per class (held-out accuracy):")
            for c, m in self.class_n.items():
                k = self.class_correct.get(c, 0)
                lines.append(f"    {c:<{width}}  {k:>6}/{2 * m:<6} {100 * k / (2 * m) if m else float('nan'):6.2f}%")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (counts, intervals, method, params; no per-image arrays or HTML)."""
        return {
            "name_a": self.name_a,
            "name_b": self.name_b,
            "features": self.features,
            "classifier": self.classifier,
            "n_per_set": int(self.n_per_set),
            "class_n": {k: int(v) for k, v in self.class_n.items()},
            "class_correct": {k: int(v) for k, v in self.class_correct.items()},
            "classes_dropped": {k: [int(x) for x in v] for k, v in self.classes_dropped.items()},
            "duplicates": _json_safe(dict(self.duplicates)),
            "n_correct": int(self.n_correct),
            "n_total": int(self.n_total),
            "accuracy": self.accuracy,
            "accuracy_ci": [float(x) for x in self.accuracy_ci],
            "accuracy_ci_method": "clopper-pearson (statsmodels proportion_confint, method='beta')",
            "auc": self.auc,
            "auc_se": self.auc_se,
            "auc_ci": [float(x) for x in self.auc_ci],
            "auc_ci_method": "delong (normal interval, clipped to [0, 1])",
            "alpha": self.alpha,
            "p_value": self.p_value,
            "p_value_method": "permutation of set labels within (class, fold) cells, full CV refit; statistic: AUC",
            "permutations": int(self.permutations),
            "null_auc": [float(x) for x in self.null_auc],
            "null_accuracy": [float(x) for x in self.null_accuracy],
            "fold_correct": [int(x) for x in self.fold_correct],
            "fold_n": [int(x) for x in self.fold_n],
            "top_a": list(self.top_a),
            "top_a_scores": [float(x) for x in self.top_a_scores],
            "top_b": list(self.top_b),
            "top_b_scores": [float(x) for x in self.top_b_scores],
            "distinguishable": self.distinguishable,
            "params": _json_safe(dict(self.params)),
        }

    def to_dataframe(self) -> pd.DataFrame:
        """One row per sampled image: id, set, fold, held-out score and probability of b."""
        import pandas as pd

        return pd.DataFrame(
            {
                "id": self.ids,
                "set": np.where(self.is_b, self.name_b, self.name_a),
                "fold": self.folds,
                "score": self.scores,
                "p_b": 1.0 / (1.0 + np.exp(-self.scores)),
                "correct": (self.scores > 0) == self.is_b,
            }
        )


# =========================================================================== gallery


def _gallery(title: str, rows: Sequence[tuple[str, ImageSet, Sequence[str], Sequence[float]]]) -> str:
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:3px;"
        "text-align:center;font-size:10px}img{image-rendering:pixelated}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Held-out images the classifier most confidently assigned to their own set "
        "(probability of the true set below each image).</p>",
    ]
    for heading, s, ids, probs in rows:
        parts.append(f"<h2>{html.escape(heading)}</h2><div>")
        if len(ids):
            pos = s.positions(list(ids))
            for i, p, prob in zip(ids, pos, probs):
                cls = _stratum_name(s, int(s.labels[p]))
                parts.append(
                    f"<figure><img alt='{html.escape(i)}' title='{html.escape(i)}' "
                    f"src='{png_data_uri(s.images[p][..., :3], 3)}'>"
                    f"<figcaption>{html.escape(cls)}<br>{prob:.3f}</figcaption></figure>"
                )
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


# =========================================================================== the test

@dataclass(frozen=True)
class _Settings:
    """The validated arguments of one :func:`dataset_test` call."""

    folds: int
    permutations: int
    seed: int
    top: int
    max_iter: int
    alpha: float
    max_per_set: int | None
    C: float
    tol: float


def _check_settings(folds: Any, permutations: Any, seed: Any, top: Any, max_iter: Any, alpha: Any,
                    max_per_set: Any, C: Any, tol: float) -> _Settings:
    folds = check_int("folds", folds, minimum=2)
    permutations = check_int("permutations", permutations, minimum=0)
    seed = check_int("seed", seed, minimum=0)
    top = check_int("top", top, minimum=0)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    alpha = check_fraction("alpha", alpha)
    if max_per_set is not None:
        max_per_set = check_int("max_per_set", max_per_set, minimum=folds)
    try:
        C = float(C)
    except (TypeError, ValueError):
        raise fail("C", C, "a positive number", error=TypeError) from None
    if not C > 0 or not np.isfinite(C):
        raise fail("C", C, "a positive finite number", "Larger C means weaker regularisation (default 1.0).")
    return _Settings(folds, permutations, seed, top, max_iter, alpha, max_per_set, C, tol)


def _standardised_features(a: ImageSet, b: ImageSet, sa: ImageSet, sb: ImageSet, features: FeatureSpec
                           ) -> np.ndarray:
    """The features of the sampled images of both sets, standardised over the pooled sample."""
    if isinstance(features, str) and features not in BUILTIN_FEATURES:
        # zoo features of the whole input sets: cached on disk by the sets' pixels, so
        # another seed, sample size or fold count reuses them
        xa = compute_features(a, features)[a.positions(sa.ids)]
        xb = compute_features(b, features)[b.positions(sb.ids)]
    else:
        xa = compute_features(sa, features)
        xb = compute_features(sb, features)
    x = np.concatenate([xa, xb]).astype(np.float64)
    # standardise over the pooled sample: label-free, so it cannot leak set membership
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    return (x - mu) / np.where(sd > 1e-12, sd, 1.0)


@dataclass(frozen=True)
class _HeldOut:
    """The held-out scores' accuracy, AUC and permutation test."""

    n_correct: int
    accuracy_ci: tuple[float, float]
    auc: float
    auc_se: float
    auc_ci: tuple[float, float]
    p_value: float
    null_auc: np.ndarray
    null_accuracy: np.ndarray


def _held_out(scores: np.ndarray, y: np.ndarray, is_b: np.ndarray, s: _Settings) -> _HeldOut:
    from scipy.stats import norm
    from statsmodels.stats.proportion import proportion_confint

    s0 = scores[:, 0]
    n_correct = int(((s0 > 0) == is_b).sum())
    lo, hi = proportion_confint(n_correct, is_b.size, alpha=s.alpha, method="beta")
    auc, var = delong_auc(s0, is_b)
    z = norm.ppf(1 - s.alpha / 2)
    se = float(np.sqrt(max(var, 0.0)))
    auc_ci = (max(0.0, auc - z * se), min(1.0, auc + z * se))
    if s.permutations:
        null_auc = _auc_columns(scores[:, 1:], y[:, 1:])
        null_acc = ((scores[:, 1:] > 0) == (y[:, 1:] > 0.5)).mean(axis=0)
        p_value = float((1 + np.sum(null_auc >= auc - 1e-12)) / (1 + s.permutations))
    else:
        null_auc = null_acc = np.zeros(0)
        p_value = float("nan")
    return _HeldOut(n_correct, (float(lo), float(hi)), auc, se, auc_ci, p_value, null_auc, null_acc)


def _most_typical(s0: np.ndarray, sa: ImageSet, sb: ImageSet, top: int
                  ) -> tuple[tuple[str, ...], tuple[float, ...], tuple[str, ...], tuple[float, ...]]:
    """The ``top`` images of each set the classifier scored as most typical of it, with their probabilities."""
    n = len(sa)
    prob_b = 1.0 / (1.0 + np.exp(-s0))
    order_a = np.argsort(prob_b[:n], kind="stable")[: min(top, n)]
    order_b = np.argsort(-prob_b[n:], kind="stable")[: min(top, n)]
    return (tuple(sa.ids[order_a].tolist()), tuple(float(1 - prob_b[i]) for i in order_a),
            tuple(sb.ids[order_b].tolist()), tuple(float(prob_b[n + i]) for i in order_b))


def _params(s: _Settings, a: ImageSet, b: ImageSet, dim: int, iters: list[int], seconds: Mapping[str, float]
            ) -> dict[str, Any]:
    return {
        "folds": s.folds,
        "permutations": s.permutations,
        "seed": s.seed,
        "max_per_set": s.max_per_set,
        "C": s.C,
        "alpha": s.alpha,
        "top": s.top,
        "max_iter": s.max_iter,
        "tol": s.tol,
        "n_a_input": len(a),
        "n_b_input": len(b),
        "feature_dim": dim,
        "standardise": "pooled mean/std (label-free)",
        "sampling": "equal per class, classes present in both sets",
        "fold_assignment": "stratified by class and set; each image in exactly one test fold",
        "solver": "Boehning-Lindsay quadratic bound with Nesterov acceleration, all label vectors batched",
        "solver_iterations": iters,
        "solver_converged": bool(max(iters) < s.max_iter),
        "seconds": dict(seconds),
    }


def dataset_test(
    a: ImageSet,
    b: ImageSet,
    *,
    features: FeatureSpec = "resnet20",
    folds: int = 5,
    permutations: int = 200,
    seed: int = 0,
    max_per_set: int | None = None,
    near_duplicates: NearDuplicates = "auto",
    C: float = 1.0,
    alpha: float = 0.05,
    top: int = 24,
    max_iter: int = 3000,
    tol: float = 1e-6,
) -> ShiftResult:
    """Can a classifier tell set ``a`` from set ``b``? A cross-validated dataset test.

    Parameters
    ----------
    a, b
        the two image sets (e.g. the original test set and the new one). Same
        image shape and class names.
    features
        a zoo model name (penultimate-layer features, cached; default
        ``"resnet20"``), ``"pixels"`` (8x8 area-averaged RGB), ``"colour-stats"``
        (50 colour/contrast/sharpness statistics), or a callable
        ``ImageSet -> (N, D)`` array.
    folds
        k of the k-fold cross-validation (>= 2).
    permutations
        refits under shuffled set labels for the p-value (0 skips the test).
    seed
        seeds sampling, folds and permutations: same seed, same result.
    max_per_set
        cap on the images drawn from each set (class proportions kept);
        ``None`` uses as many as the smaller set has in every shared class.
    near_duplicates
        cross-set near-duplicate detector: ``"auto"``, ``None`` or a callable
        (see :func:`remove_cross_duplicates`). Exact duplicates are always removed.
    C
        inverse L2 strength of the logistic regression (scikit-learn's ``C``).
    alpha
        1 - confidence level of the intervals, and the test's level.
    top
        how many most-distinguishing images of each set to list and show.
    max_iter, tol
        iteration limit and gradient tolerance of the logistic-regression solver
        (per fold; the tolerance bounds every coordinate of the mean-loss gradient).
    """
    _check_pair(a, b)
    features = _check_features(features)
    s = _check_settings(folds, permutations, seed, top, max_iter, alpha, max_per_set, C, tol)
    t0 = time.perf_counter()
    rng = np.random.default_rng(s.seed)
    a_clean, b_clean, dup = remove_cross_duplicates(a, b, near_duplicates)
    sample = _stratified_sample(a_clean, b_clean, s.max_per_set, rng)
    n = len(sample.pos_a)
    if n < s.folds:
        raise fail(
            "images per set after sampling",
            f"{n} (classes in both sets: {sample.used or 'none'}; only in one: {sample.dropped or 'none'})",
            f">= folds ({s.folds}) so every test fold holds images of both sets",
            "Use fewer folds, or larger sets that share classes.",
        )
    sa = a_clean.select(sample.pos_a)
    sb = b_clean.select(sample.pos_b)
    t_sample = time.perf_counter()
    x = _standardised_features(a, b, sa, sb, features)
    t_feat = time.perf_counter()
    slot_folds = _assign_folds(sample.strata, s.folds, rng)
    fold_of = np.concatenate([slot_folds, slot_folds])
    strata = np.concatenate([sample.strata, sample.strata])
    is_b = np.concatenate([np.zeros(n, bool), np.ones(n, bool)])
    cells = (strata - strata.min()) * s.folds + fold_of
    y = _permuted_labels(cells, is_b, s.permutations, rng)
    scores, iters = _cross_val_scores(x, y, fold_of, s.folds, s.C, s.max_iter, s.tol)
    t_fit = time.perf_counter()
    h = _held_out(scores, y, is_b, s)
    correct = (scores[:, 0] > 0) == is_b
    names = {k: _stratum_name(a, int(k)) for k in np.unique(sample.strata)}
    top_a, top_a_scores, top_b, top_b_scores = _most_typical(scores[:, 0], sa, sb, s.top)
    feat_name = _feature_name(features)
    gallery = _gallery(
        f"Most distinguishing images: {a.name} vs {b.name} ({feat_name} features)",
        [
            (f"most '{a.name}'-like images of {a.name}", sa, top_a, top_a_scores),
            (f"most '{b.name}'-like images of {b.name}", sb, top_b, top_b_scores),
        ],
    )
    seconds = {"sample": round(t_sample - t0, 4), "features": round(t_feat - t_sample, 4),
               "fit_and_permutations": round(t_fit - t_feat, 4)}
    return ShiftResult(
        name_a=a.name, name_b=b.name, features=feat_name, classifier=f"L2 logistic regression (C={s.C:g})",
        n_per_set=n, class_n=dict(sample.used), classes_dropped=dict(sample.dropped), duplicates=dup,
        n_correct=h.n_correct, n_total=2 * n, accuracy_ci=h.accuracy_ci, auc=h.auc, auc_se=h.auc_se,
        auc_ci=h.auc_ci, p_value=h.p_value, permutations=s.permutations, null_auc=h.null_auc,
        null_accuracy=h.null_accuracy,
        fold_correct=tuple(int(correct[fold_of == f].sum()) for f in range(s.folds)),
        fold_n=tuple(int((fold_of == f).sum()) for f in range(s.folds)),
        class_correct={names[k]: int(correct[strata == k].sum()) for k in names},
        top_a=top_a, top_a_scores=top_a_scores, top_b=top_b, top_b_scores=top_b_scores,
        ids=np.concatenate([sa.ids, sb.ids]), is_b=is_b, scores=scores[:, 0], folds=fold_of, alpha=s.alpha,
        params=_params(s, a, b, int(x.shape[1]), iters, seconds), gallery_html=gallery,
    )


def split_halves(s: ImageSet, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Two random, class-stratified halves of one set (odd class counts leave one out)."""
    seed = check_int("seed", seed, minimum=0)
    # a stream of its own, so the halves are independent of dataset_test's draws with the same seed
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    first, second = [], []
    for k in np.unique(s.labels):
        where = rng.permutation(np.flatnonzero(s.labels == k))
        h = len(where) // 2
        first.append(where[:h])
        second.append(where[h : 2 * h])
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)  # noqa: E731
    return s.select(cat(first), name=f"{s.name}[half 1]"), s.select(cat(second), name=f"{s.name}[half 2]")


def control_test(s: ImageSet, *, seed: int = 0, **kwargs: Any) -> ShiftResult:
    """The control: :func:`dataset_test` between two random halves of one set.

    Both halves come from one distribution, so the held-out accuracy must be at
    chance. ``kwargs`` go to :func:`dataset_test` unchanged (the same procedure,
    near-duplicate removal between the halves included). Run it on the *original* set: a control built from the new set (as
    ImageNetV2's published discriminator did) says nothing about whether the test
    can see the shift between the two sets.
    """
    h1, h2 = split_halves(s, seed=seed)
    return dataset_test(h1, h2, seed=seed, **kwargs)


# =========================================================================== covariate shift
