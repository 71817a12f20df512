"""The result of evaluating one model on one labelled image set.

:class:`EvalResult` is what :func:`replicate.evaluate` returns and what a published
prediction file gives (:meth:`replicate.models.PredictionSet.result`); it lives here,
apart from the evaluation code, so both import it without importing each other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from replicate._results import json_safe as _json_safe
from replicate._validation import fail

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["EvalResult", "labels_fingerprint", "make_result"]


def _readonly(a: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return None
    a = np.asarray(a)
    if a.flags.writeable:  # a private read-only copy: never freeze the caller's arrays
        a = a.copy()
        a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class EvalResult:
    """One model's predictions on one labelled image set, with the counts.

    Attributes
    ----------
    model
        the model's name (zoo name, prediction-file entry, or the user's name).
    dataset
        the dataset's name.
    dataset_fingerprint
        sha256 over the image set's ``image_fingerprint`` and its labels; for
        prediction-file models, ``"name:<bound dataset name>"`` plus the labels' hash.
    n, n_correct
        number of images and of correct top-1 predictions.
    predictions, correct, labels
        per-image predicted class (int64), correctness (bool) and true label.
    class_names
        the dataset's classes (label ``k`` is ``class_names[k]``).
    class_n, class_correct
        per-class number of images and of correct predictions (by true label).
    top5_correct
        per-image top-5 correctness where known (logits with >= 5 classes, or
        published ImageNet prediction files), else ``None``.
    logits
        ``(n, classes)`` float32 when requested (``return_logits=True``), else ``None``.
    ids
        the dataset's image ids (for joins with metadata), or ``None``.
    source
        ``"zoo"``, ``"module"``, ``"callable"`` or ``"predictions"``.
    weights_sha256
        sha256 of the weights file used (zoo models), else ``None``.
    params
        how the result was made: preprocessing, batch size, device, cache hit, time.
    flags
        warnings about this result (e.g. an implausible gap between datasets that
        suggests a mismatched prediction file); empty when none.
    """

    model: str
    dataset: str
    dataset_fingerprint: str
    n: int
    n_correct: int
    predictions: np.ndarray
    correct: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    class_n: tuple[int, ...]
    class_correct: tuple[int, ...]
    top5_correct: np.ndarray | None = None
    logits: np.ndarray | None = None
    ids: np.ndarray | None = None
    source: str = "zoo"
    weights_sha256: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("predictions", "correct", "labels", "top5_correct", "logits", "ids"):
            object.__setattr__(self, name, _readonly(getattr(self, name)))

    # ------------------------------------------------------------------ numbers

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy in [0, 1] (``n_correct / n``; NaN for an empty set)."""
        return self.n_correct / self.n if self.n else float("nan")

    @property
    def n_top5_correct(self) -> int | None:
        """Number of images whose label is among the top-5 predictions, where known."""
        return None if self.top5_correct is None else int(self.top5_correct.sum())

    @property
    def top5_accuracy(self) -> float | None:
        """Top-5 accuracy in [0, 1], where known."""
        k = self.n_top5_correct
        return None if k is None or not self.n else k / self.n

    @property
    def n_errors(self) -> int:
        """Number of wrong top-1 predictions."""
        return self.n - self.n_correct

    def class_accuracy(self) -> dict[str, float]:
        """Accuracy per true class (NaN for a class without images)."""
        return {
            c: (k / m if m else float("nan"))
            for c, m, k in zip(self.class_names, self.class_n, self.class_correct, strict=True)
        }

    # ------------------------------------------------------------------ output

    def summary(self) -> str:
        """A few lines of text: model, dataset, counts, accuracy, flags."""
        lines = [
            f"{self.model} on {self.dataset}: {self.n_correct}/{self.n} correct "
            f"({100 * self.accuracy:.2f}% top-1)"
        ]
        if self.top5_correct is not None and self.n:
            lines.append(f"  top-5: {self.n_top5_correct}/{self.n} ({100 * (self.top5_accuracy or 0):.2f}%)")
        if len(self.class_names) <= 20:
            width = max(len(c) for c in self.class_names) if self.class_names else 0
            for c, m, k in zip(self.class_names, self.class_n, self.class_correct, strict=True):
                acc = f"{100 * k / m:6.2f}%" if m else "     -"
                lines.append(f"  {c:<{width}}  {k:>6}/{m:<6} {acc}")
        src = f"  source: {self.source}"
        if self.weights_sha256:
            src += f", weights sha256 {self.weights_sha256[:12]}"
        if self.params.get("cached"):
            src += " (from cache)"
        lines.append(src)
        for flag in self.flags:
            lines.append(f"  WARNING: {flag}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"EvalResult(model={self.model!r}, dataset={self.dataset!r}, n={self.n}, "
            f"n_correct={self.n_correct}, accuracy={self.accuracy:.4f})"
        )

    def to_dict(self, per_image: bool = False) -> dict[str, Any]:
        """JSON-safe dict of the counts and provenance (per-image arrays when asked)."""
        out: dict[str, Any] = {
            "model": self.model,
            "dataset": self.dataset,
            "dataset_fingerprint": self.dataset_fingerprint,
            "n": int(self.n),
            "n_correct": int(self.n_correct),
            "accuracy": self.accuracy,
            "n_top5_correct": self.n_top5_correct,
            "class_names": list(self.class_names),
            "class_n": [int(x) for x in self.class_n],
            "class_correct": [int(x) for x in self.class_correct],
            "source": self.source,
            "weights_sha256": self.weights_sha256,
            "params": _json_safe(dict(self.params)),
            "flags": list(self.flags),
        }
        if per_image:
            out["predictions"] = self.predictions.tolist()
            out["correct"] = self.correct.tolist()
            out["labels"] = self.labels.tolist()
            if self.top5_correct is not None:
                out["top5_correct"] = self.top5_correct.tolist()
            if self.ids is not None:
                out["ids"] = self.ids.tolist()
        return out

    def to_dataframe(self) -> pd.DataFrame:
        """One row per image: id, label, prediction, correct (and top5_correct)."""
        import pandas as pd

        cols: dict[str, Any] = {}
        cols["id"] = self.ids if self.ids is not None else np.arange(self.n)
        cols["label"] = self.labels
        cols["class_name"] = np.asarray(self.class_names, dtype=object)[self.labels]
        cols["prediction"] = self.predictions
        cols["correct"] = self.correct
        if self.top5_correct is not None:
            cols["top5_correct"] = self.top5_correct
        df = pd.DataFrame(cols)
        df.attrs.update({"model": self.model, "dataset": self.dataset})
        return df

    def select(self, mask_or_positions: Any) -> EvalResult:
        """The result restricted to some images (a boolean mask or positions)."""
        idx = np.asarray(mask_or_positions)
        if idx.dtype == bool:
            if idx.shape != (self.n,):
                raise fail("mask.shape", idx.shape, f"({self.n},)")
            idx = np.flatnonzero(idx)
        return make_result(
            model=self.model,
            dataset=self.dataset,
            dataset_fingerprint=self.dataset_fingerprint + f"[select {_hash_array(idx)[:16]}]",
            predictions=self.predictions[idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            top5_correct=None if self.top5_correct is None else self.top5_correct[idx],
            logits=None if self.logits is None else self.logits[idx],
            ids=None if self.ids is None else self.ids[idx],
            source=self.source,
            weights_sha256=self.weights_sha256,
            params=dict(self.params),
            flags=self.flags,
        )


def _hash_array(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    d = hashlib.sha256(json.dumps([str(a.dtype), list(a.shape)]).encode())
    d.update(a.tobytes())
    return d.hexdigest()


def labels_fingerprint(image_fingerprint: str, labels: np.ndarray) -> str:
    """The ``dataset_fingerprint`` of a result: sha256 over pixels' fingerprint and labels."""
    d = hashlib.sha256(b"replicate-eval-dataset-v1")
    d.update(image_fingerprint.encode())
    d.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return d.hexdigest()


def make_result(
    *,
    model: str,
    dataset: str,
    dataset_fingerprint: str,
    predictions: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    top5_correct: np.ndarray | None = None,
    logits: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    source: str = "zoo",
    weights_sha256: str | None = None,
    params: Mapping[str, Any] | None = None,
    flags: tuple[str, ...] = (),
) -> EvalResult:
    """Build an :class:`EvalResult` from predictions and labels (counts computed here).

    Parameters
    ----------
    model, dataset
        the model's and the test set's names.
    dataset_fingerprint
        the test set's content fingerprint.
    predictions, labels
        the predicted and the true class of every image (int, same shape).
    class_names
        the set's class names; per-class counts have one entry per name.
    top5_correct
        whether each image's label is among the model's top 5 (``None``: not known).
    logits
        the ``(N, classes)`` logits to keep (``None``: not kept).
    ids
        the image ids in prediction order (``None``: not recorded).
    source
        where the predictions came from (``"zoo"`` by default).
    weights_sha256
        the weights file's sha256 (``None``: not known).
    params
        evaluation parameters to record (batch size, device, ...).
    flags
        notes attached to the result.

    Returns
    -------
    EvalResult
        with ``n``, ``n_correct`` and the per-class counts computed from ``predictions`` and ``labels``.
    """
    predictions = np.asarray(predictions).astype(np.int64, copy=False)
    labels = np.asarray(labels).astype(np.int64, copy=False)
    if predictions.shape != labels.shape:
        raise fail(
            "len(predictions)",
            len(predictions),
            f"{len(labels)} (one per image of {dataset!r})",
            "Found input variables with inconsistent numbers of samples: "
            f"[{len(predictions)}, {len(labels)}]",
        )
    correct = predictions == labels
    k = len(class_names)
    class_n = np.bincount(labels, minlength=k)[:k] if len(labels) else np.zeros(k, int)
    class_correct = np.bincount(labels[correct], minlength=k)[:k] if len(labels) else np.zeros(k, int)
    if top5_correct is not None:
        top5_correct = np.asarray(top5_correct, dtype=bool)
        if top5_correct.shape != labels.shape:
            raise fail("top5_correct.shape", top5_correct.shape, f"{labels.shape} (one per image)")
    return EvalResult(
        model=model,
        dataset=dataset,
        dataset_fingerprint=dataset_fingerprint,
        n=len(labels),
        n_correct=int(correct.sum()),
        predictions=predictions,
        correct=correct,
        labels=labels,
        class_names=tuple(class_names),
        class_n=tuple(int(x) for x in class_n),
        class_correct=tuple(int(x) for x in class_correct),
        top5_correct=top5_correct,
        logits=logits,
        ids=ids,
        source=source,
        weights_sha256=weights_sha256,
        params=dict(params or {}),
        flags=tuple(flags),
    )
