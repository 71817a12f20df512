"""Hardening: no code runs from data or config, nothing is deleted that replicate did not
write, and bad input fails fast with one clear error and nothing written (issue 15)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from replicate._files import inside, manifest_files, remaining, remove_written


def tree(root: Path) -> list[str]:
    """Every file and directory under root, as sorted relative paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# --------------------------------------------------------------------------- remove only what replicate wrote


def test_remove_written_keeps_unlisted_files_and_prunes_empty_dirs(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "stage").mkdir(parents=True)
    (root / "mine").mkdir()
    for name in ("a.npy", "stage/b.npy", "mine/c.npy", "notes.txt", "review.sqlite"):
        (root / name).write_text("x")
    kept = remove_written(root, ["a.npy", "stage/b.npy", "mine/c.npy", "missing.npy"])
    assert kept == ["notes.txt", "review.sqlite"]
    assert tree(root) == ["notes.txt", "review.sqlite"]  # stage/ and mine/ were emptied, so pruned
    assert remove_written(root, ["notes.txt", "review.sqlite"]) == []
    assert root.is_dir() and remaining(root) == []


@pytest.mark.parametrize("name", ["../victim.txt", "/etc/passwd", "sub/../../victim.txt", "", "link/victim.txt"])
def test_remove_written_never_leaves_the_directory(tmp_path: Path, name: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    root = tmp_path / "out"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)  # a link that points out of the directory
    assert inside(root, name) is None
    remove_written(root, [name, str(victim)])
    assert victim.read_text() == "keep me"


def test_remove_written_removes_a_link_not_its_target(tmp_path: Path) -> None:
    target = tmp_path / "target.txt"
    target.write_text("keep me")
    root = tmp_path / "out"
    root.mkdir()
    (root / "data.npy").symlink_to(target)
    (root / "dir").mkdir()
    assert remove_written(root, ["data.npy", "dir"]) == ["dir"]  # a listed directory stays
    assert target.read_text() == "keep me"


def test_manifest_files_lists_the_manifest_itself(tmp_path: Path) -> None:
    assert manifest_files(tmp_path) == []
    (tmp_path / "manifest.json").write_text('{"files": {"images.npy": "ab", "labels.npy": "cd"}}')
    assert manifest_files(tmp_path) == ["images.npy", "labels.npy", "manifest.json"]
    (tmp_path / "manifest.json").write_text("not json")
    assert manifest_files(tmp_path) == []
    assert os.path.isdir(tmp_path)


# --------------------------------------------------------------------------- security: hub models run remote code


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torch.hub.load replaced by a 'payload' that leaves a marker file; nothing is downloaded."""
    import torch

    marker = tmp_path / "PWNED"

    def payload(repo: str, entry: str, *args: object, **kwargs: object) -> torch.nn.Module:
        marker.write_text(f"{repo}:{entry} ran with {kwargs}")
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32 * 3, 10))

    monkeypatch.setattr(torch.hub, "load", payload)
    monkeypatch.delenv("REPLICATE_OFFLINE", raising=False)
    monkeypatch.setenv("REPLICATE_HOME", str(tmp_path / "home"))
    return marker


@pytest.mark.parametrize("api", ["evaluate", "predict", "extract_features"])
def test_hub_model_is_refused_without_opt_in(fake_hub: Path, toy, api: str) -> None:
    import replicate.evaluate as ev

    with pytest.raises(PermissionError, match=r"model == 'hub:evil/repo:entry'.*allow_remote_code=True"):
        getattr(ev, api)("hub:evil/repo:entry", toy, device="cpu")
    assert not fake_hub.exists()


def test_hub_model_is_refused_offline_even_with_opt_in(fake_hub: Path, toy, monkeypatch: pytest.MonkeyPatch) -> None:
    from replicate.evaluate import evaluate

    monkeypatch.setenv("REPLICATE_OFFLINE", "1")
    with pytest.raises(PermissionError, match="REPLICATE_OFFLINE"):
        evaluate("hub:evil/repo:entry", toy, device="cpu", allow_remote_code=True)
    assert not fake_hub.exists()


def test_hub_model_runs_only_on_explicit_opt_in(fake_hub: Path, toy) -> None:
    from replicate.evaluate import evaluate

    with pytest.raises(PermissionError):
        evaluate("hub:evil/repo:entry", toy, device="cpu", allow_remote_code="yes")  # truthy is not opt-in
    assert not fake_hub.exists()
    r = evaluate("hub:owner/repo:entry", toy, device="cpu", allow_remote_code=True, cache=False)
    assert fake_hub.exists() and r.n == len(toy)


def test_hub_feature_model_in_dedup_is_refused(fake_hub: Path, toy) -> None:
    from conftest import make_imageset

    from replicate.dedup import DedupConfig, find_near_duplicates

    ref = make_imageset(n=4, seed=1, name="ref")
    with pytest.raises(PermissionError, match="hub:evil/repo:entry"):
        find_near_duplicates(make_imageset(n=4, name="q"), {"ref": ref}, config=DedupConfig(feature_model="hub:evil/repo:entry"))
    assert not fake_hub.exists()


def test_cli_hub_model_needs_the_flag(fake_hub: Path, toy, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from replicate.cli import main

    data = toy.save(tmp_path / "toy")
    assert main(["evaluate", "-m", "hub:evil/repo:entry", "-d", str(data)]) == 2
    err = capsys.readouterr().err
    assert "--allow-remote-code" in err and "Traceback" not in err
    assert not fake_hub.exists()
    assert main(["evaluate", "-m", "hub:evil/repo:entry", "-d", str(data), "--allow-remote-code", "--no-cache"]) == 0
    assert fake_hub.exists()
