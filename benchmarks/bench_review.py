"""Review app: a page of 100 images is ready in under 1 s on a queue of 10^5 candidates.

Measures, on a saved (memory-mapped) set of 10^5 candidates with 10^4 decisions already
in the log: opening the review (replaying the log), serving one page of 100 images
(JSON with inline PNGs) for random pages with and without filters, one decision's
round trip, the memory that paging adds, and — when headless Chromium is available —
the time until a real browser shows the 100 images and turns a page. Baseline in the
same run: loading everything, i.e. encoding every image of the queue as a page would.
Uses real CIFAR-10 test images (tiled) from ../shared when present, else random pixels.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas  # noqa: F401  (imported up front so open_and_replay_s times the replay, not the import)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, write  # noqa: E402

import replicate  # noqa: E402
from replicate.review import ReviewStore, create_app, open_review, start_server  # noqa: E402
from replicate.review.queue import encode_png  # noqa: E402

TARGET_S = 1.0
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_pool(n: int, root: Path) -> tuple[replicate.ImageSet, str]:
    test = SHARED / "data/cifar10/test.npz"
    if test.is_file():
        base = replicate.load(test)
        reps = -(-n // len(base))
        images = np.concatenate([base.images] * reps)[:n]
        labels = np.concatenate([base.labels] * reps)[:n]
        names = base.class_names
        source = "CIFAR-10 test images, tiled"
    else:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        names = replicate.CIFAR10_CLASSES
        source = "random pixels"
    kw = np.array([f"{names[y]}_kw{i % 7}" for i, y in enumerate(labels)])
    s = replicate.ImageSet(images, labels, names, metadata={"keyword": kw}, name="pool")
    path = s.save(root / "pool")
    return replicate.ImageSet.load(path), source


def seed_log(db: Path, pool: replicate.ImageSet, n: int) -> None:
    """n select-stage decisions written straight into the log (setup, not measured)."""
    ReviewStore(db)
    rows = []
    for i in range(n):
        y = int(pool.labels[i])
        rows.append(
            (
                "2026-01-01T00:00:00+00:00",
                "seed",
                "select",
                "label",
                str(pool.ids[i]),
                "accept",
                y,
                pool.class_names[y],
            )
        )
    with sqlite3.connect(db) as con:
        con.executemany(
            "INSERT INTO events (time, reviewer, stage, kind, item, verdict, label, class_name) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def browser_times(session, repeat: int, n_pages: int) -> dict[str, float] | None:
    exe = os.environ.get("REPLICATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).is_file():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    loads, turns = [], []
    js_all_loaded = "() => Array.from(document.querySelectorAll('#grid img')).every(i => i.complete && i.naturalWidth > 0)"
    with start_server(session, reviewer="bench") as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for r in range(repeat + 1):
            t = time.perf_counter()
            # a new query string each time forces a full page load (a hash change would not)
            page.goto(server.url + f"&load={r}#view=label&page={(n_pages // 2 + 37 * r) % (n_pages - 1)}")
            page.wait_for_selector("#grid .card:nth-child(100) img")
            while not page.evaluate(js_all_loaded):
                time.sleep(0.005)
            if r:  # the first load warms the browser's caches
                loads.append(time.perf_counter() - t)
            first = page.locator("#grid .card").first.get_attribute("data-id")
            t = time.perf_counter()
            page.keyboard.press("n")
            page.wait_for_selector(f"#grid .card:first-child:not([data-id='{first}'])")
            page.wait_for_selector("#grid .card:nth-child(100) img")
            while not page.evaluate(js_all_loaded):
                time.sleep(0.005)
            if r:
                turns.append(time.perf_counter() - t)
        browser.close()
    return {
        "page_load_median_s": statistics.median(loads),
        "page_load_max_s": max(loads),
        "page_turn_median_s": statistics.median(turns),
        "page_turn_max_s": max(turns),
        "repeats": repeat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2*10^4 candidates, fewer repeats")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    n = 20_000 if args.quick else 100_000
    n_events = 2_000 if args.quick else 10_000
    repeat = 5 if args.quick else 20
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        pool, source = make_pool(n, root)
        db = root / "review.sqlite"
        seed_log(db, pool, n_events)
        rss0 = rss_mib()
        t = time.perf_counter()
        session = open_review(pool, db)
        t_open = time.perf_counter() - t
        client = create_app(session, token="t", reviewer="bench").test_client()
        rss_open = rss_mib()
        h = {"X-Review-Token": "t"}

        def page_time(query: str) -> float:
            t = time.perf_counter()
            r = client.get(f"/api/labels?per_page=100&{query}", headers=h)
            body = r.get_json()
            dt = time.perf_counter() - t
            assert r.status_code == 200 and len(body["items"]) == 100, body.get("error")
            return dt

        pages = rng.integers(0, n // 100, repeat)
        client.get("/api/labels?per_page=100&page=0", headers=h)  # first request warms Flask
        plain = [page_time(f"page={p}") for p in pages]
        filtered = [page_time(f"class=cat&status=pending&page={p % 5}") for p in pages]
        resume = [page_time("") for _ in range(repeat)]  # page=None: opens at the first pending item
        rss_after = rss_mib()

        items = pool.ids[rng.choice(np.arange(n_events, n), repeat, replace=False)]
        decide = []
        for item in items:
            t = time.perf_counter()
            r = client.post("/api/decide", json={"item": str(item), "verdict": "accept"}, headers=h)
            decide.append(time.perf_counter() - t)
            assert r.status_code == 201

        browser = browser_times(session, 3 if args.quick else 5, n // 100)

        # baseline: loading everything, as a page that rendered the whole queue would
        t = time.perf_counter()
        for start in range(0, n, 1000):
            block = np.asarray(pool.images[start : start + 1000])
            for img in block:
                encode_png(img)
        t_all = time.perf_counter() - t

    page_median = statistics.median(plain)
    ready = max(page_median, browser["page_load_median_s"] if browser else 0.0)
    write(
        "review" + ("_quick" if args.quick else ""),
        {
            "data": source,
            "n_candidates": n,
            "n_events_in_log": n_events,
            "open_and_replay_s": t_open,
            "page_100_api_median_s": page_median,
            "page_100_api_max_s": max(plain),
            "page_100_filtered_median_s": statistics.median(filtered),
            "page_100_resume_median_s": statistics.median(resume),
            "decision_round_trip_median_s": statistics.median(decide),
            "decision_round_trip_max_s": max(decide),
            "rss_growth_open_mib": rss_open - rss0,
            "rss_growth_while_paging_mib": rss_after - rss_open,
            "pool_pixels_mib": pool.images.nbytes / 2**20,
            "browser": browser if browser else "headless Chromium not available: browser timing skipped",
            "baseline_load_everything_s": t_all,
            "ratio_everything_over_page": t_all / page_median,
            "target": f"a page of 100 images ready (API and, when available, browser) in < {TARGET_S} s",
            "page_ready_s": ready,
            "met": bool(ready < TARGET_S),
            "repeats": int(repeat),
        },
    )


if __name__ == "__main__":
    main()
