"""The run configuration: a TOML file, read into frozen dataclasses and checked once.

:func:`load_config` (a file) and :func:`config_from_dict` (a mapping) return a
:class:`PipelineConfig`, one frozen dataclass per section. Every key has a default;
every value is checked before any stage starts: its type (``size = 12.7`` and
``models = "resnet20"`` are errors, not truncated or iterated), its range and its
choices. An unknown section or key is an error that suggests the closest known one.
Paths are resolved relative to the config file; the prefix ``bundle:`` names a file in
the embedded default bundle (``replicate/data``).

A config file never makes replicate run code from elsewhere: ``hub:`` model entries
(``torch.hub``) are refused in ``[evaluate] models``, ``[shift] features`` and
``[dedup] feature_model``; register such a model in Python
(:func:`replicate.register_model`) and name it in the config instead.

Schema (all sections optional)::

    [run]        name, seed, out, executor ("local" or "dask": where a streamed pool's
                 stages run), address (a Dask scheduler; executor = "dask" only)
    [original]   test, train                  # image sets the new set must not repeat
    [pool]       path                         # a candidate pool (name or path)
                 stream (read it chunk by chunk: an image folder tree, WebDataset tar
                 shards or Parquet, images of any size), and for a streamed pool: kind,
                 thumbnail, fit, resample, upsample, exif_transpose (the DecodePolicy),
                 on_error, chunk_size, workers, image_column (Parquet), metadata (folder),
                 class_names (the classes in label order, e.g. when string labels miss some)
    [dedup]      enabled, blacklist, preset (a name of replicate.dedup.PRESETS, e.g.
                 "clean": the descriptor gate), and any DedupConfig field (hash_radii,
                 l2_k, l2_rms_max, aligned_max, tiny_max, feature_model, within_query,
                 descriptor_min, ...), which replace the preset's
    [keywords]   target (counts file or image set), version (v4/v6/v7 for CIFAR-10.1
                 tables), split (CIFAR-10.2), keyword_column, synonyms
    [sampling]   size or per_class, strategy, shortfall, top_k
    [evaluate]   models, batch_size, device, weights_dirs (searched for weight files)
    [reanalysis] predictions, original, new, labels  # published prediction files
    [shift]      enabled, features, folds, permutations, max_per_set
    [report]     formats, title
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from replicate._validation import closest, fail

if TYPE_CHECKING:  # the stages' own choice types (imported lazily at run time: see _choices_of)
    from replicate.evaluation import Device
    from replicate.keywords import Split, Strategy, TableVersion
    from replicate.sampling import Policy

__all__ = [
    "BUNDLE",
    "DEFAULTS",
    "PipelineConfig",
    "RunSection",
    "OriginalSection",
    "PoolSection",
    "DedupSection",
    "KeywordsSection",
    "SamplingSection",
    "EvaluateSection",
    "ReanalysisSection",
    "ShiftSection",
    "ReportSection",
    "load_config",
    "config_from_dict",
    "resolve_path",
]

BUNDLE = Path(__file__).resolve().parent.parent / "data"

_FIX = "Fix it in the config file (schema: docs/pipeline.md)."

# --------------------------------------------------------------------------- checks (rules as data)

# A check takes (argument name, value) and returns the value to store, or raises.
Check = Callable[[str, Any], Any]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(minimum: int, *, optional: bool = False) -> Check:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if not _is_int(value):
            rule = f"a whole number >= {minimum}" + (" (or left out)" if optional else "")
            hint = " Write it without a decimal point or quotes." if isinstance(value, (float, str)) else ""
            raise fail(name, value, rule, _FIX + hint, error=TypeError)
        if value < minimum:
            raise fail(name, value, f">= {minimum}", _FIX)
        return value

    return check


def _bool(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise fail(name, value, "true or false", _FIX, error=TypeError)
    return value


def _str(*, optional: bool = False, choices: tuple[str, ...] | None = None) -> Check:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise fail(name, value, "a non-empty string" + (" (or left out)" if optional else ""), _FIX, error=TypeError)
        if choices is not None and value not in choices:
            near = closest(value, choices)
            hint = f"Did you mean {', '.join(repr(x) for x in near)}? " if near else ""
            raise fail(name, value, "one of: " + ", ".join(repr(c) for c in choices), hint + _FIX)
        return value

    return check


def _str_list(item: Check, *, allow_empty: bool = True, optional: bool = False) -> Check:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, list):
            example = f"[{value!r}]" if isinstance(value, str) else "[...]"
            raise fail(name, value, "a list of strings", f"Write it as a list: {example}. " + _FIX, error=TypeError)
        if not value and not allow_empty:
            raise fail(name, value, "a non-empty list", _FIX)
        out = tuple(item(f"{name}[{i}]", v) for i, v in enumerate(value))
        if len(set(out)) != len(out):
            dup = next(v for v in out if out.count(v) > 1)
            raise fail(name, value, "a list without repeats", f"{dup!r} is listed twice. " + _FIX)
        return out

    return check


def _no_remote_code(name: str, value: Any) -> None:
    if isinstance(value, str) and value.startswith("hub:"):
        raise fail(
            name,
            value,
            "a registered model name, not a 'hub:' entry",
            "A config file never makes replicate run remote code (torch.hub). Register the model "
            "in Python (replicate.register_model) and name it here, or evaluate it from Python.",
        )


def _model(name: str, value: Any) -> Any:
    _no_remote_code(name, value)
    value = _str()(name, value)
    from replicate.models import get_card

    try:
        get_card(value)
    except KeyError as exc:
        raise KeyError(str(exc.args[0]).replace("model == ", f"{name} == ", 1)) from None
    return value


def _features(name: str, value: Any) -> Any:
    _no_remote_code(name, value)
    value = _str()(name, value)
    from replicate.shift import BUILTIN_FEATURES

    if value in BUILTIN_FEATURES:
        return value
    from replicate.models import list_models

    choices = (*BUILTIN_FEATURES, *list_models(kind="weights"))
    return _str(choices=choices)(name, value)


def _choices_of(module: str, attr: str) -> Check:
    """A choice among a tuple the stage's own module defines (so the two cannot drift)."""

    def check(name: str, value: Any) -> Any:
        import importlib

        return _str(choices=tuple(getattr(importlib.import_module(module), attr)))(name, value)

    return check


