"""End to end: candidate pool -> new test set -> evaluation -> comparison -> report.

``build_testset(config)`` loads the original test and train sets and the candidate
pool, finds near-duplicates of the pool in the originals and within the pool, turns the
original's keyword counts into an allocation, samples the new test set and writes it
with its manifest. ``evaluate_and_report(config)`` evaluates the chosen zoo models on the
original and the new set, compares them, re-analyses published prediction files, runs
the dataset test, and renders the reports. ``run(config)`` does both.

Every stage is cached by the content of its inputs and its config (see
:mod:`replicate._stages`): a rerun is a no-op, and a run killed mid-stage completes on
the next try with byte-identical outputs (manifests differ only in their time).
The configuration schema is documented in :mod:`replicate.config`; example configs
live in ``configs/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replicate._stages import StageInfo, run_stage
from replicate._validation import fail
from replicate.config import BUNDLE, config_from_dict, load_config
from replicate.imageset import ImageSet
from replicate.manifest import make_manifest, sha256_file

__all__ = [
    "build_testset",
    "evaluate_and_report",
    "run",
    "demo_config",
    "BuildOutput",
    "RunOutput",
]

Config = Mapping[str, Mapping[str, Any]]


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
            "stages": [{"name": s.name, "key": s.key, "cached": s.cached, "seconds": round(s.seconds, 3)} for s in self.stages],
            "summary": self.summary,
        }


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
            "stages": [{"name": s.name, "key": s.key, "cached": s.cached, "seconds": round(s.seconds, 3)} for s in self.stages],
            "reports": {k: str(v) for k, v in self.reports.items()},
            "summary": self.summary,
        }


# --------------------------------------------------------------------------- config and output dir


def demo_config(out: str | os.PathLike[str] = "demo-out") -> dict[str, dict[str, Any]]:
    """The embedded default (``replicate/data/demo.toml``): the bundled real sample of
    CIFAR-10, the bundled real candidate pool, ResNet-20 and the CIFAR-10.1 predictions."""
    cfg = load_config(BUNDLE / "demo.toml")
    cfg["run"]["out"] = str(out)
    return cfg


def _as_config(config: Config | str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    if not isinstance(config, Mapping):
        raise fail("config", config, "a path to a TOML file or a config mapping", error=TypeError)
    if all(isinstance(v, Mapping) for v in config.values()) and "run" in config and "dedup" in config:
        return {k: dict(v) for k, v in config.items()}  # already resolved
    return config_from_dict(dict(config))


def _config_hash(cfg: Config) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def _prepare_out(cfg: Config, out: str | os.PathLike[str] | None, overwrite: bool) -> Path:
    root = Path(out if out is not None else cfg["run"]["out"])
    record = root / "run.json"
    digest = _config_hash(cfg)
    if root.exists():
        if record.is_file():
            old = json.loads(record.read_text())
            if old.get("config_hash") != digest:
                if not overwrite:
                    raise fail(
                        "out",
                        str(root),
                        "an empty directory or one holding this same run",
                        "It holds a run with a different config (see its run.json); pass "
                        "overwrite=True (--overwrite) to replace it, or choose another --out.",
                        error=FileExistsError,
                    )
                shutil.rmtree(root)
        elif any(root.iterdir()):
            raise fail(
                "out",
                str(root),
                "an empty directory or one holding a replicate run (with run.json)",
                "It holds other files, which replicate will not delete even with --overwrite; "
                "choose another --out.",
                error=FileExistsError,
            )
    root.mkdir(parents=True, exist_ok=True)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if record.is_file():  # the same run again: keep the time it was first started
        created = json.loads(record.read_text()).get("created", created)
    tmp = record.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps({"config_hash": digest, "created": created, "config": cfg}, indent=2, sort_keys=True, default=str) + "\n"
    )
    os.replace(tmp, record)
    return root


def _logger(quiet: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    return log


# --------------------------------------------------------------------------- inputs


def _load_set(path: str | None, role: str) -> ImageSet:
    from replicate.io import load

    if path is None:
        raise fail(f"config [original] {role}", None, "a path to an image set", "Set it in the config.", error=KeyError)
    s = load(path)
    return s.renamed(f"original-{role}") if not s.name.startswith("original") else s


def _load_pool(path: str | None) -> ImageSet:
    from replicate.io import load, load_pool

    if path is None:
        raise fail("config [pool] path", None, "a pool name or path", "Set it in the config.", error=KeyError)
    p = Path(path)
    return load(p) if p.exists() and not (p / "pool.toml").is_file() else load_pool(path)


def _check_consistent(sets: list[ImageSet]) -> None:
    first = sets[0]
    for s in sets[1:]:
        if s.class_names != first.class_names:
            raise ValueError(
                f"class_names of {s.name!r} == {list(s.class_names)}; must equal those of {first.name!r} "
                f"({list(first.class_names)}). Every stage must see one class list: map the labels first."
            )
        if s.image_shape != first.image_shape:
            raise fail(f"image shape of {s.name!r}", s.image_shape, f"{first.image_shape} (that of {first.name!r})")


def _file_digest(path: str | None) -> str | None:
    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    return str(path)  # a registered name (e.g. a shipped synonym map)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str, allow_nan=True) + "\n")


# --------------------------------------------------------------------------- build


def build_testset(
    config: Config | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> BuildOutput:
    """Pool -> near-duplicate removal -> keyword-matched sample -> the new test set."""
    cfg = _as_config(config)
    root = _prepare_out(cfg, out, overwrite)
    return _build(cfg, root, _logger(quiet))[0]


def _build(cfg: Config, root: Path, log: Callable[[str], None]) -> tuple[BuildOutput, ImageSet, ImageSet]:
    """Run the build stages; also return the original test set and the pool (loaded once for both halves)."""
    from replicate.dedup import DedupConfig, DedupResult, find_near_duplicates
    from replicate.keywords import allocate, load_keyword_counts
    from replicate.sampling import sample

    if cfg["keywords"]["target"] is None:  # checked before any stage spends time
        raise fail(
            "config [keywords] target",
            None,
            "keyword counts (a CIFAR-10.1/10.2 file, a JSON table, or an image set with keywords)",
            error=KeyError,
        )
    test = _load_set(cfg["original"]["test"], "test")
    train = _load_set(cfg["original"]["train"], "train") if cfg["original"]["train"] else None
    pool = _load_pool(cfg["pool"]["path"])
    originals = [s for s in (test, train) if s is not None]
    _check_consistent([*originals, pool])
    fps = {s.name: s.fingerprint for s in (*originals, pool)}
    stages: list[StageInfo] = []

    dcfg = dict(cfg["dedup"])
    options = {k: v for k, v in dcfg.items() if k not in ("enabled", "blacklist")}

    def dedup_work(tmp: Path) -> dict[str, Any]:
        result = find_near_duplicates(pool, {s.name: s for s in originals}, blacklist=dcfg["blacklist"], **options)
        result.save(tmp / "dedup")
        reasons = result.flagged["reason"].value_counts().to_dict() if len(result.flagged) else {}
        return {"flagged": int(len(result.flagged)), "by_reason": {str(k): int(v) for k, v in reasons.items()}}

    if dcfg["enabled"]:
        dedup_stage = run_stage(
            root,
            "dedup",
            # keyed by the resolved detector settings, so a change of defaults recomputes
            {"blacklist": dcfg["blacklist"], "resolved": DedupConfig(**options).to_dict()},
            {**fps, "blacklist": _file_digest(dcfg["blacklist"]) or ""},
            dedup_work,
            log=log,
        )
        stages.append(dedup_stage)
        dedup_key = dedup_stage.key
    else:
        dedup_stage, dedup_key = None, "disabled"

    kcfg, scfg = dict(cfg["keywords"]), dict(cfg["sampling"])
    seed = int(cfg["run"]["seed"])

    def sample_work(tmp: Path) -> dict[str, Any]:
        counts = load_keyword_counts(kcfg["target"], version=kcfg["version"], split=kcfg["split"], column=kcfg["keyword_column"])
        allocation = allocate(counts, int(scfg["size"]), scfg["strategy"], top_k=scfg["top_k"])
        exclude = DedupResult.load(dedup_stage.path / "dedup") if dedup_stage is not None else None
        result = sample(
            pool,
            allocation,
            column=kcfg["keyword_column"],
            synonyms=kcfg["synonyms"],
            exclude=exclude,
            policy=scfg["shortfall"],
            seed=seed,
            name=f"{cfg['run']['name']}-new",
            original=str(counts.source),
        )
        fit = result.fit(counts, seed=seed)
        _write_json(tmp / "sampling.json", result.to_dict())
        _write_json(tmp / "fit.json", fit.to_dict())
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

    sample_stage = run_stage(
        root,
        "sample",
        {"keywords": kcfg, "sampling": scfg, "seed": seed, "name": cfg["run"]["name"]},
        {"pool": pool.fingerprint, "dedup": dedup_key, "target": _file_digest(kcfg["target"]) or "", "synonyms": _file_digest(kcfg["synonyms"]) or ""},
        sample_work,
        log=log,
    )
    stages.append(sample_stage)
    testset_path = root / "new-testset"
    new = ImageSet.load(sample_stage.path / "testset")
    if not (testset_path / "imageset.json").is_file() or json.loads((testset_path / "imageset.json").read_text()).get("fingerprint") != new.fingerprint:
        new.save(testset_path, overwrite=True)
    summary = {
        "original": {s.name: {"n": len(s), "fingerprint": s.fingerprint} for s in originals},
        "pool": {"name": pool.name, "n": len(pool), "fingerprint": pool.fingerprint},
        "dedup": dedup_stage.summary if dedup_stage else None,
        "new_testset": {**sample_stage.summary, "fingerprint": new.fingerprint, "path": str(testset_path)},
    }
    _write_json(root / "build.json", summary)
    return BuildOutput(root, testset_path, tuple(stages), summary), test, pool


# --------------------------------------------------------------------------- evaluate and report


def evaluate_and_report(
    config: Config | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> RunOutput:
    """Evaluate models on the original and the new set, compare, and render the reports.

    Builds the new test set first if this output directory does not hold it yet (a
    cached no-op otherwise).
    """
    cfg = _as_config(config)
    root = _prepare_out(cfg, out, overwrite)
    log = _logger(quiet)
    build, test, pool = _build(cfg, root, log)
    return _evaluate_and_report(cfg, root, build, test, pool, log)


def run(
    config: Config | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> RunOutput:
    """Everything: build the new test set, evaluate, compare, test for shift, report."""
    return evaluate_and_report(config, out=out, overwrite=overwrite, quiet=quiet)


def _evaluate_and_report(
    cfg: Config, root: Path, build: BuildOutput, test: ImageSet, pool: ImageSet, log: Callable[[str], None]
) -> RunOutput:
    from replicate.evaluation import evaluate
    from replicate.stats import compare

    new = ImageSet.load(build.testset_path)
    fps = {"original": test.fingerprint, "new": new.fingerprint}
    stages: list[StageInfo] = []
    ecfg = dict(cfg["evaluate"])

    def eval_work(tmp: Path) -> dict[str, Any]:
        rows: dict[str, list[dict[str, Any]]] = {"original": [], "new": []}
        for model in ecfg["models"]:
            log(f"[evaluate] {model}")
            for role, data in (("original", test), ("new", new)):
                r = evaluate(model, data, batch_size=int(ecfg["batch_size"]), device=ecfg["device"])
                rows[role].append(r.to_dict())
        _write_json(tmp / "evaluations.json", rows)
        return {m: {role: rows[role][i]["accuracy"] for role in rows} for i, m in enumerate(ecfg["models"])}

    with _weights_env(ecfg["weights_dirs"]):
        eval_stage = run_stage(root, "evaluate", ecfg, fps, eval_work, log=log)
    stages.append(eval_stage)
    seed = int(cfg["run"]["seed"])

    def compare_work(tmp: Path) -> dict[str, Any]:
        rows = json.loads((eval_stage.path / "evaluations.json").read_text())
        comparisons = []
        if rows["original"]:
            c = compare(rows["original"], rows["new"], original_name=test.name, new_name=new.name, seed=seed)
            comparisons.append(c.to_dict())
        rcfg = cfg["reanalysis"]
        if rcfg["predictions"]:
            comparisons.extend(_reanalysis(rcfg, seed))
        _write_json(tmp / "comparisons.json", comparisons)
        return {"comparisons": len(comparisons)}

    cmp_stage = run_stage(
        root,
        "compare",
        {"reanalysis": cfg["reanalysis"], "seed": seed},
        {"evaluate": eval_stage.key, "predictions": _file_digest(cfg["reanalysis"]["predictions"]) or ""},
        compare_work,
        log=log,
    )
    stages.append(cmp_stage)

    shcfg = dict(cfg["shift"])
    shift_stage = None
    if shcfg["enabled"]:
        from replicate.shift import dataset_test

        def shift_work(tmp: Path) -> dict[str, Any]:
            result = dataset_test(
                test,
                new,
                features=shcfg["features"],
                folds=int(shcfg["folds"]),
                permutations=int(shcfg["permutations"]),
                max_per_set=shcfg["max_per_set"],
                seed=seed,
            )
            _write_json(tmp / "shift.json", result.to_dict())
            (tmp / "shift.txt").write_text(result.summary() + "\n")
            return {"accuracy": result.to_dict().get("accuracy"), "p_value": result.to_dict().get("p_value")}

        with _weights_env(ecfg["weights_dirs"]):
            shift_stage = run_stage(root, "shift", {**shcfg, "seed": seed}, fps, shift_work, log=log)
        stages.append(shift_stage)

    rcfg = dict(cfg["report"])

    def report_work(tmp: Path) -> dict[str, Any]:
        from replicate.dedup import DedupResult
        from replicate.report import build_report, write_report

        comparisons = json.loads((cmp_stage.path / "comparisons.json").read_text())
        sample_dir = next(s.path for s in build.stages if s.name == "sample")
        dedup = [DedupResult.load(s.path / "dedup") for s in build.stages if s.name == "dedup"]
        shift = [json.loads((shift_stage.path / "shift.json").read_text())] if shift_stage else None
        manifests = [json.loads((build.testset_path / "manifest.json").read_text())]
        report = build_report(
            comparisons,
            sampling=[json.loads((sample_dir / "sampling.json").read_text())],
            dedup=dedup or None,
            shift=shift,
            manifests=manifests,
            test_sets={test.name: test, new.name: new, pool.name: pool},
            title=rcfg["title"] or f"replicate: {cfg['run']['name']}",
            seed=seed,
            created=json.loads((root / "run.json").read_text())["created"],  # stable across reruns
        )
        paths = write_report(report, tmp / "report", rcfg["formats"])
        return {"formats": sorted(paths)}

    report_stage = run_stage(
        root,
        "report",
        rcfg,
        {"compare": cmp_stage.key, "shift": shift_stage.key if shift_stage else "", **{s.name: s.key for s in build.stages}},
        report_work,
        log=log,
    )
    stages.append(report_stage)
    final = root / "report"
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(report_stage.path / "report", final)
    reports = {p.suffix.lstrip("."): p for p in sorted(final.iterdir()) if p.is_file()}
    manifest = make_manifest(
        kind="run",
        fingerprint=new.fingerprint,
        files={str(p.relative_to(root)): sha256_file(p) for p in sorted(final.rglob("*")) if p.is_file()},
        sources={"original_test": test.info.get("source"), "pool": cfg["pool"]["path"]},
        parents=[build.summary],
        config=json.loads(json.dumps(cfg, default=str)),
        extra={"stages": {s.name: s.key for s in (*build.stages, *stages)}},
    )
    _write_json(root / "manifest.json", manifest)
    summary = {
        "evaluate": eval_stage.summary,
        "shift": shift_stage.summary if shift_stage else None,
        "reports": {k: str(v) for k, v in reports.items()},
    }
    return RunOutput(build, tuple(stages), reports, summary)


@contextmanager
def _weights_env(dirs: list[str]) -> Iterator[None]:
    """Put the config's weight folders first on ``$REPLICATE_WEIGHTS`` while a stage runs."""
    old = os.environ.get("REPLICATE_WEIGHTS")
    if dirs:
        os.environ["REPLICATE_WEIGHTS"] = os.pathsep.join([*dirs, *([old] if old else [])])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("REPLICATE_WEIGHTS", None)
        else:
            os.environ["REPLICATE_WEIGHTS"] = old


def _reanalysis(rcfg: Mapping[str, Any], seed: int) -> list[dict[str, Any]]:
    from replicate.models import load_predictions
    from replicate.stats import compare

    labels = None
    if rcfg["labels"]:
        import numpy as np

        with np.load(rcfg["labels"]) as z:
            labels = {"cifar10-test": z["labels"]}
    ps = load_predictions(rcfg["predictions"], labels=labels)
    datasets = list(ps.datasets)
    original = rcfg["original"] or datasets[0]
    new_sets = list(rcfg["new"]) or [d for d in datasets if d != ps.dataset_name(original)]
    out = []
    for name in new_sets:
        c = compare(
            ps.results(original),
            ps.results(name),
            original_name=ps.dataset_name(original),
            new_name=ps.dataset_name(name),
            seed=seed,
        )
        out.append(c.to_dict())
    return out

