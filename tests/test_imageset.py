"""The core ImageSet type: construction, checks, selection, concat, save/load."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from conftest import make_imageset
from hypothesis import given, settings
from hypothesis import strategies as st

import replicate
from replicate import CIFAR10_CLASSES, ImageSet, concat


def test_basic_properties(toy: ImageSet) -> None:
    assert len(toy) == 40
    assert toy.image_shape == (32, 32, 3)
    assert toy.class_counts() == {c: 4 for c in CIFAR10_CLASSES}
    assert toy.columns == ["keyword", "source", "score"]
    assert toy.is_labeled
    assert len(set(toy.ids.tolist())) == 40


def test_content_hash_is_sha256_of_raw_pixels(toy: ImageSet) -> None:
    # Source of truth: hashlib over the image's C-order bytes.
    for i in (0, 17, 39):
        expected = hashlib.sha256(np.ascontiguousarray(toy.images[i]).tobytes()).hexdigest()
        assert toy.content_hash_hex()[i] == expected


def test_content_hashes_threaded_equals_single(toy: ImageSet) -> None:
    big = np.tile(toy.images, (250, 1, 1, 1))  # 10,000 images: several chunks
    assert np.array_equal(replicate.content_hashes(big, threads=1), replicate.content_hashes(big, threads=4))


def test_fingerprint_depends_on_every_part(toy: ImageSet) -> None:
    fp = toy.fingerprint
    changed_pixels = toy.images.copy()
    changed_pixels[3, 0, 0, 0] ^= 1
    variants = [
        ImageSet(changed_pixels, toy.labels, toy.class_names, toy.ids, toy.metadata, name=toy.name),
        ImageSet(toy.images, np.roll(toy.labels, 1), toy.class_names, toy.ids, toy.metadata, name=toy.name),
        ImageSet(toy.images, toy.labels, toy.class_names, np.roll(toy.ids, 1), toy.metadata, name=toy.name),
        toy.with_metadata(keyword=np.roll(toy.metadata["keyword"], 1)),
    ]
    for v in variants:
        assert v.fingerprint != fp
    # name and provenance are not content
    assert toy.renamed("other").fingerprint == fp
    assert toy.with_info(note="x").fingerprint == fp
    # image fingerprint ignores labels
    assert variants[1].image_fingerprint == toy.image_fingerprint


def test_fingerprint_ignores_string_width(toy: ImageSet) -> None:
    wide = toy.with_metadata(keyword=toy.metadata["keyword"].astype("<U50"))
    assert wide.fingerprint == toy.fingerprint


def test_select_by_mask_positions_ids_slice(toy: ImageSet) -> None:
    mask = toy.labels == 3
    a = toy.select(mask)
    assert len(a) == 4 and set(a.labels.tolist()) == {3}
    b = toy.select([5, 1, 5 - 40])
    assert b.ids.tolist() == [toy.ids[5], toy.ids[1], toy.ids[-35]]
    c = toy.select(toy.ids[[7, 2]].tolist())
    assert c.ids.tolist() == [toy.ids[7], toy.ids[2]]
    assert np.array_equal(c.images[0], toy.images[7])
    assert c.metadata["keyword"][1] == toy.metadata["keyword"][2]
    d = toy.select(slice(10, 20))
    assert len(d) == 10 and np.shares_memory(d.images, toy.images)
    assert len(toy.select(np.array([], dtype=np.int64))) == 0


def test_select_carries_hashes(toy: ImageSet) -> None:
    h = toy.content_hashes
    sub = toy.select([3, 4])
    assert sub._hashes is not None and np.array_equal(sub.content_hashes, h[[3, 4]])


def test_by_class_and_batches(toy: ImageSet) -> None:
    cats = toy.by_class("cat")
    assert len(cats) == 4 and (cats.labels == 3).all()
    assert len(toy.by_class(["cat", 0])) == 8
    sizes = [len(b) for b in toy.batches(16)]
    assert sizes == [16, 16, 8]
    with pytest.raises(ValueError, match=r"class == 'kat'; must be one of: .* Did you mean 'cat'"):
        toy.by_class("kat")


def test_concat_and_source_column(toy: ImageSet) -> None:
    other = make_imageset(8, seed=1, name="other")
    joined = concat([toy, other], source_column="source_set")
    assert len(joined) == 48
    assert joined.metadata["source_set"][-1] == "other"
    assert joined.info["parents"][1]["name"] == "other"
    assert np.array_equal(joined.images[40:], other.images)


def test_concat_missing_columns(toy: ImageSet) -> None:
    bare = ImageSet(toy.images[:2], toy.labels[:2], toy.class_names, name="bare")
    with pytest.raises(ValueError, match=r"metadata column == 'keyword'; must be present in every set .*fill_missing=True"):
        concat([toy, bare])
    joined = concat([toy, bare], fill_missing=True)
    assert joined.metadata["keyword"][-1] == ""
    assert np.isnan(joined.metadata["score"][-1])


def test_concat_errors(toy: ImageSet) -> None:
    other = ImageSet(toy.images[:2], [0, 1], ["a", "b"], name="ab")
    with pytest.raises(ValueError, match=r"class_names of 'ab' == .*; must equal those of 'toy'"):
        concat([toy, other])
    with pytest.raises(ValueError, match=r"ids == .*repeats.*; must be unique"):
        concat([toy, toy])
    small = make_imageset(4, size=16, name="small")
    with pytest.raises(ValueError, match=r"image shape of 'small' == \(16, 16, 3\); must be \(32, 32, 3\)"):
        concat([toy, small])
    with pytest.raises(ValueError, match=r"sets == \[\]; must be a non-empty list"):
        concat([])


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"images": np.zeros((2, 4, 4, 3), np.float32)}, TypeError, r"images.dtype == 'float32'; must be uint8"),
        ({"images": np.zeros((2, 3, 4, 4, 4), np.uint8)}, ValueError, r"images.shape == .*; must be \(N, H, W, C\)"),
        ({"labels": [0, 10]}, ValueError, r"labels == 'values \[10\]'; must be in \[0, 9\]"),
        ({"labels": [0, -2]}, ValueError, r"labels == 'values \[-2\]'; must be in \[0, 9\]"),
        ({"labels": [0, 1, 2]}, ValueError, r"labels.shape == \(3,\); must be \(2,\)"),
        ({"labels": [0.5, 1]}, TypeError, r"labels.dtype == 'float64'; must be an integer type"),
        ({"ids": ["a", "a"]}, ValueError, r"ids == .*1 repeats.*; must be unique"),
        ({"ids": ["a"]}, ValueError, r"ids.shape == \(1,\); must be \(2,\)"),
        ({"metadata": {"keyword": ["x"]}}, ValueError, r"len\(metadata\['keyword'\]\) == '1 rows'; must be 2"),
        ({"metadata": {"label": ["x", "y"]}}, ValueError, r"metadata column name == 'label'; must be not one of the reserved"),
        ({"metadata": {"mix": np.array([1, "a"], dtype=object)}}, TypeError, r"metadata\['mix'\] == .*; must be numbers"),
        ({"class_names": ["a", "a"], "labels": [0, 0]}, ValueError, r"class_names == .*; must be unique names"),
    ],
)
def test_construction_errors(kwargs: dict, error: type, pattern: str) -> None:
    args = {"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": [0, 1], "class_names": CIFAR10_CLASSES}
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        ImageSet(**args)


def test_unlabelled_and_grayscale() -> None:
    s = ImageSet(np.zeros((3, 5, 5), np.uint8))
    assert s.image_shape == (5, 5, 1)
    assert not s.is_labeled
    assert s.class_counts() == {"<unlabelled>": 3}
    assert s.to_dataframe()["class_name"].tolist() == ["<unlabelled>"] * 3


def test_select_errors(toy: ImageSet) -> None:
    with pytest.raises(KeyError, match=r"ids == \['nope', 'nada'\]; must be ids of images in set 'toy'. 2 of the ids"):
        toy.select(["nope", "nada"])
    with pytest.raises(ValueError, match=r"len\(mask\) == 3; must be 40"):
        toy.select(np.ones(3, bool))
    with pytest.raises(ValueError, match=r"positions == .*; must be in \[0, 39\]"):
        toy.select([40])
    with pytest.raises(ValueError, match=r"batch_size == 0; must be >= 1"):
        next(toy.batches(0))


def test_dataframe(toy: ImageSet) -> None:
    df = toy.to_dataframe()
    assert list(df.columns) == ["id", "label", "class_name", "content_hash", "keyword", "source", "score"]
    assert df["class_name"].iloc[3] == "cat"
    assert len(df) == 40


def test_torch_dataset(toy: ImageSet) -> None:
    ds = toy.to_torch(transform=lambda x: x.float() / 255)
    img, label = ds[5]
    assert tuple(img.shape) == (3, 32, 32)
    assert label == 5
    assert abs(float(img[0, 2, 3]) - toy.images[5, 2, 3, 0] / 255) < 1e-6
    assert len(ds) == 40


def test_save_load_roundtrip(toy: ImageSet, tmp_path) -> None:
    s = toy.with_info(source=[{"path": "x"}])
    path = s.save(tmp_path / "set")
    loaded = ImageSet.load(path)
    assert loaded == s
    assert loaded.fingerprint == s.fingerprint
    assert isinstance(loaded.images, np.memmap)
    assert not isinstance(ImageSet.load(path, mmap=False).images, np.memmap)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["fingerprint"] == s.fingerprint
    assert set(manifest["files"]) >= {"images.npy", "labels.npy", "ids.npy", "imageset.json"}
    assert manifest["packages"]["numpy"] == np.__version__
    # verified load recomputes hashes and fingerprint
    assert ImageSet.load(path, verify=True) == s


def test_save_is_deterministic_except_time(toy: ImageSet, tmp_path) -> None:
    a = json.loads((toy.save(tmp_path / "a") / "manifest.json").read_text())
    b = json.loads((toy.save(tmp_path / "b") / "manifest.json").read_text())
    a.pop("created"), b.pop("created")
    assert a == b


def test_save_refuses_overwrite_and_foreign_dirs(toy: ImageSet, tmp_path) -> None:
    path = toy.save(tmp_path / "set")
    with pytest.raises(FileExistsError, match=r"path == .*; must be a path that does not exist yet.*overwrite=True"):
        toy.save(path)
    toy.select(slice(0, 3)).save(path, overwrite=True)
    assert len(ImageSet.load(path)) == 3
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="has no imageset.json"):
        toy.save(foreign, overwrite=True)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_load_detects_corruption(toy: ImageSet, tmp_path) -> None:
    path = toy.save(tmp_path / "set")
    images = np.load(path / "images.npy")
    images[0, 0, 0, 0] ^= 255
    np.save(path / "images.npy", images)
    with pytest.raises(ValueError, match=r"content hashes == 1 images differ"):
        ImageSet.load(path, verify=True)
    np.save(path / "images.npy", images[:5])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        ImageSet.load(path)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 6),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    c=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
)
def test_roundtrip_property(n: int, h: int, w: int, c: int, seed: int) -> None:
    import tempfile
    from pathlib import Path

    rng = np.random.default_rng(seed)
    s = ImageSet(
        rng.integers(0, 256, (n, h, w, c), dtype=np.uint8),
        rng.integers(-1, 3, n),
        ["a", "b", "c"],
        metadata={"f": rng.random(n), "s": np.array([f"k{i}" for i in range(n)], dtype=str).reshape(n)},
        name="prop",
    )
    with tempfile.TemporaryDirectory() as d:
        loaded = ImageSet.load(s.save(Path(d) / "x"))
        assert loaded == s
        assert loaded.fingerprint == s.fingerprint