def _thumbnail(name: str, value: Any) -> Any:
    """``[pool] thumbnail``: one side length or ``[height, width]``, each a whole number >= 1."""
    sides = [value, value] if _is_int(value) else value
    if isinstance(sides, tuple):
        sides = list(sides)
    if not isinstance(sides, list) or len(sides) != 2 or not all(_is_int(v) for v in sides):
        raise fail(name, value, "a whole number or a list [height, width] of two whole numbers",
                   "E.g. thumbnail = 32 or thumbnail = [32, 32]. " + _FIX, error=TypeError)
    if min(sides) < 1:
        raise fail(name, value, "sides >= 1", _FIX)
    return (sides[0], sides[1])


def _any(name: str, value: Any) -> Any:
    return value


def _key(check: Check, default: Any = None, *, factory: Callable[[], Any] | None = None) -> Any:
    """A section field with its check (the field's metadata) and its default."""
    if factory is not None:
        return field(default_factory=factory, metadata={"check": check})
    return field(default=default, metadata={"check": check})


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class RunSection:
    """``[run]``: the run's name, the seed of every random choice, the output directory,
    and where a streamed pool's stages run: ``executor = "dask"`` maps them over the
    workers of the Dask scheduler at ``address`` (else ``DASK_SCHEDULER_ADDRESS``, else a
    local cluster started for the run; docs/scale.md). Results and stage cache keys do not
    depend on ``executor``/``address``."""

    name: str = _key(_str(), "replicate-run")
    seed: int = _key(_int(0), 0)
    out: str = _key(_str(), "out")
    executor: str = _key(_choices_of("replicate.distributed", "EXECUTORS"), "local")
    address: str | None = _key(_str(optional=True))


@dataclass(frozen=True)
class OriginalSection:
    """``[original]``: the image sets the new set must not repeat (``test`` is compared against)."""

    test: str | None = _key(_str(optional=True))
    train: str | None = _key(_str(optional=True))


