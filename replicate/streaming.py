"""Pool stages over an :class:`~replicate.sources.ImageSource`, one chunk at a time.

Every stage is a pure function of one decoded chunk plus a merge, so a distributed
engine can map the per-chunk functions over a pool and merge on the driver:

* hashing: :func:`~replicate.sources.read_chunk` hashes each image at its own size
  (imagehash-exact); :func:`merge_hashes` joins the chunks into
  :class:`~replicate.hashing.Hashes`;
* near-duplicates against the original sets: :func:`prepare_references` once (the
  reference index), then :func:`dedup_chunk` per chunk (the existing
  :func:`replicate.dedup.candidate_pairs` on the chunk's thumbnails: every signal, the
  hashes too, compares thumbnails with references of the same size), and
  :func:`merge_dedup` (:func:`replicate.dedup.decide` on the joined candidate table);
* duplicates within the pool: the chunk signatures are spilled to disk
  (memory-mapped), and each chunk is searched against all of them with the Hamming
  index and the blocked exact kNN of :func:`~replicate.dedup.candidate_pairs` (never an
  all-pairs matrix in memory);
* keyword counts: :func:`keyword_chunk` counts (class, keyword) cells, :func:`merge_keywords`
  sums them into :class:`~replicate.keywords.KeywordCounts`;
* sampling: :func:`sample_source` draws from the listing (ids, labels, keywords; no
  pixels) with :func:`replicate.sampling.sample`, then materialises only the chosen images.

:func:`scan_pool` runs hashing, near-duplicates and keyword counts in one pass over the
source. Memory is bounded by the chunks in flight plus the reference index (and the
pool's listing: ids, labels and metadata). On the same images the results equal the
in-memory path's (``tests/test_streaming.py`` checks it on the real pool).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from replicate._validation import fail
from replicate.imageset import ImageSet
from replicate.sources import Chunk, HashSpec, ImageSource

__all__ = [
    "PoolScan",
    "scan_pool",
    "merge_hashes",
    "prepare_references",
    "dedup_chunk",
    "merge_dedup",
    "keyword_chunk",
    "merge_keywords",
    "sample_source",
    "source_hashes",
]


def _return_free_heap() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; elsewhere nothing).

    A long scan allocates and frees the same large buffers chunk after chunk from several
    threads (torch's and numba's kernels, the unpickling of decoded chunks). glibc keeps
    what they free in per-thread arenas and, having raised its mmap threshold after the first
    large free, serves later large buffers from those arenas too, so the resident memory of
    the 10^6-image benchmark grew with the pool (3.6 GB) though what the scan holds is the
    reference index and a few KB per flagged pair. Trimming after each chunk keeps the
    resident memory at what is live (docs/sources.md, memory model)."""
    libc = _glibc()
    if libc:
        libc[0](0)


def _glibc() -> Any:
    """glibc's ``(malloc_trim, mallopt)``, loaded once; ``False`` without glibc."""
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        try:
            import ctypes
            import ctypes.util

            name = ctypes.util.find_library("c")
            lib = ctypes.CDLL(name) if name else None
            trim, opt = getattr(lib, "malloc_trim", None), getattr(lib, "mallopt", None)
            if trim is not None and opt is not None:
                trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
                opt.argtypes, opt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                _LIBC = (trim, opt)
        except OSError:  # no C library to load: nothing to trim or set
            pass
    return _LIBC


_LIBC: Any = None

# glibc's malloc parameters (malloc.h) and the environment variables that set them. Setting
# any of them turns glibc's dynamic mmap threshold off for the whole process.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": "trim_threshold", "MALLOC_TOP_PAD_": "top_pad",
               "MALLOC_MMAP_THRESHOLD_": "mmap_threshold", "MALLOC_MMAP_MAX_": "mmap_max"}
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024  # glibc's initial mmap and trim thresholds
# where glibc's dynamic thresholds end on 64-bit systems (the mmap threshold rises to the
# size of the largest freed mmapped block, at most 32 MiB; the trim threshold to twice it)
_TASK_MMAP_THRESHOLD = 32 << 20
_TASK_TRIM_THRESHOLD = 64 << 20
_HEAP_LOCK = threading.Lock()
_HEAP_TASKS = 0


def _malloc_int(value: str) -> int | None:
    try:
        return int(value.strip(), 0)
    except ValueError:
        return None


def _fixed_malloc_settings() -> dict[str, int | None] | None:
    """The malloc parameters the environment fixed for this process (``MALLOC_*_``
    variables, ``glibc.malloc.*`` tunables; a value glibc would not parse is ``None``), or
    ``None`` where it fixed none (glibc's dynamic mmap threshold is then on)."""
    found: dict[str, int | None] = {}
    for tunable in os.environ.get("GLIBC_TUNABLES", "").split(":"):
        key, _, value = tunable.partition("=")
        if key.startswith("glibc.malloc.") and key.removeprefix("glibc.malloc.") in _MALLOC_ENV.values():
            found[key.removeprefix("glibc.malloc.")] = _malloc_int(value)
    for var, name in _MALLOC_ENV.items():
        if var in os.environ:
            found[name] = _malloc_int(os.environ[var])
    return found or None


