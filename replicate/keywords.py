"""Keyword statistics: how many images of each class came from each search keyword.

CIFAR-10 was collected from Tiny Images by keyword search, so a faithful replication
draws new images with the same per-class keyword distribution. This module holds that
distribution (:class:`KeywordCounts`, class -> keyword -> count), reads it from an image
set's metadata or from published tables (CIFAR-10.1, CIFAR-10.2), normalises keyword
spellings, and matches a pool's vocabulary to the original's (:func:`match_keywords`),
reporting every keyword left unmatched on either side.

Allocation strategies (how many new images each keyword gets) are in
:func:`allocate`; sampling a pool to hit an allocation is in :mod:`replicate.sampling`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from replicate._validation import check_choice, check_int, fail

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from replicate.imageset import ImageSet

__all__ = [
    "KeywordCounts",
    "KeywordMatch",
    "KeywordGroup",
    "Allocation",
    "keyword_counts",
    "load_cifar10_1_counts",
    "load_cifar10_2_counts",
    "load_keyword_counts",
    "normalize_keyword",
    "load_synonyms",
    "match_keywords",
    "allocate",
    "largest_remainder",
    "SYNONYM_MAPS",
]

Strategy = Literal["v6", "v4", "proportional"]
STRATEGIES: tuple[str, ...] = ("v6", "v4", "proportional")
#: CIFAR-10.1 keyword tables (``keyword_metadata.json`` versions) and CIFAR-10.2 splits.
TableVersion = Literal["v4", "v6", "v7"]
TABLE_VERSIONS: tuple[str, ...] = ("v4", "v6", "v7")
Split = Literal["test", "train", "all"]
SPLITS: tuple[str, ...] = ("test", "train", "all")

#: Synonym maps shipped with replicate (name -> file in replicate/data/keyword_maps/).
SYNONYM_MAPS: dict[str, str] = {
    "tinyimagenet-wordnet-to-cifar10_1": "tinyimagenet_wordnet_to_cifar10_1.json",
}


# --------------------------------------------------------------------------- normalisation

_SEP = re.compile(r"[\s_]+")
_KEEP_S = ("ss", "us", "is", "os", "as", "ys")


def _singular(word: str) -> str:
    """A conservative singular of one English word (never shorter than 3 letters)."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith(_KEEP_S):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    return word[:-1]


def normalize_keyword(keyword: str, *, singular: bool = True) -> str:
    """Canonical spelling for matching: lower case, words joined by ``_``, last word singular.

    ``"Sports Car"``, ``"sports_car"`` and ``"sports  cars"`` all become ``"sports_car"``.
    Plurals are reduced by a conservative rule on the last word only (``-ies`` -> ``-y``;
    ``-ches/-shes/-sses/-xes/-zes`` drop ``-es``; otherwise a final ``-s`` is dropped unless
    the word ends in ``ss/us/is/os/as/ys`` or has 3 letters or fewer). The same rule is
    applied to both sides of a match, so Latin names (``rana_pipiens``) still meet.
    """
    if not isinstance(keyword, str):
        raise fail("keyword", keyword, "a string", error=TypeError)
    words = [w for w in _SEP.split(keyword.strip().lower()) if w]
    if not words:
        return ""
    if singular:
        words[-1] = _singular(words[-1])
    return "_".join(words)


def _lemmas(keyword: str, separator: str | None) -> list[str]:
    parts = keyword.split(separator) if separator else [keyword]
    out: list[str] = []
    for p in parts:
        n = normalize_keyword(p)
        if n and n not in out:
            out.append(n)
    return out


# --------------------------------------------------------------------------- the counts type