@dataclass(frozen=True)
class PoolSection:
    """``[pool]``: the candidate pool, a pool name (``candidates/``, bundled pools) or a path.

    The one place that says what a pool reference is. ``stream = true`` reads the pool as
    a :class:`replicate.sources.ImageSource` (an image folder tree, WebDataset tar shards or
    Parquet files; images of any size), chunk by chunk: hashes on each original image,
    distances on its ``thumbnail`` (``[height, width]``, 32x32 by default: the originals'
    size), made by ``fit``/``resample``/``upsample``/``exif_transpose`` (the fields of
    :class:`~replicate.sources.DecodePolicy`). ``on_error = "skip"`` skips and counts
    images that do not decode. ``class_names`` lists the classes in label order (needed
    when a flat folder's string labels do not name every class; a ``classes.txt`` in the
    folder or beside the shards does the same). Opened by ``replicate.pipeline.build.load_pool``.
    """

    path: str | None = _key(_str(optional=True))
    stream: bool = _key(_bool, False)
    kind: str | None = _key(_str(optional=True, choices=("folder", "webdataset", "parquet")))
    thumbnail: tuple[int, int] = _key(_thumbnail, (32, 32))
    fit: str = _key(_str(choices=("squash", "center_crop")), "squash")
    resample: str = _key(_str(choices=("box", "lanczos", "bicubic", "bilinear")), "box")
    upsample: bool = _key(_bool, False)
    exif_transpose: bool = _key(_bool, True)
    on_error: str = _key(_str(choices=("raise", "skip")), "raise")
    chunk_size: int = _key(_int(1), 4096)
    workers: int = _key(_int(1), 1)
    image_column: str | None = _key(_str(optional=True))
    metadata: str | None = _key(_str(optional=True))
    class_names: tuple[str, ...] | None = _key(_str_list(_str(), allow_empty=False, optional=True))

    def policy(self) -> dict[str, Any]:
        """The :class:`replicate.sources.DecodePolicy` fields these keys give."""
        return {"size": tuple(self.thumbnail), "fit": self.fit, "resample": self.resample,
                "upsample": self.upsample, "exif_transpose": self.exif_transpose}


# [run] keys that say where the stages run, not what they compute: left out of the
# config hash of the output directory (and of every stage's cache key)
PLACEMENT_KEYS = ("executor", "address")

# [pool] keys that only a streamed pool (stream = true) reads
STREAM_KEYS = ("kind", "thumbnail", "fit", "resample", "upsample", "exif_transpose", "on_error", "chunk_size",
               "workers", "image_column", "metadata", "class_names")


def _dedup_options(name: str, value: Any) -> Any:
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class DedupSection:
    """``[dedup]``: near-duplicate removal; ``options`` holds the ``DedupConfig`` fields given."""

    enabled: bool = _key(_bool, True)
    blacklist: str | None = _key(_str(optional=True))
    options: Mapping[str, Any] = _key(_dedup_options, factory=lambda: MappingProxyType({}))

    def resolved(self) -> Any:
        """The :class:`replicate.dedup.DedupConfig` these options give: the preset named by
        ``preset`` (else the defaults) with the fields given."""
        from replicate.dedup import DedupConfig

        options = dict(self.options)
        preset = options.pop("preset", None)
        return DedupConfig.preset(preset, **options) if preset is not None else DedupConfig(**options)


@dataclass(frozen=True)
class KeywordsSection:
    """``[keywords]``: the keyword counts the new set copies, and how to match them."""

    target: str | None = _key(_str(optional=True))
    version: TableVersion = _key(_choices_of("replicate.keywords", "TABLE_VERSIONS"), "v6")
    split: Split = _key(_choices_of("replicate.keywords", "SPLITS"), "test")
    keyword_column: str = _key(_str(), "keyword")
    synonyms: str | None = _key(_str(optional=True))


@dataclass(frozen=True)
class SamplingSection:
    """``[sampling]``: how many images (``size`` in all, or ``per_class``) and how to draw them."""

    size: int | None = _key(_int(1, optional=True), 2000)
    strategy: Strategy = _key(_choices_of("replicate.keywords", "STRATEGIES"), "v6")
    shortfall: Policy = _key(_choices_of("replicate.sampling", "POLICIES"), "report")
    per_class: int | None = _key(_int(1, optional=True))
    top_k: int | None = _key(_int(1, optional=True))


@dataclass(frozen=True)
class EvaluateSection:
    """``[evaluate]``: the zoo models, batch size, device and extra folders with weight files."""

    models: tuple[str, ...] = _key(_str_list(_model), factory=lambda: ("resnet20",))
    batch_size: int = _key(_int(1), 500)
    device: Device = _key(_choices_of("replicate.evaluation", "DEVICES"), "auto")
    weights_dirs: tuple[str, ...] = _key(_str_list(_str()), factory=tuple)


