"""A real browser (headless Chromium via Playwright) reviews a few images by keyboard.

Needs ``/usr/bin/chromium`` (or ``REPLICATE_CHROMIUM``) and the ``playwright`` Python
package; never downloads a browser. Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from replicate.review import agreement, decisions, open_review, start_server, verdicts

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium() -> str:
    path = os.environ.get("REPLICATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.skip(
            f"headless Chromium not available at {path} (install the distribution's chromium package)"
        )
    return path


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright Python package is not installed"
    )
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def review_set(request):
    """24 real CIFAR-10 test images (synthetic ones when ../shared is absent)."""
    try:
        cifar = request.getfixturevalue("cifar_test")
        s = cifar.select(np.arange(24))
        kw = np.array([f"{cifar.class_names[y]}_photo" for y in s.labels])
        return s.with_metadata(keyword=kw)
    except pytest.skip.Exception:
        from conftest import make_imageset

        return make_imageset(24)


def _wait_text(page, selector: str, prefix: str) -> None:
    from playwright.sync_api import expect

    # the page's Content-Security-Policy forbids eval, so wait with locators, not JS strings
    expect(page.locator(selector)).to_have_text(re.compile("^" + re.escape(prefix)), timeout=10_000)


def test_keyboard_review_survives_reload(browser, review_set, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path / "review.sqlite"
    pairs = pd.DataFrame(
        {
            "query_id": review_set.ids[:2],
            "reference_set": [review_set.name] * 2,
            "reference_id": review_set.ids[2:4],
            "hamming": [3.0, 7.0],
        }
    )
    session = open_review(review_set, db, pairs=pairs)
    with start_server(session, reviewer="alice") as server:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url)
        page.wait_for_selector("#grid .card")
        assert page.locator("#grid .card").count() == 24
        # images are real 32x32 PNGs drawn scaled up with nearest-neighbour
        first = page.locator("#grid .card img").first
        assert first.evaluate("img => img.naturalWidth") == 32
        assert first.evaluate("img => getComputedStyle(img).imageRendering") == "pixelated"

        page.locator("#grid").focus()
        page.keyboard.press("a")  # accept item 0
        page.keyboard.press("r")  # reject item 1
        relabel_to = (int(review_set.labels[2]) + 1) % 10
        page.keyboard.press(str(relabel_to))  # relabel item 2
        page.keyboard.press("x")  # unusable item 3
        _wait_text(page, "#saved", "saved #4")
        page.keyboard.press("u")  # undo: item 3 back to pending
        _wait_text(page, "#saved", "undone #4")
        page.wait_for_selector(f"#grid .card[data-id='{review_set.ids[3]}'].s-pending")
        _wait_text(page, "#progress-text", "3 / 24")  # progress follows the saved event asynchronously

        page.reload()
        page.wait_for_selector("#grid .card")
        statuses = page.locator("#grid .card .status").all_text_contents()
        assert statuses[0].startswith("accept")
        assert statuses[1].startswith("reject")
        assert statuses[2].startswith(f"relabel \u2192 {review_set.class_names[relabel_to]}")
        assert statuses[3].startswith("pending")
        # the reload resumes at the first pending item
        cursor = page.locator("#grid .card.cursor")
        assert cursor.get_attribute("data-id") == review_set.ids[3]
        _wait_text(page, "#progress-text", "3 / 24")  # progress follows the saved event asynchronously
        page.screenshot(path=str(ARTIFACTS / "review_labels.png"), full_page=True)

        # duplicate review: the pair view, by keyboard
        page.locator("#tab-pair").click()
        page.wait_for_selector("#grid .card.pair")
        assert page.locator("#grid .card.pair").count() == 2
        page.locator("#grid").focus()
        page.keyboard.press("d")
        page.keyboard.press("s")
        _wait_text(page, "#saved", "saved #7")
        page.screenshot(path=str(ARTIFACTS / "review_pairs.png"), full_page=True)
        page.close()

        # a second reviewer verifies what the first one kept
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "&reviewer=bob&stage=verify")
        page.wait_for_selector("#grid .card")
        assert page.locator("#grid .card").count() == 2  # item 0 (accepted) and item 2 (relabelled)
        assert page.locator("#reviewer").input_value() == "bob"
        page.locator("#grid").focus()
        page.keyboard.press("a")
        page.keyboard.press("c")  # relabel by class name
        verify_to = 0 if relabel_to != 0 else 1
        page.locator("#relabel-input").fill(review_set.class_names[verify_to])
        page.keyboard.press("Enter")
        _wait_text(page, "#saved", "saved #9")
        page.screenshot(path=str(ARTIFACTS / "review_verify.png"), full_page=True)
        page.close()
        assert errors == []

    log = decisions(db)
    verdict_seq = [
        "accept",
        "reject",
        "relabel",
        "unusable",
        "undo",
        "duplicate",
        "distinct",
        "accept",
        "relabel",
    ]
    assert list(log["verdict"]) == verdict_seq
    assert list(log["reviewer"]) == ["alice"] * 7 + ["bob"] * 2
    assert list(log["stage"]) == ["select"] * 7 + ["verify"] * 2
    final = verdicts(db).set_index("id")
    assert final.loc[review_set.ids[2], "select_label"] == relabel_to
    assert final.loc[review_set.ids[2], "final_label"] == verify_to
    assert final.loc[review_set.ids[0], "final_verdict"] == "accept"
    kappa = agreement(db)
    assert kappa.n_items == 2 and kappa.n_agree == 1
    assert review_set.ids[3] not in final.index
    assert (ARTIFACTS / "review_labels.png").stat().st_size > 10_000