def _mallopt() -> Any:
    """glibc's ``mallopt`` (``False`` without glibc)."""
    libc = _glibc()
    return libc[1] if libc else False


@contextmanager
def _task_heap() -> Iterator[None]:
    """Inside a cluster task, glibc's malloc keeps large freed buffers for reuse, as it does
    in a plain process; after the task, the free heap goes back to the system.

    A Dask nanny starts its worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (so that freed memory
    leaves the worker at once), and setting any malloc parameter turns off glibc's dynamic
    mmap threshold: every buffer over 128 KiB is then a fresh mmap whose pages fault in and
    are zeroed on first touch. The scan's kernels make many such temporaries per chunk, and a
    worker computed a chunk 25-30% slower than the same process without the variable
    (docs/scale.md). During a task the thresholds are set where glibc's dynamic ones end on
    64-bit systems (mmap 32 MiB, trim 64 MiB); when the worker's last running task ends the
    free heap is trimmed (``malloc_trim``) and the environment's settings are restored. Where
    the environment fixed nothing, or without glibc, nothing is changed."""
    global _HEAP_TASKS
    fixed = _fixed_malloc_settings()
    mallopt = _mallopt() if fixed is not None else None
    if not mallopt or fixed is None:
        yield
        return
    with _HEAP_LOCK:
        if _HEAP_TASKS == 0:
            mallopt(_M_MMAP_THRESHOLD, _TASK_MMAP_THRESHOLD)
            mallopt(_M_TRIM_THRESHOLD, _TASK_TRIM_THRESHOLD)
        _HEAP_TASKS += 1
    try:
        yield
    finally:
        with _HEAP_LOCK:
            _HEAP_TASKS -= 1
            if _HEAP_TASKS == 0:
                _return_free_heap()
                for param, name in ((_M_TRIM_THRESHOLD, "trim_threshold"), (_M_MMAP_THRESHOLD, "mmap_threshold")):
                    value = fixed.get(name)
                    mallopt(param, _GLIBC_DEFAULT_THRESHOLD if value is None else value)


def _check_source(source: Any) -> ImageSource:
    if not isinstance(source, ImageSource):
        raise fail("source", type(source).__name__, "an ImageSource", "Open one with replicate.open_source(path).",
                   error=TypeError)
    return source


def _stub(ids: np.ndarray, labels: np.ndarray, class_names: Sequence[str], name: str,
          metadata: Mapping[str, np.ndarray] | None = None, info: Mapping[str, Any] | None = None) -> ImageSet:
    """An image set of ids, labels and metadata whose pixels are a zero-stride 1x1 view."""
    blank = np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (len(ids), 1, 1, 3))
    return ImageSet(blank, labels, tuple(class_names), ids, dict(metadata or {}), name=name, info=info,
                    _validate=False)


# --------------------------------------------------------------------------- hashing


def merge_hashes(chunks: Iterable[tuple[np.ndarray, np.ndarray]], spec: HashSpec) -> Any:
    """:class:`~replicate.hashing.Hashes` from per-chunk ``(ids, packed values)`` in chunk order."""
    from replicate.hashing import Hashes, _resolve

    _, full = _resolve(spec.method, spec.hash_size, dict(spec.params))
    parts = list(chunks)
    ids = np.concatenate([p[0] for p in parts]) if parts else np.array([], dtype=str)
    values = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.uint64)
    return Hashes(values, ids, spec.method, full)


def source_hashes(source: ImageSource, method: str = "phash", *, hash_size: int = 8, workers: int | None = None,
                  **params: Any) -> Any:
    """Perceptual hashes of every image of a source, bit-identical to imagehash on each decoded image."""
    spec = HashSpec(method, hash_size, tuple(sorted(params.items()))).check()
    parts = ((c.ids, c.hashes[spec.key]) for c in _check_source(source).chunks([spec], workers=workers))
    return merge_hashes(parts, spec)


# --------------------------------------------------------------------------- near-duplicates


def _dedup_config(config: Any, overrides: Mapping[str, Any]) -> Any:
    from replicate import dedup

    base = config if config is not None else dedup.DedupConfig()
    unknown = sorted(set(overrides) - set(dedup.DedupConfig.__dataclass_fields__))
    if unknown:
        from replicate._validation import check_choice

        check_choice("keyword argument", unknown[0], sorted(dedup.DedupConfig.__dataclass_fields__))
    return dedup._check_config(replace(base, **overrides))


def prepare_references(references: Any, config: Any, query_name: str, image_shape: tuple[int, int, int]) -> list[Any]:
    """The reference index: each original set prepared once (:func:`replicate.dedup.prepare`)."""
    from replicate import dedup

    probe = ImageSet(np.zeros((1, *image_shape), np.uint8), name=query_name, ids=[f"{query_name}/\x00probe"])
    refs = dedup._as_references(references, probe)
    return [dedup.prepare(s, config, name) for name, s in refs]


