"""Published prediction files: models known by their predictions on the sets they were run on.

The CIFAR-10.1 release (Recht et al. 2018) publishes the predicted labels of 30 models
on CIFAR-10 test and CIFAR-10.1 v4/v6; the ImageNetV2 release (Recht et al. 2019) the
top-1 labels and top-5 correctness of 67 models on ImageNet validation and the three
ImageNetV2 sets. :func:`load_predictions` reads either layout (or any file in one of
them) into a :class:`PredictionSet` whose :meth:`PredictionSet.result` returns the
same :class:`~replicate.models.results.EvalResult` a network evaluation gives, so statistics
and reports treat both alike. Every published model is also a zoo entry
(``"cifar10.1/<model>"``, ``"imagenetv2/<model>"``) that ``evaluate`` accepts with an
image set it can be bound to (by pixel fingerprint, or by its exact label sequence).

Releases are not always consistent: :meth:`PredictionSet.check_alignment` fits the
trend between two sets across all models (robust Theil-Sen line in probit space, as
the accuracy-on-the-line plots of both papers) and flags models far off it -- in the
ImageNetV2 release ``fv_16k`` scores 28.33% on validation but 2.47% on
MatchedFrequency, a mismatched file. Flagged results carry the reason in ``flags``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from replicate._validation import check_choice, closest, fail
from replicate.models._registry import ModelCard, Preprocessing, register_model
from replicate.models.results import EvalResult, labels_fingerprint, make_result

if TYPE_CHECKING:  # pragma: no cover
    from replicate.imageset import ImageSet

__all__ = [
    "PredictionSet",
    "BoundDataset",
    "AlignmentReport",
    "load_predictions",
    "published_predictions",
    "CIFAR10_1_MODELS",
    "IMAGENETV2_MODELS",
]

CIFAR10_TEST_IMAGE_FINGERPRINT = "fa448c96b365990c91697b260f62dd4c32fbca0b94c273a40475796a0a01591b"
"""``ImageSet.image_fingerprint`` of the CIFAR-10 test set in ../shared (original order)."""
CIFAR10_TEST_LABELS_SHA256 = "cbb7365de8ed11f05cc4c3a1e7f78144127c5e851efd83762fb18202461230bb"
"""sha256 of the 10,000 CIFAR-10 test labels (int64, little endian, original order)."""

CIFAR10_1_SHA256 = "9ff174668f9e9678943ec31d1b40a188c380d38422a3411aee9b5a793f93df97"
IMAGENETV2_SHA256 = "857647f1d1e2085b4dcfb6364b71875e4b5adfe49a9873624f8e297b6643b77c"
CIFAR10_1_FILES = ("labels_and_model_predictions.npz", "cifar10_1_predictions.npz")
IMAGENETV2_FILES = ("predictions.npz", "imagenetv2_predictions.npz")

CIFAR10_1_MODELS = (
    "alexnet_tf_ben", "cudaconvnet", "darc", "densenet_BC_100_12", "nas",
    "pyramidnet_basic_110_270", "pyramidnet_basic_110_84", "random_features_256k_aug",
    "random_features_256k_no_aug", "random_features_32k_aug", "random_features_32k_no_aug",
    "resnet_basic_110", "resnet_basic_32", "resnet_basic_44", "resnet_basic_56",
    "resnet_preact_basic_110", "resnet_preact_bottleneck_164", "resnetv2_tf", "resnext_29_4x64d",
    "resnext_29_8x64d", "shake_drop", "shake_shake_26_2x32d_SSI", "shake_shake_26_2x64d_SSI_cutout16",
    "shake_shake_26_2x64d_SSI", "shake_shake_26_2x96d_SSI", "vgg16_keras", "vgg_15_BN_64",
    "wide_resnet_tf", "wrn_28_10_cutout16", "wrn_28_10",
)  # fmt: skip

IMAGENETV2_MODELS = (
    "alexnet", "bninception", "cafferesnet101", "densenet121", "densenet161", "densenet169",
    "densenet201", "dpn107", "dpn131", "dpn68", "dpn68b", "dpn92", "dpn98", "fbresnet152", "fv_16k",
    "fv_4k", "fv_64k", "inception_resnet_v2_tf", "inception_v1_tf", "inception_v2_tf", "inception_v3",
    "inception_v3_tf", "inception_v4_tf", "inceptionresnetv2", "inceptionv3", "inceptionv4",
    "mobilenet_v1_tf", "nasnet_large_tf", "nasnet_mobile_tf", "nasnetalarge", "nasnetamobile",
    "pnasnet5large", "pnasnet_large_tf", "pnasnet_mobile_tf", "polynet", "resnet101", "resnet152",
    "resnet18", "resnet34", "resnet50", "resnet_v1_101_tf", "resnet_v1_152_tf", "resnet_v1_50_tf",
    "resnet_v2_101_tf", "resnet_v2_152_tf", "resnet_v2_50_tf", "resnext101_32x4d", "resnext101_64x4d",
    "se_resnet101", "se_resnet152", "se_resnet50", "se_resnext101_32x4d", "se_resnext50_32x4d",
    "senet154", "squeezenet1_0", "squeezenet1_1", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16",
    "vgg16_bn", "vgg19", "vgg19_bn", "vgg_16_tf", "vgg_19_tf", "xception",
)  # fmt: skip

# Canonical dataset names and the keys each release uses for them.
_CIFAR_KEYS = {"cifar10-test": "original", "cifar10.1-v4": "v4", "cifar10.1-v6": "v6"}
_IMAGENET_KEYS = {
    "imagenet-val": "imagenet-validation-original",
    "imagenetv2-matched-frequency": "imagenetv2-b-33",
    "imagenetv2-threshold0.7": "imagenetv2-a-44",
    "imagenetv2-top-images": "imagenetv2-c-12",
}
_CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

# A model is flagged when its accuracy on a set lies this far (probit units) from the
# trend of the other models, or this many robust standard deviations, whichever is larger.
FLAG_MIN_PROBIT = 0.25
FLAG_ROBUST_SD = 6.0


def _labels_sha(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest()


@dataclass(frozen=True, eq=False)
class BoundDataset:
    """A set that a prediction file was computed on: its name, size, labels, identity."""

    name: str
    key: str
    n: int
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    image_fingerprints: tuple[str, ...] = ()
    labels_sha256: str | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlignmentRow:
    """One model's accuracies on the reference and another set, and the trend's expectation."""

    model: str
    accuracy_reference: float
    accuracy: float
    expected: float
    residual_probit: float
    flagged: bool


@dataclass(frozen=True)
class AlignmentReport:
    """Do the models of a prediction file line up between two sets?

    ``missing`` lists models present on one set only; ``rows`` hold each shared
    model's accuracies and its distance (probit units) from the robust trend fitted
    across all shared models; ``flagged`` models are implausibly far from it.
    """

    reference: str
    dataset: str
    rows: tuple[AlignmentRow, ...]
    missing_on_dataset: tuple[str, ...]
    missing_on_reference: tuple[str, ...]
    slope: float
    intercept: float
    threshold_probit: float
    method: str = "Theil-Sen line of probit(accuracy), scipy.stats.theilslopes"

    @property
    def flagged(self) -> tuple[str, ...]:
        """Models whose accuracy is implausibly far from the trend."""
        return tuple(r.model for r in self.rows if r.flagged)

    def reason(self, model: str) -> str | None:
        """The flag text for ``model``, or None when it lines up."""
        for r in self.rows:
            if r.model == model and r.flagged:
                return (
                    f"implausible gap: {model} scores {100 * r.accuracy:.2f}% on {self.dataset} vs "
                    f"{100 * r.accuracy_reference:.2f}% on {self.reference}, where the trend of the "
                    f"other models predicts {100 * r.expected:.2f}% (probit residual "
                    f"{r.residual_probit:+.2f}); the prediction file is probably mismatched"
                )
        return None

    def summary(self) -> str:
        """Text: the fit, flagged models and name mismatches."""
        lines = [
            f"alignment of {self.dataset} against {self.reference}: {len(self.rows)} shared models, "
            f"trend probit(new) = {self.slope:.3f} * probit(ref) {self.intercept:+.3f}, "
            f"flag beyond {self.threshold_probit:.2f} probit"
        ]
        for m in self.flagged:
            lines.append(f"  FLAGGED {self.reason(m)}")
        if self.missing_on_dataset:
            lines.append(f"  only on {self.reference}: {', '.join(self.missing_on_dataset)}")
        if self.missing_on_reference:
            lines.append(f"  only on {self.dataset}: {', '.join(self.missing_on_reference)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "reference": self.reference,
            "dataset": self.dataset,
            "slope": self.slope,
            "intercept": self.intercept,
            "threshold_probit": self.threshold_probit,
            "method": self.method,
            "flagged": list(self.flagged),
            "missing_on_dataset": list(self.missing_on_dataset),
            "missing_on_reference": list(self.missing_on_reference),
            "rows": [r.__dict__ for r in self.rows],
        }


@dataclass(eq=False)
class PredictionSet:
    """Predictions of several models on several sets, read from a published file.

    ``datasets`` maps each canonical set name to its :class:`BoundDataset`;
    ``reference`` is the original test set (the first one) against which the others
    are checked for alignment.
    """

    name: str
    path: str | None
    sha256: str | None
    datasets: dict[str, BoundDataset]
    reference: str
    _models: dict[str, np.ndarray] = field(repr=False)
    _top1: dict[str, np.ndarray] = field(repr=False)
    _top5: dict[str, np.ndarray | None] = field(repr=False)
    _alignment: dict[str, AlignmentReport] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ lookup

    @property
    def models(self) -> list[str]:
        """Every model name, in the reference set's order, then those only elsewhere."""
        out: list[str] = []
        for ds in [self.reference, *self.datasets]:
            out += [str(m) for m in self._models[ds] if str(m) not in out]
        return out

    def models_on(self, dataset: str) -> list[str]:
        """The models with predictions on ``dataset``."""
        return [str(m) for m in self._models[self.dataset_name(dataset)]]

    def dataset_name(self, dataset: str) -> str:
        """The canonical name of a set given by name, file key or alias."""
        for name, b in self.datasets.items():
            if dataset == name or dataset == b.key or dataset in b.aliases:
                return name
        options = [*self.datasets, *(b.key for b in self.datasets.values())]
        check_choice("dataset", dataset, list(dict.fromkeys(options)))
        raise AssertionError("unreachable")  # pragma: no cover

    def bind(self, imageset: ImageSet) -> str:
        """The set an :class:`ImageSet` is (same pixels, or the same label sequence)."""
        for name, b in self.datasets.items():
            if len(imageset) == b.n and imageset.image_fingerprint in b.image_fingerprints:
                return name
        lab = _labels_sha(imageset.labels)
        for name, b in self.datasets.items():
            if len(imageset) == b.n and b.labels_sha256 == lab:
                return name
        sizes = ", ".join(f"{k} ({b.n} images)" for k, b in self.datasets.items())
        raise fail(
            "dataset",
            f"{imageset.name!r} ({len(imageset)} images)",
            f"one of the sets {self.name} predictions were computed on: {sizes}",
            "A set is recognised by its pixels or its exact label sequence; to use other labels pass "
            "the set's name and labels=... explicitly.",
        )

    def _index(self, model: str, dataset: str) -> int:
        names = [str(m) for m in self._models[dataset]]
        if model in names:
            return names.index(model)
        near = closest(model, names)
        where = [d for d in self.datasets if model in [str(m) for m in self._models[d]]]
        hint = f"It has predictions on {', '.join(where)} only." if where else ""
        if near:
            hint = (hint + " " if hint else "") + f"Did you mean {', '.join(repr(x) for x in near)}?"
        raise fail(
            "model",
            model,
            f"one of the {len(names)} models with predictions on {dataset!r}",
            hint or None,
            error=KeyError,
        )

    def _labels_for(self, dataset: str, labels: Any) -> tuple[np.ndarray, str]:
        from replicate.imageset import ImageSet

        b = self.datasets[dataset]
        if isinstance(labels, ImageSet):
            ds = labels
            if len(ds) != b.n:
                raise fail(
                    f"len({ds.name!r})",
                    len(ds),
                    f"{b.n}, the number of images predicted in {dataset!r}",
                    "Found input variables with inconsistent numbers of samples: "
                    f"[{b.n}, {len(ds)}]. The prediction file belongs to another set.",
                )
            _check_classes(f"labels of {ds.name!r}", ds.labels, len(b.class_names))
            return ds.labels.astype(np.int64), labels_fingerprint(ds.image_fingerprint, ds.labels)
        if labels is None:
            labels = b.labels
            if labels is None:
                labels = _packaged_cifar10_test_labels() if dataset == "cifar10-test" else None
            if labels is None:
                raise fail(
                    "labels",
                    None,
                    f"the {b.n} labels of {dataset!r} (the file has none)",
                    "Pass labels=... (an array or the ImageSet).",
                )
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != b.n:
            raise fail(
                "len(labels)",
                len(labels) if labels.ndim else labels.shape,
                f"{b.n}, the number of images predicted in {dataset!r}",
                "Found input variables with inconsistent numbers of samples: "
                f"[{b.n}, {len(labels) if labels.ndim else 0}].",
            )
        labels = labels.astype(np.int64)
        _check_classes("labels", labels, len(b.class_names))
        return labels, labels_fingerprint(f"name:{self.name}/{dataset}", labels)

    # ------------------------------------------------------------------ results

    def result(
        self,
        model: str,
        dataset: str | ImageSet,
        labels: Any = None,
        *,
        check: bool = True,
    ) -> EvalResult:
        """The :class:`~replicate.models.results.EvalResult` of ``model`` on ``dataset``.

        ``dataset`` is a set's name (see :attr:`datasets`) or an image set it can be
        bound to (whose labels are then used). ``labels`` overrides the file's labels
        (an array or an ImageSet of the same length). With ``check``, a model whose
        accuracy is implausible next to the other models is flagged in ``flags``.
        """
        from replicate.imageset import ImageSet

        if isinstance(dataset, ImageSet):
            labels = dataset if labels is None else labels
            dataset = self.bind(dataset)
        ds = self.dataset_name(dataset)
        i = self._index(model, ds)
        y, fp = self._labels_for(ds, labels)
        b = self.datasets[ds]
        top5 = self._top5[ds]
        flags: list[str] = []
        if check and ds != self.reference:
            rep = self.check_alignment(ds)
            reason = rep.reason(model)
            if reason:
                flags.append(reason)
        if top5 is not None:
            both = int(np.sum((self._top1[ds][i] == y) & ~top5[i]))
            if both:
                flags.append(
                    f"inconsistent prediction file: {both} images are correct at top-1 but not at top-5"
                )
        ids = labels.ids if isinstance(labels, ImageSet) else None
        if ids is None:
            ids = np.char.add(f"{ds}/", np.char.zfill(np.arange(b.n).astype(str), 6))
        return make_result(
            model=model,
            dataset=ds,
            dataset_fingerprint=fp,
            predictions=self._top1[ds][i],
            labels=y,
            class_names=b.class_names,
            top5_correct=None if top5 is None else top5[i],
            ids=ids,
            source="predictions",
            params={
                "prediction_file": self.path,
                "prediction_file_sha256": self.sha256,
                "release": self.name,
                "dataset_key": b.key,
            },
            flags=tuple(flags),
        )

    def results(self, dataset: str | ImageSet, labels: Any = None, *, check: bool = True) -> list[EvalResult]:
        """Results of every model with predictions on ``dataset`` (file order)."""
        from replicate.imageset import ImageSet

        if isinstance(dataset, ImageSet):
            labels = dataset if labels is None else labels
            dataset = self.bind(dataset)
        ds = self.dataset_name(dataset)
        return [self.result(m, ds, labels, check=check) for m in self.models_on(ds)]

    def accuracies(self, dataset: str, labels: Any = None) -> dict[str, float]:
        """Top-1 accuracy in [0, 1] of each model on ``dataset``."""
        ds = self.dataset_name(dataset)
        y, _ = self._labels_for(ds, labels)
        return {str(m): float(np.mean(self._top1[ds][i] == y)) for i, m in enumerate(self._models[ds])}

    # ------------------------------------------------------------------ checks

    def check_alignment(self, dataset: str, reference: str | None = None) -> AlignmentReport:
        """Check that models line up between ``reference`` and ``dataset`` and flag implausible gaps."""
        from scipy import stats

        ds = self.dataset_name(dataset)
        ref = self.dataset_name(reference) if reference else self.reference
        cache_key = f"{ref}->{ds}"
        if cache_key in self._alignment:
            return self._alignment[cache_key]
        acc_ref = self.accuracies(ref)
        acc_new = self.accuracies(ds)
        shared = [m for m in acc_ref if m in acc_new]
        n_ref, n_new = self.datasets[ref].n, self.datasets[ds].n

        def probit(p: np.ndarray, n: int) -> np.ndarray:
            return stats.norm.ppf(np.clip(p, 0.5 / n, 1 - 0.5 / n))

        x = probit(np.array([acc_ref[m] for m in shared]), n_ref)
        y = probit(np.array([acc_new[m] for m in shared]), n_new)
        rows: list[AlignmentRow] = []
        slope = intercept = float("nan")
        threshold = FLAG_MIN_PROBIT
        if len(shared) >= 3:
            slope, intercept, _lo, _hi = stats.theilslopes(y, x)
            resid = y - (slope * x + intercept)
            robust_sd = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
            threshold = max(FLAG_MIN_PROBIT, FLAG_ROBUST_SD * robust_sd)
            for m, xi, r in zip(shared, x, resid, strict=True):
                rows.append(
                    AlignmentRow(
                        model=m,
                        accuracy_reference=acc_ref[m],
                        accuracy=acc_new[m],
                        expected=float(stats.norm.cdf(slope * xi + intercept)),
                        residual_probit=float(r),
                        flagged=bool(abs(r) > threshold),
                    )
                )
        rep = AlignmentReport(
            reference=ref,
            dataset=ds,
            rows=tuple(rows),
            missing_on_dataset=tuple(m for m in acc_ref if m not in acc_new),
            missing_on_reference=tuple(m for m in acc_new if m not in acc_ref),
            slope=float(slope),
            intercept=float(intercept),
            threshold_probit=float(threshold),
        )
        self._alignment[cache_key] = rep
        return rep

    def summary(self) -> str:
        """The sets, model counts and alignment flags."""
        lines = [f"{self.name} predictions ({self.path}): {len(self.models)} models"]
        for name, b in self.datasets.items():
            lines.append(f"  {name} ({b.key}): {b.n} images, {len(self._models[name])} models")
        for name in self.datasets:
            if name != self.reference:
                rep = self.check_alignment(name)
                if rep.flagged or rep.missing_on_dataset or rep.missing_on_reference:
                    lines.append(rep.summary())
        return "\n".join(lines)


