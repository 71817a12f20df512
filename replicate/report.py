"""Reports rendered from result objects: HTML, Markdown, JSON, CSV and LaTeX.

``build_report(...)`` gathers the results of a replication (statistics comparisons,
sampling, deduplication, dataset-shift tests, manifests, and optionally the image sets
for picture grids) into one :class:`Report`: the numbers as the results state them, and
the figures drawn from those numbers. ``render(report, format)`` turns it into a string;
writing files is the command line's job (``replicate report``).

A report never recomputes a statistic: every accuracy, interval, p-value, fit and
diagnosis is copied from the result objects, so a report always agrees with them (the
JSON form holds every number the HTML shows, unrounded). Sections appear when their
results exist; a missing one says so in one line instead of showing an empty box.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from replicate._validation import check_choice, fail
from replicate.plots import FIGURE_FORMATS, Figure

__all__ = [
    "Report",
    "ComparisonSection",
    "ModelRow",
    "FitSummary",
    "ResultSection",
    "TestSetInfo",
    "build_report",
    "render",
    "write_report",
    "FORMATS",
    "SCHEMA_VERSION",
]

Format = Literal["html", "md", "json", "csv", "tex"]
FORMATS: tuple[str, ...] = ("html", "md", "json", "csv", "tex")
EXTENSIONS = {"html": "html", "md": "md", "json": "json", "csv": "csv", "tex": "tex"}
SCHEMA = "replicate.report"
SCHEMA_VERSION = 1


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class TestSetInfo:
    """A test set as a report names it: name, number of images, content fingerprint."""

    name: str
    n: int | None = None
    fingerprint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n": self.n, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class ModelRow:
    """One model's numbers in one comparison, as the statistics results state them.

    Accuracies, bounds and gaps are fractions in [0, 1] (the gap is original minus new);
    counts are kept so every accuracy can be traced back to ``correct / n``.
    """

    model: str
    original_n: int | None
    original_correct: int | None
    original_acc: float
    original_low: float | None
    original_high: float | None
    new_n: int | None
    new_correct: int | None
    new_acc: float
    new_low: float | None
    new_high: float | None
    gap: float
    gap_low: float | None
    gap_high: float | None
    p_value: float | None = None
    p_adjusted: float | None = None
    effective_robustness: float | None = None
    er_low: float | None = None
    er_high: float | None = None
    rank_original: float | None = None
    rank_new: float | None = None
    flags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["flags"] = list(self.flags)
        return out


@dataclass(frozen=True)
class FitSummary:
    """The fitted line of new vs original accuracy, with its band in accuracy units."""

    scale: str
    method: str | None
    slope: float
    intercept: float
    slope_low: float | None = None
    slope_high: float | None = None
    intercept_low: float | None = None
    intercept_high: float | None = None
    r_squared: float | None = None
    band: str | None = None
    grid: tuple[float, ...] | None = None
    line: tuple[float, ...] | None = None
    band_low: tuple[float, ...] | None = None
    band_high: tuple[float, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        for k in ("grid", "line", "band_low", "band_high"):
            out[k] = None if out[k] is None else list(out[k])
        out.update(dict(self.extra))
        return out


@dataclass(frozen=True)
class ComparisonSection:
    """One original test set against one new test set for many models, on one metric."""

    key: str
    label: str
    original: TestSetInfo
    new: TestSetInfo
    metric: str
    rows: tuple[ModelRow, ...]
    fit: FitSummary | None
    diagnosis: str | None
    drop: Mapping[str, Any]
    methods: Mapping[str, Any]
    rank_stability: Mapping[str, Any] | None = None
    per_class: Mapping[str, Any] | None = None
    figures: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "original": self.original.to_dict(),
            "new": self.new.to_dict(),
            "metric": self.metric,
            "methods": dict(self.methods),
            "drop": dict(self.drop),
            "fit": None if self.fit is None else self.fit.to_dict(),
            "diagnosis": self.diagnosis,
            "rank_stability": None if self.rank_stability is None else dict(self.rank_stability),
            "per_class": None if self.per_class is None else dict(self.per_class),
            "models": [r.to_dict() for r in self.rows],
            "figures": list(self.figures),
        }


@dataclass(frozen=True)
class ResultSection:
    """A sampling, dedup or shift result: its summary text, its numbers and figures."""

    kind: str
    label: str
    summary: str
    numbers: Mapping[str, Any]
    figures: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "label": self.label,
            "summary": self.summary,
            "numbers": dict(self.numbers),
            "figures": list(self.figures),
            "result": dict(self.data),
        }


@dataclass(frozen=True)
class Report:
    """Everything a report shows: numbers copied from results, and figures drawn from them.

    Build it with :func:`build_report`; turn it into text with :func:`render`.
    """

    title: str
    comparisons: tuple[ComparisonSection, ...]
    sampling: tuple[ResultSection, ...]
    dedup: tuple[ResultSection, ...]
    shift: tuple[ResultSection, ...]
    test_sets: tuple[TestSetInfo, ...]
    manifests: tuple[Mapping[str, Any], ...]
    figures: tuple[Figure, ...]
    absent: Mapping[str, str]
    params: Mapping[str, Any]
    created: str

    def figure(self, name: str) -> Figure:
        """The figure called ``name``."""
        for f in self.figures:
            if f.name == name:
                return f
        raise fail("name", name, "one of: " + ", ".join(f.name for f in self.figures), error=KeyError)

    def figure_files(self) -> dict[str, bytes]:
        """``{file name: encoded image}`` for writing figures next to a Markdown report."""
        return {f.filename: f.data for f in self.figures}

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON form: every number the HTML shows, unrounded."""
        from replicate import __version__

        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "title": self.title,
            "created": self.created,
            "replicate_version": __version__,
            "params": dict(self.params),
            "test_sets": [t.to_dict() for t in self.test_sets],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "sampling": [s.to_dict() for s in self.sampling] or None,
            "dedup": [s.to_dict() for s in self.dedup] or None,
            "shift": [s.to_dict() for s in self.shift] or None,
            "provenance": [dict(m) for m in self.manifests] or None,
            "figures": [f.to_dict() for f in self.figures],
            "absent": dict(self.absent),
        }

    def summary(self) -> str:
        """A few lines of text: the headline of each comparison and what is absent."""
        lines = [self.title]
        for c in self.comparisons:
            lines.append(f"- {_headline(c)}")
        for kind, why in self.absent.items():
            lines.append(f"- {kind}: {why}")
        lines.append(f"{len(self.figures)} figures")
        return "\n".join(lines)