def _prepared_chunk(chunk: Chunk, config: Any, name: str) -> Any:
    """The chunk's signatures, all on its thumbnails (its hash signal too: the references are
    images of the thumbnail size, and both sides then go through the same resize)."""
    from replicate import dedup

    images = ImageSet(chunk.images, ids=chunk.ids, name=name, _validate=False)
    return dedup.prepare(images, config, name, searched=False)  # a query only: no pixel-search index


def _flagged_only(pairs: pd.DataFrame, config: Any, name: str) -> pd.DataFrame:
    """The rows of a candidate table that a rule flags (each rule reads its own row only: the
    ratio columns are computed per query inside :func:`replicate.dedup.candidate_pairs`)."""
    from replicate import dedup

    if not len(pairs):
        return pairs
    flagged, _ = dedup._flag_rules(pairs, config, within=pairs.reference_set.to_numpy(str) == name)
    return pairs[flagged].reset_index(drop=True)


def dedup_chunk(chunk: Chunk, references: Sequence[Any], config: Any, name: str, *,
                keep_pairs: str = "all") -> pd.DataFrame:
    """Candidate pairs of one chunk against the prepared references (chunk-local ``query_pos``);
    ``keep_pairs="flagged"`` keeps only the pairs a rule flags.

    Parameters
    ----------
    chunk
        the decoded chunk of the pool.
    references
        the prepared reference sets.
    config
        the dedup configuration.
    name
        the pool's name.
    keep_pairs
        ``"all"`` or ``"flagged"``.

    Returns
    -------
    pandas.DataFrame
        the chunk's candidate pairs.
    """
    from replicate import dedup

    if len(chunk) == 0 or not references:
        return dedup._empty_pairs(config)
    pairs = dedup.candidate_pairs(_prepared_chunk(chunk, config, name), references, config, offset=0)
    return _flagged_only(pairs, config, name) if keep_pairs == "flagged" else pairs


def merge_dedup(parts: Iterable[tuple[int, pd.DataFrame]], query: ImageSet, references: Mapping[str, ImageSet],
                config: Any, *, blacklist: Iterable[str] = (), blacklist_path: str | None = None,
                within: pd.DataFrame | None = None) -> Any:
    """:func:`replicate.dedup.decide` on the joined tables; ``parts`` are ``(offset, pairs)``
    with each chunk's first position among the decoded images; ``within`` the pairs inside the pool.

    Parameters
    ----------
    parts
        ``(offset, pairs)`` per chunk.
    query
        the decoded pool (the query set).
    references
        the reference sets by name.
    config
        the dedup configuration.
    blacklist, blacklist_path
        ids to drop, and the file they came from (recorded), as for ``decide``.
    within
        the pairs found inside the pool (``None``: none).

    Returns
    -------
    DedupResult
        as :func:`replicate.dedup.decide` returns it.
    """
    from replicate import dedup

    frames = []
    for offset, pairs in parts:
        if len(pairs):
            frames.append(pairs.assign(query_pos=pairs.query_pos.to_numpy(np.int64) + offset))
    if within is not None and len(within):
        frames.append(within)
    pairs = pd.concat(frames, ignore_index=True) if frames else dedup._empty_pairs(config)
    if config.within_query and len(pairs):
        # as find_near_duplicates: a pair inside the query found from both of its chunks keeps one row
        inside = pairs.reference_set == query.name
        dup = pairs[inside].duplicated(["query_pos", "reference_pos"])
        pairs = pairs.drop(index=pairs[inside].index[dup.to_numpy()]).reset_index(drop=True)
    return dedup.decide(pairs, query, dict(references), config, blacklist=list(blacklist),
                        blacklist_path=blacklist_path)


class _Spill:
    """The pool's prepared signatures on disk (memory-mapped), for the search within the pool."""

    def __init__(self, directory: Path, capacity: int) -> None:
        self.dir = directory
        self.capacity = capacity
        self.arrays: dict[str, np.memmap] = {}
        self.hashes: dict[str, list[np.ndarray]] = {}
        self.n = 0

    def _array(self, key: str, row: np.ndarray) -> np.memmap:
        if key not in self.arrays:
            self.arrays[key] = np.lib.format.open_memmap(self.dir / f"{key}.npy", mode="w+", dtype=row.dtype,
                                                         shape=(self.capacity, *row.shape[1:]))
        return self.arrays[key]

    def add(self, prepared: Any) -> None:
        n = len(prepared)
        if n == 0:
            return
        rows = {"images": prepared.images.images, "tiny": prepared.tiny, "aligned": prepared.aligned}
        for key in ("tiny_flipped", "coarse", "features", "descriptors"):
            if getattr(prepared, key) is not None:
                rows[key] = getattr(prepared, key)
        for key, value in rows.items():
            self._array(key, value)[self.n : self.n + n] = value
        for m, v in prepared.hashes.items():
            self.hashes.setdefault(m, []).append(v)
        self.n += n

    def prepared(self, ids: np.ndarray, name: str) -> Any:
        from replicate import dedup

        for a in self.arrays.values():
            a.flush()
        view = {k: v[: self.n] for k, v in self.arrays.items()}
        images = ImageSet(view["images"], ids=ids, name=name, _validate=False)
        return dedup.PreparedSet(
            name=name, images=images, hashes={m: np.concatenate(v) for m, v in self.hashes.items()},
            tiny=view["tiny"], tiny_flipped=view.get("tiny_flipped"), aligned=view["aligned"],
            features=view.get("features"), coarse=view.get("coarse"), descriptors=view.get("descriptors"))


