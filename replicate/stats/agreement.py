"""Agreement on the line (Baek et al. 2022): a new set's accuracy from predictions alone.

Baek, Jiang, Raghunathan, Kolter, "Agreement-on-the-Line: Predicting the Performance of
Neural Networks under Distribution Shift", NeurIPS 2022 (arXiv:2206.13089). When
accuracy is on the line (probit of new-set accuracy linear in probit of original
accuracy across models), the *agreement* of model pairs -- the fraction of images on
which two models predict the same class -- lies on a line with the same slope and
intercept. Agreement needs no labels, so the line can be fitted on a new, unlabelled set
and used to predict every model's accuracy there:

- **ALine-S**: fit ``probit(agr_new) = a * probit(agr_orig) + b`` over all model pairs
  (OLS) and predict ``acc_new = Phi(a * probit(acc_orig) + b)``.
- **ALine-D**: with the same slope ``a``, every pair gives one linear equation in the
  unknown new-set probits (the intercept cancels)::

      (z_i + z_j) / 2 = probit(agr_new_ij) + a * ((probit(acc_orig_i) + probit(acc_orig_j)) / 2
                                                  - probit(agr_orig_ij))

  solved for all ``z`` by least squares; ``acc_new = Phi(z)``.

The method's own check: the agreement line must hold (linear fit ``R^2`` at least
``min_r2``); where the new set's labels are known (validation) the accuracy line is fitted
too and its slope and its level at the models' mean original probit are compared with
the agreement line's. Failed checks are listed in :attr:`AgreementLine.warnings`.

Agreements and accuracies of exactly 0 or 1 are clipped to ``[0.5/n, 1 - 0.5/n]``
before the probit (``n`` = that set's size), as everywhere in :mod:`replicate.stats`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as sps

from replicate._results import Result
from replicate._results import json_safe as _json
from replicate._validation import check_fraction, fail

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["AgreementLine", "agreement_on_the_line", "agreement_from_predictions", "pairwise_agreement", "MIN_R2", "SLOPE_TOLERANCE",
           "LEVEL_TOLERANCE"]

MIN_R2 = 0.95
"""Default minimum ``R^2`` of the probit agreement line (and of the accuracy line, where known)."""
SLOPE_TOLERANCE = 0.1
"""Default largest difference between the accuracy line's and the agreement line's slopes."""
LEVEL_TOLERANCE = 0.05
"""Default largest difference (probit units) between the two lines at the models' mean original probit."""

BOUNDARY_RULE = "agreements and accuracies of exactly 0 or 1 clipped to [0.5/n, 1 - 0.5/n] before the probit"
METHOD = "Baek et al. 2022 ALine-S and ALine-D; OLS agreement line on the probit scale over all model pairs"


