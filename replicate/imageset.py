"""The one core type: an image set.

An :class:`ImageSet` holds uint8 images (NHWC), integer labels (``-1`` = unlabelled),
class names, unique string ids, any number of per-image metadata columns, a per-image
content hash (sha256 of the raw pixels) and a set fingerprint. Every pipeline stage
takes and returns image sets.

Saved sets are directories of ``.npy`` files that open memory-mapped, so a
10^6-image set opens instantly; ``ImageSet.load(s.save(path)) == s`` exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from replicate._validation import fail, short_repr

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch.utils.data

__all__ = [
    "CIFAR10_CLASSES",
    "ImageSet",
    "concat",
    "content_hashes",
    "FORMAT_NAME",
]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

FORMAT_NAME = "replicate-imageset"
FORMAT_VERSION = 1
_RESERVED_COLUMNS = ("id", "label", "class_name", "content_hash")
_HASH_CHUNK = 4096


# --------------------------------------------------------------------------- hashing


def _hash_rows(block: np.ndarray) -> np.ndarray:
    block = np.ascontiguousarray(block)
    n = len(block)
    size = block[0].nbytes if n else 0
    view = memoryview(block.reshape(-1)).cast("B") if n else memoryview(b"")  # type: ignore[arg-type]
    sha = hashlib.sha256
    digests = b"".join(sha(view[i * size : (i + 1) * size]).digest() for i in range(n))
    return np.frombuffer(digests, dtype=np.uint8).reshape(n, 32).copy()


def content_hashes(images: np.ndarray, threads: int | None = None) -> np.ndarray:
    """sha256 of each image's raw bytes (C order, uint8), as an ``(N, 32)`` uint8 array.

    hashlib releases the GIL on large buffers, so chunks run on a thread pool.
    """
    n = len(images)
    if n == 0:
        return np.empty((0, 32), dtype=np.uint8)
    threads = threads or min(8, os.cpu_count() or 1)
    starts = range(0, n, _HASH_CHUNK)
    if threads == 1 or n <= _HASH_CHUNK:
        return _hash_rows(np.asarray(images))
    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(lambda s: _hash_rows(images[s : s + _HASH_CHUNK]), starts))
    return np.concatenate(parts)


def _canonical_bytes(array: np.ndarray) -> bytes:
    """Bytes of an array that do not depend on string width or byte order."""
    if array.dtype.kind in "US":
        return "\x00".join(str(x) for x in array.ravel()).encode("utf-8")
    if array.dtype.kind == "O":
        return "\x00".join(str(x) for x in array.ravel()).encode("utf-8")
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


# --------------------------------------------------------------------------- checks


def _as_images(images: Any) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        images = np.asarray(images)
    if images.dtype != np.uint8:
        raise fail(
            "images.dtype",
            str(images.dtype),
            "uint8",
            "Convert with np.clip(x, 0, 255).astype(np.uint8) if the values are 0-255 pixels.",
            error=TypeError,
        )
    if images.ndim == 3:  # N, H, W grayscale
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise fail(
            "images.shape",
            images.shape,
            "(N, H, W, C) with C in {1, 3, 4} (NHWC)",
            "Transpose NCHW data with x.transpose(0, 2, 3, 1).",
        )
    return images


def _as_column(name: str, values: Any, n: int) -> np.ndarray:
    if not isinstance(name, str) or not name:
        raise fail("metadata column name", name, "a non-empty string", error=TypeError)
    if name in _RESERVED_COLUMNS:
        raise fail(
            "metadata column name",
            name,
            f"not one of the reserved names {_RESERVED_COLUMNS}",
            "Rename the column.",
        )
    arr = np.asarray(values)
    if arr.dtype.kind == "O":
        if all(isinstance(x, str) for x in arr.ravel()):
            arr = arr.astype(str)
        else:
            kinds = sorted({type(x).__name__ for x in arr.ravel()})
            raise fail(
                f"metadata[{name!r}]",
                f"object column of {kinds}",
                "numbers, booleans or strings",
                "Convert the values to one type first.",
                error=TypeError,
            )
    if arr.dtype.kind == "S":
        arr = arr.astype(str)
    if arr.ndim == 0 or arr.shape[0] != n:
        got = "a scalar" if arr.ndim == 0 else f"{arr.shape[0]} rows"
        raise fail(
            f"len(metadata[{name!r}])",
            got,
            f"{n} (one value per image)",
            "Found input variables with inconsistent numbers of samples.",
        )
    return arr


def _default_class_names(labels: np.ndarray) -> tuple[str, ...]:
    k = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    return tuple(str(i) for i in range(k))


# --------------------------------------------------------------------------- the type


class ImageSet:
    """An image set: pixels, labels, class names, ids, metadata, content hashes.

    Parameters
    ----------
    images
        uint8 array ``(N, H, W, C)`` (NHWC); ``(N, H, W)`` is read as grayscale.
    labels
        integer class indices, ``-1`` for unlabelled; ``None`` means all unlabelled.
    class_names
        the class of each label value; defaults to ``"0"..."K-1"``.
    ids
        unique string id per image; defaults to ``"<name>/<index>"``.
    metadata
        per-image columns (keyword, source, split, ...): arrays whose first
        dimension is N.
    name
        a short name for reports and default ids.
    info
        JSON-serialisable provenance (source paths, parents, loader), carried along
        and written into manifests.
    """

    __slots__ = (
        "images",
        "labels",
        "class_names",
        "ids",
        "metadata",
        "name",
        "info",
        "_hashes",
        "_fingerprint",
        "_image_fingerprint",
    )

    def __init__(
        self,
        images: Any,
        labels: Any = None,
        class_names: Sequence[str] | None = None,
        ids: Any = None,
        metadata: Mapping[str, Any] | None = None,
        name: str = "imageset",
        info: Mapping[str, Any] | None = None,
        *,
        content_hashes: np.ndarray | None = None,
        _validate: bool = True,
    ) -> None:
        images = _as_images(images) if _validate else images
        n = len(images)
        self.images: np.ndarray = images
        self.name: str = str(name)

        if labels is None:
            labels = np.full(n, -1, dtype=np.int64)
        labels = np.asarray(labels)
        if _validate:
            if labels.ndim != 1 or len(labels) != n:
                raise fail(
                    "labels.shape",
                    labels.shape,
                    f"({n},) (one label per image)",
                    "Found input variables with inconsistent numbers of samples: "
                    f"[{n}, {labels.shape[0] if labels.ndim else 0}]",
                )
            if labels.dtype.kind not in "iu":
                if labels.dtype.kind == "f" and n and np.all(np.mod(labels, 1) == 0):
                    labels = labels.astype(np.int64)
                elif n:
                    raise fail("labels.dtype", str(labels.dtype), "an integer type", error=TypeError)
            labels = labels.astype(np.int64, copy=False)
        self.labels: np.ndarray = labels

        if class_names is None:
            class_names = _default_class_names(labels)
        class_names = tuple(str(c) for c in class_names)
        if _validate:
            if len(set(class_names)) != len(class_names):
                dup = sorted({c for c in class_names if class_names.count(c) > 1})
                raise fail("class_names", class_names, "unique names", f"Repeated: {dup}.")
            if n:
                lo, hi = int(labels.min()), int(labels.max())
                if lo < -1 or hi >= len(class_names):
                    bad = labels[(labels < -1) | (labels >= len(class_names))]
                    raise fail(
                        "labels",
                        f"values {sorted(set(bad.tolist()))[:5]}",
                        f"in [0, {len(class_names) - 1}] (or -1 for unlabelled) "
                        f"for {len(class_names)} class names",
                        "Pass class_names covering every label.",
                    )
        self.class_names: tuple[str, ...] = class_names

        if ids is None:
            width = max(6, len(str(max(n - 1, 0))))
            ids = np.array([f"{self.name}/{i:0{width}d}" for i in range(n)], dtype=str)
        ids = np.asarray(ids)
        if ids.size == 0:
            ids = ids.astype(str)
        if _validate:
            if ids.dtype.kind not in "U":
                if ids.dtype.kind in "OSiu":
                    ids = ids.astype(str)
                else:
                    raise fail("ids.dtype", str(ids.dtype), "strings", error=TypeError)
            if ids.shape != (n,):
                raise fail("ids.shape", ids.shape, f"({n},) (one id per image)")
            uniq, counts = np.unique(ids, return_counts=True)
            if len(uniq) != n:
                dup = uniq[counts > 1][:5].tolist()
                raise fail(
                    "ids",
                    f"{n} ids with {n - len(uniq)} repeats, e.g. {dup}",
                    "unique",
                    "Give each image its own id.",
                )
        self.ids: np.ndarray = ids

        cols: dict[str, np.ndarray] = {}
        for key, values in (metadata or {}).items():
            cols[key] = _as_column(key, values, n) if _validate else values
        self.metadata: dict[str, np.ndarray] = cols
        self.info: dict[str, Any] = dict(info or {})

        if content_hashes is not None:
            content_hashes = np.asarray(content_hashes, dtype=np.uint8)
            if content_hashes.shape != (n, 32):
                raise fail("content_hashes.shape", content_hashes.shape, f"({n}, 32)")
        self._hashes: np.ndarray | None = content_hashes
        self._fingerprint: str | None = None
        self._image_fingerprint: str | None = None

    # ------------------------------------------------------------------ basics

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n(self) -> int:
        """Number of images."""
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of every image."""
        return tuple(int(x) for x in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def columns(self) -> list[str]:
        """Names of the metadata columns."""
        return list(self.metadata)

    @property
    def is_labeled(self) -> bool:
        """True when every image has a label (no ``-1``)."""
        return bool(len(self) == 0 or self.labels.min() >= 0)

    def class_counts(self) -> dict[str, int]:
        """Images per class name (every class listed, zeros included)."""
        counts = np.bincount(self.labels[self.labels >= 0], minlength=len(self.class_names))
        out = {c: int(k) for c, k in zip(self.class_names, counts)}
        unl = int(np.sum(self.labels < 0))
        if unl:
            out["<unlabelled>"] = unl
        return out

    def __repr__(self) -> str:
        h, w, c = self.image_shape if len(self.images.shape) == 4 else (0, 0, 0)
        return (
            f"ImageSet(name={self.name!r}, n={len(self)}, image={h}x{w}x{c}, "
            f"classes={len(self.class_names)}, columns={self.columns})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageSet):
            return NotImplemented
        return (
            self.name == other.name
            and self.class_names == other.class_names
            and self.images.shape == other.images.shape
            and np.array_equal(self.labels, other.labels)
            and np.array_equal(self.ids, other.ids)
            and set(self.metadata) == set(other.metadata)
            and all(
                self.metadata[k].shape == other.metadata[k].shape
                and np.array_equal(self.metadata[k], other.metadata[k])
                for k in self.metadata
            )
            and np.array_equal(self.images, other.images)
            and self.info == other.info
        )

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ hashes

    @property
    def content_hashes(self) -> np.ndarray:
        """sha256 of each image's raw pixels, ``(N, 32)`` uint8 (computed once)."""
        if self._hashes is None:
            self._hashes = content_hashes(self.images)
        return self._hashes

    def content_hash_hex(self) -> np.ndarray:
        """The content hashes as 64-character hex strings."""
        h = self.content_hashes
        return np.array([bytes(row).hex() for row in h]) if len(h) else np.array([], dtype="<U64")

    @property
    def image_fingerprint(self) -> str:
        """sha256 over the pixels in order (what model predictions depend on)."""
        if self._image_fingerprint is None:
            d = hashlib.sha256(b"replicate-images-v1")
            d.update(json.dumps(list(self.images.shape)).encode())
            d.update(self.content_hashes.tobytes())
            self._image_fingerprint = d.hexdigest()
        return self._image_fingerprint

    @property
    def fingerprint(self) -> str:
        """sha256 over pixels, labels, class names, ids and metadata (not name/info)."""
        if self._fingerprint is None:
            d = hashlib.sha256(b"replicate-imageset-v1")
            d.update(self.image_fingerprint.encode())
            d.update(json.dumps(list(self.class_names)).encode())
            d.update(_canonical_bytes(self.labels.astype(np.int64)))
            d.update(_canonical_bytes(self.ids))
            for key in sorted(self.metadata):
                col = self.metadata[key]
                d.update(json.dumps([key, col.dtype.kind, list(col.shape)]).encode())
                d.update(_canonical_bytes(col))
            self._fingerprint = d.hexdigest()
        return self._fingerprint

    # ------------------------------------------------------------------ selection

    def _derive(self, index: Any, name: str | None = None) -> ImageSet:
        hashes = self._hashes[index] if self._hashes is not None else None
        return ImageSet(
            self.images[index],
            self.labels[index],
            self.class_names,
            self.ids[index],
            {k: v[index] for k, v in self.metadata.items()},
            name=name or self.name,
            info=self.info,
            content_hashes=hashes,
            _validate=False,
        )

    def select(self, key: Any, *, name: str | None = None) -> ImageSet:
        """A subset: a boolean mask, integer positions, a slice, or a list of ids.

        Order follows ``key`` (positions and ids) or the set (mask, slice).
        """
        if isinstance(key, slice):
            return self._derive(key, name)
        arr = np.asarray(key)
        if arr.ndim != 1:
            raise fail("key", key, "a 1-D mask, list of positions or list of ids")
        if arr.dtype == bool:
            if len(arr) != len(self):
                raise fail("len(mask)", len(arr), f"{len(self)} (one entry per image)")
            return self._derive(np.flatnonzero(arr), name)
        if arr.dtype.kind in "iu":
            if arr.size and (arr.min() < -len(self) or arr.max() >= len(self)):
                raise fail("positions", f"range [{arr.min()}, {arr.max()}]", f"in [0, {len(self) - 1}]")
            return self._derive(arr.astype(np.int64), name)
        if arr.size == 0:
            return self._derive(np.zeros(0, dtype=np.int64), name)
        if arr.dtype.kind in "UO":
            return self._derive(self.positions(arr), name)
        raise fail("key.dtype", str(arr.dtype), "bool (mask), integer (positions) or str (ids)", error=TypeError)

    def positions(self, ids: Iterable[str]) -> np.ndarray:
        """Positions of ``ids`` in this set; fails naming ids that are not present."""
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).astype(str)
        order = np.argsort(self.ids, kind="stable")
        sorted_ids = self.ids[order]
        where = np.searchsorted(sorted_ids, ids)
        where = np.clip(where, 0, max(len(sorted_ids) - 1, 0))
        found = (len(sorted_ids) > 0) & (sorted_ids[where] == ids) if len(sorted_ids) else np.zeros(len(ids), bool)
        if not np.all(found):
            missing = ids[~found]
            raise fail(
                "ids",
                missing[:3].tolist(),
                f"ids of images in set {self.name!r}",
                f"{len(missing)} of the ids given are not in the set.",
                error=KeyError,
            )
        return order[where]

    def by_class(self, classes: str | int | Iterable[str | int]) -> ImageSet:
        """The images whose class is one of ``classes`` (names or label indices)."""
        if isinstance(classes, (str, int, np.integer)):
            classes = [classes]
        wanted = []
        for c in classes:
            if isinstance(c, str):
                if c not in self.class_names:
                    from replicate._validation import check_choice

                    check_choice("class", c, self.class_names)
                wanted.append(self.class_names.index(c))
            else:
                if not 0 <= int(c) < len(self.class_names):
                    raise fail("class", c, f"in [0, {len(self.class_names) - 1}] or a class name")
                wanted.append(int(c))
        return self.select(np.isin(self.labels, wanted))

    def batches(self, batch_size: int = 1024) -> Iterator[ImageSet]:
        """Consecutive slices of at most ``batch_size`` images (views, no copies)."""
        from replicate._validation import check_int

        batch_size = check_int("batch_size", batch_size, minimum=1)
        for start in range(0, len(self), batch_size):
            yield self._derive(slice(start, start + batch_size))

    def with_metadata(self, **columns: Any) -> ImageSet:
        """A copy with columns added or replaced."""
        meta = dict(self.metadata)
        for key, values in columns.items():
            meta[key] = _as_column(key, values, len(self))
        return ImageSet(
            self.images,
            self.labels,
            self.class_names,
            self.ids,
            meta,
            name=self.name,
            info=self.info,
            content_hashes=self._hashes,
            _validate=False,
        )

    def with_info(self, **info: Any) -> ImageSet:
        """A copy with provenance entries added or replaced."""
        out = self._derive(slice(None))
        out.info = {**self.info, **info}
        return out

    def renamed(self, name: str) -> ImageSet:
        """A copy with another name (ids unchanged)."""
        return self._derive(slice(None), name=name)

    # ------------------------------------------------------------------ conversion

    def to_dataframe(self) -> pd.DataFrame:
        """Metadata as a DataFrame: id, label, class_name, content_hash, then columns.

        Columns with more than one value per image hold one array per row.
        """
        import pandas as pd

        names = np.array(list(self.class_names) + ["<unlabelled>"])
        data: dict[str, Any] = {
            "id": self.ids,
            "label": self.labels,
            "class_name": names[self.labels] if len(self) else np.array([], dtype=str),
            "content_hash": self.content_hash_hex(),
        }
        for key, col in self.metadata.items():
            data[key] = col if col.ndim == 1 else list(col)
        return pd.DataFrame(data)

    def to_torch(self, transform: Any = None, target_transform: Any = None) -> torch.utils.data.Dataset:
        """A map-style ``torch`` Dataset of ``(image, label)``.

        The image is a uint8 ``(C, H, W)`` tensor, passed through ``transform`` if given.
        """
        from replicate._torchdata import ImageSetDataset

        return ImageSetDataset(self, transform, target_transform)

    # ------------------------------------------------------------------ storage

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the set to directory ``path`` (atomically) with a manifest; returns the path.

        ``overwrite=True`` replaces a set saved there before: the files its manifest lists
        are removed, any other file (notes, a review database) is kept and a warning names it.
        """
        return _save(self, Path(path), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True, verify: bool = False) -> ImageSet:
        """Open a saved set; pixels are memory-mapped unless ``mmap=False``.

        ``verify=True`` re-hashes every image and checks it against the stored hashes.
        """
        return _load(Path(path), mmap=mmap, verify=verify)

    def verify(self) -> None:
        """Re-hash every image; fail naming the ids whose pixels changed."""
        if self._hashes is None:
            return
        fresh = content_hashes(self.images)
        bad = np.flatnonzero(np.any(fresh != self._hashes, axis=1))
        if len(bad):
            raise ValueError(
                f"content hashes == {len(bad)} images differ from the stored hashes, e.g. ids "
                f"{self.ids[bad[:3]].tolist()}; must match. The saved set is corrupt or was "
                "modified: re-create it from its source."
            )


# --------------------------------------------------------------------------- concat


def concat(
    sets: Sequence[ImageSet],
    *,
    name: str | None = None,
    fill_missing: bool = False,
    source_column: str | None = None,
) -> ImageSet:
    """Join image sets end to end.

    Class names and image shapes must agree; ids must stay unique. A metadata column
    missing from some sets is an error unless ``fill_missing`` (strings get ``""``,
    numbers ``NaN``). ``source_column`` adds a column holding each image's set name.
    """
    sets = list(sets)
    if not sets:
        raise fail("sets", sets, "a non-empty list of ImageSet")
    for i, s in enumerate(sets):
        if not isinstance(s, ImageSet):
            raise fail(f"sets[{i}]", type(s).__name__, "an ImageSet", error=TypeError)
    first = sets[0]
    for s in sets[1:]:
        if s.class_names != first.class_names:
            raise ValueError(
                f"class_names of {s.name!r} == {short_repr(list(s.class_names))}; must equal "
                f"those of {first.name!r} ({short_repr(list(first.class_names))}). Map labels "
                "to one class list before concatenating."
            )
        if s.image_shape != first.image_shape:
            raise fail(
                f"image shape of {s.name!r}",
                s.image_shape,
                f"{first.image_shape} (the shape of {first.name!r})",
                "Resize the images to one size first.",
            )
    all_cols: list[str] = []
    for s in sets:
        all_cols += [c for c in s.metadata if c not in all_cols]
    meta: dict[str, np.ndarray] = {}
    for col in all_cols:
        missing = [s.name for s in sets if col not in s.metadata]
        if missing and not fill_missing:
            raise fail(
                "metadata column",
                col,
                f"present in every set (missing from {missing})",
                "Pass fill_missing=True to fill it with '' or NaN.",
            )
        template = next(s.metadata[col] for s in sets if col in s.metadata)
        parts = []
        for s in sets:
            if col in s.metadata:
                parts.append(s.metadata[col])
            elif template.dtype.kind in "US":
                parts.append(np.full((len(s),) + template.shape[1:], "", dtype=str))
            else:
                parts.append(np.full((len(s),) + template.shape[1:], np.nan))
        if any(p.dtype.kind in "US" for p in parts) and not all(p.dtype.kind in "US" for p in parts):
            parts = [p.astype(str) for p in parts]
        meta[col] = np.concatenate(parts)
    if source_column:
        meta[source_column] = np.concatenate([np.full(len(s), s.name) for s in sets])
    hashes = None
    if all(s._hashes is not None for s in sets):
        hashes = np.concatenate([s._hashes for s in sets])  # type: ignore[misc]
    info = {"parents": [{"name": s.name, **({"source": s.info["source"]} if "source" in s.info else {})} for s in sets]}
    return ImageSet(
        np.concatenate([np.asarray(s.images) for s in sets]),
        np.concatenate([s.labels for s in sets]),
        first.class_names,
        np.concatenate([s.ids for s in sets]),
        meta,
        name=name or "+".join(s.name for s in sets),
        info=info,
        content_hashes=hashes,
    )


# --------------------------------------------------------------------------- storage


def _save(s: ImageSet, path: Path, *, overwrite: bool) -> Path:
    from replicate.manifest import make_manifest, sha256_file

    if path.exists():
        if not overwrite:
            raise fail(
                "path",
                str(path),
                "a path that does not exist yet",
                "Pass overwrite=True to replace it.",
                error=FileExistsError,
            )
        if not (path / "imageset.json").exists():
            raise fail(
                "path",
                str(path),
                "a saved image set when overwriting (it has no imageset.json)",
                "Refusing to delete a directory that replicate did not write.",
                error=FileExistsError,
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        np.save(tmp / "images.npy", np.ascontiguousarray(s.images))
        np.save(tmp / "labels.npy", s.labels.astype(np.int64))
        np.save(tmp / "ids.npy", s.ids.astype(str))
        np.save(tmp / "content_hashes.npy", s.content_hashes)
        columns = []
        for i, (key, col) in enumerate(s.metadata.items()):
            fname = f"meta_{i:03d}.npy"
            np.save(tmp / fname, col, allow_pickle=False)
            columns.append({"name": key, "file": fname, "dtype": col.dtype.str, "shape": list(col.shape)})
        header = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": s.name,
            "n": len(s),
            "image_shape": list(s.image_shape),
            "class_names": list(s.class_names),
            "columns": columns,
            "fingerprint": s.fingerprint,
            "image_fingerprint": s.image_fingerprint,
            "info": s.info,
        }
        (tmp / "imageset.json").write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        manifest = make_manifest(
            kind="imageset",
            fingerprint=s.fingerprint,
            files=files,
            sources=s.info.get("source"),
            parents=s.info.get("parents"),
        )
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if path.exists():
            _replace_saved(path, tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _written_by_save(path: Path) -> list[str]:
    """The files a saved set's manifest lists (or, without one, the files its header names)."""
    from replicate._files import manifest_files

    listed = manifest_files(path)
    if listed:
        return listed
    try:
        header = json.loads((path / "imageset.json").read_text())
        columns = [str(c["file"]) for c in header.get("columns", [])]
    except (OSError, ValueError, KeyError, TypeError):
        columns = []
    return ["content_hashes.npy", "ids.npy", "imageset.json", "images.npy", "labels.npy", *columns]


def _replace_saved(path: Path, tmp: Path) -> None:
    """Replace the set saved at ``path`` by the one in ``tmp``, keeping files replicate did not write."""
    import warnings

    from replicate._files import remaining, remove_written

    written = set(_written_by_save(path))
    new = {p.name for p in tmp.iterdir()}
    foreign = [n for n in remaining(path) if n not in written]
    clash = sorted(set(foreign) & new)
    if clash:
        raise fail(
            "path",
            str(path),
            "a saved image set whose other files do not share a name with the new set's files",
            f"{clash} in it were not written by replicate and would be overwritten; move them first.",
            error=FileExistsError,
        )
    kept = remove_written(path, sorted(written))
    if not kept:
        path.rmdir()
        os.replace(tmp, path)
        return
    for name in sorted(new):
        os.replace(tmp / name, path / name)
    tmp.rmdir()
    warnings.warn(
        f"ImageSet.save(overwrite=True) replaced the set in {path} but kept {len(kept)} "
        f"file(s) that replicate did not write: {kept[:5]}{' ...' if len(kept) > 5 else ''}",
        UserWarning,
        stacklevel=4,
    )


def is_saved_imageset(path: Path) -> bool:
    """True if ``path`` is a directory written by :meth:`ImageSet.save`."""
    return path.is_dir() and (path / "imageset.json").is_file()


def _load(path: Path, *, mmap: bool, verify: bool) -> ImageSet:
    if not is_saved_imageset(path):
        raise fail(
            "path",
            str(path),
            "a directory written by ImageSet.save (with imageset.json)",
            "Use replicate.load() for other formats.",
            error=FileNotFoundError,
        )
    header = json.loads((path / "imageset.json").read_text())
    if header.get("format") != FORMAT_NAME or header.get("version") != FORMAT_VERSION:
        raise fail(
            "imageset.json format",
            (header.get("format"), header.get("version")),
            f"({FORMAT_NAME!r}, {FORMAT_VERSION})",
        )
    mode: Literal["r"] | None = "r" if mmap else None

    def arr(name: str) -> np.ndarray:
        try:
            return np.load(path / name, mmap_mode=mode, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"file == {str(path / name)!r}; must be a readable .npy array ({exc}).") from exc

    images = arr("images.npy")
    n = int(header["n"])
    if images.shape != (n, *header["image_shape"]) or images.dtype != np.uint8:
        raise fail(
            f"{path / 'images.npy'}",
            f"uint8? {images.dtype}, shape {images.shape}",
            f"uint8 of shape {(n, *header['image_shape'])} as imageset.json says",
            "The saved set is truncated or corrupt.",
        )
    labels = arr("labels.npy")
    ids = arr("ids.npy")
    hashes = arr("content_hashes.npy")
    meta = {c["name"]: arr(c["file"]) for c in header["columns"]}
    for key, col in [("labels", labels), ("ids", ids), ("content_hashes", hashes), *meta.items()]:
        if len(col) != n:
            raise fail(f"len({key}) in {path}", len(col), f"{n}", "The saved set is truncated or corrupt.")
    out = ImageSet(
        images,
        labels,
        header["class_names"],
        ids,
        meta,
        name=header["name"],
        info=header.get("info", {}),
        content_hashes=np.asarray(hashes),
        _validate=False,
    )
    out._fingerprint = header.get("fingerprint")
    out._image_fingerprint = header.get("image_fingerprint")
    if verify:
        out.verify()
        stored = out._fingerprint
        out._fingerprint = None
        out._image_fingerprint = None
        if stored is not None and out.fingerprint != stored:
            raise fail(
                f"fingerprint of {path}",
                out.fingerprint,
                f"{stored} as stored",
                "Labels, ids or metadata were modified after saving.",
            )
    return out