def _check_count(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise fail(where, value, "a non-negative integer count", error=TypeError)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or value != int(value):
            raise fail(where, value, "a non-negative integer count", "Counts are numbers of images.")
    if value < 0:
        raise fail(where, value, "a non-negative integer count", "Counts are numbers of images.")
    return int(value)


@dataclass(frozen=True)
class KeywordCounts:
    """Per-class keyword counts: ``counts[class_name][keyword] -> number of images``.

    Within each class keywords are ordered by count (descending), then name, so
    ``top_k`` and printed tables are deterministic. ``classes`` fixes the class order
    (every class listed, possibly with no keywords).
    """

    counts: Mapping[str, Mapping[str, int]]
    classes: tuple[str, ...]
    source: str = "counts"
    info: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(
        cls,
        counts: Mapping[str, Mapping[str, Any]],
        *,
        classes: Sequence[str] | None = None,
        source: str = "dict",
        info: Mapping[str, Any] | None = None,
    ) -> KeywordCounts:
        """Validated counts from ``{class: {keyword: count}}``.

        ``classes`` (e.g. an image set's class names) fixes the order and rejects
        unknown class names; counts must be non-negative integers (``3.0`` is accepted).
        Zero counts are kept out of the table.
        """
        if not isinstance(counts, Mapping):
            raise fail("counts", counts, "a mapping {class: {keyword: count}}", error=TypeError)
        counts = {str(c): v for c, v in counts.items()}
        if classes is None:
            classes = tuple(str(c) for c in counts)
        else:
            classes = tuple(str(c) for c in classes)
            for c in counts:
                if str(c) not in classes:
                    check_choice("class name", str(c), classes)
        table: dict[str, dict[str, int]] = {}
        for c in classes:
            kws = counts.get(c, {})
            if not isinstance(kws, Mapping):
                raise fail(f"counts[{c!r}]", kws, "a mapping {keyword: count}", error=TypeError)
            row: dict[str, int] = {}
            for kw, v in kws.items():
                if not isinstance(kw, str) or not kw:
                    raise fail(f"keyword in class {c!r}", kw, "a non-empty string", error=TypeError)
                n = _check_count(f"counts[{c!r}][{kw!r}]", v)
                if n:
                    row[kw] = n
            table[c] = dict(sorted(row.items(), key=lambda kv: (-kv[1], kv[0])))
        return cls(table, classes, source, dict(info or {}))

    # ------------------------------------------------------------------ views

    def __getitem__(self, class_name: str) -> Mapping[str, int]:
        if class_name not in self.counts:
            check_choice("class name", class_name, self.classes)
        return self.counts[class_name]

    def keywords(self, class_name: str | None = None) -> list[str]:
        """Keywords of one class (by count), or of all classes (class order, then count)."""
        if class_name is not None:
            return list(self[class_name])
        return [kw for c in self.classes for kw in self.counts[c]]

    @property
    def total(self) -> int:
        """Number of images counted."""
        return sum(self.class_totals().values())

    def class_totals(self) -> dict[str, int]:
        """Images per class (every class listed)."""
        return {c: int(sum(self.counts[c].values())) for c in self.classes}

    @property
    def n_keywords(self) -> int:
        """Number of (class, keyword) cells with a positive count."""
        return sum(len(self.counts[c]) for c in self.classes)

    def top_k(self, k: int) -> KeywordCounts:
        """The ``k`` most frequent keywords of each class (ties broken by name)."""
        k = check_int("k", k, minimum=1)
        return KeywordCounts(
            {c: dict(list(self.counts[c].items())[:k]) for c in self.classes},
            self.classes,
            self.source,
            {**self.info, "top_k": k},
        )

    def restrict(self, keywords: Mapping[str, Iterable[str]]) -> KeywordCounts:
        """Only the listed keywords of each class (``{class: [keyword, ...]}``); others dropped.

        Every keyword listed must be present; classes not listed keep no keywords.
        """
        out: dict[str, dict[str, int]] = {c: {} for c in self.classes}
        for c, kws in keywords.items():
            row = self[c]
            for kw in kws:
                if kw not in row:
                    raise fail(
                        f"keyword in class {c!r}",
                        kw,
                        f"one of the {len(row)} keywords counted for {c!r}",
                        "Check the spelling or normalise both sides with normalize_keyword().",
                        error=KeyError,
                    )
                out[c][kw] = row[kw]
        return KeywordCounts(out, self.classes, self.source, {**self.info, "restricted": True})

    def flat(self) -> dict[tuple[str, str], int]:
        """``{(class, keyword): count}`` in table order."""
        return {(c, kw): n for c in self.classes for kw, n in self.counts[c].items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``{"classes", "counts" (class -> keyword -> count), "source", "info"}``."""
        return {
            "classes": list(self.classes),
            "counts": {c: dict(self.counts[c]) for c in self.classes},
            "class_totals": self.class_totals(),
            "total": self.total,
            "source": self.source,
            "info": dict(self.info),
        }

    def to_dataframe(self) -> pd.DataFrame:
        """One row per (class, keyword): ``class``, ``keyword``, ``count``, ``share_of_class``."""
        import pandas as pd

        totals = self.class_totals()
        rows = [
            {"class": c, "keyword": kw, "count": n, "share_of_class": n / totals[c] if totals[c] else 0.0}
            for c in self.classes
            for kw, n in self.counts[c].items()
        ]
        return pd.DataFrame(rows, columns=["class", "keyword", "count", "share_of_class"])

    def summary(self, top: int = 5) -> str:
        """Text table: per class, its total and its ``top`` keywords."""
        lines = [f"KeywordCounts from {self.source}: {self.total} images, {self.n_keywords} (class, keyword) cells"]
        width = max((len(c) for c in self.classes), default=0)
        for c in self.classes:
            row = self.counts[c]
            head = ", ".join(f"{kw} {n}" for kw, n in list(row.items())[:top])
            more = f", ... (+{len(row) - top})" if len(row) > top else ""
            lines.append(f"  {c:<{width}}  {sum(row.values()):>6}  {len(row):>3} keywords: {head}{more}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- readers


def keyword_counts(
    imageset: ImageSet,
    column: str = "keyword",
    *,
    normalize: bool = False,
    separator: str | None = None,
) -> KeywordCounts:
    """Per-class keyword counts of an image set, from its metadata column ``column``.

    Every image must be labelled. With ``normalize=True`` keywords are counted in their
    :func:`normalize_keyword` spelling; ``separator`` (e.g. ``","`` for WordNet synsets)
    keeps only the first lemma as the name (counts are per image either way).
    """
    if column not in imageset.metadata:
        raise fail(
            "column",
            column,
            f"a metadata column of {imageset.name!r} (columns: {', '.join(imageset.columns) or 'none'})",
            "Pass column= naming the per-image keyword column.",
            error=KeyError,
        )
    labels = imageset.labels
    unl = int(np.sum(labels < 0))
    if unl:
        raise fail(
            f"labels of {imageset.name!r}",
            f"{unl} of {len(labels)} unlabelled (-1)",
            "all labelled to count keywords per class",
            "Label the images first, or select the labelled ones with s.select(s.labels >= 0).",
        )
    kws = np.asarray(imageset.metadata[column]).astype(str)
    uniq, inv = np.unique(kws, return_inverse=True)
    names = list(uniq)
    if separator:
        names = [n.split(separator)[0].strip() for n in names]
    if normalize:
        names = [normalize_keyword(n) for n in names]
    k = len(uniq)
    cells = np.bincount(labels * k + inv, minlength=len(imageset.class_names) * k).reshape(-1, k)
    table: dict[str, dict[str, int]] = {}
    for ci, c in enumerate(imageset.class_names):
        row: dict[str, int] = {}
        for j in np.flatnonzero(cells[ci]):
            row[names[j]] = row.get(names[j], 0) + int(cells[ci, j])
        table[c] = row
    return KeywordCounts.from_dict(
        table,
        classes=imageset.class_names,
        source=f"imageset:{imageset.name}:{column}",
        info={"imageset": imageset.name, "column": column, "normalize": normalize, "n_images": len(imageset)},
    )


def _v4_classes(meta: Mapping[str, Any]) -> dict[str, str]:
    """Class of each CIFAR-10.1 v4 keyword.

    ``keywords_v4`` lists 25 keywords per class in class blocks; each block's class is
    the class under which most of its keywords appear in the v6/v7 tables.
    """
    kws = list(meta["keywords_v4"])
    known: dict[str, list[str]] = {}
    for version in ("keyword_counts_v6", "keyword_counts_v7"):
        for c, row in meta.get(version, {}).items():
            for kw in row:
                known.setdefault(kw, []).append(c)
    block = 25
    if len(kws) % block:
        raise fail("len(keywords_v4)", len(kws), "a multiple of 25 (25 keywords per class)")
    out: dict[str, str] = {}
    for start in range(0, len(kws), block):
        votes: dict[str, int] = {}
        for kw in kws[start : start + block]:
            for c in known.get(kw, []):
                votes[c] = votes.get(c, 0) + 1
        if not votes:
            raise fail("keywords_v4 block", kws[start], "a block sharing keywords with the v6/v7 tables")
        cls = max(sorted(votes), key=lambda c: votes[c])
        for kw in kws[start : start + block]:
            out[kw] = cls
    return out


def load_cifar10_1_counts(
    path: str | os.PathLike[str],
    version: TableVersion = "v6",
) -> KeywordCounts:
    """CIFAR-10.1's published keyword counts from the release's ``keyword_metadata.json``.

    ``v4``: the original CIFAR-10 counts of the 25 most frequent keywords per class
    (``keyword_counts_v4``, 250 keywords, 57,148 images), with classes taken from the
    25-per-class blocks of ``keywords_v4``. ``v6``/``v7``: the counts of the new test set
    (class -> keyword -> count, 200 per class).
    """
    check_choice("version", version, TABLE_VERSIONS)
    p = Path(path)
    if not p.is_file():
        raise fail("path", str(p), "an existing keyword_metadata.json", error=FileNotFoundError)
    meta = json.loads(p.read_text())
    from replicate.imageset import CIFAR10_CLASSES

    key = f"keyword_counts_{version}"
    if key not in meta:
        raise fail("path", str(p), f"a JSON file with key {key!r} (CIFAR-10.1 keyword metadata)", error=KeyError)
    if version == "v4":
        classes = _v4_classes(meta)
        table: dict[str, dict[str, int]] = {c: {} for c in CIFAR10_CLASSES}
        for kw, n in meta[key].items():
            if kw not in classes:
                raise fail("keyword_counts_v4 keyword", kw, "listed in keywords_v4", error=KeyError)
            table[classes[kw]][kw] = n
    else:
        table = meta[key]
    return KeywordCounts.from_dict(
        table,
        classes=CIFAR10_CLASSES,
        source=f"cifar10.1:{key}",
        info={"path": str(p), "version": version},
    )


def load_cifar10_2_counts(
    path: str | os.PathLike[str],
    split: Split = "test",
) -> KeywordCounts:
    """CIFAR-10.2's per-class keyword counts from its per-image ``metadata.npz``.

    Uses the ``keyword``, ``label_derived_from_keyword`` and ``is_train`` columns.
    """
    check_choice("split", split, SPLITS)
    p = Path(path)
    if not p.is_file():
        raise fail("path", str(p), "an existing CIFAR-10.2 metadata.npz", error=FileNotFoundError)
    with np.load(p, allow_pickle=False) as d:
        missing = [k for k in ("keyword", "label_derived_from_keyword", "is_train") if k not in d.files]
        if missing:
            raise fail("path", str(p), f"an archive with keys {missing} (CIFAR-10.2 metadata)", error=KeyError)
        kw = d["keyword"].astype(str)
        y = d["label_derived_from_keyword"].astype(np.int64)
        train = d["is_train"].astype(bool)
        names = [str(x) for x in d["label_names"]] if "label_names" in d.files else None
    from replicate.imageset import CIFAR10_CLASSES

    names = names or list(CIFAR10_CLASSES)
    keep = {"test": ~train, "train": train, "all": np.ones_like(train)}[split]
    table: dict[str, dict[str, int]] = {c: {} for c in names}
    from collections import Counter

    for (label, word), n in Counter(zip(y[keep].tolist(), kw[keep].tolist())).items():
        table[names[label]][word] = n
    return KeywordCounts.from_dict(
        table, classes=names, source=f"cifar10.2:{split}", info={"path": str(p), "split": split}
    )


def load_keyword_counts(
    path: str | os.PathLike[str],
    *,
    version: TableVersion = "v6",
    split: Split = "test",
    column: str = "keyword",
) -> KeywordCounts:
    """Counts from any supported file, recognised by content.

    A CIFAR-10.1 ``keyword_metadata.json`` (uses ``version``), a CIFAR-10.2
    ``metadata.npz`` (uses ``split``), a JSON ``{class: {keyword: count}}`` table or a
    saved :meth:`KeywordCounts.to_dict`, or any image set :func:`replicate.load` reads
    (uses ``column``).
    """
    p = Path(path)
    if p.suffix == ".json" and p.is_file():
        data = json.loads(p.read_text())
        if isinstance(data, dict) and any(k.startswith("keyword_counts_") for k in data):
            return load_cifar10_1_counts(p, version)
        if isinstance(data, dict) and "counts" in data and "classes" in data:
            return KeywordCounts.from_dict(data["counts"], classes=data["classes"], source=f"json:{p}")
        if isinstance(data, dict):
            return KeywordCounts.from_dict(data, source=f"json:{p}")
        raise fail("path", str(p), "a JSON object of keyword counts", error=TypeError)
    if p.suffix == ".npz" and p.is_file():
        with np.load(p, allow_pickle=False) as d:
            is_c102 = "label_derived_from_keyword" in d.files
        if is_c102:
            return load_cifar10_2_counts(p, split)
    from replicate.io import load

    return keyword_counts(load(p), column)


# --------------------------------------------------------------------------- synonyms and matching


def load_synonyms(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, list[str]]:
    """A synonym map ``{pool keyword: [original keyword, ...]}``.

    ``source`` is a mapping, a JSON file (the mapping itself, or an object with a
    ``"synonyms"`` key), or the name of a map shipped with replicate
    (:data:`SYNONYM_MAPS`). Keys and values are normalised with :func:`normalize_keyword`.
    """
    if isinstance(source, Mapping):
        raw: Mapping[str, Any] = source
    else:
        text = str(source)
        if text in SYNONYM_MAPS:
            ref = resources.files("replicate") / "data" / "keyword_maps" / SYNONYM_MAPS[text]
            data = json.loads(ref.read_text())
        else:
            p = Path(source)
            if not p.is_file():
                raise fail(
                    "synonyms",
                    text,
                    f"a JSON file or one of the shipped maps: {', '.join(SYNONYM_MAPS)}",
                    error=FileNotFoundError,
                )
            data = json.loads(p.read_text())
        raw = data.get("synonyms", data) if isinstance(data, dict) else data
        if not isinstance(raw, Mapping):
            raise fail("synonyms", text, "a JSON object {pool keyword: [original keywords]}", error=TypeError)
    out: dict[str, list[str]] = {}
    for k, v in raw.items():
        vals = [v] if isinstance(v, str) else list(v)
        if not all(isinstance(x, str) for x in vals):
            raise fail(f"synonyms[{k!r}]", v, "a keyword or a list of keywords", error=TypeError)
        out.setdefault(normalize_keyword(k), [])
        for x in vals:
            n = normalize_keyword(x)
            if n not in out[normalize_keyword(k)]:
                out[normalize_keyword(k)].append(n)
    return out


@dataclass(frozen=True)
class KeywordGroup:
    """One stratum: original keywords and pool keywords of a class that match each other.

    ``name`` is the original keywords joined by ``+`` (or the pool keyword when the group
    has no original keyword).
    """

    class_name: str
    name: str
    original: tuple[str, ...]
    pool: tuple[str, ...]
    original_count: int
    pool_count: int


@dataclass(frozen=True)
class KeywordMatch:
    """How a pool's keywords map onto an original's, class by class.

    ``groups`` are the connected components of the match graph (an original keyword and
    a pool keyword are joined when they share a normalised lemma or the synonym map
    links them); groups with both sides form strata for sampling. The unmatched
    keywords of each side are kept with their counts.
    """

    groups: tuple[KeywordGroup, ...]
    separator: str | None
    synonyms: Mapping[str, tuple[str, ...]]
    method: str = "normalised lemmas + synonym map, within class"

    @property
    def matched(self) -> tuple[KeywordGroup, ...]:
        return tuple(g for g in self.groups if g.original and g.pool)

    @property
    def unmatched_original(self) -> dict[str, dict[str, int]]:
        """Original keywords with no pool images: ``{class: {keyword group: count}}``."""
        out: dict[str, dict[str, int]] = {}
        for g in self.groups:
            if g.original and not g.pool:
                out.setdefault(g.class_name, {})[g.name] = g.original_count
        return out

    @property
    def unmatched_pool(self) -> dict[str, dict[str, int]]:
        """Pool keywords that match no original keyword: ``{class: {pool keyword: images}}``."""
        out: dict[str, dict[str, int]] = {}
        for g in self.groups:
            if g.pool and not g.original:
                out.setdefault(g.class_name, {})[g.name] = g.pool_count
        return out

    def pool_to_group(self) -> dict[tuple[str, str], str]:
        """``{(class, pool keyword): group name}`` for matched pool keywords."""
        return {(g.class_name, p): g.name for g in self.matched for p in g.pool}

    def original_to_group(self) -> dict[tuple[str, str], str]:
        """``{(class, original keyword): group name}``."""
        return {(g.class_name, o): g.name for g in self.groups for o in g.original}

    def summary(self) -> str:
        n_orig = sum(g.original_count for g in self.groups)
        n_orig_m = sum(g.original_count for g in self.matched)
        n_pool = sum(g.pool_count for g in self.groups)
        n_pool_m = sum(g.pool_count for g in self.matched)
        lines = [
            f"KeywordMatch ({self.method}): {len(self.matched)} matched groups; "
            f"original images covered {n_orig_m}/{n_orig}, pool images covered {n_pool_m}/{n_pool}"
        ]
        for g in self.matched:
            lines.append(f"  {g.class_name}: {g.name} ({g.original_count}) <- {' | '.join(g.pool)} ({g.pool_count})")
        uo, up = self.unmatched_original, self.unmatched_pool
        if uo:
            lines.append("unmatched original keywords (class: count):")
            for c, row in uo.items():
                lines.append(f"  {c}: {len(row)} keywords, {sum(row.values())} images: "
                             + ", ".join(f"{k} {v}" for k, v in list(row.items())[:8])
                             + (", ..." if len(row) > 8 else ""))
        if up:
            lines.append("unmatched pool keywords (class: images):")
            for c, row in up.items():
                lines.append(f"  {c}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "separator": self.separator,
            "synonyms": {k: list(v) for k, v in self.synonyms.items()},
            "matched": [
                {
                    "class": g.class_name,
                    "group": g.name,
                    "original": list(g.original),
                    "pool": list(g.pool),
                    "original_count": g.original_count,
                    "pool_count": g.pool_count,
                }
                for g in self.matched
            ],
            "unmatched_original": self.unmatched_original,
            "unmatched_pool": self.unmatched_pool,
        }


def _finder(parent: dict[tuple[str, str], tuple[str, str]]) -> Any:
    def find(x: tuple[str, str]) -> tuple[str, str]:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    return find


def match_keywords(
    original: KeywordCounts,
    pool: KeywordCounts,
    *,
    synonyms: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    separator: str | None = ",",
) -> KeywordMatch:
    """Match a pool's keywords to an original's, within each class.

    An original keyword ``o`` and a pool keyword ``p`` of the same class match when the
    normalised ``o`` equals a normalised lemma of ``p`` (``p`` split at ``separator``,
    e.g. the WordNet synset ``"tabby, tabby cat"`` has lemmas ``tabby`` and ``tabby_cat``),
    or when the synonym map sends ``p`` (or one of its lemmas) to ``o``. Keywords that
    match each other transitively form one group. Classes of the pool must all be
    classes of the original.
    """
    for c in pool.classes:
        if c not in original.classes:
            check_choice("pool class name", c, original.classes)
    syn = load_synonyms(synonyms) if synonyms is not None else {}
    groups: list[KeywordGroup] = []
    for c in original.classes:
        orig = dict(original.counts[c])
        prow = dict(pool.counts[c]) if c in pool.counts else {}
        # union-find over nodes ("o", kw) and ("p", kw)
        parent: dict[tuple[str, str], tuple[str, str]] = {}

        find = _finder(parent)

        def union(a: tuple[str, str], b: tuple[str, str], find: Any = find, parent: Any = parent) -> None:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)

        by_norm: dict[str, list[str]] = {}
        for o in orig:
            parent[("o", o)] = ("o", o)
            by_norm.setdefault(normalize_keyword(o), []).append(o)
        for os_ in by_norm.values():  # spellings that normalise alike are one keyword
            for o in os_[1:]:
                union(("o", os_[0]), ("o", o))
        for p in prow:
            parent[("p", p)] = ("p", p)
            lemmas = _lemmas(p, separator)
            targets = set(lemmas)
            for key in [normalize_keyword(p), *lemmas]:
                targets.update(syn.get(key, ()))
            for t in targets:
                for o in by_norm.get(t, ()):
                    union(("p", p), ("o", o))
        comps: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for node in parent:
            comps.setdefault(find(node), []).append(node)
        for nodes in comps.values():
            o_kws = tuple(sorted((kw for side, kw in nodes if side == "o"), key=lambda k: (-orig[k], k)))
            p_kws = tuple(sorted(kw for side, kw in nodes if side == "p"))
            name = "+".join(o_kws) if o_kws else p_kws[0]
            groups.append(
                KeywordGroup(
                    c,
                    name,
                    o_kws,
                    p_kws,
                    int(sum(orig[k] for k in o_kws)),
                    int(sum(prow[k] for k in p_kws)),
                )
            )
    order = {c: i for i, c in enumerate(original.classes)}
    groups.sort(key=lambda g: (order[g.class_name], -g.original_count, -g.pool_count, g.name))
    return KeywordMatch(tuple(groups), separator, {k: tuple(v) for k, v in syn.items()})


# --------------------------------------------------------------------------- allocation


def largest_remainder(weights: Sequence[float] | np.ndarray, total: int, names: Sequence[str] | None = None) -> np.ndarray:
    """Integers proportional to ``weights`` that sum exactly to ``total`` (Hamilton's method).

    Each share gets ``floor(total * w / sum(w))``; the leftover units go one each to
    the largest fractional remainders. Ties are broken by larger weight, then by
    ``names`` (alphabetical) when given, else by position, so the result is deterministic.
    """
    w = np.asarray(weights, dtype=np.float64)
    total = check_int("total", total, minimum=0)
    if w.ndim != 1 or w.size == 0:
        raise fail("weights", w, "a non-empty 1-D sequence")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise fail("weights", w.tolist()[:5], "finite and non-negative")
    s = w.sum()
    if s == 0:
        if total == 0:
            return np.zeros(w.size, dtype=np.int64)
        raise fail("weights", "all zero", "positive somewhere to share a positive total")
    # exact rational arithmetic for integer weights keeps ties exact
    if np.all(w == np.round(w)) and s < 2**52 / max(total, 1):
        num = np.round(w).astype(np.int64) * total
        den = int(round(s))
        base = num // den
        rem = (num - base * den).astype(np.float64) / den
    else:
        q = w / s * total
        base = np.floor(q).astype(np.int64)
        rem = q - base
    left = total - int(base.sum())
    tie = np.arange(w.size) if names is None else np.argsort(np.argsort(np.asarray(names, dtype=str), kind="stable"))
    order = np.lexsort((tie, -w, -rem))
    out = base.astype(np.int64)
    out[order[:left]] += 1
    return out


@dataclass(frozen=True)
class Allocation:
    """How many new images each (class, keyword) gets, and how that was decided."""

    targets: KeywordCounts
    strategy: str
    size: int
    params: Mapping[str, Any]
    source: str

    @property
    def total(self) -> int:
        return self.targets.total

    def summary(self) -> str:
        lines = [
            f"Allocation ({self.strategy}, {dict(self.params)}) of {self.total} images "
            f"(requested {self.size}) from {self.source}"
        ]
        lines += self.targets.summary().splitlines()[1:]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "size": self.size,
            "total": self.total,
            "params": dict(self.params),
            "source": self.source,
            "targets": self.targets.to_dict()["counts"],
            "class_totals": self.targets.class_totals(),
        }


def allocate(
    counts: KeywordCounts,
    size: int | None = None,
    strategy: Strategy = "v6",
    *,
    top_k: int | None = None,
    ratio: float | None = None,
    classes: Sequence[str] | None = None,
) -> Allocation:
    """Decide how many new images each (class, keyword) gets.

    Strategies
    ----------
    ``"v6"`` (CIFAR-10.1 v6): exact class balance, ``size // C`` per class (the
    ``size % C`` leftover images go one each to the first classes in class order); within a
    class, shares proportional to the keyword counts, rounded by largest remainder
    (:func:`largest_remainder`: ties by larger count, then keyword name).
    ``"v4"`` (CIFAR-10.1 v4): the ``top_k`` keywords per class (default 25), each
    ``ceil(count / ratio)``. With ``ratio`` (CIFAR-10.1 used 30) the total is what it
    is; with ``size`` instead, ``ratio = total / size`` and the excess of the ceilings
    over ``size`` is taken back one each from the keywords rounded up the most (ties by
    smaller count, then name), so the total is exactly ``size``.
    ``"proportional"``: every (class, keyword) cell proportional to its count over the
    whole table, largest remainder; class totals follow the original.

    Parameters
    ----------
    counts
        the original test set's keyword counts (:class:`KeywordCounts`).
    size
        the new set's size; required for ``"v6"`` and ``"proportional"``, for ``"v4"``
        either this or ``ratio``.
    strategy
        ``"v6"``, ``"v4"`` or ``"proportional"`` (above).
    top_k
        keep only the ``top_k`` most frequent keywords per class first (``"v4"``: 25
        unless given).
    ratio
        ``"v4"`` only: original images per new image (CIFAR-10.1 used 30).
    classes
        restrict the allocation to these classes.

    Returns
    -------
    Allocation
        the target count per (class, keyword), the strategy and its parameters.
    """
    strategy = check_choice("strategy", strategy, STRATEGIES)  # type: ignore[assignment]
    if not isinstance(counts, KeywordCounts):
        raise fail("counts", counts, "a KeywordCounts", "Build one with KeywordCounts.from_dict().", error=TypeError)
    if classes is not None:
        for c in classes:
            if c not in counts.classes:
                check_choice("class name", c, counts.classes)
        counts = KeywordCounts(
            {c: counts.counts[c] for c in classes}, tuple(classes), counts.source, counts.info
        )
    if top_k is not None:
        counts = counts.top_k(top_k)
    elif strategy == "v4":
        top_k = 25
        counts = counts.top_k(25)
    if size is not None:
        size = check_int("size", size, minimum=0)
    if strategy == "v4":
        table, params = _allocate_v4(counts, size, ratio)
    elif strategy == "v6":
        table, params = _allocate_v6(counts, size)
    else:
        table, params = _allocate_proportional(counts, size)
    params = {"top_k": top_k, **params}

    targets = KeywordCounts.from_dict(
        table, classes=counts.classes, source=f"allocation:{strategy}", info={"from": counts.source}
    )
    return Allocation(
        targets=targets,
        strategy=strategy,
        size=int(size) if size is not None else targets.total,
        params=params,
        source=counts.source,
    )


_Table = dict[str, dict[str, int]]


def _allocate_v4(counts: KeywordCounts, size: int | None, ratio: float | None) -> tuple[_Table, dict[str, Any]]:
    """CIFAR-10.1 v4: ``ceil(count / ratio)`` per keyword; with ``size``, the excess taken back."""
    table: _Table = {c: {} for c in counts.classes}
    if ratio is None and size is None:
        raise fail("size", None, "given (or ratio=) for the v4 strategy", "CIFAR-10.1 v4 used ratio=30.")
    if ratio is not None:
        if size is not None:
            raise fail("ratio", ratio, "None when size is given", "Give either size or ratio, not both.")
        if not isinstance(ratio, (int, float, np.number)) or not ratio > 0 or not math.isfinite(ratio):
            raise fail("ratio", ratio, "a positive number")
        for c in counts.classes:
            for kw, n in counts.counts[c].items():
                table[c][kw] = math.ceil(n / ratio)
        return table, {"ratio": float(ratio)}
    want = int(size or 0)
    cells = counts.flat()
    if not cells:
        raise fail("counts", "empty", "at least one positive count to allocate")
    names = [f"{c}\x00{kw}" for c, kw in cells]
    weights = np.array(list(cells.values()), dtype=np.float64)
    r = float(weights.sum()) / want if want else math.inf
    q = weights / r if want else np.zeros_like(weights)
    alloc = np.ceil(q).astype(np.int64)
    excess = int(alloc.sum()) - want
    if excess > 0:
        rounded_up = alloc - q
        tie = np.argsort(np.argsort(np.asarray(names)))
        order = np.lexsort((tie, weights, -rounded_up))
        alloc[order[:excess]] -= 1
    for (c, kw), a in zip(cells, alloc):
        table[c][kw] = int(a)
    return table, {"ratio": float(r)}


def _allocate_v6(counts: KeywordCounts, size: int | None) -> tuple[_Table, dict[str, Any]]:
    """CIFAR-10.1 v6: ``size // C`` per class, within a class proportional by largest remainder."""
    table: _Table = {c: {} for c in counts.classes}
    if size is None:
        raise fail("size", None, "an integer for the v6 strategy", "CIFAR-10.1 v6 used size=2000.")
    n_cls = len(counts.classes)
    if n_cls == 0:
        raise fail("counts.classes", (), "at least one class")
    per = largest_remainder(np.ones(n_cls), size)  # equal shares; leftovers to the first classes
    for c, m in zip(counts.classes, per):
        row = counts.counts[c]
        if not row:
            if m:
                raise fail(
                    f"keyword counts of class {c!r}",
                    "empty",
                    "at least one keyword with a positive count for a class-balanced allocation",
                    "Pass classes= to leave the class out, or add its keyword counts.",
                )
            continue
        kws = list(row)
        shares = largest_remainder([row[k] for k in kws], int(m), names=kws)
        table[c] = {k: int(s) for k, s in zip(kws, shares)}
    return table, {"per_class": {c: int(m) for c, m in zip(counts.classes, per)}}


def _allocate_proportional(counts: KeywordCounts, size: int | None) -> tuple[_Table, dict[str, Any]]:
    """Every (class, keyword) cell proportional to its count over the whole table."""
    table: _Table = {c: {} for c in counts.classes}
    if size is None:
        raise fail("size", None, "an integer for the proportional strategy")
    cells = counts.flat()
    if not cells:
        raise fail("counts", "empty", "at least one positive count to allocate")
    names = [f"{c}\x00{kw}" for c, kw in cells]
    shares = largest_remainder(list(cells.values()), size, names=names)
    for (c, kw), s in zip(cells, shares):
        table[c][kw] = int(s)
    return table, {}