# --------------------------------------------------------------------------- loading


def _packaged_cifar10_test_labels() -> np.ndarray | None:
    from replicate.models._weights import PACKAGE_DATA

    path = PACKAGE_DATA / "demo" / "cifar10_test_labels.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        labels = z["labels"].astype(np.int64)
    return labels if _labels_sha(labels) == CIFAR10_TEST_LABELS_SHA256 else None


def load_predictions(
    path: str | os.PathLike[str],
    *,
    labels: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> PredictionSet:
    """Read a prediction file in the CIFAR-10.1 or ImageNetV2 release layout.

    CIFAR-10.1 layout: ``model_names``, ``pred_<set>`` (models x images) and
    ``labels_<set>`` (``pred_original`` has no labels in the file: the CIFAR-10 test
    labels shipped with replicate are used, or pass ``labels={"cifar10-test": y}``).
    ImageNetV2 layout: per set ``models__<set>``, ``top1__<set>``, ``labels__<set>``
    and optionally ``top5_correct__<set>``. Set names are made canonical
    (``cifar10-test``, ``cifar10.1-v4``, ``imagenet-val``,
    ``imagenetv2-matched-frequency``, ...); the file's keys work as aliases.
    """
    from replicate.models._weights import file_sha256

    p = Path(path)
    if not p.is_file():
        raise fail("path", str(path), "an existing prediction file (.npz)", error=FileNotFoundError)
    sha = file_sha256(p)
    import zipfile

    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError, TypeError) as exc:
        raise ValueError(
            f"path == {str(p)!r}; must be a readable prediction file (.npz) ({type(exc).__name__}: {exc})."
        ) from exc
    extra = dict(labels or {})
    if "model_names" in arrays:
        ps = _cifar_layout(arrays, extra, name or "cifar10.1")
    elif any(k.startswith("top1__") for k in arrays):
        ps = _imagenet_layout(arrays, extra, name or "imagenetv2")
    else:
        raise fail(
            "prediction file",
            f"{p.name} with keys {sorted(arrays)[:8]}",
            "the CIFAR-10.1 layout (model_names, pred_<set>) or the ImageNetV2 layout "
            "(models__<set>, top1__<set>, labels__<set>)",
        )
    ps.path, ps.sha256 = str(p), sha
    return ps


