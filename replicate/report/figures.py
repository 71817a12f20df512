"""The report's figures, drawn from the numbers of its sections (and the pixels of the image sets given)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from replicate.plots import Figure
from replicate.report._format import slug
from replicate.report.model import ComparisonSection, ResultSection, pick


def scatter_series(c: ComparisonSection) -> dict[str, Any]:
    """The accuracy scatter of one comparison: each model with its intervals, and the fit with its band."""
    s: dict[str, Any] = {
        "label": c.new.name or "new",
        "x": [r.acc_orig for r in c.rows],
        "y": [r.acc_new for r in c.rows],
    }
    if all(r.acc_orig_lower is not None and r.acc_new_lower is not None for r in c.rows):
        s.update(
            x_low=[r.acc_orig_lower for r in c.rows],
            x_high=[r.acc_orig_upper for r in c.rows],
            y_low=[r.acc_new_lower for r in c.rows],
            y_high=[r.acc_new_upper for r in c.rows],
        )
    f = c.fit
    if f is not None:
        s["fit"] = {
            "grid": tuple(f.grid.tolist()),
            "line": tuple(f.fitted.tolist()),
            "band_low": tuple(f.conf_lower.tolist()),
            "band_high": tuple(f.conf_upper.tolist()),
            "line_label": f"fit ({f.scale}): slope {f.slope:.2f}",
            "band_label": c.band or "band",
        }
    return s


def class_figure(c: ComparisonSection, fmt: str, dpi: int) -> Figure | None:
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


def imageset_by_name(test_sets: Any) -> dict[str, Any]:
    if test_sets is None:
        return {}
    if isinstance(test_sets, Mapping):
        return dict(test_sets)
    return {s.name: s for s in test_sets}


def keyword_figures(sec: ResultSection, obj: Any, fmt: str, dpi: int, key: str) -> list[Figure]:
    """Keyword distribution of the new set against its target, when the result holds both.

    Parameters
    ----------
    sec
        the result's report section; its ``data`` holds the counts.
    obj
        the result object itself (unused here; same signature as the other figure builders).
    fmt, dpi
        image format and resolution.
    key
        prefix of the figure's name.

    Returns
    -------
    list of Figure
        one keyword plot, or empty when the counts are not there.
    """
    d = sec.data
    strata = d.get("strata")
    if isinstance(strata, list) and strata and isinstance(strata[0], Mapping) and "achieved" in strata[0]:
        # replicate.sampling.SamplingResult: achieved vs target per (class, keyword) stratum
        new_counts = {f"{r['class']}/{r['keyword']}": r["achieved"] for r in strata}
        target = {f"{r['class']}/{r['keyword']}": r["target"] for r in strata}
    else:
        new_counts = pick(d, "keyword_counts", "selected_keyword_counts", "new_keyword_counts")
        target = pick(d, "target_keyword_counts", "target_counts", "keyword_targets")
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
            new_label=str(pick(d, "name", default="new set")),
            target_label="target",
            fmt=fmt,
            dpi=dpi,
        )
    ]


def pair_figures(obj: Any, sec: ResultSection, sets: Mapping[str, Any], dpi: int, key: str, limit: int) -> list[Figure]:
    """A gallery of flagged near-duplicate pairs (``DedupResult.pairs``), where the pixels are at hand.

    Pairs are shown closest first (aligned distance, then pixel L2), at most ``limit``.

    Parameters
    ----------
    obj
        a dedup result with a ``pairs`` table and ``query_name``.
    sec
        the result's report section (its label).
    sets
        the image sets by name, where the pixels come from.
    dpi
        resolution of the figure.
    key
        prefix of the figure's name.
    limit
        the most pairs shown.

    Returns
    -------
    list of Figure
        one gallery, or empty when there are no flagged pairs or no pixels.
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
    return [replace(fig, caption=f"Flagged pairs, closest first (left: {query_name}; right: {refs}); the number is the aligned distance.")]


def _isnan(x: Any) -> bool:
    try:
        return bool(np.isnan(float(x)))
    except (TypeError, ValueError):
        return True


def shift_figures(sec: ResultSection, sets: Mapping[str, Any], dpi: int, key: str, per_row: int = 8) -> list[Figure]:
    """The most distinguishing images of each set (as in Torralba & Efros 2011), where the pixels are at hand.

    Parameters
    ----------
    sec
        the shift test's report section; ``data`` holds ``name_a``/``name_b`` and ``top_a``/``top_b``.
    sets
        the image sets by name, where the pixels come from.
    dpi
        resolution of the figure.
    key
        prefix of the figure's name.
    per_row
        the most images shown per set.

    Returns
    -------
    list of Figure
        one image grid, or empty when no set's pixels are at hand.
    """
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
    return [replace(fig, alt=alt, caption="The images the dataset classifier found most typical of each set (held-out scores).")]


def grid_figure(s: Any, seed: int, per_class: int, max_classes: int, fmt: str, dpi: int) -> Figure | None:
    """A grid of random images of ``s``, one row per class, drawn with ``seed``.

    Parameters
    ----------
    s
        the image set.
    seed
        seed of the random draw of classes and images.
    per_class
        the most images per row.
    max_classes
        the most rows; more classes are subsampled at random.
    fmt, dpi
        image format and resolution.

    Returns
    -------
    Figure or None
        the grid, or ``None`` when no image is labelled.
    """
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
    fig = image_grid(rows, name=f"grid-{slug(s.name)}", title=f"Random images: {s.name} ({shown}, seed {seed})", set_label=s.name, fmt=fmt, dpi=dpi)
    return fig
