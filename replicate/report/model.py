"""What a report shows, as data: sections built from the result objects, never recomputed.

A comparison section holds the :class:`replicate.stats.Comparison`'s own results (its
:class:`~replicate.stats.LinearFit`, :class:`~replicate.stats.RankStability` and per-model rows
under the names ``Comparison.rows()`` gives them), so the report and the statistics share one
vocabulary for every number. Dicts (``Comparison.to_dict()``, the JSON of ``replicate compare
--json``) are read back with :meth:`Comparison.from_dict`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from replicate._results import json_safe
from replicate._validation import fail
from replicate._version import __version__
from replicate.plots import Figure
from replicate.report._format import ival, num, num_fmt, pct, pfmt, slug
from replicate.stats import Comparison, LinearFit, RankStability

SCHEMA = "replicate.report"
SCHEMA_VERSION = 2
_N = {"original": "n_orig", "new": "n_new"}


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
    """One model's numbers in one comparison, named as ``replicate.stats.Comparison.rows()`` names them.

    Accuracies, bounds and gaps are fractions in [0, 1] (the gap is original minus new);
    counts are kept so every accuracy can be traced back to ``correct / n``. ``flags`` adds
    "left out of the fit" for a model the fit did not use (``in_fit`` false in the row).
    """

    model: str
    n_orig: int
    correct_orig: int
    acc_orig: float
    acc_orig_lower: float | None
    acc_orig_upper: float | None
    n_new: int
    correct_new: int
    acc_new: float
    acc_new_lower: float | None
    acc_new_upper: float | None
    gap: float
    gap_lower: float | None
    gap_upper: float | None
    gap_statistic: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    effective_robustness: float | None = None
    effective_robustness_lower: float | None = None
    effective_robustness_upper: float | None = None
    rank_orig: float | None = None
    rank_new: float | None = None
    flags: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ModelRow:
        """A row of ``Comparison.rows()`` (JSON-safe already: NaN is None)."""
        flags = [str(f) for f in (row.get("flags") or ())]
        if row.get("in_fit") is False:
            flags.append("left out of the fit")
        names = [f.name for f in fields(cls) if f.name != "flags"]
        values: dict[str, Any] = {k: row.get(k) for k in names}
        return cls(**values, flags=tuple(flags))

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["flags"] = list(self.flags)
        return out


def _band(fit: LinearFit) -> str:
    return f"{100 * (1 - fit.alpha):g}% confidence band of the line"


@dataclass(frozen=True)
class ComparisonSection:
    """One original test set against one new test set for many models, on one metric.

    ``fit`` and ``ranks`` are the comparison's own :class:`LinearFit` and
    :class:`RankStability`; ``rows`` its per-model rows; ``drop`` the order statistics of
    the gaps it states (no estimate is made here).
    """

    key: str
    label: str
    original: TestSetInfo
    new: TestSetInfo
    metric: str
    rows: tuple[ModelRow, ...]
    fit: LinearFit | None
    diagnosis: str | None
    drop: Mapping[str, Any]
    methods: Mapping[str, Any]
    ranks: RankStability | None = None
    per_class: Mapping[str, Any] | None = None
    figures: tuple[str, ...] = ()
    verdict: str | None = None

    @property
    def band(self) -> str | None:
        """What the fit's band is (``None`` without a fit)."""
        return None if self.fit is None else _band(self.fit)

    def headline(self) -> str:
        """One paragraph: sets, drop median and range, the fit, the diagnosis."""
        d = self.drop

        def about(t: TestSetInfo, default: str) -> str:
            parts = [f"n = {t.n:,}"] if t.n else []
            if t.fingerprint:
                parts.append(f"fingerprint {t.fingerprint[:12]}")
            return (t.name or default) + (f" ({', '.join(parts)})" if parts else "")

        text = (
            f"{len(self.rows)} model{'s' if len(self.rows) != 1 else ''} on "
            f"{about(self.original, 'the original test set')} and {about(self.new, 'the new test set')}, "
            f"{self.metric}: the median drop is {pct(num(d.get('median')))} points "
            f"(range {pct(num(d.get('min')))} to {pct(num(d.get('max')))})."
        )
        f = self.fit
        if f is not None:
            text += f" The {f.method.upper() + ' ' if f.method else ''}fit on the {f.scale} scale has slope {f.slope:.3f}"
            if num(f.slope_ci[0]) is not None and num(f.slope_ci[1]) is not None:
                text += f" [{f.slope_ci[0]:.3f}, {f.slope_ci[1]:.3f}]"
            text += f" and intercept {f.intercept:.3f}"
            if num(f.intercept_ci[0]) is not None and num(f.intercept_ci[1]) is not None:
                text += f" [{f.intercept_ci[0]:.3f}, {f.intercept_ci[1]:.3f}]"
            if num(f.r2) is not None:
                text += f" (R² = {f.r2:.3f})"
            text += "."
        if self.diagnosis:
            text += " " + self.diagnosis.strip()
        return text

    def to_dict(self) -> dict[str, Any]:
        fit = None if self.fit is None else {**self.fit.to_dict(), "band": _band(self.fit)}
        return {
            "key": self.key,
            "label": self.label,
            "original": self.original.to_dict(),
            "new": self.new.to_dict(),
            "metric": self.metric,
            "methods": dict(self.methods),
            "drop": dict(self.drop),
            "fit": fit,
            "diagnosis": self.diagnosis,
            "verdict": self.verdict,
            "rank_stability": None if self.ranks is None else self.ranks.to_dict(),
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
            lines.append(f"- {c.headline()}")
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


def pick(d: Mapping[str, Any] | None, *names: str, default: Any = None) -> Any:
    """The first of ``names`` present (and not None) in ``d``."""
    if not d:
        return default
    for n in names:
        if n in d and d[n] is not None:
            return d[n]
    return default


# --------------------------------------------------------------------------- comparisons

_REQUIRED_ROW_KEYS = ("model", "n_orig", "correct_orig", "acc_orig", "n_new", "correct_new", "acc_new", "gap")
_HINT = "Pass the Comparison returned by replicate.stats.compare, or the JSON of 'replicate compare --json'."


def _as_comparison(obj: Any, where: str) -> Comparison:
    """The comparison itself, or one read back from its dict (rows checked first, with the house message)."""
    if isinstance(obj, Comparison):
        return obj
    d = _as_dict(obj, where)
    models = d.get("models")
    if not isinstance(models, list) or not models:
        raise fail(where, {k: d[k] for k in list(d)[:5]}, "a comparison with per-model rows ('models')", _HINT)
    for i, m in enumerate(models):
        missing = [k for k in _REQUIRED_ROW_KEYS if not isinstance(m, Mapping) or m.get(k) is None]
        if missing:
            raise fail(
                f"{where}.models[{i}]",
                {k: m.get(k) for k in list(m)[:4]} if isinstance(m, Mapping) else m,
                f"a model row of replicate.stats.Comparison with {', '.join(_REQUIRED_ROW_KEYS)} "
                f"(missing: {', '.join(missing)})",
                _HINT,
            )
    try:
        return Comparison.from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise fail(where, {k: d[k] for k in list(d)[:5]}, "the to_dict() of a replicate.stats.Comparison",
                   f"{_HINT} ({type(exc).__name__}: {exc})") from None


def _test_set(cmp: Comparison, side: str, index: int, fingerprint: str | None, sizes: Mapping[str, int] | None
              ) -> TestSetInfo:
    name = cmp.original_name if side == "original" else cmp.new_name
    counts = {int(v) for v in (cmp.original if side == "original" else cmp.new).n}
    n = counts.pop() if len(counts) == 1 else None
    if sizes and name in sizes and n is not None and sizes[name] != n:
        raise fail(
            f"test_sets[{name!r}]",
            f"{sizes[name]} images",
            f"the test set of comparisons[{index}], which has {n} images under that name",
            "An image set and a comparison share a name but not their images; rename one "
            "(e.g. with ImageSet.renamed) so the report can say which is which.",
        )
    return TestSetInfo(name, n, fingerprint)


def _drop(rows: Sequence[ModelRow]) -> dict[str, Any]:
    """Order statistics of the per-model gaps the comparison states (no estimate is made here)."""
    gaps = np.array([r.gap for r in rows])
    return {
        "median": float(np.median(gaps)),
        "min": float(gaps.min()),
        "max": float(gaps.max()),
        "min_model": rows[int(gaps.argmin())].model,
        "max_model": rows[int(gaps.argmax())].model,
        "n_models": len(rows),
    }


def comparison_sections(
    obj: Any, index: int, label: str | None, max_class_entries: int, fingerprints: Mapping[str, str],
    sizes: Mapping[str, int] | None = None,
) -> list[ComparisonSection]:
    """One section per metric of a ``replicate.stats.Comparison`` (top-1, and top-5 when it holds one).

    Parameters
    ----------
    obj
        a ``Comparison`` or its ``to_dict()`` mapping.
    index
        its position in the report's comparisons (in error messages and section keys).
    label
        the section's label (``None``: "<original> vs <new> (<metric>)").
    max_class_entries
        the most (model, class) drop entries kept; beyond it only the reference model's.
    fingerprints
        test-set fingerprints by set name, used when the comparison holds none.
    sizes
        known test-set sizes by name, checked against the comparison's (``None``: no check).

    Returns
    -------
    list of ComparisonSection
        one per metric.
    """
    where = f"comparisons[{index}]"
    cmp = _as_comparison(obj, where)
    d = cmp.to_dict()
    given = obj if isinstance(obj, Mapping) else {}
    # the rows as given: a dict's own (its numbers are what the report shows), else the comparison's
    rows = tuple(ModelRow.from_row(m) for m in (given.get("models") or d["models"]))
    infos = [_test_set(cmp, side, index, given.get(f"{side}_fingerprint") or fingerprints.get(name), sizes)
             for side, name in (("original", cmp.original_name), ("new", cmp.new_name))]
    _check_one_table(rows, index, infos[0], infos[1])
    dg = cmp.diagnosis
    methods: dict[str, Any] = {k: d[k] for k in ("alpha", "interval_method", "gap_method", "test", "adjust")}
    for key in ("unmatched_original", "unmatched_new", "fit_excluded"):
        if d.get(key):
            methods[key] = list(d[key])
    text = label or f"{cmp.original_name or 'original'} vs {cmp.new_name or 'new'} ({cmp.metric})"
    if label and cmp.metric != "top-1":
        text = f"{label} ({cmp.metric})"
    sec = ComparisonSection(
        key=f"c{index}-{slug(cmp.metric)}-{slug(text)[:48]}",  # unique per comparison and metric
        label=text,
        original=infos[0],
        new=infos[1],
        metric=cmp.metric,
        rows=rows,
        fit=cmp.fit,
        diagnosis=None if dg is None else f"Diagnosis: {dg.verdict}. {dg.text or ''}".strip(),
        drop=_drop(rows),
        methods=methods,
        ranks=cmp.ranks,
        per_class=_class_drops(d.get("class_drops"), rows, max_class_entries),
        verdict=None if dg is None else dg.verdict,
    )
    out = [sec]
    if cmp.top5 is not None:
        top5 = {**given["top5"]} if isinstance(given.get("top5"), Mapping) else cmp.top5
        out.extend(comparison_sections(top5, index, label, max_class_entries, fingerprints, sizes))
    return out


def _class_drops(drops: Mapping[str, Any] | None, rows: Sequence[ModelRow], max_entries: int) -> dict[str, Any] | None:
    """Per-model per-class drops (``Comparison.class_drops``) in the report's form.

    The reference model (drawn in the figure) is the one with the highest original accuracy.
    When models x classes exceeds ``max_entries`` only the reference model's classes are kept,
    and the others are named in ``omitted_models``.
    """
    if not drops:
        return None
    order = sorted(drops, key=lambda name: -next((r.acc_orig for r in rows if r.model == name), -1.0))
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


def _check_one_table(rows: Sequence[ModelRow], index: int, original: TestSetInfo, new: TestSetInfo) -> None:
    """One model table holds results on one pair of test sets: the sizes must agree."""
    for side, info in (("original", original), ("new", new)):
        sizes = {getattr(r, _N[side]) for r in rows} - {None}
        if len(sizes) > 1:
            by: dict[int | None, str] = {}
            for r in rows:
                by.setdefault(getattr(r, _N[side]), r.model)
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
            out[key] = json_safe(v)
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
            f"Held-out accuracy {pct(num(d.get('accuracy')))}% {ival(num(acc_ci[0]), num(acc_ci[1]))} "
            f"({d.get('n_correct')} of {d.get('n_total')}), AUC {num_fmt(num(d.get('auc')))} "
            f"[{num_fmt(num(auc_ci[0]))}, {num_fmt(num(auc_ci[1]))}], permutation p = {pfmt(num(d.get('p_value')))}"
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


def result_section(obj: Any, kind: str, index: int) -> ResultSection:
    d = json_safe(_as_dict(obj, f"{kind}[{index}]"))
    summary = obj.summary() if hasattr(obj, "summary") else ""
    label = pick(d, "label", "name", "dataset", default=None)
    if label is None:
        a = pick(d, "name_a", "a", "a_name", "query")
        b = pick(d, "name_b", "b", "b_name", "reference")
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


def manifest(obj: Any, index: int) -> dict[str, Any]:
    if isinstance(obj, (str, Path)):
        path = Path(obj)
        if not path.is_file():
            raise fail(f"manifests[{index}]", str(obj), "a readable manifest JSON file", error=FileNotFoundError)
        return json.loads(path.read_text())
    return json_safe(_as_dict(obj, f"manifests[{index}]"))