def _check_classes(what: str, values: np.ndarray, n_classes: int) -> None:
    """Every value is a class index in [0, n_classes) (a published file with others is corrupt)."""
    if values.size == 0:
        return
    bad = (values < 0) | (values >= n_classes)
    if bad.any():
        first = np.flatnonzero(bad.reshape(-1))[:3]
        raise fail(
            what,
            f"{int(bad.sum())} values outside [0, {n_classes}), e.g. {values.reshape(-1)[first].tolist()}",
            f"class indices in [0, {n_classes})",
            "The file is corrupt or belongs to a set with other classes.",
        )


def _check_lengths(set_name: str, models: np.ndarray, top1: np.ndarray, labels: np.ndarray | None) -> None:
    if top1.ndim != 2 or top1.shape[0] != len(models):
        raise fail(
            f"predictions of {set_name!r}",
            f"shape {top1.shape}",
            f"(models={len(models)}, images)",
            "The file's model list and prediction rows disagree.",
        )
    if labels is not None and len(labels) != top1.shape[1]:
        raise fail(
            f"len(labels) of {set_name!r}",
            len(labels),
            f"{top1.shape[1]}, the number of images predicted",
            f"Found input variables with inconsistent numbers of samples: [{top1.shape[1]}, {len(labels)}].",
        )


