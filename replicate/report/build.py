"""``build_report``: gather result objects into a :class:`~replicate.report.model.Report` and draw its figures."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from replicate._validation import check_choice, fail
from replicate.plots import FIGURE_FORMATS, Figure
from replicate.report._format import slug
from replicate.report.figures import (
    class_figure,
    grid_figure,
    imageset_by_name,
    keyword_figures,
    pair_figures,
    scatter_series,
    shift_figures,
)
from replicate.report.model import (
    ComparisonSection,
    Report,
    ResultSection,
    TestSetInfo,
    _check_labelled,
    comparison_sections,
    manifest,
    result_section,
)


def _seq(x: Any) -> list[Any]:
    if x is None:
        return []
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def _scatter_scale(c: ComparisonSection) -> str:
    return c.fit.scale if c.fit is not None and c.fit.scale in ("probit", "linear") else "probit"


def _comparison_figures(sections: Sequence[ComparisonSection], fmt: str, dpi: int
                        ) -> tuple[list[ComparisonSection], list[Figure]]:
    """Each comparison's scatter (and per-class drops), then one overview per original set and metric."""
    from replicate.plots import accuracy_scatter

    figures: list[Figure] = []
    final: list[ComparisonSection] = []
    for c in sections:
        fig = accuracy_scatter(
            [scatter_series(c)],
            name=f"{c.key}-scatter",
            title=c.label,
            xlabel=f"{c.original.name or 'original'} accuracy ({c.metric})",
            ylabel=f"{c.new.name or 'new'} accuracy ({c.metric})",
            scale=_scatter_scale(c),
            fmt=fmt,
            dpi=dpi,
        )
        names = [fig.name]
        figures.append(fig)
        cf = class_figure(c, fmt, dpi)
        if cf is not None:
            figures.append(cf)
            names.append(cf.name)
        final.append(replace(c, figures=tuple(names)))
    # One overview scatter when several new sets share an original set and metric.
    groups: dict[tuple[str, str], list[ComparisonSection]] = {}
    for c in final:
        groups.setdefault((c.original.name, c.metric), []).append(c)
    for (orig, metric), group in groups.items():
        if len(group) > 1:
            figures.append(
                accuracy_scatter(
                    [{**sr, "fit": {**sr["fit"], "band_label": None}} if sr.get("fit") else sr
                     for sr in (scatter_series(c) for c in group)],
                    name=f"overview-{slug(orig)}-{slug(metric)}",
                    title=f"All new test sets against {orig} ({metric})",
                    xlabel=f"{orig} accuracy ({metric})",
                    ylabel=f"new test set accuracy ({metric})",
                    scale=_scatter_scale(group[0]),
                    fmt=fmt,
                    dpi=dpi,
                )
            )
    return final, figures


def _dedup_note(sec: ResultSection) -> str:
    counts = sec.data.get("counts")
    if isinstance(counts, Mapping) and counts.get("flagged_pairs") == 0:
        return "No pairs were flagged, so there is no gallery."
    return ("No gallery: the flagged pairs are drawn when the result object (not its JSON form) "
            "and the image sets (test_sets) are given.")


def _stage_sections(sampling: list[Any], dedup: list[Any], shift: list[Any], sets: Mapping[str, Any], fmt: str,
                    dpi: int, max_pairs: int) -> tuple[dict[str, list[ResultSection]], list[Figure]]:
    """The sampling, dedup and shift sections with their figures."""
    out: dict[str, list[ResultSection]] = {"sampling": [], "dedup": [], "shift": []}
    figures: list[Figure] = []
    for kind, objs in (("sampling", sampling), ("dedup", dedup), ("shift", shift)):
        for i, obj in enumerate(objs):
            sec = result_section(obj, kind, i)
            if kind == "sampling":
                figs = keyword_figures(sec, obj, fmt, dpi, f"sampling{i}")
            elif kind == "dedup":
                figs = pair_figures(obj, sec, sets, dpi, f"dedup{i}", max_pairs)
            else:
                figs = shift_figures(sec, sets, dpi, f"shift{i}")
            figures.extend(figs)
            note = _dedup_note(sec) if kind == "dedup" and not figs else None
            out[kind].append(replace(sec, figures=tuple(f.name for f in figs), note=note))
    return out, figures


def _test_set_infos(final: Sequence[ComparisonSection], sets: Mapping[str, Any]) -> tuple[TestSetInfo, ...]:
    """Test sets named anywhere, once each (by name and fingerprint)."""
    infos: dict[tuple[str, int | None, str | None], TestSetInfo] = {}
    for c in final:
        for t in (c.original, c.new):
            infos.setdefault((t.name, t.n, t.fingerprint), t)
    for s in sets.values():
        infos.setdefault((s.name, len(s), s.fingerprint), TestSetInfo(s.name, len(s), s.fingerprint))
    return tuple(infos.values())


