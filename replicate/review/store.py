"""The append-only decision log: one SQLite table of review events.

Every decision is one row (reviewer, time, stage, item, verdict, reason); nothing is
ever updated or deleted (triggers refuse it), and an undo is a new row naming the
event it retracts. Any state — the current verdict of every item in every stage —
is rebuilt by replaying the log in order. Each decision commits in its own
transaction in WAL mode, so killing the server loses at most the decision in flight,
and several reviewers (threads or processes) can write at once.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from replicate._validation import fail

__all__ = [
    "STAGES",
    "KINDS",
    "LABEL_VERDICTS",
    "PAIR_VERDICTS",
    "Event",
    "ReviewStore",
]

Stage = Literal["select", "verify"]
Kind = Literal["label", "pair"]
STAGES: tuple[str, ...] = ("select", "verify")
KINDS: tuple[str, ...] = ("label", "pair")
#: verdicts on a proposed label: keep it, drop the image, give it another class,
#: or drop it as a near-duplicate / an unusable image.
LABEL_VERDICTS: tuple[str, ...] = ("accept", "reject", "relabel", "duplicate", "unusable")
#: verdicts on a flagged near-duplicate pair.
PAIR_VERDICTS: tuple[str, ...] = ("duplicate", "distinct")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time       TEXT    NOT NULL,
    reviewer   TEXT    NOT NULL,
    stage      TEXT    NOT NULL CHECK (stage IN ('select', 'verify')),
    kind       TEXT    NOT NULL CHECK (kind IN ('label', 'pair')),
    item       TEXT    NOT NULL,
    ref_set    TEXT    NOT NULL DEFAULT '',
    ref_id     TEXT    NOT NULL DEFAULT '',
    verdict    TEXT    NOT NULL,
    label      INTEGER,
    class_name TEXT,
    reason     TEXT    NOT NULL DEFAULT '',
    undoes     INTEGER REFERENCES events (seq),
    session    TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_item ON events (kind, item, ref_set, ref_id, stage, reviewer);
CREATE INDEX IF NOT EXISTS events_reviewer ON events (reviewer, stage, kind, seq);
CREATE INDEX IF NOT EXISTS events_undoes ON events (undoes);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the review log is append-only: events are never updated'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the review log is append-only: events are never deleted'); END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COLUMNS = (
    "seq",
    "time",
    "reviewer",
    "stage",
    "kind",
    "item",
    "ref_set",
    "ref_id",
    "verdict",
    "label",
    "class_name",
    "reason",
    "undoes",
    "session",
)


@dataclass(frozen=True)
class Event:
    """One row of the log. ``verdict == "undo"`` rows retract event ``undoes``."""

    seq: int
    time: str
    reviewer: str
    stage: str
    kind: str
    item: str
    ref_set: str
    ref_id: str
    verdict: str
    label: int | None
    class_name: str | None
    reason: str
    undoes: int | None
    session: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        """``(kind, item, ref_set, ref_id)``: what the event is about."""
        return (self.kind, self.item, self.ref_set, self.ref_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return {c: getattr(self, c) for c in _COLUMNS}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


class ReviewStore:
    """The SQLite event log at ``path`` (created on first use).

    Safe to share between threads: each call opens its own short-lived connection.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        p = Path(path)
        if p.is_dir():
            raise fail(
                "path",
                str(p),
                "a file path for the SQLite review log, not a directory",
                error=IsADirectoryError,
            )
        if not create and not p.is_file():
            raise fail(
                "path",
                str(p),
                "an existing review log (SQLite file)",
                "Start a review with `replicate review` first, or check the path.",
                error=FileNotFoundError,
            )
        self.path = p
        self._init_lock = threading.Lock()
        # an existing log is only read (never needs write access, nothing is added to it)
        self._readonly = not create
        if create:
            p.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as con:
                if create:
                    con.execute("PRAGMA journal_mode=WAL")
                    con.executescript(_SCHEMA)
                version = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                con.execute("SELECT seq FROM events LIMIT 1").fetchall()
                if version is None and create:
                    con.execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?), ('created', ?)",
                        (str(SCHEMA_VERSION), _now()),
                    )
                    con.commit()
                elif version is None or int(version[0]) != SCHEMA_VERSION:
                    raise fail(
                        "review log schema version",
                        None if version is None else version[0],
                        str(SCHEMA_VERSION),
                        f"File: {p}.",
                    )
        except sqlite3.DatabaseError as exc:
            raise fail(
                "path",
                str(p),
                "a replicate review log (an SQLite file written by `replicate review`)",
                f"SQLite says: {exc}.",
            ) from None

    # ------------------------------------------------------------------ connections

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            if self._readonly:
                con = self._connect_readonly()
            else:
                con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise fail(
                "path", str(self.path), "a replicate review log (an SQLite file written by `replicate review`)",
                f"SQLite says: {exc}.",
            ) from None
        try:
            con.execute("PRAGMA busy_timeout=30000")
            if not self._readonly:
                con.execute("PRAGMA synchronous=NORMAL")
            yield con
        finally:
            con.close()

    def _connect_readonly(self) -> sqlite3.Connection:
        """Open the log for reading only; in a read-only directory, where SQLite cannot make the
        WAL's shared-memory file, open it as immutable (nobody can be writing to it there)."""
        uri = Path(os.path.abspath(self.path)).as_uri() + "?mode=ro"
        con = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
        try:
            con.execute("PRAGMA schema_version").fetchone()
            return con
        except sqlite3.OperationalError:
            con.close()
        return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=30.0, isolation_level=None)

    # ------------------------------------------------------------------ metadata

    def get_meta(self, key: str) -> str | None:
        """A stored metadata value (queue fingerprint, class names, ...)."""
        with self._connect() as con:
            row = con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta_default(self, key: str, value: Any) -> str:
        """Store ``value`` under ``key`` unless one is stored; return the stored value."""
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        with self._connect() as con:
            con.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, text))
            row = con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row[0])

    # ------------------------------------------------------------------ writing

    def append(
        self,
        *,
        reviewer: str,
        stage: str,
        kind: str,
        item: str,
        verdict: str,
        ref_set: str = "",
        ref_id: str = "",
        label: int | None = None,
        class_name: str | None = None,
        reason: str = "",
        session: str = "",
    ) -> Event:
        """Append one decision and commit it; returns the stored event.

        Parameters
        ----------
        reviewer
            who decided.
        stage
            ``"select"`` or ``"verify"``.
        kind
            ``"label"`` or ``"pair"``.
        item
            the item's id.
        verdict
            the decision.
        ref_set, ref_id
            the pair's reference set and id (pairs only).
        label, class_name
            a corrected label and its class name (``None``: none).
        reason
            an optional note.
        session
            the writing session's id.
        """
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                event = self._insert(
                    con,
                    reviewer,
                    stage,
                    kind,
                    item,
                    ref_set,
                    ref_id,
                    verdict,
                    label,
                    class_name,
                    reason,
                    None,
                    session,
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return event

    def undo(
        self,
        *,
        reviewer: str,
        stage: str,
        kind: str,
        item: str | None = None,
        ref_set: str = "",
        ref_id: str = "",
        reason: str = "",
        session: str = "",
    ) -> Event | None:
        """Retract the reviewer's latest standing decision (on ``item``, or on any item).

        Appends an ``undo`` event naming the retracted one; returns it, or ``None``
        when there is nothing left to undo. Target lookup and insert share one
        transaction, so two undos at once never retract the same event twice.

        Parameters
        ----------
        reviewer
            whose decision to retract.
        stage
            ``"select"`` or ``"verify"``.
        kind
            ``"label"`` or ``"pair"``.
        item
            the item id (``None``: the reviewer's latest decision on any item).
        ref_set, ref_id
            the pair's reference set and id (pairs only; ``""`` for labels).
        reason
            an optional note stored with the undo.
        session
            the writing session's id.
        """
        query = (
            "SELECT seq, kind, item, ref_set, ref_id FROM events e WHERE reviewer=? AND stage=? AND kind=? "
            "AND verdict != 'undo' AND NOT EXISTS (SELECT 1 FROM events u WHERE u.undoes = e.seq)"
        )
        params: list[Any] = [reviewer, stage, kind]
        if item is not None:
            query += " AND item=? AND ref_set=? AND ref_id=?"
            params += [item, ref_set, ref_id]
        query += " ORDER BY seq DESC LIMIT 1"
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute(query, params).fetchone()
                if row is None:
                    con.execute("ROLLBACK")
                    return None
                seq, kind_, item_, rs, ri = row
                event = self._insert(
                    con, reviewer, stage, kind_, item_, rs, ri, "undo", None, None, reason, int(seq), session
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return event

    @staticmethod
    def _insert(con: sqlite3.Connection, *values: Any) -> Event:
        time = _now()
        cur = con.execute(
            "INSERT INTO events (time, reviewer, stage, kind, item, ref_set, ref_id, verdict, label, "
            "class_name, reason, undoes, session) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (time, *values),
        )
        return Event(int(cur.lastrowid or 0), time, *values)

    # ------------------------------------------------------------------ reading

    def events(self, since: int = 0) -> list[Event]:
        """Every event with ``seq > since``, in log order."""
        with self._connect() as con:
            rows = con.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM events WHERE seq > ? ORDER BY seq", (since,)
            )
            return [Event(*r) for r in rows.fetchall()]

    def count(self) -> int:
        """Number of events in the log."""
        with self._connect() as con:
            return int(con.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    @staticmethod
    def columns() -> Sequence[str]:
        """The columns of the log, in order."""
        return _COLUMNS