def _cifar_layout(arrays: dict[str, np.ndarray], extra: dict[str, Any], name: str) -> PredictionSet:
    models = arrays["model_names"].astype(str)
    keys = [k[len("pred_") :] for k in arrays if k.startswith("pred_")]
    canon = {v: k for k, v in _CIFAR_KEYS.items()}
    datasets: dict[str, BoundDataset] = {}
    top1: dict[str, np.ndarray] = {}
    for key in sorted(keys, key=lambda k: (k != "original", k)):
        ds = canon.get(key, key)
        pred = arrays[f"pred_{key}"].astype(np.int64)
        lab = extra.get(ds, extra.get(key, arrays.get(f"labels_{key}")))
        lab = None if lab is None else np.asarray(lab).astype(np.int64)
        _check_lengths(ds, models, pred, lab)
        _check_classes(f"predictions of {ds!r}", pred, len(_CIFAR10_CLASSES))
        if lab is not None:
            _check_classes(f"labels of {ds!r}", lab, len(_CIFAR10_CLASSES))
        fps = (CIFAR10_TEST_IMAGE_FINGERPRINT,) if ds == "cifar10-test" else ()
        lab_sha = _labels_sha(lab) if lab is not None else (CIFAR10_TEST_LABELS_SHA256 if ds == "cifar10-test" else None)
        datasets[ds] = BoundDataset(ds, key, pred.shape[1], lab, _CIFAR10_CLASSES, fps, lab_sha, (key,))
        top1[ds] = pred
    ref = "cifar10-test" if "cifar10-test" in datasets else next(iter(datasets))
    return PredictionSet(name, None, None, datasets, ref, {d: models for d in datasets}, top1, dict.fromkeys(datasets))


