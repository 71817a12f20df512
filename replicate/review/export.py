"""Read a review log: the decisions, the verdict per item, agreement, exports.

Everything here replays the same append-only log that the app writes, so the library,
the CLI and the app always agree on what was decided.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from replicate._validation import check_choice, check_fraction, fail
from replicate.imageset import ImageSet
from replicate.review.state import ReviewState
from replicate.review.store import KINDS, LABEL_VERDICTS, PAIR_VERDICTS, STAGES, Event, ReviewStore

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "decisions",
    "verdicts",
    "agreement",
    "Agreement",
    "verified_labels",
    "blacklist",
    "write_blacklist",
    "exclusions",
    "BLACKLIST_VERDICTS",
]

#: final verdicts that keep an image out of a new test set
BLACKLIST_VERDICTS: tuple[str, ...] = ("reject", "duplicate", "unusable")


def _replay(path: str | os.PathLike[str], until: int | None = None) -> tuple[list[Event], ReviewState]:
    events = ReviewStore(path, create=False).events()
    if until is not None:
        from replicate._validation import check_int

        until = check_int("until", until, minimum=0)
        events = [e for e in events if e.seq <= until]
    return events, ReviewState(events)


def decisions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The full decision log as a DataFrame, one row per event, in log order.

    Columns: ``seq, time, reviewer, stage, kind, item, ref_set, ref_id, verdict,
    label, class_name, reason, undoes, session``, plus ``standing`` (True for a
    decision that no later undo retracted; undo rows are never standing).
    """
    import pandas as pd

    events, state = _replay(path)
    df = pd.DataFrame([e.to_dict() for e in events], columns=list(ReviewStore.columns()))
    df["label"] = df["label"].astype("Int64")
    df["undoes"] = df["undoes"].astype("Int64")
    df["standing"] = np.array(
        [e.verdict != "undo" and not state.is_undone(e.seq) for e in events], dtype=bool
    )
    df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601")
    return df


def verdicts(
    path: str | os.PathLike[str],
    kind: Literal["label", "pair"] = "label",
    *,
    until: int | None = None,
) -> pd.DataFrame:
    """One row per reviewed item: each stage's verdict and the final one.

    For every stage ``s``: ``s_verdict, s_label, s_class, s_reviewer, s_time, s_reason``
    (missing where the stage has not decided). ``final_*`` is the verify stage's
    verdict where there is one, else the select stage's. Label items are keyed by
    ``id``; pairs by ``query_id, reference_set, reference_id``. ``until`` rebuilds the
    state as it stood after event ``until`` (a ``seq`` of :func:`decisions`).
    """
    import pandas as pd

    kind = check_choice("kind", kind, KINDS)  # type: ignore[assignment]
    _, state = _replay(path, until)
    keys = sorted({key for key, _ in state.keys() if key[0] == kind})
    rows = []
    for key in keys:
        _, item, ref_set, ref_id = key
        row: dict[str, Any] = (
            {"id": item}
            if kind == "label"
            else {
                "query_id": item,
                "reference_set": ref_set,
                "reference_id": ref_id,
            }
        )
        final = None
        for stage in STAGES:
            e = state.verdict(key, stage)
            row[f"{stage}_verdict"] = e.verdict if e else None
            if kind == "label":
                row[f"{stage}_label"] = e.label if e else None
                row[f"{stage}_class"] = e.class_name if e else None
            row[f"{stage}_reviewer"] = e.reviewer if e else None
            row[f"{stage}_time"] = e.time if e else None
            row[f"{stage}_reason"] = e.reason if e else None
            final = e or final
        row["final_stage"] = final.stage if final else None
        row["final_verdict"] = final.verdict if final else None
        if kind == "label":
            row["final_label"] = final.label if final else None
            row["final_class"] = final.class_name if final else None
        rows.append(row)
    cols = ["id"] if kind == "label" else ["query_id", "reference_set", "reference_id"]
    for stage in STAGES:
        cols += [f"{stage}_verdict"]
        if kind == "label":
            cols += [f"{stage}_label", f"{stage}_class"]
        cols += [f"{stage}_reviewer", f"{stage}_time", f"{stage}_reason"]
    cols += ["final_stage", "final_verdict"] + (["final_label", "final_class"] if kind == "label" else [])
    df = pd.DataFrame(rows, columns=cols)
    for c in df.columns:
        if c.endswith("_label"):
            df[c] = df[c].astype("Int64")
    return df


