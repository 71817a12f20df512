"""The HTML report in a real browser: headless Chromium renders it to a non-blank screenshot.

Needs Chromium from the distribution's packages (``apt-get install chromium``); skipped with a
reason where it is absent, failed instead when ``REPLICATE_REQUIRE_BROWSER`` is set (CI). The screenshot is kept in ``tests/artifacts/`` for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import make_imageset

from replicate import stats
from replicate.manifest import make_manifest
from replicate.report import build_report, render

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def chromium() -> str:
    for name in (os.environ.get("REPLICATE_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name) if name else None
        if path:
            return path
    reason = "Chromium is not installed (apt-get install chromium, or set REPLICATE_CHROMIUM)"
    if os.environ.get("REPLICATE_REQUIRE_BROWSER"):
        pytest.fail(reason + "; REPLICATE_REQUIRE_BROWSER is set, so the browser check may not be skipped")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    acc = np.sort(rng.uniform(0.75, 0.97, size=12))
    orig = {f"model_{i:02d}": (int(a * 10_000), 10_000) for i, a in enumerate(acc)}
    new = {f"model_{i:02d}": (int((a - 0.08 + rng.normal(0, 0.01)) * 2_000), 2_000) for i, a in enumerate(acc)}
    comparison = stats.compare(orig, new, original_name="cifar10-test", new_name="new-test",
                               bootstrap="none", n_bootstrap=20)
    toy = make_imageset(n=80, name="new-test-sample")
    report = build_report(comparison, test_sets=[toy], manifests=[make_manifest("sample", fingerprint=toy.fingerprint)],
                          title="Browser check")
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render(report, "html"), encoding="utf-8")
    return path


def screenshot(html: Path, png: Path, profile: Path) -> None:
    cmd = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        f"--screenshot={png}", "--window-size=1280,2000", html.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert png.is_file(), f"no screenshot; chromium said: {proc.stderr[-2000:]}"


def pixels(png: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(png) as im:
        return np.asarray(im.convert("L"), dtype=float)


def check_not_blank(png: Path) -> None:
    g = pixels(png)
    assert g.shape[1] == 1280 and g.shape[0] >= 2000
    assert g.std() > 20, f"screenshot looks blank (grey-level sd {g.std():.1f})"
    assert (g < 200).mean() > 0.03, "too little ink: text and figures did not render"
    # dark pixels (axes, points, table text) further down, not only the title at the top
    assert (g[600:2000] < 128).mean() > 0.005


def test_screenshot_is_not_blank(report_file: Path, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    png = ARTIFACTS / "report.png"
    png.unlink(missing_ok=True)
    screenshot(report_file, png, tmp_path / "profile")
    check_not_blank(png)


def test_table_sorts_with_javascript_and_reads_without(report_file: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = chromium()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(report_file.as_uri())
            first = "table.models tbody tr"
            header = "table.models thead th:nth-child(4)"  # gap
            gaps = page.eval_on_selector_all(f"{first} td[data-field=gap]", "cs => cs.map(c => +c.dataset.value)")
            page.click(header)
            assert page.get_attribute(header, "aria-sort") == "ascending"
            after = page.eval_on_selector_all(f"{first} td[data-field=gap]", "cs => cs.map(c => +c.dataset.value)")
            assert after == sorted(gaps)
            page.click(header)
            after = page.eval_on_selector_all(f"{first} td[data-field=gap]", "cs => cs.map(c => +c.dataset.value)")
            assert after == sorted(gaps, reverse=True)
            alts = page.eval_on_selector_all("img", "is => is.map(i => [i.alt, i.naturalWidth])")
            assert alts and all(len(alt) > 30 and width > 100 for alt, width in alts)  # every figure decodes
            nojs = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 2000}).new_page()
            nojs.goto(report_file.as_uri())
            assert nojs.locator(first).count() == 12
            assert nojs.locator(first).first.is_visible()
            assert page.locator(".js-only").first.is_visible()  # "click to sort" only where it works
            assert not nojs.locator(".js-only").first.is_visible()
            ARTIFACTS.mkdir(exist_ok=True)
            nojs.screenshot(path=str(ARTIFACTS / "report_nojs.png"))
            check_not_blank(ARTIFACTS / "report_nojs.png")
        finally:
            browser.close()
