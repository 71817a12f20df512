"""What is reviewed: candidate images with proposed labels, and flagged pairs.

A :class:`ReviewQueue` is a read-only description built from an :class:`ImageSet`
(the candidates of a pool or a sampled new test set: each image with its proposed
class and keyword) and, optionally, a table of flagged near-duplicate pairs with
columns ``query_id``, ``reference_set``, ``reference_id`` and any number of distance
columns (the ``pairs`` table of a dedup result). Images stay where they are (a
memory-mapped set is never read in full); only the ids, labels and keywords are
held in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from replicate._html import data_uri, png_bytes
from replicate._validation import check_int, fail
from replicate.imageset import ImageSet

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["ReviewQueue", "PAIR_KEY_COLUMNS", "encode_png"]

PAIR_KEY_COLUMNS = ("query_id", "reference_set", "reference_id")


def encode_png(image: np.ndarray, scale: int = 1) -> bytes:
    """PNG bytes of one HWC uint8 image, upscaled ``scale`` times by nearest neighbour."""
    return png_bytes(image, scale, compress_level=1)  # fast: encoded on request


def data_url(png: bytes) -> str:
    """A ``data:`` URL for PNG bytes (a page's images arrive in one response)."""
    return data_uri(png)


class ReviewQueue:
    """Candidates to label-review and flagged pairs to duplicate-review.

    Parameters
    ----------
    candidates
        the images under review; their labels are the proposed classes.
    pairs
        flagged near-duplicate pairs: a dedup result (its ``pairs`` table) or a table
        with ``query_id`` (an id in ``candidates``), ``reference_set`` (the name of
        ``candidates`` or a key of ``references``), ``reference_id``, and distance
        columns (every other numeric, non-boolean column); other text columns (such
        as ``flagged_by``) are shown as notes.
    references
        the sets that ``reference_set`` names, so both images of a pair can be shown.
    keyword_column
        the metadata column holding each candidate's search keyword (empty when absent).
    pair_rows
        ``"flagged"`` (default) reviews only rows whose ``flagged`` column is true, when
        the table has one (a dedup result lists near misses too); ``"all"`` reviews
        every row.
    """

    def __init__(
        self,
        candidates: ImageSet,
        pairs: pd.DataFrame | None = None,
        references: Mapping[str, ImageSet] | None = None,
        *,
        keyword_column: str = "keyword",
        pair_rows: Literal["flagged", "all"] = "flagged",
    ) -> None:
        from replicate._validation import check_choice

        self.pair_rows = check_choice("pair_rows", pair_rows, ("flagged", "all"))
        if not isinstance(candidates, ImageSet):
            raise fail(
                "candidates",
                type(candidates).__name__,
                "an ImageSet",
                "Read one with replicate.load(path).",
                error=TypeError,
            )
        if len(candidates.class_names) == 0:
            raise fail(
                "candidates.class_names",
                candidates.class_names,
                "at least one class name",
                "Label the set first.",
            )
        self.candidates = candidates
        self.class_names: tuple[str, ...] = candidates.class_names
        self.ids: np.ndarray = candidates.ids
        self.labels: np.ndarray = np.asarray(candidates.labels, dtype=np.int64)
        self.keyword_column = keyword_column
        if keyword_column in candidates.metadata:
            kw = np.asarray(candidates.metadata[keyword_column]).astype(str)
        else:
            kw = np.full(len(candidates), "", dtype="<U1")
        self.keyword_names, codes = np.unique(kw, return_inverse=True)
        self.keyword_codes: np.ndarray = codes.astype(np.int64).reshape(-1)
        self._positions: dict[str, int] | None = None
        self.sets: dict[str, ImageSet] = {candidates.name: candidates}
        for name, s in (references or {}).items():
            if not isinstance(s, ImageSet):
                raise fail(f"references[{name!r}]", type(s).__name__, "an ImageSet", error=TypeError)
            if name in self.sets and s is not candidates:
                raise fail(
                    "references",
                    name,
                    f"a name other than the candidates' name {candidates.name!r}",
                    "Rename the reference set with .renamed().",
                )
            self.sets[str(name)] = s
        self._set_positions: dict[str, dict[str, int]] = {}
        self._init_pairs(pairs)

    # ------------------------------------------------------------------ labels

    def __len__(self) -> int:
        return len(self.ids)

    def position(self, item_id: str) -> int | None:
        """Position of a candidate id (``None`` if it is not in the queue)."""
        if self._positions is None:
            self._positions = {str(x): i for i, x in enumerate(self.ids.tolist())}
        return self._positions.get(item_id)

    def keyword(self, pos: int) -> str:
        """The keyword of the candidate at ``pos``."""
        return str(self.keyword_names[self.keyword_codes[pos]])

    def keyword_counts(self) -> dict[str, int]:
        """Candidates per keyword."""
        counts = np.bincount(self.keyword_codes, minlength=len(self.keyword_names))
        return {str(k): int(c) for k, c in zip(self.keyword_names, counts)}

    def class_index(self, name_or_index: Any) -> int:
        """A class given by name or index, checked against the class names."""
        if isinstance(name_or_index, str):
            from replicate._validation import check_choice

            return self.class_names.index(check_choice("class", name_or_index, self.class_names))
        return check_int("label", name_or_index, 0, len(self.class_names) - 1)

    # ------------------------------------------------------------------ images

    def image(self, set_name: str, item_id: str) -> np.ndarray | None:
        """One image by set name and id (``None`` when either is unknown)."""
        s = self.sets.get(set_name)
        if s is None:
            return None
        if s is self.candidates:
            pos = self.position(item_id)
        else:
            table = self._set_positions.get(set_name)
            if table is None:
                table = {str(x): i for i, x in enumerate(s.ids.tolist())}
                self._set_positions[set_name] = table
            pos = table.get(item_id)
        return None if pos is None else np.asarray(s.images[pos])

    # ------------------------------------------------------------------ pairs

    def _init_pairs(self, pairs: pd.DataFrame | None) -> None:
        import pandas as pd

        self.distance_columns: tuple[str, ...] = ()
        self.note_columns: tuple[str, ...] = ()
        if (
            pairs is not None
            and not isinstance(pairs, pd.DataFrame)
            and isinstance(getattr(pairs, "pairs", None), pd.DataFrame)
        ):
            pairs = pairs.pairs  # a dedup result
        if pairs is None:
            pairs = pd.DataFrame({c: pd.Series([], dtype=str) for c in PAIR_KEY_COLUMNS})
        if not isinstance(pairs, pd.DataFrame):
            raise fail(
                "pairs", type(pairs).__name__, "a pandas DataFrame (DedupResult.pairs)", error=TypeError
            )
        missing = [c for c in PAIR_KEY_COLUMNS if c not in pairs.columns]
        if missing:
            raise fail(
                "pairs columns",
                list(pairs.columns),
                f"to include {list(PAIR_KEY_COLUMNS)} (missing {missing})",
                "Pass the pairs table of a dedup result.",
            )
        if self.pair_rows == "flagged" and "flagged" in pairs.columns:
            pairs = pairs[pairs["flagged"].astype("boolean").fillna(False).to_numpy(dtype=bool)]
        pairs = pairs.reset_index(drop=True)
        q = pairs["query_id"].astype(str).to_numpy()
        rs = pairs["reference_set"].astype(str).to_numpy()
        ri = pairs["reference_id"].astype(str).to_numpy()
        unknown_q = [x for x in q if self.position(x) is None]
        if unknown_q:
            raise fail(
                "pairs.query_id",
                f"{len(unknown_q)} ids not among the candidates, e.g. {unknown_q[:3]}",
                f"ids of images in {self.candidates.name!r}",
                "Review the pairs together with the set they were computed for.",
                error=KeyError,
            )
        unknown_sets = sorted(set(rs.tolist()) - set(self.sets))
        if unknown_sets:
            raise fail(
                "pairs.reference_set",
                unknown_sets,
                f"one of the sets given: {sorted(self.sets)}",
                "Pass the reference sets, e.g. references={'cifar10-test': replicate.load(path)} "
                "(CLI: --reference NAME=PATH).",
                error=KeyError,
            )
        for name in set(rs.tolist()):
            ids_here = ri[rs == name]
            bad = [x for x in ids_here if self.image_position(name, x) is None]
            if bad:
                raise fail(
                    "pairs.reference_id",
                    f"{len(bad)} ids not in reference set {name!r}, e.g. {bad[:3]}",
                    f"ids of images in {name!r}",
                    error=KeyError,
                )
        keys = list(zip(q.tolist(), rs.tolist(), ri.tolist()))
        if len(set(keys)) != len(keys):
            seen: set[tuple[str, str, str]] = set()
            dup = [k for k in keys if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
            raise fail(
                "pairs", f"{len(dup)} repeated pairs, e.g. {dup[:2]}", "one row per pair", "Drop the repeats."
            )
        extra = [c for c in pairs.columns if c not in PAIR_KEY_COLUMNS and c != "flagged"]
        dist = [
            c
            for c in extra
            if pd.api.types.is_numeric_dtype(pairs[c]) and not pd.api.types.is_bool_dtype(pairs[c])
        ]
        notes = [c for c in extra if c not in dist and not pd.api.types.is_bool_dtype(pairs[c])]
        self.distance_columns = tuple(str(c) for c in dist)
        self.distances = {str(c): pairs[c].to_numpy(dtype=float) for c in dist}
        self.note_columns = tuple(str(c) for c in notes)
        self.notes = {str(c): pairs[c].fillna("").astype(str).to_numpy() for c in notes}
        self.pair_query, self.pair_ref_set, self.pair_ref_id = q, rs, ri
        self.pair_index: dict[tuple[str, str, str], int] = {k: i for i, k in enumerate(keys)}

    def image_position(self, set_name: str, item_id: str) -> int | None:
        """Position of an id in a named set (``None`` if absent)."""
        if set_name not in self.sets:
            return None
        if self.sets[set_name] is self.candidates:
            return self.position(item_id)
        table = self._set_positions.get(set_name)
        if table is None:
            table = {str(x): i for i, x in enumerate(self.sets[set_name].ids.tolist())}
            self._set_positions[set_name] = table
        return table.get(item_id)

    @property
    def n_pairs(self) -> int:
        """Number of flagged pairs."""
        return len(self.pair_index)

    def pair_key(self, i: int) -> tuple[str, str, str]:
        """``(query_id, reference_set, reference_id)`` of pair ``i``."""
        return (str(self.pair_query[i]), str(self.pair_ref_set[i]), str(self.pair_ref_id[i]))

    def fingerprint(self) -> str:
        """Fingerprint of the candidates (stored in the log to catch a mixed-up set)."""
        return self.candidates.fingerprint