# --------------------------------------------------------------------------- agreement


@dataclass(frozen=True)
class Agreement:
    """Cohen's kappa between two raters over the items both decided.

    Each rater's judgment of an item is a category: for labels, the class it ends up
    with (accept or relabel) or ``reject`` / ``duplicate`` / ``unusable``; for pairs,
    ``duplicate`` or ``distinct``.
    """

    rater_a: str
    rater_b: str
    by: str
    kind: str
    n_items: int
    n_agree: int
    categories: tuple[str, ...]
    table: tuple[tuple[int, ...], ...]
    kappa: float
    std_kappa: float
    ci_low: float
    ci_high: float
    alpha: float
    method: str = "Cohen's kappa, statsmodels.stats.inter_rater.cohens_kappa (asymptotic CI)"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def observed_agreement(self) -> float:
        """Fraction of items on which the two raters agree."""
        return self.n_agree / self.n_items if self.n_items else math.nan

    def summary(self) -> str:
        """A few lines of text for a report."""
        head = f"Agreement ({self.kind} review, {self.by} {self.rater_a!r} vs {self.rater_b!r}): "
        if not self.n_items:
            return head + "no item decided by both raters."
        lines = [
            head
            + f"{self.n_agree}/{self.n_items} items agree; Cohen's kappa = "
            + (
                f"{self.kappa:.3f} ({100 * (1 - self.alpha):g}% CI {self.ci_low:.3f} to {self.ci_high:.3f})"
                if not math.isnan(self.kappa)
                else "undefined"
            ),
        ]
        if self.note:
            lines.append(self.note)
        names = [c.removeprefix("class:") for c in self.categories]
        width = max(len(c) for c in names)
        col = max(6, min(14, width))
        lines.append(
            " " * (width + 2) + " ".join(f"{c[:col]:>{col}}" for c in names) + f"   <- {self.rater_b}"
        )
        for c, row in zip(names, self.table):
            lines.append(f"{c:>{width}}  " + " ".join(f"{v:>{col}d}" for v in row))
        lines.append(f"rows: {self.rater_a}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (NaN becomes None)."""

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "rater_a": self.rater_a,
            "rater_b": self.rater_b,
            "by": self.by,
            "kind": self.kind,
            "n_items": self.n_items,
            "n_agree": self.n_agree,
            "categories": list(self.categories),
            "table": [list(r) for r in self.table],
            "kappa": clean(self.kappa),
            "std_kappa": clean(self.std_kappa),
            "ci_low": clean(self.ci_low),
            "ci_high": clean(self.ci_high),
            "alpha": self.alpha,
            "method": self.method,
            "note": self.note,
        }


def _category(e: Event) -> str:
    if e.kind == "label" and e.verdict in ("accept", "relabel"):
        return f"class:{e.class_name}"
    return e.verdict


