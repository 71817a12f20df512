"""Hardening: no code runs from data or config, nothing is deleted that replicate did not
write, and bad input fails fast with one clear error and nothing written (issue 15)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import make_imageset

import replicate
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


# --------------------------------------------------------------------------- security: CIFAR batches are pickles


def py2_cifar_batch(data: np.ndarray, labels: list[int], filenames: list[bytes]) -> bytes:
    """A batch byte for byte as the official CIFAR-10 python files are written: Python 2
    cPickle at protocol 2, the array by numpy.core.multiarray._reconstruct and its raw bytes
    as a (Python 2) str. Built opcode by opcode so no Python 2 is needed."""
    import struct

    def s(b: bytes) -> bytes:  # SHORT_BINSTRING / BINSTRING
        return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b

    def i(n: int) -> bytes:
        return b"K" + bytes([n]) if n < 256 else b"M" + struct.pack("<H", n) if n < 65536 else b"J" + struct.pack("<i", n)

    n, m = data.shape
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b") + b"\x87R"
        + b"(" + i(1) + i(n) + i(m) + b"\x86"
        + b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R"
        + b"(" + i(3) + s(b"|") + b"NNN" + b"J\xff\xff\xff\xffJ\xff\xff\xff\xff" + i(0) + b"tb"
        + b"I00\n" + s(data.tobytes()) + b"tb"
    )
    out = b"\x80\x02}(" + s(b"data") + array
    out += s(b"labels") + b"](" + b"".join(i(v) for v in labels) + b"e"
    out += s(b"batch_label") + s(b"testing batch 1 of 1")
    out += s(b"filenames") + b"](" + b"".join(s(f) for f in filenames) + b"e"
    return out + b"u."


def write_py2_cifar(folder: Path, n: int = 5) -> np.ndarray:

    from replicate import CIFAR10_CLASSES

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    rows = images.transpose(0, 3, 1, 2).reshape(n, -1)
    (folder / "test_batch").write_bytes(py2_cifar_batch(rows, list(range(n)), [f"f{k}.png".encode() for k in range(n)]))
    names = b"".join(b"U" + bytes([len(c)]) + c.encode() for c in CIFAR10_CLASSES)
    (folder / "batches.meta").write_bytes(
        b"\x80\x02}(U\x0blabel_names](" + names + b"eU\x07num_visM\x00\x0cU\x13num_cases_per_batchM\x10'u."
    )
    return images


def test_restricted_unpickler_reads_batches_as_published(tmp_path: Path) -> None:



    images = write_py2_cifar(tmp_path / "cifar-10-batches-py")
    s = replicate.load(tmp_path / "cifar-10-batches-py")
    assert np.array_equal(s.images, images) and s.labels.tolist() == [0, 1, 2, 3, 4]
    assert s.class_names == replicate.CIFAR10_CLASSES and s.metadata["filename"][0] == "f0.png"
    # the same batch re-pickled by Python 3 + numpy 2 at every protocol (bytes via _codecs at <= 2)
    d = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes(), encoding="bytes")
    d[b"labels"] = np.asarray(d[b"labels"], dtype=np.int64)  # numpy arrays and numpy scalars too
    d[b"extra"] = [np.int64(3), np.float32(0.5), (1, 2), {"k": None}, True, 1.5, bytearray(b"x")]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        batch = tmp_path / f"p{protocol}" / "test_batch"
        batch.parent.mkdir()
        batch.write_bytes(pickle.dumps(d, protocol=protocol))
        assert np.array_equal(replicate.load(batch).images, images), protocol


class _Payload:
    """Unpickling this runs a command that creates a marker file."""

    def __init__(self, how: str, marker: Path) -> None:
        self.how, self.marker = how, marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        if self.how == "os.system":
            return (os.system, (f"touch {self.marker}",))
        if self.how == "exec":
            import builtins

            return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))
        import subprocess

        return (subprocess.call, (["touch", str(self.marker)],))


def write_evil_cifar(folder: Path, how: str, marker: Path, where: str = "test_batch") -> Path:
    """A CIFAR-10 folder whose test batch (or meta file) carries the payload."""


    folder.mkdir(parents=True)
    rows = np.zeros((2, 3072), np.uint8)
    good = {b"data": rows, b"labels": [0, 1]}
    payload = {b"data": rows, b"labels": [0, 1], b"x": _Payload(how, marker)}
    (folder / "test_batch").write_bytes(pickle.dumps(payload if where == "test_batch" else good))
    meta = {b"label_names": [b"a", b"b"], **({b"x": _Payload(how, marker)} if where == "meta" else {})}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return folder


@pytest.mark.parametrize("how", ["os.system", "exec", "subprocess"])
@pytest.mark.parametrize("where", ["test_batch", "meta"])
def test_evil_cifar_pickle_is_refused_by_the_loaders(tmp_path: Path, how: str, where: str) -> None:
    from replicate.io import load_cifar

    marker = tmp_path / "PWNED"
    folder = write_evil_cifar(tmp_path / "cifar-10-batches-py", how, marker, where)
    bad = folder / where.replace("meta", "batches.meta")
    for call in (lambda: replicate.load(folder), lambda: load_cifar(tmp_path), lambda: replicate.load(folder / "test_batch")):
        with pytest.raises(ValueError, match=rf"file == '{bad}'; must be a CIFAR python-pickle batch.*refused to unpickle"):
            call()
    assert not marker.exists()


def test_evil_cifar_pickle_is_refused_by_the_cli(tmp_path: Path, toy, capsys: pytest.CaptureFixture[str]) -> None:
    from replicate.cli import main

    marker = tmp_path / "PWNED"
    folder = write_evil_cifar(tmp_path / "evil" / "cifar-10-batches-py", "os.system", marker)
    good = toy.save(tmp_path / "good")
    out = tmp_path / "dedup-out"
    for argv in (
        ["info", str(folder)],
        ["info", str(folder / "test_batch")],
        ["dedup", str(folder), "--reference", f"good={good}", "--out", str(out)],
        ["dedup", str(good), "--reference", f"evil={folder}", "--out", str(out)],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "refused to unpickle" in err and str(folder / "test_batch") in err, argv
    assert not marker.exists()
    assert not out.exists()


# --------------------------------------------------------------------------- security: overwrite deletes only what replicate wrote


def test_save_overwrite_keeps_files_replicate_did_not_write(tmp_path: Path, toy) -> None:
    path = toy.save(tmp_path / "set")
    (path / "notes.txt").write_text("my notes")
    (path / "mine").mkdir()
    (path / "mine" / "review.sqlite").write_bytes(b"db")
    smaller = replicate.ImageSet(toy.images[:10], toy.labels[:10], toy.class_names, name="smaller")  # no columns
    with pytest.warns(UserWarning, match=r"kept 2 file\(s\) that replicate did not write: \['mine/review.sqlite', 'notes.txt'\]"):
        smaller.save(path, overwrite=True)
    assert (path / "notes.txt").read_text() == "my notes"
    assert (path / "mine" / "review.sqlite").read_bytes() == b"db"
    back = replicate.ImageSet.load(path, verify=True)
    assert back.fingerprint == smaller.fingerprint and len(back) == 10
    listed = set(json.loads((path / "manifest.json").read_text())["files"]) | {"manifest.json"}
    assert set(tree(path)) == listed | {"notes.txt", "mine", "mine/review.sqlite"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_save_overwrite_without_extra_files_is_silent(tmp_path: Path, toy) -> None:
    import warnings

    path = toy.save(tmp_path / "set")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        toy.select(np.arange(5)).save(path, overwrite=True)
    assert len(replicate.ImageSet.load(path)) == 5


def test_save_overwrite_refuses_to_clobber_a_foreign_file(tmp_path: Path, toy) -> None:
    path = toy.select(np.arange(3)).save(tmp_path / "set")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"].pop("meta_002.npy")  # now replicate cannot prove it wrote meta_002.npy
    (path / "manifest.json").write_text(json.dumps(manifest))
    before = {p: (path / p).read_bytes() for p in tree(path)}
    with pytest.raises(FileExistsError, match=r"\['meta_002.npy'\] in it were not written by replicate"):
        toy.save(path, overwrite=True)
    assert {p: (path / p).read_bytes() for p in tree(path)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_save_overwrite_never_follows_a_manifest_out_of_the_directory(tmp_path: Path, toy) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    path = toy.select(np.arange(3)).save(tmp_path / "set")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["../victim.txt"] = "0" * 64
    manifest["files"][str(victim)] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(manifest))
    toy.select(np.arange(4)).save(path, overwrite=True)
    assert victim.read_text() == "keep me"
