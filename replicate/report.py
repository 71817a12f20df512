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

from replicate._json import json_safe as _json_safe
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
    "json_schema",
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
    verdict: str | None = None

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
            "verdict": self.verdict,
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
    highlights: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "label": self.label,
            "summary": self.summary,
            "highlights": list(self.highlights),
            "note": self.note,
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
        from replicate._version import __version__

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


_ROW_KEYS = {
    # replicate.stats.Comparison.rows() -> report row fields
    "model": "model",
    "n_orig": "original_n",
    "correct_orig": "original_correct",
    "acc_orig": "original_acc",
    "acc_orig_lower": "original_low",
    "acc_orig_upper": "original_high",
    "n_new": "new_n",
    "correct_new": "new_correct",
    "acc_new": "new_acc",
    "acc_new_lower": "new_low",
    "acc_new_upper": "new_high",
    "gap": "gap",
    "gap_lower": "gap_low",
    "gap_upper": "gap_high",
    "p_value": "p_value",
    "p_adjusted": "p_adjusted",
    "effective_robustness": "effective_robustness",
    "effective_robustness_lower": "er_low",
    "effective_robustness_upper": "er_high",
    "rank_orig": "rank_original",
    "rank_new": "rank_new",
}
_REQUIRED_ROW_KEYS = ("model", "n_orig", "correct_orig", "acc_orig", "n_new", "correct_new", "acc_new", "gap")


def _model_row(m: Mapping[str, Any], where: str) -> ModelRow:
    missing = [k for k in _REQUIRED_ROW_KEYS if m.get(k) is None]
    if missing:
        raise fail(
            where,
            {k: m.get(k) for k in list(m)[:4]},
            f"a model row of replicate.stats.Comparison with {', '.join(_REQUIRED_ROW_KEYS)} (missing: {', '.join(missing)})",
            "Pass the Comparison returned by replicate.stats.compare, or the JSON of 'replicate compare --json'.",
        )
    kw: dict[str, Any] = {}
    for src, dst in _ROW_KEYS.items():
        v = m.get(src)
        if dst == "model":
            kw[dst] = str(v)
        elif dst.endswith("_n") or dst.endswith("_correct"):
            kw[dst] = _int(v)
        else:
            kw[dst] = _num(v)
    flags = [str(f) for f in (m.get("flags") or ())]
    if m.get("in_fit") is False:
        flags.append("left out of the fit")
    return ModelRow(**kw, flags=tuple(flags))


def _stats_fit(f: Mapping[str, Any] | None) -> FitSummary | None:
    """A ``LinearFit.to_dict()`` in the report's form (the band is the line's confidence band)."""
    if not f:
        return None
    alpha = _num(f.get("alpha"))
    level = f"{100 * (1 - alpha):g}% " if alpha is not None else ""

    def tup(v: Any) -> tuple[float, ...] | None:
        return None if v is None else tuple(float(x) for x in v)

    def ci(v: Any) -> tuple[float | None, float | None]:
        return (None, None) if not v else (_num(v[0]), _num(v[1]))

    extra_keys = ("alpha", "n_models", "slope_se", "intercept_se", "residual_std", "df", "bootstrap", "n_bootstrap",
                  "slope_boot_ci", "intercept_boot_ci", "boundary_rule", "clipped", "outliers", "seed")
    return FitSummary(
        scale=str(f.get("scale")),
        method=f.get("method"),
        slope=float(f["slope"]),
        intercept=float(f["intercept"]),
        slope_low=ci(f.get("slope_ci"))[0],
        slope_high=ci(f.get("slope_ci"))[1],
        intercept_low=ci(f.get("intercept_ci"))[0],
        intercept_high=ci(f.get("intercept_ci"))[1],
        r_squared=_num(f.get("r2")),
        band=f"{level}confidence band of the line",
        grid=tup(f.get("grid")),
        line=tup(f.get("fitted")),
        band_low=tup(f.get("conf_lower")),
        band_high=tup(f.get("conf_upper")),
        extra={k: _json_safe(f[k]) for k in extra_keys if k in f},
    )