def _imagenet_layout(arrays: dict[str, np.ndarray], extra: dict[str, Any], name: str) -> PredictionSet:
    keys = [k[len("top1__") :] for k in arrays if k.startswith("top1__")]
    canon = {v: k for k, v in _IMAGENET_KEYS.items()}
    class_names = tuple(arrays["class_names"].astype(str)) if "class_names" in arrays else None
    datasets: dict[str, BoundDataset] = {}
    models: dict[str, np.ndarray] = {}
    top1: dict[str, np.ndarray] = {}
    top5: dict[str, np.ndarray | None] = {}
    order = list(_IMAGENET_KEYS.values())
    for key in sorted(keys, key=lambda k: (order.index(k) if k in order else len(order), k)):
        ds = canon.get(key, key)
        if f"models__{key}" not in arrays:
            raise fail("prediction file", f"no models__{key}", "a model list for every top1__<set>")
        m = arrays[f"models__{key}"].astype(str)
        pred = arrays[f"top1__{key}"].astype(np.int64)
        lab = extra.get(ds, extra.get(key, arrays.get(f"labels__{key}")))
        lab = None if lab is None else np.asarray(lab).astype(np.int64)
        _check_lengths(ds, m, pred, lab)
        t5 = arrays.get(f"top5_correct__{key}")
        if t5 is not None and t5.shape != pred.shape:
            raise fail(f"top5_correct of {ds!r}", f"shape {t5.shape}", f"{pred.shape}, as top1")
        k = len(class_names) if class_names else max(int(pred.max(initial=0)), int(lab.max(initial=0)) if lab is not None else 0) + 1
        _check_classes(f"predictions of {ds!r}", pred, k)
        if lab is not None:
            _check_classes(f"labels of {ds!r}", lab, k)
        cn = class_names or tuple(str(i) for i in range(k))
        lab_sha = _labels_sha(lab) if lab is not None else None
        datasets[ds] = BoundDataset(ds, key, pred.shape[1], lab, cn, (), lab_sha, (key,))
        models[ds], top1[ds], top5[ds] = m, pred, None if t5 is None else t5.astype(bool)
    ref = "imagenet-val" if "imagenet-val" in datasets else next(iter(datasets))
    return PredictionSet(name, None, None, datasets, ref, models, top1, top5)


