"""Figures for reports, drawn with matplotlib from numbers that were already computed.

Every function here takes values from result objects (accuracies, interval bounds, the
fitted line and its band, per-class drops, keyword counts, images) and draws them; none
computes a statistic. Each returns a :class:`Figure`: the encoded image (PNG or SVG),
its alt text and caption, ready to be embedded in a self-contained HTML file or written
next to a Markdown report.

Accuracy axes on the probit scale are drawn the way ImageNetV2 and "Accuracy on the
Line" draw them: positions are ``Phi^-1(accuracy)`` and ticks are labelled in percent.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from replicate._html import data_uri

__all__ = [
    "Figure",
    "FigureFormat",
    "accuracy_scatter",
    "class_drop_plot",
    "keyword_plot",
    "pair_gallery",
    "image_grid",
    "PROBIT_TICKS",
]

FigureFormat = Literal["png", "svg"]
FIGURE_FORMATS: tuple[str, ...] = ("png", "svg")

# Percent ticks for probit axes (the ones ImageNetV2's plots use, and finer ones near 100%).
PROBIT_TICKS = (1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 98, 99, 99.5, 99.8, 99.9)
# Accuracies of exactly 0 or 1 have no probit position; they are drawn at this distance from the edge.
_EDGE = 1e-4


@dataclass(frozen=True)
class Figure:
    """One encoded figure with its alt text and caption."""

    name: str
    title: str
    alt: str
    caption: str
    data: bytes = field(repr=False)
    format: str = "png"

    @property
    def mime(self) -> str:
        return "image/svg+xml" if self.format == "svg" else "image/png"

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.format}"

    def data_uri(self) -> str:
        """``data:`` URI for embedding in HTML (no network access needed)."""
        return data_uri(self.data, self.mime)

    def to_dict(self) -> dict[str, Any]:
        """Name, title, alt text, caption and file name (not the image bytes)."""
        return {
            "name": self.name,
            "title": self.title,
            "alt": self.alt,
            "caption": self.caption,
            "format": self.format,
            "filename": self.filename,
            "bytes": len(self.data),
        }


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _encode(fig: Any, fmt: str, dpi: int) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    if fmt == "svg":
        import matplotlib

        with matplotlib.rc_context({"svg.hashsalt": "replicate", "svg.fonttype": "path"}):
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    else:
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _probit(p: Any) -> np.ndarray:
    from scipy.special import ndtri

    return ndtri(np.clip(np.asarray(p, dtype=float), _EDGE, 1 - _EDGE))


def _set_axis(ax: Any, which: str, scale: str, lo: float, hi: float) -> None:
    """Limits and percent tick labels for one accuracy axis on ``scale``."""
    if scale == "probit":
        ticks = [t for t in PROBIT_TICKS if lo * 100 - 1e-9 <= t <= hi * 100 + 1e-9]
        if len(ticks) < 3:  # narrow range: add evenly spaced percent ticks
            ticks = sorted(set(ticks) | set(np.round(np.linspace(lo * 100, hi * 100, 5), 1).tolist()))
        pos = _probit(np.array(ticks) / 100)
        lim = (_probit(lo).item(), _probit(hi).item())
    else:
        ticks = list(np.round(np.linspace(lo * 100, hi * 100, 6), 1))
        pos = np.array(ticks) / 100
        lim = (lo, hi)
    labels = [f"{t:g}%" for t in ticks]
    if which == "x":
        ax.set_xlim(*lim)
        ax.set_xticks(pos, labels)
    else:
        ax.set_ylim(*lim)
        ax.set_yticks(pos, labels)


def _to_axis(p: Any, scale: str) -> np.ndarray:
    return _probit(p) if scale == "probit" else np.asarray(p, dtype=float)


def accuracy_scatter(
    series: Sequence[dict[str, Any]],
    *,
    name: str,
    title: str,
    xlabel: str,
    ylabel: str,
    scale: str = "probit",
    fmt: str = "png",
    dpi: int = 110,
) -> Figure:
    """New vs original accuracy for every model, with y = x and the fitted line with its band.

    ``series`` holds one dict per new test set, each with ``label``, ``x``/``y``
    (accuracies in [0, 1]), optional ``x_low``/``x_high``/``y_low``/``y_high`` (interval
    bounds), and optional ``fit``: ``grid`` (original accuracies), ``line`` (fitted new
    accuracy), ``band_low``/``band_high`` and ``band_label``, all already in accuracy units.

    Parameters
    ----------
    series
        one dict per new test set, as described above.
    name, title
        the figure's name (file stem) and title.
    xlabel, ylabel
        the axis labels.
    scale
        the axes' scale: ``"probit"`` (default) or linear.
    fmt, dpi
        image format (``"png"`` by default) and resolution of the encoded figure.

    Returns
    -------
    Figure
        the encoded figure with its alt text and caption.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.6), layout="constrained")
    allv = [np.asarray(s[k], dtype=float) for s in series for k in ("x", "y", "x_low", "y_low", "x_high", "y_high") if s.get(k) is not None]
    values = np.concatenate(allv) if allv else np.array([0.5])
    values = values[np.isfinite(values)]
    lo = max(float(values.min()) - 0.03, 0.005 if scale == "probit" else 0.0)
    hi = min(float(values.max()) + 0.02, 0.995 if scale == "probit" else 1.0)
    grid = np.linspace(lo, hi, 200)
    ax.plot(_to_axis(grid, scale), _to_axis(grid, scale), ls="--", color="0.45", lw=1.2, label="y = x")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vP*X"
    for i, s in enumerate(series):
        color = colors[i % len(colors)]
        x, y = np.asarray(s["x"], float), np.asarray(s["y"], float)
        fit = s.get("fit")
        if fit is not None and fit.get("grid") is not None:
            g = np.asarray(fit["grid"], float)
            keep = (g >= lo) & (g <= hi)
            if fit.get("band_low") is not None:
                ax.fill_between(
                    _to_axis(g[keep], scale),
                    _to_axis(np.asarray(fit["band_low"], float)[keep], scale),
                    _to_axis(np.asarray(fit["band_high"], float)[keep], scale),
                    color=color,
                    alpha=0.15,
                    lw=0,
                    label=fit.get("band_label"),
                )
            ax.plot(
                _to_axis(g[keep], scale),
                _to_axis(np.asarray(fit["line"], float)[keep], scale),
                color=color,
                lw=1.6,
                label=fit.get("line_label"),
            )
        if s.get("x_low") is not None and s.get("y_low") is not None:
            xe = np.abs(np.vstack([_to_axis(x, scale) - _to_axis(s["x_low"], scale), _to_axis(s["x_high"], scale) - _to_axis(x, scale)]))
            ye = np.abs(np.vstack([_to_axis(y, scale) - _to_axis(s["y_low"], scale), _to_axis(s["y_high"], scale) - _to_axis(y, scale)]))
            ax.errorbar(_to_axis(x, scale), _to_axis(y, scale), xerr=xe, yerr=ye, fmt="none", ecolor=color, alpha=0.35, lw=0.8)
        ax.scatter(_to_axis(x, scale), _to_axis(y, scale), s=22, color=color, marker=markers[i % len(markers)], zorder=3, label=s["label"])
    _set_axis(ax, "x", scale, lo, hi)
    _set_axis(ax, "y", scale, lo, hi)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", frameon=True)
    n_models = sum(len(s["x"]) for s in series)
    alt = (
        f"Scatter plot of {ylabel} against {xlabel} for {n_models} model results"
        f" ({', '.join(s['label'] for s in series)}), on {scale} axes labelled in percent,"
        " with the line y = x (dashed)"
        + (" and the fitted line with its band." if any(s.get("fit") for s in series) else ".")
    )
    caption = (
        f"{ylabel} vs {xlabel}, one point per model with its interval on both axes; "
        f"{'probit' if scale == 'probit' else 'linear'} axes labelled in percent. "
        "Dashed: y = x (no drop). Solid: the fitted line; shaded: its band."
    )
    return Figure(name, title, alt, caption, _encode(fig, fmt, dpi), fmt)