# The within-pool pixel search prunes with an index of the whole pool while its projection
# (366 float32 values per 32x32x3 thumbnail, 1.5 KB) stays small in memory: up to 200,000
# images, about 290 MB. Larger pools keep the blocked every-pair search over the
# memory-mapped thumbnails, whose memory does not grow with the pool.
_WITHIN_INDEX_MAX = 200_000


def _within_pairs(spill: _Spill, ids: np.ndarray, config: Any, name: str, chunk_size: int,
                  keep_pairs: str) -> pd.DataFrame:
    from replicate import dedup
    from replicate.hamming import HammingIndex

    whole = spill.prepared(ids, name)
    frames = []
    if len(whole) < 2:
        return dedup._empty_pairs(config)
    # one multi-index table per hash over the whole pool, probed by every chunk: sub-linear
    # per query where a scan of every hash would make the hash signal quadratic in the pool
    index = {m: HammingIndex(whole.hashes[m]) for m in config.hash_radii}
    if config.l2_k and len(whole) <= _WITHIN_INDEX_MAX:  # the pruned pixel search's index, made once
        from replicate._l2 import l2_index

        whole = replace(whole, l2=l2_index(whole.images.images))
    for start in range(0, len(whole), chunk_size):
        stop = min(start + chunk_size, len(whole))
        part = dedup._slice_prepared(whole, start, stop)
        part = replace(part, images=ImageSet(np.ascontiguousarray(whole.images.images[start:stop]),
                                             ids=ids[start:stop], name=name, _validate=False))
        pairs = dedup.candidate_pairs(part, [], config, offset=start, within=whole, within_index=index)
        frames.append(_flagged_only(pairs, config, name) if keep_pairs == "flagged" else pairs)
    return pd.concat(frames, ignore_index=True) if frames else dedup._empty_pairs(config)


# --------------------------------------------------------------------------- keywords


def keyword_chunk(labels: np.ndarray, keywords: np.ndarray) -> dict[tuple[int, str], int]:
    """(label, keyword) -> count over one chunk's images."""
    labels = np.asarray(labels, np.int64)
    kws = np.asarray(keywords).astype(str)
    if len(labels) == 0:
        return {}
    frame = pd.DataFrame({"label": labels, "keyword": kws}).value_counts(sort=False)
    return {(int(a), str(b)): int(c) for (a, b), c in frame.items()}


def merge_keywords(parts: Iterable[Mapping[tuple[int, str], int]], class_names: Sequence[str], *, name: str,
                   column: str = "keyword", normalize: bool = False, separator: str | None = None) -> Any:
    """:class:`~replicate.keywords.KeywordCounts` from per-chunk cells, as
    :func:`replicate.keywords.keyword_counts` counts them on the whole set.

    Parameters
    ----------
    parts
        per chunk, ``{(label, keyword): count}``.
    class_names
        the pool's class names (labels index them).
    name
        the pool's name (in errors and the counts' source).
    column
        the metadata column the keywords came from.
    normalize
        normalize each keyword as :func:`replicate.keywords.normalize_keyword`.
    separator
        keep only the part of a keyword before this separator (``None``: the whole keyword).

    Returns
    -------
    KeywordCounts
    """
    from replicate.keywords import KeywordCounts, normalize_keyword

    cells: dict[tuple[int, str], int] = {}
    for part in parts:
        for key, count in part.items():
            cells[key] = cells.get(key, 0) + count
    unl = sum(c for (lab, _), c in cells.items() if lab < 0)
    if unl:
        raise fail(f"labels of {name!r}", f"{unl} of {sum(cells.values())} unlabelled (-1)",
                   "all labelled to count keywords per class", "Label the images first.")
    table: dict[str, dict[str, int]] = {c: {} for c in class_names}
    for (lab, kw) in sorted(cells, key=lambda k: (k[1], k[0])):
        shown = kw.split(separator)[0].strip() if separator else kw
        if normalize:
            shown = normalize_keyword(shown)
        row = table[class_names[lab]]
        row[shown] = row.get(shown, 0) + cells[(lab, kw)]
    n = sum(cells.values())
    return KeywordCounts.from_dict(
        table, classes=tuple(class_names), source=f"imageset:{name}:{column}",
        info={"imageset": name, "column": column, "normalize": normalize, "n_images": n})


