"""Batched perceptual hashes must equal imagehash's, bit for bit, on every input.

The golden values are imagehash itself (4.3.x, on PIL images made from the same pixels):
``int(str(imagehash.<hasher>(Image.fromarray(img), ...)), 16)`` must equal our packed
integer for real CIFAR-10 images, random and constant images, and odd sizes.
"""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from replicate import hashing
from replicate.hashing import (
    Hashes,
    hash_bits,
    hash_images,
    hash_set,
    hashes_from_hex,
    hashes_to_hex,
    list_hashers,
    pack_bits,
    resize_lanczos,
    to_gray,
    unpack_bits,
)

IMAGEHASH = {
    "ahash": imagehash.average_hash,
    "dhash": imagehash.dhash,
    "dhash_vertical": imagehash.dhash_vertical,
    "phash": imagehash.phash,
    "phash_simple": imagehash.phash_simple,
    "whash": imagehash.whash,
}


def reference_hex(images: np.ndarray, method: str, **params: object) -> list[str]:
    """imagehash's hex string of each image (the golden values)."""
    func = IMAGEHASH[method]
    return [str(func(Image.fromarray(img), **params)) for img in images]  # type: ignore[arg-type]


def ours_hex(images: np.ndarray, method: str, **params: object) -> list[str]:
    values = hash_images(images, method, **params)  # type: ignore[arg-type]
    return hashes_to_hex(values, hash_bits(method, **params))  # type: ignore[arg-type]


def assert_identical(images: np.ndarray, method: str, **params: object) -> None:
    ours = ours_hex(images, method, **params)
    ref = reference_hex(images, method, **params)
    bad = [i for i, (a, b) in enumerate(zip(ours, ref)) if a != b]
    assert not bad, f"{method} {params}: {len(bad)} of {len(images)} differ, first {bad[:5]}"