def _class_drops(drops: Mapping[str, Any] | None, rows: Sequence[ModelRow], max_entries: int) -> dict[str, Any] | None:
    """Per-model per-class drops (``Comparison.class_drops``) in the report's form.

    The reference model (drawn in the figure) is the one with the highest original accuracy.
    When models x classes exceeds ``max_entries`` only the reference model's classes are kept,
    and the others are named in ``omitted_models``.
    """
    if not drops:
        return None
    order = sorted(drops, key=lambda name: -next((r.original_acc for r in rows if r.model == name), -1.0))
    ref = order[0]
    total = sum(len(g.get("gap") or ()) for g in drops.values())
    keep = list(drops) if total <= max_entries else [ref]
    fields = ("n_orig", "correct_orig", "n_new", "correct_new", "acc_orig", "acc_new", "gap", "lower", "upper",
              "p_adjusted")
    first = drops[ref]
    return {
        "reference_model": ref,
        "method": first.get("method"),
        "adjust": first.get("adjust"),
        "alpha": first.get("alpha"),
        "models": {m: {"classes": list(drops[m].get("names") or []), **{k: drops[m].get(k) for k in fields}} for m in keep},
        "omitted_models": [m for m in drops if m not in keep],
    }


def _comparison_sections(
    obj: Any, index: int, label: str | None, max_class_entries: int, fingerprints: Mapping[str, str],
    sizes: Mapping[str, int] | None = None,
) -> list[ComparisonSection]:
    """One section per metric of a ``replicate.stats.Comparison`` (top-1, and top-5 when it holds one)."""
    d = _as_dict(obj, f"comparisons[{index}]")
    where = f"comparisons[{index}]"
    models = d.get("models")
    if not isinstance(models, list) or not models:
        raise fail(
            where,
            {k: d[k] for k in list(d)[:5]},
            "a comparison with per-model rows ('models')",
            "Pass the Comparison returned by replicate.stats.compare, or the JSON of 'replicate compare --json'.",
        )
    rows = tuple(_model_row(m, f"{where}.models[{i}]") for i, m in enumerate(models))
    metric = str(d.get("metric") or "top-1")
    names = [str(d.get(f"{side}_name") or "") for side in ("original", "new")]
    infos = []
    for side, name in zip(("original", "new"), names):
        row_sizes = {getattr(r, f"{side}_n") for r in rows}
        n = row_sizes.pop() if len(row_sizes) == 1 else None
        if sizes and name in sizes and n is not None and sizes[name] != n:
            raise fail(
                f"test_sets[{name!r}]",
                f"{sizes[name]} images",
                f"the test set of comparisons[{index}], which has {n} images under that name",
                "An image set and a comparison share a name but not their images; rename one "
                "(e.g. with ImageSet.renamed) so the report can say which is which.",
            )
        fp = d.get(f"{side}_fingerprint") or fingerprints.get(name)
        infos.append(TestSetInfo(name, n, fp))
    _check_one_table(rows, index, infos[0], infos[1])
    gaps = np.array([r.gap for r in rows])
    drop = {
        # order statistics of the per-model gaps the comparison states (no estimate is made here)
        "median": float(np.median(gaps)),
        "min": float(gaps.min()),
        "max": float(gaps.max()),
        "min_model": rows[int(gaps.argmin())].model,
        "max_model": rows[int(gaps.argmax())].model,
        "n_models": len(rows),
    }
    diagnosis = d.get("diagnosis")
    diag_text = verdict = None
    if isinstance(diagnosis, Mapping):
        verdict = None if diagnosis.get("verdict") is None else str(diagnosis["verdict"])
        diag_text = f"Diagnosis: {diagnosis.get('verdict')}. {diagnosis.get('text') or ''}".strip()
    ranks = d.get("ranks")
    rank_stability = None
    if isinstance(ranks, Mapping):
        rank_stability = {
            k: _json_safe(ranks[k])
            for k in ("kendall_tau", "kendall_ci", "kendall_p", "spearman_rho", "spearman_ci", "spearman_p",
                      "bootstrap", "n_bootstrap", "alpha", "largest_changes")
            if k in ranks
        }
    methods: dict[str, Any] = {
        k: _json_safe(d[k]) for k in ("alpha", "interval_method", "gap_method", "test", "adjust") if k in d
    }
    for key in ("unmatched_original", "unmatched_new", "fit_excluded"):
        if d.get(key):
            methods[key] = list(d[key])
    text = label or f"{names[0] or 'original'} vs {names[1] or 'new'} ({metric})"
    if label and metric != "top-1":
        text = f"{label} ({metric})"
    sec = ComparisonSection(
        key=f"c{index}-{_slug(metric)}-{_slug(text)[:48]}",  # unique per comparison and metric
        label=text,
        original=infos[0],
        new=infos[1],
        metric=metric,
        rows=rows,
        fit=_stats_fit(d.get("fit")),
        diagnosis=diag_text,
        drop=drop,
        methods=methods,
        rank_stability=rank_stability,
        per_class=_class_drops(d.get("class_drops"), rows, max_class_entries),
        verdict=verdict,
    )
    out = [sec]
    if isinstance(d.get("top5"), Mapping):
        out.extend(_comparison_sections(d["top5"], index, label, max_class_entries, fingerprints, sizes))
    return out