# --------------------------------------------------------------------------- helpers


def _json_safe(x: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays, tuples, NaN -> None, paths -> str."""
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return None if math.isnan(v) or math.isinf(v) else v
    if x is None or isinstance(x, str):
        return x
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "to_dict"):
        return _json_safe(x.to_dict())
    return str(x)


def _as_dict(obj: Any, what: str) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "to_dict"):
        return dict(obj.to_dict())
    raise fail(what, obj, "a result object with to_dict() or a dict", "Pass the result returned by replicate.", TypeError)


def _pick(d: Mapping[str, Any] | None, *names: str, default: Any = None) -> Any:
    """The first of ``names`` present (and not None) in ``d``."""
    if not d:
        return default
    for n in names:
        if n in d and d[n] is not None:
            return d[n]
    return default


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _int(x: Any) -> int | None:
    return None if x is None else int(x)


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s or "x"


# --------------------------------------------------------------------------- comparisons


def _set_info(d: Mapping[str, Any], role: str) -> TestSetInfo:
    """The original/new test set of a comparison dict (nested or flat keys)."""
    nested = d.get(role)
    if isinstance(nested, Mapping):
        name = _pick(nested, "name", "dataset")
        return TestSetInfo(
            str(name) if name is not None else "",
            _int(_pick(nested, "n", "size")),
            _pick(nested, "fingerprint", "dataset_fingerprint"),
        )
    name = _pick(d, f"{role}_name", f"{role}_dataset", default=nested if isinstance(nested, str) else None)
    return TestSetInfo(
        str(name) if name is not None else "",
        _int(_pick(d, f"{role}_n", f"n_{role}")),
        _pick(d, f"{role}_fingerprint"),
    )


def _interval(m: Mapping[str, Any], prefix: str) -> tuple[float | None, float | None]:
    ci = _pick(m, f"{prefix}_ci", f"{prefix}_interval")
    if isinstance(ci, Mapping):
        return _num(_pick(ci, "low", "lower")), _num(_pick(ci, "high", "upper"))
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return _num(ci[0]), _num(ci[1])
    return (
        _num(_pick(m, f"{prefix}_low", f"{prefix}_lower", f"{prefix}_ci_low")),
        _num(_pick(m, f"{prefix}_high", f"{prefix}_upper", f"{prefix}_ci_high")),
    )


def _model_row(m: Mapping[str, Any]) -> ModelRow:
    o_low, o_high = _interval(m, "original")
    n_low, n_high = _interval(m, "new")
    g_low, g_high = _interval(m, "gap")
    e_low, e_high = _interval(m, "effective_robustness")
    if e_low is None:
        e_low, e_high = _interval(m, "er")
    orig_acc = _num(_pick(m, "original_accuracy", "original_acc"))
    new_acc = _num(_pick(m, "new_accuracy", "new_acc"))
    gap = _num(_pick(m, "gap", "drop"))
    name = _pick(m, "model", "name")
    if name is None or orig_acc is None or new_acc is None or gap is None:
        raise fail(
            "comparison model entry",
            {k: m[k] for k in list(m)[:6]},
            "a dict with the model's name, original and new accuracy and gap",
            "Pass the Comparison returned by replicate.stats.compare (or its to_dict()).",
        )
    return ModelRow(
        model=str(name),
        original_n=_int(_pick(m, "original_n", "n_original")),
        original_correct=_int(_pick(m, "original_correct", "correct_original")),
        original_acc=orig_acc,
        original_low=o_low,
        original_high=o_high,
        new_n=_int(_pick(m, "new_n", "n_new")),
        new_correct=_int(_pick(m, "new_correct", "correct_new")),
        new_acc=new_acc,
        new_low=n_low,
        new_high=n_high,
        gap=gap,
        gap_low=g_low,
        gap_high=g_high,
        p_value=_num(_pick(m, "p_value", "pvalue")),
        p_adjusted=_num(_pick(m, "p_adjusted", "p_adj", "adjusted_p_value")),
        effective_robustness=_num(_pick(m, "effective_robustness", "er")),
        er_low=e_low,
        er_high=e_high,
        rank_original=_num(_pick(m, "rank_original", "original_rank")),
        rank_new=_num(_pick(m, "rank_new", "new_rank")),
        flags=tuple(str(f) for f in (_pick(m, "flags", default=()) or ())),
    )


def _fit(d: Mapping[str, Any] | None) -> FitSummary | None:
    if not d:
        return None
    s_low, s_high = _interval(d, "slope")
    i_low, i_high = _interval(d, "intercept")
    band = _pick(d, "band", "bands")
    grid = line = b_low = b_high = None
    band_name = None
    if isinstance(band, Mapping):
        grid = _pick(band, "grid", "x")
        line = _pick(band, "line", "fitted", "y")
        b_low = _pick(band, "low", "lower", "confidence_low")
        b_high = _pick(band, "high", "upper", "confidence_high")
        band_name = _pick(band, "kind", "name", "label")
    else:
        grid = _pick(d, "grid", "band_x", "x_grid")
        line = _pick(d, "line", "band_fit", "fitted")
        b_low = _pick(d, "band_low", "confidence_low", "ci_low")
        b_high = _pick(d, "band_high", "confidence_high", "ci_high")
        band_name = _pick(d, "band_kind")

    def tup(v: Any) -> tuple[float, ...] | None:
        return None if v is None else tuple(float(x) for x in v)

    known = {"slope", "intercept", "scale", "method", "band", "grid", "line", "band_low", "band_high", "band_kind", "r_squared", "r2"}
    extra = {k: _json_safe(v) for k, v in d.items() if k not in known and not isinstance(v, (list, tuple, np.ndarray))}
    return FitSummary(
        scale=str(_pick(d, "scale", default="probit")),
        method=_pick(d, "method"),
        slope=float(_pick(d, "slope")),
        intercept=float(_pick(d, "intercept")),
        slope_low=s_low,
        slope_high=s_high,
        intercept_low=i_low,
        intercept_high=i_high,
        r_squared=_num(_pick(d, "r_squared", "r2", "rsquared")),
        band=None if band_name is None else str(band_name),
        grid=tup(grid),
        line=tup(line),
        band_low=tup(b_low),
        band_high=tup(b_high),
        extra=extra,
    )


def _kind_of(v: Any) -> str | None:
    """Which replicate.stats result a ``to_dict()`` output is, from its keys."""
    if not isinstance(v, Mapping):
        return None
    k = set(v)
    if {"gap", "lower", "upper", "p_adjusted"} <= k:
        return "gap"
    if {"slope", "intercept", "grid", "fitted"} <= k:
        return "fit"
    if {"effective_robustness", "predicted", "lower", "upper"} <= k:
        return "er"
    if {"kendall_tau", "rank_orig", "rank_new"} <= k:
        return "ranks"
    if {"verdict", "text"} <= k:
        return "diagnosis"
    if {"correct", "n", "accuracy", "lower", "upper"} <= k:
        return "accuracy"
    return None


def _columns_to_models(d: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-model rows from a comparison stored as per-result columns (stats ``to_dict()`` parts).

    Returns the rows and the parts found (fit, diagnosis, ranks, per-class gaps, accuracy
    interval method). Sub-results are recognised by their keys, so a comparison may name
    them as it likes; the accuracy intervals are told apart by 'orig'/'new' in their key.
    """
    parts: dict[str, Any] = {}
    for key, v in d.items():
        kind = _kind_of(v)
        if kind is None:
            continue
        low = key.lower()
        if kind == "gap" and ("class" in low or "group" in low or "keyword" in low):
            parts.setdefault("per_class", v)
        elif kind == "accuracy":
            parts["acc_new" if "new" in low else "acc_orig"] = v
        else:
            parts.setdefault(kind, v)
    gap = parts.get("gap")
    if gap is None:
        return [], parts
    names = list(gap.get("names") or [])
    k = len(gap["gap"])
    names = names or [f"model{i}" for i in range(k)]
    rows: list[dict[str, Any]] = []
    acc_o, acc_n, er, ranks = parts.get("acc_orig"), parts.get("acc_new"), parts.get("er"), parts.get("ranks")

    def aligned(part: Mapping[str, Any] | None, field_: str, i: int) -> Any:
        if part is None or part.get(field_) is None:
            return None
        pn = part.get("names")
        if pn and list(pn) != names:
            j = {n: t for t, n in enumerate(pn)}.get(names[i])
            return None if j is None else part[field_][j]
        return part[field_][i]

    for i in range(k):
        rows.append(
            {
                "model": names[i],
                "original_n": gap["n_orig"][i],
                "original_correct": gap["correct_orig"][i],
                "original_accuracy": gap["acc_orig"][i],
                "original_low": aligned(acc_o, "lower", i),
                "original_high": aligned(acc_o, "upper", i),
                "new_n": gap["n_new"][i],
                "new_correct": gap["correct_new"][i],
                "new_accuracy": gap["acc_new"][i],
                "new_low": aligned(acc_n, "lower", i),
                "new_high": aligned(acc_n, "upper", i),
                "gap": gap["gap"][i],
                "gap_low": gap["lower"][i],
                "gap_high": gap["upper"][i],
                "p_value": gap["p_value"][i],
                "p_adjusted": gap["p_adjusted"][i],
                "effective_robustness": aligned(er, "effective_robustness", i),
                "effective_robustness_low": aligned(er, "lower", i),
                "effective_robustness_high": aligned(er, "upper", i),
                "rank_original": aligned(ranks, "rank_orig", i),
                "rank_new": aligned(ranks, "rank_new", i),
            }
        )
    return rows, parts


def _stats_fit(f: Mapping[str, Any]) -> dict[str, Any]:
    """A ``LinearFit.to_dict()`` in the report's fit form (band = the line's confidence band)."""
    alpha = _num(f.get("alpha"))
    level = f"{100 * (1 - alpha):g}% " if alpha is not None else ""
    out = {
        "scale": f.get("scale"),
        "method": f.get("method"),
        "slope": f.get("slope"),
        "intercept": f.get("intercept"),
        "slope_ci": f.get("slope_ci"),
        "intercept_ci": f.get("intercept_ci"),
        "r2": f.get("r2"),
        "grid": f.get("grid"),
        "line": f.get("fitted"),
        "band_low": f.get("conf_lower"),
        "band_high": f.get("conf_upper"),
        "band_kind": f"{level}confidence band of the line",
    }
    for k in ("alpha", "n_models", "slope_se", "intercept_se", "residual_std", "df", "bootstrap", "n_bootstrap",
              "slope_boot_ci", "intercept_boot_ci", "boundary_rule", "clipped", "outliers", "pred_lower", "pred_upper"):
        if k in f:
            out[k] = f[k]
    return out


def _stats_class_drops(g: Mapping[str, Any]) -> dict[str, Any]:
    """A per-class ``GapCI.to_dict()`` (from ``group_drops``) in the report's per-class form."""
    keep = ("names", "n_orig", "correct_orig", "n_new", "correct_new", "acc_orig", "acc_new", "gap", "lower",
            "upper", "p_adjusted", "method", "adjust", "alpha")
    out = {k: g[k] for k in keep if k in g}
    out["classes"] = out.pop("names", None)
    out["gap_low"] = out.pop("lower", None)
    out["gap_high"] = out.pop("upper", None)
    return out


def _comparison_section(obj: Any, index: int, label: str | None) -> ComparisonSection:
    d = _as_dict(obj, f"comparisons[{index}]")
    original = _set_info(d, "original")
    new = _set_info(d, "new")
    metric = str(_pick(d, "metric", default="top-1"))
    models = _pick(d, "models", "rows", "per_model")
    if not models:
        models, parts = _columns_to_models(d)
        d = dict(d)
        if "fit" in parts:
            d["fit"] = _stats_fit(parts["fit"])
        if "diagnosis" in parts:
            d["diagnosis"] = parts["diagnosis"]
        if "ranks" in parts:
            r = parts["ranks"]
            d["rank_stability"] = {
                k: r[k]
                for k in ("kendall_tau", "kendall_ci", "kendall_p", "spearman_rho", "spearman_ci", "spearman_p",
                          "bootstrap", "n_bootstrap", "largest_changes")
                if k in r
            }
        if "per_class" in parts and not d.get("per_class"):
            d["per_class"] = _stats_class_drops(parts["per_class"])
        gap = parts.get("gap") or {}
        acc = parts.get("acc_orig") or {}
        d.setdefault("params", {})
        d["params"] = {
            **{k: v for k, v in (("interval_method", acc.get("method")), ("gap_method", gap.get("method")),
                                  ("test", gap.get("test")), ("adjust", gap.get("adjust")), ("alpha", gap.get("alpha")))
               if v is not None},
            **(d["params"] if isinstance(d["params"], Mapping) else {}),
        }
    if not models:
        raise fail(
            f"comparisons[{index}]",
            {k: d[k] for k in list(d)[:5]},
            "a comparison with per-model results ('models')",
            "Pass the Comparison returned by replicate.stats.compare (or its to_dict()).",
        )
    if isinstance(models, Mapping):  # {name: {...}}
        models = [{"model": k, **v} for k, v in models.items()]
    rows = tuple(_model_row(m) for m in models)
    _check_one_table(rows, index, original, new)
    fit = _fit(_pick(d, "fit", "linear_fit"))
    drop = _pick(d, "drop", "drop_summary", default=None)
    gaps = np.array([r.gap for r in rows])
    if not isinstance(drop, Mapping):
        # The median and range of the per-model gaps the comparison states (order statistics, no estimate).
        drop = {
            "median": float(np.median(gaps)),
            "min": float(gaps.min()),
            "max": float(gaps.max()),
            "min_model": rows[int(gaps.argmin())].model,
            "max_model": rows[int(gaps.argmax())].model,
            "n_models": len(rows),
        }
    diagnosis = _pick(d, "diagnosis")
    if isinstance(diagnosis, Mapping):
        verdict, text = _pick(diagnosis, "verdict"), _pick(diagnosis, "text", "summary")
        diagnosis = " ".join(x for x in (f"Diagnosis: {verdict}." if verdict else None, text) if x) or None
    methods = {
        k: _json_safe(d[k])
        for k in ("interval_method", "gap_method", "adjust", "adjust_method", "alpha", "test", "scale", "fit_method")
        if k in d
    }
    if isinstance(d.get("params"), Mapping):
        methods.update({k: _json_safe(v) for k, v in d["params"].items()})
    key_label = label or _pick(d, "label", "name") or f"{original.name or 'original'} vs {new.name or 'new'} ({metric})"
    return ComparisonSection(
        key=f"c{index}-{_slug(str(key_label))}"[:60],
        label=str(key_label),
        original=original,
        new=new,
        metric=metric,
        rows=rows,
        fit=fit,
        diagnosis=None if diagnosis is None else str(diagnosis),
        drop=_json_safe(drop),
        methods=methods,
        rank_stability=_json_safe(_pick(d, "rank_stability", "ranks")) if isinstance(_pick(d, "rank_stability", "ranks"), Mapping) else None,
        per_class=_json_safe(_pick(d, "per_class", "class_drops")) if _pick(d, "per_class", "class_drops") else None,
    )


def _check_one_table(rows: Sequence[ModelRow], index: int, original: TestSetInfo, new: TestSetInfo) -> None:
    """One model table holds results on one pair of test sets: the sizes must agree."""
    for side, info in (("original", original), ("new", new)):
        sizes = {getattr(r, f"{side}_n") for r in rows} - {None}
        if len(sizes) > 1:
            by = {}
            for r in rows:
                by.setdefault(getattr(r, f"{side}_n"), r.model)
            raise fail(
                f"comparisons[{index}] {side} test set sizes",
                sorted(sizes),
                f"one size for every model in one table ({info.name or side} test set)",
                "The table mixes results from different test sets (e.g. "
                + ", ".join(f"{m!r}: n={n}" for n, m in list(by.items())[:3])
                + "); compare each pair of test sets separately and pass one comparison per pair.",
            )
        if info.n is not None and sizes and info.n not in sizes:
            raise fail(
                f"comparisons[{index}] {side} test set size",
                info.n,
                f"the models' n ({sizes.pop()})",
                "The comparison names a test set its models were not evaluated on.",
            )


def _check_labelled(sections: Sequence[ComparisonSection]) -> None:
    """Several comparisons in one report must each say which test sets they compare."""
    if len(sections) > 1:
        for i, s in enumerate(sections):
            for side in ("original", "new"):
                if not getattr(s, side).name:
                    raise fail(
                        f"comparisons[{i}].{side} test set name",
                        "",
                        "a name when a report holds several comparisons",
                        "Without names a reader cannot tell which dataset each table is about; "
                        "pass labels=[...] or name the test sets before comparing.",
                    )
    seen: dict[tuple[str, str, str], ComparisonSection] = {}
    for i, s in enumerate(sections):
        key = (s.original.name, s.new.name, s.metric)
        other = seen.get(key)
        if other is not None and (
            (other.original.fingerprint, other.new.fingerprint, other.original.n, other.new.n)
            != (s.original.fingerprint, s.new.fingerprint, s.original.n, s.new.n)
        ):
            raise fail(
                f"comparisons[{i}]",
                s.label,
                "named apart from every other comparison with different test sets",
                f"Two comparisons are called {key[0]!r} vs {key[1]!r} ({key[2]}) but hold different test sets "
                "(fingerprints or sizes differ); rename the test sets or pass labels=[...].",
            )
        seen[key] = s
    labels = [s.label for s in sections]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise fail("labels", dupes, "distinct, one per comparison", "Pass labels=[...] that say which test sets each compares.")


# --------------------------------------------------------------------------- other results


def _scalars(d: Mapping[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """The scalar numbers and short strings of a result dict, flattened one level."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, bool) or isinstance(v, (int, float, np.integer, np.floating)):
            out[key] = _json_safe(v)
        elif isinstance(v, str) and len(v) <= 80:
            out[key] = v
        elif isinstance(v, Mapping) and depth == 0 and len(v) <= 12:
            out.update(_scalars(v, f"{key}.", depth + 1))
    return out


def _result_section(obj: Any, kind: str, index: int) -> ResultSection:
    d = _json_safe(_as_dict(obj, f"{kind}[{index}]"))
    summary = obj.summary() if hasattr(obj, "summary") else ""
    label = _pick(d, "label", "name", "dataset", default=None)
    if label is None:
        a, b = _pick(d, "a", "a_name", "query"), _pick(d, "b", "b_name", "reference")
        label = f"{a} vs {b}" if isinstance(a, str) and isinstance(b, str) else f"{kind} {index + 1}"
    return ResultSection(kind=kind, label=str(label), summary=str(summary), numbers=_scalars(d), data=d)


def _manifest(obj: Any, index: int) -> dict[str, Any]:
    if isinstance(obj, (str, Path)):
        path = Path(obj)
        if not path.is_file():
            raise fail(f"manifests[{index}]", str(obj), "a readable manifest JSON file", error=FileNotFoundError)
        return json.loads(path.read_text())
    return _json_safe(_as_dict(obj, f"manifests[{index}]"))


# --------------------------------------------------------------------------- build


def _scatter_series(c: ComparisonSection) -> dict[str, Any]:
    s: dict[str, Any] = {
        "label": c.new.name or "new",
        "x": [r.original_acc for r in c.rows],
        "y": [r.new_acc for r in c.rows],
    }
    if all(r.original_low is not None and r.new_low is not None for r in c.rows):
        s.update(
            x_low=[r.original_low for r in c.rows],
            x_high=[r.original_high for r in c.rows],
            y_low=[r.new_low for r in c.rows],
            y_high=[r.new_high for r in c.rows],
        )
    f = c.fit
    if f is not None and f.grid is not None and f.line is not None:
        s["fit"] = {
            "grid": f.grid,
            "line": f.line,
            "band_low": f.band_low,
            "band_high": f.band_high,
            "line_label": f"fit ({f.scale}): slope {f.slope:.2f}",
            "band_label": f.band or "band",
        }
    return s


def _class_figure(c: ComparisonSection, fmt: str, dpi: int) -> Figure | None:
    pc = c.per_class
    if not pc:
        return None
    names = _pick(pc, "classes", "class_names", "names")
    gap = _pick(pc, "gap", "drop")
    if names is None or gap is None:
        return None
    low, high = _interval(pc, "gap")
    if low is None:
        low = _pick(pc, "gap_low", "low")
        high = _pick(pc, "gap_high", "high")
    from replicate.plots import class_drop_plot

    what = _pick(pc, "model", "what", default="")
    return class_drop_plot(
        [str(x) for x in names],
        [float(x) if x is not None else float("nan") for x in gap],
        None if low is None else [float(x) if x is not None else float("nan") for x in low],
        None if high is None else [float(x) if x is not None else float("nan") for x in high],
        name=f"{c.key}-classes",
        title=f"Drop per class: {c.label}" + (f" ({what})" if what else ""),
        fmt=fmt,
        dpi=dpi,
    )


def _imageset_by_name(test_sets: Any) -> dict[str, Any]:
    if test_sets is None:
        return {}
    if isinstance(test_sets, Mapping):
        return dict(test_sets)
    return {s.name: s for s in test_sets}


def _keyword_figures(sec: ResultSection, obj: Any, fmt: str, dpi: int, key: str) -> list[Figure]:
    """Keyword distribution of the new set against its target, when the result holds both."""
    d = sec.data
    new_counts = _pick(d, "keyword_counts", "selected_keyword_counts", "new_keyword_counts")
    target = _pick(d, "target_keyword_counts", "target_counts", "keyword_targets")
    if not isinstance(new_counts, Mapping) or not isinstance(target, Mapping):
        return []
    # nested {class: {keyword: count}} -> flat "class/keyword"
    def flat(m: Mapping[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, v in m.items():
            if isinstance(v, Mapping):
                out.update({f"{k}/{kk}": float(vv) for kk, vv in v.items()})
            else:
                out[str(k)] = float(v)
        return out

    nc, tc = flat(new_counts), flat(target)
    keys = sorted(set(nc) | set(tc))
    from replicate.plots import keyword_plot

    return [
        keyword_plot(
            keys,
            [nc.get(k, 0.0) for k in keys],
            [tc.get(k, 0.0) for k in keys],
            name=f"{key}-keywords",
            title=f"Keywords: {sec.label}",
            new_label=str(_pick(d, "name", default="new set")),
            target_label="target",
            fmt=fmt,
            dpi=dpi,
        )
    ]


def _pair_figures(sec: ResultSection, sets: Mapping[str, Any], fmt: str, dpi: int, key: str, limit: int) -> list[Figure]:
    """A gallery of flagged near-duplicate pairs, where the pixels are at hand."""
    d = sec.data
    pairs = _pick(d, "pairs", "flagged", "matches")
    if not pairs:
        return []
    a_name = _pick(d, "a", "a_name", "query", "query_name")
    b_name = _pick(d, "b", "b_name", "reference", "reference_name")
    a_set = sets.get(a_name) if isinstance(a_name, str) else None
    b_set = sets.get(b_name) if isinstance(b_name, str) else None
    if a_set is None and b_set is None:
        return []

    def image(s: Any, ident: Any) -> np.ndarray | None:
        if s is None or ident is None:
            return None
        try:
            pos = s.positions([str(ident)])[0] if isinstance(ident, str) else int(ident)
            return np.asarray(s.images[pos])
        except (KeyError, ValueError, IndexError):
            return None

    tiles = []
    for p in list(pairs)[:limit]:
        if isinstance(p, Mapping):
            ia = _pick(p, "a", "a_id", "query", "query_id", "i")
            ib = _pick(p, "b", "b_id", "reference", "reference_id", "j")
            dist = _pick(p, "distance", "dist", "d")
        else:
            ia, ib, dist = (list(p) + [None, None, None])[:3]
        tiles.append((image(a_set, ia), image(b_set, ib), "" if dist is None else f"d={float(dist):.3g}"))
    from replicate.plots import pair_gallery

    return [
        pair_gallery(
            tiles,
            name=f"{key}-pairs",
            title=f"Flagged pairs: {sec.label}" + (f" (first {limit} of {len(pairs)})" if len(pairs) > limit else ""),
            left_label=str(a_name),
            right_label=str(b_name),
            fmt=fmt,
            dpi=dpi,
        )
    ]


def _grid_figure(s: Any, seed: int, per_class: int, max_classes: int, fmt: str, dpi: int) -> Figure | None:
    labels = np.asarray(s.labels)
    classes = [k for k in range(len(s.class_names)) if np.any(labels == k)]
    if not classes:
        return None
    rng = np.random.default_rng(seed)
    if len(classes) > max_classes:
        classes = sorted(rng.choice(classes, size=max_classes, replace=False).tolist())
    rows = []
    for k in classes:
        pos = np.flatnonzero(labels == k)
        take = np.sort(rng.choice(pos, size=min(per_class, len(pos)), replace=False))
        rows.append((s.class_names[k], [np.asarray(s.images[i]) for i in take]))
    from replicate.plots import image_grid

    shown = f"{len(classes)} randomly chosen classes of {len(s.class_names)}" if len(classes) < len(
        [k for k in range(len(s.class_names)) if np.any(labels == k)]
    ) else "every class"
    fig = image_grid(rows, name=f"grid-{_slug(s.name)}", title=f"Random images: {s.name} ({shown}, seed {seed})", set_label=s.name, fmt=fmt, dpi=dpi)
    return fig


def build_report(
    comparisons: Any = None,
    *,
    sampling: Any = None,
    dedup: Any = None,
    shift: Any = None,
    manifests: Any = None,
    test_sets: Any = None,
    title: str = "Replication report",
    labels: Sequence[str] | None = None,
    figure_format: str = "png",
    dpi: int = 110,
    seed: int = 0,
    images_per_class: int = 8,
    max_grid_classes: int = 20,
    max_pairs: int = 24,
    created: str | None = None,
) -> Report:
    """Gather results into a :class:`Report` and draw its figures.

    Parameters
    ----------
    comparisons
        one or several ``replicate.stats.Comparison`` (or their ``to_dict()`` / the JSON
        written by ``replicate compare --json``): one original test set against one new
        test set for many models. Several new sets (CIFAR-10.1 v4 and v6; ImageNetV2's three
        sets, top-1 and top-5) are several comparisons.
    sampling, dedup, shift
        results of those stages (one or a sequence); each gets a section with its summary,
        its numbers and, where the result holds what they need, figures (keyword
        distribution; a gallery of flagged pairs, given the image sets).
    manifests
        manifests of every input (dicts, objects with ``to_dict()`` or JSON file paths).
    test_sets
        ``ImageSet`` objects (a sequence, or a mapping name -> set) whose pixels the report
        may show: a grid of random images per class of each, and the near-duplicate gallery.
    title
        the report's title.
    labels
        one label per comparison, replacing the generated "<original> vs <new> (<metric>)".
    figure_format
        ``"png"`` (default) or ``"svg"`` for charts (image grids are always PNG).
    seed
        seed for the random images shown per class (stored in the report).

    Raises
    ------
    ValueError
        for comparisons that cannot be told apart (unnamed test sets, one name for different
        sets, duplicate labels) or a comparison whose models were evaluated on different sets.
    """
    check_choice("figure_format", figure_format, FIGURE_FORMATS)
    from replicate.plots import accuracy_scatter

    def seq(x: Any) -> list[Any]:
        if x is None:
            return []
        if isinstance(x, (list, tuple)):
            return list(x)
        return [x]

    comps = seq(comparisons)
    if labels is not None and len(labels) != len(comps):
        raise fail("labels", list(labels), f"one label per comparison ({len(comps)})")
    sections = [_comparison_section(c, i, None if labels is None else labels[i]) for i, c in enumerate(comps)]
    _check_labelled(sections)

    figures: list[Figure] = []
    final: list[ComparisonSection] = []
    for c in sections:
        names = []
        scale = c.fit.scale if c.fit is not None and c.fit.scale in ("probit", "linear") else "probit"
        fig = accuracy_scatter(
            [_scatter_series(c)],
            name=f"{c.key}-scatter",
            title=c.label,
            xlabel=f"{c.original.name or 'original'} accuracy ({c.metric})",
            ylabel=f"{c.new.name or 'new'} accuracy ({c.metric})",
            scale=scale,
            fmt=figure_format,
            dpi=dpi,
        )
        figures.append(fig)
        names.append(fig.name)
        cf = _class_figure(c, figure_format, dpi)
        if cf is not None:
            figures.append(cf)
            names.append(cf.name)
        final.append(_replace(c, figures=tuple(names)))

    # One overview scatter when several new sets share an original set and metric.
    groups: dict[tuple[str, str], list[ComparisonSection]] = {}
    for c in final:
        groups.setdefault((c.original.name, c.metric), []).append(c)
    for (orig, metric), group in groups.items():
        if len(group) > 1:
            figures.append(
                accuracy_scatter(
                    [_scatter_series(c) for c in group],
                    name=f"overview-{_slug(orig)}-{_slug(metric)}",
                    title=f"All new test sets against {orig} ({metric})",
                    xlabel=f"{orig} accuracy ({metric})",
                    ylabel=f"new test set accuracy ({metric})",
                    scale=group[0].fit.scale if group[0].fit is not None and group[0].fit.scale in ("probit", "linear") else "probit",
                    fmt=figure_format,
                    dpi=dpi,
                )
            )

    sets = _imageset_by_name(test_sets)
    sampling_secs, dedup_secs, shift_secs = [], [], []
    for i, obj in enumerate(seq(sampling)):
        sec = _result_section(obj, "sampling", i)
        figs = _keyword_figures(sec, obj, figure_format, dpi, f"sampling{i}")
        figures.extend(figs)
        sampling_secs.append(_replace(sec, figures=tuple(f.name for f in figs)))
    for i, obj in enumerate(seq(dedup)):
        sec = _result_section(obj, "dedup", i)
        figs = _pair_figures(sec, sets, "png", dpi, f"dedup{i}", max_pairs)
        figures.extend(figs)
        dedup_secs.append(_replace(sec, figures=tuple(f.name for f in figs)))
    for i, obj in enumerate(seq(shift)):
        sec = _result_section(obj, "shift", i)
        shift_secs.append(sec)

    grid_names = []
    for s in sets.values():
        g = _grid_figure(s, seed, images_per_class, max_grid_classes, "png", dpi)
        if g is not None:
            figures.append(g)
            grid_names.append(g.name)

    manifest_list = [_manifest(m, i) for i, m in enumerate(seq(manifests))]

    # Test sets named anywhere, once each (by name and fingerprint).
    infos: dict[tuple[str, str | None], TestSetInfo] = {}
    for c in final:
        for t in (c.original, c.new):
            infos.setdefault((t.name, t.fingerprint), t)
    for s in sets.values():
        infos.setdefault((s.name, s.fingerprint), TestSetInfo(s.name, len(s), s.fingerprint))

    absent: dict[str, str] = {}
    if not final:
        absent["comparisons"] = "No comparison results were given, so there is no model table or accuracy plot."
    if not sampling_secs:
        absent["sampling"] = "No sampling results were given, so there is no keyword distribution."
    if not dedup_secs:
        absent["dedup"] = "No near-duplicate results were given, so there is no gallery of flagged pairs."
    if not shift_secs:
        absent["shift"] = "No dataset-shift test was given."
    if not grid_names:
        absent["images"] = "No image sets were given, so there is no grid of test images."
    if final and not any(c.per_class for c in final):
        absent["per_class"] = "The comparisons hold no per-class drops."
    if not manifest_list:
        absent["provenance"] = "No manifests were given."

    return Report(
        title=title,
        comparisons=tuple(final),
        sampling=tuple(sampling_secs),
        dedup=tuple(dedup_secs),
        shift=tuple(shift_secs),
        test_sets=tuple(infos.values()),
        manifests=tuple(manifest_list),
        figures=tuple(figures),
        absent=absent,
        params={
            "figure_format": figure_format,
            "dpi": dpi,
            "seed": seed,
            "images_per_class": images_per_class,
            "max_grid_classes": max_grid_classes,
            "max_pairs": max_pairs,
            "image_grids": grid_names,
        },
        created=created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


# --------------------------------------------------------------------------- formatting


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _ival(lo: float | None, hi: float | None, digits: int = 1) -> str:
    return "" if lo is None or hi is None else f"[{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]"


def _pfmt(p: float | None) -> str:
    if p is None:
        return "–"
    if p == 0:
        return "< 1e-300"
    if p < 1e-3:
        return f"{p:.1e}"
    return f"{p:.3f}"


def _num_fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _rank(x: float | None) -> str:
    return "–" if x is None else f"{x:g}"


def _headline(c: ComparisonSection) -> str:
    """One paragraph: sets, drop median and range, the fit, the diagnosis."""
    d = c.drop
    text = (
        f"{len(c.rows)} models on {c.original.name or 'the original test set'}"
        f"{f' (n = {c.original.n:,})' if c.original.n else ''} and {c.new.name or 'the new test set'}"
        f"{f' (n = {c.new.n:,})' if c.new.n else ''}, {c.metric}: "
        f"the median drop is {_pct(_num(d.get('median')))} points "
        f"(range {_pct(_num(d.get('min')))} to {_pct(_num(d.get('max')))})."
    )
    f = c.fit
    if f is not None:
        text += f" The {f.method + ' ' if f.method else ''}fit on the {f.scale} scale has slope {f.slope:.3f}"
        if f.slope_low is not None and f.slope_high is not None:
            text += f" [{f.slope_low:.3f}, {f.slope_high:.3f}]"
        text += f" and intercept {f.intercept:.3f}"
        if f.intercept_low is not None and f.intercept_high is not None:
            text += f" [{f.intercept_low:.3f}, {f.intercept_high:.3f}]"
        if f.r_squared is not None:
            text += f" (R² = {f.r_squared:.3f})"
        text += "."
    if c.diagnosis:
        text += " " + c.diagnosis.strip()
    return text


def _rank_text(c: ComparisonSection) -> str:
    """Rank stability in one sentence (empty when the comparison holds none)."""
    r = c.rank_stability
    if not r:
        return ""
    parts = []
    for key, sym in (("kendall_tau", "Kendall tau"), ("spearman_rho", "Spearman rho")):
        v = _num(r.get(key))
        if v is None:
            continue
        ci = r.get(key.split("_")[0] + "_ci")
        text = f"{sym} {v:.3f}"
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
            text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        parts.append(text)
    out = "Rank stability: " + ", ".join(parts) if parts else "Rank stability"
    if r.get("bootstrap"):
        out += f" (bootstrap over {r['bootstrap']}, {r.get('n_bootstrap')} replicates)"
    changes = r.get("largest_changes")
    if changes:
        out += "; largest rank changes: " + "; ".join(f"{n} {float(a):g} → {float(b):g}" for n, a, b in changes)
    return out + "."


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _tex_escape(s: Any) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(s))


def _md_escape(s: Any) -> str:
    return str(s).replace("|", r"\|").replace("_", r"\_").replace("*", r"\*")


_ENV: dict[str, Any] = {}


def _env(kind: str) -> Any:
    if kind not in _ENV:
        import jinja2

        loader = jinja2.PackageLoader("replicate", "templates")
        if kind == "html":
            env = jinja2.Environment(loader=loader, autoescape=True, trim_blocks=True, lstrip_blocks=True)
        elif kind == "tex":
            env = jinja2.Environment(
                loader=loader,
                autoescape=False,
                trim_blocks=True,
                lstrip_blocks=True,
                block_start_string="((*",
                block_end_string="*))",
                variable_start_string="(((",
                variable_end_string=")))",
                comment_start_string="((=",
                comment_end_string="=))",
            )
            env.filters["e"] = _tex_escape
        else:
            env = jinja2.Environment(loader=loader, autoescape=False, trim_blocks=True, lstrip_blocks=True)
            env.filters["e"] = _md_escape
        env.filters.update(rank=_rank, pct=_pct, ival=_ival, pfmt=_pfmt, num=_num_fmt, slug=_slug)
        env.globals.update(headline=_headline, ival=_ival, rank_text=_rank_text)
        _ENV[kind] = env
    return _ENV[kind]


CSV_COLUMNS = (
    "comparison",
    "original_set",
    "new_set",
    "metric",
    *ModelRow.__dataclass_fields__.keys(),
)


def _csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for c in report.comparisons:
        for r in c.rows:
            d = r.to_dict()
            d["flags"] = "; ".join(r.flags)
            w.writerow([c.label, c.original.name, c.new.name, c.metric, *("" if d[k] is None else repr(d[k]) if isinstance(d[k], float) else d[k] for k in ModelRow.__dataclass_fields__)])
    return buf.getvalue()


def render(report: Report, format: str = "html", *, figure_dir: str | None = None) -> str:
    """The report as a string in ``format`` ("html", "md", "json", "csv" or "tex").

    HTML is one self-contained file (figures embedded as data URIs). Markdown lists the
    figures as image links under ``figure_dir`` (the CLI writes them there); without
    ``figure_dir`` it names them and points to the HTML form. CSV is the model table of
    every comparison, one row per model and comparison. LaTeX is one booktabs table per
    comparison (needs ``\\usepackage{booktabs}``).
    """
    check_choice("format", format, FORMATS)
    if not isinstance(report, Report):
        raise fail("report", report, "a Report", "Build one with replicate.report.build_report(...).", TypeError)
    if format == "json":
        return json.dumps(_json_safe(report.to_dict()), indent=2, sort_keys=True, allow_nan=False) + "\n"
    if format == "csv":
        return _csv(report)
    figs = {f.name: f for f in report.figures}
    template = {"html": "report.html.j2", "md": "report.md.j2", "tex": "report.tex.j2"}[format]
    return _env(format).get_template(template).render(
        r=report,
        figs=figs,
        figure_dir=figure_dir,
        version=_version(),
        manifests_json=[json.dumps(_json_safe(m), indent=1, sort_keys=True) for m in report.manifests],
    )


def _version() -> str:
    from replicate import __version__

    return __version__


def write_report(report: Report, out: str | Path, formats: Sequence[str] = ("html",), *, stem: str = "report") -> dict[str, Path]:
    """Write ``report`` in each of ``formats`` into directory ``out``; return the paths.

    Markdown gets its figures written to ``out/figures/``. The directory is created if
    needed; one that cannot be created or written raises ``PermissionError`` /
    ``FileExistsError`` (a file is in the way) with the house message.
    """
    for f in formats:
        check_choice("format", f, FORMATS)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise fail("--out", str(out), "a directory", "It is a file; pass a directory path.", FileExistsError)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".{stem}.write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise fail(
            "--out", str(out), "a directory that can be written", f"({exc.strerror or exc}); choose another directory.", PermissionError
        ) from None
    paths: dict[str, Path] = {}
    for f in formats:
        text = render(report, f, figure_dir="figures" if f == "md" else None)
        path = out / f"{stem}.{EXTENSIONS[f]}"
        path.write_text(text, encoding="utf-8")
        paths[f] = path
        if f == "md":
            figdir = out / "figures"
            figdir.mkdir(exist_ok=True)
            for name, data in report.figure_files().items():
                (figdir / name).write_bytes(data)
    return paths
