"""The review gallery: flagged pairs side by side in one self-contained HTML page."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from replicate._html import png_data_uri
from replicate._validation import check_int, fail
from replicate.dedup.candidates import _as_references
from replicate.dedup.result import DedupResult
from replicate.imageset import ImageSet

# --------------------------------------------------------------------------------------
# review gallery


_GALLERY = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Near-duplicates of {{ query_name }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
td, th { border-bottom: 1px solid #ddd; padding: 6px 10px; vertical-align: middle; text-align: left; }
img { image-rendering: pixelated; image-rendering: crisp-edges; display: block; }
.ids { font-family: monospace; font-size: 12px; }
.dist { font-family: monospace; font-size: 12px; white-space: pre; }
pre { white-space: pre-wrap; }
</style></head><body>
<h1>Near-duplicates of {{ query_name }}</h1>
<pre>{{ summary }}</pre>
<p>{{ shown }} of {{ total }} flagged pairs, ordered by aligned distance (closest first).
Thumbnails are shown {{ scale }}x with nearest-neighbour scaling (image-rendering: pixelated). To exclude an image,
append its id to the blacklist file (one id per line).</p>
<table>
<tr><th>#</th><th>query</th><th>reference</th><th>ids</th><th>distances</th></tr>
{% for row in rows %}
<tr>
<td>{{ loop.index }}</td>
<td><img alt="{{ row.query_id }}" width="{{ width }}" height="{{ height }}" src="{{ row.q_src }}"></td>
<td><img alt="{{ row.reference_id }}" width="{{ width }}" height="{{ height }}" src="{{ row.r_src }}"></td>
<td class="ids">{{ row.query_id }}<br>{{ row.reference_set }}:{{ row.reference_id }}<br>flagged by {{ row.flagged_by }}</td>
<td class="dist">{{ row.dist }}</td>
</tr>
{% endfor %}
</table></body></html>
"""


def dedup_gallery(
    result: DedupResult,
    query: ImageSet,
    references: Mapping[str, ImageSet] | Sequence[ImageSet] | ImageSet | None = None,
    *,
    max_pairs: int = 1000,
    scale: int = 4,
) -> str:
    """A self-contained HTML page showing flagged pairs side by side, for review.

    Pairs are ordered by aligned distance (closest first). Each image is embedded as a
    base64 PNG at its own resolution and displayed larger with nearest-neighbour
    scaling; the page needs no network access.

    Parameters
    ----------
    result
        a detector result (:func:`find_near_duplicates` or :meth:`DedupResult.load`).
    query
        the query set of ``result``.
    references
        the reference sets it names, as for :func:`find_near_duplicates`.
    max_pairs
        the most flagged pairs shown.
    scale
        how many times larger the thumbnails are drawn (1-32).

    Returns
    -------
    str
        the page.
    """
    import jinja2

    max_pairs = check_int("max_pairs", max_pairs, minimum=1)
    scale = check_int("scale", scale, minimum=1, maximum=32)
    refs = dict(_as_references(references, query)) if references is not None else {}
    refs[query.name] = query
    fl = result.pairs[result.pairs.flagged]
    missing = sorted(set(fl.reference_set) - set(refs))
    if missing:
        raise fail("references", sorted(refs), f"the sets named in the result (missing {missing})")
    closest = fl.aligned if "aligned_mirror" not in fl else np.minimum(fl.aligned, fl.aligned_mirror)
    fl = fl.assign(_key=closest).sort_values(["_key", "l2"], kind="stable").head(max_pairs)
    dist_cols = [
        c
        for c in fl.columns
        if c.startswith("hamming_")
        or c in ("l2", "l2_rms", "l2_rank", "tiny", "aligned", "aligned_ratio", "aligned_mirror", "feature")
    ]
    rows = []
    qpos = query.positions(fl.query_id.to_numpy(str)) if len(fl) else np.array([], np.int64)
    for (_, r), qp in zip(fl.iterrows(), qpos):
        rp = refs[r.reference_set].positions([r.reference_id])[0]
        parts = []
        for c in dist_cols:
            v = r[c]
            if pd.isna(v):
                continue
            parts.append(f"{c}: {v:.3f}" if isinstance(v, float) and not float(v).is_integer() else f"{c}: {int(v)}")
        rows.append(
            {
                "query_id": r.query_id,
                "reference_set": r.reference_set,
                "reference_id": r.reference_id,
                "flagged_by": r.flagged_by,
                # at its own resolution, the page scales it up
                "q_src": png_data_uri(query.images[qp], optimize=True),
                "r_src": png_data_uri(refs[r.reference_set].images[rp], optimize=True),
                "dist": "\n".join(parts),
            }
        )
    env = jinja2.Environment(autoescape=True)
    return env.from_string(_GALLERY).render(
        query_name=result.query_name,
        summary=result.summary(),
        rows=rows,
        shown=len(rows),
        total=int(result.pairs.flagged.sum()),
        scale=scale,
        width=query.image_shape[1] * scale,
        height=query.image_shape[0] * scale,
    )
