"""End to end on small real data cut from the embedded bundle: build, cache, resume, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import replicate
from replicate import pipeline
from replicate.config import BUNDLE, config_from_dict, load_config

DEMO = BUNDLE / "demo"


def _cut(src: Path, dst: Path, n: int, label_key: str = "labels") -> None:
    with np.load(src) as d:
        arrays = {k: d[k] for k in d.files}
    per = {k: v[:n] if v.ndim and len(v) == len(arrays["images"]) else v for k, v in arrays.items()}
    # keep every class: take the first n/10 of each
    labels = arrays[label_key]
    idx = np.sort(np.concatenate([np.flatnonzero(labels == c)[: max(1, n // 10)] for c in np.unique(labels)]))
    per = {k: v[idx] if v.ndim and len(v) == len(labels) else v for k, v in arrays.items()}
    np.savez(dst, **per)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A config over 100 test, 100 train and ~160 pool images of the bundle's real data."""
    d = tmp_path_factory.mktemp("small")
    _cut(DEMO / "cifar10_test_sample.npz", d / "test.npz", 100)
    _cut(DEMO / "cifar10_train_sample.npz", d / "train.npz", 100)
    _cut(BUNDLE / "candidates/tinyimagenet-cifar10-sample/images.npz", d / "pool.npz", 200, "cifar10_label")
    (d / "config.toml").write_text(
        """
[run]
name = "small"
seed = 3
out = "out"

[original]
test = "test.npz"
train = "train.npz"

[pool]
path = "pool.npz"

[keywords]
target = "bundle:demo/cifar10_1_keyword_counts.json"
version = "v6"
synonyms = "tinyimagenet-wordnet-to-cifar10_1"

[sampling]
size = 60
shortfall = "redistribute"

[evaluate]
models = ["resnet20"]

[reanalysis]
predictions = "bundle:demo/cifar10_1_predictions.npz"
new = ["cifar10.1-v6"]

[shift]
features = "pixels"
permutations = 20
folds = 3

[report]
formats = ["html", "json", "md"]
"""
    )
    return d / "config.toml"


def test_config_defaults_and_paths(small: Path) -> None:
    cfg = load_config(small)
    assert cfg.sampling.size == 60
    assert cfg.sampling.strategy == "v6"  # default
    assert Path(cfg.original.test).is_absolute()
    assert cfg.keywords.target.endswith("replicate/data/demo/cifar10_1_keyword_counts.json")
    assert cfg.keywords.synonyms == "tinyimagenet-wordnet-to-cifar10_1"


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        ({"sampling": {"sise": 10}}, r"config key \[sampling\] == 'sise'; must be one of: .* Did you mean 'size'"),
        ({"sampeling": {}}, r"config section == 'sampeling'; must be one of: .* Did you mean 'sampling'"),
        ({"dedup": {"l2_rms_maxx": 3}}, r"config key \[dedup\] == 'l2_rms_maxx'.* Did you mean 'l2_rms_max'"),
    ],
)
def test_config_unknown_keys(raw: dict, pattern: str) -> None:
    with pytest.raises(KeyError, match=pattern):
        config_from_dict(raw)


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config == .*nope.toml'; must be an existing TOML file"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nname=1")
    with pytest.raises(ValueError, match=r"config == .*bad.toml'; must be valid TOML"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match=r"bundle path == 'bundle:nothing.npz'; must be a file in the bundle"):
        config_from_dict({"original": {"test": "bundle:nothing.npz"}})


def _tree(root: Path, skip: tuple[str, ...] = ("manifest.json",)) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip}


def test_build_is_cached_and_deterministic(small: Path, tmp_path: Path) -> None:
    first = pipeline.build_testset(small, out=tmp_path / "a", quiet=True)
    assert [s.cached for s in first.stages] == [False, False]
    new = replicate.load(first.testset_path)
    assert len(new) == first.summary["new_testset"]["n"] > 0
    assert new.info["parents"][0]["name"] == "pool"
    # the new set repeats no original image and no flagged pool image
    originals = np.concatenate([replicate.load(getattr(load_config(small).original, k)).content_hashes for k in ("test", "train")])
    assert not set(map(bytes, new.content_hashes)) & set(map(bytes, originals))
    again = pipeline.build_testset(small, out=tmp_path / "a", quiet=True)
    assert [s.cached for s in again.stages] == [True, True]
    other = pipeline.build_testset(small, out=tmp_path / "b", quiet=True)
    assert _tree(first.testset_path) == _tree(other.testset_path)