def agreement(
    path: str | os.PathLike[str],
    rater_a: str = "select",
    rater_b: str = "verify",
    *,
    by: Literal["stage", "reviewer"] = "stage",
    kind: Literal["label", "pair"] = "label",
    alpha: float = 0.05,
) -> Agreement:
    """Cohen's kappa between two stages (default: select vs verify) or two reviewers.

    With ``by="reviewer"`` a reviewer's judgment of an item is their latest standing
    decision on it in any stage. Kappa and its asymptotic confidence interval come
    from ``statsmodels.stats.inter_rater.cohens_kappa``; kappa is undefined (NaN, with
    a note) when both raters used a single, identical category throughout.

    Parameters
    ----------
    path
        the review's decision log.
    rater_a, rater_b
        the two stages (``by="stage"``) or reviewer names (``by="reviewer"``).
    by
        compare stages or reviewers.
    kind
        label decisions or pair decisions.
    alpha
        one minus the level of kappa's confidence interval.
    """
    from statsmodels.stats.inter_rater import cohens_kappa

    by = check_choice("by", by, ("stage", "reviewer"))  # type: ignore[assignment]
    kind = check_choice("kind", kind, KINDS)  # type: ignore[assignment]
    alpha = check_fraction("alpha", alpha)
    _, state = _replay(path)
    if by == "stage":
        rater_a = check_choice("rater_a", rater_a, STAGES)
        rater_b = check_choice("rater_b", rater_b, STAGES)
    for name, r in (("rater_a", rater_a), ("rater_b", rater_b)):
        if not isinstance(r, str) or not r:
            raise fail(name, r, "a stage or reviewer name")
    if rater_a == rater_b:
        raise fail("rater_b", rater_b, f"a rater other than rater_a ({rater_a!r})")

    judged: dict[str, dict[tuple[str, str, str, str], str]] = {rater_a: {}, rater_b: {}}
    if by == "stage":
        for key, stage in state.keys():
            if key[0] == kind and stage in judged:
                e = state.verdict(key, stage)
                if e is not None:
                    judged[stage][key] = _category(e)
    else:
        latest: dict[tuple[str, tuple[str, str, str, str]], Event] = {}
        for e in state.standing():
            if e.kind == kind and e.reviewer in judged:
                k = (e.reviewer, e.key)
                if k not in latest or e.seq > latest[k].seq:
                    latest[k] = e
        for (rev, key), e in latest.items():
            judged[rev][key] = _category(e)
    common = sorted(set(judged[rater_a]) & set(judged[rater_b]))
    a = [judged[rater_a][k] for k in common]
    b = [judged[rater_b][k] for k in common]
    cats = tuple(sorted(set(a) | set(b)))
    index = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(cats), len(cats)), dtype=np.int64)
    for x, y in zip(a, b):
        table[index[x], index[y]] += 1
    n = len(common)
    agree = int(np.trace(table))
    note = ""
    kappa = std = lo = hi = math.nan
    if n == 0:
        note = "no item was decided by both raters"
    elif len(cats) == 1:
        note = f"kappa is undefined: both raters judged every item {cats[0]!r}"
    else:
        # statsmodels divides kappa by its null standard error for a z test we do not use;
        # when one rater used a single category that is 0/0 and warns
        with np.errstate(divide="ignore", invalid="ignore"):
            res = cohens_kappa(table, return_results=True)
        kappa, std = float(res["kappa"]), float(res["std_kappa"])
        if (table.sum(1) > 0).sum() == 1 or (table.sum(0) > 0).sum() == 1:
            note = "one rater used a single category: kappa is 0 or undefined and its interval uninformative"
        if alpha / 2 == float(res["alpha"]):  # statsmodels stores the one-sided level
            lo, hi = float(res["kappa_low"]), float(res["kappa_upp"])
        else:  # statsmodels fixes alpha at 0.05; the same normal interval at another level
            from scipy.stats import norm

            z = float(norm.ppf(1 - alpha / 2))
            lo, hi = kappa - z * std, kappa + z * std
    return Agreement(
        rater_a=rater_a,
        rater_b=rater_b,
        by=by,
        kind=kind,
        n_items=n,
        n_agree=agree,
        categories=cats,
        table=tuple(tuple(int(v) for v in row) for row in table),
        kappa=kappa,
        std_kappa=std,
        ci_low=lo,
        ci_high=hi,
        alpha=alpha,
        note=note,
    )


# --------------------------------------------------------------------------- exports


