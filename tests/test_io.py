"""Loaders: every format on files the tests write, and the real files in ../shared."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_imageset

import replicate
from replicate import CIFAR10_CLASSES, ImageSet


def write_cifar10(root: Path, n_per_batch: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write a CIFAR-10 folder in the official python-pickle format (bytes keys, CHW rows)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    all_images, all_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (n_per_batch, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch).tolist()
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": images.transpose(0, 3, 1, 2).reshape(n_per_batch, -1),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n_per_batch)],
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
        all_images.append(images)
        all_labels.append(labels)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}, fh)
    return np.concatenate(all_images), np.concatenate(all_labels)


def test_cifar10_batches(tmp_path: Path) -> None:
    images, labels = write_cifar10(tmp_path)
    train = replicate.load_cifar(tmp_path, "train")
    test = replicate.load(tmp_path / "cifar-10-batches-py")  # detection, default split test
    assert len(train) == 30 and len(test) == 6
    assert np.array_equal(train.images, images[:30])
    assert np.array_equal(train.labels, labels[:30])
    assert np.array_equal(test.images, images[30:])
    assert train.class_names == CIFAR10_CLASSES
    assert train.ids[0] == "cifar10-train/00000"
    assert test.metadata["filename"][0] == "test_batch_0.png"
    assert train.info["source"][0]["sha256"]
    single = replicate.load(tmp_path / "cifar-10-batches-py" / "data_batch_2")
    assert np.array_equal(single.images, images[6:12])


def test_cifar100(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    for split in ("train", "test"):
        with open(folder / split, "wb") as fh:
            pickle.dump(
                {
                    b"data": images.transpose(0, 3, 1, 2).reshape(4, -1),
                    b"fine_labels": [0, 99, 5, 7],
                    b"coarse_labels": [1, 2, 3, 19],
                },
                fh,
            )
    with open(folder / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, fh)
    s = replicate.load(tmp_path)
    assert s.name == "cifar100-test"
    assert len(s.class_names) == 100 and s.labels.tolist() == [0, 99, 5, 7]
    assert s.metadata["coarse_label"].tolist() == [1, 2, 3, 19]
    assert np.array_equal(s.images, images)


def test_cifar_errors(tmp_path: Path) -> None:
    bad = tmp_path / "data_batch_1"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match=r"file == .*data_batch_1'; must be a CIFAR python-pickle batch"):
        replicate.load_cifar(bad)
    with open(bad, "wb") as fh:
        pickle.dump({b"something": 1}, fh)
    with pytest.raises(ValueError, match=r"must be a CIFAR batch with keys 'data' and 'labels'"):
        replicate.load_cifar(bad)
    with open(bad, "wb") as fh:
        pickle.dump([1, 2], fh)
    with pytest.raises(ValueError, match=r"must be a CIFAR batch \(a pickled dict\)"):
        replicate.load_cifar(bad)
    (tmp_path / "empty" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "empty" / "cifar-10-batches-py" / "batches.meta").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"Missing: .*test_batch.*download=True"):
        replicate.load_cifar(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"split == 'val'; must be one of: 'train', 'test'"):
        replicate.load_cifar(tmp_path, "val")


def test_npz_with_metadata(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "pool.npz"
    np.savez(
        path,
        images=rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8),
        labels=np.array([0, 1, 2, 1, 0]),
        label_names=np.array(["a", "b", "c"]),
        keyword=np.array(["k1", "k2", "k3", "k2", "k1"]),
        votes=np.ones((5, 3), np.float32),
        global_thing=np.arange(3),
    )
    with pytest.warns(UserWarning, match=r"keys \['global_thing'\] are not per-image"):
        s = replicate.load(path)
    assert s.class_names == ("a", "b", "c")
    assert s.columns == ["keyword", "votes"]
    assert s.metadata["votes"].shape == (5, 3)
    assert s.info["npz_other_keys"] == ["global_thing"]
    with pytest.raises(KeyError, match=r"image_key == 'pixels'; must be one of the archive's keys"):
        replicate.load_npz(path, image_key="pixels")


def test_npz_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((3, 4, 4, 3), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(ValueError, match=r"labels.shape == \(2,\); must be \(3,\)"):
        replicate.load(path)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match=r"path == .*broken.npz'; must be a readable .npz archive"):
        replicate.load(broken)


def test_npy_pair(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "cifar10.1_v6_data.npy", images)
    np.save(tmp_path / "cifar10.1_v6_labels.npy", np.arange(7) % 10)
    s = replicate.load(tmp_path / "cifar10.1_v6_data.npy")
    assert s.name == "cifar10.1_v6"
    assert s.class_names == CIFAR10_CLASSES
    assert np.array_equal(s.images, images)
    np.save(tmp_path / "x_data.npy", images)
    np.save(tmp_path / "x_labels.npy", np.arange(6))
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[7, 6\]"):
        replicate.load_npy_pair(tmp_path / "x_data.npy")
    with pytest.raises(FileNotFoundError, match=r"labels_path == .*nope.npy'; must be an existing file"):
        replicate.load_npy_pair(tmp_path / "x_data.npy", tmp_path / "nope.npy")


def test_folder_roundtrip_flat_and_class(tmp_path: Path) -> None:
    toy = make_imageset(12)
    replicate.export_folder(toy, tmp_path / "flat")
    flat = replicate.load(tmp_path / "flat", class_names=CIFAR10_CLASSES)
    assert np.array_equal(flat.images, toy.images)
    assert flat.ids.tolist() == toy.ids.tolist()
    assert np.array_equal(flat.labels, toy.labels)
    assert flat.metadata["keyword"].tolist() == toy.metadata["keyword"].tolist()
    assert np.allclose(flat.metadata["score"], toy.metadata["score"])
    replicate.export_folder(toy, tmp_path / "byclass", layout="class")
    byclass = replicate.load(tmp_path / "byclass")
    assert len(byclass) == 12
    # class folders sorted by name; images keep their pixels
    first = byclass.class_names[byclass.labels[0]]
    assert first == "airplane"
    assert np.array_equal(byclass.images[0], toy.images[0])
    with pytest.raises(FileExistsError, match="must be an empty or new directory"):
        replicate.export_folder(toy, tmp_path / "flat")


def test_folder_jsonl(tmp_path: Path) -> None:
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((6, 6, 3), i * 40, np.uint8)).save(tmp_path / f"im{i}.jpg", quality=95)
    with open(tmp_path / "metadata.jsonl", "w") as fh:
        for i in range(3):
            fh.write(json.dumps({"file": f"im{i}.jpg", "label": ["cat", "dog", "cat"][i], "keyword": "tabby"}) + "\n")
    s = replicate.load(tmp_path)
    assert s.class_names == ("cat", "dog")
    assert s.labels.tolist() == [0, 1, 0]
    assert s.metadata["keyword"].tolist() == ["tabby"] * 3


def test_folder_errors(tmp_path: Path) -> None:
    toy = make_imageset(4)
    root = replicate.export_folder(toy, tmp_path / "f")
    # truncated image file: the error names the file
    png = root / "00002.png"
    png.write_bytes(png.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"image file == .*00002.png'; must be a readable image"):
        replicate.load(root)
    root2 = replicate.export_folder(toy, tmp_path / "g")
    lines = (root2 / "metadata.csv").read_text().splitlines()
    (root2 / "metadata.csv").write_text("\n".join(lines[:-1]) + "\n")  # a row missing
    with pytest.raises(ValueError, match=r"rows of metadata.csv == .*1 images without a row.*00003.png"):
        replicate.load(root2)
    (root2 / "metadata.csv").write_text("name,label\nx.png,cat\n")
    with pytest.raises(ValueError, match=r"must be a table with a 'file' column"):
        replicate.load(root2)
    (root2 / "metadata.csv").write_text("\n".join(lines + ["ghost.png,x,cat,kw,synthetic,0.5"]) + "\n")
    with pytest.raises(FileNotFoundError, match=r"files listed in metadata.csv == \['ghost.png'\]"):
        replicate.load(root2)
    (root2 / "metadata.csv").write_text(lines[0] + "\n" + lines[1].rsplit(",", 2)[0] + "\n")
    with pytest.raises(ValueError, match=r"row 1 of metadata.csv == .*; must be a value for every column"):
        replicate.load(root2)
    from PIL import Image

    mixed = tmp_path / "mixed" / "cat"
    mixed.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(mixed / "a.png")
    Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(mixed / "b.png")
    with pytest.raises(ValueError, match=r"size of .*b.png == \(5, 4, 3\); must be \(4, 4, 3\)"):
        replicate.load(tmp_path / "mixed")


def test_pool(tmp_path: Path) -> None:
    toy = make_imageset(10)
    pool_dir = tmp_path / "candidates" / "toy-pool"
    pool_dir.mkdir(parents=True)
    np.savez(
        pool_dir / "images.npz",
        images=toy.images,
        labels=toy.labels,
        label_names=np.array(CIFAR10_CLASSES),
        keyword=toy.metadata["keyword"],
    )
    from replicate.manifest import sha256_file

    digest = sha256_file(pool_dir / "images.npz")
    (pool_dir / "pool.toml").write_text(
        'name = "toy-pool"\ndescription = "test pool"\nsource = "synthetic"\nlicence = "CC0"\n'
        'collection = "made by the tests"\ndata = "images.npz"\n'
        f'sha256 = "{digest}"\n[columns]\nkeyword = "search keyword"\n'
    )
    s = replicate.load_pool(pool_dir)
    assert s.name == "toy-pool" and len(s) == 10
    assert s.info["pool"]["licence"] == "CC0"
    assert s.ids[0] == "toy-pool/00000"
    # by name through REPLICATE_CANDIDATES
    import os

    os.environ["REPLICATE_CANDIDATES"] = str(tmp_path / "candidates")
    try:
        assert replicate.load_pool("toy-pool") == s
        with pytest.raises(FileNotFoundError, match=r"pool == 'toy-poo'; must be .*known pools \[.*'toy-pool'"):
            replicate.load_pool("toy-poo")
    finally:
        del os.environ["REPLICATE_CANDIDATES"]
    (pool_dir / "pool.toml").write_text((pool_dir / "pool.toml").read_text().replace(digest, "0" * 64))
    with pytest.raises(ValueError, match=r"sha256 of .*images.npz == [0-9a-f]{64}; must be 0{64}"):
        replicate.load_pool(pool_dir)


def test_load_unknown(tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("hi")
    with pytest.raises(ValueError, match=r"path == .*x.txt'; must be a saved image set, a pool folder"):
        replicate.load(f)
    with pytest.raises(FileNotFoundError, match=r"path == .*nothing'; must be an existing file or directory"):
        replicate.load(tmp_path / "nothing")


def test_saved_set_via_load(tmp_path: Path) -> None:
    toy = make_imageset(5)
    assert replicate.load(toy.save(tmp_path / "s")) == toy


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "replicate", *args], capture_output=True, text=True, timeout=120)


def test_cli_info_json(tmp_path: Path) -> None:
    toy = make_imageset(20)
    path = toy.save(tmp_path / "s")
    out = run_cli("info", str(path), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["n"] == 20
    assert data["class_counts"]["cat"] == 2
    assert data["columns"] == ["keyword", "source", "score"]
    assert data["fingerprint"] == toy.fingerprint
    text = run_cli("info", str(path))
    assert "20 images of 32x32x3" in text.stdout
    bad = run_cli("info", str(tmp_path / "missing"))
    assert bad.returncode == 2
    assert "replicate info: error: path ==" in bad.stderr


def test_cli_help_lists_commands() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    assert "info" in out.stdout


@pytest.mark.shared
@pytest.mark.parametrize(("name", "n", "per_class"), [("test", 10000, 1000), ("train", 50000, 5000)])
def test_real_cifar10_info(shared: Path, name: str, n: int, per_class: int) -> None:
    out = run_cli("info", str(shared / f"data/cifar10/{name}.npz"), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["n"] == n
    assert set(data["class_counts"].values()) == {per_class}
    assert list(data["class_counts"]) == list(CIFAR10_CLASSES)


@pytest.mark.shared
def test_real_candidate_pool(candidate_pool: ImageSet) -> None:
    counts = candidate_pool.class_counts()
    # ../shared/README.md: airplane 0, automobile 2200, ..., horse 0
    assert counts["airplane"] == 0 and counts["horse"] == 0 and counts["cat"] == 2750
    assert "keyword" in candidate_pool.columns


@pytest.mark.shared
def test_real_roundtrip(cifar_test: ImageSet, tmp_path: Path) -> None:
    # per-channel means from ../shared/README.md
    means = cifar_test.images.reshape(-1, 3).mean(0)
    assert np.allclose(means, (126.02, 123.71, 114.85), atol=0.01)
    loaded = ImageSet.load(cifar_test.save(tmp_path / "t"))
    assert loaded == cifar_test