def _check_one_table(rows: Sequence[ModelRow], index: int, original: TestSetInfo, new: TestSetInfo) -> None:
    """One model table holds results on one pair of test sets: the sizes must agree."""
    for side, info in (("original", original), ("new", new)):
        sizes = {getattr(r, f"{side}_n") for r in rows} - {None}
        if len(sizes) > 1:
            by: dict[int | None, str] = {}
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


def _check_labelled(sections: Sequence[ComparisonSection], labelled: bool) -> None:
    """Several comparisons in one report must each say which test sets they compare.

    Unnamed test sets, or one pair of names for different test sets (other sizes or
    fingerprints), are refused unless the caller labels the comparisons apart.
    """
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
        if other is not None and not labelled and (
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


def _highlights(kind: str, d: Mapping[str, Any]) -> list[str]:
    """The few numbers a reader looks for first, in words (copied from the result)."""
    out: list[str] = []
    if kind == "shift" and "auc" in d:
        acc_ci, auc_ci = d.get("accuracy_ci") or (None, None), d.get("auc_ci") or (None, None)
        out.append(
            f"Held-out accuracy {_pct(_num(d.get('accuracy')))}% {_ival(_num(acc_ci[0]), _num(acc_ci[1]))} "
            f"({d.get('n_correct')} of {d.get('n_total')}), AUC {_num_fmt(_num(d.get('auc')))} "
            f"[{_num_fmt(_num(auc_ci[0]))}, {_num_fmt(_num(auc_ci[1]))}], permutation p = {_pfmt(_num(d.get('p_value')))}"
            f" ({d.get('permutations')} permutations); features {d.get('features')}, classifier {d.get('classifier')}."
        )
        if d.get("distinguishable") is not None:
            out.append("The sets are distinguishable." if d["distinguishable"] else "The sets are not distinguishable.")
    if kind == "dedup" and isinstance(d.get("counts"), Mapping):
        c = d["counts"]
        out.append(
            f"{c.get('flagged')} of {c.get('query')} images flagged ({c.get('reference')} near an original image, "
            f"{c.get('within_query')} duplicates within the set, {c.get('blacklist')} blacklisted); {c.get('kept')} kept."
        )
    if kind == "sampling" and "n_selected" in d:
        out.append(
            f"{d.get('n_selected')} of {d.get('target_total')} targeted images drawn "
            f"({len(d.get('shortfalls') or [])} strata short); method {d.get('method')}, seed {d.get('seed')}."
        )
    return out


def _result_section(obj: Any, kind: str, index: int) -> ResultSection:
    d = _json_safe(_as_dict(obj, f"{kind}[{index}]"))
    summary = obj.summary() if hasattr(obj, "summary") else ""
    label = _pick(d, "label", "name", "dataset", default=None)
    if label is None:
        a = _pick(d, "name_a", "a", "a_name", "query")
        b = _pick(d, "name_b", "b", "b_name", "reference")
        label = f"{a} vs {b}" if isinstance(a, str) and isinstance(b, str) else None
    if kind == "dedup" and isinstance(d.get("query"), str):
        label = f"near-duplicates of {d['query']}" + (f" in {', '.join(d['references'])}" if d.get("references") else "")
    if label is None and kind == "sampling" and isinstance(d.get("pool"), Mapping):
        label = f"sample from {d['pool'].get('name')}"
    return ResultSection(
        kind=kind,
        label=str(label or f"{kind} {index + 1}"),
        summary=str(summary),
        numbers=_scalars(d),
        highlights=tuple(_highlights(kind, d)),
        data=d,
    )


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
    ref = pc["reference_model"]
    m = pc["models"][ref]
    others = [
        dict(zip(v["classes"], v["gap"], strict=True)) for name, v in pc["models"].items() if name != ref
    ]
    from replicate.plots import class_drop_plot

    def floats(v: Any) -> list[float]:
        return [float("nan") if x is None else float(x) for x in v]

    return class_drop_plot(
        [str(x) for x in m["classes"]],
        floats(m["gap"]),
        floats(m["lower"]),
        floats(m["upper"]),
        others=[[float(o.get(k, float("nan")) or float("nan")) for k in m["classes"]] for o in others] or None,
        name=f"{c.key}-classes",
        title=f"Drop per class: {c.label}",
        reference=ref,
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
    strata = d.get("strata")
    if isinstance(strata, list) and strata and isinstance(strata[0], Mapping) and "achieved" in strata[0]:
        # replicate.sampling.SamplingResult: achieved vs target per (class, keyword) stratum
        new_counts = {f"{r['class']}/{r['keyword']}": r["achieved"] for r in strata}
        target = {f"{r['class']}/{r['keyword']}": r["target"] for r in strata}
    else:
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


def _pair_figures(obj: Any, sec: ResultSection, sets: Mapping[str, Any], dpi: int, key: str, limit: int) -> list[Figure]:
    """A gallery of flagged near-duplicate pairs (``DedupResult.pairs``), where the pixels are at hand.

    Pairs are shown closest first (aligned distance, then pixel L2), at most ``limit``.
    """
    pairs = getattr(obj, "pairs", None)
    query_name = getattr(obj, "query_name", None)
    if pairs is None or query_name is None or not hasattr(pairs, "columns") or "flagged" not in pairs.columns:
        return []
    flagged = pairs[pairs["flagged"].astype(bool)]
    if not len(flagged):
        return []
    order = [c for c in ("aligned", "l2") if c in flagged.columns]
    if order:
        flagged = flagged.sort_values(order, kind="stable")
    query = sets.get(query_name)
    if query is None and not any(r in sets for r in set(flagged["reference_set"])):
        return []

    def image(s: Any, ident: Any) -> np.ndarray | None:
        if s is None:
            return None
        try:
            return np.asarray(s.images[s.positions([str(ident)])[0]])
        except (KeyError, ValueError, IndexError):
            return None

    tiles = []
    several = flagged["reference_set"].nunique() > 1
    for r in flagged.head(limit).itertuples():
        dist = getattr(r, "aligned", None)
        text = "" if dist is None or _isnan(dist) else f"aligned {float(dist):.3g}"
        if several:
            text = f"{r.reference_set}: {text}"
        tiles.append((image(query, r.query_id), image(sets.get(r.reference_set), r.reference_id), text))
    from replicate.plots import pair_gallery

    refs = ", ".join(sorted(set(flagged["reference_set"])))
    fig = pair_gallery(
        tiles,
        name=f"{key}-pairs",
        title=f"Flagged near-duplicates of {query_name}" + (f" (closest {limit} of {len(flagged)})" if len(flagged) > limit else ""),
        left_label=str(query_name),
        right_label=refs,
        fmt="png",
        dpi=dpi,
    )
    return [_replace(fig, caption=f"Flagged pairs, closest first (left: {query_name}; right: {refs}); the number is the aligned distance.")]


def _isnan(x: Any) -> bool:
    try:
        return bool(np.isnan(float(x)))
    except (TypeError, ValueError):
        return True


def _shift_figures(sec: ResultSection, sets: Mapping[str, Any], dpi: int, key: str, per_row: int = 8) -> list[Figure]:
    """The most distinguishing images of each set (as in Torralba & Efros 2011), where the pixels are at hand."""
    d = sec.data
    rows = []
    for side in ("a", "b"):
        name, ids = d.get(f"name_{side}"), d.get(f"top_{side}")
        s = sets.get(name) if isinstance(name, str) else None
        if s is None or not ids:
            continue
        try:
            pos = s.positions([str(i) for i in ids[:per_row]])
        except (KeyError, ValueError):
            continue
        rows.append((f"most {name}-like", [np.asarray(s.images[p]) for p in pos]))
    if not rows:
        return []
    from replicate.plots import image_grid

    fig = image_grid(rows, name=f"{key}-distinguishing", title=f"Most distinguishing images: {sec.label}", set_label=sec.label, fmt="png", dpi=dpi)
    alt = (
        f"Two rows of images: the held-out images the classifier scored as most typical of each set ({sec.label}),"
        f" up to {per_row} per set."
    )
    return [_replace(fig, alt=alt, caption="The images the dataset classifier found most typical of each set (held-out scores).")]


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
    max_class_entries: int = 20_000,
    fingerprints: Mapping[str, str] | None = None,
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
    max_class_entries
        per-class drops of every model are kept while models x classes stays below this;
        beyond it (e.g. 67 models x 1,000 ImageNet classes) only the reference model's
        (highest original accuracy) are kept and the others are listed as omitted.
    fingerprints
        content fingerprints of test sets by name, for comparisons that do not carry them
        (the fingerprints of ``test_sets`` are used too).

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
    sets = _imageset_by_name(test_sets)
    fps = {name: s.fingerprint for name, s in sets.items()}
    fps.update(fingerprints or {})
    sections = [
        sec
        for i, c in enumerate(comps)
        for sec in _comparison_sections(
            c, i, None if labels is None else labels[i], max_class_entries, fps, {n: len(s) for n, s in sets.items()}
        )
    ]
    _check_labelled(sections, labelled=labels is not None)

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
                    [{**sr, "fit": {**sr["fit"], "band_label": None}} if sr.get("fit") else sr
                     for sr in (_scatter_series(c) for c in group)],
                    name=f"overview-{_slug(orig)}-{_slug(metric)}",
                    title=f"All new test sets against {orig} ({metric})",
                    xlabel=f"{orig} accuracy ({metric})",
                    ylabel=f"new test set accuracy ({metric})",
                    scale=group[0].fit.scale if group[0].fit is not None and group[0].fit.scale in ("probit", "linear") else "probit",
                    fmt=figure_format,
                    dpi=dpi,
                )
            )

    for obj in seq(sampling):  # a sampling result may carry the new test set it drew
        drawn = getattr(obj, "testset", None)
        if drawn is not None and getattr(drawn, "name", None) and drawn.name not in sets:
            sets[drawn.name] = drawn
    sampling_secs, dedup_secs, shift_secs = [], [], []
    for i, obj in enumerate(seq(sampling)):
        sec = _result_section(obj, "sampling", i)
        figs = _keyword_figures(sec, obj, figure_format, dpi, f"sampling{i}")
        figures.extend(figs)
        sampling_secs.append(_replace(sec, figures=tuple(f.name for f in figs)))
    for i, obj in enumerate(seq(dedup)):
        sec = _result_section(obj, "dedup", i)
        figs = _pair_figures(obj, sec, sets, dpi, f"dedup{i}", max_pairs)
        figures.extend(figs)
        note = None
        if not figs:
            counts = sec.data.get("counts")
            if isinstance(counts, Mapping) and counts.get("flagged_pairs") == 0:
                note = "No pairs were flagged, so there is no gallery."
            else:
                note = ("No gallery: the flagged pairs are drawn when the result object (not its JSON form) "
                        "and the image sets (test_sets) are given.")
        dedup_secs.append(_replace(sec, figures=tuple(f.name for f in figs), note=note))
    for i, obj in enumerate(seq(shift)):
        sec = _result_section(obj, "shift", i)
        figs = _shift_figures(sec, sets, dpi, f"shift{i}")
        figures.extend(figs)
        shift_secs.append(_replace(sec, figures=tuple(f.name for f in figs)))

    grid_names = []
    for s in sets.values():
        g = _grid_figure(s, seed, images_per_class, max_grid_classes, "png", dpi)
        if g is not None:
            figures.append(g)
            grid_names.append(g.name)

    manifest_list = [_manifest(m, i) for i, m in enumerate(seq(manifests))]

    # Test sets named anywhere, once each (by name and fingerprint).
    infos: dict[tuple[str, int | None, str | None], TestSetInfo] = {}
    for c in final:
        for t in (c.original, c.new):
            infos.setdefault((t.name, t.n, t.fingerprint), t)
    for s in sets.values():
        infos.setdefault((s.name, len(s), s.fingerprint), TestSetInfo(s.name, len(s), s.fingerprint))

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


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``render(report, "json")`` for this ``SCHEMA_VERSION``."""
    from importlib.resources import files

    return json.loads(files("replicate").joinpath("templates/report.schema.json").read_text(encoding="utf-8"))


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


# --------------------------------------------------------------------------- formatting


def _pct(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "–"
    text = f"{100 * x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


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
    def about(t: TestSetInfo, default: str) -> str:
        parts = [f"n = {t.n:,}"] if t.n else []
        if t.fingerprint:
            parts.append(f"fingerprint {t.fingerprint[:12]}")
        return (t.name or default) + (f" ({', '.join(parts)})" if parts else "")

    text = (
        f"{len(c.rows)} model{'s' if len(c.rows) != 1 else ''} on {about(c.original, 'the original test set')} and "
        f"{about(c.new, 'the new test set')}, {c.metric}: "
        f"the median drop is {_pct(_num(d.get('median')))} points "
        f"(range {_pct(_num(d.get('min')))} to {_pct(_num(d.get('max')))})."
    )
    f = c.fit
    if f is not None:
        text += f" The {f.method.upper() + ' ' if f.method else ''}fit on the {f.scale} scale has slope {f.slope:.3f}"
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


def _fit_text(c: ComparisonSection) -> str:
    """The fit's details for the comparison's own section (the headline has the gist)."""
    f = c.fit
    if f is None:
        return "No line was fitted (fewer than 3 models)."
    x = f.extra
    text = (
        f"Fit: {(f.method or '').upper()} on the {f.scale} scale over {x.get('n_models', len(c.rows))} models, "
        f"f(new) = {f.intercept:.4f} + {f.slope:.4f} f(original)"
    )
    if f.slope_low is not None:
        text += f"; slope interval [{f.slope_low:.4f}, {f.slope_high:.4f}], intercept interval [{f.intercept_low:.4f}, {f.intercept_high:.4f}]"
    if f.r_squared is not None:
        text += f"; R² {f.r_squared:.4f}"
    if x.get("residual_std") is not None:
        text += f", residual sd {x['residual_std']:.4f} on the scale"
    text += "."
    boot_s, boot_i = x.get("slope_boot_ci"), x.get("intercept_boot_ci")
    if boot_s and boot_i:
        text += (
            f" Bootstrap over {x.get('bootstrap')} ({x.get('n_bootstrap')} replicates): slope [{boot_s[0]:.4f}, {boot_s[1]:.4f}],"
            f" intercept [{boot_i[0]:.4f}, {boot_i[1]:.4f}]."
        )
    if x.get("outliers"):
        text += f" Outliers (kept in the fit): {', '.join(x['outliers'])}."
    if x.get("clipped"):
        text += f" Clipped ({x.get('boundary_rule')}): {', '.join(x['clipped'])}."
    excluded = c.methods.get("fit_excluded")
    if excluded:
        text += f" Left out of the fit: {', '.join(excluded)}."
    unmatched = [f"{side} only: {', '.join(c.methods[k])}" for side, k in (("original", "unmatched_original"), ("new", "unmatched_new")) if c.methods.get(k)]
    if unmatched:
        text += " Not compared (results on one set only): " + "; ".join(unmatched) + "."
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
        if kind == "tex":  # plain ASCII for LaTeX: "--" for a missing value, "$<$" for "<"
            env.filters.update(
                pct=lambda x, digits=1: _pct(x, digits).replace("–", "--"),
                pfmt=lambda p: _pfmt(p).replace("–", "--").replace("<", "$<$"),
            )
        env.globals.update(headline=_headline, ival=_ival, rank_text=_rank_text, fit_text=_fit_text)
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
    from replicate._version import __version__

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
