"""Reports rendered from result objects: HTML, Markdown, JSON, CSV and LaTeX.

``build_report(...)`` gathers the results of a replication (statistics comparisons,
sampling, deduplication, dataset-shift tests, manifests, and optionally the image sets
for picture grids) into one :class:`Report`: the numbers as the results state them, and
the figures drawn from those numbers. ``render(report, format)`` turns it into a string;
writing files is the command line's job (``replicate report``).

A report never recomputes a statistic: every accuracy, interval, p-value, fit and
diagnosis is the result objects' own (a comparison section holds the
:class:`~replicate.stats.Comparison`'s fit and rank stability, and its rows under the names
``Comparison.rows()`` gives them), so a report always agrees with them and uses their
vocabulary (the JSON form holds every number the HTML shows, unrounded). Sections appear
when their results exist; a missing one says so in one line instead of showing an empty box.

Modules: :mod:`~replicate.report.model` (the sections, read from the results),
:mod:`~replicate.report.figures`, :mod:`~replicate.report.build` (``build_report``) and
:mod:`~replicate.report.render` (``render``, ``write_report``, the Jinja templates in
``templates/``).
"""

from __future__ import annotations

from replicate.report.build import build_report
from replicate.report.model import (
    SCHEMA,
    SCHEMA_VERSION,
    ComparisonSection,
    ModelRow,
    Report,
    ResultSection,
    TestSetInfo,
)
from replicate.report.render import (
    CSV_COLUMNS,
    EXTENSIONS,
    FORMATS,
    Format,
    json_schema,
    render,
    write_report,
)

__all__ = [
    "Report",
    "ComparisonSection",
    "ModelRow",
    "ResultSection",
    "TestSetInfo",
    "build_report",
    "render",
    "write_report",
    "FORMATS",
    "EXTENSIONS",
    "CSV_COLUMNS",
    "Format",
    "SCHEMA",
    "SCHEMA_VERSION",
    "json_schema",
]
