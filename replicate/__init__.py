"""replicate: build fresh test sets and measure whether benchmark models generalize.

The public API is re-exported here; each pipeline stage lives in its own module:
``imageset`` (the core type), ``io`` (loaders), ``manifest``, ``hashing``, ``dedup``,
``keywords``, ``sampling``, ``models``, ``evaluate``, ``stats``, ``shift``, ``report``,
``review`` and ``pipeline``.
"""

from __future__ import annotations

__version__ = "0.1.0"

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
]