# --------------------------------------------------------------------------- zoo entries


def _find_file(names: Sequence[str], sha: str, explicit: Any = None) -> Path:
    """A published prediction file: explicit path, package data, cache, $REPLICATE_WEIGHTS / $REPLICATE_DATA."""
    from replicate.models._weights import (
        PACKAGE_DATA,
        WeightsError,
        _search_dir,
        check_sha256,
        home_dir,
        weights_dirs,
    )

    if explicit is not None:
        check_sha256(explicit, sha, what="prediction")
        return Path(explicit)
    extra = [Path(p) for p in os.environ.get("REPLICATE_DATA", "").split(os.pathsep) if p.strip()]
    roots = [PACKAGE_DATA, home_dir() / "data", *weights_dirs(), *extra]
    mismatched = []
    for root in roots:
        for fname in names:
            hit = _search_dir(root, fname)
            if hit is None:
                continue
            try:
                check_sha256(hit, sha, what="prediction")
                return hit
            except WeightsError:
                mismatched.append(str(hit))
    raise WeightsError(
        f"no prediction file {' or '.join(names)} with sha256 {sha} found in "
        + "; ".join(str(r) for r in roots)
        + (f" (files of that name with another sha256: {mismatched})" if mismatched else "")
        + ". Provide it: load_predictions(PATH), or add its folder to $REPLICATE_DATA or $REPLICATE_WEIGHTS."
    )


