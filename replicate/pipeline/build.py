"""The build half: candidate pool -> near-duplicate removal -> keyword-matched sample -> new test set.

:func:`build_testset` checks the config and loads the inputs before it writes
anything, then runs the ``dedup`` and ``sample`` stages (cached, see
:mod:`replicate.pipeline.stages`) and writes the new test set to ``OUT/new-testset``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from replicate._validation import fail
from replicate.imageset import ImageSet
from replicate.manifest import sha256_file
from replicate.pipeline.config import (
    BUNDLE,
    PLACEMENT_KEYS,
    PipelineConfig,
    PoolSection,
    config_from_dict,
    load_config,
)
from replicate.pipeline.outdir import OutputDir, open_out
from replicate.pipeline.stages import StageInfo, run_stage
from replicate.sources import ImageSource, detect_kind

__all__ = ["build_testset", "demo_config", "with_executor", "BuildOutput", "Inputs", "load_pool"]

ConfigLike = PipelineConfig | dict | str | os.PathLike  # type: ignore[type-arg]

# the modules whose source keys each build stage (besides this one)
DEDUP_CODE = ("replicate.dedup", "replicate.hashing", "replicate.hamming", "replicate._l2", "replicate.imageset")
SAMPLE_CODE = ("replicate.keywords", "replicate.sampling", "replicate.imageset")
# and, for a streamed pool ([pool] stream = true), the modules that read and scan it
STREAM_CODE = ("replicate.sources", "replicate.streaming")


def _stage_rows(stages: tuple[StageInfo, ...]) -> list[dict[str, Any]]:
    return [{"name": s.name, "key": s.key, "cached": s.cached, "seconds": round(s.seconds, 3)} for s in stages]


@dataclass(frozen=True)
class BuildOutput:
    """What ``build_testset`` wrote: the new test set and every stage it ran or reused."""

    out: Path
    testset_path: Path
    stages: tuple[StageInfo, ...]
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "testset": str(self.testset_path),
            "stages": _stage_rows(self.stages),
            "summary": self.summary,
        }


# --------------------------------------------------------------------------- config and output dir


def demo_config(out: str | os.PathLike[str] = "demo-out") -> PipelineConfig:
    """The embedded default (``replicate/data/demo.toml``): the bundled real sample of
    CIFAR-10, the bundled real candidate pool, ResNet-20 and the CIFAR-10.1 predictions."""
    return load_config(BUNDLE / "demo.toml").replace(run={"out": str(out)})


def as_config(config: ConfigLike) -> PipelineConfig:
    """A :class:`PipelineConfig` from a config, a TOML path or a TOML-shaped mapping (checked)."""
    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    return config_from_dict(config)


def with_executor(cfg: PipelineConfig, executor: str | None = None, address: str | None = None) -> PipelineConfig:
    """``cfg`` with ``[run] executor``/``address`` replaced (checked again); ``None`` keeps the
    config's. A new executor other than ``"dask"`` drops the config's address."""
    if executor is None and address is None:
        return cfg
    run: dict[str, Any] = {}
    if executor is not None:
        run["executor"] = executor
        if executor != "dask":
            run["address"] = None
    if address is not None:
        run["address"] = address
    return cfg.replace(run=run)


def config_hash(cfg: PipelineConfig) -> str:
    """The config's digest, without the keys that only say where the stages run
    (``[run] executor``/``address``): a run on a cluster and one on this machine share
    an output directory and its cached stages."""
    data = cfg.to_dict()
    data["run"] = {k: v for k, v in data["run"].items() if k not in PLACEMENT_KEYS}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class _Cluster:
    """The run's executor for the streamed pool stages: ``"local"``, or one Dask
    connection made when the first stage that needs it runs (a run whose stages are all
    cached connects to nothing) and closed by :meth:`close` at the end of the run."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.name, self.address = cfg.run.executor, cfg.run.address
        self._ex: Any = None
        self._owned = False

    def get(self) -> Any:
        if self.name == "local":
            return "local"
        if self._ex is None:
            from replicate.distributed import resolve

            self._ex, self._owned = resolve(self.name, self.address)
        return self._ex

    def close(self) -> None:
        if self._ex is not None and self._owned:
            self._ex.close()
        self._ex = None


