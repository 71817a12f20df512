"""``replicate review PATH``: review labels and near-duplicate pairs in the browser.

``replicate review-export DB``: write what the review decided (verified labels, a
blacklist for sampling and dedup, per-item verdicts, reviewer agreement).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from replicate.cli import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "review",
        help="review proposed labels and flagged near-duplicate pairs in a local web app",
        description="Serve a local review app over an image set (and flagged pairs). Decisions go to an "
        "append-only SQLite log; reopening the same --db resumes where the reviewer left off.",
    )
    p.add_argument("path", help="the candidates: any format replicate.load() reads")
    p.add_argument(
        "--pairs", help="CSV of flagged pairs: query_id, reference_set, reference_id, distances..."
    )
    p.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a reference set the pairs name (repeatable), e.g. cifar10-test=data/cifar10/test.npz",
    )
    p.add_argument("--db", default="review.sqlite", help="the review log (default: review.sqlite)")
    p.add_argument("--reviewer", default="", help="your name (the page asks when omitted)")
    p.add_argument(
        "--stage", default="select", choices=("select", "verify"), help="review stage (default: select)"
    )
    p.add_argument("--keyword-column", default="keyword", help="metadata column with each image's keyword")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others warn)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free port)")
    p.add_argument("--no-browser", action="store_true", help="print the URL but do not open a browser")
    p.set_defaults(func=run)

    e = sub.add_parser(
        "review-export",
        help="export a review log: verified labels, blacklist, verdicts, agreement",
        description="Read a review log and write its results. Without an output option, print a summary.",
    )
    e.add_argument("db", help="the review log written by `replicate review`")
    e.add_argument(
        "--blacklist", metavar="FILE", help="write ids to exclude (one per line) for sampling and dedup"
    )
    e.add_argument(
        "--verdicts", metavar="CSV", help="write one row per reviewed image with each stage's verdict"
    )
    e.add_argument("--pair-verdicts", metavar="CSV", help="write one row per reviewed pair")
    e.add_argument(
        "--labels", metavar="DIR", help="save the verified set (needs --candidates) with corrected labels"
    )
    e.add_argument("--candidates", metavar="PATH", help="the reviewed set, for --labels")
    e.add_argument(
        "--stage",
        default="verify",
        choices=("select", "verify"),
        help="stage whose kept images --labels saves",
    )
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    e.set_defaults(func=run_export)


def _parse_references(items: list[str]) -> dict[str, str]:
    from replicate._validation import fail

    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise fail(
                "--reference", item, "NAME=PATH", "e.g. --reference cifar10-test=data/cifar10/test.npz"
            )
        if name in out:
            raise fail("--reference", item, "a NAME given once",
                       f"{name!r} is already {out[name]!r}; give each reference set its own name.")
        out[name] = path
    return out


def _read_pairs(path: str):  # type: ignore[no-untyped-def]
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        from replicate.dedup import DedupResult

        return DedupResult.load(p)
    if not p.is_file():
        from replicate._validation import fail

        raise fail("--pairs", path, "a dedup result directory or a CSV file", error=FileNotFoundError)
    return pd.read_csv(p, dtype={"query_id": str, "reference_set": str, "reference_id": str})


def run(args: argparse.Namespace) -> int:
    import logging
    import webbrowser

    from replicate._validation import check_int, fail
    from replicate.io import load
    from replicate.review import open_review
    from replicate.review.app import _is_loopback, start_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    check_int("--port", args.port, minimum=0, maximum=65535)
    if Path(args.db).is_dir():
        raise fail("--db", args.db, "a file path for the SQLite review log, not a directory",
                   f"e.g. --db {Path(args.db) / 'review.sqlite'}", error=IsADirectoryError)
    references = _parse_references(args.reference)
    candidates = load(args.path)
    refs = {name: load(p).renamed(name) for name, p in references.items()}
    pairs = _read_pairs(args.pairs) if args.pairs else None
    session = open_review(
        candidates, args.db, pairs=pairs, references=refs, keyword_column=args.keyword_column
    )
    if not _is_loopback(args.host):
        print(
            f"warning: binding to {args.host}: the review is reachable from other machines.", file=sys.stderr
        )
    server = start_server(
        session, host=args.host, port=args.port, reviewer=args.reviewer, stage=args.stage, background=False
    )
    progress = session.progress(args.stage)
    print(
        f"reviewing {len(candidates)} images and {session.queue.n_pairs} pairs of {candidates.name!r}; "
        f"{progress['label']['decided']} decided in stage {args.stage!r}; log: {Path(args.db).resolve()}"
    )
    print(f"open: {server.url}", flush=True)
    if not args.no_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped; every saved decision is in the log.")
    finally:
        server.shutdown()
    return 0


def run_export(args: argparse.Namespace) -> int:
    from replicate.review import agreement, blacklist, verdicts, verified_labels, write_blacklist

    db = args.db
    label_df = verdicts(db, "label")
    pair_df = verdicts(db, "pair")
    kappa = agreement(db)
    kappa_pairs = agreement(db, kind="pair")
    written: dict[str, str] = {}
    summary: dict[str, Any] = {
        "log": str(db),
        "label_items": int(len(label_df)),
        "label_final": {str(k): int(v) for k, v in label_df["final_verdict"].value_counts().items()},
        "pair_items": int(len(pair_df)),
        "pair_final": {str(k): int(v) for k, v in pair_df["final_verdict"].value_counts().items()},
        "blacklist": len(blacklist(db)),
        "agreement_labels": kappa.to_dict(),
        "agreement_pairs": kappa_pairs.to_dict(),
        "written": written,
    }
    if args.blacklist:
        written["blacklist"] = str(write_blacklist(db, args.blacklist))
    if args.verdicts:
        label_df.to_csv(args.verdicts, index=False)
        written["verdicts"] = args.verdicts
    if args.pair_verdicts:
        pair_df.to_csv(args.pair_verdicts, index=False)
        written["pair_verdicts"] = args.pair_verdicts
    if args.labels:
        from replicate._validation import fail
        from replicate.io import load

        if not args.candidates:
            raise fail("--candidates", None, "the reviewed set's path when --labels is given")
        kept = verified_labels(db, load(args.candidates), stage=args.stage)
        written["labels"] = str(kept.save(args.labels))
        summary["verified"] = len(kept)
    if args.json:
        print_json(summary)
        return 0
    print(
        f"{db}: {summary['label_items']} images reviewed {summary['label_final']}; "
        f"{summary['pair_items']} pairs {summary['pair_final']}; blacklist {summary['blacklist']} ids"
    )
    print(kappa.summary())
    if summary["pair_items"]:
        print(kappa_pairs.summary())
    for what, where in written.items():
        print(f"wrote {what}: {where}")
    return 0