def verified_labels(
    path: str | os.PathLike[str],
    candidates: ImageSet,
    *,
    stage: Literal["verify", "select"] = "verify",
) -> ImageSet:
    """The candidates kept at ``stage`` (accepted or relabelled), with corrected labels.

    Order follows ``candidates``. Metadata gains ``proposed_label`` (the label before
    review), ``review_verdict`` and ``review_reviewer``; ``info['review']`` records the
    log and the number of events read. Use ``stage="select"`` for a one-stage review.
    """
    if not isinstance(candidates, ImageSet):
        raise fail("candidates", type(candidates).__name__, "an ImageSet", error=TypeError)
    stage = check_choice("stage", stage, STAGES)  # type: ignore[assignment]
    events, state = _replay(path)
    keep, labels, verdict_col, reviewer_col = [], [], [], []
    for pos, item in enumerate(candidates.ids.tolist()):
        e = state.verdict(("label", str(item), "", ""), stage)
        if e is not None and e.verdict in ("accept", "relabel"):
            keep.append(pos)
            labels.append(int(e.label) if e.label is not None else -1)
            verdict_col.append(e.verdict)
            reviewer_col.append(e.reviewer)
    keep_arr = np.asarray(keep, dtype=np.int64)
    out = candidates.select(keep_arr)
    meta = dict(out.metadata)
    meta["proposed_label"] = out.labels.copy()
    meta["review_verdict"] = np.asarray(verdict_col, dtype=str)
    meta["review_reviewer"] = np.asarray(reviewer_col, dtype=str)
    info = {
        **candidates.info,
        "review": {"log": str(Path(path)), "stage": stage, "events": len(events), "kept": len(keep)},
    }
    return ImageSet(
        np.asarray(out.images),
        np.asarray(labels, dtype=np.int64),
        candidates.class_names,
        out.ids,
        meta,
        name=f"{candidates.name}-verified",
        info=info,
    )


def blacklist(
    path: str | os.PathLike[str],
    *,
    verdicts: Iterable[str] = BLACKLIST_VERDICTS,
    pairs: bool = True,
) -> list[str]:
    """Ids to keep out of sampling and new test sets, sorted.

    An image is listed when its final verdict (verify stage, else select) is one of
    ``verdicts``, or, with ``pairs``, when it is the ``query_id`` of a flagged pair
    whose final verdict is ``duplicate``.
    """
    wanted = {check_choice("verdicts[]", v, LABEL_VERDICTS) for v in verdicts}
    _, state = _replay(path)
    out: set[str] = set()
    finals: dict[tuple[str, str, str, str], Event] = {}
    for key, stage in state.keys():
        e = state.verdict(key, stage)
        if e is None:
            continue
        prev = finals.get(key)
        if prev is None or STAGES.index(stage) > STAGES.index(prev.stage):
            finals[key] = e
    for key, e in finals.items():
        if key[0] == "label" and e.verdict in wanted:
            out.add(key[1])
        elif key[0] == "pair" and pairs and e.verdict == PAIR_VERDICTS[0]:
            out.add(key[1])
    return sorted(out)


def exclusions(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """The blacklist split by reason, for sampling's ``exclude={reason: ids}``.

    Keys: ``review_reject``, ``review_duplicate``, ``review_unusable`` (final label
    verdicts) and ``review_pair_duplicate`` (query ids of pairs judged duplicates).
    An id can appear under several reasons.
    """
    out = {f"review_{v}": blacklist(path, verdicts=[v], pairs=False) for v in BLACKLIST_VERDICTS}
    label_ids = set(blacklist(path, verdicts=(), pairs=False))
    out["review_pair_duplicate"] = sorted(set(blacklist(path, verdicts=(), pairs=True)) - label_ids)
    return out


def write_blacklist(path: str | os.PathLike[str], out: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write :func:`blacklist` to ``out`` as plain text, one id per line; returns the path."""
    ids = blacklist(path, **kwargs)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text("".join(f"{x}\n" for x in ids))
    os.replace(tmp, target)
    return target
