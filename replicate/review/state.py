"""Rebuild the current verdicts from the event log by replaying it in order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from replicate.review.store import Event

__all__ = ["ReviewState", "Key"]

#: what an event is about: ``(kind, item, ref_set, ref_id)``
Key = tuple[str, str, str, str]


class ReviewState:
    """Standing decisions per item, stage and reviewer, rebuilt from events.

    Each reviewer has a stack of standing decisions per item and stage; an undo event
    removes the decision it names. The *stage verdict* of an item is the most recent
    standing decision of any reviewer in that stage.
    """

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self.last_seq = 0
        self._stacks: dict[tuple[Key, str], dict[str, list[Event]]] = {}
        self._where: dict[int, tuple[Key, str, str]] = {}
        for e in events:
            self.apply(e)

    def apply(self, e: Event) -> tuple[Key, str] | None:
        """Apply one event (in log order); returns the ``(key, stage)`` it changed."""
        if e.seq <= self.last_seq:
            return None
        self.last_seq = e.seq
        if e.verdict == "undo":
            loc = self._where.pop(int(e.undoes), None) if e.undoes is not None else None
            if loc is None:
                return None
            key, stage, reviewer = loc
            stack = self._stacks[(key, stage)][reviewer]
            stack[:] = [x for x in stack if x.seq != e.undoes]
            return (key, stage)
        self._stacks.setdefault((e.key, e.stage), {}).setdefault(e.reviewer, []).append(e)
        self._where[e.seq] = (e.key, e.stage, e.reviewer)
        return (e.key, e.stage)

    def verdict(self, key: Key, stage: str) -> Event | None:
        """The stage verdict: the latest standing decision of any reviewer."""
        by_reviewer = self._stacks.get((key, stage))
        if not by_reviewer:
            return None
        tops = [s[-1] for s in by_reviewer.values() if s]
        return max(tops, key=lambda x: x.seq) if tops else None

    def reviewer_verdict(self, key: Key, stage: str, reviewer: str) -> Event | None:
        """The latest standing decision of one reviewer in one stage."""
        stack = self._stacks.get((key, stage), {}).get(reviewer)
        return stack[-1] if stack else None

    def standing(self) -> Iterator[Event]:
        """Every reviewer's current decision on every item and stage."""
        for by_reviewer in self._stacks.values():
            for stack in by_reviewer.values():
                if stack:
                    yield stack[-1]

    def keys(self) -> Iterator[tuple[Key, str]]:
        """Every ``(key, stage)`` with a stage verdict."""
        for (key, stage), by_reviewer in self._stacks.items():
            if any(by_reviewer.values()):
                yield key, stage

    def is_undone(self, seq: int) -> bool:
        """True if the decision ``seq`` was retracted (or is unknown)."""
        return seq not in self._where
