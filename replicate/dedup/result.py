"""Decisions and results: :func:`decide` (rules, groups, what to drop), :class:`DedupResult`
(save/load) and the blacklist file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from replicate._validation import fail
from replicate.dedup.rules import RANK_COLUMNS, DedupConfig, _flag_rules, _rules_text
from replicate.imageset import ImageSet

# --------------------------------------------------------------------------------------
# blacklist


def read_blacklist(path: str | os.PathLike[str] | None) -> list[str]:
    """Ids in a blacklist file: one per line; blank lines and ``#`` comments ignored.

    A missing file is an empty blacklist only when ``path`` is None.
    """
    if path is None:
        return []
    p = Path(path)
    if not p.is_file():
        raise fail("blacklist", str(p), "an existing text file with one id per line", error=FileNotFoundError)
    ids = []
    for line in p.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            ids.append(text)
    return ids


def append_blacklist(path: str | os.PathLike[str], ids: Iterable[str], comment: str | None = None) -> int:
    """Append ids (not already listed) to a blacklist file; returns how many were added."""
    p = Path(path)
    have = set(read_blacklist(p)) if p.exists() else set()
    new = [str(i) for i in ids if str(i) not in have]
    new = list(dict.fromkeys(new))
    for i in new:
        if not i or "\n" in i or "#" in i:
            raise fail("ids", i, "non-empty ids without newlines or '#'")
    if new:
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("a", encoding="utf-8") as f:
            if comment:
                f.write(f"# {comment}\n")
            f.write("".join(f"{i}\n" for i in new))
    return len(new)


# --------------------------------------------------------------------------------------
# result


@dataclass(frozen=True, eq=False)
class DedupResult:
    """Near-duplicates of a query set in reference sets (and within itself).

    Attributes
    ----------
    pairs
        one row per candidate pair: ``query_id``, ``reference_set``, ``reference_id``,
        ``hamming_<method>`` per hash, ``l2`` (exact pixel L2), ``l2_rms``, ``l2_rank``,
        ``tiny``, ``tiny_rank``, ``aligned`` (and ``feature``, ``feature_rank``),
        ``flagged`` and ``flagged_by`` (the rules that fired). Ranks are 1-based among
        the query's neighbours in that set, missing when outside the k searched.
        Pairs within the query set have ``reference_set`` equal to the query's name.
    groups
        members of every duplicate group: ``group``, ``set``, ``id``, ``is_query``,
        ``kept``.
    flagged
        query images to exclude: ``query_id``, ``reason`` (``reference`` — in a group
        with an original image; ``within_query`` — a group inside the new set, one other
        member kept; ``blacklist``), ``group`` (-1 for none) and ``matches``.
    kept_ids
        query ids not flagged, in set order.
    config
        the signals and thresholds used.
    """

    pairs: pd.DataFrame
    groups: pd.DataFrame
    flagged: pd.DataFrame
    kept_ids: np.ndarray
    config: DedupConfig
    query_name: str
    n_query: int
    reference_sizes: dict[str, int]
    blacklist: dict[str, Any]

    @property
    def flagged_ids(self) -> np.ndarray:
        """Query ids to exclude (every reason)."""
        return self.flagged.query_id.to_numpy(dtype=str)

    @property
    def n_flagged(self) -> int:
        return len(self.flagged)

    def counts(self) -> dict[str, int]:
        """Flagged query images per reason, and pair/group counts."""
        reasons = self.flagged.reason.value_counts()
        return {
            "query": self.n_query,
            "flagged": self.n_flagged,
            "kept": len(self.kept_ids),
            "reference": int(reasons.get("reference", 0)),
            "within_query": int(reasons.get("within_query", 0)),
            "blacklist": int(reasons.get("blacklist", 0)),
            "candidate_pairs": len(self.pairs),
            "flagged_pairs": int(self.pairs.flagged.sum()) if len(self.pairs) else 0,
            "groups": int(self.groups.group.nunique()) if len(self.groups) else 0,
        }

    def flagged_by_signal(self) -> dict[str, int]:
        """Flagged pairs per rule (a pair can count under several)."""
        out: dict[str, int] = {}
        for s in self.pairs.flagged_by[self.pairs.flagged] if len(self.pairs) else []:
            for r in str(s).split(","):
                out[r] = out.get(r, 0) + 1
        return dict(sorted(out.items()))

    def summary(self) -> str:
        """A few lines of text."""
        c = self.counts()
        refs = ", ".join(f"{k} ({v})" for k, v in self.reference_sizes.items()) or "none"
        rules = _rules_text(self.config)
        lines = [
            f"Near-duplicates of {self.query_name} ({self.n_query} images) in: {refs}"
            + ("; and within the set" if self.config.within_query else ""),
            f"rules: {rules}",
            f"{c['flagged']} flagged ({c['reference']} near an original image, "
            f"{c['within_query']} duplicates within the set, {c['blacklist']} blacklisted); "
            f"{c['kept']} kept",
            f"{c['candidate_pairs']} candidate pairs, {c['flagged_pairs']} flagged, in {c['groups']} groups; "
            f"flagged pairs per rule: {self.flagged_by_signal()}",
        ]
        if self.blacklist.get("path"):
            lines.append(
                f"blacklist {self.blacklist['path']}: {self.blacklist['n_ids']} ids, "
                f"{self.blacklist['n_matched']} in this set"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: counts, config, the flagged ids with reasons."""
        return {
            "query": self.query_name,
            "n_query": self.n_query,
            "references": dict(self.reference_sizes),
            "counts": self.counts(),
            "flagged_pairs_by_rule": self.flagged_by_signal(),
            "config": self.config.to_dict(),
            "blacklist": dict(self.blacklist),
            "flagged": [
                {"query_id": str(r.query_id), "reason": str(r.reason), "group": int(r.group), "matches": str(r.matches)}
                for r in self.flagged.itertuples()
            ],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``pairs.csv``, ``groups.csv``, ``flagged.csv``, ``flagged_ids.txt``,
        ``kept_ids.txt`` and ``result.json`` into directory ``path``."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self.pairs.to_csv(p / "pairs.csv", index=False)
        self.groups.to_csv(p / "groups.csv", index=False)
        self.flagged.to_csv(p / "flagged.csv", index=False)
        (p / "flagged_ids.txt").write_text("".join(f"{i}\n" for i in self.flagged_ids))
        (p / "kept_ids.txt").write_text("".join(f"{i}\n" for i in self.kept_ids))
        meta = {k: v for k, v in self.to_dict().items() if k != "flagged"}
        (p / "result.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DedupResult:
        """Read a directory written by :meth:`save`."""
        p = Path(path)
        if not (p / "result.json").is_file():
            raise fail("path", str(p), "a directory written by DedupResult.save (with result.json)", error=FileNotFoundError)
        meta = json.loads((p / "result.json").read_text())
        str_cols = {"query_id": str, "reference_set": str, "reference_id": str, "id": str, "set": str, "matches": str}
        pairs = pd.read_csv(p / "pairs.csv", dtype={**str_cols, "flagged_by": str}, keep_default_na=False, na_values=[""])
        for col in RANK_COLUMNS:
            if col in pairs:
                pairs[col] = pairs[col].astype("Int64")
        if "flagged_by" in pairs:
            pairs["flagged_by"] = pairs["flagged_by"].fillna("")
        groups = pd.read_csv(p / "groups.csv", dtype=str_cols, keep_default_na=False)
        flagged = pd.read_csv(p / "flagged.csv", dtype=str_cols, keep_default_na=False)
        kept = np.array([x for x in (p / "kept_ids.txt").read_text().splitlines() if x], dtype=str)
        return cls(
            pairs=pairs,
            groups=groups,
            flagged=flagged,
            kept_ids=kept,
            config=DedupConfig.from_dict(meta["config"]),
            query_name=meta["query"],
            n_query=int(meta["n_query"]),
            reference_sizes={k: int(v) for k, v in meta["references"].items()},
            blacklist=meta["blacklist"],
        )


def decide(
    pairs: pd.DataFrame,
    query: ImageSet,
    references: Mapping[str, ImageSet],
    config: DedupConfig,
    *,
    blacklist: Iterable[str] = (),
    blacklist_path: str | None = None,
) -> DedupResult:
    """Apply the rules to a candidate-pair table (positions), form groups, pick what to drop.

    Parameters
    ----------
    pairs
        the concatenation of :func:`candidate_pairs` over all query chunks.
    query
        the query set whose positions ``pairs.query_pos`` holds.
    references
        ``{name: set}`` for every reference set named in ``pairs.reference_set``.
    config
        the rules to apply: re-running :func:`decide` with another ``config`` (thresholds
        only) re-scores the same candidates without searching again.
    blacklist
        query ids to drop whatever their pairs.
    blacklist_path
        the file ``blacklist`` came from (recorded in the result).

    Returns
    -------
    DedupResult
        the pairs by id with ``flagged`` and ``flagged_by``, the groups, what is dropped
        and why, and what is kept.
    """
    pairs = pairs.reset_index(drop=True)
    flagged, labels = _flag_rules(pairs, config, within=pairs.reference_set.to_numpy(str) == query.name)
    offsets, ids = _node_index(query, references)
    out = _pairs_by_id(pairs, query, ids, flagged, labels)
    bl = set(blacklist)
    q_black = np.isin(query.ids, list(bl)) if bl else np.zeros(len(query), bool)
    groups, reason = _groups(pairs, flagged, query, offsets, ids, q_black)
    for p in np.flatnonzero(q_black):
        # a blacklisted image already dropped by a group keeps that (more specific) reason
        reason.setdefault(int(p), ("blacklist", -1, ""))
    fl_pos = np.array(sorted(reason), dtype=np.int64)
    flagged_df = pd.DataFrame(
        {
            "query_id": query.ids[fl_pos] if len(fl_pos) else np.array([], dtype=str),
            "reason": [reason[int(p)][0] for p in fl_pos],
            "group": np.array([reason[int(p)][1] for p in fl_pos], dtype=np.int64),
            "matches": [reason[int(p)][2] for p in fl_pos],
        }
    )
    keep_mask = np.ones(len(query), dtype=bool)
    keep_mask[fl_pos] = False
    out = out.sort_values(["query_id", "reference_set", "reference_id"], kind="stable").reset_index(drop=True)
    return DedupResult(
        pairs=out,
        groups=groups,
        flagged=flagged_df,
        kept_ids=query.ids[keep_mask],
        config=config,
        query_name=query.name,
        n_query=len(query),
        reference_sizes={n: len(references[n]) for n in references},
        blacklist={"path": blacklist_path, "n_ids": len(bl), "n_matched": int(q_black.sum())},
    )


def _node_index(query: ImageSet, references: Mapping[str, ImageSet]) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """One node per image of the query and reference sets: each set's first node (the query
    first, then the references in order) and its ids."""
    offsets: dict[str, int] = {query.name: 0}
    total = len(query)
    for n in references:
        offsets[n] = total
        total += len(references[n])
    ids = {n: references[n].ids for n in references}
    ids[query.name] = query.ids
    return offsets, ids


def _pairs_by_id(
    pairs: pd.DataFrame, query: ImageSet, ids: Mapping[str, np.ndarray], flagged: np.ndarray, labels: np.ndarray
) -> pd.DataFrame:
    """The candidate table with ids instead of positions, and the rules' verdicts."""
    rpos = pairs.reference_pos.to_numpy(np.int64)
    rset = pairs.reference_set.to_numpy(str)
    empty = np.array([], dtype=str)
    out = pd.DataFrame(
        {
            "query_id": query.ids[pairs.query_pos.to_numpy(np.int64)] if len(pairs) else empty,
            "reference_set": rset,
            "reference_id": np.array([ids[s][p] for s, p in zip(rset, rpos)], dtype=str) if len(pairs) else empty,
        }
    )
    for col in pairs.columns:
        if col not in ("query_pos", "reference_set", "reference_pos"):
            out[col] = pairs[col].to_numpy() if not isinstance(pairs[col].dtype, pd.Int64Dtype) else pairs[col]
    out["flagged"] = flagged
    out["flagged_by"] = labels
    return out


def _groups(
    pairs: pd.DataFrame,
    flagged: np.ndarray,
    query: ImageSet,
    offsets: Mapping[str, int],
    ids: Mapping[str, np.ndarray],
    q_black: np.ndarray,
) -> tuple[pd.DataFrame, dict[int, tuple[str, int, str]]]:
    """Duplicate groups (connected components of the flagged pairs over query and reference
    images) and, per dropped query position, ``(reason, group, matches)``.

    A group holding a reference image drops all its query images; a group inside the query
    keeps its first member that is not blacklisted. Groups are numbered in the order of
    their first node (deterministic).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rset = pairs.reference_set.to_numpy(str)
    fq = pairs.query_pos.to_numpy(np.int64)[flagged]
    fr = np.array([offsets[s] for s in rset[flagged]], dtype=np.int64) + pairs.reference_pos.to_numpy(np.int64)[flagged]
    nodes = np.unique(np.concatenate([fq, fr]))
    local = {int(v): i for i, v in enumerate(nodes)}
    a = np.array([local[int(v)] for v in fq], dtype=np.int64)
    b = np.array([local[int(v)] for v in fr], dtype=np.int64)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(nodes), len(nodes)))
    ncomp, comp = connected_components(graph, directed=False)
    set_of_node, id_of_node = _node_names(nodes, offsets, ids)
    is_query = nodes < len(query)
    first_seen: dict[int, int] = {}
    for i in np.argsort(nodes):
        first_seen.setdefault(int(comp[i]), len(first_seen))
    group_rows = []
    reason: dict[int, tuple[str, int, str]] = {}
    for c in range(ncomp):
        members = np.flatnonzero(comp == c)
        members = members[np.argsort(nodes[members])]
        gid = first_seen[c]
        qm = members[is_query[members]]
        rm = members[~is_query[members]]
        kept_node: int = -1
        if len(rm):
            matches = "; ".join(f"{set_of_node[i]}:{id_of_node[i]}" for i in rm[:5]) + (
                f"; ... ({len(rm)} in all)" if len(rm) > 5 else ""
            )
            for i in qm:
                reason[int(nodes[i])] = ("reference", gid, matches)
        else:
            free = [i for i in qm if not q_black[nodes[i]]]
            kept_node = int(free[0]) if free else -1
            keep_id = id_of_node[kept_node] if kept_node >= 0 else "(none: all blacklisted)"
            for i in qm:
                if int(i) != kept_node:
                    reason[int(nodes[i])] = ("within_query", gid, f"{query.name}:{keep_id}")
        group_rows += [
            {"group": gid, "set": set_of_node[node], "id": id_of_node[node], "is_query": bool(is_query[node]),
             "kept": bool(node == kept_node)}
            for node in members
        ]
    groups = pd.DataFrame(group_rows, columns=["group", "set", "id", "is_query", "kept"])
    groups = groups.sort_values(["group", "is_query", "set", "id"], ascending=[True, False, True, True], kind="stable")
    return groups.reset_index(drop=True), reason


def _node_names(
    nodes: np.ndarray, offsets: Mapping[str, int], ids: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The set name and the id of each node (:func:`_node_index`)."""
    set_of_node = np.empty(len(nodes), dtype=object)
    id_of_node = np.empty(len(nodes), dtype=object)
    bounds = sorted(offsets.items(), key=lambda kv: kv[1])
    for i, v in enumerate(nodes):
        for n, off in reversed(bounds):
            if v >= off:
                set_of_node[i] = n
                id_of_node[i] = ids[n][v - off]
                break
    return set_of_node, id_of_node
