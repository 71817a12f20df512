"""Images in self-contained HTML pages: PNG bytes, ``data:`` URIs and a thumbnail gallery.

Every page replicate writes (dedup and shift galleries, the report, the review app) embeds
its images, so that it opens without network access or side files. One implementation of
the encoding serves them all:

* :func:`png_bytes`: one HWC (or HW) uint8 image as PNG, optionally upscaled by nearest
  neighbour (pixels stay crisp);
* :func:`data_uri`: encoded bytes as a ``data:<mime>;base64,...`` URI;
* :func:`png_data_uri`: both at once, for an ``<img src=...>``;
* :func:`gallery`: a page of captioned thumbnails in titled sections.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np

__all__ = ["png_bytes", "data_uri", "png_data_uri", "gallery"]


def png_bytes(image: np.ndarray, scale: int = 1, *, compress_level: int = 6, optimize: bool = False) -> bytes:
    """PNG bytes of one uint8 image (HWC with 1, 3 or 4 channels, or HW).

    ``scale`` > 1 repeats every pixel ``scale`` times in each direction (nearest neighbour);
    ``compress_level`` (0-9) and ``optimize`` are Pillow's PNG options: the review server
    encodes on request with level 1, static pages use the default or ``optimize=True``.
    """
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if scale > 1:
        arr = np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=compress_level, optimize=optimize)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """A ``data:`` URI holding ``data`` (base64)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def png_data_uri(image: np.ndarray, scale: int = 1, *, compress_level: int = 6, optimize: bool = False) -> str:
    """``data_uri(png_bytes(image, scale, ...))``: an image to embed in ``<img src=...>``."""
    return data_uri(png_bytes(image, scale, compress_level=compress_level, optimize=optimize))


def gallery(
    title: str,
    sections: Sequence[tuple[str, Sequence[tuple[np.ndarray, str, str]]]],
    *,
    intro: str = "",
    scale: int = 3,
) -> str:
    """A self-contained HTML page of thumbnails.

    Parameters
    ----------
    title
        the page's title and heading.
    sections
        ``(heading, items)`` per section; each item is ``(image, label, caption)``: the
        uint8 image, its label (alt text and tooltip, e.g. the image id) and the caption
        under it. Text is escaped; a caption's lines are separated by ``<br>``.
    intro
        a paragraph under the heading (plain text).
    scale
        how many times larger the thumbnails are drawn (nearest neighbour).
    """
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:3px;"
        "text-align:center;font-size:10px}img{image-rendering:pixelated}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if intro:
        parts.append(f"<p>{esc(intro)}</p>")
    for heading, items in sections:
        parts.append(f"<h2>{esc(heading)}</h2><div>")
        for image, label, caption in items:
            text = "<br>".join(esc(line) for line in caption.split("\n"))
            parts.append(
                f"<figure><img alt='{esc(label)}' title='{esc(label)}' src='{png_data_uri(image, scale)}'>"
                f"<figcaption>{text}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
