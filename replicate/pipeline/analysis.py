"""The analysis half: evaluate the models on both sets, compare, test for shift, report.

:func:`evaluate_and_report` (and :func:`run`, the same thing under the CLI's name)
builds the new test set if this output directory does not hold it yet (a cached
no-op otherwise), then runs the ``evaluate``, ``compare``, ``shift`` and ``report``
stages. The config's ``[evaluate] weights_dirs`` reach the model loaders as explicit
weight files (:func:`weights_file`), not through the environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replicate.imageset import ImageSet
from replicate.manifest import make_manifest, sha256_file
from replicate.pipeline.build import (
    BuildOutput,
    ConfigLike,
    Inputs,
    _stage_rows,
    as_config,
    build,
    file_digest,
    load_inputs,
    logger,
    opened,
    require,
    with_executor,
    write_json,
)
from replicate.pipeline.config import PipelineConfig, ReanalysisSection
from replicate.pipeline.outdir import OutputDir
from replicate.pipeline.stages import StageInfo, run_stage

__all__ = ["evaluate_and_report", "run", "RunOutput", "weights_file"]

EVALUATE_CODE = ("replicate.evaluation", "replicate.models", "replicate.imageset")
COMPARE_CODE = ("replicate.stats", "replicate.models")
SHIFT_CODE = ("replicate.shift", "replicate.dedup", "replicate.evaluation", "replicate.models", "replicate.imageset")
REPORT_CODE = ("replicate.report", "replicate.plots", "replicate.dedup")  # report/templates/ is inside replicate.report


@dataclass(frozen=True)
class RunOutput:
    """What a full run wrote: the build, the evaluation stages and the report files."""

    build: BuildOutput
    stages: tuple[StageInfo, ...]
    reports: dict[str, Path]
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "build": self.build.to_dict(),
            "stages": _stage_rows(self.stages),
            "reports": {k: str(v) for k, v in self.reports.items()},
            "summary": self.summary,
        }


def evaluate_and_report(
    config: ConfigLike,
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    executor: str | None = None,
    address: str | None = None,
) -> RunOutput:
    """Evaluate models on the original and the new set, compare, and render the reports.

    Builds the new test set first if this output directory does not hold it yet (a
    cached no-op otherwise). Arguments as for :func:`replicate.pipeline.build_testset`.

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
    RunOutput
        the build's output, the evaluations, comparisons and the rendered reports.
    """
    cfg = with_executor(as_config(config), executor, address)
    require(cfg, evaluate=True)
    inputs = load_inputs(cfg)
    log = logger(quiet)
    with opened(cfg, out, overwrite, log) as od:
        built = build(cfg, od, inputs, log)
        return _analyse(cfg, od, built, inputs, log)


def run(
    config: ConfigLike,
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    executor: str | None = None,
    address: str | None = None,
) -> RunOutput:
    """Everything: build the new test set, evaluate, compare, test for shift, report.

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
    RunOutput
        as :func:`evaluate_and_report`.
    """
    return evaluate_and_report(config, out=out, overwrite=overwrite, quiet=quiet, executor=executor, address=address)


# --------------------------------------------------------------------------- weights


def weights_file(model: str, dirs: tuple[str, ...] | list[str]) -> str | None:
    """The weights file of zoo ``model`` in the config's ``weights_dirs``, or None.

    The search order is replicate's own (package data, then the cache) with these
    folders next, before ``$REPLICATE_WEIGHTS`` and a download: None when the file is in
    the package or the cache (the loader finds it there) or in none of ``dirs``.
    """
    if not dirs:
        return None
    from replicate.models import get_card
    from replicate.models._weights import _candidates, _search_dir

    card = get_card(model)
    if not card.weights_file:
        return None
    if any(_search_dir(d, card.weights_file) is not None for _desc, d in _candidates(card)[:2]):
        return None
    for d in dirs:
        hit = _search_dir(Path(d), card.weights_file)
        if hit is not None:
            return str(hit)
    return None


class _ZooFeatures:
    """Zoo-model features for the dataset test with an explicit weights file.

    ``dataset_test`` computes a zoo model's features on each whole input set (cached)
    and takes the sampled rows; this callable does the same for the sampled set it is
    given, so the numbers are those of ``features=<name>``.
    """

    def __init__(self, name: str, weights: str, sets: tuple[ImageSet, ...]) -> None:
        self.__name__ = name
        self.weights = weights
        self.sets = sets

    def __call__(self, s: ImageSet) -> Any:
        import numpy as np

        from replicate.evaluation import extract_features

        for full in self.sets:
            if not set(map(str, s.ids)) <= set(map(str, full.ids)):
                continue
            pos = full.positions(s.ids)
            if np.array_equal(full.content_hashes[pos], s.content_hashes):
                return np.asarray(extract_features(self.__name__, full, weights=self.weights))[pos]
        return extract_features(self.__name__, s, weights=self.weights)


# --------------------------------------------------------------------------- stages


def _evaluate_stage(
    cfg: PipelineConfig, od: OutputDir, test: ImageSet, new: ImageSet, log: Callable[[str], None]
) -> StageInfo:
    from replicate.evaluation import evaluate

    ecfg = cfg.evaluate

    def work(tmp: Path) -> dict[str, Any]:
        rows: dict[str, list[dict[str, Any]]] = {"original": [], "new": []}
        for model in ecfg.models:
            log(f"[evaluate] {model}")
            weights = weights_file(model, ecfg.weights_dirs)
            for role, data in (("original", test), ("new", new)):
                r = evaluate(model, data, batch_size=ecfg.batch_size, device=ecfg.device, weights=weights)
                rows[role].append(r.to_dict())
        write_json(tmp / "evaluations.json", rows)
        return {m: {role: rows[role][i]["accuracy"] for role in rows} for i, m in enumerate(ecfg.models)}

    fps = {"original": test.fingerprint, "new": new.fingerprint}
    return run_stage(
        od.root, "evaluate", cfg.section("evaluate"), fps, work,
        code=(*EVALUATE_CODE, __name__), writable=od.writable, log=log,
    )


def _compare_stage(
    cfg: PipelineConfig, od: OutputDir, eval_stage: StageInfo, test: ImageSet, new: ImageSet, log: Callable[[str], None]
) -> StageInfo:
    from replicate.stats import compare

    seed = cfg.run.seed
    rcfg = cfg.reanalysis

    def work(tmp: Path) -> dict[str, Any]:
        rows = json.loads((eval_stage.path / "evaluations.json").read_text())
        comparisons = []
        if rows["original"]:
            c = compare(rows["original"], rows["new"], original_name=test.name, new_name=new.name, seed=seed)
            comparisons.append(c.to_dict())
        if rcfg.predictions:
            comparisons.extend(_reanalysis(rcfg.predictions, rcfg, seed))
        write_json(tmp / "comparisons.json", comparisons)
        return {"comparisons": len(comparisons)}

    return run_stage(
        od.root,
        "compare",
        {"reanalysis": cfg.section("reanalysis"), "seed": seed},
        {"evaluate": eval_stage.key, "predictions": file_digest(rcfg.predictions) or ""},
        work,
        code=(*COMPARE_CODE, __name__),
        writable=od.writable,
        log=log,
    )


def _shift_stage(
    cfg: PipelineConfig, od: OutputDir, test: ImageSet, new: ImageSet, log: Callable[[str], None]
) -> StageInfo:
    from replicate.shift import BUILTIN_FEATURES, dataset_test

    shcfg = cfg.shift
    seed = cfg.run.seed
    features: Any = shcfg.features
    if features not in BUILTIN_FEATURES:
        weights = weights_file(features, cfg.evaluate.weights_dirs)
        if weights is not None:
            features = _ZooFeatures(features, weights, (test, new))

    def work(tmp: Path) -> dict[str, Any]:
        result = dataset_test(
            test,
            new,
            features=features,
            folds=shcfg.folds,
            permutations=shcfg.permutations,
            max_per_set=shcfg.max_per_set,
            seed=seed,
        )
        write_json(tmp / "shift.json", result.to_dict())
        (tmp / "shift.txt").write_text(result.summary() + "\n")
        return {"accuracy": result.to_dict().get("accuracy"), "p_value": result.to_dict().get("p_value")}

    fps = {"original": test.fingerprint, "new": new.fingerprint}
    return run_stage(
        od.root, "shift", {**cfg.section("shift"), "seed": seed}, fps, work,
        code=(*SHIFT_CODE, __name__), writable=od.writable, log=log,
    )


def _report_stage(
    cfg: PipelineConfig,
    od: OutputDir,
    built: BuildOutput,
    cmp_stage: StageInfo,
    shift_stage: StageInfo | None,
    sets: tuple[ImageSet, ImageSet, Any],
    log: Callable[[str], None],
) -> StageInfo:
    rcfg = cfg.report
    test, new, pool = sets

    def work(tmp: Path) -> dict[str, Any]:
        from replicate.dedup import DedupResult
        from replicate.report import build_report, write_report

        comparisons = json.loads((cmp_stage.path / "comparisons.json").read_text())
        sample_dir = next(s.path for s in built.stages if s.name == "sample")
        dedup = [DedupResult.load(s.path / "dedup") for s in built.stages if s.name == "dedup"]
        shift = [json.loads((shift_stage.path / "shift.json").read_text())] if shift_stage else None
        manifests = [json.loads((built.testset_path / "manifest.json").read_text())]
        report = build_report(
            comparisons,
            sampling=[json.loads((sample_dir / "sampling.json").read_text())],
            dedup=dedup or None,
            shift=shift,
            manifests=manifests,
            # a streamed pool (an ImageSource) is not held in memory: the report's pair gallery then
            # shows the original side of each flagged pair only
            test_sets={test.name: test, new.name: new, **({pool.name: pool} if isinstance(pool, ImageSet) else {})},
            title=rcfg.title or f"replicate: {cfg.run.name}",
            seed=cfg.run.seed,
            created=od.created,  # the run's first start: stable across reruns
        )
        paths = write_report(report, tmp / "report", list(rcfg.formats))
        return {"formats": sorted(paths)}

    return run_stage(
        od.root,
        "report",
        cfg.section("report"),
        {"compare": cmp_stage.key, "shift": shift_stage.key if shift_stage else "", **{s.name: s.key for s in built.stages}},
        work,
        code=(*REPORT_CODE, __name__),
        writable=od.writable,
        log=log,
    )


def _analyse(cfg: PipelineConfig, od: OutputDir, built: BuildOutput, inputs: Inputs, log: Callable[[str], None]) -> RunOutput:
    test, pool = inputs.test, inputs.pool
    new = ImageSet.load(built.testset_path)
    stages: list[StageInfo] = []
    eval_stage = _evaluate_stage(cfg, od, test, new, log)
    stages.append(eval_stage)
    cmp_stage = _compare_stage(cfg, od, eval_stage, test, new, log)
    stages.append(cmp_stage)
    shift_stage = _shift_stage(cfg, od, test, new, log) if cfg.shift.enabled else None
    if shift_stage is not None:
        stages.append(shift_stage)
    report_stage = _report_stage(cfg, od, built, cmp_stage, shift_stage, (test, new, pool), log)
    stages.append(report_stage)

    root = od.root
    final = root / "report"
    written = sorted(p.relative_to(report_stage.path / "report") for p in (report_stage.path / "report").rglob("*") if p.is_file())
    od.sync_dir(report_stage.path / "report", final, _previous_files(root))
    reports = {p.suffix.lstrip("."): final / p for p in written if len(p.parts) == 1}
    manifest = make_manifest(
        kind="run",
        fingerprint=new.fingerprint,
        files={str((final / p).relative_to(root)): sha256_file(final / p) for p in written},
        sources={"original_test": test.info.get("source"), "pool": cfg.pool.path},
        parents=[built.summary],
        config=json.loads(json.dumps(cfg.to_dict(), default=str)),
        extra={"stages": {s.name: s.key for s in (*built.stages, *stages)}},
    )
    od.write_manifest(root / "manifest.json", manifest)
    summary = {
        "evaluate": eval_stage.summary,
        "shift": shift_stage.summary if shift_stage else None,
        "reports": {k: str(v) for k, v in reports.items()},
    }
    return RunOutput(built, tuple(stages), reports, summary)


def _previous_files(root: Path) -> set[str]:
    path = root / "manifest.json"
    try:
        files = json.loads(path.read_text()).get("files", {}) if path.is_file() else {}
    except ValueError:
        files = {}
    return set(files) if isinstance(files, dict) else set()


def _reanalysis(predictions: str, rcfg: ReanalysisSection, seed: int) -> list[dict[str, Any]]:
    """``[reanalysis]``: :func:`replicate.stats.compare_predictions` on the file, with its defaults.

    As ``replicate compare/report --predictions``: the original is the file's reference set
    unless ``original`` names another, the new sets are ``new`` or every other set; ``labels``
    (an ``.npz`` with ``labels``) are the CIFAR-10 test labels the CIFAR-10.1 layout lacks.
    """
    from replicate.models import load_predictions
    from replicate.stats import compare_predictions

    labels = None
    if rcfg.labels:
        import numpy as np

        with np.load(rcfg.labels) as z:
            labels = {"cifar10-test": z["labels"]}
    ps = load_predictions(predictions, labels=labels)
    comparisons = compare_predictions(ps, list(rcfg.new) or None, original=rcfg.original, seed=seed)
    return [c.to_dict() for c in comparisons]
