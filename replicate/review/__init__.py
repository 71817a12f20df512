"""Human review in the browser: label verification and near-duplicate decisions.

A local web app (``replicate review``) shows the candidates of a pool or a sampled
new test set as a grid (each image with its proposed class and keyword) and the
flagged near-duplicate pairs side by side with their distances. Reviewers work by
keyboard; a first reviewer selects, a second verifies (as for CIFAR-10.1). Every
decision is an event in an append-only SQLite log, so nothing is overwritten, any
state can be rebuilt, and the library reads the same decisions:

>>> df = replicate.review.decisions("review.sqlite")          # doctest: +SKIP
>>> kept = replicate.review.verified_labels("review.sqlite", candidates)  # doctest: +SKIP
>>> replicate.review.write_blacklist("review.sqlite", "blacklist.txt")    # doctest: +SKIP
"""

from __future__ import annotations

from replicate.review.export import (
    BLACKLIST_VERDICTS,
    Agreement,
    agreement,
    blacklist,
    decisions,
    exclusions,
    verdicts,
    verified_labels,
    write_blacklist,
)
from replicate.review.queue import ReviewQueue
from replicate.review.session import ReviewSession
from replicate.review.store import LABEL_VERDICTS, PAIR_VERDICTS, STAGES, Event, ReviewStore

__all__ = [
    "Agreement",
    "BLACKLIST_VERDICTS",
    "Event",
    "LABEL_VERDICTS",
    "PAIR_VERDICTS",
    "ReviewQueue",
    "ReviewSession",
    "ReviewStore",
    "STAGES",
    "agreement",
    "blacklist",
    "create_app",
    "decisions",
    "exclusions",
    "open_review",
    "start_server",
    "verdicts",
    "verified_labels",
    "write_blacklist",
]


def open_review(
    candidates,  # type: ignore[no-untyped-def]
    db,
    *,
    pairs=None,
    references=None,
    keyword_column: str = "keyword",
    pair_rows: str = "flagged",
) -> ReviewSession:
    """A review session over ``candidates`` (and flagged ``pairs``) logged to ``db``.

    ``pairs`` is a dedup result or its ``pairs`` table; ``references`` maps the
    ``reference_set`` names to their image sets (see :class:`ReviewQueue`).
    Reopening the same ``db`` resumes: the log is replayed and new decisions append.

    Parameters
    ----------
    candidates
        the candidate :class:`~replicate.imageset.ImageSet` to review.
    db
        path of the SQLite decision log (created when missing).
    pairs
        a dedup result or its ``pairs`` table (``None``: no pair review).
    references
        ``{reference_set name: ImageSet}`` for the pairs' other images.
    keyword_column
        the candidates' metadata column holding each image's keyword.
    pair_rows
        which pair rows to review, as for :class:`ReviewQueue` (``"flagged"`` by default).

    Returns
    -------
    ReviewSession
    """
    import secrets

    queue = ReviewQueue(candidates, pairs, references, keyword_column=keyword_column, pair_rows=pair_rows)  # type: ignore[arg-type]
    return ReviewSession(queue, ReviewStore(db), session_id=secrets.token_hex(4))


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """The Flask app over a :class:`ReviewSession` (see :func:`replicate.review.app.create_app`)."""
    from replicate.review.app import create_app as _create_app

    return _create_app(*args, **kwargs)


def start_server(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Bind and serve a review session (see :func:`replicate.review.app.start_server`)."""
    from replicate.review.app import start_server as _start_server

    return _start_server(*args, **kwargs)
