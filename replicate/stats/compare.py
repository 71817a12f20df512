"""Many models on an original and a new test set at once: :func:`compare` -> :class:`Comparison`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from replicate._results import Result
from replicate._results import json_safe as _json
from replicate._validation import check_int, fail
from replicate.stats._common import (
    ADJUST_METHODS,
    COMPARE_BOOTSTRAPS,
    FIT_METHODS,
    GAP_METHODS,
    INTERVAL_METHODS,
    SCALES,
    AdjustMethod,
    Bootstrap,
    CompareBootstrap,
    FitMethod,
    GapMethod,
    IntervalMethod,
    Scale,
    _boot_pairs,
    _check_alpha,
    _check_counts,
    _pct,
    choice,
)
from replicate.stats.agreement import AgreementLine, agreement_on_the_line
from replicate.stats.diagnose import Diagnosis, diagnose
from replicate.stats.fit import EffectiveRobustness, LinearFit, effective_robustness, linear_fit
from replicate.stats.human_labels import LabelNoiseGap, label_noise_adjusted_gap
from replicate.stats.intervals import AccuracyCI, GapCI, accuracy_ci, gap_ci
from replicate.stats.ranks import RankStability, rank_stability

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from replicate.models.predictions import PredictionSet


# --------------------------------------------------------------------------- comparison of many models


@dataclass(frozen=True)
class _Record:
    name: str
    n: int
    n_correct: int
    correct: np.ndarray | None = None
    top5_correct: np.ndarray | None = None
    n_top5_correct: int | None = None
    class_names: tuple[str, ...] | None = None
    class_n: tuple[int, ...] | None = None
    class_correct: tuple[int, ...] | None = None
    flags: tuple[str, ...] = ()
    dataset: str | None = None
    predictions: np.ndarray | None = None
    labels: np.ndarray | None = None


def _record(name: Any, item: Any, arg: str) -> _Record:
    """One model's counts from an EvalResult-like object, a JSON dict or an (n_correct, n) pair."""
    if isinstance(item, Mapping):
        get: Callable[[str], Any] = item.get
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        c, m = _check_counts(item[0], item[1], f"{arg}[{name!r}] n_correct", f"{arg}[{name!r}] n")
        return _Record(str(name), int(m), int(c))
    else:
        def get(key: str) -> Any:
            return getattr(item, key, None)
    if name is None:
        name = get("model")
    if name is None or get("n") is None or get("n_correct") is None:
        raise fail(arg, item, "evaluation results with .model, .n and .n_correct, or a mapping "
                   "model -> (n_correct, n)", "Pass EvalResult objects or counts.", error=TypeError)
    c, m = _check_counts(get("n_correct"), get("n"), f"{arg}[{name!r}].n_correct", f"{arg}[{name!r}].n")
    correct = get("correct")
    if correct is not None:
        correct = np.asarray(correct)
        if correct.dtype != bool or correct.shape != (int(m),) or int(correct.sum()) != int(c):
            raise fail(f"{arg}[{name!r}].correct", correct,
                       f"a bool array of {int(m)} images with {int(c)} True (matching n and n_correct)")
    top5 = get("top5_correct")
    top5 = None if top5 is None else np.asarray(top5, dtype=bool)
    n5 = get("n_top5_correct")
    if n5 is None and top5 is not None:
        n5 = int(top5.sum())
    cn, cc, cls = get("class_n"), get("class_correct"), get("class_names")
    flags = get("flags")
    return _Record(str(name), int(m), int(c), correct, top5, None if n5 is None else int(n5),
                   None if cls is None else tuple(str(v) for v in cls),
                   None if cn is None else tuple(int(v) for v in cn),
                   None if cc is None else tuple(int(v) for v in cc),
                   tuple(str(f) for f in flags) if flags else (),
                   None if get("dataset") is None else str(get("dataset")),
                   _optional_array(get("predictions")), _optional_array(get("labels")))


def _optional_array(value: Any) -> np.ndarray | None:
    return None if value is None else np.asarray(value)