def test_out_dir_guard(small: Path, tmp_path: Path) -> None:
    pipeline.build_testset(small, out=tmp_path / "a", quiet=True)
    cfg = load_config(small).to_dict()  # a TOML-shaped mapping works as a config too
    cfg["sampling"]["size"] = 50
    with pytest.raises(FileExistsError, match=r"out == .*; must be an empty directory or one holding this same run.*--overwrite"):
        pipeline.build_testset(cfg, out=tmp_path / "a", quiet=True)
    result = pipeline.build_testset(cfg, out=tmp_path / "a", overwrite=True, quiet=True)
    assert json.loads((tmp_path / "a/run.json").read_text())["config"]["sampling"]["size"] == 50
    assert result.summary["new_testset"]["n"] <= 50
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="holds other files"):
        pipeline.build_testset(small, out=foreign, quiet=True)
    with pytest.raises(FileExistsError, match="will not delete even with --overwrite"):
        pipeline.build_testset(small, out=foreign, overwrite=True, quiet=True)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_inconsistent_class_names(small: Path, tmp_path: Path) -> None:
    cfg = load_config(small).to_dict()
    with np.load(cfg["original"]["test"]) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["label_names"] = np.array([f"c{i}" for i in range(10)])
    np.savez(tmp_path / "renamed.npz", **arrays)
    cfg["original"]["test"] = str(tmp_path / "renamed.npz")
    with pytest.raises(ValueError, match=r"class_names of .* must equal those of 'original-test'"):
        pipeline.build_testset(cfg, out=tmp_path / "x", quiet=True)
    cfg["original"]["test"] = str(tmp_path / "missing.npz")
    with pytest.raises(KeyError, match=r"config \[keywords\] target == None; must be keyword counts"):
        pipeline.build_testset({**cfg, "keywords": {**cfg["keywords"], "target": None}}, out=tmp_path / "z", quiet=True)
    with pytest.raises(FileNotFoundError, match=r"path == .*missing.npz'; must be an existing file"):
        pipeline.build_testset(cfg, out=tmp_path / "y", quiet=True)


@pytest.mark.slow
def test_full_run_and_reports(small: Path, tmp_path: Path) -> None:
    out = pipeline.run(small, out=tmp_path / "run", quiet=True)
    assert set(out.reports) == {"html", "json", "md"}
    report = json.loads(out.reports["json"].read_text())
    assert len(report["comparisons"]) == 2  # the models on the new set, and CIFAR-10.1 v6
    html = out.reports["html"].read_text()
    assert "<img" in html and "alt=" in html
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert set(manifest["stages"]) == {"dedup", "sample", "evaluate", "compare", "shift", "report"}
    again = pipeline.run(small, out=tmp_path / "run", quiet=True)
    assert all(s.cached for s in again.stages) and all(s.cached for s in again.build.stages)
    assert again.reports["json"].read_bytes() == out.reports["json"].read_bytes()


@pytest.mark.slow
def test_kill_mid_stage_then_resume(small: Path, tmp_path: Path) -> None:
    clean = pipeline.build_testset(small, out=tmp_path / "clean", quiet=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "replicate", "build", str(small), "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if list((out / "stages").glob(".*.tmp-*")) if (out / "stages").is_dir() else []:
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail("the build finished before it could be killed mid-stage")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "new-testset").exists() or not (out / "build.json").exists()
    resumed = pipeline.build_testset(small, out=out, quiet=True)
    assert _tree(resumed.testset_path) == _tree(clean.testset_path)
    assert not list((out / "stages").glob(".*.tmp-*"))
