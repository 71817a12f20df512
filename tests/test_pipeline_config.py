"""The pipeline config: checked once, before anything is loaded or written; stage keys follow the code."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from replicate import pipeline
from replicate.pipeline.config import DEFAULTS, PipelineConfig, config_from_dict, load_config
from replicate.pipeline.stages import code_digest, run_stage, stage_key

# a complete, valid config on the embedded bundle; each bad case changes one key
BASE = {
    "run": {"name": "t", "seed": 0},
    "original": {"test": "bundle:demo/cifar10_test_sample.npz", "train": "bundle:demo/cifar10_train_sample.npz"},
    "pool": {"path": "tinyimagenet-cifar10-sample"},
    "keywords": {"target": "bundle:demo/cifar10_1_keyword_counts.json", "synonyms": "tinyimagenet-wordnet-to-cifar10_1"},
    "sampling": {"size": 60},
    "evaluate": {"models": ["resnet20"]},
    "shift": {"features": "pixels", "folds": 3},
    "report": {"formats": ["json"]},
}

# (section, key, bad value, error type, message pattern): at least one of each rule kind
BAD = [
    ("sampling", "size", 12.7, TypeError, r"config \[sampling\] size == 12\.7; must be a whole number >= 1.*without a decimal point"),
    ("run", "seed", 1.5, TypeError, r"config \[run\] seed == 1\.5; must be a whole number >= 0"),
    ("sampling", "size", "abc", TypeError, r"config \[sampling\] size == 'abc'; must be a whole number"),
    ("run", "seed", "x", TypeError, r"config \[run\] seed == 'x'; must be a whole number"),
    ("run", "seed", True, TypeError, r"config \[run\] seed == True; must be a whole number"),
    ("run", "seed", -1, ValueError, r"config \[run\] seed == -1; must be >= 0"),
    ("sampling", "size", 0, ValueError, r"config \[sampling\] size == 0; must be >= 1"),
    ("evaluate", "models", "resnet20", TypeError, r"config \[evaluate\] models == 'resnet20'; must be a list of strings\. Write it as a list: \['resnet20'\]"),
    ("evaluate", "models", ["resnet2O"], KeyError, r"config \[evaluate\] models\[0\] == 'resnet2O'; must be a registered model name.*Did you mean .*'resnet20'"),
    ("evaluate", "models", ["resnet20", "resnet20"], ValueError, r"config \[evaluate\] models == .*must be a list without repeats"),
    ("evaluate", "models", [20], TypeError, r"config \[evaluate\] models\[0\] == 20; must be a non-empty string"),
    ("evaluate", "batch_size", 0, ValueError, r"config \[evaluate\] batch_size == 0; must be >= 1"),
    ("evaluate", "device", "gpu", ValueError, r"config \[evaluate\] device == 'gpu'; must be one of: 'auto', 'cpu', 'cuda'"),
    ("evaluate", "weights_dirs", "weights", TypeError, r"config \[evaluate\] weights_dirs == 'weights'; must be a list of strings"),
    ("report", "formats", ["html", "pdf"], ValueError, r"config \[report\] formats\[1\] == 'pdf'; must be one of: 'html', 'md'"),
    ("report", "formats", [], ValueError, r"config \[report\] formats == \[\]; must be a non-empty list"),
    ("report", "formats", "html", TypeError, r"config \[report\] formats == 'html'; must be a list of strings"),
    ("shift", "folds", 1, ValueError, r"config \[shift\] folds == 1; must be >= 2"),
    ("shift", "folds", 2.5, TypeError, r"config \[shift\] folds == 2\.5; must be a whole number >= 2"),
    ("shift", "permutations", -5, ValueError, r"config \[shift\] permutations == -5; must be >= 0"),
    ("shift", "max_per_set", 2, ValueError, r"config \[shift\] max_per_set == 2; must be >= \[shift\] folds \(3\)"),
    ("shift", "features", "resnet2O", ValueError, r"config \[shift\] features == 'resnet2O'; must be one of: 'pixels'.*Did you mean .*'resnet20'"),
    ("shift", "enabled", "yes", TypeError, r"config \[shift\] enabled == 'yes'; must be true or false"),
    ("sampling", "strategy", "v5", ValueError, r"config \[sampling\] strategy == 'v5'; must be one of: 'v6', 'v4', 'proportional'"),
    ("sampling", "shortfall", "ignore", ValueError, r"config \[sampling\] shortfall == 'ignore'; must be one of: 'fail', 'report', 'redistribute'"),
    ("sampling", "top_k", 0, ValueError, r"config \[sampling\] top_k == 0; must be >= 1"),
    ("keywords", "version", "v5", ValueError, r"config \[keywords\] version == 'v5'; must be one of: 'v4', 'v6', 'v7'"),
    ("keywords", "keyword_column", "", TypeError, r"config \[keywords\] keyword_column == ''; must be a non-empty string"),
    ("run", "name", 7, TypeError, r"config \[run\] name == 7; must be a non-empty string"),
    ("dedup", "enabled", 1, TypeError, r"config \[dedup\] enabled == 1; must be true or false"),
    ("dedup", "l2_rms_max", "x", TypeError, r"config \[dedup\] l2_rms_max == 'x'; must be a number"),
    ("dedup", "aligned_max", 5.0, ValueError, r"config \[dedup\] aligned_max == 5\.0; must be in \[0, 2\]"),
    ("dedup", "l2_rms_maxx", 3, KeyError, r"config key \[dedup\] == 'l2_rms_maxx'.*Did you mean 'l2_rms_max'"),
    ("reanalysis", "new", "cifar10.1-v6", TypeError, r"config \[reanalysis\] new == 'cifar10.1-v6'; must be a list of strings"),
]

REMOTE = [
    ("evaluate", "models", ["hub:attacker/repo:entry"], r"config \[evaluate\] models\[0\] == 'hub:attacker/repo:entry'"),
    ("shift", "features", "hub:attacker/repo:entry", r"config \[shift\] features == 'hub:attacker/repo:entry'"),
    ("dedup", "feature_model", "hub:attacker/repo:entry", r"config \[dedup\] feature_model == 'hub:attacker/repo:entry'"),
]


def _with(section: str, key: str, value: object) -> dict:
    raw = copy.deepcopy(BASE)
    raw.setdefault(section, {})[key] = value
    return raw


def test_base_config_is_valid() -> None:
    cfg = config_from_dict(BASE)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.evaluate.models == ("resnet20",) and cfg.report.formats == ("json",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sampling.size = 50  # type: ignore[misc]
    # the TOML-shaped form round-trips, and is what run.json records
    assert config_from_dict(cfg.to_dict()) == cfg
    assert PipelineConfig().to_dict() == DEFAULTS
    assert cfg.replace(sampling={"size": 50}).sampling.size == 50


@pytest.mark.parametrize(("section", "key", "value", "error", "pattern"), BAD, ids=[f"{s}.{k}={v!r}" for s, k, v, *_ in BAD])
def test_bad_config_fails_before_anything_is_written(
    tmp_path: Path, section: str, key: str, value: object, error: type[Exception], pattern: str
) -> None:
    raw = _with(section, key, value)
    with pytest.raises(error, match=pattern):
        config_from_dict(raw)
    out = tmp_path / "out"
    with pytest.raises(error, match=pattern):
        pipeline.run(raw, out=out, quiet=True)
    assert not out.exists()


@pytest.mark.parametrize(("section", "key", "value", "pattern"), REMOTE, ids=[f"{s}.{k}" for s, k, *_ in REMOTE])
def test_config_never_runs_remote_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, key: str, value: object, pattern: str
) -> None:
    import torch

    marker = tmp_path / "payload-ran"
    monkeypatch.setattr(torch.hub, "load", lambda *a, **k: marker.write_text("ran"))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=pattern + r"; must be a registered model name, not a 'hub:' entry\. "
                       r"A config file never makes replicate run remote code"):
        pipeline.run(_with(section, key, value), out=out, quiet=True)
    assert not marker.exists() and not out.exists()


def test_more_structural_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"config \[sampling\] == 5; must be a table of keys"):
        config_from_dict({"sampling": 5})
    with pytest.raises(KeyError, match=r"config section == 'evaluation'.*Did you mean 'evaluate'"):
        config_from_dict({"evaluation": {}})
    with pytest.raises(ValueError, match=r"config \[sampling\] size == 60; must be left out when per_class is given"):
        config_from_dict(_with("sampling", "per_class", 6))
    raw = _with("sampling", "per_class", 6)
    del raw["sampling"]["size"]
    raw["sampling"]["strategy"] = "proportional"
    with pytest.raises(ValueError, match=r"config \[sampling\] per_class == 6; must be used with strategy = 'v6'"):
        config_from_dict(raw)
    with pytest.raises(TypeError, match=r"config == 3; must be a path to a TOML file or a config mapping"):
        pipeline.build_testset(3, out=tmp_path / "o")  # type: ignore[arg-type]
    assert not (tmp_path / "o").exists()


def test_toml_file_errors_and_cli(tmp_path: Path) -> None:
    """A bad value in a real file: the same message from load_config, one line from the CLI, exit 2."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(textwrap.dedent("""
        [sampling]
        size = 12.7
        [evaluate]
        models = "resnet20"
    """))
    with pytest.raises(TypeError, match=r"config \[sampling\] size == 12\.7"):
        load_config(cfg)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "replicate", "run", str(cfg), "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "replicate run: error: config [sampling] size == 12.7; must be a whole number >= 1 (or left out). "
        "Fix it in the config file (schema: docs/pipeline.md). Write it without a decimal point or quotes."
    ]
    assert not out.exists()


def test_required_keys_are_checked_before_writing(tmp_path: Path) -> None:
    for section, key in (("keywords", "target"), ("original", "test"), ("pool", "path")):
        raw = copy.deepcopy(BASE)
        del raw[section][key]
        with pytest.raises(KeyError, match=rf"config \[{section}\] {key} == None; must be .* Set it in the config"):
            pipeline.build_testset(raw, out=tmp_path / "o", quiet=True)
        assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- code in the stage keys


def _module(root: Path, name: str, body: str) -> None:
    (root / f"{name}.py").write_text(body)


def test_code_digest_follows_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    _module(tmp_path, "pipecfg_stage_mod", "def f():\n    return 1\n")
    pkg = tmp_path / "pipecfg_stage_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "template.j2").write_text("{{ x }}")
    first = code_digest(["pipecfg_stage_mod", "pipecfg_stage_pkg"])
    assert code_digest(["pipecfg_stage_pkg", "pipecfg_stage_mod"]) == first  # order-free, same code same digest
    _module(tmp_path, "pipecfg_stage_mod", "def f():\n    return 2\n")
    second = code_digest(["pipecfg_stage_mod", "pipecfg_stage_pkg"])
    assert second != first
    (pkg / "template.j2").write_text("{{ y }}")  # a package's non-Python files count too
    assert code_digest(["pipecfg_stage_mod", "pipecfg_stage_pkg"]) != second
    key = stage_key("s", {"a": 1}, {"in": "x"}, ["pipecfg_stage_mod"])
    assert key != stage_key("s", {"a": 1}, {"in": "x"})  # the code is in the key
    with pytest.raises(ModuleNotFoundError, match="stage code module == 'no_such_module_xyz'; must be an importable module"):
        code_digest(["no_such_module_xyz"])
    # replicate's own stage modules are all found
    from replicate.pipeline import analysis, build

    for mods in (build.DEDUP_CODE, build.SAMPLE_CODE, analysis.EVALUATE_CODE, analysis.COMPARE_CODE,
                 analysis.SHIFT_CODE, analysis.REPORT_CODE):
        assert len(code_digest(mods)) == 64


def test_stage_cache_follows_the_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    _module(tmp_path, "pipecfg_stage_code", "VALUE = 1\n")
    calls: list[int] = []

    def work(tmp: Path) -> dict:
        calls.append(1)
        (tmp / "x.txt").write_text("x")
        return {"n": len(calls)}

    def go():
        return run_stage(tmp_path / "out", "s", {"k": 1}, {"in": "a"}, work, code=["pipecfg_stage_code"])

    a = go()
    b = go()
    assert (a.cached, b.cached, len(calls)) == (False, True, 1)  # same code: the cache holds
    assert json.loads((a.path / "stage.json").read_text())["files"] == ["x.txt"]
    _module(tmp_path, "pipecfg_stage_code", "VALUE = 2\n")
    c = go()
    assert (c.cached, len(calls)) == (False, 2) and c.path != a.path  # changed code: recomputed
    assert go().cached


def test_stale_temp_dirs_only_of_dead_processes(tmp_path: Path) -> None:
    root = tmp_path / "out"
    key = stage_key("s", {}, {})
    stages = root / "stages"
    stages.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_dir = stages / f".s-{key[:16]}.tmp-{int(dead.stdout)}"
        live_dir = stages / f".s-{key[:16]}.tmp-{live.pid}"
        for d in (dead_dir, live_dir):
            d.mkdir()
            (d / "partial").write_text("p")
        info = run_stage(root, "s", {}, {}, lambda tmp: {})
        assert not info.cached
        assert not dead_dir.exists()  # its writer is gone
        assert (live_dir / "partial").read_text() == "p"  # a live process's temp dir is not touched
    finally:
        live.kill()
        live.wait()


# [pool] keys of a streamed pool (stream = true): one bad value per rule, each error names the key
STREAM_BAD = [
    ("kind", "tar", ValueError, r"config \[pool\] kind == 'tar'; must be one of: 'folder', 'webdataset', 'parquet'"),
    ("kind", 3, TypeError, r"config \[pool\] kind == 3; must be a non-empty string"),
    ("thumbnail", 0, ValueError, r"config \[pool\] thumbnail == 0; must be sides >= 1"),
    ("thumbnail", [32, 0], ValueError, r"config \[pool\] thumbnail == \[32, 0\]; must be sides >= 1"),
    ("thumbnail", [32, 32, 3], TypeError, r"config \[pool\] thumbnail == \[32, 32, 3\]; must be a whole number or a list "
     r"\[height, width\]"),
    ("thumbnail", 32.0, TypeError, r"config \[pool\] thumbnail == 32\.0; must be a whole number or a list"),
    ("thumbnail", "32", TypeError, r"config \[pool\] thumbnail == '32'; must be a whole number or a list"),
    ("fit", "crop", ValueError, r"config \[pool\] fit == 'crop'; must be one of: 'squash', 'center_crop'"),
    ("fit", True, TypeError, r"config \[pool\] fit == True; must be a non-empty string"),
    ("resample", "nearest", ValueError, r"config \[pool\] resample == 'nearest'; must be one of: 'box', 'lanczos', "
     r"'bicubic', 'bilinear'"),
    ("upsample", "yes", TypeError, r"config \[pool\] upsample == 'yes'; must be true or false"),
    ("upsample", 1, TypeError, r"config \[pool\] upsample == 1; must be true or false"),
    ("exif_transpose", 0, TypeError, r"config \[pool\] exif_transpose == 0; must be true or false"),
    ("on_error", "ignore", ValueError, r"config \[pool\] on_error == 'ignore'; must be one of: 'raise', 'skip'"),
    ("chunk_size", 0, ValueError, r"config \[pool\] chunk_size == 0; must be >= 1"),
    ("chunk_size", 64.5, TypeError, r"config \[pool\] chunk_size == 64\.5; must be a whole number >= 1"),
    ("chunk_size", "64", TypeError, r"config \[pool\] chunk_size == '64'; must be a whole number >= 1"),
    ("workers", 0, ValueError, r"config \[pool\] workers == 0; must be >= 1"),
    ("workers", 2.0, TypeError, r"config \[pool\] workers == 2\.0; must be a whole number >= 1"),
    ("image_column", "", TypeError, r"config \[pool\] image_column == ''; must be a non-empty string"),
    ("image_column", ["image"], TypeError, r"config \[pool\] image_column == \['image'\]; must be a non-empty string"),
    ("metadata", 5, TypeError, r"config \[pool\] metadata == 5; must be a non-empty string"),
    ("class_names", "cat", TypeError, r"config \[pool\] class_names == 'cat'; must be a list of strings\. Write it as a "
     r"list: \['cat'\]"),
    ("class_names", [], ValueError, r"config \[pool\] class_names == \[\]; must be a non-empty list"),
    ("class_names", ["cat", "dog", "cat"], ValueError, r"config \[pool\] class_names == .*must be a list without repeats.*"
     r"'cat' is listed twice"),
    ("class_names", ["cat", 7], TypeError, r"config \[pool\] class_names\[1\] == 7; must be a non-empty string"),
    ("class_names", ["cat", ""], TypeError, r"config \[pool\] class_names\[1\] == ''; must be a non-empty string"),
]

# a valid non-default value of every stream key (each is refused without stream = true)
STREAM_GOOD = {"kind": "webdataset", "thumbnail": [48, 40], "fit": "center_crop", "resample": "lanczos",
               "upsample": True, "exif_transpose": False, "on_error": "skip", "chunk_size": 64, "workers": 2,
               "image_column": "jpg", "metadata": "rows.csv", "class_names": ["cat", "dog"]}


def _streamed(**keys: object) -> dict:
    raw = copy.deepcopy(BASE)
    raw["pool"] = {"path": "shards", "stream": True, **keys}
    return raw


@pytest.mark.parametrize(("key", "value", "error", "pattern"), STREAM_BAD, ids=[f"{k}={v!r}" for k, v, *_ in STREAM_BAD])
def test_bad_stream_key_names_the_key_value_and_rule(key: str, value: object, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        config_from_dict(_streamed(**{key: value}))


def test_every_stream_key_is_covered() -> None:
    from replicate.pipeline.config import STREAM_KEYS

    assert set(STREAM_GOOD) == set(STREAM_KEYS)
    assert set(STREAM_KEYS) <= {k for k, *_ in STREAM_BAD}


@pytest.mark.parametrize("key", sorted(STREAM_GOOD))
def test_stream_keys_need_stream_true(key: str) -> None:
    value = STREAM_GOOD[key]
    raw = copy.deepcopy(BASE)
    raw["pool"][key] = value
    with pytest.raises(ValueError, match=rf"config \[pool\] {key} == .*; must be left out unless stream = true.*"
                                         r"Add stream = true"):
        config_from_dict(raw)
    raw["pool"]["stream"] = False
    with pytest.raises(ValueError, match=rf"config \[pool\] {key} == "):
        config_from_dict(raw)
    # with stream = true the same value is accepted (kind-specific keys with a matching kind)
    kind = {"image_column": "parquet", "metadata": "folder"}.get(key)
    cfg = config_from_dict(_streamed(**{key: value}, **({"kind": kind} if kind and key != "kind" else {})))
    got = getattr(cfg.pool, key)
    assert (list(got) if isinstance(got, tuple) else got) == value


def test_kind_specific_stream_keys_and_round_trip() -> None:
    with pytest.raises(ValueError, match=r"config \[pool\] image_column == 'jpg'; must be used with kind = 'parquet'"):
        config_from_dict(_streamed(kind="webdataset", image_column="jpg"))
    with pytest.raises(ValueError, match=r"config \[pool\] metadata == 'rows.csv'; must be used with kind = 'folder'"):
        config_from_dict(_streamed(kind="parquet", metadata="rows.csv"))
    cfg = config_from_dict(_streamed(class_names=["cat", "dog"], thumbnail=[48, 40]))
    assert cfg.pool.class_names == ("cat", "dog") and cfg.pool.thumbnail == (48, 40)
    assert config_from_dict(cfg.to_dict()) == cfg
    assert config_from_dict(BASE).pool.class_names is None


def test_class_names_refused_for_a_named_pool() -> None:
    from replicate.pipeline.build import load_pool

    cfg = config_from_dict(_streamed(class_names=["cat", "dog"]))
    section = dataclasses.replace(cfg.pool, path="tinyimagenet-cifar10-sample")
    with pytest.raises(ValueError, match=r"config \[pool\] class_names == \['cat', 'dog'\]; must be used with a pool "
                                         r"path .*named pool"):
        load_pool("tinyimagenet-cifar10-sample", section)


def test_run_executor_and_address_rules() -> None:
    """[run] executor is one of replicate.distributed.EXECUTORS; address needs executor = 'dask';
    'dask' needs a streamed pool and one decode worker per process; both stay out of the config hash."""
    from replicate.pipeline.build import config_hash, with_executor

    streamed = {"pool": {"path": "p", "stream": True}}
    cfg = config_from_dict({"run": {"executor": "dask", "address": "tcp://h:8786"}, **streamed})
    assert (cfg.run.executor, cfg.run.address) == ("dask", "tcp://h:8786")
    assert config_from_dict({}).run.executor == "local" and config_from_dict({}).run.address is None
    with pytest.raises(ValueError, match=r"config \[run\] executor == 'ray'; must be one of: 'local', 'dask'"):
        config_from_dict({"run": {"executor": "ray"}, **streamed})
    with pytest.raises(TypeError, match=r"config \[run\] address == 8786"):
        config_from_dict({"run": {"executor": "dask", "address": 8786}, **streamed})
    with pytest.raises(ValueError, match=r"config \[run\] address == 'tcp://h:8786'; must be used with executor = "
                                         r"'dask'.*executor 'local' connects to no cluster"):
        config_from_dict({"run": {"address": "tcp://h:8786"}, **streamed})
    with pytest.raises(ValueError, match=r"config \[run\] executor == 'dask'; must be used with \[pool\] stream = "
                                         r"true.*Add stream = true"):
        config_from_dict({"run": {"executor": "dask"}, "pool": {"path": "p"}})
    with pytest.raises(ValueError, match=r"config \[pool\] workers == 4; must be 1 with \[run\] executor = 'dask'"):
        config_from_dict({"run": {"executor": "dask"}, "pool": {"path": "p", "stream": True, "workers": 4}})
    # a dedup feature model the workers cannot load: refused before anything runs
    with pytest.raises(ValueError, match=r"config \[dedup\] feature_model == 'resnet56'; must be None or one of "
                                         r"\('copydesc32',\) with executor 'dask'.*executor = 'local'"):
        config_from_dict({"run": {"executor": "dask"}, "dedup": {"feature_model": "resnet56"}, **streamed})
    with pytest.raises(ValueError, match=r"config \[dedup\] feature_model == 'resnet56'; must be None"):
        with_executor(config_from_dict({"dedup": {"feature_model": "resnet56"}, **streamed}), "dask")
    desc = config_from_dict({"run": {"executor": "dask"}, "dedup": {"feature_model": "copydesc32"}, **streamed})
    assert desc.dedup.options["feature_model"] == "copydesc32"
    assert config_from_dict({"run": {"executor": "dask"}, "dedup": {"enabled": False, "feature_model": "resnet56"},
                             **streamed}).run.executor == "dask"  # no dedup stage: nothing to refuse
    local = config_from_dict(streamed)
    assert config_hash(cfg) == config_hash(local)  # where the stages run is not what they compute
    assert config_hash(local) != config_hash(local.replace(run={"seed": 1}))
    assert with_executor(cfg, "local").run.address is None
    assert with_executor(local, "dask", "tcp://x:1").run.address == "tcp://x:1"
    assert with_executor(local) is local
    with pytest.raises(ValueError, match=r"config \[run\] address == 'tcp://x:1'; must be used with executor"):
        with_executor(local, address="tcp://x:1")