@lru_cache(maxsize=4)
def _published(release: str, path: str | None = None) -> PredictionSet:
    if release == "cifar10.1":
        return load_predictions(_find_file(CIFAR10_1_FILES, CIFAR10_1_SHA256, path), name="cifar10.1")
    return load_predictions(_find_file(IMAGENETV2_FILES, IMAGENETV2_SHA256, path), name="imagenetv2")


def published_predictions(release: str, path: str | os.PathLike[str] | None = None) -> PredictionSet:
    """The published prediction file of ``"cifar10.1"`` or ``"imagenetv2"`` (sha256 checked)."""
    check_choice("release", release, ("cifar10.1", "imagenetv2"))
    return _published(release, None if path is None else str(path))


def evaluate_prediction_model(model: Any, dataset: ImageSet, *, name: str | None = None) -> EvalResult:
    """``evaluate()`` for a prediction-file zoo entry: bind the image set and read the predictions."""
    import dataclasses

    from replicate.models._registry import get_card

    card = get_card(model) if isinstance(model, str) else model
    release, _, entry = card.name.partition("/")
    ps = published_predictions(release)
    res = ps.result(entry, dataset)
    res = dataclasses.replace(res, model=name or card.name, dataset=dataset.name)
    return res


def _register_prediction_cards() -> None:
    shared = {"preprocessing": Preprocessing(), "kind": "predictions"}
    for m in CIFAR10_1_MODELS:
        register_model(
            ModelCard(
                name=f"cifar10.1/{m}",
                architecture=m,
                num_classes=10,
                weights_file=CIFAR10_1_FILES[0],
                url="https://github.com/modestyachts/CIFAR-10.1",
                sha256=CIFAR10_1_SHA256,
                dataset="cifar10-test, cifar10.1-v4, cifar10.1-v6",
                paper="Recht, Roelofs, Schmidt, Shankar. Do CIFAR-10 Classifiers Generalize to CIFAR-10? "
                "arXiv:1806.00451 (2018)",
                source="https://github.com/modestyachts/CIFAR-10.1",
                licence="MIT (code); predictions of models on Tiny Images data",
                tags=("cifar10", "predictions"),
                **shared,  # type: ignore[arg-type]
            )
        )(_no_builder)
    for m in IMAGENETV2_MODELS:
        register_model(
            ModelCard(
                name=f"imagenetv2/{m}",
                architecture=m,
                num_classes=1000,
                weights_file=IMAGENETV2_FILES[0],
                url="https://github.com/modestyachts/ImageNetV2",
                sha256=IMAGENETV2_SHA256,
                dataset="imagenet-val, imagenetv2-matched-frequency, imagenetv2-threshold0.7, "
                "imagenetv2-top-images",
                paper="Recht, Roelofs, Schmidt, Shankar. Do ImageNet Classifiers Generalize to ImageNet? "
                "ICML 2019",
                source="https://github.com/modestyachts/ImageNetV2",
                licence="MIT (code); ImageNet terms of use",
                tags=("imagenet", "predictions"),
                **shared,  # type: ignore[arg-type]
            )
        )(_no_builder)


def _no_builder(card: ModelCard, path: Path) -> Any:  # pragma: no cover - load_model refuses first
    raise TypeError(f"{card.name} is a prediction-file model with no network")


_register_prediction_cards()
