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