def require(cfg: PipelineConfig, *, evaluate: bool) -> None:
    """What a run needs beyond a well-formed config, checked before anything is loaded or written."""
    if cfg.keywords.target is None:
        raise fail(
            "config [keywords] target",
            None,
            "keyword counts (a CIFAR-10.1/10.2 file, a JSON table, or an image set with keywords)",
            "Set it in the config.",
            error=KeyError,
        )
    if cfg.original.test is None:
        raise fail("config [original] test", None, "a path to an image set", "Set it in the config.", error=KeyError)
    if cfg.pool.path is None:
        raise fail("config [pool] path", None, "a pool name or path", "Set it in the config.", error=KeyError)
    if evaluate and cfg.evaluate.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise fail(
                "config [evaluate] device", "cuda", "'cpu' or 'auto' on a machine without CUDA", "Use device = 'auto'."
            )


def required(cfg: PipelineConfig, value: str | None) -> str:
    """``value``, a key :func:`require` insists on (fails as it does when the key is unset)."""
    if value is None:
        require(cfg, evaluate=False)  # raises, naming the missing key
        raise RuntimeError("require() accepted a config without [keywords] target, [original] test or [pool] path")
    return value


@contextmanager
def opened(cfg: PipelineConfig, out: str | os.PathLike[str] | None, overwrite: bool, log: Callable[[str], None]) -> Iterator[OutputDir]:
    root = Path(out if out is not None else cfg.run.out)
    with open_out(root, cfg.to_dict(), config_hash(cfg), overwrite, log) as od:
        yield od


