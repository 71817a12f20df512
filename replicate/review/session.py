"""A live review: the queue, the event log, and the state rebuilt from it.

:class:`ReviewSession` is what the web app calls. It replays the log once at start,
then applies new events incrementally (its own and those written by any other
process sharing the log), keeping per-item status arrays so that filtering and
paging a queue of 10^5 candidates touches only numpy arrays and the images of the
page shown.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from replicate._validation import check_choice, check_int, fail
from replicate.review.queue import ReviewQueue, data_url, encode_png
from replicate.review.state import ReviewState
from replicate.review.store import LABEL_VERDICTS, PAIR_VERDICTS, STAGES, Event, ReviewStore

__all__ = ["ReviewSession", "LABEL_STATUSES", "PAIR_STATUSES", "MAX_PER_PAGE"]

LABEL_STATUSES: tuple[str, ...] = ("pending", *LABEL_VERDICTS)
PAIR_STATUSES: tuple[str, ...] = ("pending", *PAIR_VERDICTS)
_LABEL_CODE = {v: i for i, v in enumerate(LABEL_STATUSES)}
_PAIR_CODE = {v: i for i, v in enumerate(PAIR_STATUSES)}
#: verify-stage candidates: those the select stage kept (accepted or relabelled)
_SELECTED = (_LABEL_CODE["accept"], _LABEL_CODE["relabel"])
MAX_PER_PAGE = 500
MAX_REASON = 500


class ReviewSession:
    """A queue, its event log and the current state, safe to share between threads."""

    def __init__(self, queue: ReviewQueue, store: ReviewStore, *, session_id: str = "") -> None:
        self.queue = queue
        self.store = store
        self.session_id = session_id
        stored = store.set_meta_default("class_names", list(queue.class_names))
        import json

        if json.loads(stored) != list(queue.class_names):
            raise fail(
                "class names of the candidates",
                list(queue.class_names),
                f"the class names of the review log {store.path} ({json.loads(stored)})",
                "Use a new --db for a set with other classes.",
            )
        store.set_meta_default("candidates", queue.candidates.name)
        n, p = len(queue), queue.n_pairs
        self.status = {s: np.zeros(n, dtype=np.int8) for s in STAGES}
        self.shown_label = {s: np.full(n, -1, dtype=np.int64) for s in STAGES}
        self.shown_label["select"][:] = queue.labels
        self.pair_status = {s: np.zeros(p, dtype=np.int8) for s in STAGES}
        self.state = ReviewState()
        self._lock = threading.RLock()
        self.sync()

    # ------------------------------------------------------------------ state

    def sync(self) -> int:
        """Apply events written since the last sync (by anyone); returns how many."""
        with self._lock:
            events = self.store.events(self.state.last_seq)
            for e in events:
                changed = self.state.apply(e)
                if changed is not None:
                    self._refresh(*changed)
            return len(events)

    def _refresh(self, key: tuple[str, str, str, str], stage: str) -> None:
        kind, item, ref_set, ref_id = key
        current = self.state.verdict(key, stage)
        if kind == "label":
            pos = self.queue.position(item)
            if pos is None:
                return
            self.status[stage][pos] = _LABEL_CODE[current.verdict] if current else 0
            if stage == "select":
                label = current.label if current is not None and current.label is not None else -1
                self.shown_label["verify"][pos] = label
        else:
            i = self.queue.pair_index.get((item, ref_set, ref_id))
            if i is not None:
                self.pair_status[stage][i] = _PAIR_CODE[current.verdict] if current else 0

    def _in_stage(self, stage: str) -> np.ndarray | slice:
        if stage == "select":
            return slice(None)
        return np.isin(self.status["select"], _SELECTED)

    def _pairs_in_stage(self, stage: str) -> np.ndarray | slice:
        if stage == "select":
            return slice(None)
        return self.pair_status["select"] > 0

    # ------------------------------------------------------------------ reading

    def progress(self, stage: str) -> dict[str, Any]:
        """Counts per status in ``stage`` for labels and pairs."""
        stage = check_choice("stage", stage, STAGES)
        with self._lock:
            self.sync()
            lab = self.status[stage][self._in_stage(stage)]
            pair = self.pair_status[stage][self._pairs_in_stage(stage)]
            lc = np.bincount(lab, minlength=len(LABEL_STATUSES))
            pc = np.bincount(pair, minlength=len(PAIR_STATUSES))
        return {
            "stage": stage,
            "label": {
                "total": int(len(lab)),
                "decided": int(len(lab) - lc[0]),
                "by_status": {s: int(c) for s, c in zip(LABEL_STATUSES, lc)},
            },
            "pair": {
                "total": int(len(pair)),
                "decided": int(len(pair) - pc[0]),
                "by_status": {s: int(c) for s, c in zip(PAIR_STATUSES, pc)},
            },
            "events": int(self.state.last_seq),
        }

    def label_page(
        self,
        stage: str = "select",
        *,
        class_name: str | None = None,
        keyword: str | None = None,
        status: str | None = None,
        page: int | None = None,
        per_page: int = 100,
        images: bool = True,
        scale: int = 1,
    ) -> dict[str, Any]:
        """One page of the label queue after filters; ``page=None`` opens at the first pending item.

        Parameters
        ----------
        stage
            ``"select"`` or ``"verify"`` (verify shows only what select kept).
        class_name, keyword
            show only this (shown) class, this keyword (``None``: all).
        status
            show only items with this status, one of ``LABEL_STATUSES`` (``None``: all).
        page
            the page number from 0 (``None``: the page of the first pending item).
        per_page
            items per page, 1 to ``MAX_PER_PAGE``.
        images
            include each image as a data URL.
        scale
            image enlargement factor, 1 to 8.

        Returns
        -------
        dict
            the page's rows and counts, as the review app's JSON.
        """
        stage = check_choice("stage", stage, STAGES)
        per_page = check_int("per_page", per_page, 1, MAX_PER_PAGE)
        scale = check_int("scale", scale, 1, 8)
        q = self.queue
        with self._lock:
            self.sync()
            shown = self.shown_label[stage]
            st = self.status[stage]
            mask = np.ones(len(q), dtype=bool)
            if stage == "verify":
                mask &= np.isin(self.status["select"], _SELECTED)
            if class_name:
                mask &= shown == q.class_names.index(check_choice("class", class_name, q.class_names))
            if keyword:
                k = np.searchsorted(q.keyword_names, keyword)
                if k >= len(q.keyword_names) or q.keyword_names[k] != keyword:
                    check_choice("keyword", keyword, [str(x) for x in q.keyword_names])
                mask &= q.keyword_codes == k
            if status:
                mask &= st == _LABEL_CODE[check_choice("status", status, LABEL_STATUSES)]
            where = np.flatnonzero(mask)
            total = len(where)
            pages = max(1, -(-total // per_page))
            pending = np.flatnonzero(st[where] == 0)
            first_pending = int(pending[0]) if len(pending) else None
            if page is None:
                page = (first_pending // per_page) if first_pending is not None else 0
            page = check_int("page", page, 0)
            chosen = where[page * per_page : (page + 1) * per_page]
            rows = []
            for pos in chosen.tolist():
                item_id = str(q.ids[pos])
                key = ("label", item_id, "", "")
                current = self.state.verdict(key, stage)
                label = int(shown[pos])
                row: dict[str, Any] = {
                    "pos": pos,
                    "id": item_id,
                    "label": label,
                    "class_name": q.class_names[label] if label >= 0 else None,
                    "proposed_label": int(q.labels[pos]),
                    "keyword": q.keyword(pos),
                    "status": LABEL_STATUSES[int(st[pos])],
                    "decision": _brief(current),
                }
                if stage == "verify":
                    row["select"] = _brief(self.state.verdict(key, "select"))
                rows.append(row)
        if images:  # outside the lock: encoding a page must not hold up other reviewers' writes
            for row in rows:
                row["src"] = data_url(encode_png(q.candidates.images[row["pos"]], scale))
        return {
            "kind": "label",
            "stage": stage,
            "total": total,
            "page": page,
            "pages": pages,
            "per_page": per_page,
            "first_pending": first_pending,
            "first_pending_page": None if first_pending is None else first_pending // per_page,
            "items": rows,
        }

    def pair_page(
        self,
        stage: str = "select",
        *,
        status: str | None = None,
        page: int | None = None,
        per_page: int = 20,
        images: bool = True,
        scale: int = 1,
    ) -> dict[str, Any]:
        """One page of flagged pairs; ``page=None`` opens at the first pending pair.

        Parameters
        ----------
        stage
            ``"select"`` or ``"verify"`` (verify shows only what select kept).
        status
            show only pairs with this status, one of ``PAIR_STATUSES`` (``None``: all).
        page
            the page number from 0 (``None``: the page of the first pending item).
        per_page
            items per page, 1 to ``MAX_PER_PAGE``.
        images
            include each image as a data URL.
        scale
            image enlargement factor, 1 to 8.

        Returns
        -------
        dict
            the page's pair rows and counts, as the review app's JSON.
        """
        stage = check_choice("stage", stage, STAGES)
        per_page = check_int("per_page", per_page, 1, MAX_PER_PAGE)
        scale = check_int("scale", scale, 1, 8)
        q = self.queue
        with self._lock:
            self.sync()
            st = self.pair_status[stage]
            mask = np.ones(q.n_pairs, dtype=bool)
            if stage == "verify":
                mask &= self.pair_status["select"] > 0
            if status:
                mask &= st == _PAIR_CODE[check_choice("status", status, PAIR_STATUSES)]
            where = np.flatnonzero(mask)
            total = len(where)
            pending = np.flatnonzero(st[where] == 0)
            first_pending = int(pending[0]) if len(pending) else None
            if page is None:
                page = (first_pending // per_page) if first_pending is not None else 0
            page = check_int("page", page, 0)
            rows = []
            for i in where[page * per_page : (page + 1) * per_page].tolist():
                qid, rset, rid = q.pair_key(i)
                key = ("pair", qid, rset, rid)
                qpos = q.position(qid)
                row: dict[str, Any] = {
                    "index": i,
                    "query_id": qid,
                    "reference_set": rset,
                    "reference_id": rid,
                    "query_class": q.class_names[int(q.labels[qpos])]
                    if qpos is not None and q.labels[qpos] >= 0
                    else None,
                    "distances": {c: _num(q.distances[c][i]) for c in q.distance_columns},
                    "notes": {c: str(q.notes[c][i]) for c in q.note_columns},
                    "status": PAIR_STATUSES[int(st[i])],
                    "decision": _brief(self.state.verdict(key, stage)),
                }
                if stage == "verify":
                    row["select"] = _brief(self.state.verdict(key, "select"))
                rows.append(row)
        if images:
            for row in rows:
                a = q.image(q.candidates.name, row["query_id"])
                b = q.image(row["reference_set"], row["reference_id"])
                row["query_src"] = data_url(encode_png(a, scale)) if a is not None else None
                row["reference_src"] = data_url(encode_png(b, scale)) if b is not None else None
        return {
            "kind": "pair",
            "stage": stage,
            "total": total,
            "page": page,
            "pages": max(1, -(-total // per_page)),
            "per_page": per_page,
            "first_pending": first_pending,
            "first_pending_page": None if first_pending is None else first_pending // per_page,
            "distance_columns": list(q.distance_columns),
            "items": rows,
        }

    # ------------------------------------------------------------------ writing

    def decide(
        self,
        *,
        reviewer: str,
        stage: str,
        kind: str,
        item: str,
        verdict: str,
        ref_set: str = "",
        ref_id: str = "",
        label: Any = None,
        reason: str = "",
    ) -> Event:
        """Record one decision (checked against the queue) and return the stored event.

        ``label`` (a class name or index) is required for ``relabel`` and refused
        otherwise; accepting records the class the reviewer was shown.

        Parameters
        ----------
        reviewer, stage
            who decides, in which stage (``select`` or ``verify``: a verified item must
            have been kept, a verified pair decided, in the select stage).
        kind
            ``"label"`` (a candidate's label) or ``"pair"`` (a flagged near-duplicate pair).
        item
            the candidate's id (for a pair, the query id).
        verdict
            one of ``LABEL_VERDICTS`` or ``PAIR_VERDICTS``.
        ref_set, ref_id
            the pair's reference set and id (empty for a label decision).
        label
            the new class of a ``relabel`` verdict.
        reason
            free text kept with the event.
        """
        reviewer = check_reviewer(reviewer)
        stage = check_choice("stage", stage, STAGES)
        kind = check_choice("kind", kind, ("label", "pair"))
        reason = check_reason(reason)
        q = self.queue
        with self._lock:
            self.sync()
            if kind == "label":
                verdict, new = self._check_label_decision(stage, item, verdict, ref_set, ref_id, label)
                event = self.store.append(
                    reviewer=reviewer,
                    stage=stage,
                    kind="label",
                    item=item,
                    verdict=verdict,
                    label=new,
                    class_name=q.class_names[new] if new is not None else None,
                    reason=reason,
                    session=self.session_id,
                )
            else:
                verdict = self._check_pair_decision(stage, item, verdict, ref_set, ref_id, label)
                event = self.store.append(
                    reviewer=reviewer,
                    stage=stage,
                    kind="pair",
                    item=item,
                    ref_set=ref_set,
                    ref_id=ref_id,
                    verdict=verdict,
                    reason=reason,
                    session=self.session_id,
                )
            self.sync()
        return event

    def _check_label_decision(
        self, stage: str, item: str, verdict: str, ref_set: str, ref_id: str, label: Any
    ) -> tuple[str, int | None]:
        """A label decision's verdict and the class it records (checked against the queue)."""
        q = self.queue
        verdict = check_choice("verdict", verdict, LABEL_VERDICTS)
        pos = q.position(item) if isinstance(item, str) else None
        if pos is None:
            raise fail("item", item, f"the id of a candidate in {q.candidates.name!r}", error=KeyError)
        if ref_set or ref_id:
            raise fail("ref_set/ref_id", (ref_set, ref_id), "empty for a label decision")
        if stage == "verify" and self.status["select"][pos] not in _SELECTED:
            raise fail(
                "item",
                item,
                "an item the select stage kept (accepted or relabelled) to verify it",
                "Review it in the select stage first.",
                error=LookupError,
            )
        shown = int(self.shown_label[stage][pos])
        new: int | None
        if verdict == "relabel":
            if label is None:
                raise fail("label", label, "a class name or index for verdict 'relabel'")
            new = q.class_index(label)
            if new == shown:
                raise fail(
                    "label",
                    label,
                    f"a class other than the shown one ({q.class_names[shown]!r})",
                    "Use 'accept' to keep it.",
                )
        elif label is not None:
            raise fail("label", label, f"omitted for verdict {verdict!r} (only 'relabel' takes a label)")
        else:
            new = shown if verdict == "accept" else None
        if verdict == "accept" and (new is None or new < 0):
            raise fail("verdict", verdict, "'relabel' for an unlabelled candidate", "Give it a class with 'relabel'.")
        return verdict, new

    def _check_pair_decision(
        self, stage: str, item: str, verdict: str, ref_set: str, ref_id: str, label: Any
    ) -> str:
        """A pair decision's verdict (the pair must be one the queue flagged)."""
        q = self.queue
        verdict = check_choice("verdict", verdict, PAIR_VERDICTS)
        if label is not None:
            raise fail("label", label, "omitted for a pair decision")
        i = (
            q.pair_index.get((item, ref_set, ref_id))
            if all(isinstance(x, str) for x in (item, ref_set, ref_id))
            else None
        )
        if i is None:
            raise fail(
                "pair",
                (item, ref_set, ref_id),
                "a flagged pair (query_id, reference_set, reference_id) of the queue",
                error=KeyError,
            )
        if stage == "verify" and self.pair_status["select"][i] == 0:
            raise fail(
                "pair",
                (item, ref_set, ref_id),
                "a pair decided in the select stage to verify it",
                error=LookupError,
            )
        return verdict

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
    ) -> Event | None:
        """Retract the reviewer's latest standing decision (on ``item`` or overall).

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

        Returns
        -------
        Event or None
            the ``undo`` event, or ``None`` when there was nothing to undo.
        """
        reviewer = check_reviewer(reviewer)
        stage = check_choice("stage", stage, STAGES)
        kind = check_choice("kind", kind, ("label", "pair"))
        reason = check_reason(reason)
        if item is not None and not isinstance(item, str):
            raise fail("item", item, "a string id or omitted", error=TypeError)
        with self._lock:
            event = self.store.undo(
                reviewer=reviewer,
                stage=stage,
                kind=kind,
                item=item,
                ref_set=ref_set,
                ref_id=ref_id,
                reason=reason,
                session=self.session_id,
            )
            self.sync()
        return event


def check_reviewer(name: Any) -> str:
    """A reviewer name: 1-64 printable characters."""
    if not isinstance(name, str) or not name.strip():
        raise fail(
            "reviewer", name, "a non-empty name", "Pass --reviewer NAME (or ?reviewer=NAME in the page URL)."
        )
    name = name.strip()
    if len(name) > 64 or not name.isprintable():
        raise fail("reviewer", name, "at most 64 printable characters")
    return name


def check_reason(reason: Any) -> str:
    """A free-text reason: a string of at most 500 characters."""
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise fail("reason", reason, "a string", error=TypeError)
    if len(reason) > MAX_REASON:
        raise fail("len(reason)", len(reason), f"<= {MAX_REASON} characters")
    return reason


def _brief(e: Event | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {
        "seq": e.seq,
        "verdict": e.verdict,
        "reviewer": e.reviewer,
        "time": e.time,
        "label": e.label,
        "class_name": e.class_name,
        "reason": e.reason,
    }


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)