def _probit(p: np.ndarray, n: int) -> np.ndarray:
    return sps.norm.ppf(np.clip(np.asarray(p, dtype=float), 0.5 / n, 1.0 - 0.5 / n))


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Slope, intercept, R^2 and residual standard deviation of y on x."""
    res = sps.linregress(x, y)
    resid = y - (res.slope * x + res.intercept)
    sd = float(np.sqrt(np.sum(resid**2) / max(len(x) - 2, 1)))
    return float(res.slope), float(res.intercept), float(res.rvalue**2), sd


def _as_matrix(arg: str, value: Any, names: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """A (models, images) integer matrix of predicted classes, and the names it carries."""
    carried: tuple[str, ...] | None = None
    if isinstance(value, Mapping):
        carried = tuple(str(k) for k in value)
        rows = [np.asarray(v) for v in value.values()]
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and value and \
            hasattr(value[0], "predictions"):
        carried = tuple(str(r.model) for r in value)
        rows = [np.asarray(r.predictions) for r in value]
    else:
        arr = np.asarray(value)
        if arr.ndim != 2:
            raise fail(arg, value, "a (models, images) array of predicted classes, a mapping model -> "
                       "predictions, or evaluation results with .predictions", error=TypeError)
        rows = list(arr)
    if not rows:
        raise fail(arg, "no models", "predictions of at least 3 models")
    lengths = {r.shape for r in rows}
    if len(lengths) != 1 or rows[0].ndim != 1:
        raise fail(f"{arg} shapes", sorted(str(s) for s in lengths), "one 1-D prediction vector per model, all "
                   "of the same length (one prediction per image of the set)")
    mat = np.stack(rows)
    if mat.dtype == bool or mat.dtype.kind not in "iu":
        if mat.dtype.kind == "f" and np.all(np.isfinite(mat)) and np.all(mat == np.round(mat)):
            mat = mat.astype(np.int64)
        else:
            raise fail(f"{arg}.dtype", str(mat.dtype), "integer predicted classes",
                       "Pass predicted labels (argmax), not probabilities or correctness.", error=TypeError)
    if mat.shape[1] == 0:
        raise fail(f"{arg} images", 0, "> 0")
    if carried is None and names is not None:
        carried = tuple(str(n) for n in names)
        if len(carried) != mat.shape[0]:
            raise fail("names", f"{len(carried)} names", f"one name per row of {arg} ({mat.shape[0]})")
    return mat.astype(np.int64, copy=False), carried


def pairwise_agreement(predictions: Any) -> np.ndarray:
    """``(models, models)`` matrix of the fraction of images on which two models predict the same class."""
    mat, _ = _as_matrix("predictions", predictions, None)
    m = mat.shape[0]
    out = np.eye(m)
    for i in range(m - 1):
        row = (mat[i + 1:] == mat[i]).mean(axis=1)
        out[i, i + 1:] = row
        out[i + 1:, i] = row
    return out


@dataclass(frozen=True, eq=False)
class AgreementLine(Result):
    """Agreement on the line: the fitted lines, ALine-S/ALine-D predictions and the method's checks.

    ``pairs`` index into ``names``; ``agreement_original`` / ``agreement_new`` are their
    agreements. ``slope`` / ``intercept`` / ``r2`` / ``residual_sd`` describe the probit
    agreement line. ``predicted_s`` / ``predicted_d`` are the new-set accuracies by ALine-S
    and ALine-D. Where the new set's labels were given, ``accuracy_new`` holds the actual
    accuracies and ``accuracy_slope`` / ``accuracy_intercept`` / ``accuracy_r2`` the accuracy
    line; otherwise they are ``None``. ``warnings`` lists every check that failed
    (``holds`` is True when there is none).
    """

    names: tuple[str, ...]
    n_original: int
    n_new: int
    accuracy_original: np.ndarray
    pairs: np.ndarray
    agreement_original: np.ndarray
    agreement_new: np.ndarray
    slope: float
    intercept: float
    r2: float
    residual_sd: float
    predicted_s: np.ndarray
    predicted_d: np.ndarray
    accuracy_new: np.ndarray | None = None
    accuracy_slope: float | None = None
    accuracy_intercept: float | None = None
    accuracy_r2: float | None = None
    level_difference: float | None = None
    warnings: tuple[str, ...] = ()
    min_r2: float = MIN_R2
    slope_tolerance: float = SLOPE_TOLERANCE
    level_tolerance: float = LEVEL_TOLERANCE
    original_name: str = "original"
    new_name: str = "new"
    excluded: tuple[str, ...] = ()
    method: str = METHOD
    boundary_rule: str = BOUNDARY_RULE

    def __len__(self) -> int:
        return len(self.names)

    @property
    def holds(self) -> bool:
        """True when every check passed (agreement line R^2, and the lines' match where labels are known)."""
        return not self.warnings

    @property
    def has_labels(self) -> bool:
        return self.accuracy_new is not None

    def _errors(self, which: str) -> np.ndarray:
        if self.accuracy_new is None:
            raise fail("accuracy_new", None, "known to compute errors",
                       "Pass labels_new=... (validation) to compare predictions with the actual accuracies.")
        pred = self.predicted_s if which == "s" else self.predicted_d
        return pred - self.accuracy_new

    @property
    def mae_s(self) -> float:
        """Mean absolute error (fraction) of ALine-S against the actual new-set accuracies."""
        return float(np.mean(np.abs(self._errors("s"))))

    @property
    def mae_d(self) -> float:
        """Mean absolute error (fraction) of ALine-D against the actual new-set accuracies."""
        return float(np.mean(np.abs(self._errors("d"))))

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-safe dict per model."""
        out = []
        for i, name in enumerate(self.names):
            row: dict[str, Any] = {
                "model": name, "acc_orig": float(self.accuracy_original[i]),
                "predicted_s": float(self.predicted_s[i]), "predicted_d": float(self.predicted_d[i]),
                "acc_new": None if self.accuracy_new is None else float(self.accuracy_new[i]),
            }
            out.append(row)
        return out

    def to_dataframe(self) -> pd.DataFrame:
        """One row per model: original accuracy, ALine-S/-D predictions, actual new accuracy where known."""
        import pandas as pd

        return pd.DataFrame(self.rows()).set_index("model")

    def summary(self) -> str:
        """Text: the lines, the checks, and a table of predictions per model."""
        lines = [
            f"agreement on the line, {self.original_name} -> {self.new_name}: {len(self.names)} models, "
            f"{len(self.pairs)} pairs",
            f"  agreement line: probit(agr_new) = {self.slope:.3f} * probit(agr_orig) {self.intercept:+.3f}, "
            f"R^2 {self.r2:.3f} (residual sd {self.residual_sd:.3f} probit)",
        ]
        if self.accuracy_slope is not None:
            lines.append(f"  accuracy line:  probit(acc_new) = {self.accuracy_slope:.3f} * probit(acc_orig) "
                         f"{self.accuracy_intercept:+.3f}, R^2 {self.accuracy_r2:.3f}; "
                         f"{self.level_difference:+.3f} probit from the agreement line at the mean")
            lines.append(f"  MAE ALine-S {100 * self.mae_s:.2f} pp, ALine-D {100 * self.mae_d:.2f} pp")
        lines.append("  checks: " + ("passed" if self.holds else "FAILED"))
        lines += [f"  WARNING {w}" for w in self.warnings]
        if self.excluded:
            lines.append(f"  left out: {', '.join(self.excluded)}")
        width = max([5] + [len(n) for n in self.names])
        lines.append(f"  {'model':<{width}}  {'orig %':>7}  {'ALine-S %':>9}  {'ALine-D %':>9}  {'actual %':>8}")
        for r in self.rows():
            act = "" if r["acc_new"] is None else f"{100 * r['acc_new']:.2f}"
            lines.append(f"  {r['model']:<{width}}  {100 * r['acc_orig']:7.2f}  {100 * r['predicted_s']:9.2f}  "
                         f"{100 * r['predicted_d']:9.2f}  {act:>8}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; :meth:`from_dict` rebuilds the result."""
        d = {
            "names": list(self.names), "n_original": self.n_original, "n_new": self.n_new,
            "accuracy_original": self.accuracy_original, "pairs": self.pairs,
            "agreement_original": self.agreement_original, "agreement_new": self.agreement_new,
            "slope": self.slope, "intercept": self.intercept, "r2": self.r2, "residual_sd": self.residual_sd,
            "predicted_s": self.predicted_s, "predicted_d": self.predicted_d,
            "accuracy_new": self.accuracy_new, "accuracy_slope": self.accuracy_slope,
            "accuracy_intercept": self.accuracy_intercept, "accuracy_r2": self.accuracy_r2,
            "level_difference": self.level_difference, "warnings": list(self.warnings), "min_r2": self.min_r2, "slope_tolerance": self.slope_tolerance,
            "level_tolerance": self.level_tolerance, "original_name": self.original_name,
            "new_name": self.new_name, "excluded": list(self.excluded), "method": self.method,
            "boundary_rule": self.boundary_rule, "holds": self.holds,
        }
        if self.accuracy_new is not None:
            d["mae_s"], d["mae_d"] = self.mae_s, self.mae_d
        return _json(d)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgreementLine:
        """Rebuild from :meth:`to_dict` output."""
        def arr(key: str, dtype: Any = float) -> np.ndarray | None:
            v = data.get(key)
            return None if v is None else np.asarray(v, dtype=dtype)

        try:
            return cls(
                names=tuple(data["names"]), n_original=int(data["n_original"]), n_new=int(data["n_new"]),
                accuracy_original=arr("accuracy_original"),  # type: ignore[arg-type]
                pairs=np.asarray(data["pairs"], dtype=np.int64).reshape(-1, 2),
                agreement_original=arr("agreement_original"),  # type: ignore[arg-type]
                agreement_new=arr("agreement_new"),  # type: ignore[arg-type]
                slope=float(data["slope"]), intercept=float(data["intercept"]), r2=float(data["r2"]),
                residual_sd=float(data["residual_sd"]),
                predicted_s=arr("predicted_s"), predicted_d=arr("predicted_d"),  # type: ignore[arg-type]
                accuracy_new=arr("accuracy_new"), accuracy_slope=data.get("accuracy_slope"),
                accuracy_intercept=data.get("accuracy_intercept"), accuracy_r2=data.get("accuracy_r2"),
                level_difference=data.get("level_difference"),
                warnings=tuple(data.get("warnings", ())), min_r2=float(data.get("min_r2", MIN_R2)),
                slope_tolerance=float(data.get("slope_tolerance", SLOPE_TOLERANCE)),
                level_tolerance=float(data.get("level_tolerance", LEVEL_TOLERANCE)),
                original_name=str(data.get("original_name", "original")),
                new_name=str(data.get("new_name", "new")), excluded=tuple(data.get("excluded", ())),
                method=str(data.get("method", METHOD)), boundary_rule=str(data.get("boundary_rule", BOUNDARY_RULE)),
            )
        except KeyError as e:
            raise fail("data", f"missing key {e.args[0]!r}", "a dict written by AgreementLine.to_dict()") from None


def _labels(arg: str, labels: Any, n: int, what: str) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != n:
        got = len(lab) if lab.ndim == 1 else lab.shape
        raise fail(f"len({arg})", got, f"{n}, the number of images predicted in {what}",
                   f"Found input variables with inconsistent numbers of samples: [{n}, {got}].")
    if lab.dtype == bool or lab.dtype.kind not in "iu":
        raise fail(f"{arg}.dtype", str(lab.dtype), "integer class labels", error=TypeError)
    return lab.astype(np.int64)


def agreement_on_the_line(
    predictions_original: Any,
    predictions_new: Any,
    labels_original: Any = None,
    *,
    labels_new: Any = None,
    names: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    min_r2: float = MIN_R2,
    slope_tolerance: float = SLOPE_TOLERANCE,
    level_tolerance: float = LEVEL_TOLERANCE,
    original_name: str = "original",
    new_name: str = "new",
) -> AgreementLine:
    """Predict each model's new-set accuracy from original accuracies and new-set agreements (ALine-S/-D).

    Parameters
    ----------
    predictions_original, predictions_new
        predicted classes per model: a ``(models, images)`` array (rows in the order of
        ``names``), a mapping model -> predictions, or evaluation results with ``.model`` and
        ``.predictions`` (e.g. ``PredictionSet.results(...)``). Models are matched by name
        where both inputs carry names; otherwise rows must be in the same order.
    labels_original
        the original set's labels (default: the ``.labels`` of the evaluation results).
    labels_new
        optional: the new set's labels, for validation only (actual accuracies, the
        accuracy line, MAE and the comparison of the two lines). The predictions never
        use them.
    exclude
        model names left out (e.g. flagged, mismatched prediction files).
    min_r2, slope_tolerance, level_tolerance
        the method's check: the agreement line's ``R^2`` must be at least ``min_r2``; with
        ``labels_new`` also the accuracy line's, and the two lines' slopes may differ by at
        most ``slope_tolerance`` and their values at the models' mean original probit by at
        most ``level_tolerance``.
    names
        the models' names (``None``: taken from the predictions where they carry names, else numbered).
    original_name, new_name
        the two sets' names, for the summary.
    """
    min_r2 = check_fraction("min_r2", min_r2)
    for arg, v in (("slope_tolerance", slope_tolerance), ("level_tolerance", level_tolerance)):
        if not isinstance(v, (int, float, np.floating)) or not np.isfinite(v) or v <= 0:
            raise fail(arg, v, "a number > 0")
    po, names_o = _as_matrix("predictions_original", predictions_original, names)
    pn, names_n = _as_matrix("predictions_new", predictions_new, names)
    if labels_original is None and isinstance(predictions_original, Sequence) and \
            not isinstance(predictions_original, (str, bytes)) and hasattr(predictions_original[0], "labels"):
        labels_original = predictions_original[0].labels
    if labels_original is None:
        raise fail("labels_original", None, f"the {po.shape[1]} labels of the original set",
                   "The original-set accuracies need its labels (the new set's are never needed).")
    lab_o = _labels("labels_original", labels_original, po.shape[1], "predictions_original")
    lab_n = None if labels_new is None else _labels("labels_new", labels_new, pn.shape[1], "predictions_new")

    if names_o is not None and names_n is not None:
        missing_n = [m for m in names_o if m not in names_n]
        missing_o = [m for m in names_n if m not in names_o]
        if missing_n or missing_o:
            raise fail("predictions_new models", (missing_n or missing_o)[:5],
                       "the same models as predictions_original",
                       f"Only in the original: {missing_n[:5]}; only in the new set: {missing_o[:5]}. "
                       "Pass the common models only.")
        if len(set(names_o)) != len(names_o):
            raise fail("predictions_original models", names_o, "unique model names")
        pn = pn[[names_n.index(m) for m in names_o]]
        model_names = names_o
    else:
        if po.shape[0] != pn.shape[0]:
            raise fail("predictions_new rows", pn.shape[0], f"{po.shape[0]}, the number of models in "
                       "predictions_original", "Both matrices need one row per model, in the same order "
                       "(or pass mappings model -> predictions so models are matched by name).")
        model_names = names_o or names_n or tuple(f"model{i}" for i in range(po.shape[0]))
    excluded = tuple(str(e) for e in exclude)
    unknown = [e for e in excluded if e not in model_names]
    if unknown:
        raise fail("exclude", unknown, "names of models in the inputs", f"Models: {', '.join(model_names[:8])}...")
    keep = np.array([m not in excluded for m in model_names])
    po, pn = po[keep], pn[keep]
    model_names = tuple(m for m, k in zip(model_names, keep) if k)
    m = len(model_names)
    if m < 3:
        raise fail("number of models", m, ">= 3 for a line (agreement on the line fits pairs of models)",
                   "Add models or exclude fewer.")
    n_o, n_n = po.shape[1], pn.shape[1]

    acc_o = (po == lab_o).mean(axis=1)
    ag_o, ag_n = pairwise_agreement(po), pairwise_agreement(pn)
    iu, ju = np.triu_indices(m, 1)
    a_o, a_n = ag_o[iu, ju], ag_n[iu, ju]
    x, y = _probit(a_o, n_o), _probit(a_n, n_n)
    if np.ptp(x) == 0:
        raise fail("agreement_original", "identical for every pair", "varying across model pairs to fit a line")
    slope, intercept, r2, sd = _ols(x, y)
    z_o = _probit(acc_o, n_o)
    pred_s = sps.norm.cdf(slope * z_o + intercept)
    design = np.zeros((len(iu), m))
    rows = np.arange(len(iu))
    design[rows, iu] = 0.5
    design[rows, ju] += 0.5
    rhs = y + slope * (0.5 * (z_o[iu] + z_o[ju]) - x)
    z_d, *_ = np.linalg.lstsq(design, rhs, rcond=None)
    pred_d = sps.norm.cdf(z_d)

    warnings: list[str] = []
    if r2 < min_r2:
        warnings.append(f"the agreement line does not hold: R^2 {r2:.3f} < {min_r2:g}; ALine predictions are "
                        "unreliable (Baek et al.: agreement on the line holds where accuracy on the line does)")
    acc_n = acc_slope = acc_int = acc_r2 = level = None
    if lab_n is not None:
        acc_n = (pn == lab_n).mean(axis=1)
        z_n = _probit(acc_n, n_n)
        acc_slope, acc_int, acc_r2, _ = _ols(z_o, z_n)
        if acc_r2 < min_r2:
            warnings.append(f"accuracy is not on the line: R^2 {acc_r2:.3f} < {min_r2:g}")
        if abs(acc_slope - slope) > slope_tolerance:
            warnings.append(f"the accuracy line's slope {acc_slope:.3f} differs from the agreement line's "
                            f"{slope:.3f} by more than {slope_tolerance:g}")
        centre = float(z_o.mean())
        level = float((acc_slope * centre + acc_int) - (slope * centre + intercept))
        if abs(level) > level_tolerance:
            warnings.append(f"the accuracy line lies {level:+.3f} probit from the agreement line at the models' "
                            f"mean original probit {centre:.2f} (tolerance {level_tolerance:g})")
    arrays = [acc_o, a_o, a_n, pred_s, pred_d] + ([acc_n] if acc_n is not None else [])
    pairs = np.stack([iu, ju], axis=1)
    for a in [*arrays, pairs]:
        a.flags.writeable = False
    return AgreementLine(model_names, n_o, n_n, acc_o, pairs, a_o, a_n, slope, intercept, r2, sd, pred_s, pred_d,
                         acc_n, acc_slope, acc_int, acc_r2, level, tuple(warnings), min_r2, float(slope_tolerance),
                         float(level_tolerance), str(original_name), str(new_name), excluded)


def agreement_from_predictions(
    predictions: Any,
    new: str,
    *,
    original: str | None = None,
    labels: Any = None,
    exclude: Sequence[str] = (),
    exclude_flagged: bool = False,
    **options: Any,
) -> AgreementLine:
    """:func:`agreement_on_the_line` for a prediction file (path or ``PredictionSet``): ``new`` needs no labels.

    The original set's labels come from the file (or ``labels``, an array or ImageSet); the
    new set's predictions are read as they are, and its labels, where the file has them, only
    score the predictions. ``exclude_flagged`` leaves out models whose original-set results
    the loader flagged (e.g. mismatched files). ``options`` go to :func:`agreement_on_the_line`.

    Parameters
    ----------
    predictions
        a prediction file or the :class:`~replicate.models.predictions.PredictionSet` read.
    new
        the new set (canonical name, file key or alias).
    original
        the original set (default: the file's reference set).
    labels
        the original set's labels, replacing the file's.
    exclude
        models left out of the fit.
    exclude_flagged
        also leave out the models the loader flagged.
    **options
        keyword arguments of :func:`agreement_on_the_line`.
    """
    from replicate.models.predictions import PredictionSet, load_predictions

    ps = predictions if isinstance(predictions, PredictionSet) else load_predictions(predictions)
    o = ps.reference if original is None else ps.dataset_name(original)
    n = ps.dataset_name(new)
    if n == o:
        raise fail("new", new, f"a set other than the original {o!r}", f"The file holds: {', '.join(ps.datasets)}.")
    orig = ps.results(o, labels)
    models_new = ps.models_on(n)
    shared = [r for r in orig if r.model in models_new]
    rows = ps._top1[n]
    pred_new = {m: rows[models_new.index(m)] for m in (r.model for r in shared)}
    flagged: list[str] = []
    if exclude_flagged:  # the loader's alignment check needs accuracies, so the new set's labels where known
        flagged = [r.model for r in shared if r.flags]
        if ps.datasets[n].labels is not None:
            flagged += [r.model for r in ps.results(n) if r.flags and r.model in pred_new]
    return agreement_on_the_line(
        shared, pred_new, shared[0].labels, labels_new=ps.datasets[n].labels,
        exclude=list(dict.fromkeys([*exclude, *flagged])), original_name=o, new_name=n, **options)