@dataclass(frozen=True)
class ReanalysisSection:
    """``[reanalysis]``: a published prediction file, re-analysed on the sets it names."""

    predictions: str | None = _key(_str(optional=True))
    original: str | None = _key(_str(optional=True))
    new: tuple[str, ...] = _key(_str_list(_str()), factory=tuple)
    labels: str | None = _key(_str(optional=True))


@dataclass(frozen=True)
class ShiftSection:
    """``[shift]``: the dataset test between the original test set and the new set."""

    enabled: bool = _key(_bool, True)
    features: str = _key(_features, "pixels")
    folds: int = _key(_int(2), 5)
    permutations: int = _key(_int(0), 200)
    max_per_set: int | None = _key(_int(2, optional=True), 2000)


@dataclass(frozen=True)
class ReportSection:
    """``[report]``: the report's formats and title."""

    formats: tuple[str, ...] = _key(
        _str_list(_choices_of("replicate.report", "FORMATS"), allow_empty=False),
        factory=lambda: ("html", "md", "json", "csv", "tex"),
    )
    title: str | None = _key(_str(optional=True))


_SECTIONS: dict[str, type] = {
    "run": RunSection,
    "original": OriginalSection,
    "pool": PoolSection,
    "dedup": DedupSection,
    "keywords": KeywordsSection,
    "sampling": SamplingSection,
    "evaluate": EvaluateSection,
    "reanalysis": ReanalysisSection,
    "shift": ShiftSection,
    "report": ReportSection,
}

# keys whose string values are paths, resolved relative to the config file
_PATH_KEYS = {
    ("original", "test"),
    ("original", "train"),
    ("dedup", "blacklist"),
    ("keywords", "target"),
    ("keywords", "synonyms"),
    ("reanalysis", "predictions"),
    ("reanalysis", "labels"),
    ("run", "out"),
    ("pool", "metadata"),
}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class PipelineConfig:
    """A checked run configuration: one frozen section per TOML table.

    Build one with :func:`load_config` or :func:`config_from_dict`; change one with
    :meth:`replace`, which checks the result again.
    """

    run: RunSection = field(default_factory=RunSection)
    original: OriginalSection = field(default_factory=OriginalSection)
    pool: PoolSection = field(default_factory=PoolSection)
    dedup: DedupSection = field(default_factory=DedupSection)
    keywords: KeywordsSection = field(default_factory=KeywordsSection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
    reanalysis: ReanalysisSection = field(default_factory=ReanalysisSection)
    shift: ShiftSection = field(default_factory=ShiftSection)
    report: ReportSection = field(default_factory=ReportSection)

    def section(self, name: str) -> dict[str, Any]:
        """One section as a plain dict (lists for tuples; ``[dedup]`` options flattened)."""
        values = {f.name: _plain(getattr(getattr(self, name), f.name)) for f in dataclasses.fields(_SECTIONS[name])}
        if name == "dedup":
            values.update(values.pop("options"))
        return values

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The resolved config as TOML-shaped data (what ``run.json`` and manifests record)."""
        return {name: self.section(name) for name in _SECTIONS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: str | os.PathLike[str] | None = None) -> PipelineConfig:
        """Inverse of :meth:`to_dict` (and the checks of :func:`config_from_dict`)."""
        return config_from_dict(data, base)

    def replace(self, **changes: Mapping[str, Any]) -> PipelineConfig:
        """A copy with some keys changed, checked again: ``cfg.replace(sampling={"size": 50})``."""
        data = self.to_dict()
        for section, values in changes.items():
            if section not in data:
                _unknown_section(section)
            if not isinstance(values, Mapping):
                raise fail(f"config [{section}]", values, "a table of keys", error=TypeError)
            data[section] = {**data[section], **values}
        return config_from_dict(data)


def _defaults() -> dict[str, dict[str, Any]]:
    return PipelineConfig().to_dict()


DEFAULTS: dict[str, dict[str, Any]] = _defaults()


# --------------------------------------------------------------------------- reading


def resolve_path(value: str | None, base: Path) -> str | None:
    """``bundle:x`` -> the bundled file; relative paths -> relative to ``base``.

    Values that are neither an existing path nor a ``bundle:`` reference (e.g. a pool
    name or a published keyword table name) are returned unchanged.
    """
    if value is None:
        return None
    if value.startswith("bundle:"):
        target = BUNDLE / value.removeprefix("bundle:")
        if not target.exists():
            known = sorted(str(p.relative_to(BUNDLE)) for p in BUNDLE.rglob("*") if p.is_file())
            raise fail("bundle path", value, f"a file in the bundle, one of {known[:12]}", error=FileNotFoundError)
        return str(target)
    p = Path(os.path.expanduser(value))
    if not p.is_absolute():
        candidate = base / p
        if candidate.exists() or "/" in value or value.endswith((".npz", ".json", ".toml", ".txt")):
            return str(candidate)
    return str(p) if p.is_absolute() else value


def _unknown_section(section: str) -> None:
    near = closest(section, _SECTIONS)
    raise fail(
        "config section",
        section,
        f"one of: {', '.join(_SECTIONS)}",
        f"Did you mean {near[0]!r}?" if near else None,
        error=KeyError,
    )


def _dedup_fields() -> list[str]:
    from replicate.dedup import DedupConfig

    return list(DedupConfig.__dataclass_fields__)


def _check_dedup(options: dict[str, Any]) -> None:
    """Check the ``DedupConfig`` fields given (and the preset named), with the detector's own checks."""
    _no_remote_code("config [dedup] feature_model", options.get("feature_model"))
    if options.get("feature_model") not in (None, "copydesc32"):  # copydesc32: replicate's descriptor, no zoo card
        _model("config [dedup] feature_model", options["feature_model"])
    from replicate import dedup

    fields = dict(options)
    preset = fields.pop("preset", None)
    if preset is not None and not isinstance(preset, str):
        raise fail("config [dedup] preset", preset, f"the name of a preset, one of: {', '.join(dedup.PRESETS)}",
                   _FIX, error=TypeError)
    try:
        base = dedup.DedupConfig.preset(preset) if preset is not None else dedup.DedupConfig()
        dedup._check_config(dataclasses.replace(base, **fields))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"config [dedup] {exc}") from None