def logger(quiet: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    return log


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Inputs:
    """The loaded inputs of a run: the original test (and train) set and the pool."""

    test: ImageSet
    train: ImageSet | None
    pool: ImageSet | ImageSource

    @property
    def originals(self) -> list[ImageSet]:
        return [s for s in (self.test, self.train) if s is not None]


def _load_set(path: str, role: str) -> ImageSet:
    from replicate.io import load

    s = load(path)
    return s.renamed(f"original-{role}") if not s.name.startswith("original") else s


def load_pool(path: str, section: PoolSection | None = None) -> ImageSet | ImageSource:
    """The candidate pool named by ``[pool] path``: a pool folder or name (``pool.toml``)
    or anything :func:`replicate.load` reads; with ``[pool] stream = true`` an
    :class:`~replicate.sources.ImageSource` (folder tree, tar shards, Parquet) read with
    the section's decode policy, chunk size and error policy."""
    from replicate.io import load
    from replicate.io import load_pool as load_named_pool

    p = Path(path)
    if section is None or not section.stream:
        return load(p) if p.exists() and not (p / "pool.toml").is_file() else load_named_pool(path)
    from replicate.sources import open_source

    options: dict[str, Any] = {"policy": section.policy(), "chunk_size": section.chunk_size,
                               "on_error": section.on_error}
    if p.exists() and not (p / "pool.toml").is_file():
        extra: dict[str, Any] = {}
        kind = section.kind or detect_kind(p)
        if section.image_column is not None:
            if kind != "parquet":
                raise fail("config [pool] image_column", section.image_column, "used with a Parquet pool",
                           f"{path} is a {kind} pool: remove the key.")
            extra["image_column"] = section.image_column
        if section.metadata is not None:
            if kind != "folder":
                raise fail("config [pool] metadata", section.metadata, "used with an image folder pool",
                           f"{path} is a {kind} pool: remove the key.")
            extra["metadata"] = section.metadata
        if section.class_names is not None:
            extra["class_names"] = list(section.class_names)
        return open_source(p, kind=cast(Any, kind), **options, **extra)
    if section.class_names is not None:
        raise fail("config [pool] class_names", list(section.class_names), "used with a pool path (a folder, tar "
                   "shards or Parquet files)", f"{path} is a named pool: its data states its classes; remove the key.")
    source: ImageSource = load_named_pool(path, stream=True)
    return source.with_options(**options)


def _image_shape(s: ImageSet | ImageSource) -> tuple[int, ...]:
    return s.image_shape if isinstance(s, ImageSet) else (*s.policy.size, 3)


def _check_consistent(sets: list[ImageSet | ImageSource]) -> None:
    first = sets[0]
    for s in sets[1:]:
        if s.class_names != first.class_names:
            raise ValueError(
                f"class_names of {s.name!r} == {list(s.class_names)}; must equal those of {first.name!r} "
                f"({list(first.class_names)}). Every stage must see one class list: map the labels first."
            )
        if _image_shape(s) != _image_shape(first):
            hint = ("Set [pool] thumbnail to the originals' [height, width]: distances compare thumbnails "
                    "with images of that size." if isinstance(s, ImageSource) else None)
            raise fail(f"image shape of {s.name!r}", _image_shape(s),
                       f"{_image_shape(first)} (that of {first.name!r})", hint)


def load_inputs(cfg: PipelineConfig) -> Inputs:
    """Load and cross-check the original sets and the pool (nothing is written)."""
    test = _load_set(required(cfg, cfg.original.test), "test")
    train = _load_set(cfg.original.train, "train") if cfg.original.train else None
    pool = load_pool(required(cfg, cfg.pool.path), cfg.pool)
    inputs = Inputs(test, train, pool)
    _check_consistent([*inputs.originals, pool])
    return inputs


def file_digest(path: str | None) -> str | None:
    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    return str(path)  # a registered name (e.g. a shipped synonym map)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str, allow_nan=True) + "\n")


# --------------------------------------------------------------------------- build


def build_testset(
    config: ConfigLike,
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    executor: str | None = None,
    address: str | None = None,
) -> BuildOutput:
    """Pool -> near-duplicate removal -> keyword-matched sample -> the new test set.

    ``config`` is a :class:`PipelineConfig`, a TOML path or a TOML-shaped mapping;
    ``out`` replaces ``[run] out``; ``overwrite`` replaces a run with another config
    there (only the files replicate wrote are removed); ``executor``/``address`` replace
    ``[run] executor``/``address`` (where the streamed pool's stages run, docs/scale.md).

    Parameters
    ----------
    config
        a :class:`PipelineConfig`, a TOML path or a TOML-shaped mapping.
    out
        the output directory (``None``: the config's ``[run] out``).
    overwrite
        replace a run with another config in ``out`` (only the files replicate wrote are removed).
    quiet
        do not print progress to stderr.
    executor, address
        replace ``[run] executor``/``address`` (``None``: the config's; docs/scale.md).

    Returns
    -------
    BuildOutput
        the dedup, sampling and new test set of the run.
    """
    cfg = with_executor(as_config(config), executor, address)
    require(cfg, evaluate=False)
    inputs = load_inputs(cfg)
    log = logger(quiet)
    with opened(cfg, out, overwrite, log) as od:
        return build(cfg, od, inputs, log)


def _dedup_stage(cfg: PipelineConfig, od: OutputDir, inputs: Inputs, log: Callable[[str], None],
                 cluster: _Cluster) -> StageInfo:
    from replicate.dedup import find_near_duplicates

    dcfg = cfg.dedup
    detector = dcfg.resolved()  # the preset (if named) with the [dedup] fields given

    pool = inputs.pool
    streamed = isinstance(pool, ImageSource)

    def work(tmp: Path) -> dict[str, Any]:
        refs = {s.name: s for s in inputs.originals}
        extra: dict[str, Any] = {}
        if isinstance(pool, ImageSource):
            from replicate.streaming import scan_pool

            scan = scan_pool(pool, refs, hashes=("phash",), blacklist=dcfg.blacklist, keyword_column=None,
                             workers=cfg.pool.workers, executor=cluster.get(), config=detector)
            result = scan.dedup
            # the sample stage draws from the images that decoded; the hashes are imagehash's
            # on each original image (the near-duplicate search compares thumbnails)
            np.save(tmp / "kept_positions.npy", scan.kept_positions)
            scan.hashes["phash"].save(tmp / "phash")
            write_json(tmp / "scan.json", scan.to_dict())
            extra = {"decoded": scan.n_decoded, "skipped": len(scan.skipped)}
        else:
            result = find_near_duplicates(pool, refs, blacklist=dcfg.blacklist, config=detector)
        result.save(tmp / "dedup")
        reasons = result.flagged["reason"].value_counts().to_dict() if len(result.flagged) else {}
        return {"flagged": int(len(result.flagged)), "by_reason": {str(k): int(v) for k, v in reasons.items()},
                **extra}

    fps = {s.name: s.fingerprint for s in (*inputs.originals, pool)}
    models = detector.feature_model is not None or detector.descriptor_min is not None  # the descriptor gate too
    code = DEDUP_CODE + (("replicate.evaluation", "replicate.models") if models else ())
    code += STREAM_CODE if streamed else ()
    return run_stage(
        od.root,
        "dedup",
        # keyed by the resolved detector settings, so a change of defaults recomputes
        {"blacklist": dcfg.blacklist, "resolved": detector.to_dict(),
         **({"pool_on_error": cfg.pool.on_error} if streamed else {})},
        {**fps, "blacklist": file_digest(dcfg.blacklist) or ""},
        work,
        code=(*code, __name__),
        writable=od.writable,
        log=log,
    )


def _sample_stage(
    cfg: PipelineConfig, od: OutputDir, inputs: Inputs, dedup_stage: StageInfo | None, log: Callable[[str], None],
    cluster: _Cluster,
) -> StageInfo:
    from replicate.dedup import DedupResult
    from replicate.keywords import allocate, load_keyword_counts
    from replicate.sampling import sample

    kcfg, scfg = cfg.keywords, cfg.sampling
    seed = cfg.run.seed
    dedup_key = dedup_stage.key if dedup_stage is not None else "disabled"
    pool, originals = inputs.pool, inputs.originals
    target = required(cfg, kcfg.target)

    def work(tmp: Path) -> dict[str, Any]:
        counts = load_keyword_counts(target, version=kcfg.version, split=kcfg.split, column=kcfg.keyword_column)
        size = scfg.size if scfg.per_class is None else scfg.per_class * len(counts.classes)
        allocation = allocate(counts, size, scfg.strategy, top_k=scfg.top_k)
        exclude = DedupResult.load(dedup_stage.path / "dedup") if dedup_stage is not None else None
        options: dict[str, Any] = {
            "column": kcfg.keyword_column, "synonyms": kcfg.synonyms, "exclude": exclude,
            "policy": scfg.shortfall, "seed": seed, "name": f"{cfg.run.name}-new", "original": str(counts.source),
        }
        if isinstance(pool, ImageSource):
            from replicate.streaming import sample_source

            kept = dedup_stage.path / "kept_positions.npy" if dedup_stage is not None else None
            positions = np.load(kept) if kept is not None and kept.is_file() else None
            result = sample_source(pool, allocation, positions=positions, workers=cfg.pool.workers,
                                   executor=cluster.get(), **options)
        else:
            result = sample(pool, allocation, **options)
        fit = result.fit(counts, seed=seed)
        write_json(tmp / "sampling.json", result.to_dict())
        write_json(tmp / "fit.json", fit.to_dict())
        (tmp / "sampling.txt").write_text(result.summary() + "\n\n" + fit.summary() + "\n")
        new = result.testset
        if new is None:  # pragma: no cover - sample() always returns the set
            raise RuntimeError("sampling returned no test set")
        new = new.with_info(
            parents=[{"name": pool.name, "fingerprint": pool.fingerprint}],
            originals=[{"name": s.name, "fingerprint": s.fingerprint} for s in originals],
            seed=seed,
            dedup_stage=dedup_key,
        )
        new.save(tmp / "testset")
        return {
            "n": len(new),
            "class_counts": new.class_counts(),
            "shortfalls": len(result.shortfalls),
            "shortfall_images": int(sum(s.missing for s in result.shortfalls)),
        }

    return run_stage(
        od.root,
        "sample",
        {"keywords": cfg.section("keywords"), "sampling": cfg.section("sampling"), "seed": seed, "name": cfg.run.name,
         **({"pool_on_error": cfg.pool.on_error} if isinstance(pool, ImageSource) else {})},
        {
            "pool": pool.fingerprint,
            "dedup": dedup_key,
            "target": file_digest(target) or "",
            "synonyms": file_digest(kcfg.synonyms) or "",
        },
        work,
        code=(*SAMPLE_CODE, *(STREAM_CODE if isinstance(pool, ImageSource) else ()), __name__),
        writable=od.writable,
        log=log,
    )


def build(cfg: PipelineConfig, od: OutputDir, inputs: Inputs, log: Callable[[str], None]) -> BuildOutput:
    """Run the build stages in an opened output directory."""
    stages: list[StageInfo] = []
    cluster = _Cluster(cfg)
    try:
        dedup_stage = _dedup_stage(cfg, od, inputs, log, cluster) if cfg.dedup.enabled else None
        if dedup_stage is not None:
            stages.append(dedup_stage)
        sample_stage = _sample_stage(cfg, od, inputs, dedup_stage, log, cluster)
        stages.append(sample_stage)
    finally:
        cluster.close()
    root = od.root
    testset_path = root / "new-testset"
    new = ImageSet.load(sample_stage.path / "testset")
    header = testset_path / "imageset.json"
    if not header.is_file() or json.loads(header.read_text()).get("fingerprint") != new.fingerprint:
        if not od.writable:
            raise fail("out", str(root), "a writable directory", "new-testset/ must be written there.", error=PermissionError)
        new.save(testset_path, overwrite=True)
    summary = {
        "original": {s.name: {"n": len(s), "fingerprint": s.fingerprint} for s in inputs.originals},
        "pool": {"name": inputs.pool.name, "n": len(inputs.pool), "fingerprint": inputs.pool.fingerprint},
        "dedup": dedup_stage.summary if dedup_stage else None,
        "new_testset": {**sample_stage.summary, "fingerprint": new.fingerprint, "path": str(testset_path)},
    }
    od.write_json(root / "build.json", summary)
    return BuildOutput(root, testset_path, tuple(stages), summary)