def agreement_scatter(result: Any, *, name: str, title: str | None = None, fmt: str = "png",
                      dpi: int = 110) -> Figure:
    """Agreement on the line: new vs original agreement of every model pair and accuracy of every model.

    ``result`` is an :class:`~replicate.stats.AgreementLine`; its agreement line is drawn, and
    where the new set's accuracies are known the accuracy points and line too (probit axes).

    Parameters
    ----------
    result
        an :class:`~replicate.stats.AgreementLine`.
    name
        the figure's name (file stem).
    title
        the title (``None``: "Agreement on the line: <original> -> <new>").
    fmt, dpi
        image format (``"png"`` by default) and resolution of the encoded figure.

    Returns
    -------
    Figure
        the encoded figure with its alt text and caption.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.6), layout="constrained")
    ao, an = np.asarray(result.agreement_original, float), np.asarray(result.agreement_new, float)
    xo = np.asarray(result.accuracy_original, float)
    known = result.accuracy_new is not None
    vals = [ao, an, xo] + ([np.asarray(result.accuracy_new, float)] if known else [])
    allv = np.concatenate(vals)
    lo, hi = max(float(allv.min()) - 0.03, 0.005), min(float(allv.max()) + 0.02, 0.995)
    zg = _probit(np.linspace(lo, hi, 200))
    ax.plot(zg, zg, ls="--", color="0.45", lw=1.2, label="y = x")
    ax.scatter(_probit(ao), _probit(an), s=6, color="C0", alpha=0.35, label=f"agreement, {len(ao)} pairs")
    ax.plot(zg, result.slope * zg + result.intercept, color="C0", lw=1.6,
            label=f"agreement line (R^2 {result.r2:.3f})")
    ax.scatter(_probit(xo), _probit(np.asarray(result.predicted_d, float)), s=22, color="C2", marker="x",
               label="ALine-D prediction")
    if known:
        ax.scatter(_probit(xo), _probit(np.asarray(result.accuracy_new, float)), s=22, color="C1", zorder=3,
                   label="accuracy (actual)")
        ax.plot(zg, result.accuracy_slope * zg + result.accuracy_intercept, color="C1", lw=1.6,
                label=f"accuracy line (R^2 {result.accuracy_r2:.3f})")
    _set_axis(ax, "x", "probit", lo, hi)
    _set_axis(ax, "y", "probit", lo, hi)
    ax.set_xlabel(f"{result.original_name} agreement / accuracy")
    ax.set_ylabel(f"{result.new_name} agreement / accuracy")
    title = title or f"Agreement on the line: {result.original_name} -> {result.new_name}"
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", frameon=True)
    alt = (f"Scatter plot on probit axes of the agreement of {len(ao)} model pairs on {result.new_name} against "
           f"{result.original_name}, with the fitted agreement line"
           + (", and of each model's accuracy with the accuracy line." if known else "."))
    caption = ("Agreement on the line (Baek et al. 2022): pairs' agreement (small dots, blue line), ALine-D "
               "predictions (crosses)" + (", actual accuracies (orange points and line)" if known else "")
               + ". Dashed: y = x. "
               + ("The method's checks passed." if result.holds else "Checks failed: " + "; ".join(result.warnings)))
    return Figure(name, title, alt, caption, _encode(fig, fmt, dpi), fmt)


def class_drop_plot(
    classes: Sequence[str],
    gap: Sequence[float],
    gap_low: Sequence[float] | None,
    gap_high: Sequence[float] | None,
    *,
    name: str,
    title: str,
    others: Sequence[Sequence[float]] | None = None,
    reference: str | None = None,
    fmt: str = "png",
    dpi: int = 110,
    label_top: int = 10,
) -> Figure:
    """Drop per class (original minus new accuracy, in points) of one model with its interval.

    Up to 40 classes are drawn as labelled bars, with the other models' drops per class
    (``others``, one sequence per model in the same class order) as grey dots; more classes
    (e.g. ImageNet's 1,000) as the sorted drop profile with its interval band and the
    ``label_top`` largest drops named.

    Parameters
    ----------
    classes
        the class names, in the order of ``gap``.
    gap, gap_low, gap_high
        the drop per class and its interval bounds, as fractions (drawn in points);
        bounds ``None``: no interval.
    name, title
        the figure's name (file stem) and title.
    others
        the other models' drops per class (``None``: none drawn).
    reference
        the model's name for the legend (``None``: no label).
    fmt, dpi
        image format (``"png"`` by default) and resolution of the encoded figure.
    label_top
        how many of the largest drops are named on the profile (more than 40 classes).

    Returns
    -------
    Figure
        the encoded figure with its alt text and caption.
    """
    plt = _pyplot()
    g = np.asarray(gap, float) * 100
    lo = None if gap_low is None else np.asarray(gap_low, float) * 100
    hi = None if gap_high is None else np.asarray(gap_high, float) * 100
    k = len(classes)
    if k <= 40:
        fig, ax = plt.subplots(figsize=(6.4, max(2.4, 0.28 * k + 1.0)), layout="constrained")
        order = np.arange(k)[::-1]
        xerr = None if lo is None or hi is None else np.abs(np.vstack([g - lo, hi - g]))[:, order]
        ax.barh(np.arange(k), g[order], xerr=xerr, color=np.where(g[order] >= 0, "#c0504d", "#4f81bd"), alpha=0.85,
                capsize=2, label=reference)
        if others:
            o = np.asarray(others, float)[:, order] * 100
            ax.scatter(o.ravel(), np.tile(np.arange(k), o.shape[0]), s=7, color="0.35", alpha=0.45, zorder=3,
                       label=f"other models ({o.shape[0]})")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_yticks(np.arange(k), [classes[i] for i in order], fontsize=8)
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_xlabel("drop (percentage points, original - new)")
        kind = "bar chart"
    else:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
        order = np.argsort(-g)
        xs = np.arange(k)
        if lo is not None and hi is not None:
            ax.fill_between(xs, lo[order], hi[order], color="#c0504d", alpha=0.2, lw=0, label="interval")
        ax.plot(xs, g[order], color="#c0504d", lw=1.2, label="drop")
        ax.axhline(0, color="0.3", lw=0.8)
        for j in range(min(label_top, k)):
            ax.annotate(classes[order[j]], (j, g[order[j]]), fontsize=6, xytext=(4, -2 - 7 * j), textcoords="offset points")
        ax.set_xlabel(f"classes sorted by drop ({k})")
        ax.set_ylabel("drop (percentage points)")
        ax.legend(fontsize=8, loc="upper right")
        kind = "sorted line plot"
    ax.set_title(title, fontsize=11)
    ax.grid(True, axis="x" if k <= 40 else "y", alpha=0.3)
    worst = [classes[i] for i in np.argsort(-g)[:3]]
    who = f" of {reference}" if reference else ""
    alt = (
        f"{kind.capitalize()} of the accuracy drop{who} for each of {k} classes in percentage points"
        f"{' with intervals' if lo is not None else ''}"
        f"{' and grey dots for the other models' if others and k <= 40 else ''}; largest drops: {', '.join(worst)}."
    )
    caption = (
        f"Drop per class{who} (original minus new accuracy, percentage points), with its interval"
        + ("; grey dots: the other models." if others and k <= 40 else ".")
    )
    return Figure(name, title, alt, caption, _encode(fig, fmt, dpi), fmt)


def keyword_plot(
    keywords: Sequence[str],
    new_counts: Sequence[float],
    target_counts: Sequence[float],
    *,
    name: str,
    title: str,
    new_label: str = "new set",
    target_label: str = "target",
    top: int = 30,
    fmt: str = "png",
    dpi: int = 110,
) -> Figure:
    """Share of each keyword in the new set against its target (the ``top`` largest targets).

    Parameters
    ----------
    keywords
        the keyword names.
    new_counts, target_counts
        the new set's and the target's count per keyword (same order; drawn as shares in %).
    name, title
        the figure's name (file stem) and title.
    new_label, target_label
        legend labels of the two bars.
    top
        how many keywords to show, the largest target shares first.
    fmt, dpi
        image format (``"png"`` by default) and resolution of the encoded figure.

    Returns
    -------
    Figure
        the encoded figure with its alt text and caption.
    """
    plt = _pyplot()
    new = np.asarray(new_counts, float)
    target = np.asarray(target_counts, float)
    new_share = new / max(new.sum(), 1)
    target_share = target / max(target.sum(), 1)
    order = np.lexsort((-new_share, -target_share))[:top]
    k = len(order)
    fig, ax = plt.subplots(figsize=(6.4, max(2.4, 0.24 * k + 1.2)), layout="constrained")
    pos = np.arange(k)[::-1]
    ax.barh(pos + 0.2, target_share[order] * 100, height=0.4, color="0.6", label=target_label)
    ax.barh(pos - 0.2, new_share[order] * 100, height=0.4, color="#4f81bd", label=new_label)
    ax.set_yticks(pos, [str(keywords[i]) for i in order], fontsize=7)
    ax.set_xlabel("share of images (%)")
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    shown = f"the {k} keywords with the largest target share" if len(keywords) > k else f"all {k} keywords"
    alt = f"Horizontal bar chart comparing the share of each keyword in the {new_label} and the {target_label}, for {shown}."
    caption = f"Keyword distribution of the {new_label} against its {target_label} ({shown} of {len(keywords)})."
    return Figure(name, title, alt, caption, _encode(fig, fmt, dpi), fmt)


def _tile(ax: Any, image: np.ndarray | None, text: str | None = None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if image is not None:
        ax.imshow(image, interpolation="nearest")
    else:
        ax.text(0.5, 0.5, "(no pixels)", ha="center", va="center", fontsize=6, transform=ax.transAxes)
    if text:
        ax.set_title(text, fontsize=6)


def pair_gallery(
    pairs: Sequence[tuple[np.ndarray | None, np.ndarray | None, str]],
    *,
    name: str,
    title: str,
    left_label: str,
    right_label: str,
    fmt: str = "png",
    dpi: int = 110,
) -> Figure:
    """Side-by-side image pairs (e.g. flagged near-duplicates), each with a caption line.

    Parameters
    ----------
    pairs
        ``(left image, right image, caption)`` per pair; a ``None`` image is drawn empty.
    name, title
        the figure's name (file stem) and title.
    left_label, right_label
        the sets the left and right images come from (in alt text and caption).
    fmt, dpi
        image format (``"png"`` by default) and resolution of the encoded figure.

    Returns
    -------
    Figure
        the encoded figure with its alt text and caption.
    """
    plt = _pyplot()
    k = len(pairs)
    cols = 4  # pairs per row
    rows = max(1, -(-k // cols))
    # each pair is two adjacent tiles; a narrow empty column separates pairs
    ratios = ([1.0, 1.0, 0.25] * cols)[:-1]
    fig, axes = plt.subplots(rows, len(ratios), figsize=(cols * 2.2, rows * 1.25 + 0.3), squeeze=False,
                             gridspec_kw={"width_ratios": ratios, "wspace": 0.04}, layout="constrained")
    for j in range(rows * cols):
        r, c = divmod(j, cols)
        a1, a2 = axes[r, 3 * c], axes[r, 3 * c + 1]
        if c < cols - 1:
            axes[r, 3 * c + 2].axis("off")
        if j < k:
            left, right, text = pairs[j]
            _tile(a1, left, None)
            _tile(a2, right, None)
            a1.set_title(f"#{j + 1} {text}", fontsize=6, loc="left")
        else:
            a1.axis("off")
            a2.axis("off")
    fig.suptitle(title, fontsize=9)
    alt = f"Gallery of {k} image pairs: in each pair, left is from {left_label} and right from {right_label}; the label above gives the distance."
    caption = f"Flagged pairs (left: {left_label}, right: {right_label}); the number is the pair's distance."
    return Figure(name, title, alt, caption, _encode(fig, fmt, dpi), fmt)


def image_grid(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]],
    *,
    name: str,
    title: str,
    set_label: str,
    fmt: str = "png",
    dpi: int = 110,
) -> Figure:
    """A grid of images, one row per class (``rows`` = [(class name, images), ...]).

    Parameters
    ----------
    rows
        ``(class name, images)`` per row.
    name, title
        the figure's name (file stem) and title.
    set_label
        the set's name, for the alt text and caption.
    fmt, dpi
        image format (``"png"`` by default) and resolution of the encoded figure.

    Returns
    -------
    Figure
        the encoded figure with its alt text and caption.
    """
    plt = _pyplot()
    k = len(rows)
    cols = max((len(imgs) for _, imgs in rows), default=1) or 1
    fig, axes = plt.subplots(k, cols, figsize=(cols * 0.75 + 1.4, k * 0.75 + 0.35), squeeze=False, layout="constrained")
    for r, (cls, imgs) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            if c < len(imgs):
                _tile(ax, imgs[c])
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(cls, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(title, fontsize=9)
    alt = f"Grid of randomly drawn images from {set_label}: {k} rows, one per class ({', '.join(c for c, _ in rows[:10])}{', ...' if k > 10 else ''}), up to {cols} images each."
    caption = f"Random images from {set_label}, one row per class."
    return Figure(name, title, alt, caption, _encode(fig, fmt, dpi), fmt)
