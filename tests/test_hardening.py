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
    import replicate.evaluation as ev

    with pytest.raises(PermissionError, match=r"model == 'hub:evil/repo:entry'.*allow_remote_code=True"):
        getattr(ev, api)("hub:evil/repo:entry", toy, device="cpu")
    assert not fake_hub.exists()


def test_hub_model_is_refused_offline_even_with_opt_in(fake_hub: Path, toy, monkeypatch: pytest.MonkeyPatch) -> None:
    from replicate.evaluation import evaluate

    monkeypatch.setenv("REPLICATE_OFFLINE", "1")
    with pytest.raises(PermissionError, match="REPLICATE_OFFLINE"):
        evaluate("hub:evil/repo:entry", toy, device="cpu", allow_remote_code=True)
    assert not fake_hub.exists()


def test_hub_model_runs_only_on_explicit_opt_in(fake_hub: Path, toy) -> None:
    from replicate.evaluation import evaluate

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


# --------------------------------------------------------------------------- the command line: one line, exit 2, nothing written


def cli_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    """Run the CLI; assert it failed with exit 2 and one error line holding every needle."""
    from replicate.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.startswith(f"replicate {argv[0]}: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture
def saved(tmp_path: Path, toy) -> Path:
    return toy.save(tmp_path / "toy")


@pytest.fixture
def sample_inputs(tmp_path: Path) -> tuple[Path, Path]:
    from replicate.keywords import KeywordCounts

    p = make_imageset(100, classes=10, name="pool")
    kc = KeywordCounts.from_dict({c: {f"{c}_kw0": 2, f"{c}_kw1": 1} for c in p.class_names}, classes=p.class_names)
    target = tmp_path / "target.json"
    target.write_text(json.dumps(kc.to_dict()))
    return p.save(tmp_path / "pool"), target


def test_cli_dedup_duplicate_reference_name(tmp_path: Path, saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = make_imageset(8, seed=3, name="other").save(tmp_path / "other")
    out = tmp_path / "out"
    cli_error(capsys, ["dedup", str(saved), "--reference", f"t={other}", "--reference", f"t={saved}", "--out", str(out)],
              f"--reference == 't={saved}'", "a NAME given once", f"'t' is already '{other}'")
    assert not out.exists()


def test_cli_review_duplicate_reference_name(tmp_path: Path, saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    cli_error(capsys, ["review", str(saved), "--reference", "t=a", "--reference", "t=b", "--db", str(db), "--no-browser"],
              "--reference == 't=b'", "a NAME given once")
    assert not db.exists()


@pytest.mark.parametrize("command", ["dedup", "shift", "sample", "report"])
def test_cli_out_that_is_a_file(tmp_path: Path, saved: Path, sample_inputs, command: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.txt"
    out.write_text("my file")
    pool, target = sample_inputs
    summary = tmp_path / "s.json"
    summary.write_text('{"result": "sampling"}')
    argv = {
        "dedup": ["dedup", str(saved), "--out", str(out)],
        "shift": ["shift", str(saved), str(pool), "--features", "colour-stats", "--out", str(out)],
        "sample": ["sample", str(pool), "--target", str(target), "--size", "20", "--out", str(out)],
        "report": ["report", "--sampling", str(summary), "--out", str(out)],
    }[command]
    cli_error(capsys, argv, f"--out == '{out}'", "It is a file")
    assert out.read_text() == "my file"


def test_cli_out_below_a_file(tmp_path: Path, saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cli_error(capsys, ["dedup", str(saved), "--out", str(blocker / "sub")], "--out ==", f"'{blocker}' is a file")
    assert blocker.read_text() == "x"


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Make a directory read-only. Root writes through chmod, so for root the write probe
    replicate runs before any work is made to fail as it does for everyone else."""
    import errno

    from replicate import _files

    dirs: list[Path] = []
    real = _files._probe_write

    def probe(d: Path) -> None:
        if any(d == x or x in d.parents for x in dirs):
            raise PermissionError(errno.EACCES, "Permission denied", str(d))
        real(d)

    monkeypatch.setattr(_files, "_probe_write", probe)

    def make(path: Path) -> Path:
        path.mkdir(exist_ok=True)
        path.chmod(0o555)
        dirs.append(path)
        return path

    yield make
    for d in dirs:
        d.chmod(0o755)


@pytest.mark.parametrize("command", ["dedup", "sample", "shift", "report"])
def test_cli_read_only_out(tmp_path: Path, saved: Path, sample_inputs, read_only, command: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    ro = read_only(tmp_path / "ro")
    pool, target = sample_inputs
    summary = tmp_path / "s.json"
    summary.write_text('{"result": "sampling"}')
    out = ro / "out"
    argv = {
        "dedup": ["dedup", str(saved), "--out", str(out)],
        "shift": ["shift", str(saved), str(pool), "--features", "colour-stats", "--out", str(out)],
        "sample": ["sample", str(pool), "--target", str(target), "--size", "20", "--out", str(out)],
        "report": ["report", "--sampling", str(summary), "--out", str(out)],
    }[command]
    cli_error(capsys, argv, f"--out == '{out}'", "a directory replicate can write to", "Permission denied")
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("size", ["0", "-3"])
def test_cli_sample_size_checked_before_writing(tmp_path: Path, sample_inputs, size: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    pool, target = sample_inputs
    out = tmp_path / "new"
    cli_error(capsys, ["sample", str(pool), "--target", str(target), "--size", size, "--out", str(out)],
              f"--size == {size}; must be >= 1")
    assert not out.exists()


def test_cli_sample_existing_out_checked_before_work(tmp_path: Path, sample_inputs,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pool, target = sample_inputs
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    cli_error(capsys, ["sample", str(pool), "--target", str(target), "--size", "20", "--out", str(out)],
              "must be a path that does not exist yet", "--overwrite")
    cli_error(capsys, ["sample", str(pool), "--target", str(target), "--size", "20", "--out", str(out), "--overwrite"],
              "a saved image set when overwriting")
    assert tree(out) == ["notes.txt"]


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_cli_review_port_range(tmp_path: Path, saved: Path, port: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    cli_error(capsys, ["review", str(saved), "--port", port, "--db", str(db), "--no-browser"], f"--port == {port}")
    assert not db.exists()


def test_cli_review_db_is_a_directory(tmp_path: Path, saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli_error(capsys, ["review", str(saved), "--db", str(tmp_path), "--no-browser"],
              f"--db == '{tmp_path}'", "not a directory")


def test_cli_review_export_of_a_file_that_is_not_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    cli_error(capsys, ["review-export", str(notes)], f"path == '{notes}'", "a replicate review log",
              "file is not a database")
    assert notes.read_text() == "my notes\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    cli_error(capsys, ["review-export", str(empty)], "a replicate review log", "no such table")
    assert empty.read_bytes() == b""


def test_review_log_is_read_without_writing(tmp_path: Path) -> None:
    from replicate.review import verdicts
    from replicate.review.store import ReviewStore

    db = tmp_path / "r.sqlite"
    ReviewStore(db).append(reviewer="a", stage="select", kind="label", item="x", verdict="accept")
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    before = db.read_bytes()
    reader = ReviewStore(db, create=False)
    assert len(reader.events()) == 1 and len(verdicts(db, "label")) == 1
    with pytest.raises(Exception, match="readonly"):
        reader.append(reviewer="a", stage="select", kind="label", item="y", verdict="accept")
    assert db.read_bytes() == before


def test_cli_report_needs_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    cli_error(capsys, ["report", "--out", str(out)], "inputs == []", "at least one result")
    cli_error(capsys, ["report", "x.json", "--out", str(out), "--format", ","], "--format == ','")
    assert not out.exists()


# --------------------------------------------------------------------------- unreadable files name the file


def test_empty_npz_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "empty.npz"
    p.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"path == '{p}'; must be a readable .npz archive. The file is empty"):
        replicate.load(p)
    cli_error(capsys, ["info", str(p)], f"'{p}'", "empty (0 bytes)")


def test_npz_with_0d_images(tmp_path: Path) -> None:
    p = tmp_path / "scalar.npz"
    np.savez(p, images=np.uint8(3), labels=np.array([1]))
    with pytest.raises(ValueError, match=r"'images' in .*scalar.npz == array\(dtype=uint8, shape=\(\)\); must be an array of images"):
        replicate.load(p)


def test_truncated_npz_member_names_the_file(tmp_path: Path, toy) -> None:
    p = tmp_path / "toy.npz"
    np.savez(p, images=toy.images, labels=toy.labels)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"'{p}'"):
        replicate.load(p)


@pytest.mark.parametrize("which", ["data", "labels"])
@pytest.mark.parametrize("cut", [0, 100, -7])
def test_truncated_npy_pair_names_the_file(tmp_path: Path, toy, which: str, cut: int) -> None:
    data, labels = tmp_path / "cifar10.1_v6_data.npy", tmp_path / "cifar10.1_v6_labels.npy"
    np.save(data, toy.images)
    np.save(labels, toy.labels)
    bad = data if which == "data" else labels
    raw = bad.read_bytes()
    bad.write_bytes(raw[:cut] if cut >= 0 else raw[:cut])
    name = "data_path" if which == "data" else "labels_path"
    with pytest.raises(ValueError, match=rf"{name} == '{bad}'; must be a readable .npy array"):
        replicate.load(data)


def test_truncated_saved_set_names_the_file(tmp_path: Path, toy, capsys: pytest.CaptureFixture[str]) -> None:
    path = toy.save(tmp_path / "set")
    raw = (path / "images.npy").read_bytes()
    (path / "images.npy").write_bytes(raw[: len(raw) // 2])
    cli_error(capsys, ["info", str(path)], str(path / "images.npy"))


def test_npz_labels_under_an_unknown_key_warn(tmp_path: Path, toy) -> None:
    p = tmp_path / "odd.npz"
    np.savez(p, images=toy.images, classid=toy.labels)
    with pytest.warns(UserWarning, match=r"no labels under the known keys .* keys are \['images', 'classid'\].*label_key='classid'"):
        s = replicate.load(p)
    assert not s.is_labeled
    assert replicate.io.load_npz(p, label_key="classid").labels.tolist() == toy.labels.tolist()
    np.savez(p, images=toy.images)  # images alone: unlabelled on purpose, no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        replicate.load(p)


# --------------------------------------------------------------------------- prediction files


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"pred_v4": [[0, 10, 3], [1, 2, 3]], "labels_v4": [0, 1, 2]}, r"predictions of 'cifar10.1-v4' == '1 values outside \[0, 10\), e.g. \[10\]'"),
        ({"pred_v4": [[0, -1, 3], [1, 2, 3]], "labels_v4": [0, 1, 2]}, r"predictions of 'cifar10.1-v4' == '1 values outside \[0, 10\), e.g. \[-1\]'"),
        ({"pred_v4": [[0, 1, 3], [1, 2, 3]], "labels_v4": [0, 12, -3]}, r"labels of 'cifar10.1-v4' == '2 values outside \[0, 10\), e.g. \[12, -3\]'"),
    ],
)
def test_prediction_file_with_out_of_range_classes(tmp_path: Path, arrays: dict, message: str) -> None:
    from replicate.models import load_predictions

    path = tmp_path / "bad.npz"
    np.savez(path, model_names=np.array(["a", "b"]), **{k: np.array(v) for k, v in arrays.items()})
    with pytest.raises(ValueError, match=message):
        load_predictions(path)


def test_imagenet_prediction_file_with_out_of_range_classes(tmp_path: Path) -> None:
    from replicate.models import load_predictions

    path = tmp_path / "bad.npz"
    np.savez(path, models__s=np.array(["a"]), top1__s=np.array([[0, 1, 5]]), labels__s=np.array([0, 1, 2]),
             class_names=np.array(["x", "y", "z"]))
    with pytest.raises(ValueError, match=r"predictions of 's' == '1 values outside \[0, 3\), e.g. \[5\]'"):
        load_predictions(path)


def test_prediction_labels_passed_out_of_range(tmp_path: Path) -> None:
    from replicate.models import load_predictions

    path = tmp_path / "ok.npz"
    np.savez(path, model_names=np.array(["a"]), pred_v4=np.array([[0, 1, 2]]), labels_v4=np.array([0, 1, 2]))
    ps = load_predictions(path)
    assert ps.result("a", "cifar10.1-v4").accuracy == 1.0
    with pytest.raises(ValueError, match=r"labels == '1 values outside \[0, 10\), e.g. \[-1\]'"):
        ps.result("a", "cifar10.1-v4", labels=np.array([0, -1, 2]))


def test_empty_prediction_file_names_it(tmp_path: Path) -> None:
    from replicate.models import load_predictions

    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"path == '{path}'; must be a readable prediction file"):
        load_predictions(path)


# --------------------------------------------------------------------------- evaluate


def _tiny_net():  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32 * 3, 10))


def test_evaluate_refuses_an_empty_set(toy) -> None:
    from replicate.evaluation import evaluate

    empty = toy.select(np.zeros(len(toy), bool))
    with pytest.raises(ValueError, match=r"dataset 'toy.*' == 'an empty set \(0 images\)'; must be at least one image"):
        evaluate(_tiny_net(), empty, device="cpu")
    with pytest.raises(ValueError, match="an empty set"):
        evaluate("cifar10.1/wrn_28_10", empty)


@pytest.mark.parametrize("how", ["below-a-file", "chmod"])
def test_evaluate_with_an_unwritable_cache(tmp_path: Path, toy, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    from replicate.evaluation import evaluate

    if how == "chmod":
        if os.geteuid() == 0:
            pytest.skip("root writes through chmod; the 'below-a-file' case covers the same path")
        home = tmp_path / "home"
        home.mkdir()
        home.chmod(0o555)
    else:
        (tmp_path / "file").write_text("x")
        home = tmp_path / "file" / "home"
    monkeypatch.setenv("REPLICATE_HOME", str(home))
    try:
        with pytest.warns(RuntimeWarning, match=r"the evaluation cache .* cannot be written .*not cached"):
            r = evaluate(_tiny_net(), toy, device="cpu")
        assert r.n == len(toy) and r.params["cache_file"] is None and not r.params["cached"]
    finally:
        if how == "chmod":
            home.chmod(0o755)
    assert not home.exists() or list(home.rglob("*")) == []


# --------------------------------------------------------------------------- statistics


def test_gap_ci_does_not_broadcast_length_one_against_several() -> None:
    from replicate.stats import gap_ci

    with pytest.raises(ValueError, match=r"correct_new == 'shape \(2,\)'; must be a scalar or the shape of correct_orig \(1,\)"):
        gap_ci([90], [100], [80, 70], [100, 100])
    with pytest.raises(ValueError, match=r"n_new == 'shape \(1,\)'; must be a scalar or the shape of correct_orig \(2,\)"):
        gap_ci([90, 80], 100, [80, 70], [100])
    g = gap_ci([90, 80], 100, [80, 70], 100)  # a scalar n is one number for all models
    assert g.gap.tolist() == pytest.approx([0.1, 0.1])


# --------------------------------------------------------------------------- review server and CLI


def test_review_api_deeply_nested_json_is_a_400(tmp_path: Path, toy) -> None:
    from replicate.review import create_app, open_review

    session = open_review(toy, tmp_path / "r.sqlite")
    client = create_app(session, token="t0ken", reviewer="alice").test_client()
    body = "[" * 8000 + "]" * 8000
    r = client.post("/api/decide", data=body, headers={"X-Review-Token": "t0ken", "Content-Type": "application/json"})
    assert r.status_code == 400 and r.is_json and "nested too deeply" in r.json["error"]
    assert session.store.count() == 0


def test_cli_review_pairs_from_a_dedup_directory(tmp_path: Path, toy, monkeypatch: pytest.MonkeyPatch) -> None:
    from replicate.cli import main
    from replicate.dedup import find_near_duplicates
    from replicate.review import app as review_app

    ref = toy.select(np.arange(5), name="ref").renamed("ref")
    ref = replicate.ImageSet(ref.images, ref.labels, ref.class_names, name="ref")
    result = find_near_duplicates(toy, {"ref": ref})
    result.save(tmp_path / "dedup")
    seen = {}

    def fake_server(session, **kwargs):  # type: ignore[no-untyped-def]
        seen["pairs"] = session.queue.n_pairs
        raise KeyboardInterrupt  # stop before serving

    monkeypatch.setattr(review_app, "start_server", fake_server)
    with pytest.raises(KeyboardInterrupt):
        main(["review", str(toy.save(tmp_path / "toy")), "--pairs", str(tmp_path / "dedup"),
              "--reference", f"ref={ref.save(tmp_path / 'ref')}", "--db", str(tmp_path / "r.sqlite"), "--no-browser"])
    assert seen["pairs"] == len(result.flagged) > 0


def test_cli_disk_full_is_one_line_and_leaves_nothing_partial(tmp_path: Path, sample_inputs, monkeypatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """ENOSPC while the new set is written: one line naming the file, exit 2, no partial output left."""
    import errno

    pool, target = sample_inputs
    out = tmp_path / "new"
    real_save = np.save

    def full_disk(file, arr, *a, **kw):  # the first column file fills the disk half way
        real_save(file, arr[: max(1, len(arr) // 2)], *a, **kw)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))

    monkeypatch.setattr(np, "save", full_disk)
    cli_error(capsys, ["sample", str(pool), "--target", str(target), "--size", "20", "--out", str(out)],
              os.strerror(errno.ENOSPC), "Free some space")
    assert not out.exists() or tree(out) == []
    assert not any(".tmp" in p.name for p in tmp_path.rglob("*"))
