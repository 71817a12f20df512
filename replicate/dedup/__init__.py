"""Near-duplicate detection between a new test set and the original sets.

A new test set is worthless if it contains near-duplicates of the original train or test
images. CIFAR-10.1 rejected candidates close to a CIFAR-10 image in pixel L2 and checked
the nearest neighbours by hand; ImageNetV2 combined pixel L2, feature L2 and SSIM with
human review. :func:`find_near_duplicates` combines several signals:

* perceptual hashes (``phash``, ``dhash``, ... from :mod:`replicate.hashing`): every
  pair within a Hamming radius (:func:`replicate.hamming.radius_search`);
* exact pixel L2 (:func:`replicate._l2.l2_knn`, int8 products): the ``l2_k`` nearest
  references of each query; flagged when the RMS pixel difference is small;
* a tiny-image signature (mean-removed, unit-norm 8x8 colour thumbnail, robust to
  brightness, contrast and small shifts): the ``tiny_k`` nearest references;
* an aligned distance, computed for every candidate pair: the correlation distance
  between 2x2-pooled grayscale windows after the best shift of up to ``max_shift``
  pixels and the best of a few zooms (robust to shifts, slight crops and scaling, JPEG
  noise, photometric and colour changes); with ``flips=True`` also of the mirror image;
* optionally, model features (:func:`replicate.evaluation.extract_features`): cosine
  distance of penultimate-layer features, the ``feature_k`` nearest references.

Every candidate pair carries all distances and ranks. Flagged pairs form duplicate groups
(connected components, :func:`scipy.sparse.csgraph.connected_components`). The rule of
CIFAR-10.1 and ImageNetV2: a group that touches an original (reference) set is dropped
whole; a group within the new set keeps one image (the first in set order). Ids in a
blacklist file (appended by human review) are dropped too.

Work is organised per query chunk (:func:`candidate_pairs` on one chunk against
prepared references), so a distributed engine can map it over a large pool and join
the pair tables before :func:`decide`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from replicate._validation import check_int, fail

# the private helpers (``_flag_rules``, ``_ratio_to_others``, ...) are imported too: tests and
# validation/ read them through the package; __all__ lists the public names
from replicate.dedup.candidates import (  # noqa: F401
    PreparedSet,
    _as_references,
    _empty_pairs,
    _ratio_to_best_other,
    _ratio_to_others,
    _slice_prepared,
    candidate_pairs,
    hash_pairs,
    prepare,
)
from replicate.dedup.gallery import dedup_gallery
from replicate.dedup.result import DedupResult, append_blacklist, decide, read_blacklist
from replicate.dedup.rules import (  # noqa: F401
    PRESETS,
    RULES,
    DedupConfig,
    Rule,
    _check_config,
    _flag_rules,
    _rules_text,
    _window_only,
    _with_overrides,
)
from replicate.dedup.signatures import (  # noqa: F401
    _aligned_query,
    _aligned_reference,
    _coarse_reference,
    _cos_to_distance,
    _edge_centre,
    _edge_windows,
    _grouped_max_cos,
    aligned_distance,
    edge_distance,
    tiny_signature,
    window_knn,
)
from replicate.imageset import ImageSet

__all__ = [
    "DedupConfig",
    "DedupResult",
    "Rule",
    "RULES",
    "PRESETS",
    "PreparedSet",
    "find_near_duplicates",
    "prepare",
    "candidate_pairs",
    "decide",
    "hash_pairs",
    "aligned_distance",
    "edge_distance",
    "window_knn",
    "tiny_signature",
    "read_blacklist",
    "append_blacklist",
    "dedup_gallery",
    "SIGNALS",
]

SIGNALS: tuple[str, ...] = ("hash", "l2", "tiny", "aligned", "feature")


# --------------------------------------------------------------------------------------
# the detector


def find_near_duplicates(
    query: ImageSet,
    references: Mapping[str, ImageSet] | Sequence[ImageSet] | ImageSet | None = None,
    *,
    config: DedupConfig | str | None = None,
    blacklist: str | os.PathLike[str] | Iterable[str] | None = None,
    chunk_size: int = 4096,
    **overrides: Any,
) -> DedupResult:
    """Find the near-duplicates of ``query`` images in ``references`` and within ``query``.

    Parameters
    ----------
    query
        the new set (e.g. candidate test images).
    references
        the original sets, ``{"cifar10-train": train, "cifar10-test": test}`` or a list
        (named by ``ImageSet.name``); ``None`` checks only within ``query``.
    config
        signals and thresholds (:class:`DedupConfig`), or the name of a preset
        (``"recall"``, the default; ``"balanced"``; ``"fast"``: :meth:`DedupConfig.preset`);
        keyword ``overrides`` replace single fields, e.g. ``aligned_max=0.3`` or
        ``feature_model="resnet56"``.
    blacklist
        a blacklist file (one id per line, appended by review) or an iterable of ids;
        listed query images are dropped.
    chunk_size
        query images compared at once (bounds memory).

    Returns
    -------
    DedupResult
        pairs with every distance, duplicate groups, flagged and kept ids.
    """
    if not isinstance(query, ImageSet):
        raise fail("query", type(query).__name__, "an ImageSet", "Wrap arrays with ImageSet(images).", error=TypeError)
    if len(query) == 0:
        raise fail("query", "an empty set", "at least one image")
    if isinstance(config, str):
        config = DedupConfig.preset(config)
    cfg = _check_config(_with_overrides(config if config is not None else DedupConfig(), overrides))
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    refs = _as_references(references, query)
    if isinstance(blacklist, (str, os.PathLike)):
        bl_ids, bl_path = read_blacklist(blacklist), str(blacklist)
    else:
        bl_ids, bl_path = [str(i) for i in (blacklist or [])], None

    prepared_refs = [prepare(s, cfg, name) for name, s in refs]
    whole = prepare(query, cfg)
    frames = []
    for start in range(0, len(query), chunk_size):
        stop = min(start + chunk_size, len(query))
        chunk = _slice_prepared(whole, start, stop)
        frames.append(
            candidate_pairs(chunk, prepared_refs, cfg, offset=start, within=whole if cfg.within_query and len(query) > 1 else None)
        )
    pairs = pd.concat(frames, ignore_index=True) if frames else _empty_pairs(cfg)
    if cfg.within_query and len(pairs):
        # a pair inside the query is found from both of its chunks: keep one row
        inside = pairs.reference_set == query.name
        dup = pairs[inside].duplicated(["query_pos", "reference_pos"])
        pairs = pairs.drop(index=pairs[inside].index[dup.to_numpy()]).reset_index(drop=True)
    return decide(pairs, query, dict(refs), cfg, blacklist=bl_ids, blacklist_path=bl_path)
