"""The one PNG / data-URI / gallery helper behind every self-contained page."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image

from replicate._html import data_uri, gallery, png_bytes, png_data_uri


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_png_bytes_round_trips_and_upscales_by_nearest_neighbour():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode(png_bytes(rgb)), rgb)
    big = decode(png_bytes(rgb, 3))
    assert big.shape == (15, 21, 3)
    np.testing.assert_array_equal(big[::3, ::3], rgb)
    np.testing.assert_array_equal(big[2::3, 2::3], rgb)  # every pixel a 3x3 block
    gray = rgb[..., :1]
    np.testing.assert_array_equal(decode(png_bytes(gray)), gray[..., 0])  # one channel: a grayscale PNG
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode(png_bytes(rgba)), rgba)
    # the compression options change the bytes, not the pixels
    fast, small = png_bytes(rgb, compress_level=1), png_bytes(rgb, optimize=True)
    np.testing.assert_array_equal(decode(fast), decode(small))


def test_data_uris_hold_the_bytes():
    assert data_uri(b"<svg/>", "image/svg+xml") == "data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode()
    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    uri = png_data_uri(img, 2)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == png_bytes(img, 2)


def test_gallery_embeds_every_image_and_escapes_text():
    img = np.zeros((4, 4, 3), np.uint8)
    page = gallery("A <b> & C", [("set 'x'", [(img, "id<1>", "cat\n0.91"), (img + 50, "id2", "dog")]), ("empty", [])],
                   intro="Most <confident>")
    assert page.startswith("<!DOCTYPE html>") and "http" not in page  # self-contained
    assert "<title>A &lt;b&gt; &amp; C</title>" in page and "<p>Most &lt;confident&gt;</p>" in page
    assert "alt='id&lt;1&gt;'" in page and "<figcaption>cat<br>0.91</figcaption>" in page
    srcs = re.findall(r"src='([^']+)'", page)
    assert srcs == [png_data_uri(img, 3), png_data_uri(img + 50, 3)]
    assert "<h2>empty</h2><div>\n</div>" in page