def _collect(results: Any, arg: str) -> dict[str, _Record]:
    out: dict[str, _Record] = {}
    if isinstance(results, Mapping):
        items: Iterable[tuple[Any, Any]] = results.items()
    else:
        if isinstance(results, (str, bytes)) or not isinstance(results, Iterable):
            raise fail(arg, results, "a sequence of evaluation results or a mapping model -> (n_correct, n)",
                       error=TypeError)
        items = ((None, r) for r in results)
    for key, item in items:
        rec = _record(key, item, arg)
        if rec.name in out:
            raise fail(arg, rec.name, "unique model names", "Each model may appear once per test set.")
        out[rec.name] = rec
    if not out:
        raise fail(arg, "no results", "at least one model's results")
    return out


@dataclass(frozen=True, eq=False)
class Comparison(Result):
    """Original vs new test set for many models: everything the drop statistics say.

    ``names`` are the models found in both inputs (in the original's order);
    ``unmatched_original`` / ``unmatched_new`` those found in only one (reported, not used).
    ``original`` / ``new``: accuracies with intervals; ``gap``: drops with intervals and
    adjusted p-values; ``fit``: the line on ``fit.scale`` (``None`` with fewer than 3 models);
    ``effective_robustness``: distance above that line per model; ``ranks``: rank
    stability; ``diagnosis``: the overfitting verdict in words; ``top5``: the same comparison
    for top-5 accuracy where every model has it; ``class_drops``: per-model per-class drops
    where class counts are known. ``fit_excluded`` lists models left out of the fit (their
    effective robustness is still reported). ``agreement``: agreement on the line (ALine-S/-D
    predictions of the new-set accuracies from predictions alone, scored against the actual
    ones) when requested; ``label_noise``: the gap against human majority labels when human
    votes were given.
    """

    names: tuple[str, ...]
    original: AccuracyCI
    new: AccuracyCI
    gap: GapCI
    fit: LinearFit | None
    effective_robustness: EffectiveRobustness | None
    ranks: RankStability | None
    diagnosis: Diagnosis | None
    unmatched_original: tuple[str, ...] = ()
    unmatched_new: tuple[str, ...] = ()
    fit_excluded: tuple[str, ...] = ()
    top5: Comparison | None = None
    class_drops: Mapping[str, GapCI] = field(default_factory=dict)
    original_name: str = "original"
    new_name: str = "new"
    metric: str = "top-1"
    alpha: float = 0.05
    flags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    agreement: AgreementLine | None = None
    label_noise: LabelNoiseGap | None = None

    def __len__(self) -> int:
        return len(self.names)

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-safe dict per model (the columns of :meth:`to_dataframe`)."""
        er = self.effective_robustness
        rk = self.ranks
        out = []
        for i, name in enumerate(self.names):
            row = {
                "model": name,
                "n_orig": int(self.original.n[i]), "correct_orig": int(self.original.correct[i]),
                "acc_orig": float(self.original.accuracy[i]),
                "acc_orig_lower": float(self.original.lower[i]), "acc_orig_upper": float(self.original.upper[i]),
                "n_new": int(self.new.n[i]), "correct_new": int(self.new.correct[i]),
                "acc_new": float(self.new.accuracy[i]),
                "acc_new_lower": float(self.new.lower[i]), "acc_new_upper": float(self.new.upper[i]),
                "gap": float(self.gap.gap[i]), "gap_lower": float(self.gap.lower[i]),
                "gap_upper": float(self.gap.upper[i]), "gap_statistic": _json(self.gap.statistic[i]),
                "p_value": _json(self.gap.p_value[i]), "p_adjusted": _json(self.gap.p_adjusted[i]),
                "effective_robustness": None if er is None else _json(er.effective_robustness[i]),
                "effective_robustness_lower": None if er is None else _json(er.lower[i]),
                "effective_robustness_upper": None if er is None else _json(er.upper[i]),
                "rank_orig": None if rk is None else float(rk.rank_orig[i]),
                "rank_new": None if rk is None else float(rk.rank_new[i]),
                "in_fit": self.fit is not None and name not in self.fit_excluded,
                "flags": list(self.flags.get(name, ())),
            }
            out.append(row)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        """Rebuild a comparison from :meth:`to_dict` (or its JSON read back): ``to_dict`` round-trips exactly.

        The per-model rows give the accuracies and the gaps; every other component is rebuilt
        by its own ``from_dict``. Nothing is recomputed.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("models"), list):
            raise fail("data", data, "the to_dict() of a Comparison (a mapping with a 'models' list)",
                       error=TypeError)
        rows = data["models"]
        names = tuple(str(r["model"]) for r in rows)
        alpha = float(data["alpha"])

        def col(key: str, dtype: type = float) -> np.ndarray:
            arr: np.ndarray = np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=dtype)
            arr.flags.writeable = False
            return arr

        def accuracies(s: str) -> AccuracyCI:
            return AccuracyCI(col(f"correct_{s}", np.int64), col(f"n_{s}", np.int64), col(f"acc_{s}"),
                              col(f"acc_{s}_lower"), col(f"acc_{s}_upper"), data["interval_method"], alpha, names)

        gap = GapCI(col("correct_orig", np.int64), col("n_orig", np.int64), col("correct_new", np.int64),
                    col("n_new", np.int64), col("acc_orig"), col("acc_new"), col("gap"), col("gap_lower"),
                    col("gap_upper"), col("gap_statistic"), col("p_value"), col("p_adjusted"),
                    data["gap_method"], data["test"], data["adjust"], alpha, names)

        # per-model warnings: the comparison's own, and any a row carries (e.g. added to its JSON)
        flags = {str(k): tuple(str(f) for f in v) for k, v in data.get("flags", {}).items()}
        for name, r in zip(names, rows):
            if r.get("flags"):
                flags[name] = tuple(dict.fromkeys([*flags.get(name, ()), *(str(f) for f in r["flags"])]))

        def part(kind: type[Any], key: str) -> Any:
            return None if data.get(key) is None else kind.from_dict(data[key])

        return cls(
            names, accuracies("orig"), accuracies("new"), gap, part(LinearFit, "fit"),
            part(EffectiveRobustness, "effective_robustness"), part(RankStability, "ranks"),
            part(Diagnosis, "diagnosis"), tuple(data.get("unmatched_original", ())),
            tuple(data.get("unmatched_new", ())), tuple(data.get("fit_excluded", ())), part(Comparison, "top5"),
            {k: GapCI.from_dict(v) for k, v in data.get("class_drops", {}).items()},
            data["original_name"], data["new_name"], data["metric"], alpha, flags,
            part(AgreementLine, "agreement"), part(LabelNoiseGap, "label_noise"),
        )

    def to_dataframe(self) -> pd.DataFrame:
        """One row per model: counts, accuracies, bounds, gap, p-values, effective robustness, ranks."""
        import pandas as pd

        return pd.DataFrame(self.rows()).set_index("model")

    def summary(self) -> str:
        """A text table per model, then the fit, rank stability and the diagnosis."""
        level = f"{100 * (1 - self.alpha):g}%"
        width = max([len("model")] + [len(x) for x in self.names])
        head = (f"{self.original_name} vs {self.new_name} ({self.metric}, {len(self.names)} models; "
                f"{level} {self.original.method} intervals, {self.gap.method} gap intervals, "
                f"{self.gap.adjust}-adjusted p)")
        lines = [head, f"{'model':<{width}}  {'orig %':>7} {level + ' CI':>17}  {'new %':>7} {level + ' CI':>17}  "
                 f"{'gap pp':>7} {level + ' CI':>17}  {'p adj':>8}  {'ER pp':>6}  {'rank':>9}"]
        for r in self.rows():
            er = "" if r["effective_robustness"] is None else f"{100 * r['effective_robustness']:6.2f}"
            rank = "" if r["rank_orig"] is None else f"{r['rank_orig']:g}->{r['rank_new']:g}"
            p = r["p_adjusted"]
            lines.append(
                f"{r['model']:<{width}}  {_pct(r['acc_orig']):>7} [{_pct(r['acc_orig_lower']):>6}, "
                f"{_pct(r['acc_orig_upper']):>6}]  {_pct(r['acc_new']):>7} [{_pct(r['acc_new_lower']):>6}, "
                f"{_pct(r['acc_new_upper']):>6}]  {_pct(r['gap']):>7} [{_pct(r['gap_lower']):>6}, "
                f"{_pct(r['gap_upper']):>6}]  {'nan' if p is None else f'{p:.2g}':>8}  {er:>6}  {rank:>9}")
        if self.fit is not None:
            lines.append(self.fit.summary())
            if self.fit_excluded:
                lines.append(f"  left out of the fit: {', '.join(self.fit_excluded)}")
        else:
            lines.append("No fit: fewer than 3 models.")
        if self.ranks is not None:
            lines.append(self.ranks.summary())
        if self.diagnosis is not None:
            lines.append(self.diagnosis.summary())
        for name, fl in self.flags.items():
            for f in fl:
                lines.append(f"WARNING {name}: {f}")
        if self.unmatched_original or self.unmatched_new:
            lines.append(f"Not compared (in one set only): original only: "
                         f"{', '.join(self.unmatched_original) or '-'}; new only: {', '.join(self.unmatched_new) or '-'}")
        for extra in (self.agreement, self.label_noise):
            if extra is not None:
                lines.append(extra.summary())
        if self.top5 is not None:
            lines.append("")
            lines.append(self.top5.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: per-model rows plus every component result and the settings."""
        return {
            "original_name": self.original_name, "new_name": self.new_name, "metric": self.metric,
            "alpha": self.alpha, "interval_method": self.original.method, "gap_method": self.gap.method,
            "test": self.gap.test, "adjust": self.gap.adjust,
            "models": self.rows(),
            "unmatched_original": list(self.unmatched_original), "unmatched_new": list(self.unmatched_new),
            "fit_excluded": list(self.fit_excluded),
            "fit": None if self.fit is None else self.fit.to_dict(),
            "effective_robustness": None if self.effective_robustness is None else self.effective_robustness.to_dict(),
            "ranks": None if self.ranks is None else self.ranks.to_dict(),
            "diagnosis": None if self.diagnosis is None else self.diagnosis.to_dict(),
            "top5": None if self.top5 is None else self.top5.to_dict(),
            "class_drops": {k: v.to_dict() for k, v in self.class_drops.items()},
            "flags": {k: list(v) for k, v in self.flags.items()},
            "agreement": None if self.agreement is None else self.agreement.to_dict(),
            "label_noise": None if self.label_noise is None else self.label_noise.to_dict(),
        }


@dataclass(frozen=True)
class _Settings:
    """The validated settings of one :func:`compare` call (passed on to its top-5 twin)."""

    alpha: float
    interval: IntervalMethod
    gap_method: GapMethod
    adjust: AdjustMethod
    scale: Scale
    fit_method: FitMethod
    n_bootstrap: int
    top_k: int | None
    seed: int | None


@dataclass(frozen=True)
class _Counts:
    """Counts of the matched models on both sets, as int64 arrays."""

    correct_orig: np.ndarray
    n_orig: np.ndarray
    correct_new: np.ndarray
    n_new: np.ndarray

    @classmethod
    def of(cls, ro: list[_Record], rn: list[_Record]) -> _Counts:
        def arr(values: Iterable[int]) -> np.ndarray:
            return np.array(list(values), dtype=np.int64)

        return cls(arr(r.n_correct for r in ro), arr(r.n for r in ro), arr(r.n_correct for r in rn),
                   arr(r.n for r in rn))


def _match(orig: dict[str, _Record], new: dict[str, _Record], exclude_from_fit: Sequence[str]
           ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Models in both inputs, in only one of each, and the validated names left out of the fit."""
    names = tuple(n for n in orig if n in new)
    if not names:
        raise fail("new_results", f"models {list(new)[:5]}", f"sharing model names with original_results "
                   f"({list(orig)[:5]})", "Models are matched by name; check the names.")
    excluded = tuple(str(e) for e in exclude_from_fit)
    unknown = [e for e in excluded if e not in names]
    if unknown:
        raise fail("exclude_from_fit", unknown, "names of compared models",
                   f"Compared models include: {', '.join(names[:8])}...")
    return names, tuple(n for n in orig if n not in new), tuple(n for n in new if n not in orig), excluded


def _common_dataset(rs: list[_Record], default: str) -> str:
    found = {r.dataset for r in rs}
    return (found.pop() or default) if len(found) == 1 else default


def _input_flags(ro: list[_Record], rn: list[_Record]) -> dict[str, tuple[str, ...]]:
    flags: dict[str, tuple[str, ...]] = {}
    for a, b in zip(ro, rn):
        fl = tuple(dict.fromkeys(a.flags + b.flags))
        if fl:
            flags[a.name] = fl
    return flags


def _correct_matrices(ro: list[_Record], rn: list[_Record], bootstrap: CompareBootstrap
                      ) -> tuple[Bootstrap, np.ndarray | None, np.ndarray | None]:
    """The bootstrap ``'auto'`` resolves to, and the (models, images) correctness on each set if known."""
    per_image = all(r.correct is not None for r in ro + rn) and len({r.n for r in ro}) == 1 \
        and len({r.n for r in rn}) == 1
    resolved: Bootstrap = ("images" if per_image else "models") if bootstrap == "auto" else bootstrap
    if resolved == "images" and not per_image:
        raise fail("bootstrap", "images", "'models' or 'none' here",
                   "Resampling images needs per-image correctness (.correct) for every model on one set each.")
    if not per_image:
        return resolved, None, None
    return (resolved, np.stack([r.correct for r in ro if r.correct is not None]),
            np.stack([r.correct for r in rn if r.correct is not None]))


def _line(acc_o: AccuracyCI, acc_n: AccuracyCI, k: _Counts, names: tuple[str, ...], excluded: tuple[str, ...],
          s: _Settings, bootstrap: Bootstrap, co_mat: np.ndarray | None, cn_mat: np.ndarray | None,
          boot: tuple[np.ndarray, np.ndarray] | None
          ) -> tuple[LinearFit | None, EffectiveRobustness | None, Diagnosis | None]:
    """The fit on the models not excluded, every model's effective robustness, and the diagnosis."""
    idx = np.flatnonzero(np.array([n not in excluded for n in names]))
    if idx.size < 3:
        return None, None, None
    fit_names = [names[i] for i in idx]
    boot_fit = None if boot is None else (boot[0][:, idx], boot[1][:, idx])
    fit = linear_fit(
        acc_o.accuracy[idx], acc_n.accuracy[idx], n_orig=k.n_orig[idx], n_new=k.n_new[idx], scale=s.scale,
        method=s.fit_method, alpha=s.alpha, names=fit_names, bootstrap=bootstrap,
        n_bootstrap=s.n_bootstrap, correct_orig=None if co_mat is None else co_mat[idx],
        correct_new=None if cn_mat is None else cn_mat[idx], seed=s.seed, boot_accuracies=boot_fit,
    )
    er = effective_robustness(acc_o.accuracy, acc_n.accuracy, fit, n_orig=k.n_orig, n_new=k.n_new, names=names,
                              alpha=s.alpha)
    if idx.size < 4:
        return fit, er, None
    gap = gap_ci(k.correct_orig[idx], k.n_orig[idx], k.correct_new[idx], k.n_new[idx], alpha=s.alpha,
                 method=s.gap_method, adjust=s.adjust)
    diag = diagnose(acc_o.accuracy[idx], acc_n.accuracy[idx], gap, names=fit_names, top_k=s.top_k, alpha=s.alpha,
                    excess_scale=s.scale, n_orig=k.n_orig[idx], n_new=k.n_new[idx], boot_accuracies=boot_fit)
    return fit, er, diag


def _class_drops(ro: list[_Record], rn: list[_Record], s: _Settings) -> dict[str, GapCI]:
    """Per-class drops of each model whose class counts are known on both sets (same classes)."""
    out: dict[str, GapCI] = {}
    for a, b in zip(ro, rn):
        if not (a.class_n and b.class_n and a.class_names == b.class_names and a.class_correct and b.class_correct):
            continue
        if a.class_names is None:
            raise fail(f"original_results[{a.name!r}].class_names", None,
                       "the class names that class_n and class_correct count")
        keep = [i for i, (m1, m2) in enumerate(zip(a.class_n, b.class_n)) if m1 > 0 and m2 > 0]
        if keep:
            out[a.name] = gap_ci(
                [a.class_correct[i] for i in keep], [a.class_n[i] for i in keep],
                [b.class_correct[i] for i in keep], [b.class_n[i] for i in keep],
                alpha=s.alpha, method=s.gap_method, adjust=s.adjust, names=[a.class_names[i] for i in keep])
    return out


def _top5(ro: list[_Record], rn: list[_Record], s: _Settings, bootstrap: Bootstrap, excluded: tuple[str, ...],
          original_name: str, new_name: str) -> Comparison | None:
    """The same comparison for top-5 accuracy, where every model has it."""
    if not all(r.n_top5_correct is not None for r in ro + rn):
        return None

    def t5(rs: list[_Record]) -> list[dict[str, Any]]:
        return [{"model": r.name, "n": r.n, "n_correct": r.n_top5_correct, "correct": r.top5_correct,
                 "flags": r.flags} for r in rs]

    have_arrays = all(r.top5_correct is not None for r in ro + rn)
    return compare(t5(ro), t5(rn), alpha=s.alpha, interval=s.interval, gap_method=s.gap_method, adjust=s.adjust,
                   scale=s.scale, fit_method=s.fit_method,
                   bootstrap=bootstrap if (have_arrays or bootstrap in ("none", "models")) else "models",
                   n_bootstrap=s.n_bootstrap, exclude_from_fit=excluded, top_k=s.top_k, seed=s.seed,
                   exclude_flagged=False, original_name=original_name, new_name=new_name, metric="top-5",
                   _with_top5=False)


def compare(
    original_results: Any,
    new_results: Any,
    *,
    alpha: float = 0.05,
    interval: IntervalMethod = "clopper-pearson",
    gap_method: GapMethod = "newcombe",
    adjust: AdjustMethod = "holm",
    scale: Scale = "probit",
    fit_method: FitMethod = "ols",
    bootstrap: CompareBootstrap = "auto",
    n_bootstrap: int = 1000,
    exclude_from_fit: Sequence[str] = (),
    exclude_flagged: bool = False,
    top_k: int | None = None,
    seed: int | None = 0,
    original_name: str | None = None,
    new_name: str | None = None,
    metric: str = "top-1",
    agreement: bool = False,
    human_votes_original: Any = None,
    human_votes_new: Any = None,
    _with_top5: bool = True,
) -> Comparison:
    """Compare many models' accuracy on an original and a new test set.

    Parameters
    ----------
    original_results, new_results
        sequences of evaluation results (objects with ``.model``, ``.n``, ``.n_correct`` and
        optionally ``.correct`` (per-image bool), ``.top5_correct``, ``.class_n`` /
        ``.class_correct`` / ``.class_names``; e.g. :class:`replicate.models.results.EvalResult` or
        the dicts ``replicate evaluate --json`` writes), or mappings model -> ``(n_correct, n)``.
        Models are matched by name; names found in only one input are reported in
        ``unmatched_original`` / ``unmatched_new``.
    alpha, interval, gap_method, adjust
        interval level and methods (see :func:`accuracy_ci`, :func:`gap_ci`).
    scale, fit_method
        the line of :func:`linear_fit` used for effective robustness.
    bootstrap, n_bootstrap, seed
        bootstrap of slope/intercept and rank correlations: ``'images'`` when every model has
        per-image correctness (``'auto'``), else ``'models'``; ``'none'`` skips the fit's
        bootstrap (rank intervals then resample models).
    exclude_from_fit
        model names left out of the fit (e.g. flagged prediction files); they are still
        compared and get an effective robustness.
    exclude_flagged
        also leave out of the fit every model whose results carry ``flags`` (e.g. an
        implausible gap flagged when a prediction file was read).
    top_k
        the number of top models the diagnosis tests against the others (see :func:`diagnose`).
    original_name, new_name
        the test sets' names; default: the results' common ``.dataset``, else
        ``'original'`` / ``'new'``.
    metric
        what the counts count (``'top-1'``; the top-5 twin says ``'top-5'``).
    agreement
        also run :func:`~replicate.stats.agreement_on_the_line` (needs ``.predictions`` and the
        original's ``.labels``; the new set's labels only score its predictions), on the models
        in the fit.
    human_votes_original, human_votes_new
        ``(images, classes)`` human vote counts of either set (e.g. CIFAR-10H): adds the
        label-noise-adjusted gap (:func:`~replicate.stats.label_noise_adjusted_gap`; an upper
        bound when only the original has votes). Needs ``.predictions`` and ``.labels``.

    Per-model warnings are collected in ``Comparison.flags``: the inputs' own ``flags`` and
    models far off the fitted line (``LinearFit.outliers``).
    """
    alpha = _check_alpha(alpha)
    s = _Settings(alpha, choice("interval", interval, INTERVAL_METHODS),
                  choice("gap_method", gap_method, GAP_METHODS), choice("adjust", adjust, ADJUST_METHODS),
                  choice("scale", scale, SCALES), choice("fit_method", fit_method, FIT_METHODS), 0, top_k, seed)
    requested = choice("bootstrap", bootstrap, COMPARE_BOOTSTRAPS)
    orig = _collect(original_results, "original_results")
    new = _collect(new_results, "new_results")
    names, un_o, un_n, excluded = _match(orig, new, exclude_from_fit)
    ro, rn = [orig[n] for n in names], [new[n] for n in names]
    original_name = original_name if original_name is not None else _common_dataset(ro, "original")
    new_name = new_name if new_name is not None else _common_dataset(rn, "new")
    flags = _input_flags(ro, rn)
    if exclude_flagged:
        excluded = excluded + tuple(n for n in flags if n not in excluded)
    k = _Counts.of(ro, rn)
    acc_o = accuracy_ci(k.correct_orig, k.n_orig, alpha=alpha, method=s.interval, names=names)
    acc_n = accuracy_ci(k.correct_new, k.n_new, alpha=alpha, method=s.interval, names=names)
    gap = gap_ci(k.correct_orig, k.n_orig, k.correct_new, k.n_new, alpha=alpha, method=s.gap_method,
                 adjust=s.adjust, names=names)
    resolved, co_mat, cn_mat = _correct_matrices(ro, rn, requested)
    s = replace(s, n_bootstrap=check_int("n_bootstrap", n_bootstrap, minimum=10))
    boot = _boot_pairs(co_mat, cn_mat, s.n_bootstrap, seed) \
        if resolved == "images" and co_mat is not None and cn_mat is not None and len(names) >= 3 else None
    fit, er, diag = _line(acc_o, acc_n, k, names, excluded, s, resolved, co_mat, cn_mat, boot)
    ranks = rank_stability(acc_o.accuracy, acc_n.accuracy, names=names, correct_orig=co_mat, correct_new=cn_mat,
                           bootstrap="images" if resolved == "images" else "models", n_bootstrap=s.n_bootstrap,
                           alpha=alpha, seed=seed, boot_accuracies=boot) if len(names) >= 3 else None
    class_drops = _class_drops(ro, rn, s)
    top5 = _top5(ro, rn, s, resolved, excluded, original_name, new_name) if _with_top5 else None
    if fit is not None:
        for o in fit.outliers:
            flags[o] = flags.get(o, ()) + (
                f"far off the {fit.scale} line (|studentized residual| > 4); kept in the fit",)
    aline = label_noise = None
    if agreement or human_votes_original is not None or human_votes_new is not None:
        po, pn, lo, ln = _prediction_arrays(ro, rn, "agreement=True or human votes")
        if agreement:
            aline = agreement_on_the_line(dict(zip(names, po)), dict(zip(names, pn)), lo, labels_new=ln,
                                          exclude=[e for e in names if e in excluded],
                                          original_name=original_name, new_name=new_name)
        if human_votes_original is not None:
            label_noise = label_noise_adjusted_gap(po, human_votes_original, lo, pn, ln, human_votes_new,
                                                   names=names, alpha=alpha)
        elif human_votes_new is not None:
            raise fail("human_votes_original", None, "given when human_votes_new is",
                       "The adjusted gap needs the original's votes (alone they give an upper bound).")
    return Comparison(names, acc_o, acc_n, gap, fit, er, ranks, diag, un_o, un_n,
                      tuple(e for e in names if e in excluded), top5, class_drops,
                      original_name, new_name, metric, alpha, flags, aline, label_noise)


def _prediction_arrays(ro: list[_Record], rn: list[_Record], what: str
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-model predictions and the labels of both sets, or a clear error naming what needs them."""
    for arg, rs in (("original_results", ro), ("new_results", rn)):
        missing = [r.name for r in rs if r.predictions is None]
        if missing or rs[0].labels is None or len({r.n for r in rs}) != 1:
            raise fail(f"{arg}[{(missing or [rs[0].name])[0]!r}].predictions", None,
                       f"per-image predictions and labels of every model (for {what})",
                       "Pass EvalResult objects (e.g. PredictionSet.results(...)), not counts.")
    return (np.stack([r.predictions for r in ro]), np.stack([r.predictions for r in rn]),  # type: ignore[misc]
            ro[0].labels, rn[0].labels)  # type: ignore[return-value]


# --------------------------------------------------------------------------- published prediction files


def prediction_set_name(predictions: PredictionSet, name: str, arg: str = "dataset") -> str:
    """The canonical name of a set of a prediction file given by name, file key or alias.

    Fails naming ``arg`` and listing the file's sets (with their keys) when there is none such.
    """
    try:
        return predictions.dataset_name(name)
    except ValueError:
        sets = ", ".join(f"{k} ({b.key})" if b.key != k else k for k, b in predictions.datasets.items())
        raise fail(arg, name, f"a set in the prediction file: {sets}") from None


def compare_predictions(
    predictions: str | os.PathLike[str] | PredictionSet,
    new: str | Sequence[str] | None = None,
    *,
    original: str | None = None,
    labels: Mapping[str, Any] | None = None,
    **options: Any,
) -> list[Comparison]:
    """Reanalyse a published prediction file: one :func:`compare` per new set against the original.

    Parameters
    ----------
    predictions
        a prediction file in the CIFAR-10.1 or ImageNetV2 release layout (read with
        :func:`replicate.models.load_predictions`), or the :class:`PredictionSet` already read
        (e.g. ``load_predictions(path, labels=...)``, whose labels the alignment check also uses).
    new
        the new set(s), by canonical name, file key or alias; default: every set of the file
        other than the original, in file order.
    original
        the original test set; default: the file's reference set (its original test set,
        ``PredictionSet.reference``).
    labels
        set name -> labels (an array or an ImageSet) replacing the file's labels of that set
        in the results (``PredictionSet.results(name, labels)``).
    **options
        keyword arguments of :func:`compare` (``alpha``, ``bootstrap``, ``n_bootstrap``,
        ``exclude_flagged``, ``seed``, ...), with its defaults. The sets' canonical names become
        ``original_name`` / ``new_name``.

    Returns
    -------
    list of Comparison
        one per new set, in the order given. Models the loader flagged (e.g. a mismatched
        file) carry the reason in ``Comparison.flags``.
    """
    from replicate.models.predictions import PredictionSet, load_predictions

    for key in ("original_name", "new_name"):
        if key in options:
            raise fail(key, options[key], "left out here (the sets' canonical names are used)", error=TypeError)
    ps = predictions if isinstance(predictions, PredictionSet) else load_predictions(predictions)
    o = ps.reference if original is None else prediction_set_name(ps, original, "original")
    if new is None:
        names = [d for d in ps.datasets if d != o]
    else:
        names = [prediction_set_name(ps, n, "new") for n in ([new] if isinstance(new, str) else new)]
    if not names:
        raise fail("new", new, f"at least one set other than the original {o!r}",
                   f"The file holds: {', '.join(ps.datasets)}.")
    by_set = {prediction_set_name(ps, k, "labels"): v for k, v in (labels or {}).items()}
    orig = ps.results(o, by_set.get(o))
    return [compare(orig, ps.results(n, by_set.get(n)), original_name=o, new_name=n, **options) for n in names]