# --------------------------------------------------------------------------- one chunk of the scan


@dataclass(frozen=True, eq=False)
class _ChunkScan:
    """What :func:`_scan_chunk` found in one chunk (small enough to send back to a driver)."""

    positions: np.ndarray
    ids: np.ndarray
    skipped: tuple[tuple[str, str, str], ...]
    hashes: dict[str, np.ndarray]
    pairs: pd.DataFrame | None
    prepared: Any
    keywords: dict[tuple[int, str], int] | None
    timings: dict[str, float]
    task: dict[str, Any] | None = None  # on a cluster: where and when it ran (see _scan_task)


def _chunk_keywords(kw_all: tuple[np.ndarray, np.ndarray] | None, start: int, n: int) -> Any:
    return None if kw_all is None else (kw_all[0][start:start + n], kw_all[1][start:start + n])


def _scan_chunk(chunk: Chunk, refs: Sequence[Any], cfg: Any, name: str, keep_specs: Sequence[HashSpec],
                keep_pairs: str, want_prepared: bool, kw: tuple[np.ndarray, np.ndarray] | None, *,
                decode: float) -> _ChunkScan:
    """The per-chunk work of :func:`scan_pool`: candidate pairs against the prepared
    references, the signatures for the search within the pool, the keyword cells (``kw``:
    labels and keywords of the chunk's listed images)."""
    from replicate import dedup as dd

    timings = {"decode": decode, "search": 0.0, "keywords": 0.0}
    pairs = prepared = None
    if cfg is not None and len(chunk):
        t = time.perf_counter()
        prepared = _prepared_chunk(chunk, cfg, name)
        if refs:
            pairs = dd.candidate_pairs(prepared, refs, cfg, offset=0)
            if keep_pairs == "flagged":
                pairs = _flagged_only(pairs, cfg, name)
        timings["search"] = time.perf_counter() - t
    counts = None
    if kw is not None:
        t = time.perf_counter()
        counts = keyword_chunk(kw[0][chunk.keep], kw[1][chunk.keep])
        timings["keywords"] = time.perf_counter() - t
    return _ChunkScan(chunk.positions, chunk.ids, chunk.skipped, {s.key: chunk.hashes[s.key] for s in keep_specs},
                      pairs, prepared if want_prepared else None, counts, timings)


def _scan_task(task_kw: tuple[Any, Any], *args: Any) -> _ChunkScan:
    """:func:`_scan_chunk` of one :class:`~replicate.sources.ChunkTask` (decoded here): a cluster task."""
    from replicate.sources import read_chunk

    start = time.time()
    with _task_threads(), _task_heap():
        t = time.perf_counter()
        task, kw = task_kw
        chunk = read_chunk(task)
        refs, cfg, name, keep_specs, keep_pairs, want_prepared = args
        out = _scan_chunk(chunk, refs, cfg, name, keep_specs, keep_pairs, want_prepared, kw,
                          decode=time.perf_counter() - t)
        record = _task_record(task.index, start)
    return replace(out, task={**record, "result_bytes": _result_bytes(out)})


@contextmanager
def _task_threads() -> Iterator[None]:
    """Inside a cluster task numba's kernels (and the hash / Hamming thread pools sized by
    numba's count) use as many threads as torch's. A Dask nanny starts its worker with
    ``OMP_NUM_THREADS=1``, which torch follows and numba does not: numba kept one thread per
    core in every worker, so two single-threaded workers on two cores ran four kernel threads
    (OpenMP threads that spin between parallel regions). One thread per worker thread is the
    local one-thread scan that the overhead per core is measured against; give the workers
    more kernel threads with ``OMP_NUM_THREADS`` in their environment (docs/scale.md).
    ``numba.set_num_threads`` holds for the calling thread only, so it is set per task and
    restored after it."""
    import numba
    import torch

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), before)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _task_record(index: int, start: float) -> dict[str, Any]:
    """Where and when a cluster task ran (wall-clock seconds since the epoch, comparable across
    the processes of one machine), the kernel threads it had and whether its malloc
    thresholds were raised (:func:`_task_heap`): for the overhead attribution of
    ``benchmarks/bench_distributed.py`` (docs/scale.md)."""
    import numba
    import torch

    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):  # not inside a Dask worker
        worker = f"pid {os.getpid()}"
    return {"index": index, "worker": worker, "start": start, "end": time.time(),
            "threads_torch_numba": (torch.get_num_threads(), numba.get_num_threads()),
            "malloc_thresholds_raised": _HEAP_TASKS > 0}


