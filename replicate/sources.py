"""Image sources: candidate pools that are read chunk by chunk, not held in memory.

An :class:`ImageSource` is a pool of encoded images (PNG, JPEG, ...) of any size and
mode in one of three layouts:

* an image folder tree: ``root/<class>/<file>``, or flat with ``metadata.csv`` /
  ``metadata.jsonl`` (``file``, optional ``label``, ``id`` and other columns), the
  layout :func:`replicate.io.load_folder` reads;
* WebDataset tar shards (read with :mod:`tarfile`): members ``<key>.<ext>`` grouped by
  key, one image member (``jpg``, ``jpeg``, ``png``, ``webp``, ``bmp``, ``ppm``) plus
  optional ``<key>.json`` (a JSON object: ``label`` / ``cls`` / ``id`` and metadata) and
  ``<key>.cls`` (the integer label);
* Parquet files (``pyarrow``, the ``parquet`` extra): an image-bytes column (binary, or a
  struct with a ``bytes`` field as Hugging Face datasets write it) plus metadata columns.

Opening a source lists it (file names, tar headers, metadata rows; no image is
decoded): the ids, labels and metadata of every image are known at once, images are
decoded one chunk at a time (:meth:`ImageSource.chunks`) by the pure function
:func:`read_chunk` over a small :class:`ChunkTask`, optionally on a process pool, in a
deterministic order. Each :class:`Chunk` holds, per image:

* ``images``: the canonical thumbnail (:class:`DecodePolicy`, 32x32 RGB by default):
  what pixel-space and aligned distances are computed on;
* ``hashes``: perceptual hashes of the *decoded image at its own size*, through
  imagehash's own preprocessing (:func:`replicate.hashing.hash_pil`), bit-identical to
  ``imagehash.<method>(image)``;
* the original size and mode, the sha256 of the encoded bytes, labels and metadata.

Bad images fail naming the file (or shard and member) unless ``on_error="skip"``, which
skips and counts them (:attr:`Chunk.skipped`, the stage results and the manifest).
``source.materialise()`` decodes everything into an :class:`~replicate.ImageSet`.
See ``docs/sources.md``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from replicate._validation import check_choice, check_int, fail

__all__ = [
    "DecodePolicy",
    "HashSpec",
    "ImageSource",
    "Chunk",
    "ChunkTask",
    "read_chunk",
    "open_source",
    "IMAGE_EXTENSIONS",
]

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "bmp", "gif", "webp", "ppm")
SourceKind = Literal["folder", "webdataset", "parquet"]
OnError = Literal["raise", "skip"]
_IMAGE_COLUMNS = ("image", "img", "jpg", "png", "image_bytes", "bytes")


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class DecodePolicy:
    """How an encoded image becomes the canonical thumbnail.

    * ``size``: ``(height, width)`` of the thumbnail, 32x32 by default (CIFAR-10's size;
      the near-duplicate search compares against references of this size).
    * ``fit``: ``"squash"`` resizes the whole image to ``size`` (aspect ratio not kept:
      a copy rescaled along either axis maps back onto the original), ``"center_crop"``
      scales the shorter side to fit and crops the centre (torchvision's
      ``Resize`` + ``CenterCrop``).
    * ``resample``: PIL's filter for the resize, ``"box"`` by default (the block mean CINIC-10
      and Imagenet32 downsample with), or ``"lanczos"``, ``"bicubic"``, ``"bilinear"``.
      An image already of ``size`` is not resampled at all.
    * ``upsample``: whether an image smaller than ``size`` on a side (shorter side for
      ``center_crop``) is enlarged; ``False`` makes it a bad image (error, or skipped).
    * ``exif_transpose``: apply the EXIF orientation (``PIL.ImageOps.exif_transpose``)
      before anything else, hashes included: images are compared as displayed.

    Modes: as ``torchvision``'s loader does, ``image.convert("RGB")`` (alpha dropped,
    grayscale repeated, CMYK and palettes converted by PIL), except 16-bit and 32-bit
    gray (PIL ``I;16``, ``I``, ``F``), which PIL's conversion would clip to white: they
    are scaled to 8 bits (``value >> 8``) first. Hashes follow imagehash exactly, on the
    decoded (EXIF-transposed) image: ``convert("L")`` of the image as PIL opens it.
    """

    size: tuple[int, int] = (32, 32)
    fit: Literal["squash", "center_crop"] = "squash"
    resample: Literal["box", "lanczos", "bicubic", "bilinear"] = "box"
    upsample: bool = False
    exif_transpose: bool = True

    def __post_init__(self) -> None:
        size = self.size
        if isinstance(size, (int, np.integer)):
            size = (int(size), int(size))
        if not isinstance(size, (tuple, list)) or len(size) != 2:
            raise fail("policy.size", self.size, "(height, width) or one side length", error=TypeError)
        size = (check_int("policy.size[0]", size[0], minimum=1), check_int("policy.size[1]", size[1], minimum=1))
        object.__setattr__(self, "size", size)
        check_choice("policy.fit", self.fit, ("squash", "center_crop"))
        check_choice("policy.resample", self.resample, ("box", "lanczos", "bicubic", "bilinear"))
        for name in ("upsample", "exif_transpose"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise fail(f"policy.{name}", getattr(self, name), "True or False", error=TypeError)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe copy."""
        return {"size": list(self.size), "fit": self.fit, "resample": self.resample,
                "upsample": bool(self.upsample), "exif_transpose": bool(self.exif_transpose)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecodePolicy:
        """Inverse of :meth:`to_dict`."""
        d = dict(data)
        if "size" in d and isinstance(d["size"], list):
            d["size"] = tuple(d["size"])
        return cls(**d)


@dataclass(frozen=True)
class HashSpec:
    """One perceptual hash to compute while decoding: ``method``, ``hash_size``, other params."""

    method: str = "phash"
    hash_size: int = 8
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """The name of the hash in :attr:`Chunk.hashes` (the method when parameters are default)."""
        extra = "".join(f",{k}={v}" for k, v in self.params)
        return self.method if self.hash_size == 8 and not extra else f"{self.method}[{self.hash_size}{extra}]"

    def check(self) -> HashSpec:
        from replicate.hashing import _resolve

        _resolve(self.method, self.hash_size, dict(self.params))
        return self


def _as_specs(hashes: Any) -> tuple[HashSpec, ...]:
    if hashes is None:
        return ()
    if isinstance(hashes, (str, HashSpec)):
        hashes = [hashes]
    out = []
    for h in hashes:
        if isinstance(h, str):
            h = HashSpec(h)
        if not isinstance(h, HashSpec):
            raise fail("hashes", h, "method names or HashSpec objects", error=TypeError)
        out.append(h.check())
    return tuple(dict.fromkeys(out))


# --------------------------------------------------------------------------- chunks


@dataclass(frozen=True)
class ChunkTask:
    """What one chunk needs to be decoded: small, picklable, independent of the source object.

    ``locators`` say where each image's bytes are: ``("file", path)``,
    ``("tar", shard, offset, size, member)`` or ``("parquet", path, row_group, row)``.
    """

    index: int
    start: int
    ids: tuple[str, ...]
    locators: tuple[tuple[Any, ...], ...]
    policy: DecodePolicy
    hashes: tuple[HashSpec, ...]
    on_error: str
    image_column: str | None = None


@dataclass(frozen=True, eq=False)
class Chunk:
    """One decoded chunk of a source (positions ``start`` .. ``start + len`` of the listing).

    ``keep`` marks the listed images that decoded (all True unless ``on_error="skip"``
    skipped some); every other array has one row per *kept* image. ``skipped`` lists
    ``(id, where, reason)`` of the others.
    """

    index: int
    start: int
    ids: np.ndarray
    images: np.ndarray
    hashes: dict[str, np.ndarray]
    sizes: np.ndarray
    modes: np.ndarray
    digests: np.ndarray
    keep: np.ndarray
    skipped: tuple[tuple[str, str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def positions(self) -> np.ndarray:
        """Listing positions of the kept images."""
        return self.start + np.flatnonzero(self.keep)


def _open_image(data: bytes, where: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"image {where} == unreadable ({type(exc).__name__}: {exc}); must be a decodable image. "
                         "Replace or remove it, or pass on_error='skip' to skip and count such images.") from exc
    return im


_RESAMPLE = {"box": "BOX", "lanczos": "LANCZOS", "bicubic": "BICUBIC", "bilinear": "BILINEAR"}


def _to_rgb(im: Any) -> Any:
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im)
        a = np.clip(a.astype(np.int64) >> 8, 0, 255) if a.dtype.kind in "iu" else np.clip(a, 0, 255)
        im = Image.fromarray(a.astype(np.uint8), "L")
    return im.convert("RGB")


def _thumbnail(im: Any, policy: DecodePolicy, where: str) -> np.ndarray:
    from PIL import Image

    h, w = policy.size
    rgb = _to_rgb(im)
    if policy.fit == "squash":
        small = rgb.width < w or rgb.height < h
    else:
        small = min(rgb.width / w, rgb.height / h) < 1
    if small and not policy.upsample:
        raise ValueError(
            f"size of image {where} == {rgb.width}x{rgb.height} (width x height); must be at least the canonical "
            f"thumbnail's {w}x{h} for fit={policy.fit!r}. Pass DecodePolicy(upsample=True) to enlarge small images, "
            "or on_error='skip' to skip and count them."
        )
    if (rgb.width, rgb.height) == (w, h):
        return np.asarray(rgb, dtype=np.uint8)
    resample = getattr(Image.Resampling, _RESAMPLE[policy.resample])
    if policy.fit == "squash":
        out = rgb.resize((w, h), resample)
    else:
        scale = max(w / rgb.width, h / rgb.height)
        sw, sh = max(w, round(rgb.width * scale)), max(h, round(rgb.height * scale))
        left, top = (sw - w) // 2, (sh - h) // 2
        out = rgb.resize((sw, sh), resample).crop((left, top, left + w, top + h))
    return np.asarray(out, dtype=np.uint8)


def _read_bytes(loc: tuple[Any, ...], handles: dict[str, Any], image_column: str | None) -> tuple[bytes, str]:
    kind = loc[0]
    if kind == "file":
        path = loc[1]
        with open(path, "rb") as file:
            return file.read(), f"file {path!r}"
    if kind == "tar":
        _, shard, offset, size, member = loc
        fh = handles.get(shard)
        if fh is None:
            fh = handles[shard] = open(shard, "rb")
        fh.seek(offset)
        data = fh.read(size)
        where = f"member {member!r} of shard {shard!r}"
        if len(data) != size:
            raise ValueError(f"{where} == {len(data)} of {size} bytes; must be complete. The shard is truncated: "
                             "re-create it, or pass on_error='skip'.")
        return data, where
    _, path, group, row = loc
    key = ("pq", path, group)
    table = handles.get(key)  # type: ignore[call-overload]
    if table is None:
        import pyarrow.parquet as pq

        table = handles[key] = pq.ParquetFile(path).read_row_group(group, columns=[image_column]).column(0)  # type: ignore[index]
    value = table[row].as_py()
    if isinstance(value, dict):
        value = value.get("bytes")
    where = f"row {row} of row group {group} of {path!r}"
    if not isinstance(value, (bytes, bytearray)):
        raise ValueError(f"image column {image_column!r} at {where} == {type(value).__name__}; must hold image "
                         "bytes. Fix the file, or pass on_error='skip'.")
    return bytes(value), where


def read_chunk(task: ChunkTask) -> Chunk:
    """Decode one chunk: thumbnails, hashes of the images at their own size, digests.

    A pure function of the task (and the files it points at): the unit of work a
    process pool or a distributed engine maps over a source.
    """
    from replicate.hashing import hash_pil

    handles: dict[Any, Any] = {}
    thumbs, pils, sizes, modes, digests, keep, skipped = [], [], [], [], [], [], []
    try:
        for id_, loc in zip(task.ids, task.locators):
            where = f"{loc[0]} {id_!r}"
            try:
                data, where = _read_bytes(loc, handles, task.image_column)
                digest = hashlib.sha256(data).digest()
                im = _open_image(data, where)
                size, mode = (im.width, im.height), im.mode
                if task.policy.exif_transpose:
                    from PIL import ImageOps

                    im = ImageOps.exif_transpose(im)
                thumb = _thumbnail(im, task.policy, where)
            except (ValueError, OSError) as exc:
                if task.on_error != "skip":
                    raise
                keep.append(False)
                skipped.append((str(id_), where, str(exc).split(";")[0]))
                continue
            keep.append(True)
            thumbs.append(thumb)
            pils.append(im if task.hashes else None)
            sizes.append(size)
            modes.append(mode)
            digests.append(np.frombuffer(digest, np.uint8))
    finally:
        for h in handles.values():
            if hasattr(h, "close"):
                h.close()
    h, w = task.policy.size
    n = len(thumbs)
    hashes = {}
    for spec in task.hashes:
        if n:
            hashes[spec.key] = hash_pil(pils, spec.method, hash_size=spec.hash_size, **dict(spec.params))
        else:
            from replicate.hashing import _words, hash_bits

            words = _words(hash_bits(spec.method, hash_size=spec.hash_size, **dict(spec.params)))
            hashes[spec.key] = np.zeros((0,) if words == 1 else (0, words), np.uint64)
    ids = np.asarray(task.ids, dtype=str)[np.asarray(keep, bool)] if task.ids else np.array([], dtype=str)
    return Chunk(
        index=task.index,
        start=task.start,
        ids=ids,
        images=np.stack(thumbs) if n else np.zeros((0, h, w, 3), np.uint8),
        hashes=hashes,
        sizes=np.array(sizes, dtype=np.int64).reshape(n, 2),
        modes=np.array(modes, dtype=str),
        digests=np.stack(digests) if n else np.zeros((0, 32), np.uint8),
        keep=np.asarray(keep, dtype=bool),
        skipped=tuple(skipped),
    )


# --------------------------------------------------------------------------- listing


def _column(values: list[Any]) -> np.ndarray:
    """Numbers stay numbers where every value parses; otherwise strings (as load_folder)."""
    for cast in (int, float):
        try:
            if cast is int and any(isinstance(v, float) for v in values):
                continue
            return np.array([cast(v) for v in values])
        except (TypeError, ValueError):
            pass
    return np.array(["" if v is None else str(v) for v in values])


def _labels(raw: list[Any], class_names: Sequence[str] | None, where: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Integer labels from ints / digit strings (indices) or class-name strings."""
    if not raw:
        return np.zeros(0, np.int64), tuple(class_names) if class_names is not None else None
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) or (isinstance(v, str) and v.lstrip("-").isdigit())
           for v in raw):
        labels = np.array([int(v) for v in raw], dtype=np.int64)
        if class_names is not None and labels.size and labels.max() >= len(class_names):
            raise fail(f"labels in {where}", int(labels.max()), f"< {len(class_names)} (the number of class_names)")
        return labels, tuple(class_names) if class_names is not None else None
    names = list(class_names) if class_names is not None else sorted({str(v) for v in raw})
    unknown = sorted({str(v) for v in raw} - set(names))
    if unknown:
        raise fail(f"labels in {where}", unknown[:5], f"one of class_names {names}")
    index = {c: i for i, c in enumerate(names)}
    return np.array([index[str(v)] for v in raw], dtype=np.int64), tuple(names)


@dataclass
class _Listing:
    ids: list[str] = field(default_factory=list)
    locators: list[tuple[Any, ...]] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # path -> "size:mtime" for the listing fingerprint


def _read_table(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            return [dict(r) for r in csv.DictReader(fh)]
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(dict(json.loads(line)))
                except (json.JSONDecodeError, TypeError, ValueError) as exc:
                    raise ValueError(f"line {i} of {path} == {line.strip()[:60]!r}; must be a JSON object ({exc}).") from exc
    return rows


def _classes_txt(path: Path) -> list[str] | None:
    """The class names a ``classes.txt`` lists (one per line, in label order), or None without one."""
    if not path.is_file():
        return None
    names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not names:
        raise fail(str(path), "no class names", "one class name per line", "Fill the file or remove it.")
    repeats = sorted({c for c in names if names.count(c) > 1})
    if repeats:
        raise fail(str(path), f"{repeats[:5]} listed twice", "each class name once", "Remove the repeats.")
    return names


def _list_folder(root: Path, metadata: Path | None, class_names: Sequence[str] | None) -> tuple[_Listing, tuple[str, ...] | None]:
    table = metadata if metadata is not None else next(
        (root / f for f in ("metadata.csv", "metadata.jsonl") if (root / f).is_file()), None)
    out = _Listing()
    if table is None:
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not subdirs:
            raise fail("root", str(root), "a folder of class subfolders, or a flat folder with metadata.csv or "
                       "metadata.jsonl")
        names = list(class_names) if class_names is not None else [d.name for d in subdirs]
        for d in subdirs:
            if d.name not in names:
                raise fail("class folder", d.name, f"one of class_names {names}")
            for f in sorted(d.iterdir()):
                if f.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS:
                    out.ids.append(f"{d.name}/{f.name}")
                    out.locators.append(("file", str(f)))
                    out.labels.append(names.index(d.name))
                    out.rows.append({"file": f"{d.name}/{f.name}"})
        return out, tuple(names)
    if not table.is_file():
        raise fail("metadata", str(table), "an existing metadata file", error=FileNotFoundError)
    rows = _read_table(table)
    if not rows or "file" not in rows[0]:
        raise fail("metadata", str(table), "a table with a 'file' column (and optionally 'label', 'id', ...)",
                   f"Found columns {sorted(rows[0]) if rows else '(no rows)'}.")
    columns = list(rows[0])
    for i, r in enumerate(rows):
        if set(r) != set(columns) or any(v is None for v in r.values()):
            raise fail(f"row {i + 1} of {table.name}", r, f"a value for every column {columns}", "Fill the missing values.")
    on_disk = {str(f.relative_to(root)) for f in root.rglob("*") if f.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS}
    listed = [str(r["file"]) for r in rows]
    missing = sorted(set(listed) - on_disk)
    if missing:
        raise fail(f"files listed in {table.name}", missing[:5], "image files present in the folder",
                   f"{len(missing)} rows name files that do not exist in {root}.", error=FileNotFoundError)
    unlisted = sorted(on_disk - set(listed))
    if unlisted:
        raise fail(f"rows of {table.name}", f"{len(unlisted)} images without a row, e.g. {unlisted[:5]}",
                   "one row per image file", "Add rows for them or move them out of the folder.")
    for r in rows:
        out.ids.append(str(r["id"]) if "id" in r else str(r["file"]))
        out.locators.append(("file", str(root / r["file"])))
        out.labels.append(r.get("label", -1))
        out.rows.append({k: v for k, v in r.items() if k not in ("label", "id")})
    return out, tuple(class_names) if class_names is not None else None


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the path up to the first dot of the base name."""
    base = name.rsplit("/", 1)
    head, tail = (base[0] + "/", base[1]) if len(base) == 2 else ("", base[0])
    if "." not in tail:
        return name, ""
    stem, ext = tail.split(".", 1)
    return head + stem, ext.lower()


def _list_shards(shards: Sequence[Path]) -> _Listing:
    out = _Listing()
    for shard in shards:
        samples: dict[str, dict[str, Any]] = {}
        order: list[str] = []
        try:
            with tarfile.open(shard, "r:") as tf:
                for m in tf:
                    if not m.isfile():
                        continue
                    key, ext = _split_member(m.name)
                    if key not in samples:
                        samples[key] = {}
                        order.append(key)
                    s = samples[key]
                    if ext in IMAGE_EXTENSIONS:
                        if "image" in s:
                            raise fail(f"sample {key!r} of shard {str(shard)!r}", f"images {s['image'][3]!r} and "
                                       f"{m.name!r}", "one image member per sample")
                        s["image"] = ("tar", str(shard), m.offset_data, m.size, m.name)
                    elif ext in ("json", "cls"):
                        fh = tf.extractfile(m)
                        raw = fh.read() if fh is not None else b""
                        if len(raw) != m.size:
                            raise tarfile.ReadError(f"member {m.name!r} is truncated")
                        if ext == "json":
                            try:
                                value = json.loads(raw.decode("utf-8"))
                            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                                raise ValueError(f"member {m.name!r} of shard {str(shard)!r} == unreadable; must be a "
                                                 f"JSON object ({exc}).") from exc
                            if not isinstance(value, dict):
                                raise fail(f"member {m.name!r} of shard {str(shard)!r}", value, "a JSON object")
                            s["json"] = value
                        else:
                            text = raw.decode("utf-8", "replace").strip()
                            if not text.lstrip("-").isdigit():
                                raise fail(f"member {m.name!r} of shard {str(shard)!r}", text, "an integer label")
                            s["cls"] = int(text)
        except tarfile.TarError as exc:
            raise ValueError(f"shard {str(shard)!r} == unreadable tar ({type(exc).__name__}: {exc}); must be a "
                             "complete tar file. Re-create the shard.") from exc
        end = shard.stat().st_size
        for key in order:
            s = samples[key]
            if "image" not in s:
                raise fail(f"sample {key!r} of shard {str(shard)!r}", sorted(k for k in s), "a sample with an image "
                           f"member (.{', .'.join(IMAGE_EXTENSIONS)})", "Add the image or remove the sample's members.")
            loc = s["image"]
            if loc[2] + loc[3] > end:
                raise ValueError(f"member {loc[4]!r} of shard {str(shard)!r} == cut off at byte {end}; must be "
                                 "complete. The shard is truncated: re-create it.")
            meta = dict(s.get("json", {}))
            label = meta.pop("label", meta.pop("cls", s.get("cls", -1)))
            out.ids.append(str(meta.pop("id", f"{shard.stem}/{key}")))
            out.locators.append(loc)
            out.labels.append(label)
            out.rows.append(meta)
    return out


def _image_column(schema: Any, path: Path, wanted: str | None) -> str:
    import pyarrow as pa

    names = list(schema.names)
    if wanted is not None:
        if wanted not in names:
            raise fail("image_column", wanted, f"a column of {str(path)!r} (columns: {', '.join(names)})", error=KeyError)
        return wanted

    def is_bytes(t: Any) -> bool:
        return (pa.types.is_binary(t) or pa.types.is_large_binary(t)) or (
            pa.types.is_struct(t) and any(t.field(i).name == "bytes" for i in range(t.num_fields)))

    for c in _IMAGE_COLUMNS:
        if c in names and is_bytes(schema.field(c).type):
            return c
    binary = [n for n in names if is_bytes(schema.field(n).type)]
    if len(binary) == 1:
        return binary[0]
    raise fail(f"image column of {str(path)!r}", f"columns {names}", "one column of image bytes (binary, or a struct "
               "with a 'bytes' field)", "Pass image_column= naming it.", error=KeyError)


def _parquet_class_names(files: Sequence[Path]) -> list[str] | None:
    """Class names stored in the schema metadata (``class_names``, as :func:`write_parquet` writes)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(files[0]).metadata or {}
    raw = meta.get(b"class_names")
    if raw is None:
        return None
    try:
        names = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return [str(c) for c in names] if isinstance(names, list) else None


def _list_parquet(files: Sequence[Path], image_column: str | None) -> tuple[_Listing, str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - the extra is installed in CI
        raise ImportError("Parquet sources need pyarrow: pip install 'replicate-testsets[parquet]'") from exc
    out = _Listing()
    col = None
    for path in files:
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for non-Parquet files
            raise ValueError(f"file {str(path)!r} == unreadable Parquet ({type(exc).__name__}: {exc}); must be a "
                             "Parquet file.") from exc
        this = _image_column(pf.schema_arrow, path, image_column)
        if col is not None and this != col:
            raise fail(f"image column of {str(path)!r}", this, f"{col!r} as in the first file")
        col = this
        others = [n for n in pf.schema_arrow.names if n != col]
        for g in range(pf.num_row_groups):
            rg = pf.read_row_group(g, columns=others).to_pylist() if others else [{}] * pf.metadata.row_group(g).num_rows
            for r, row in enumerate(rg):
                meta = dict(row)
                label = meta.pop("label", -1)
                out.ids.append(str(meta.pop("id", f"{path.stem}/{len(out.ids)}")))
                out.locators.append(("parquet", str(path), g, r))
                out.labels.append(-1 if label is None else label)
                out.rows.append(meta)
    if col is None:
        raise fail("files", list(files), "at least one Parquet file")
    return out, col


# --------------------------------------------------------------------------- the source


class ImageSource:
    """A candidate pool read chunk by chunk: ids, labels and metadata listed, images decoded on demand.

    Open one with :func:`open_source` (or the ``from_*`` constructors). Chunks come in
    listing order (sorted file names; shards in name order, samples in tar order;
    Parquet files, row groups and rows in order), each holding at most ``chunk_size``
    listed images.
    """

    def __init__(
        self,
        kind: SourceKind,
        paths: Sequence[Path],
        listing: _Listing,
        class_names: tuple[str, ...] | None,
        *,
        name: str,
        policy: DecodePolicy,
        chunk_size: int,
        on_error: OnError,
        image_column: str | None = None,
    ) -> None:
        self.kind = kind
        self.paths = [Path(p) for p in paths]
        self.name = str(name)
        self.policy = policy
        self.chunk_size = check_int("chunk_size", chunk_size, minimum=1)
        self.on_error: OnError = check_choice("on_error", on_error, ("raise", "skip"))  # type: ignore[assignment]
        self.image_column = image_column
        where = f"{kind} source {self.name!r}"
        labels, names = _labels(listing.labels, class_names, where)
        if names is None:
            names = tuple(str(i) for i in range(int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0))
        self.labels: np.ndarray = labels
        self.class_names: tuple[str, ...] = names
        self.ids: np.ndarray = np.array(listing.ids, dtype=str)
        if len(self.ids) == 0:
            raise fail("source", str(self.paths[0]) if self.paths else name, "a pool holding at least one image",
                       error=FileNotFoundError)
        uniq, counts = np.unique(self.ids, return_counts=True)
        if len(uniq) != len(self.ids):
            raise fail(f"ids of {where}", f"{len(self.ids) - len(uniq)} repeats, e.g. {uniq[counts > 1][:3].tolist()}",
                       "unique", "Give each image its own id (an 'id' field or column).")
        self._locators = listing.locators
        columns: list[str] = []
        for r in listing.rows:
            columns += [c for c in r if c not in columns]
        meta: dict[str, np.ndarray] = {}
        for c in columns:
            missing = [i for i, r in enumerate(listing.rows) if c not in r]
            if missing:
                raise fail(f"metadata field {c!r} of {where}", f"missing for {len(missing)} images, e.g. "
                           f"{self.ids[missing[:3]].tolist()}", "present for every image", "Add the field to every "
                           "sample (an empty string where there is no value).")
            meta[c] = _column([r[c] for r in listing.rows])
        self.metadata: dict[str, np.ndarray] = meta
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_folder(cls, root: str | os.PathLike[str], *, metadata: str | os.PathLike[str] | None = None,
                    class_names: Sequence[str] | None = None, name: str | None = None, **kwargs: Any) -> ImageSource:
        """An image folder tree: ``root/<class>/<file>`` or flat with ``metadata.csv``/``.jsonl``.

        Class names (in label order) come from ``class_names``, else a ``classes.txt`` (one
        per line) in ``root``, else the class folders (sorted) or the string labels (sorted:
        only the classes present) or ``"0".."K-1"`` for integer labels.
        """
        root = Path(root)
        if not root.is_dir():
            raise fail("root", str(root), "an existing directory", error=NotADirectoryError)
        if class_names is None:
            class_names = _classes_txt(root / "classes.txt")
        listing, names = _list_folder(root, Path(metadata) if metadata is not None else None, class_names)
        return cls("folder", [root], listing, names, name=name or root.name, **_options(kwargs))

    @classmethod
    def from_shards(cls, shards: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                    class_names: Sequence[str] | None = None, name: str | None = None, **kwargs: Any) -> ImageSource:
        """WebDataset tar shards: a directory of ``*.tar`` (name order) or a list of shard paths.

        Class names come from ``class_names``, else a ``classes.txt`` (one per line) beside
        the shards, else string labels (sorted) or ``"0".."K-1"``.
        """
        paths = _expand(shards, ".tar", "shards")
        if class_names is None:
            class_names = _classes_txt(paths[0].parent / "classes.txt")
        listing = _list_shards(paths)
        default = paths[0].parent.name if len(paths) > 1 else paths[0].stem
        return cls("webdataset", paths, listing, tuple(class_names) if class_names else None,
                   name=name or default, **_options(kwargs))

    @classmethod
    def from_parquet(cls, files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                     image_column: str | None = None, class_names: Sequence[str] | None = None,
                     name: str | None = None, **kwargs: Any) -> ImageSource:
        """Parquet files (a directory of ``*.parquet`` or a list) with an image-bytes column.

        Class names come from ``class_names``, else the schema metadata key ``class_names``
        (a JSON list), else string labels (sorted) or ``"0".."K-1"``.
        """
        paths = _expand(files, ".parquet", "files")
        listing, col = _list_parquet(paths, image_column)
        if class_names is None:
            class_names = _parquet_class_names(paths)
        default = paths[0].parent.name if len(paths) > 1 else paths[0].stem
        return cls("parquet", paths, listing, tuple(class_names) if class_names else None,
                   name=name or default, image_column=col, **_options(kwargs))

    # ------------------------------------------------------------------ basics

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"ImageSource(kind={self.kind!r}, name={self.name!r}, n={len(self)}, chunks={self.n_chunks}, "
                f"thumbnail={self.policy.size[0]}x{self.policy.size[1]}, columns={list(self.metadata)})")

    @property
    def columns(self) -> list[str]:
        """Names of the metadata columns."""
        return list(self.metadata)

    @property
    def n_chunks(self) -> int:
        return -(-len(self) // self.chunk_size)

    def with_options(self, **options: Any) -> ImageSource:
        """A copy with another ``policy``, ``chunk_size`` or ``on_error`` (the listing is shared)."""
        out = object.__new__(ImageSource)
        out.__dict__.update(self.__dict__)
        opts = _options({"policy": self.policy, "chunk_size": self.chunk_size, "on_error": self.on_error, **options})
        out.policy = opts["policy"]
        out.chunk_size = check_int("chunk_size", opts["chunk_size"], minimum=1)
        out.on_error = check_choice("on_error", opts["on_error"], ("raise", "skip"))  # type: ignore[assignment]
        out._fingerprint = self._fingerprint
        return out

    def select(self, positions: Sequence[int] | np.ndarray, *, name: str | None = None) -> ImageSource:
        """The source restricted to the images at listing ``positions`` (in that order)."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if pos.size == 0:
            raise fail("positions", [], "at least one position")
        if pos.min() < 0 or pos.max() >= len(self):
            raise fail("positions", f"range [{pos.min()}, {pos.max()}]", f"in [0, {len(self) - 1}]")
        out = object.__new__(ImageSource)
        out.__dict__.update(self.__dict__)
        out.ids = self.ids[pos]
        if len(np.unique(out.ids)) != len(out.ids):
            raise fail("positions", "repeated positions", "each position at most once")
        out.labels = self.labels[pos]
        out.metadata = {k: v[pos] for k, v in self.metadata.items()}
        out._locators = [self._locators[i] for i in pos.tolist()]
        out.name = name or self.name
        out._fingerprint = None
        return out

    def metadata_set(self) -> Any:
        """An :class:`~replicate.ImageSet` of the listing only (labels, ids, metadata; 1x1 blank images).

        What keyword counting and sampling need; the pixels are a zero-stride view (no memory).
        """
        from replicate.imageset import ImageSet

        blank = np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (len(self), 1, 1, 3))
        return ImageSet(blank, self.labels, self.class_names, self.ids, self.metadata, name=self.name,
                        info={"source": self.source_info()}, _validate=False)

    # ------------------------------------------------------------------ chunks

    def tasks(self, hashes: Any = None, *, positions: np.ndarray | None = None) -> list[ChunkTask]:
        """The chunk tasks, in order (``positions``: only chunks holding those listing positions)."""
        specs = _as_specs(hashes)
        wanted = None
        if positions is not None:
            wanted = np.unique(np.asarray(positions, dtype=np.int64) // self.chunk_size)
        out = []
        for c in range(self.n_chunks) if wanted is None else wanted.tolist():
            a, b = c * self.chunk_size, min((c + 1) * self.chunk_size, len(self))
            out.append(ChunkTask(c, a, tuple(self.ids[a:b].tolist()), tuple(self._locators[a:b]), self.policy, specs,
                                 self.on_error, self.image_column))
        return out

    def chunks(self, hashes: Any = None, *, workers: int | None = None,
               positions: np.ndarray | None = None, executor: Any = None) -> Iterator[Chunk]:
        """Decoded chunks in order; ``hashes`` names the perceptual hashes to compute
        (method names or :class:`HashSpec`); ``workers > 1`` decodes on a process pool with at
        most ``2 * workers`` chunks in flight (memory stays bounded by the chunk size);
        ``executor`` (a :class:`replicate.distributed.DaskExecutor`) decodes on its cluster."""
        yield from self._decode(self.tasks(hashes, positions=positions), workers, executor)

    def _decode(self, tasks: list[ChunkTask], workers: int | None, executor: Any) -> Iterator[Chunk]:
        """``read_chunk`` of each task, in order, here, on a process pool or on ``executor``."""
        if executor is not None:
            yield from executor.imap(read_chunk, tasks)
            return
        workers = 1 if workers is None else check_int("workers", workers, minimum=1)
        if workers == 1 or len(tasks) == 1:
            for t in tasks:
                yield read_chunk(t)
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as ex:
            pending = []
            it = iter(tasks)
            for t in it:
                pending.append(ex.submit(read_chunk, t))
                if len(pending) >= 2 * workers:
                    break
            while pending:
                done = pending.pop(0)
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(ex.submit(read_chunk, nxt))
                yield done.result()

    # ------------------------------------------------------------------ identity

    def source_info(self) -> list[dict[str, Any]]:
        return [{"path": str(p), "loader": f"source:{self.kind}"} for p in self.paths]

    @property
    def listing_fingerprint(self) -> str:
        """sha256 over the listing (ids, labels, class names, metadata, where each image is) and the policy."""
        from replicate.imageset import _canonical_bytes

        d = hashlib.sha256(b"replicate-source-listing-v1")
        d.update(json.dumps([self.kind, list(self.class_names), self.policy.to_dict()]).encode())
        d.update(_canonical_bytes(self.ids))
        d.update(_canonical_bytes(self.labels))
        for key in sorted(self.metadata):
            d.update(json.dumps([key, self.metadata[key].dtype.kind]).encode())
            d.update(_canonical_bytes(self.metadata[key]))
        return d.hexdigest()

    @property
    def fingerprint(self) -> str:
        """sha256 over the listing and the sha256 of every image's encoded bytes (reads every byte once)."""
        if self._fingerprint is None:
            d = hashlib.sha256(b"replicate-source-v1")
            d.update(self.listing_fingerprint.encode())
            handles: dict[Any, Any] = {}
            try:
                for i, loc in enumerate(self._locators):
                    try:
                        data, _ = _read_bytes(loc, handles, self.image_column)
                    except (ValueError, OSError) as exc:
                        if self.on_error != "skip":
                            raise
                        data = f"unreadable:{self.ids[i]}:{type(exc).__name__}".encode()
                    d.update(hashlib.sha256(data).digest())
            finally:
                for h in handles.values():
                    if hasattr(h, "close"):
                        h.close()
            self._fingerprint = d.hexdigest()
        return self._fingerprint

    def manifest(self, *, content: bool = True, skipped: Sequence[tuple[str, str, str]] | None = None) -> dict[str, Any]:
        """A manifest of the source: fingerprint (``content=False``: the listing's only), files'
        sha256, policy, counts, and the images skipped under ``on_error="skip"`` when given."""
        from replicate.manifest import make_manifest, sha256_file

        files = {}
        for p in self.paths:
            if p.is_file():
                files[str(p)] = sha256_file(p)
        extra: dict[str, Any] = {"n": len(self), "source_kind": self.kind, "policy": self.policy.to_dict(),
                                 "chunk_size": self.chunk_size, "on_error": self.on_error,
                                 "listing_fingerprint": self.listing_fingerprint}
        if skipped is not None:
            extra["skipped"] = {"n": len(skipped), "images": [list(s) for s in skipped]}
        return make_manifest(kind="image-source", fingerprint=self.fingerprint if content else None, files=files,
                             sources=self.source_info(), extra=extra)

    # ------------------------------------------------------------------ materialise

    def materialise(self, positions: Sequence[int] | np.ndarray | None = None, *, name: str | None = None,
                    workers: int | None = None, executor: Any = None) -> Any:
        """Decode the images (all, or those at listing ``positions``, in that order) into an ImageSet.

        Pixels are the canonical thumbnails; labels, ids and metadata as listed
        (:meth:`materialise_with_provenance` adds the original size, mode and bytes sha256).
        Images skipped under ``on_error="skip"`` are left out and listed in
        ``info["skipped"]``.
        """
        return self._materialise(positions, name=name, workers=workers, provenance=False, executor=executor)

    def materialise_with_provenance(self, positions: Any = None, *, name: str | None = None,
                                    workers: int | None = None) -> Any:
        """:meth:`materialise` plus the ``source_*`` columns (original size, mode, bytes sha256)."""
        return self._materialise(positions, name=name, workers=workers, provenance=True)

    def _materialise(self, positions: Any, *, name: str | None, workers: int | None, provenance: bool,
                     executor: Any = None) -> Any:
        from replicate.imageset import ImageSet

        if positions is None:
            pos = np.arange(len(self))
        else:
            pos = np.asarray(positions, dtype=np.int64).reshape(-1)
            if pos.size and (pos.min() < 0 or pos.max() >= len(self)):
                raise fail("positions", f"range [{pos.min()}, {pos.max()}]", f"in [0, {len(self) - 1}]")
        h, w = self.policy.size
        images = np.zeros((len(pos), h, w, 3), np.uint8)
        found = np.zeros(len(pos), bool)
        sizes = np.zeros((len(pos), 2), np.int64)
        modes = np.full(len(pos), "", dtype=object)
        digests = np.zeros((len(pos), 32), np.uint8)
        skipped: list[tuple[str, str, str]] = []
        # Only the wanted images are decoded: tasks of up to chunk_size of them, in listing
        # order (a chunk of the listing would decode every image of it; a 2,000-image sample of
        # a 10^6 pool touched 489 chunks, 2x10^6 images). Each decoded row is written to every
        # slot of ``pos`` that asks for its listing position (positions may repeat).
        uniq = np.unique(pos)
        groups = [uniq[a : a + self.chunk_size] for a in range(0, len(uniq), self.chunk_size)]
        tasks = [ChunkTask(i, int(g[0]), tuple(self.ids[g].tolist()), tuple(self._locators[j] for j in g.tolist()),
                           self.policy, (), self.on_error, self.image_column) for i, g in enumerate(groups)]
        order = np.argsort(pos, kind="stable")
        spos = pos[order]
        for g, chunk in zip(groups, self._decode(tasks, workers, executor)):
            skipped += chunk.skipped
            for k, p in enumerate(g[chunk.keep].tolist()):
                lo, hi = np.searchsorted(spos, [p, p + 1])
                for t in order[lo:hi].tolist():
                    images[t], sizes[t], modes[t], digests[t], found[t] = (chunk.images[k], chunk.sizes[k],
                                                                           chunk.modes[k], chunk.digests[k], True)
        keep = pos[found]
        meta = {k: v[keep] for k, v in self.metadata.items()}
        if provenance:
            meta.update(source_width=sizes[found, 0], source_height=sizes[found, 1],
                        source_mode=modes[found].astype(str),
                        source_sha256=np.array([bytes(r).hex() for r in digests[found]], dtype=str))
        info: dict[str, Any] = {"source": self.source_info(), "policy": self.policy.to_dict()}
        if skipped:
            info["skipped"] = [list(s) for s in skipped if s[0] in set(self.ids[pos].tolist())]
        return ImageSet(images[found], self.labels[keep], self.class_names, self.ids[keep], meta,
                        name=name or self.name, info=info)

    materialize = materialise


def _options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    allowed = ("policy", "chunk_size", "on_error")
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        check_choice("keyword argument", unknown[0], allowed)
    policy = kwargs.get("policy", DecodePolicy())
    if isinstance(policy, Mapping):
        policy = DecodePolicy.from_dict(policy)
    if not isinstance(policy, DecodePolicy):
        raise fail("policy", policy, "a DecodePolicy or a mapping of its fields", error=TypeError)
    return {"policy": policy, "chunk_size": kwargs.get("chunk_size", 4096), "on_error": kwargs.get("on_error", "raise")}


def _expand(paths: Any, suffix: str, name: str) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix == suffix)
            if not found:
                raise fail(name, str(p), f"a directory holding {suffix} files, or a list of them",
                           error=FileNotFoundError)
            return found
        items = [p]
    else:
        items = [Path(x) for x in paths]
    if not items:
        raise fail(name, list(items), f"at least one {suffix} file")
    for p in items:
        if not p.is_file():
            raise fail(name, str(p), f"an existing {suffix} file", error=FileNotFoundError)
    return items


def detect_kind(path: str | os.PathLike[str]) -> SourceKind:
    """``"webdataset"`` for ``.tar`` files (or a folder of them), ``"parquet"`` for ``.parquet``,
    else ``"folder"``."""
    p = Path(path)
    if p.is_file():
        if p.suffix == ".tar":
            return "webdataset"
        if p.suffix == ".parquet":
            return "parquet"
        raise fail("path", str(p), "a .tar shard, a .parquet file, or a folder")
    if not p.is_dir():
        raise fail("path", str(p), "an existing file or directory", error=FileNotFoundError)
    suffixes = {f.suffix for f in p.iterdir() if f.is_file()}
    if ".tar" in suffixes:
        return "webdataset"
    if ".parquet" in suffixes:
        return "parquet"
    return "folder"


def open_source(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                kind: SourceKind | None = None, **kwargs: Any) -> ImageSource:
    """Open a pool as an :class:`ImageSource`: tar shards, Parquet files or an image folder.

    ``kind`` is detected from the path unless given; other keyword arguments go to the
    ``from_*`` constructor (``policy``, ``chunk_size``, ``on_error``, ``class_names``,
    ``name``; ``metadata`` for folders, ``image_column`` for Parquet).
    """
    if kind is None:
        first = path if isinstance(path, (str, os.PathLike)) else next(iter(path), None)
        if first is None:
            raise fail("path", path, "a path or a non-empty list of paths")
        kind = detect_kind(first)
    kind = check_choice("kind", kind, ("folder", "webdataset", "parquet"))  # type: ignore[assignment]
    if kind == "folder":
        return ImageSource.from_folder(path, **kwargs)  # type: ignore[arg-type]
    if kind == "webdataset":
        return ImageSource.from_shards(path, **kwargs)
    return ImageSource.from_parquet(path, **kwargs)


def write_shards(imageset: Any, directory: str | os.PathLike[str], *, shard_size: int = 10_000,
                 format: Literal["png", "jpg"] = "png", quality: int = 95, prefix: str = "shard") -> list[Path]:
    """Write an ImageSet as WebDataset tar shards (``<key>.<format>`` + ``<key>.json``).

    The JSON member holds ``id``, ``label`` (when labelled) and every 1-D metadata column;
    ``classes.txt`` lists the class names. For tests, benchmarks and exporting pools.

    Parameters
    ----------
    imageset
        the :class:`~replicate.imageset.ImageSet` to write.
    directory
        where the shards go (created when missing).
    shard_size
        images per shard (at least 1).
    format
        ``"png"`` (lossless) or ``"jpg"``.
    quality
        JPEG quality (``format="jpg"`` only).
    prefix
        shard file names are ``<prefix>-000000.tar``, ...

    Returns
    -------
    list of Path
        the shard files written.
    """
    from PIL import Image

    fmt = check_choice("format", format, ("png", "jpg"))
    shard_size = check_int("shard_size", shard_size, minimum=1)
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = [k for k, v in imageset.metadata.items() if v.ndim == 1]
    (out_dir / "classes.txt").write_text("".join(f"{c}\n" for c in imageset.class_names), encoding="utf-8")
    paths = []
    n = len(imageset)
    for s, start in enumerate(range(0, n, shard_size)):
        path = out_dir / f"{prefix}-{s:06d}.tar"
        with tarfile.open(path, "w") as tf:
            for i in range(start, min(start + shard_size, n)):
                key = f"{i:09d}"
                buf = io.BytesIO()
                im = imageset.images[i]
                pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im)
                if fmt == "jpg":
                    pil.save(buf, format="JPEG", quality=quality)
                else:
                    pil.save(buf, format="PNG")
                meta: dict[str, Any] = {"id": str(imageset.ids[i])}
                if imageset.labels[i] >= 0:
                    meta["label"] = int(imageset.labels[i])
                meta.update({k: imageset.metadata[k][i].item() for k in cols})
                for ext, data in ((fmt, buf.getvalue()), ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def write_parquet(imageset: Any, path: str | os.PathLike[str], *, row_group_size: int = 4096,
                  format: Literal["png", "jpg"] = "png", quality: int = 95) -> Path:
    """Write an ImageSet as one Parquet file: ``image`` (encoded bytes), ``id``, ``label``, 1-D columns.

    Parameters
    ----------
    imageset
        the :class:`~replicate.imageset.ImageSet` to write.
    path
        the Parquet file (its directory is created when missing).
    row_group_size
        rows per Parquet row group.
    format
        ``"png"`` (lossless) or ``"jpg"``.
    quality
        JPEG quality (``format="jpg"`` only).

    Returns
    -------
    Path
        the file written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    fmt = check_choice("format", format, ("png", "jpg"))
    blobs = []
    for im in imageset.images:
        buf = io.BytesIO()
        pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im)
        pil.save(buf, format="JPEG" if fmt == "jpg" else "PNG", **({"quality": quality} if fmt == "jpg" else {}))
        blobs.append(buf.getvalue())
    data: dict[str, Any] = {"image": pa.array(blobs, pa.binary()), "id": pa.array(imageset.ids.tolist())}
    data["label"] = pa.array(imageset.labels.tolist(), pa.int64())
    for k, v in imageset.metadata.items():
        if v.ndim == 1:
            data[k] = pa.array(v.tolist())
    table = pa.table(data).replace_schema_metadata({"class_names": json.dumps(list(imageset.class_names))})
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, p, row_group_size=row_group_size)
    return p