def _absent(final: Sequence[ComparisonSection], stages: Mapping[str, list[ResultSection]], grids: list[str],
            manifests: list[Any]) -> dict[str, str]:
    """One line for each section the report cannot show, saying why."""
    absent: dict[str, str] = {}
    if not final:
        absent["comparisons"] = "No comparison results were given, so there is no model table or accuracy plot."
    if not stages["sampling"]:
        absent["sampling"] = "No sampling results were given, so there is no keyword distribution."
    if not stages["dedup"]:
        absent["dedup"] = "No near-duplicate results were given, so there is no gallery of flagged pairs."
    if not stages["shift"]:
        absent["shift"] = "No dataset-shift test was given."
    if not grids:
        absent["images"] = "No image sets were given, so there is no grid of test images."
    if final and not any(c.per_class for c in final):
        absent["per_class"] = "The comparisons hold no per-class drops."
    if not manifests:
        absent["provenance"] = "No manifests were given."
    return absent


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
        written by ``replicate compare --json``, read back with ``Comparison.from_dict``): one
        original test set against one new test set for many models. Several new sets
        (CIFAR-10.1 v4 and v6; ImageNetV2's three sets, top-1 and top-5) are several comparisons.
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
    dpi
        resolution of the PNG figures.
    seed
        seed for the random images shown per class (stored in the report).
    images_per_class, max_grid_classes
        images per class in each set's grid, and at most this many (randomly chosen) classes.
    max_pairs
        at most this many flagged near-duplicate pairs in the gallery (closest first).
    max_class_entries
        per-class drops of every model are kept while models x classes stays below this;
        beyond it (e.g. 67 models x 1,000 ImageNet classes) only the reference model's
        (highest original accuracy) are kept and the others are listed as omitted.
    fingerprints
        content fingerprints of test sets by name, for comparisons that do not carry them
        (the fingerprints of ``test_sets`` are used too).
    created
        the creation time to state (default: now, UTC); pass one for reproducible output.

    Raises
    ------
    ValueError
        for comparisons that cannot be told apart (unnamed test sets, one name for different
        sets, duplicate labels) or a comparison whose models were evaluated on different sets.
    """
    check_choice("figure_format", figure_format, FIGURE_FORMATS)
    comps = _seq(comparisons)
    if labels is not None and len(labels) != len(comps):
        raise fail("labels", list(labels), f"one label per comparison ({len(comps)})")
    sets = imageset_by_name(test_sets)
    fps = {name: s.fingerprint for name, s in sets.items()}
    fps.update(fingerprints or {})
    sizes = {n: len(s) for n, s in sets.items()}
    sections = [sec for i, c in enumerate(comps)
                for sec in comparison_sections(c, i, None if labels is None else labels[i], max_class_entries, fps, sizes)]
    _check_labelled(sections, labelled=labels is not None)
    final, figures = _comparison_figures(sections, figure_format, dpi)
    for i, comp in enumerate(comps):  # agreement on the line, where compare(..., agreement=True) ran it
        aline = getattr(comp, "agreement", None)
        if aline is not None:
            from replicate.plots import agreement_scatter

            fig = agreement_scatter(aline, name=f"agreement-{i}-{slug(aline.new_name)}", fmt=figure_format, dpi=dpi)
            figures.append(fig)
            final = [replace(sec, figures=(*sec.figures, fig.name))
                     if sec.key.startswith(f"c{i}-") and sec.metric == getattr(comp, "metric", "top-1") else sec
                     for sec in final]
    for obj in _seq(sampling):  # a sampling result may carry the new test set it drew
        drawn = getattr(obj, "testset", None)
        if drawn is not None and getattr(drawn, "name", None) and drawn.name not in sets:
            sets[drawn.name] = drawn
    stages, stage_figures = _stage_sections(_seq(sampling), _seq(dedup), _seq(shift), sets, figure_format, dpi,
                                            max_pairs)
    figures.extend(stage_figures)
    grids = [g for g in (grid_figure(s, seed, images_per_class, max_grid_classes, "png", dpi) for s in sets.values())
             if g is not None]
    figures.extend(grids)
    manifest_list = [manifest(m, i) for i, m in enumerate(_seq(manifests))]
    return Report(
        title=title,
        comparisons=tuple(final),
        sampling=tuple(stages["sampling"]),
        dedup=tuple(stages["dedup"]),
        shift=tuple(stages["shift"]),
        test_sets=_test_set_infos(final, sets),
        manifests=tuple(manifest_list),
        figures=tuple(figures),
        absent=_absent(final, stages, [g.name for g in grids], manifest_list),
        params={
            "figure_format": figure_format,
            "dpi": dpi,
            "seed": seed,
            "images_per_class": images_per_class,
            "max_grid_classes": max_grid_classes,
            "max_pairs": max_pairs,
            "image_grids": [g.name for g in grids],
        },
        created=created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
