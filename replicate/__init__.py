"""replicate: build fresh test sets and measure whether benchmark models generalize.

The public API is re-exported here; each pipeline stage lives in its own module:
``imageset`` (the core type), ``io`` (loaders), ``manifest``, ``hashing``, ``hamming``,
``dedup``, ``keywords``, ``sampling``, ``models``, ``evaluate``, ``stats``, ``shift``,
``report``, ``review`` and ``pipeline``.

``import replicate`` is cheap: the image-set type and loaders load at once, every
other name (and torch) on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from replicate._version import __version__
from replicate.imageset import CIFAR10_CLASSES, ImageSet, concat, content_hashes
from replicate.io import (
    export_folder,
    load,
    load_cifar,
    load_folder,
    load_npy_pair,
    load_npz,
    load_pool,
)

# name -> module that defines it; resolved on first attribute access (PEP 562)
_LAZY: dict[str, str] = {
    # hashing and near-duplicates
    "hash_images": "hashing",
    "hash_set": "hashing",
    "list_hashers": "hashing",
    "Hashes": "hashing",
    "radius_search": "hamming",
    "knn_search": "hamming",
    "HammingIndex": "hamming",
    "find_near_duplicates": "dedup",
    "DedupResult": "dedup",
    "DedupConfig": "dedup",
    "dedup_gallery": "dedup",
    "edge_distance": "dedup",
    # keywords and sampling
    "KeywordCounts": "keywords",
    "KeywordMatch": "keywords",
    "Allocation": "keywords",
    "keyword_counts": "keywords",
    "load_keyword_counts": "keywords",
    "match_keywords": "keywords",
    "allocate": "keywords",
    "sample": "sampling",
    "sample_matched_histogram": "sampling",
    "SamplingResult": "sampling",
    "goodness_of_fit": "sampling",
    # models and evaluation
    "list_models": "models",
    "get_card": "models",
    "load_model": "models",
    "register_model": "models",
    "ModelCard": "models",
    "load_predictions": "models",
    "PredictionSet": "models",
    "EvalResult": "evaluate",
    "extract_features": "evaluate",
    "predict": "evaluate",
    # statistics
    "accuracy_ci": "stats",
    "gap_ci": "stats",
    "mcnemar_test": "stats",
    "linear_fit": "stats",
    "effective_robustness": "stats",
    "rank_stability": "stats",
    "compare": "stats",
    "compare_predictions": "stats",
    "Comparison": "stats",
    # dataset test
    "dataset_test": "shift",
    "control_test": "shift",
    "covariate_shift": "shift",
    "ShiftResult": "shift",
    # reports and pipeline
    "build_report": "report",
    "render": "report",
    "write_report": "report",
    "build_testset": "pipeline",
    "evaluate_and_report": "pipeline",
    "run": "pipeline",
    "demo_config": "pipeline",
}
_SUBMODULES = (
    "hashing",
    "hamming",
    "dedup",
    "keywords",
    "sampling",
    "models",
    "stats",
    "shift",
    "report",
    "review",
    "pipeline",
    "manifest",
    "plots",
)


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        # the module replicate.evaluate is callable: replicate.evaluate(model, dataset)
        # runs replicate.evaluate.evaluate, and replicate.evaluate.EvalResult still works
        return importlib.import_module("replicate.evaluate")
    if name in _LAZY:
        value = getattr(importlib.import_module(f"replicate.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"replicate.{name}")
    raise AttributeError(f"module 'replicate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES) | {"evaluate"})


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from replicate import evaluate  # noqa: F401

__all__ = [
    "__version__",
    "CIFAR10_CLASSES",
    "ImageSet",
    "concat",
    "content_hashes",
    "export_folder",
    "load",
    "load_cifar",
    "load_folder",
    "load_npy_pair",
    "load_npz",
    "load_pool",
    "evaluate",
    *_LAZY,
]