def _section(name: str, values: Mapping[str, Any]) -> Any:
    """Check one section's raw values and build its dataclass (unknown keys are errors)."""
    cls = _SECTIONS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    allowed = [k for k in fields if not (name == "dedup" and k == "options")]
    if name == "dedup":
        allowed += ["preset", *_dedup_fields()]  # preset: a name of replicate.dedup.PRESETS
    kwargs: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in values.items():
        if key not in allowed:
            near = closest(key, allowed)
            raise fail(
                f"config key [{name}]",
                key,
                f"one of: {', '.join(allowed)}",
                f"Did you mean {near[0]!r}?" if near else None,
                error=KeyError,
            )
        if key not in fields:  # a DedupConfig field
            options[key] = value
            continue
        kwargs[key] = fields[key].metadata["check"](f"config [{name}] {key}", value)
    if name == "dedup":
        _check_dedup(options)
        kwargs["options"] = MappingProxyType(options)
    if name == "sampling" and values.get("per_class") is not None:
        if "size" in values and values["size"] is not None:
            raise fail(
                "config [sampling] size",
                values["size"],
                "left out when per_class is given",
                "Give either size (images in all) or per_class (images in each class), not both.",
            )
        kwargs["size"] = None
    if name == "sampling" and "size" in values and kwargs.get("size") is None and values.get("per_class") is None:
        raise fail("config [sampling] size", None, "a whole number >= 1 (or give per_class)", _FIX, error=TypeError)
    return cls(**kwargs)


def _resolve_paths(sections: dict[str, Any], base: Path) -> None:
    for section, key in _PATH_KEYS:
        value = getattr(sections[section], key)
        if isinstance(value, str):
            sections[section] = dataclasses.replace(sections[section], **{key: resolve_path(value, base)})
    ev = sections["evaluate"]
    dirs = tuple(str(base / d) if not Path(d).is_absolute() else d for d in ev.weights_dirs)
    sections["evaluate"] = dataclasses.replace(ev, weights_dirs=dirs)
    pool = sections["pool"].path
    if isinstance(pool, str) and pool.startswith("bundle:"):
        sections["pool"] = dataclasses.replace(sections["pool"], path=resolve_path(pool, base))
    elif isinstance(pool, str) and (base / pool).exists():
        sections["pool"] = dataclasses.replace(sections["pool"], path=str(base / pool))