def _result_bytes(part: _ChunkScan) -> int:
    """The array and table bytes of one chunk's result (what goes back to the driver)."""
    n = part.positions.nbytes + sum(h.nbytes for h in part.hashes.values())
    if part.pairs is not None:
        n += int(part.pairs.memory_usage(deep=True).sum())
    if part.prepared is not None:
        p = part.prepared
        n += p.images.images.nbytes + sum(h.nbytes for h in p.hashes.values())
        n += sum(v.nbytes for v in vars(p).values() if isinstance(v, np.ndarray))
    return n


def _executor(executor: Any, address: str | None, workers: int | None, source: ImageSource) -> tuple[Any, bool]:
    """The Dask executor (``None``: local) after the checks that need no work: the name, the
    cluster, replicate on the workers, the source's files readable there."""
    if isinstance(executor, str) and executor == "local" and address is None:
        return None, False
    from replicate import distributed

    ex, owned = distributed.resolve(executor, address)
    if ex is None:
        return None, False
    try:
        if workers not in (None, 1):
            raise fail("workers", workers, "None with a Dask executor (the cluster's workers decode)")
        ex.check_paths(source.paths)
    except Exception:
        if owned:
            ex.close()
        raise
    return ex, owned


# --------------------------------------------------------------------------- the scan


