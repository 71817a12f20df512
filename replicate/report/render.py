"""Rendering a :class:`~replicate.report.model.Report`: HTML, Markdown, JSON, CSV and LaTeX."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from replicate._results import json_safe
from replicate._validation import check_choice, fail
from replicate._version import __version__
from replicate.report._format import ival, num, num_fmt, pct, pfmt, rank, slug
from replicate.report.model import ComparisonSection, ModelRow, Report

Format = Literal["html", "md", "json", "csv", "tex"]
FORMATS: tuple[str, ...] = ("html", "md", "json", "csv", "tex")
EXTENSIONS = {"html": "html", "md": "md", "json": "json", "csv": "csv", "tex": "tex"}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``render(report, "json")`` for this ``SCHEMA_VERSION``."""
    from importlib.resources import files

    return json.loads(files("replicate.report").joinpath("templates/report.schema.json").read_text(encoding="utf-8"))


def _fit_text(c: ComparisonSection) -> str:
    """The fit's details for the comparison's own section (the headline has the gist)."""
    f = c.fit
    if f is None:
        return "No line was fitted (fewer than 3 models)."
    text = (
        f"Fit: {(f.method or '').upper()} on the {f.scale} scale over {f.n_models} models, "
        f"f(new) = {f.intercept:.4f} + {f.slope:.4f} f(original)"
        f"; slope interval [{f.slope_ci[0]:.4f}, {f.slope_ci[1]:.4f}], "
        f"intercept interval [{f.intercept_ci[0]:.4f}, {f.intercept_ci[1]:.4f}]"
    )
    if not math.isnan(f.r2):
        text += f"; R² {f.r2:.4f}"
    if not math.isnan(f.residual_std):
        text += f", residual sd {f.residual_std:.4f} on the scale"
    text += "."
    boot_s, boot_i = f.slope_boot_ci, f.intercept_boot_ci
    if boot_s and boot_i:
        text += (
            f" Bootstrap over {f.bootstrap} ({f.n_bootstrap} replicates): slope [{boot_s[0]:.4f}, {boot_s[1]:.4f}],"
            f" intercept [{boot_i[0]:.4f}, {boot_i[1]:.4f}]."
        )
    if f.outliers:
        text += f" Outliers (kept in the fit): {', '.join(f.outliers)}."
    if f.clipped:
        text += f" Clipped ({f.boundary_rule}): {', '.join(f.clipped)}."
    excluded = c.methods.get("fit_excluded")
    if excluded:
        text += f" Left out of the fit: {', '.join(excluded)}."
    unmatched = [f"{side} only: {', '.join(c.methods[k])}"
                 for side, k in (("original", "unmatched_original"), ("new", "unmatched_new")) if c.methods.get(k)]
    if unmatched:
        text += " Not compared (results on one set only): " + "; ".join(unmatched) + "."
    return text


def _rank_text(c: ComparisonSection) -> str:
    """Rank stability in one sentence (empty when the comparison holds none)."""
    r = c.ranks
    if r is None:
        return ""
    parts = []
    for v, ci, sym in ((r.kendall_tau, r.kendall_ci, "Kendall tau"), (r.spearman_rho, r.spearman_ci, "Spearman rho")):
        if num(v) is None:
            continue
        text = f"{sym} {v:.3f}"
        if num(ci[0]) is not None and num(ci[1]) is not None:
            text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        parts.append(text)
    out = "Rank stability: " + ", ".join(parts) if parts else "Rank stability"
    if r.bootstrap:
        out += f" (bootstrap over {r.bootstrap}, {r.n_bootstrap} replicates)"
    if r.largest_changes:
        out += "; largest rank changes: " + "; ".join(f"{n} {float(a):g} → {float(b):g}" for n, a, b in r.largest_changes)
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

        loader = jinja2.PackageLoader("replicate.report", "templates")
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
        env.filters.update(rank=rank, pct=pct, ival=ival, pfmt=pfmt, num=num_fmt, slug=slug)
        if kind == "tex":  # plain ASCII for LaTeX: "--" for a missing value, "$<$" for "<"
            env.filters.update(
                pct=lambda x, digits=1: pct(x, digits).replace("–", "--"),
                pfmt=lambda p: pfmt(p).replace("–", "--").replace("<", "$<$"),
            )
        env.globals.update(headline=ComparisonSection.headline, ival=ival, rank_text=_rank_text, fit_text=_fit_text)
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
        return json.dumps(json_safe(report.to_dict()), indent=2, sort_keys=True, allow_nan=False) + "\n"
    if format == "csv":
        return _csv(report)
    figs = {f.name: f for f in report.figures}
    template = {"html": "report.html.j2", "md": "report.md.j2", "tex": "report.tex.j2"}[format]
    return _env(format).get_template(template).render(
        r=report,
        figs=figs,
        figure_dir=figure_dir,
        version=__version__,
        manifests_json=[json.dumps(json_safe(m), indent=1, sort_keys=True) for m in report.manifests],
    )


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
