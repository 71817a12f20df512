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


# --------------------------------------------------------------------------- the output directory


@pytest.fixture(scope="module")
def fast(small: Path) -> Path:
    """The small config without the dedup stage (the build is then the sample stage only)."""
    text = small.read_text().replace("[keywords]", "[dedup]\nenabled = false\n\n[keywords]")
    path = small.with_name("fast.toml")
    path.write_text(text)
    return path


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def test_per_class_is_size_over_classes(fast: Path, tmp_path: Path) -> None:
    """[sampling] per_class = 6 draws the same set as size = 60 over CIFAR-10.1's ten classes."""
    by_size = pipeline.build_testset(fast, out=tmp_path / "size", quiet=True)
    raw = load_config(fast).to_dict()
    raw["sampling"].update(size=None, per_class=6)
    by_class = pipeline.build_testset(raw, out=tmp_path / "per-class", quiet=True)
    assert by_class.summary["new_testset"]["fingerprint"] == by_size.summary["new_testset"]["fingerprint"]
    assert json.loads((tmp_path / "per-class/run.json").read_text())["config"]["sampling"]["per_class"] == 6


def test_overwrite_removes_only_what_replicate_wrote(fast: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    first = pipeline.build_testset(fast, out=out, quiet=True)
    old_stage = first.stages[0].path
    mine = {"notes.txt": "my notes", "review.sqlite": "db", "new-testset/comment.txt": "c", "stages/keep.txt": "k"}
    for rel, text in mine.items():
        (out / rel).write_text(text)
    cfg = load_config(fast).replace(sampling={"size": 50})
    with pytest.warns(UserWarning, match=r"replaced the set in .*new-testset but kept 1 file"):
        second = pipeline.build_testset(cfg, out=out, overwrite=True)
    assert not old_stage.exists()  # the earlier run's stage is gone
    assert second.stages[0].path.is_dir() and (out / "new-testset/imageset.json").is_file()
    for rel, text in mine.items():
        assert (out / rel).read_text() == text
    err = capsys.readouterr().err
    assert "kept 4 files replicate did not write (or did not list): new-testset/comment.txt, notes.txt, review.sqlite, stages/keep.txt" in err


def test_output_path_that_is_a_file(fast: Path, tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"out == .*a-file'; must be a directory or a path that does not exist yet\. It is a file"):
        pipeline.build_testset(fast, out=target, quiet=True)
    with pytest.raises(NotADirectoryError, match=r"out == .*a-file/sub'; must be a path whose parents are directories"):
        pipeline.build_testset(fast, out=target / "sub", quiet=True)
    for argv in (["run", str(fast)], ["demo"]):
        proc = subprocess.run(
            [sys.executable, "-m", "replicate", *argv, "--out", str(target), "--quiet"],
            capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "must be a directory or a path that does not exist yet" in lines[0], proc.stderr
    assert target.read_text() == "x"


_HOLDER = """
import sys
from replicate.pipeline.build import as_config, logger, opened
with opened(as_config(sys.argv[1]), sys.argv[2], False, logger(True)):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_second_run_on_a_locked_directory_stops_naming_the_holder(fast: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(replicate.__file__).parent.parent)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(fast), str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        second = subprocess.run(
            [sys.executable, "-m", "replicate", "build", str(fast), "--out", str(out), "--quiet"],
            capture_output=True, text=True, timeout=300, env=env,
        )
        assert second.returncode == 2
        assert f"process {holder.pid} holds its lock" in second.stderr and len(second.stderr.strip().splitlines()) == 1
        assert not (out / "stages").exists()  # the second run wrote nothing
    finally:
        holder.communicate("", timeout=60)
    third = subprocess.run(
        [sys.executable, "-m", "replicate", "build", str(fast), "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert third.returncode == 0, third.stderr
    assert (out / "new-testset/imageset.json").is_file()


def test_finished_run_reads_from_a_read_only_directory(fast: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from replicate.pipeline import outdir

    out = tmp_path / "run"
    pipeline.build_testset(fast, out=out, quiet=True)
    before = _snapshot(out)
    monkeypatch.setattr(outdir, "_writable", lambda root: False)
    again = pipeline.build_testset(fast, out=out, quiet=True)
    assert all(s.cached for s in again.stages)
    assert _snapshot(out) == before  # nothing written, not even run.json or build.json
    for stage in (out / "stages").glob("sample-*"):
        stage.rename(tmp_path / "moved")
    with pytest.raises(PermissionError, match=r"out == .*; must be a writable directory\. Stage 'sample' is not cached there"):
        pipeline.build_testset(fast, out=out, quiet=True)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_for_real(fast: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    pipeline.build_testset(fast, out=out, quiet=True)
    paths = [out, *[p for p in out.rglob("*") if p.is_dir()]]
    for p in paths:
        p.chmod(0o555)
    try:
        assert all(s.cached for s in pipeline.build_testset(fast, out=out, quiet=True).stages)
        with pytest.raises(FileExistsError, match="holds a run with a different config"):
            pipeline.build_testset(load_config(fast).replace(sampling={"size": 50}), out=out, quiet=True)
    finally:
        for p in paths:
            p.chmod(0o755)