def smooth(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Images with large flat areas (ties at the median are likely)."""
    base = rng.integers(0, 256, size=(n, (h + 3) // 4, (w + 3) // 4, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)
    return np.ascontiguousarray(big[:, :h, :w])


def test_registry_lists_every_hasher() -> None:
    assert list_hashers() == sorted(IMAGEHASH)


@pytest.mark.shared
@pytest.mark.parametrize("method", sorted(IMAGEHASH))
def test_identical_to_imagehash_on_cifar(cifar_test, method: str) -> None:
    n = 3000 if method == "phash" else 800
    assert_identical(cifar_test.images[:n], method)


@pytest.mark.shared
@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("phash", {"hash_size": 16}),
        ("phash", {"hash_size": 4, "highfreq_factor": 8}),
        ("phash", {"hash_size": 6, "highfreq_factor": 3}),
        ("phash", {"hash_size": 5, "highfreq_factor": 3}),  # odd DCT size (15)
        ("phash", {"hash_size": 7, "highfreq_factor": 1}),
        ("phash_simple", {"hash_size": 16, "highfreq_factor": 2}),
        ("ahash", {"hash_size": 16}),
        ("dhash", {"hash_size": 5}),
        ("dhash_vertical", {"hash_size": 12}),
        ("whash", {"hash_size": 16}),
        ("whash", {"hash_size": 4, "image_scale": 64}),
        ("whash", {"remove_max_haar_ll": False}),
        ("whash", {"hash_size": 8, "image_scale": 16}),
    ],
)
def test_identical_to_imagehash_with_parameters(cifar_test, method: str, params: dict) -> None:
    assert_identical(cifar_test.images[1000:1300], method, **params)


@pytest.mark.parametrize("method", sorted(IMAGEHASH))
def test_identical_on_random_and_smooth_images(method: str) -> None:
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, size=(150, 32, 32, 3), dtype=np.uint8)
    assert_identical(np.concatenate([noise, smooth(rng, 150, 32, 32)]), method)


@pytest.mark.parametrize("method", sorted(IMAGEHASH))
def test_identical_on_constant_images(method: str) -> None:
    # every value of a constant image is a tie: imagehash's rounding decides each bit
    levels = np.arange(0, 256, 3, dtype=np.uint8)
    images = np.broadcast_to(levels[:, None, None, None], (len(levels), 32, 32, 3)).copy()
    images[::2, :, :, 1] = 255 - images[::2, :, :, 1]  # constant but not gray
    assert_identical(images, method)


@pytest.mark.parametrize("shape", [(64, 64), (48, 40), (17, 23), (9, 9), (128, 96)])
@pytest.mark.parametrize("method", sorted(IMAGEHASH))
def test_identical_on_other_sizes(method: str, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    h, w = shape
    images = np.concatenate([rng.integers(0, 256, size=(20, h, w, 3), dtype=np.uint8), smooth(rng, 20, h, w)])
    assert_identical(images, method)


def test_whash_db4_identical() -> None:
    rng = np.random.default_rng(3)
    images = np.concatenate(
        [rng.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8), smooth(rng, 10, 32, 32)]
    )
    assert_identical(images, "whash", mode="db4", image_scale=64)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda h: st.integers(1, 40).flatmap(
            lambda w: arrays(np.uint8, (3, h, w, 3), elements=st.integers(0, 255))
        )
    ),
    st.sampled_from(sorted(IMAGEHASH)),
    st.sampled_from([2, 4, 8]),
)
def test_identical_on_hypothesis_images(images: np.ndarray, method: str, hash_size: int) -> None:
    assert_identical(images, method, hash_size=hash_size)


def test_gray_matches_pil_on_every_colour() -> None:
    # all 2**24 RGB colours as one 4096 x 4096 image
    c = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([c >> 16, (c >> 8) & 255, c & 255], axis=-1).astype(np.uint8).reshape(1, 4096, 4096, 3)
    ref = np.asarray(Image.fromarray(rgb[0]).convert("L"))
    assert np.array_equal(to_gray(rgb)[0], ref)


def test_gray_and_resize_match_pil() -> None:
    rng = np.random.default_rng(11)
    images = rng.integers(0, 256, size=(6, 37, 29, 3), dtype=np.uint8)
    gray = to_gray(images)
    for img, g in zip(images, gray):
        assert np.array_equal(g, np.asarray(Image.fromarray(img).convert("L")))
    # (25, 10) and (27, 4): height shrinks by more than twice the width, which newer Pillow
    # resamples vertically first
    for size in [(8, 8), (9, 8), (29, 37), (64, 50), (3, 41), (29, 5), (25, 10), (27, 4), (40, 9)]:
        ours = resize_lanczos(gray, *size)
        for g, o in zip(gray, ours):
            ref = np.asarray(Image.fromarray(g).resize(size, Image.Resampling.LANCZOS))
            assert np.array_equal(o, ref), size


def test_packing_matches_imagehash_hex() -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    h = imagehash.phash(img)
    value = hash_images(np.asarray(img)[None], "phash")
    assert value.dtype == np.uint64 and value.shape == (1,)
    assert int(value[0]) == int(str(h), 16)
    wide = imagehash.phash(img, hash_size=16)
    v16 = hash_images(np.asarray(img)[None], "phash", hash_size=16)
    assert v16.shape == (1, 4)
    assert sum(int(w) << (64 * (3 - k)) for k, w in enumerate(v16[0])) == int(str(wide), 16)


@pytest.mark.parametrize("nbits", [4, 36, 64, 81, 144, 256])
def test_pack_unpack_and_hex_round_trip(nbits: int) -> None:
    rng = np.random.default_rng(nbits)
    bits = rng.random((20, nbits)) < 0.5
    packed = pack_bits(bits)
    assert packed.dtype == np.uint64
    assert np.array_equal(unpack_bits(packed, nbits), bits)
    hexes = hashes_to_hex(packed, nbits)
    assert all(len(h) == (nbits + 3) // 4 for h in hexes)
    assert np.array_equal(hashes_from_hex(hexes, nbits), packed)


def test_chunking_and_imageset_give_the_same_hashes(toy) -> None:
    whole = hash_images(toy, "phash")
    assert np.array_equal(whole, hash_images(toy.images, "phash", chunk_size=7))
    assert np.array_equal(hashing.hash_chunk(toy.images[:9], "phash"), whole[:9])


def test_hashes_round_trip(tmp_path, toy) -> None:
    h = hash_set(toy, "whash", hash_size=4)
    assert h.method == "whash" and h.params == {
        "hash_size": 4,
        "image_scale": None,
        "mode": "haar",
        "remove_max_haar_ll": True,
    }
    assert h.bits == 16 and len(h) == len(toy)
    assert np.array_equal(h.ids, toy.ids)
    assert set(h.versions) == {"replicate", "Pillow", "ImageHash"}
    path = h.save(tmp_path / "toy")
    assert path.name == "toy.npz"
    back = Hashes.load(path)
    assert back == h and back.versions == h.versions
    again = Hashes.from_hex(h.to_hex(), h.ids, "whash", h.params)
    assert again == h
    d = h.to_dict()
    assert d["n"] == len(toy) and d["hex"] == h.to_hex()
    assert "16 bits" in h.summary()
    with pytest.raises(FileExistsError, match="path == .*must be a path that does not exist"):
        h.save(path)


def test_refuses_to_compare_hashes_of_different_hashers(toy) -> None:
    a = hash_set(toy, "phash")
    b = hash_set(toy, "phash", highfreq_factor=2)
    c = hash_set(toy, "dhash")
    a.check_compatible(hash_set(toy, "phash"))
    with pytest.raises(ValueError, match="must be hashes made with the same hasher and parameters"):
        a.check_compatible(b)
    with pytest.raises(ValueError, match="dhash"):
        hashing.check_compatible(a, c)


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (np.zeros((2, 8, 8, 3), np.float32), TypeError, "images == array.*must be of dtype uint8"),
        (np.zeros((2, 8, 8), np.uint8), ValueError, r"must be of shape \(N, H, W, 3\)"),
        (np.zeros((2, 8, 8, 4), np.uint8), ValueError, r"must be of shape \(N, H, W, 3\)"),
        (np.zeros((0, 8, 8, 3), np.uint8), ValueError, "must be non-empty"),
        ([[1, 2, 3]], TypeError, "must be a uint8 NHWC RGB array or an ImageSet"),
    ],
)
def test_bad_images(images: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        hash_images(images)


def test_bad_parameters() -> None:
    img = np.zeros((1, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="method == 'phahs'; must be one of: .*Did you mean 'phash'"):
        hash_images(img, "phahs")
    with pytest.raises(ValueError, match="hash_size == 1; must be >= 2"):
        hash_images(img, "ahash", hash_size=1)
    with pytest.raises(TypeError, match="params == .*must be parameters of 'dhash'"):
        hash_images(img, "dhash", highfreq_factor=4)
    with pytest.raises(ValueError, match="hash_size == 6; must be a power of 2 for whash"):
        hash_images(img, "whash", hash_size=6)
    with pytest.raises(ValueError, match="image_scale == 48; must be a power of 2"):
        hash_images(img, "whash", image_scale=48)
    with pytest.raises(ValueError, match="mode == 'db8'; must be one of: 'haar', 'db4'"):
        hash_images(img, "whash", mode="db8")
    with pytest.raises(ValueError, match="image_scale == None; must be given for whash with mode='db4'"):
        hash_images(img, "whash", mode="db4")
    with pytest.raises(ValueError, match="chunk_size == 0; must be >= 1"):
        hash_images(img, chunk_size=0)
    with pytest.raises(ValueError, match="hexes == 'xyz'; must be a hexadecimal string"):
        hashes_from_hex(["xyz"], 64)


def test_cli_hash_writes_a_hashes_file(tmp_path, toy, capsys) -> None:
    from replicate.cli import main

    src = toy.save(tmp_path / "toy-set")
    out = tmp_path / "h.npz"
    code = main(
        [
            "hash",
            str(src),
            "--method",
            "whash",
            "--hash-size",
            "4",
            "--param",
            "image_scale=64",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert '"method": "whash"' in printed and '"image_scale": 64' in printed
    h = Hashes.load(out)
    assert h == hash_set(toy, "whash", hash_size=4, image_scale=64)
    assert main(["hash", str(src), "--method", "phahs", "--out", str(tmp_path / "x.npz")]) == 2
    assert "method == 'phahs'" in capsys.readouterr().err
    assert main(["hash", str(src), "--out", str(out)]) == 2  # exists, no --overwrite