def _check_across(sections: dict[str, Any]) -> None:
    sh = sections["shift"]
    if sh.max_per_set is not None and sh.max_per_set < sh.folds:
        raise fail(
            "config [shift] max_per_set",
            sh.max_per_set,
            f">= [shift] folds ({sh.folds}), so every test fold holds images of both sets",
            _FIX,
        )
    po = sections["pool"]
    ru = sections["run"]
    if ru.address is not None and ru.executor != "dask":
        raise fail("config [run] address", ru.address, "used with executor = 'dask' (the scheduler to connect to)",
                   f"executor {ru.executor!r} connects to no cluster: set executor = 'dask' or remove the key.")
    if ru.executor != "local" and not po.stream:
        raise fail("config [run] executor", ru.executor, "used with [pool] stream = true (the cluster runs the "
                   "streamed pool's chunks; an in-memory pool is scanned on this machine)",
                   "Add stream = true to [pool], or set executor = 'local'.")
    if ru.executor != "local" and sections["dedup"].enabled:
        from replicate.distributed import check_feature_model

        check_feature_model("config [dedup] feature_model", sections["dedup"].options.get("feature_model"))
    if ru.executor != "local" and po.workers != 1:
        raise fail("config [pool] workers", po.workers, f"1 with [run] executor = {ru.executor!r} (the cluster's "
                   "workers decode the chunks)", "Remove the key; size the cluster instead.")
    if not po.stream:
        given = [k for k in STREAM_KEYS if getattr(po, k) != getattr(PoolSection(), k)]
        if given:
            raise fail(f"config [pool] {given[0]}", _plain(getattr(po, given[0])),
                       "left out unless stream = true (it sets how a streamed pool is read)",
                       "Add stream = true to [pool] to read the pool chunk by chunk, or remove the key.")
    if po.image_column is not None and po.kind not in (None, "parquet"):
        raise fail("config [pool] image_column", po.image_column, "used with kind = 'parquet' (or kind left out)",
                   f"kind {po.kind!r} has no image column: remove the key.")
    if po.metadata is not None and po.kind not in (None, "folder"):
        raise fail("config [pool] metadata", po.metadata, "used with kind = 'folder' (or kind left out)",
                   f"kind {po.kind!r} carries its metadata inside: remove the key.")
    sa = sections["sampling"]
    if sa.per_class is not None and sa.strategy != "v6":
        raise fail(
            "config [sampling] per_class",
            sa.per_class,
            "used with strategy = 'v6' (the class-balanced allocation)",
            f"strategy {sa.strategy!r} does not balance classes: give size instead.",
        )


def config_from_dict(raw: Mapping[str, Any], base: str | os.PathLike[str] | None = None) -> PipelineConfig:
    """Check ``raw`` (TOML-shaped: ``{section: {key: value}}``) and fill in the defaults.

    Relative paths are resolved against ``base`` (default: the working directory).
    Raises ``KeyError`` for an unknown section or key, ``TypeError`` for a value of the
    wrong type and ``ValueError`` for one out of range or not among the choices; each
    message names ``[section] key``, the value, the rule and how to fix it.
    """
    if isinstance(raw, PipelineConfig):
        return raw
    if not isinstance(raw, Mapping):
        raise fail("config", raw, "a path to a TOML file or a config mapping", error=TypeError)
    base_path = Path(base) if base is not None else Path.cwd()
    sections: dict[str, Any] = {}
    for name, values in raw.items():
        if name not in _SECTIONS:
            _unknown_section(name)
        if not isinstance(values, Mapping):
            raise fail(f"config [{name}]", values, "a table of keys", error=TypeError)
    for name in _SECTIONS:
        sections[name] = _section(name, raw.get(name, {}))
    _check_across(sections)
    _resolve_paths(sections, base_path)
    return PipelineConfig(**sections)


def load_config(path: str | os.PathLike[str]) -> PipelineConfig:
    """Read and check a TOML config file (paths relative to the file)."""
    p = Path(path)
    if not p.is_file():
        raise fail("config", str(p), "an existing TOML file", error=FileNotFoundError)
    with open(p, "rb") as fh:
        try:
            raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config == {str(p)!r}; must be valid TOML ({exc}).") from exc
    return config_from_dict(raw, p.resolve().parent)