@dataclass(frozen=True, eq=False)
class PoolScan:
    """What one pass over a source found: hashes, near-duplicates, keyword counts.

    ``kept_positions`` are the listing positions of the images that decoded (all, unless
    ``on_error="skip"`` skipped some: ``skipped`` lists ``(id, where, reason)``);
    ``timings`` the seconds spent decoding (with hashing), searching, counting keywords,
    taking in each chunk's result (``absorb``) and merging. On a Dask executor ``decode``,
    ``search`` and ``keywords`` are the tasks' own compute seconds summed over the workers,
    ``broadcast`` the scatter of the reference index to every worker and ``wait`` the
    driver's time blocked on the next result; ``tasks`` then holds one record per chunk task
    (its worker, wall-clock ``start``/``end``, its compute seconds, its kernel threads).
    """

    source: dict[str, Any]
    hashes: dict[str, Any]
    dedup: Any
    keywords: Any
    kept_positions: np.ndarray
    skipped: tuple[tuple[str, str, str], ...]
    timings: dict[str, float] = field(default_factory=dict)
    tasks: tuple[dict[str, Any], ...] = ()

    @property
    def n_decoded(self) -> int:
        return len(self.kept_positions)

    def summary(self) -> str:
        parts = [f"{self.n_decoded} of {self.source['n']} images of {self.source['name']!r} decoded"
                 f" ({len(self.skipped)} skipped)"]
        parts += [f"{len(h)} {k} hashes" for k, h in self.hashes.items()]
        if self.dedup is not None:
            parts.append(f"{self.dedup.n_flagged} near-duplicates flagged")
        if self.keywords is not None:
            parts.append(f"keyword counts over {self.keywords.total} images")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (hashes and dedup results save with their own ``save``)."""
        return {
            "source": self.source,
            "n_decoded": self.n_decoded,
            "skipped": {"n": len(self.skipped), "images": [list(s) for s in self.skipped]},
            "hashes": {k: h.meta() for k, h in self.hashes.items()},
            "dedup": None if self.dedup is None else {"n_flagged": self.dedup.n_flagged, "counts": self.dedup.counts()},
            "keywords": None if self.keywords is None else self.keywords.to_dict(),
            "timings": dict(self.timings),
        }


def scan_pool(
    source: ImageSource,
    references: Any = None,
    *,
    hashes: Iterable[str | HashSpec] = ("phash",),
    dedup: bool = True,
    config: Any = None,
    blacklist: str | os.PathLike[str] | Iterable[str] | None = None,
    keyword_column: str | None = "keyword",
    keep_pairs: str = "all",
    workers: int | None = None,
    spill_dir: str | os.PathLike[str] | None = None,
    executor: Any = "local",
    address: str | None = None,
    **overrides: Any,
) -> PoolScan:
    """One pass over ``source``: hashes, near-duplicates against ``references`` (and, with
    ``within_query``, inside the pool), keyword counts.

    Parameters
    ----------
    source
        the pool (:func:`replicate.open_source`).
    references
        the original sets, as for :func:`replicate.find_near_duplicates`; their images
        must have the source's thumbnail size.
    hashes
        perceptual hashes to keep (besides those the near-duplicate search uses).
    dedup
        run the near-duplicate search (``config`` and keyword ``overrides`` as for
        :func:`replicate.find_near_duplicates`).
    keyword_column
        metadata column to count per class (``None``: no counts).
    keep_pairs
        ``"all"``: every candidate pair in the result (as in memory); ``"flagged"``: only
        the pairs a rule flags, dropped chunk by chunk, so that memory does not grow with
        the unflagged candidates (groups, flags and kept ids are the same).
    workers
        decoder processes (``None``/1: decode in this process).
    spill_dir
        where the pool's signatures go for the search within the pool (a temporary
        directory by default; removed afterwards).
    executor, address
        ``"local"`` (this machine), ``"dask"`` (the per-chunk work on a Dask cluster: the
        scheduler at ``address``, else ``DASK_SCHEDULER_ADDRESS``, else a local cluster) or a
        :class:`replicate.distributed.DaskExecutor`; the merges run here and the result is
        the local executor's (docs/scale.md).
    config
        the dedup configuration, as for :func:`replicate.dedup.find_near_duplicates` (``None``: the defaults).
    blacklist
        ids to drop, or a file listing them, as for :func:`replicate.dedup.find_near_duplicates`.
    """
    source = _check_source(source)
    from replicate._validation import check_choice

    keep_pairs = check_choice("keep_pairs", keep_pairs, ("all", "flagged"))
    cfg = _dedup_config(config, overrides) if dedup else None
    if keyword_column is not None and keyword_column not in source.metadata:
        raise fail("keyword_column", keyword_column, f"a metadata column of source {source.name!r} (columns: "
                   f"{', '.join(source.columns) or 'none'})", "Pass keyword_column=None to skip keyword counts.",
                   error=KeyError)
    from replicate import dedup as dd

    keep_specs = tuple(HashSpec(h) if isinstance(h, str) else h for h in hashes)
    specs = tuple(dict.fromkeys(keep_specs))
    shape = (*source.policy.size, 3)
    if cfg is not None and cfg.feature_model is not None:
        from replicate import distributed  # (imports no Dask)

        if isinstance(executor, distributed.DaskExecutor) or (isinstance(executor, str) and executor == "dask"):
            distributed.check_feature_model("feature_model", cfg.feature_model)
    dask_ex, owned = _executor(executor, address, workers, source)
    timings = {"decode": 0.0, "search": 0.0, "within": 0.0, "keywords": 0.0, "merge": 0.0, "absorb": 0.0}
    t0 = time.perf_counter()
    refs_prepared = prepare_references(references, cfg, source.name, shape) if cfg is not None else []
    ref_sets = dict(dd._as_references(references, ImageSet(np.zeros((1, *shape), np.uint8), name=source.name,
                                                              ids=[f"{source.name}/\x00probe"]))) if cfg else {}
    timings["references"] = time.perf_counter() - t0
    _return_free_heap()  # the references' temporaries
    within = cfg is not None and cfg.within_query
    tmp = None
    spill = None
    if within:
        tmp = tempfile.TemporaryDirectory(prefix="replicate-spill-", dir=spill_dir)
        spill = _Spill(Path(tmp.name), len(source))
    hash_parts: dict[HashSpec, list[tuple[np.ndarray, np.ndarray]]] = {s: [] for s in keep_specs}
    pair_parts: list[tuple[int, pd.DataFrame]] = []
    kw_parts: list[dict[tuple[int, str], int]] = []
    kept: list[np.ndarray] = []
    skipped: list[tuple[str, str, str]] = []
    task_log: list[dict[str, Any]] = []
    offset = 0
    try:
        kw_all = (source.labels, source.metadata[keyword_column]) if keyword_column is not None else None
        args = (refs_prepared, cfg, source.name, keep_specs, keep_pairs, spill is not None)
        if dask_ex is None:
            t = time.perf_counter()
            parts: Iterable[_ChunkScan] = (
                _scan_chunk(c, *args, _chunk_keywords(kw_all, c.start, len(c.keep)), decode=0.0)
                for c in source.chunks(specs, workers=workers))
        else:
            # the reference index once per worker; each task decodes, hashes, searches and counts one chunk
            t = time.perf_counter()
            args = (dask_ex.broadcast(refs_prepared), *args[1:])
            timings["broadcast"] = time.perf_counter() - t
            timings["wait"] = 0.0
            parts = dask_ex.imap(_scan_task, [(task, _chunk_keywords(kw_all, task.start, len(task.ids)))
                                              for task in source.tasks(specs)], *args)
            t = time.perf_counter()
        for part in parts:
            t_part = time.perf_counter()
            if dask_ex is None:
                part.timings["decode"] = t_part - t - sum(part.timings.values())
            else:  # the driver waited for this result (the cluster computes meanwhile)
                timings["wait"] += t_part - t
                if part.task is not None:
                    task_log.append({**part.task, **{k: round(v, 6) for k, v in part.timings.items()}})
            for k, v in part.timings.items():
                timings[k] += v
            kept.append(part.positions)
            skipped += part.skipped
            for s in keep_specs:
                hash_parts[s].append((part.ids, part.hashes[s.key]))
            if part.pairs is not None:
                pair_parts.append((offset, part.pairs))
            if part.prepared is not None and spill is not None:
                spill.add(part.prepared)
            if part.keywords is not None:
                kw_parts.append(part.keywords)
            offset += len(part.ids)
            del part
            _return_free_heap()
            t = time.perf_counter()
            timings["absorb"] += t - t_part
        kept_pos = np.concatenate(kept) if kept else np.zeros(0, np.int64)
        ids = source.ids[kept_pos]
        result = None
        if cfg is not None:
            within_pairs = None
            if spill is not None and len(kept_pos) > 1:
                t = time.perf_counter()
                within_pairs = _within_pairs(spill, ids, cfg, source.name, source.chunk_size, keep_pairs)
                timings["within"] = time.perf_counter() - t
            t = time.perf_counter()
            if isinstance(blacklist, (str, os.PathLike)):
                bl_ids, bl_path = dd.read_blacklist(blacklist), str(blacklist)
            else:
                bl_ids, bl_path = [str(i) for i in (blacklist or [])], None
            query = _stub(ids, source.labels[kept_pos], source.class_names, source.name)
            result = merge_dedup(pair_parts, query, ref_sets, cfg, blacklist=bl_ids, blacklist_path=bl_path,
                                 within=within_pairs)
            timings["merge"] += time.perf_counter() - t
    finally:
        if owned and dask_ex is not None:
            dask_ex.close()
        if spill is not None:
            spill.arrays.clear()
        if tmp is not None:
            tmp.cleanup()
    t = time.perf_counter()
    keywords = merge_keywords(kw_parts, source.class_names, name=source.name, column=keyword_column) \
        if keyword_column is not None else None
    timings["keywords"] += time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    info = {"name": source.name, "kind": source.kind, "n": len(source), "listing_fingerprint":
            source.listing_fingerprint, "policy": source.policy.to_dict(), "chunk_size": source.chunk_size}
    return PoolScan(
        source=info,
        hashes={s.key: merge_hashes(hash_parts[s], s) for s in keep_specs},
        dedup=result,
        keywords=keywords,
        kept_positions=kept_pos,
        skipped=tuple(skipped),
        timings=timings,
        tasks=tuple(task_log),
    )


# --------------------------------------------------------------------------- sampling


def sample_source(source: ImageSource, allocation: Any, *, positions: np.ndarray | None = None,
                  workers: int | None = None, fingerprint: bool = False, executor: Any = "local",
                  address: str | None = None, **kwargs: Any) -> Any:
    """:func:`replicate.sampling.sample` over a source: the draw reads only the listing (ids,
    labels, keywords of the images at ``positions``, e.g. a scan's ``kept_positions``; all by
    default), then only the chosen images are decoded into the new test set.

    ``fingerprint=True`` records the source's content fingerprint (reads every byte once).
    ``executor``/``address`` as for :func:`scan_pool` (the chosen chunks decode on the cluster).
    Other keyword arguments as for :func:`replicate.sampling.sample`.

    Parameters
    ----------
    source
        the pool's :class:`ImageSource`.
    allocation
        the per-class/keyword allocation, as for :func:`replicate.sampling.sample`.
    positions
        the positions that may be drawn (``None``: all).
    workers
        decoder processes (``None``/1: decode in this process).
    fingerprint
        record the source's content fingerprint.
    executor, address
        as for :func:`scan_pool`.
    **kwargs
        passed to :func:`replicate.sampling.sample`.

    Returns
    -------
    SamplingResult
        whose ``testset`` holds the decoded chosen images.
    """
    from replicate.sampling import sample

    source = _check_source(source)
    dask_ex, owned = _executor(executor, address, workers, source)
    pos = np.arange(len(source)) if positions is None else np.asarray(positions, np.int64)
    meta = {k: v[pos] for k, v in source.metadata.items()}
    stub = _stub(source.ids[pos], source.labels[pos], source.class_names, source.name, meta,
                 info={"source": source.source_info()})
    try:
        result = sample(stub, allocation, fingerprint=False, **kwargs)
        chosen = stub.positions(np.array(result.selected_ids, dtype=str)) if result.selected_ids \
            else np.zeros(0, np.int64)
        images = source.materialise(pos[chosen], workers=workers, executor=dask_ex)
    finally:
        if owned and dask_ex is not None:
            dask_ex.close()
    if len(images) != len(chosen):
        missing = sorted(set(result.selected_ids) - set(images.ids.tolist()))
        raise fail("chosen images", missing[:5], "decodable", "Scan the pool first and pass positions="
                   "scan.kept_positions, so that images that do not decode are not drawn.")
    t = result.testset
    if t is None:  # sample() always returns the set it drew; only a result read back from JSON has none
        raise RuntimeError("replicate.sampling.sample returned a result without its test set")
    testset = ImageSet(images.images, t.labels, t.class_names, t.ids, t.metadata, name=t.name,
                       info={**t.info, "policy": source.policy.to_dict()})
    parent = dict(result.pool)
    parent["source"] = source.source_info()
    parent["listing_fingerprint"] = source.listing_fingerprint
    if fingerprint:
        parent["fingerprint"] = source.fingerprint
    testset.info["parents"] = [parent] + list(testset.info.get("parents", [])[1:])
    return replace(result, testset=testset, pool=parent)
