"""Accuracy against human labels: how much of a drop is label noise?

With repeated human votes per image (e.g. CIFAR-10H: 47-63 votes per CIFAR-10 test image,
Peterson et al. 2019), each model gets

- its accuracy against the **human majority** (plurality) label, with a binomial interval
  (:func:`~replicate.stats.accuracy_ci`); ties between classes go to the dataset label when it
  is among them, else to the lowest class index (their number is reported);
- its **expected accuracy under the human soft labels**: the mean over images of the share of
  votes for the predicted class, with a t interval (``statsmodels`` ``DescrStatsW``);
- the **share of its errors** (against the dataset labels) on images where humans disagree:
  *contested* images (the human majority is not the dataset label) and *split* images (the
  top class gets less than ``split_below`` of the votes), each with a binomial interval.

:func:`label_noise_adjusted_gap` gives the drop measured against human majorities: an
estimate when both sets carry votes, or an upper bound when only the original does (it
assumes that the new set's label errors did not raise its measured accuracy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from replicate._results import Result
from replicate._results import json_safe as _json
from replicate._validation import check_fraction, fail
from replicate.stats.intervals import AccuracyCI, GapCI, accuracy_ci, gap_ci

__all__ = ["HumanLabelAccuracy", "LabelNoiseGap", "human_label_accuracy", "human_majority",
           "label_noise_adjusted_gap", "SPLIT_BELOW"]

SPLIT_BELOW = 0.8
"""Default: an image is *split* when its most voted class has less than this share of the votes."""
UPPER_BOUND_ASSUMPTION = ("the new set has no human votes: this is an upper bound on the label-noise-adjusted gap, "
                          "assuming the new set's label errors did not raise its measured accuracy")


def _votes(arg: str, votes: Any, n: int | None = None) -> np.ndarray:
    v = np.asarray(votes)
    if v.ndim != 2 or v.shape[1] < 2:
        raise fail(arg, votes, "an (images, classes) array of vote counts per class", error=TypeError)
    if v.dtype == bool or v.dtype.kind not in "iuf" or not np.all(np.isfinite(v)) or np.any(v != np.round(v)):
        raise fail(f"{arg}.dtype", str(v.dtype), "integer vote counts per class",
                   "Pass counts (e.g. cifar10h_counts), not the probabilities.", error=TypeError)
    if np.any(v < 0):
        raise fail(arg, float(v[v < 0][0]), ">= 0 (vote counts)")
    if np.any(v.sum(axis=1) == 0):
        i = int(np.flatnonzero(v.sum(axis=1) == 0)[0])
        raise fail(f"{arg} row {i}", "no votes", "at least one vote per image")
    if n is not None and v.shape[0] != n:
        raise fail(f"len({arg})", v.shape[0], f"{n}, the number of images predicted",
                   f"Found input variables with inconsistent numbers of samples: [{n}, {v.shape[0]}].")
    return v.astype(np.int64)


def _predictions(arg: str, predictions: Any, names: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    if isinstance(predictions, Mapping):
        names = tuple(str(k) for k in predictions)
        rows = [np.asarray(v) for v in predictions.values()]
    elif isinstance(predictions, Sequence) and predictions and hasattr(predictions[0], "predictions"):
        names = tuple(str(r.model) for r in predictions)
        rows = [np.asarray(r.predictions) for r in predictions]
    else:
        arr = np.asarray(predictions)
        rows = [arr] if arr.ndim == 1 else list(arr)
    if not rows or len({r.shape for r in rows}) != 1 or rows[0].ndim != 1:
        raise fail(arg, predictions, "one 1-D vector of predicted classes per model, all of one length",
                   error=TypeError)
    mat = np.stack(rows)
    if mat.dtype == bool or mat.dtype.kind not in "iu":
        raise fail(f"{arg}.dtype", str(mat.dtype), "integer predicted classes", error=TypeError)
    if names is None:
        names = tuple(f"model{i}" for i in range(mat.shape[0]))
    names = tuple(str(x) for x in names)
    if len(names) != mat.shape[0]:
        raise fail("names", f"{len(names)} names", f"one per model ({mat.shape[0]})")
    return mat.astype(np.int64), names


def _labels(arg: str, labels: Any, n: int, classes: int) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != n:
        got = len(lab) if lab.ndim == 1 else lab.shape
        raise fail(f"len({arg})", got, f"{n}, the number of images predicted",
                   f"Found input variables with inconsistent numbers of samples: [{n}, {got}].")
    if lab.dtype == bool or lab.dtype.kind not in "iu" or np.any(lab < 0) or np.any(lab >= classes):
        raise fail(arg, labels, f"class indices in [0, {classes})")
    return lab.astype(np.int64)


def human_majority(votes: Any, labels: Any = None) -> tuple[np.ndarray, int]:
    """The most voted class per image and the number of images with a tie for the top.

    A tie goes to the dataset label when it is among the tied classes, else to the lowest index.
    """
    v = _votes("votes", votes)
    top = v.max(axis=1, keepdims=True)
    tied = v == top
    n_ties = int(np.sum(tied.sum(axis=1) > 1))
    maj = np.argmax(tied, axis=1)
    if labels is not None:
        lab = _labels("labels", labels, v.shape[0], v.shape[1])
        keep = tied[np.arange(len(lab)), lab]
        maj = np.where(keep, lab, maj)
    return maj.astype(np.int64), n_ties


@dataclass(frozen=True, eq=False)
class HumanLabelAccuracy(Result):
    """Per-model accuracy against dataset labels, human majorities and human soft labels.

    ``accuracy_labels``: against the dataset labels (``None`` without them);
    ``accuracy_majority``: against the human majority; ``soft`` / ``soft_lower`` /
    ``soft_upper``: expected accuracy under the soft labels with a t interval;
    ``errors``: errors against the dataset labels; ``errors_contested`` / ``errors_split``:
    the share of those errors on contested / split images (binomial intervals).
    """

    names: tuple[str, ...]
    n_images: int
    votes_min: int
    votes_max: int
    accuracy_labels: AccuracyCI | None
    accuracy_majority: AccuracyCI
    soft: np.ndarray
    soft_lower: np.ndarray
    soft_upper: np.ndarray
    n_contested: int
    n_split: int
    n_ties: int
    errors_contested: AccuracyCI | None
    errors_split: AccuracyCI | None
    split_below: float = SPLIT_BELOW
    alpha: float = 0.05
    soft_method: str = "t interval of the mean share of votes for the predicted class (statsmodels DescrStatsW)"

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for i, name in enumerate(self.names):
            row: dict[str, Any] = {"model": name}
            if self.accuracy_labels is not None:
                row.update(acc_labels=float(self.accuracy_labels.accuracy[i]),
                           acc_labels_lower=float(self.accuracy_labels.lower[i]),
                           acc_labels_upper=float(self.accuracy_labels.upper[i]))
            m = self.accuracy_majority
            row.update(acc_majority=float(m.accuracy[i]), acc_majority_lower=float(m.lower[i]),
                       acc_majority_upper=float(m.upper[i]), acc_soft=float(self.soft[i]),
                       acc_soft_lower=float(self.soft_lower[i]), acc_soft_upper=float(self.soft_upper[i]))
            for key, part in (("contested", self.errors_contested), ("split", self.errors_split)):
                if part is not None:
                    row["errors"] = int(part.n[i])
                    row[f"error_share_{key}"] = _json(float(part.accuracy[i]))
                    row[f"error_share_{key}_lower"] = _json(float(part.lower[i]))
                    row[f"error_share_{key}_upper"] = _json(float(part.upper[i]))
            out.append(row)
        return out

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.rows()).set_index("model")

    def summary(self) -> str:
        level = f"{100 * (1 - self.alpha):g}%"
        lines = [f"accuracy against human labels: {self.n_images} images, {self.votes_min}-{self.votes_max} votes "
                 f"each; {self.n_contested} contested (human majority != label), {self.n_split} split (top class "
                 f"< {self.split_below:g} of the votes), {self.n_ties} ties; {level} intervals"]
        width = max([5] + [len(n) for n in self.names])
        lines.append(f"  {'model':<{width}}  {'labels %':>8}  {'majority %':>10}  {'soft %':>7}  "
                     f"{'errors':>6}  {'on contested %':>14}  {'on split %':>10}")
        for r in self.rows():
            lab = "" if "acc_labels" not in r else f"{100 * r['acc_labels']:.2f}"
            ec = r.get("error_share_contested")
            es = r.get("error_share_split")
            lines.append(f"  {r['model']:<{width}}  {lab:>8}  {100 * r['acc_majority']:10.2f}  {100 * r['acc_soft']:7.2f}  "
                         f"{r.get('errors', ''):>6}  {'' if ec is None else f'{100 * ec:.1f}':>14}  "
                         f"{'' if es is None else f'{100 * es:.1f}':>10}")
        return "\n".join(lines)


def human_label_accuracy(
    predictions: Any,
    human_votes: Any,
    labels: Any = None,
    *,
    names: Sequence[str] | None = None,
    split_below: float = SPLIT_BELOW,
    alpha: float = 0.05,
    interval: str = "clopper-pearson",
) -> HumanLabelAccuracy:
    """Accuracy of each model against human majorities and soft labels, and where its errors fall.

    Parameters
    ----------
    predictions
        predicted classes: ``(models, images)`` array, a mapping model -> predictions, or
        evaluation results with ``.model`` and ``.predictions``.
    human_votes
        ``(images, classes)`` vote counts per class (e.g. CIFAR-10H's ``cifar10h_counts``).
    labels
        the dataset labels (default: the evaluation results' ``.labels``); without them
        only the human-label accuracies are given.
    split_below
        an image is *split* when its top class has less than this share of the votes.
    names
        the models' names (``None``: from the predictions' keys or results, else ``model0``, ...); one per model.
    alpha, interval
        1 - the confidence level; the binomial interval method (``"clopper-pearson"`` by default).
    """
    from statsmodels.stats.weightstats import DescrStatsW

    split_below = check_fraction("split_below", split_below)
    if labels is None and isinstance(predictions, Sequence) and predictions and hasattr(predictions[0], "labels"):
        labels = predictions[0].labels
    pred, names = _predictions("predictions", predictions, names)
    votes = _votes("human_votes", human_votes, pred.shape[1])
    classes = votes.shape[1]
    if np.any(pred < 0) or np.any(pred >= classes):
        raise fail("predictions", int(pred[(pred < 0) | (pred >= classes)][0]),
                   f"class indices in [0, {classes}), the classes of human_votes")
    lab = None if labels is None else _labels("labels", labels, pred.shape[1], classes)
    maj, n_ties = human_majority(votes, lab)
    total = votes.sum(axis=1)
    share = votes / total[:, None]
    n = pred.shape[1]
    m = pred.shape[0]
    acc_maj = accuracy_ci((pred == maj).sum(axis=1), n, alpha=alpha, method=interval, names=names)  # type: ignore[arg-type]
    soft_per = np.take_along_axis(share, pred.T, axis=1).T  # models x images
    soft = soft_per.mean(axis=1)
    lo = np.empty(m)
    hi = np.empty(m)
    for i in range(m):
        lo[i], hi[i] = DescrStatsW(soft_per[i]).tconfint_mean(alpha=alpha)
    split = share.max(axis=1) < split_below
    acc_lab = ec = es = None
    n_contested = 0
    if lab is not None:
        acc_lab = accuracy_ci((pred == lab).sum(axis=1), n, alpha=alpha, method=interval, names=names)  # type: ignore[arg-type]
        contested = maj != lab
        n_contested = int(contested.sum())
        err = pred != lab
        n_err = err.sum(axis=1)
        safe = np.maximum(n_err, 1)
        ec = accuracy_ci((err & contested).sum(axis=1), safe, alpha=alpha, method=interval, names=names)  # type: ignore[arg-type]
        es = accuracy_ci((err & split).sum(axis=1), safe, alpha=alpha, method=interval, names=names)  # type: ignore[arg-type]
        if np.any(n_err == 0):
            ec, es = (_no_errors(x, n_err) for x in (ec, es))
    for a in (soft, lo, hi):
        a.flags.writeable = False
    return HumanLabelAccuracy(names, n, int(total.min()), int(total.max()), acc_lab, acc_maj, soft, lo, hi,
                              n_contested, int(split.sum()), n_ties, ec, es, split_below, alpha)


def _no_errors(part: AccuracyCI, n_err: np.ndarray) -> AccuracyCI:
    """Shares of errors are undefined (NaN) for a model without errors."""
    bad = n_err == 0
    vals = {k: np.where(bad, np.nan, getattr(part, k)) for k in ("accuracy", "lower", "upper")}
    return AccuracyCI(part.correct, np.where(bad, 0, part.n), vals["accuracy"], vals["lower"], vals["upper"],
                      part.method, part.alpha, part.names)


@dataclass(frozen=True, eq=False)
class LabelNoiseGap(Result):
    """The drop measured against human majorities (``adjusted``) next to the observed drop.

    ``kind`` is ``"estimate"`` when both sets carry human votes, ``"upper bound"`` when only
    the original does (``assumption`` says what the bound assumes).
    """

    names: tuple[str, ...]
    kind: str
    observed: GapCI
    adjusted: GapCI
    assumption: str = ""

    def summary(self) -> str:
        lines = [f"label-noise-adjusted gap ({self.kind}; human majority labels"
                 f"{' on both sets' if self.kind == 'estimate' else ' on the original'})"]
        if self.assumption:
            lines.append(f"  {self.assumption}")
        width = max([5] + [len(n) for n in self.names])
        lines.append(f"  {'model':<{width}}  {'observed pp':>11}  {'adjusted pp':>11}  {'interval':>18}")
        for i, name in enumerate(self.names):
            lines.append(f"  {name:<{width}}  {100 * self.observed.gap[i]:11.2f}  {100 * self.adjusted.gap[i]:11.2f}  "
                         f"[{100 * self.adjusted.lower[i]:6.2f}, {100 * self.adjusted.upper[i]:6.2f}]")
        return "\n".join(lines)


def label_noise_adjusted_gap(
    predictions_original: Any,
    votes_original: Any,
    labels_original: Any,
    predictions_new: Any,
    labels_new: Any,
    votes_new: Any = None,
    *,
    names: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> LabelNoiseGap:
    """The gap against human majority labels: an estimate (votes on both sets) or an upper bound.

    Without ``votes_new`` the adjusted gap is ``acc_orig(human majority) - acc_new(labels)``:
    an upper bound on the label-noise-adjusted gap when the new set's label errors did not
    raise its measured accuracy (they usually lower it: a model that predicts the true class
    of a mislabelled image is scored wrong).

    Parameters
    ----------
    predictions_original, predictions_new
        the models' predicted classes on each set (models x images, a mapping model -> predictions,
        or EvalResults).
    votes_original, votes_new
        vote counts per image and class on each set (without ``votes_new``: the upper bound).
    labels_original, labels_new
        the sets' labels.
    names
        the models' names where the predictions are arrays.
    alpha
        one minus the level of the intervals.
    """
    po, names_o = _predictions("predictions_original", predictions_original, names)
    pn, names_n = _predictions("predictions_new", predictions_new, names)
    if names_o != names_n:
        if sorted(names_o) != sorted(names_n):
            raise fail("predictions_new models", list(names_n)[:5], f"the models of predictions_original "
                       f"({list(names_o)[:5]})")
        pn = pn[[names_n.index(x) for x in names_o]]
    vo = _votes("votes_original", votes_original, po.shape[1])
    lab_o = _labels("labels_original", labels_original, po.shape[1], vo.shape[1])
    lab_n = _labels("labels_new", labels_new, pn.shape[1], vo.shape[1])
    maj_o, _ = human_majority(vo, lab_o)
    c_o, n_o = (po == lab_o).sum(axis=1), po.shape[1]
    c_n, n_n = (pn == lab_n).sum(axis=1), pn.shape[1]
    observed = gap_ci(c_o, n_o, c_n, n_n, alpha=alpha, names=names_o)
    h_o = (po == maj_o).sum(axis=1)
    if votes_new is not None:
        vn = _votes("votes_new", votes_new, pn.shape[1])
        maj_n, _ = human_majority(vn, lab_n)
        adjusted = gap_ci(h_o, n_o, (pn == maj_n).sum(axis=1), n_n, alpha=alpha, names=names_o)
        return LabelNoiseGap(names_o, "estimate", observed, adjusted)
    adjusted = gap_ci(h_o, n_o, c_n, n_n, alpha=alpha, names=names_o)
    return LabelNoiseGap(names_o, "upper bound", observed, adjusted, UPPER_BOUND_ASSUMPTION)
