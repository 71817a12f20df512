"""Loaders: every format replicate reads becomes an :class:`~replicate.ImageSet`.

``load(path)`` detects the format:

- a directory written by ``ImageSet.save`` (``imageset.json``);
- a candidate pool directory (``pool.toml``), see :func:`load_pool`;
- CIFAR-10 / CIFAR-100 python-pickle batches (torchvision's folder layout), a
  batch file itself, see :func:`load_cifar`;
- ``.npz`` archives (images, labels, and every other per-image array as metadata);
- ``*_data.npy`` + ``*_labels.npy`` pairs (CIFAR-10.1, ImageNetV2 style);
- a folder of PNG/JPEG images, by class subfolder or flat with ``metadata.csv`` /
  ``metadata.jsonl``;
- WebDataset tar shards (a ``.tar`` file or a folder of them) and Parquet files, through
  :func:`replicate.sources.open_source` and ``materialise()`` (images of any size become the
  canonical 32x32 thumbnail). Pools too large for memory stay an
  :class:`~replicate.sources.ImageSource`: ``load_pool(path, stream=True)``.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import tomllib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from replicate._validation import check_choice, fail, short_repr
from replicate.imageset import CIFAR10_CLASSES, ImageSet, is_saved_imageset
from replicate.manifest import sha256_file

__all__ = [
    "load",
    "load_cifar",
    "load_npz",
    "load_npy_pair",
    "load_folder",
    "export_folder",
    "load_pool",
    "find_pool",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm")
_LABEL_KEYS = ("labels", "label", "y", "targets", "cifar10_label")
_CLASS_NAME_KEYS = ("label_names", "class_names", "classes")


def _source(path: Path, loader: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": str(path), "loader": loader}
    if path.is_file():
        entry["sha256"] = sha256_file(path)
    entry.update(extra)
    return entry


def _exists(name: str, path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise fail(name, str(p), "an existing file or directory", error=FileNotFoundError)
    return p


# --------------------------------------------------------------------------- dispatch


def load(path: str | os.PathLike[str], **kwargs: Any) -> ImageSet:
    """Open an image set in any supported format (see the module docstring)."""
    p = _exists("path", path)
    if is_saved_imageset(p):
        return ImageSet.load(p, **kwargs)
    if p.is_dir() and (p / "pool.toml").is_file():
        return load_pool(p, **kwargs)
    if _is_cifar_dir(p) or _looks_like_cifar_batch(p):
        return load_cifar(p, **kwargs)
    if p.suffix == ".npz":
        return load_npz(p, **kwargs)
    if p.suffix == ".npy":
        return load_npy_pair(p, **kwargs)
    if p.suffix in (".tar", ".parquet") or (p.is_dir() and any(f.suffix in (".tar", ".parquet") for f in p.iterdir())):
        from replicate.sources import open_source

        return open_source(p, **kwargs).materialise()
    if p.is_dir():
        return load_folder(p, **kwargs)
    raise fail(
        "path",
        str(p),
        "a saved image set, a pool folder, CIFAR batches, .npz, *_data.npy or an image folder",
        "See replicate.io for the formats.",
    )


# --------------------------------------------------------------------------- CIFAR


_CIFAR_DIRS = {"cifar-10-batches-py": "cifar10", "cifar-100-python": "cifar100"}


def _is_cifar_dir(p: Path) -> bool:
    if not p.is_dir():
        return False
    if any((p / d).is_dir() for d in _CIFAR_DIRS):
        return True
    return (p / "batches.meta").is_file() or ((p / "meta").is_file() and (p / "test").is_file())


def _looks_like_cifar_batch(p: Path) -> bool:
    return p.is_file() and (p.name.startswith("data_batch_") or p.name in ("test_batch", "train", "test"))


# What a CIFAR python batch holds: a dict of bytes, str, ints, lists and numpy arrays.
# Unpickling needs only numpy's array reconstruction (both the numpy 1 and numpy 2
# module names, as the batches were pickled by numpy 1 and may be re-saved by numpy 2),
# and ``_codecs.encode`` / ``bytearray`` for bytes pickled by Python 3 at protocol <= 2.
# Nothing here can run code: every other global (os.system, builtins.exec, ...) is refused.
_CIFAR_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("builtins", "bytearray"),
        ("__builtin__", "bytearray"),
    }
)


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global that no CIFAR batch needs."""


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only what a CIFAR batch holds (never calls anything else)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CIFAR_GLOBALS:
            return super().find_class(module, name)
        raise _RefusedGlobal(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise _RefusedGlobal(f"persistent id {short_repr(pid)}")


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            raw = _CifarUnpickler(fh, encoding="bytes").load()
    except _RefusedGlobal as exc:
        raise fail(
            "file",
            str(path),
            "a CIFAR python-pickle batch (a dict of bytes, lists, ints and numpy arrays)",
            f"It asks to load {exc}, which no CIFAR batch needs, so replicate refused to unpickle "
            "it and ran nothing in it. Do not open this file with pickle; get the batches from "
            "https://www.cs.toronto.edu/~kriz/cifar.html.",
        ) from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a batch"
        raise ValueError(
            f"file == {str(path)!r}; must be a CIFAR python-pickle batch (unpickling failed: "
            f"{type(exc).__name__}: {exc}). Use the 'python version' of the CIFAR download."
        ) from exc
    if not isinstance(raw, dict):
        raise fail("file", str(path), "a CIFAR batch (a pickled dict)", f"It holds a {type(raw).__name__}.")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, np.ndarray]]:
    d = _unpickle(path)
    if "data" not in d or label_key not in d:
        raise fail(
            "file",
            str(path),
            f"a CIFAR batch with keys 'data' and {label_key!r}",
            f"Found keys {sorted(d)}.",
        )
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] % 3:
        raise fail(f"'data' in {path}", data, "uint8 of shape (N, 3*H*W)")
    side = int(round((data.shape[1] // 3) ** 0.5))
    if 3 * side * side != data.shape[1]:
        raise fail(f"'data' in {path}", data, "rows of 3*S*S values (square RGB images)")
    if len(labels) != len(data):
        raise fail(f"len({label_key!r}) in {path}", len(labels), f"{len(data)} (one per image)")
    images = data.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)
    filenames = [f.decode() if isinstance(f, bytes) else str(f) for f in d.get("filenames", [])]
    extra = {}
    if "coarse_labels" in d:
        extra["coarse_label"] = np.asarray(d["coarse_labels"], dtype=np.int64)
    return np.ascontiguousarray(images), labels, filenames, extra


def load_cifar(
    root: str | os.PathLike[str],
    split: Literal["train", "test"] = "test",
    *,
    download: bool = False,
    variant: Literal["auto", "cifar10", "cifar100"] = "auto",
) -> ImageSet:
    """CIFAR-10 or CIFAR-100 from the official python-pickle batches.

    ``root`` is torchvision's root (holding ``cifar-10-batches-py`` or
    ``cifar-100-python``), that folder itself, or one batch file. ``download=True``
    asks torchvision to fetch the archive first (needs internet). Ids are
    ``cifar10-<split>/<index>`` in the official order; CIFAR-100 keeps the coarse label
    as a metadata column and uses the fine labels.
    """
    split = check_choice("split", split, ("train", "test"))  # type: ignore[assignment]
    variant = check_choice("variant", variant, ("auto", "cifar10", "cifar100"))  # type: ignore[assignment]
    root = Path(root)
    if download:
        import torchvision.datasets as tvd

        cls = tvd.CIFAR100 if variant == "cifar100" else tvd.CIFAR10
        cls(str(root), train=split == "train", download=True)
    root = _exists("root", root)

    if root.is_file():
        folder, files = root.parent, [root]
        kind = "cifar100" if (folder / "meta").is_file() and not (folder / "batches.meta").is_file() else "cifar10"
        if variant != "auto":
            kind = variant
        split_name = "train" if root.name.startswith("data_batch") or root.name == "train" else "test"
    else:
        folder = root
        for sub, k in _CIFAR_DIRS.items():
            if (root / sub).is_dir() and variant in ("auto", k):
                folder = root / sub
                break
        kind = "cifar100" if (folder / "meta").is_file() and not (folder / "batches.meta").is_file() else "cifar10"
        if variant != "auto":
            kind = variant
        if kind == "cifar10":
            names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        else:
            names = [split]
        files = [folder / n for n in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise fail(
                "root",
                str(root),
                f"a {kind} folder with {', '.join(names)}",
                f"Missing: {missing}. Pass download=True on a machine with internet.",
                error=FileNotFoundError,
            )
        split_name = split

    label_key = "fine_labels" if kind == "cifar100" else "labels"
    parts = [_read_batch(f, label_key) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    meta: dict[str, Any] = {}
    fnames = sum((p[2] for p in parts), [])
    if len(fnames) == len(images):
        meta["filename"] = np.array(fnames)
    if all("coarse_label" in p[3] for p in parts):
        meta["coarse_label"] = np.concatenate([p[3]["coarse_label"] for p in parts])

    class_names: Sequence[str] | None = None
    meta_file = folder / ("meta" if kind == "cifar100" else "batches.meta")
    if meta_file.is_file():
        m = _unpickle(meta_file)
        key = "fine_label_names" if kind == "cifar100" else "label_names"
        if key in m:
            class_names = [x.decode() if isinstance(x, bytes) else str(x) for x in m[key]]
    if class_names is None and kind == "cifar10":
        class_names = CIFAR10_CLASSES
    name = f"{kind}-{split_name}"
    return ImageSet(
        images,
        labels,
        class_names,
        ids=np.array([f"{name}/{i:05d}" for i in range(len(images))]),
        metadata=meta,
        name=name,
        info={"source": [_source(f, "cifar") for f in files]},
    )


# --------------------------------------------------------------------------- npz / npy


def load_npz(
    path: str | os.PathLike[str],
    *,
    image_key: str = "images",
    label_key: str | None = None,
    class_names: Sequence[str] | None = None,
    ids_key: str | None = None,
    name: str | None = None,
) -> ImageSet:
    """An ``.npz`` archive: images, labels, class names, and per-image metadata.

    Every other array whose first dimension equals the number of images becomes a
    metadata column; arrays that are not per-image are listed in a warning (never
    dropped silently) and kept in ``info['npz_other_keys']``.

    Parameters
    ----------
    path
        the ``.npz`` file (read with ``allow_pickle=False``).
    image_key
        the array of images, ``(N, H, W, C)``.
    label_key
        the array of labels (default: the first of the usual label keys present, else the
        set is unlabelled, with a warning naming integer per-image arrays).
    class_names
        the class names (default: a class-names array of the file, else ImageSet's default).
    ids_key
        the array of image ids (default: ``<name>/<index>``, zero-padded).
    name
        the set's name (default: the file's stem).
    """
    import zipfile

    p = _exists("path", path)
    if p.is_dir():
        raise fail("path", str(p), "an .npz file (it is a directory)", error=IsADirectoryError)
    if p.stat().st_size == 0:
        raise fail("path", str(p), "a readable .npz archive", "The file is empty (0 bytes).")
    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile)
    with open(p, "rb") as fh:
        try:
            data = np.load(fh, allow_pickle=False)
        except unreadable as exc:
            raise ValueError(f"path == {str(p)!r}; must be a readable .npz archive ({exc}).") from exc
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise fail("path", str(p), "an .npz archive (it holds a single array)")
        keys = list(data.files)
        if image_key not in keys:
            raise fail("image_key", image_key, f"one of the archive's keys {keys}", f"File: {p}.", error=KeyError)

        def member(key: str) -> np.ndarray:
            try:
                return data[key]
            except unreadable as exc:
                raise ValueError(
                    f"{key!r} in {str(p)!r}; must be a readable array ({type(exc).__name__}: {exc}). "
                    "The archive is truncated or corrupt."
                ) from exc

        images = member(image_key)
        if images.ndim != 4:
            raise fail(
                f"{image_key!r} in {p}",
                images,
                "an array of images of shape (N, H, W, C)",
                "Save the images as one uint8 array, e.g. np.savez(path, images=x, labels=y).",
            )
        n = len(images)
        if label_key is None:
            label_key = next((k for k in _LABEL_KEYS if k in keys), None)
        elif label_key not in keys:
            raise fail("label_key", label_key, f"one of the archive's keys {keys}", error=KeyError)
        labels = member(label_key) if label_key else None
        if class_names is None:
            ck = next((k for k in _CLASS_NAME_KEYS if k in keys), None)
            if ck is not None:
                class_names = [str(x) for x in member(ck)]
        ids = None
        if ids_key is not None:
            if ids_key not in keys:
                raise fail("ids_key", ids_key, f"one of the archive's keys {keys}", error=KeyError)
            ids = member(ids_key).astype(str)
        meta, other = {}, []
        used = {image_key, label_key, ids_key} | set(_CLASS_NAME_KEYS)
        for k in keys:
            if k in used:
                continue
            arr = member(k)
            if arr.ndim >= 1 and len(arr) == n and arr.dtype.kind != "O":
                meta[k] = arr
            else:
                other.append(k)
    if label_key is None:
        maybe = [k for k, col in meta.items() if col.ndim == 1 and col.dtype.kind in "iu"]
        if maybe:
            warnings.warn(
                f"{p}: no labels under the known keys {list(_LABEL_KEYS)}, so the set is loaded "
                f"unlabelled; the archive's keys are {keys} (integer per-image arrays: {maybe}). "
                f"Pass label_key={maybe[0]!r} (replicate.io.load_npz) if those are the labels.",
                stacklevel=2,
            )
    if other:
        warnings.warn(
            f"{p.name}: keys {other} are not per-image arrays (first dimension != {n}) and were "
            "not loaded as metadata columns; they are listed in info['npz_other_keys'].",
            stacklevel=2,
        )
    stem = name or p.stem
    if ids is None:
        ids = np.array([f"{stem}/{i:0{max(5, len(str(n - 1)))}d}" for i in range(n)])
    info: dict[str, Any] = {"source": [_source(p, "npz")]}
    if other:
        info["npz_other_keys"] = other
    return ImageSet(images, labels, class_names, ids, meta, name=stem, info=info)


def _read_npy(path: Path, name: str) -> np.ndarray:
    """``np.load`` of one .npy file; a truncated or corrupt file fails naming it."""
    if path.is_dir():
        raise fail(name, str(path), "a .npy file (it is a directory)", error=IsADirectoryError)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(
            f"{name} == {str(path)!r}; must be a readable .npy array ({type(exc).__name__}: {exc}). "
            "The file is truncated or corrupt."
        ) from exc


def load_npy_pair(
    data_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageSet:
    """A ``*_data.npy`` + ``*_labels.npy`` pair (the CIFAR-10.1 release format).

    ``labels_path`` defaults to the data path with ``_data`` replaced by ``_labels``.
    Class names default to CIFAR-10's for files whose name starts with ``cifar10``.
    """
    dp = _exists("data_path", data_path)
    if labels_path is None:
        if "_data" not in dp.name:
            raise fail(
                "data_path",
                str(dp),
                "a file named *_data.npy when labels_path is not given",
                "Pass labels_path explicitly.",
            )
        labels_path = dp.with_name(dp.name.replace("_data", "_labels"))
    lp = _exists("labels_path", labels_path)
    images = _read_npy(dp, "data_path")
    labels = _read_npy(lp, "labels_path")
    if images.ndim != 4:
        raise fail(f"images in {dp}", images, "an array of shape (N, H, W, C)")
    if labels.ndim != 1:
        raise fail(f"labels in {lp}", labels, "an array of shape (N,)")
    if len(labels) != len(images):
        raise ValueError(
            "Found input variables with inconsistent numbers of samples: "
            f"[{len(images)}, {len(labels)}] ({dp.name} has {len(images)} images, {lp.name} "
            f"{len(labels)} labels); must be equal."
        )
    stem = name or dp.name.replace("_data.npy", "").replace(".npy", "")
    if class_names is None and dp.name.lower().startswith("cifar10") and not dp.name.lower().startswith("cifar100"):
        class_names = CIFAR10_CLASSES
    return ImageSet(
        images,
        labels,
        class_names,
        ids=np.array([f"{stem}/{i:05d}" for i in range(len(images))]),
        name=stem,
        info={"source": [_source(dp, "npy"), _source(lp, "npy")]},
    )


# --------------------------------------------------------------------------- folders


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise ValueError(
            f"image file == {str(path)!r}; must be a readable image ({type(exc).__name__}: {exc}). "
            "Remove or replace the file."
        ) from exc


def _read_table(path: Path) -> list[dict[str, str]]:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            return [dict(r) for r in csv.DictReader(fh)]
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append({k: v for k, v in json.loads(line).items()})
                except json.JSONDecodeError as exc:
                    raise ValueError(f"line {i} of {path} == {line.strip()[:60]!r}; must be a JSON object ({exc}).") from exc
    return rows


def _column(values: list[Any]) -> np.ndarray:
    """Numbers stay numbers where every value parses; otherwise strings."""
    for cast in (int, float):
        try:
            return np.array([cast(v) for v in values])
        except (TypeError, ValueError):
            pass
    return np.array(["" if v is None else str(v) for v in values])


def load_folder(
    root: str | os.PathLike[str],
    *,
    metadata: str | os.PathLike[str] | None = None,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageSet:
    """A folder of images: ``root/<class>/<file>``, or flat with a metadata table.

    A flat folder needs ``metadata.csv`` or ``metadata.jsonl`` (or ``metadata=``) with a
    ``file`` column and optionally ``label`` (a class name or index), ``id``, and any
    other columns, which become metadata. Every image file must have a row and every
    row a file; all images must share one size.
    """
    root = _exists("root", root)
    if not root.is_dir():
        raise fail("root", str(root), "a directory", error=NotADirectoryError)
    table = Path(metadata) if metadata is not None else next(
        (root / f for f in ("metadata.csv", "metadata.jsonl") if (root / f).is_file()), None
    )
    stem = name or root.name
    if table is None:
        files, labels, names, rows, ids = _class_folder_listing(root, class_names)
    else:
        files, labels, names, rows, ids = _table_listing(root, _exists("metadata", table), class_names)
    if not files:
        raise fail("root", str(root), "a folder holding at least one image", error=FileNotFoundError)
    images = [_read_image(f) for f in files]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        first = images[0].shape
        odd, odd_shape = next((f, im.shape) for f, im in zip(files, images) if im.shape != first)
        raise fail(
            f"size of {odd}",
            odd_shape,
            f"{first} like {files[0].name} (one size per set)",
            "Resize the images to one size first.",
        )
    meta: dict[str, Any] = {}
    if rows and rows[0]:
        for col in rows[0]:
            if col in ("file", "label", "id"):
                continue
            meta[col] = _column([r[col] for r in rows])
    meta["file"] = np.array([str(f.relative_to(root)) for f in files])
    return ImageSet(
        np.stack(images),
        np.array(labels, dtype=np.int64) if labels else None,
        names or None,
        ids=np.array(ids),
        metadata=meta,
        name=stem,
        info={"source": [{"path": str(root), "loader": "folder"}]},
    )


_Listing = tuple[list[Path], list[int], list[str], list[dict[str, Any]], list[str]]


def _class_folder_listing(root: Path, class_names: Sequence[str] | None) -> _Listing:
    """``root/<class>/<file>``: the files, labels, class names, (empty) rows and ids."""
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subdirs:
        raise fail(
            "root",
            str(root),
            "a folder of class subfolders, or a flat folder with metadata.csv or metadata.jsonl",
        )
    names = list(class_names) if class_names is not None else [d.name for d in subdirs]
    files, labels = [], []
    for d in subdirs:
        if d.name not in names:
            raise fail("class folder", d.name, f"one of class_names {names}")
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(names.index(d.name))
    rows: list[dict[str, Any]] = [{} for _ in files]
    ids = [f"{f.parent.name}/{f.name}" for f in files]
    return files, labels, names, rows, ids


def _table_listing(root: Path, table: Path, class_names: Sequence[str] | None) -> _Listing:
    """A flat folder with a metadata table: one row per image file, every row a file."""
    rows = _read_table(table)
    if not rows or "file" not in rows[0]:
        raise fail(
            "metadata",
            str(table),
            "a table with a 'file' column (and optionally 'label', 'id', ...)",
            f"Found columns {sorted(rows[0]) if rows else '(no rows)'}.",
        )
    columns = list(rows[0])
    for i, r in enumerate(rows):
        if set(r) != set(columns) or any(v is None for v in r.values()):
            raise fail(
                f"row {i + 1} of {table.name}",
                r,
                f"a value for every column {columns}",
                "Fill the missing values.",
            )
    on_disk = {f.name for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES}
    listed = [r["file"] for r in rows]
    missing_files = sorted(set(listed) - on_disk)
    unlisted = sorted(on_disk - set(listed))
    if missing_files:
        raise fail(
            f"files listed in {table.name}",
            missing_files[:5],
            "image files present in the folder",
            f"{len(missing_files)} listed files do not exist in {root}.",
            error=FileNotFoundError,
        )
    if unlisted:
        raise fail(
            f"rows of {table.name}",
            f"{len(unlisted)} images without a row, e.g. {unlisted[:5]}",
            "one row per image file",
            "Add rows for them or move them out of the folder.",
        )
    files = [root / f for f in listed]
    names = list(class_names) if class_names is not None else []
    labels = []
    if "label" in columns:
        raw = [r["label"] for r in rows]
        if all(str(v).lstrip("-").isdigit() for v in raw):
            labels = [int(v) for v in raw]
        else:
            if not names:
                names = sorted({str(v) for v in raw})
            unknown = sorted({str(v) for v in raw} - set(names))
            if unknown:
                raise fail("label", unknown[:5], f"one of class_names {names}")
            labels = [names.index(str(v)) for v in raw]
    ids = [str(r["id"]) for r in rows] if "id" in columns else [str(r["file"]) for r in rows]
    return files, labels, names, rows, ids


def export_folder(
    imageset: ImageSet,
    root: str | os.PathLike[str],
    *,
    layout: Literal["flat", "class"] = "flat",
    overwrite: bool = False,
) -> Path:
    """Write PNG files plus ``metadata.csv`` (file, id, label, and every 1-D column).

    ``layout="class"`` writes ``root/<class>/<file>``; ``load_folder`` reads either back.
    """
    from PIL import Image

    layout = check_choice("layout", layout, ("flat", "class"))  # type: ignore[assignment]
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise fail("root", str(root), "an empty or new directory", "Pass overwrite=True.", error=FileExistsError)
    if layout == "class" and not imageset.is_labeled:
        raise fail("layout", layout, "'flat' for a set with unlabelled images")
    root.mkdir(parents=True, exist_ok=True)
    cols = [k for k, v in imageset.metadata.items() if v.ndim == 1 and k != "file"]
    width = max(5, len(str(len(imageset) - 1)))
    rows = []
    for i in range(len(imageset)):
        fname = f"{i:0{width}d}.png"
        if layout == "class":
            sub = root / imageset.class_names[imageset.labels[i]]
            sub.mkdir(exist_ok=True)
            target = sub / fname
        else:
            target = root / fname
        im = imageset.images[i]
        Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(target)
        row = {"file": fname, "id": str(imageset.ids[i])}
        if imageset.labels[i] >= 0:
            row["label"] = imageset.class_names[imageset.labels[i]]
        row.update({k: imageset.metadata[k][i].item() for k in cols})
        rows.append(row)
    if layout == "flat":
        fields = ["file", "id"] + (["label"] if imageset.is_labeled else []) + cols
        with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    return root


# --------------------------------------------------------------------------- pools


def _candidate_roots() -> list[Path]:
    roots = [Path(p) for p in os.environ.get("REPLICATE_CANDIDATES", "").split(os.pathsep) if p]
    roots.append(Path.cwd() / "candidates")
    roots.append(Path(__file__).resolve().parent.parent / "candidates")
    roots.append(Path(__file__).resolve().parent / "data" / "candidates")
    return roots


def find_pool(name_or_path: str | os.PathLike[str]) -> Path:
    """The folder of a candidate pool, by path or by name under the candidate roots.

    Names are looked up in ``$REPLICATE_CANDIDATES``, ``./candidates``, the
    project's ``candidates/`` and the pools bundled with the package.
    """
    p = Path(name_or_path)
    if (p / "pool.toml").is_file():
        return p
    searched = []
    for root in _candidate_roots():
        searched.append(str(root))
        if (root / str(name_or_path) / "pool.toml").is_file():
            return root / str(name_or_path)
    known = sorted({d.name for r in _candidate_roots() if r.is_dir() for d in r.iterdir() if (d / "pool.toml").is_file()})
    raise fail(
        "pool",
        str(name_or_path),
        f"a pool folder with pool.toml or one of the known pools {known}",
        f"Searched: {searched}.",
        error=FileNotFoundError,
    )


def load_pool(name_or_path: str | os.PathLike[str], *, verify: bool = True, stream: bool = False) -> Any:
    """A candidate pool: ``candidates/<pool>/pool.toml`` plus its images.

    ``stream=True`` returns an :class:`~replicate.sources.ImageSource` instead of an
    ImageSet, read chunk by chunk (for pools larger than memory): the pool's ``data`` (or
    ``name_or_path`` itself, when it is not a pool folder) must then be tar shards, Parquet
    files or an image folder. An ImageSet is what a pool that fits in memory, and every
    new test set, is; a source is materialised into one with ``materialise()``.

    ``pool.toml`` holds ``name``, ``description``, ``source`` (where the images came
    from), ``licence``, ``collection`` (how they were collected), ``columns`` (the
    metadata columns it has, each described), and ``data``: a path (relative to the
    pool folder) to anything :func:`load` reads, with an optional ``sha256`` that is
    checked. ``label_column`` names an integer column to use as labels when the data
    has none under the usual names.
    """
    if stream and Path(name_or_path).exists() and not (Path(name_or_path) / "pool.toml").is_file():
        from replicate.sources import open_source

        return open_source(name_or_path)
    folder = find_pool(name_or_path)
    with open(folder / "pool.toml", "rb") as fh:
        try:
            desc = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"pool.toml in {folder} == unreadable; must be valid TOML ({exc}).") from exc
    required = ("name", "description", "source", "licence", "data")
    missing = [k for k in required if k not in desc]
    if missing:
        raise fail(f"{folder / 'pool.toml'}", f"missing keys {missing}", f"a table with keys {list(required)}")
    data_path = (folder / desc["data"]).resolve()
    if not data_path.exists():
        raise fail(
            f"data of pool {desc['name']!r}",
            str(data_path),
            "an existing file",
            desc.get("missing_hint", "Place the pool's data file there."),
            error=FileNotFoundError,
        )
    if verify and "sha256" in desc and data_path.is_file():
        found = sha256_file(data_path)
        if found != desc["sha256"]:
            raise ValueError(
                f"sha256 of {data_path} == {found}; must be {desc['sha256']} as pool.toml says. "
                "The file is not the pool's data: replace it."
            )
    if stream:
        from replicate.sources import detect_kind, open_source

        if data_path.suffix in (".npz", ".npy") or is_saved_imageset(data_path):
            raise fail("stream", True, f"False for pool {desc['name']!r}, whose data {data_path.name!r} is an "
                       "in-memory format", "Open it with stream=False, or store it as tar shards or Parquet.")
        src = open_source(data_path, kind=detect_kind(data_path), name=desc["name"])
        missing_cols = [c for c in desc.get("columns", {}) if c not in src.metadata]
        if missing_cols:
            raise fail(f"columns of pool {desc['name']!r}", missing_cols,
                       f"columns present in its data (it has {src.columns})", "Fix pool.toml or the data.")
        return src
    kwargs: dict[str, Any] = {}
    if data_path.suffix == ".npz":
        kwargs = {k: desc[k] for k in ("image_key", "label_key") if k in desc}
        kwargs["name"] = desc["name"]
    s = load(data_path, **kwargs)
    missing_cols = [c for c in desc.get("columns", {}) if c not in s.metadata]
    if missing_cols:
        raise fail(
            f"columns of pool {desc['name']!r}",
            missing_cols,
            f"columns present in its data (it has {s.columns})",
            "Fix pool.toml or the data.",
        )
    pool_info = {k: v for k, v in desc.items() if k not in ("data",)}
    return s.renamed(desc["name"]).with_info(pool=pool_info, source=s.info.get("source"))
