"""Image sources: folders, WebDataset shards and Parquet, images of any size and mode."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from replicate import ImageSet
from replicate.hashing import hash_bits, hash_images, hash_pil, hashes_to_hex
from replicate.io import export_folder
from replicate.sources import (
    DecodePolicy,
    HashSpec,
    ImageSource,
    open_source,
    read_chunk,
    write_parquet,
    write_shards,
)
from tests.conftest import make_imageset

IMAGEHASH = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "ahash": imagehash.average_hash,
    "whash": imagehash.whash,
    "dhash_vertical": imagehash.dhash_vertical,
    "phash_simple": imagehash.phash_simple,
}


def _hex(values: np.ndarray, method: str, **params) -> list[str]:
    return hashes_to_hex(values, hash_bits(method, **params))


# --------------------------------------------------------------------------- hashing of PIL images


def test_hash_pil_matches_imagehash_for_every_size_and_mode():
    rng = np.random.default_rng(3)
    images = [Image.fromarray((rng.integers(0, 7, (h, w, 3)) * 40).astype(np.uint8))
              for h, w in [(32, 32), (37, 91), (200, 150), (9, 9), (480, 640)]]
    images += [
        Image.fromarray(rng.integers(0, 256, (50, 70), dtype=np.uint8)),  # L
        Image.fromarray(rng.integers(0, 256, (50, 70, 4), dtype=np.uint8), "RGBA"),
        Image.fromarray(rng.integers(0, 256, (50, 70, 4), dtype=np.uint8), "CMYK"),
        Image.fromarray(rng.integers(0, 65535, (40, 44)).astype(np.uint16)),  # I;16
        Image.new("RGB", (40, 30), (10, 200, 30)),  # constant: every DCT value ties
    ]
    for method, params in [("phash", {}), ("dhash", {}), ("ahash", {}), ("dhash_vertical", {}), ("whash", {}),
                           ("phash_simple", {}), ("phash", {"hash_size": 16}), ("whash", {"image_scale": 64})]:
        got = _hex(hash_pil(images, method, **params), method, **params)
        assert got == [str(IMAGEHASH[method](im, **params)) for im in images], method


def test_hash_pil_agrees_with_hash_images_on_arrays():
    s = make_imageset(30, size=32)
    pil = [Image.fromarray(x) for x in s.images]
    for method in ("phash", "dhash", "whash"):
        np.testing.assert_array_equal(hash_pil(pil, method), hash_images(s.images, method))


def test_hash_pil_bad_input():
    with pytest.raises(TypeError, match=r"images\[0\] == 'ndarray'; must be a PIL.Image.Image"):
        hash_pil([np.zeros((4, 4, 3), np.uint8)])
    with pytest.raises(ValueError, match="images == \\[\\]; must be non-empty"):
        hash_pil([])


# --------------------------------------------------------------------------- round trips


def _folder(tmp_path: Path, s: ImageSet) -> Path:
    return export_folder(s, tmp_path / "png")


@pytest.mark.parametrize("layout", ["flat", "class"])
def test_folder_source_materialises_the_set(tmp_path, toy, layout):
    root = export_folder(toy, tmp_path / layout, layout=layout)
    src = open_source(root, chunk_size=7)
    assert src.kind == "folder" and len(src) == len(toy) and src.n_chunks == 6
    m = src.materialise()
    # the class layout lists class folders in name order, files in name order within them
    order = np.array([int(Path(f).stem) for f in m.metadata["file"]])
    if layout == "class":
        assert m.ids[0] == "airplane/00000.png" and sorted(order.tolist()) == list(range(40))
    np.testing.assert_array_equal(m.images, toy.images[order])
    np.testing.assert_array_equal(m.labels, toy.labels[order])
    assert m.class_names == toy.class_names
    if layout == "flat":
        np.testing.assert_array_equal(m.ids, toy.ids)
        np.testing.assert_array_equal(m.metadata["keyword"], toy.metadata["keyword"])
        np.testing.assert_allclose(m.metadata["score"], toy.metadata["score"])


def test_shards_and_parquet_materialise_the_set(tmp_path, toy):
    write_shards(toy, tmp_path / "tar", shard_size=15)
    write_parquet(toy, tmp_path / "pq" / "pool.parquet", row_group_size=9)
    for path in (tmp_path / "tar", tmp_path / "pq"):
        src = open_source(path, chunk_size=8)
        m = src.materialise()
        np.testing.assert_array_equal(m.images, toy.images)
        np.testing.assert_array_equal(m.ids, toy.ids)
        np.testing.assert_array_equal(m.labels, toy.labels)
        assert m.class_names == toy.class_names
        np.testing.assert_array_equal(m.metadata["keyword"], toy.metadata["keyword"])
        # the content fingerprint of the materialised set is the in-memory set's
        assert m.with_metadata(score=toy.metadata["score"]).image_fingerprint == toy.image_fingerprint
    assert open_source(tmp_path / "tar").kind == "webdataset"
    assert open_source(tmp_path / "pq").kind == "parquet"


def test_chunks_are_deterministic_and_carry_ids(tmp_path, toy):
    write_shards(toy, tmp_path / "tar", shard_size=15)
    src = open_source(tmp_path / "tar", chunk_size=6)
    a = list(src.chunks(["phash"]))
    b = list(src.chunks(["phash"], workers=2))
    assert [c.index for c in a] == list(range(7)) and [c.start for c in a] == list(range(0, 40, 6))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.ids, y.ids)
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.hashes["phash"], y.hashes["phash"])
    np.testing.assert_array_equal(np.concatenate([c.ids for c in a]), toy.ids)
    np.testing.assert_array_equal(np.concatenate([c.hashes["phash"] for c in a]), hash_images(toy.images, "phash"))
    # a task is self-contained: the same chunk decoded from the task alone
    task = src.tasks(["phash"])[3]
    np.testing.assert_array_equal(read_chunk(task).images, a[3].images)


def test_fingerprint_and_manifest(tmp_path, toy):
    write_shards(toy, tmp_path / "a", shard_size=15)
    write_shards(toy, tmp_path / "b", shard_size=40)
    fa = open_source(tmp_path / "a").fingerprint
    # same images and listing in other shards: same fingerprint
    assert open_source(tmp_path / "b").fingerprint == fa
    # one image changed: another fingerprint
    changed = toy.images.copy()
    changed[5, 0, 0] ^= 1
    write_shards(ImageSet(changed, toy.labels, toy.class_names, toy.ids, toy.metadata), tmp_path / "c", shard_size=15)
    assert open_source(tmp_path / "c").fingerprint != fa
    # another decode policy: another listing fingerprint, same bytes
    src = open_source(tmp_path / "a")
    assert src.with_options(policy=DecodePolicy(size=16)).listing_fingerprint != src.listing_fingerprint
    man = src.manifest()
    assert man["kind"] == "image-source" and man["fingerprint"] == fa and man["n"] == 40
    assert len(man["files"]) == 3 and man["policy"]["size"] == [32, 32]
    json.dumps(man)


def test_metadata_set_has_no_pixels(tmp_path, toy):
    write_shards(toy, tmp_path / "tar")
    meta = open_source(tmp_path / "tar").metadata_set()
    assert meta.images.strides[:3] == (0, 0, 0) and len(meta) == 40
    np.testing.assert_array_equal(meta.labels, toy.labels)
    np.testing.assert_array_equal(meta.metadata["keyword"], toy.metadata["keyword"])


def test_materialise_positions_in_given_order(tmp_path, toy):
    write_shards(toy, tmp_path / "tar", shard_size=10)
    src = open_source(tmp_path / "tar", chunk_size=4)
    m = src.materialise([33, 2, 17, 3])
    np.testing.assert_array_equal(m.ids, toy.ids[[33, 2, 17, 3]])
    np.testing.assert_array_equal(m.images, toy.images[[33, 2, 17, 3]])


def test_materialise_decodes_only_the_wanted_images(tmp_path, toy):
    """A sample of a web-scale pool must not decode the rest of each chunk it draws from:
    a corrupt image next to the wanted ones (same chunk) is never read."""
    good = _png(toy.images[0], "JPEG")
    path = _one_shard(tmp_path, {"a.jpg": good, "a.cls": b"1", "b.jpg": good[: len(good) // 3], "b.cls": b"2",
                                 "c.jpg": good, "c.cls": b"3"})
    src = open_source(path, chunk_size=4096)
    m = src.materialise([2, 0])
    assert m.ids.tolist() == ["bad/c", "bad/a"] and "skipped" not in m.info
    with pytest.raises(ValueError, match=r"image member 'b\.jpg' of shard"):
        src.materialise([1])


# --------------------------------------------------------------------------- sizes and modes


def _mixed_folder(root: Path, base: np.ndarray) -> dict[str, tuple[str, np.ndarray]]:
    """Variants of each base image; returns file -> (variant, expected thumbnail or None)."""
    root.mkdir(parents=True)
    expected: dict[str, tuple[str, np.ndarray]] = {}
    for i, im in enumerate(base):
        pil = Image.fromarray(im)
        variants = {
            "orig.png": (pil, im),
            # nearest-neighbour 2x: the 2x2 box mean gives the original back exactly
            "up64.png": (pil.resize((64, 64), Image.Resampling.NEAREST), im),
            "up96x80.png": (pil.resize((80, 96), Image.Resampling.BICUBIC), None),
            "gray.png": (pil.convert("L"), np.repeat(np.asarray(pil.convert("L"))[..., None], 3, axis=2)),
            "rgba.png": (Image.fromarray(np.dstack([im, np.full(im.shape[:2], 128, np.uint8)]), "RGBA"), im),
            "cmyk.jpg": (pil.convert("CMYK"), None),
        }
        for fname, (img, exp) in variants.items():
            path = root / f"{i:02d}_{fname}"
            img.save(path, **({"quality": 95} if fname.endswith(".jpg") else {}))
            expected[path.name] = (fname, exp)
        # stored rotated, with EXIF orientation 6 (display: rotate 90 clockwise) undoing it
        exif = Image.Exif()
        exif[0x0112] = 6
        path = root / f"{i:02d}_exif.png"
        pil.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
        expected[path.name] = ("exif.png", im)
        # 16 bit: the 8-bit image scaled to 16 bits (value * 257): >> 8 gives it back
        path = root / f"{i:02d}_gray16.png"
        gray = np.asarray(pil.convert("L")).astype(np.uint16) * 257
        Image.fromarray(gray).save(path)
        expected[path.name] = ("gray16.png", np.repeat((gray >> 8).astype(np.uint8)[..., None], 3, axis=2))
    rows = [{"file": f, "id": f, "variant": v} for f, (v, _) in sorted(expected.items())]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return expected


def test_mixed_sizes_and_modes(tmp_path, toy):
    base = toy.images[:4]
    expected = _mixed_folder(tmp_path / "mixed", base)
    src = open_source(tmp_path / "mixed", chunk_size=10)
    specs = ["phash", "dhash", "whash", HashSpec("phash", 16)]
    chunks = list(src.chunks(specs))
    ids = np.concatenate([c.ids for c in chunks])
    thumbs = np.concatenate([c.images for c in chunks])
    assert thumbs.shape == (len(expected), 32, 32, 3)
    for spec in specs:
        spec = HashSpec(spec) if isinstance(spec, str) else spec
        got = _hex(np.concatenate([c.hashes[spec.key] for c in chunks]), spec.method, hash_size=spec.hash_size)
        from PIL import ImageOps

        want = [str(IMAGEHASH[spec.method](ImageOps.exif_transpose(Image.open(tmp_path / "mixed" / f)),
                                           hash_size=spec.hash_size)) for f in ids]
        assert got == want, spec
    by_id = dict(zip(ids, thumbs))
    phash = dict(zip(ids, np.concatenate([c.hashes["phash"] for c in chunks])))
    for f, (variant, exp) in expected.items():
        if exp is not None:
            np.testing.assert_array_equal(by_id[f], exp, err_msg=f)
        i = f[:2]
        if variant in ("gray.png", "rgba.png", "exif.png"):
            # as displayed, the same photograph: the same perceptual hash as the original
            assert phash[f] == phash[f"{i}_orig.png"], f
    sizes = {f: tuple(s) for c in chunks for f, s in zip(c.ids, c.sizes)}
    assert sizes["00_up96x80.png"] == (80, 96) and sizes["00_up64.png"] == (64, 64)
    modes = {f: m for c in chunks for f, m in zip(c.ids, c.modes)}
    assert modes["00_cmyk.jpg"] == "CMYK" and modes["00_gray16.png"].startswith("I") and modes["00_rgba.png"] == "RGBA"
    # the upsampled 96x80 copy comes back close to its original (squash + box filter)
    for i in range(4):
        diff = by_id[f"{i:02d}_up96x80.png"].astype(float) - base[i]
        assert np.sqrt(np.mean(diff**2)) < 12


def test_exif_transpose_off_hashes_the_stored_pixels(tmp_path, toy):
    _mixed_folder(tmp_path / "mixed", toy.images[:1])
    src = open_source(tmp_path / "mixed", policy=DecodePolicy(exif_transpose=False))
    (chunk,) = list(src.chunks(["phash"]))
    k = list(chunk.ids).index("00_exif.png")
    assert _hex(chunk.hashes["phash"][k : k + 1], "phash") == [str(imagehash.phash(Image.open(tmp_path / "mixed" /
                                                                                              "00_exif.png")))]
    np.testing.assert_array_equal(chunk.images[k], np.rot90(toy.images[0]))


def test_center_crop_and_resample_policies(tmp_path):
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)
    root = tmp_path / "w"
    root.mkdir()
    Image.fromarray(wide).save(root / "a.png")
    (root / "metadata.csv").write_text("file\na.png\n")
    crop = open_source(root, policy=DecodePolicy(size=(20, 20), fit="center_crop", resample="lanczos")).materialise()
    ref = Image.fromarray(wide).resize((40, 20), Image.Resampling.LANCZOS).crop((10, 0, 30, 20))
    np.testing.assert_array_equal(crop.images[0], np.asarray(ref))
    squash = open_source(root, policy={"size": [20, 20]}).materialise()
    np.testing.assert_array_equal(squash.images[0], np.asarray(Image.fromarray(wide).resize((20, 20), Image.Resampling.BOX)))


# --------------------------------------------------------------------------- bad input


def _one_shard(tmp_path: Path, members: dict[str, bytes], name: str = "bad.tar") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    with tarfile.open(path, "w") as tf:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _png(im: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format=fmt)
    return buf.getvalue()


def test_corrupt_jpeg_names_shard_and_member_or_is_skipped(tmp_path, toy):
    good = _png(toy.images[0], "JPEG")
    bad = good[: len(good) // 3]
    path = _one_shard(tmp_path, {"a.jpg": good, "a.cls": b"1", "b.jpg": bad, "b.cls": b"2", "c.jpg": good, "c.cls": b"3"})
    src = open_source(path)
    with pytest.raises(ValueError, match=r"image member 'b\.jpg' of shard '.*bad\.tar' == unreadable"):
        src.materialise()
    skip = open_source(path, on_error="skip")
    (chunk,) = list(skip.chunks(["phash"]))
    assert list(chunk.ids) == ["bad/a", "bad/c"] and chunk.keep.tolist() == [True, False, True]
    assert chunk.skipped[0][0] == "bad/b" and "b.jpg" in chunk.skipped[0][1]
    m = skip.materialise()
    assert len(m) == 2 and m.info["skipped"][0][0] == "bad/b"
    assert skip.manifest(skipped=chunk.skipped)["skipped"]["n"] == 1


def test_non_image_bytes_and_too_small_images(tmp_path, toy):
    path = _one_shard(tmp_path, {"a.png": b"this is not an image", "b.png": _png(toy.images[0][:16, :16])})
    with pytest.raises(ValueError, match=r"member 'a\.png' of shard .* == unreadable \(UnidentifiedImageError"):
        open_source(path).materialise()
    small = _one_shard(tmp_path, {"b.png": _png(toy.images[0][:16, :16])}, "small.tar")
    with pytest.raises(ValueError, match=r"size of image member 'b\.png' .* == 16x16 .*; must be at least the "
                                         r"canonical thumbnail's 32x32"):
        open_source(small).materialise()
    up = open_source(path, policy=DecodePolicy(upsample=True), on_error="skip").materialise()
    assert len(up) == 1 and up.info["skipped"][0][0] == "bad/a"


def test_truncated_tar_names_the_shard(tmp_path, toy):
    path = write_shards(toy, tmp_path / "tar", shard_size=40)[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(ValueError, match=r"shard '.*shard-000000\.tar' == (unreadable tar|cut off)|member .* of shard "
                                         r"'.*shard-000000\.tar' == cut off"):
        open_source(tmp_path / "tar")


def test_parquet_without_image_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "label": [0, 1]}), path)
    with pytest.raises(KeyError, match=r"image column of .*p\.parquet.* == .*columns .*id.*label.*; must be one "
                                       "column of image bytes"):
        open_source(path)
    with pytest.raises(KeyError, match="image_column == 'jpg'; must be a column of"):
        open_source(path, image_column="jpg")


def test_metadata_row_without_a_file(tmp_path, toy):
    root = export_folder(toy.select(np.arange(3)), tmp_path / "f")
    with open(root / "metadata.csv", "a") as fh:
        fh.write("ghost.png,ghost,airplane,airplane_kw0,synthetic,0.5\n")
    with pytest.raises(FileNotFoundError, match=r"files listed in metadata.csv == \['ghost.png'\]; must be image files "
                                                "present"):
        open_source(root)


def test_other_bad_arguments(tmp_path, toy):
    write_shards(toy, tmp_path / "tar")
    with pytest.raises(ValueError, match="on_error == 'ignore'; must be one of: 'raise', 'skip'"):
        open_source(tmp_path / "tar", on_error="ignore")
    with pytest.raises(ValueError, match="keyword argument == 'chunksize'; must be one of.*Did you mean 'chunk_size'"):
        open_source(tmp_path / "tar", chunksize=3)
    with pytest.raises(ValueError, match="policy.fit == 'crop'; must be one of: 'squash', 'center_crop'"):
        DecodePolicy(fit="crop")
    with pytest.raises(ValueError, match="method == 'phsh'; must be one of"):
        open_source(tmp_path / "tar").tasks(["phsh"])
    with pytest.raises(FileNotFoundError, match="path == .*nowhere'; must be an existing file or directory"):
        open_source(tmp_path / "nowhere")
    dup = _one_shard(tmp_path / "dup", {"a.png": _png(toy.images[0]), "a.json": b'{"id": "x"}',
                                        "b.png": _png(toy.images[1]), "b.json": b'{"id": "x"}'})
    with pytest.raises(ValueError, match=r"ids of webdataset source 'bad' == \"1 repeats, e.g. \['x'\]\"; must be unique"):
        ImageSource.from_shards(dup)


# --------------------------------------------------------------------------- the real pool


@pytest.mark.shared
@pytest.mark.slow
def test_real_pool_three_ways(pool_sources, candidate_pool):
    """The 12,100-image pool as PNG folder, JPEG-95 shards and Parquet materialises as the
    in-memory set (the JPEG shards as the decoded JPEGs)."""
    for kind in ("png", "parquet"):
        m = pool_sources[kind].materialise()
        np.testing.assert_array_equal(m.images, candidate_pool.images)
        np.testing.assert_array_equal(m.ids, candidate_pool.ids)
        np.testing.assert_array_equal(m.labels, candidate_pool.labels)
        np.testing.assert_array_equal(m.metadata["keyword"], candidate_pool.metadata["keyword"])
    jpg = pool_sources["jpg"].materialise()
    decoded = pool_sources["jpg_decoded"]
    np.testing.assert_array_equal(jpg.images, decoded.images)
    assert not np.array_equal(jpg.images, candidate_pool.images)


def test_load_and_load_pool_open_sources(tmp_path, toy):
    import replicate

    write_shards(toy, tmp_path / "tar", shard_size=15)
    s = replicate.load(tmp_path / "tar")
    assert isinstance(s, ImageSet) and np.array_equal(s.images, toy.images)
    src = replicate.load_pool(tmp_path / "tar", stream=True)
    assert isinstance(src, replicate.ImageSource) and len(src) == 40
    pool = tmp_path / "mypool"
    pool.mkdir()
    (pool / "pool.toml").write_text('name = "mypool"\ndescription = "d"\nsource = "s"\nlicence = "l"\n'
                                    f'data = "{(tmp_path / "tar").as_posix()}"\n[columns]\nkeyword = "k"\n')
    streamed = replicate.load_pool(pool, stream=True)
    assert streamed.name == "mypool" and list(streamed.ids) == list(toy.ids)
    assert replicate.load_pool(pool).name == "mypool"
    np.save(tmp_path / "x.npy", toy.images)
    (pool / "pool.toml").write_text('name = "mypool"\ndescription = "d"\nsource = "s"\nlicence = "l"\n'
                                    f'data = "{(tmp_path / "x.npy").as_posix()}"\n')
    with pytest.raises(ValueError, match="stream == True; must be False for pool 'mypool', whose data 'x.npy' is an "
                                         "in-memory format"):
        replicate.load_pool(pool, stream=True)


def test_flat_folder_class_names_from_classes_txt_or_argument(tmp_path):
    """String labels name only the classes present; classes.txt (or class_names=) gives all,
    in label order; a classes.txt with repeats or no names is an error naming the file."""
    rng = np.random.default_rng(0)
    rows = []
    for i, label in enumerate(["dog", "cat", "dog"]):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append({"file": f"{i}.png", "label": label})
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = open_source(tmp_path)
    assert src.class_names == ("cat", "dog") and src.labels.tolist() == [1, 0, 1]
    (tmp_path / "classes.txt").write_text("airplane\ncat\n\ndog\n")
    src = open_source(tmp_path)
    assert src.class_names == ("airplane", "cat", "dog") and src.labels.tolist() == [2, 1, 2]
    src = open_source(tmp_path, class_names=["dog", "cat", "bird"])  # the argument wins
    assert src.labels.tolist() == [0, 1, 0]
    (tmp_path / "classes.txt").write_text("cat\nbird\n")
    with pytest.raises(ValueError, match=r"labels in folder source .* == \['dog'\]; must be one of class_names"):
        open_source(tmp_path)
    (tmp_path / "classes.txt").write_text("cat\ndog\ncat\n")
    with pytest.raises(ValueError, match=r"classes\.txt == \"\['cat'\] listed twice\"; must be each class name once"):
        open_source(tmp_path)
    (tmp_path / "classes.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"classes\.txt == 'no class names'; must be one class name per line"):
        open_source(tmp_path)
