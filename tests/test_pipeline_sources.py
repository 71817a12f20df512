"""The pipeline on a streamed pool ([pool] stream = true): tar shards and a folder of mixed-size images.

Expected behaviour: on the same images the streamed build equals the in-memory one (the
same flagged near-duplicates, the same new test set, pixel for pixel); hashes are
imagehash's on each original image, at its own size; every distance is computed on the
canonical thumbnail ([pool] thumbnail, 32x32 here: the originals' size).
"""

from __future__ import annotations

import json
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

import replicate
from replicate import ImageSet, pipeline
from replicate.config import BUNDLE, load_config
from replicate.dedup import DedupResult
from replicate.hashing import Hashes, hash_bits, hashes_to_hex
from replicate.sources import open_source, write_shards

DEMO = BUNDLE / "demo"


def _cut(src: Path, dst: Path, per_class: int, label_key: str = "labels") -> None:
    with np.load(src) as d:
        arrays = {k: d[k] for k in d.files}
    labels = arrays[label_key]
    idx = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]))
    np.savez(dst, **{k: v[idx] if v.ndim and len(v) == len(labels) else v for k, v in arrays.items()})


CONFIG = """
[run]
name = "streamed"
seed = 5

[original]
test = "test.npz"
train = "train.npz"

[pool]
path = "{pool}"
{pool_keys}

[keywords]
target = "bundle:demo/cifar10_1_keyword_counts.json"
version = "v6"
synonyms = "tinyimagenet-wordnet-to-cifar10_1"

[sampling]
size = 40
shortfall = "redistribute"
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """100 test and 100 train images of the bundle's real CIFAR-10, and ~200 real pool images with
    10 of the test images planted in the pool (so the search has something to find)."""
    d = tmp_path_factory.mktemp("streamed")
    _cut(DEMO / "cifar10_test_sample.npz", d / "test.npz", 10)
    _cut(DEMO / "cifar10_train_sample.npz", d / "train.npz", 10)
    _cut(BUNDLE / "candidates/tinyimagenet-cifar10-sample/images.npz", d / "pool-src.npz", 20, "cifar10_label")
    pool = replicate.load(d / "pool-src.npz", name="pool")
    test = replicate.load(d / "test.npz")
    # planted copies of test images (every 10th), with the pool's columns
    planted = np.arange(0, len(test), 10)
    meta = {k: np.concatenate([v, np.repeat(v[:1], len(planted))]) for k, v in pool.metadata.items()}
    images = np.concatenate([pool.images, test.images[planted]])
    labels = np.concatenate([pool.labels, test.labels[planted]])
    ids = [*pool.ids.tolist(), *[f"planted/{i}" for i in planted]]
    full = ImageSet(images, labels, pool.class_names, ids, meta, name="pool")
    full.save(d / "pool")
    return d


def _config(d: Path, name: str, pool: str, pool_keys: str = "") -> Path:
    path = d / f"{name}.toml"
    path.write_text(CONFIG.format(pool=pool, pool_keys=pool_keys))
    return path


def test_shard_pool_equals_the_in_memory_pool(data: Path, tmp_path: Path) -> None:
    pool = ImageSet.load(data / "pool")
    write_shards(pool, data / "shards", shard_size=64, format="png")
    mem = pipeline.build_testset(_config(data, "mem", "pool"), out=tmp_path / "mem", quiet=True)
    streamed = pipeline.build_testset(
        _config(data, "shards", "shards", "stream = true\nchunk_size = 50\nthumbnail = [32, 32]"),
        out=tmp_path / "shards", quiet=True)
    a, b = ImageSet.load(mem.testset_path), ImageSet.load(streamed.testset_path)
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.images, b.images)
    assert mem.summary["dedup"]["flagged"] == streamed.summary["dedup"]["flagged"]
    assert mem.summary["dedup"]["by_reason"] == streamed.summary["dedup"]["by_reason"]
    dm = DedupResult.load(next(s.path for s in mem.stages if s.name == "dedup") / "dedup")
    ds = DedupResult.load(next(s.path for s in streamed.stages if s.name == "dedup") / "dedup")
    assert sorted(dm.flagged.query_id) == sorted(ds.flagged.query_id)
    # every planted test image is flagged against the original test set, and none is drawn
    hits = set(ds.pairs[ds.pairs.flagged & (ds.pairs.reference_set == "original-test")].query_id)
    assert {i for i in pool.ids.tolist() if i.startswith("planted/")} <= hits
    assert not any(i.startswith("planted/") for i in b.ids.tolist())
    assert streamed.summary["dedup"]["skipped"] == 0 and streamed.summary["dedup"]["decoded"] == len(pool)
    # cached: a second run reuses both stages
    again = pipeline.build_testset(
        _config(data, "shards", "shards", "stream = true\nchunk_size = 50\nthumbnail = [32, 32]"),
        out=tmp_path / "shards", quiet=True)
    assert all(s.cached for s in again.stages)


def _mixed(root: Path, pool: ImageSet) -> dict[str, str]:
    """The pool as a flat folder with metadata.jsonl: every 4th image upsampled 2x (nearest: its
    32x32 box thumbnail is the original exactly), every 4th+1 resized to 96x80 (bicubic), every
    4th+2 stored as RGBA; string labels (the CIFAR-10 names, which sort as CIFAR-10 orders them)."""
    root.mkdir()
    rows, variants = [], {}
    for i, (im, ident) in enumerate(zip(pool.images, pool.ids.tolist())):
        pil = Image.fromarray(im)
        kind = ("up64", "up96x80", "rgba", "orig")[i % 4]
        if kind == "up64":
            pil = pil.resize((64, 64), Image.Resampling.NEAREST)
        elif kind == "up96x80":
            pil = pil.resize((80, 96), Image.Resampling.BICUBIC)
        elif kind == "rgba":
            pil = Image.fromarray(np.dstack([im, np.full(im.shape[:2], 200, np.uint8)]), "RGBA")
        fname = f"{i:04d}.png"
        pil.save(root / fname)
        variants[ident] = kind
        rows.append({"file": fname, "id": ident, "label": pool.class_names[pool.labels[i]],
                     **{k: v[i].item() for k, v in pool.metadata.items()}})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return variants


def test_mixed_size_folder_hashes_originals_and_compares_thumbnails(data: Path, tmp_path: Path) -> None:
    pool = ImageSet.load(data / "pool")
    variants = _mixed(data / "mixed", pool)
    # a flat folder's string labels name only the classes present (this pool has no 'airplane'):
    # [pool] class_names states all ten, in CIFAR-10's label order
    keys = f"stream = true\nchunk_size = 64\nclass_names = {json.dumps(list(pool.class_names))}"
    streamed = pipeline.build_testset(_config(data, "mixed", "mixed", keys), out=tmp_path / "mixed", quiet=True)
    # the in-memory reference: the same images' canonical thumbnails as one ImageSet
    thumbs = open_source(data / "mixed", class_names=pool.class_names).materialise(name="pool")
    for i, ident in enumerate(thumbs.ids.tolist()):
        if variants[ident] in ("up64", "rgba", "orig"):
            np.testing.assert_array_equal(thumbs.images[i], pool.images[pool.positions([ident])[0]], err_msg=ident)
    thumbs.save(data / "mixed-thumbs")
    mem = pipeline.build_testset(_config(data, "mixed-mem", "mixed-thumbs"), out=tmp_path / "mixed-mem", quiet=True)
    a, b = ImageSet.load(mem.testset_path), ImageSet.load(streamed.testset_path)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.images, b.images)
    assert b.image_shape == (32, 32, 3)
    assert mem.summary["dedup"]["by_reason"] == streamed.summary["dedup"]["by_reason"]
    # hashes: imagehash's phash of each original file, at its own size (96x80, 64x64, RGBA...)
    stage = next(s.path for s in streamed.stages if s.name == "dedup")
    hashes = Hashes.load(stage / "phash.npz")
    files = {json.loads(r)["id"]: json.loads(r)["file"] for r in (data / "mixed/metadata.jsonl").read_text().splitlines()}
    want = [str(imagehash.phash(Image.open(data / "mixed" / files[i]))) for i in hashes.ids.tolist()]
    assert hashes_to_hex(hashes.values, hash_bits("phash")) == want
    # the planted copies are found through their thumbnails, whatever size they are stored at
    ds = DedupResult.load(stage / "dedup")
    hits = set(ds.pairs[ds.pairs.flagged & (ds.pairs.reference_set == "original-test")].query_id)
    planted = {i for i in pool.ids.tolist() if i.startswith("planted/")}
    assert planted <= hits, sorted(planted - hits)


def test_streamed_pool_thumbnail_must_match_the_originals(data: Path, tmp_path: Path) -> None:
    if not (data / "shards").is_dir():
        write_shards(ImageSet.load(data / "pool"), data / "shards", shard_size=64, format="png")
    cfg = _config(data, "bad-thumb", "shards", "stream = true\nthumbnail = 48")
    with pytest.raises(ValueError, match=r"image shape of 'shards' == \(48, 48, 3\); must be \(32, 32, 3\).*"
                                         r"\[pool\] thumbnail"):
        pipeline.build_testset(cfg, out=tmp_path / "bad", quiet=True)
    assert not (tmp_path / "bad").exists()


def test_config_keys_are_recorded(data: Path) -> None:
    cfg = load_config(_config(data, "rec", "shards", "stream = true\nthumbnail = 32\nfit = 'center_crop'"))
    assert cfg.pool.thumbnail == (32, 32) and cfg.pool.fit == "center_crop"
    assert cfg.to_dict()["pool"]["thumbnail"] == [32, 32]
    assert cfg.pool.policy() == {"size": (32, 32), "fit": "center_crop", "resample": "box", "upsample": False,
                                 "exif_transpose": True}
