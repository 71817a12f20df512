"""Tests for the copy-detection descriptor (replicate.models.descriptor) and its training script."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replicate.models import WeightsError
from replicate.models._weights import PACKAGE_WEIGHTS
from replicate.models.descriptor import (
    DESCRIPTOR_CARD,
    INPUT_SIZE,
    MEAN,
    STD,
    CopyDescriptor,
    cosine_knn,
    embed,
    flops_per_image,
    load_descriptor,
    prepare,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import train_descriptor as td  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("REPLICATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REPLICATE_OFFLINE", "1")
    monkeypatch.delenv("REPLICATE_WEIGHTS", raising=False)


def smooth_images(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    """Real-looking images: random low-frequency colour fields."""
    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.uniform(0, 255, size=(n, 3, 6, 6)).astype(np.float32))
    x = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 255)
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy().copy()


# --------------------------------------------------------------------------- input policy


def test_prepare_normalises_32x32_with_the_stated_mean_and_std():
    img = smooth_images(2)
    x = prepare(img)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    expect = (img[0, 5, 7] / 255.0 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(x[0, :, 5, 7].numpy(), expect, rtol=1e-5, atol=1e-6)


def test_other_sizes_are_resized_by_antialiased_bilinear_and_grayscale_replicated():
    big = smooth_images(3, size=64)
    x = prepare(big)
    assert x.shape == (3, 3, INPUT_SIZE, INPUT_SIZE)
    ref = F.interpolate(torch.from_numpy(big).permute(0, 3, 1, 2).float() / 255, size=(32, 32), mode="bilinear",
                        antialias=True, align_corners=False)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (ref.clamp(0, 1) - mean) / std)
    # a 64x64 image and its 2x2 box-downsampled 32x32 version get nearly the same input
    box = big.reshape(3, 32, 2, 32, 2, 3).mean(axis=(2, 4)).round().astype(np.uint8)
    assert (prepare(box) - x).abs().max() < 0.1
    gray = big[..., 0]
    g = prepare(gray)
    torch.testing.assert_close(g[:, 0] * STD[0] + MEAN[0], g[:, 1] * STD[1] + MEAN[1])
    torch.testing.assert_close(prepare(gray[..., None]), g)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((2, 32, 32, 3), np.float32), r"images\.dtype == 'float32'; must be uint8"),
        (np.zeros((2, 32, 32, 4), np.uint8), r"images\.shape == \(2, 32, 32, 4\); must be \(N, H, W, 3\)"),
        (np.zeros((32, 32), np.uint8), r"images\.shape"),
    ],
)
def test_prepare_rejects_bad_input(images, match):
    with pytest.raises(ValueError, match=match):
        prepare(images)


# --------------------------------------------------------------------------- weights


def test_shipped_weights_match_the_card_and_load():
    path = PACKAGE_WEIGHTS / DESCRIPTOR_CARD.weights_file
    assert path.is_file()
    assert len(DESCRIPTOR_CARD.sha256) == 64
    assert path.stat().st_size < 3_000_000
    assert (PACKAGE_WEIGHTS / "copydesc32.md").read_text().count(DESCRIPTOR_CARD.sha256) >= 1
    model = load_descriptor()
    assert not model.training


def test_missing_weights_fail_clearly(tmp_path):
    with pytest.raises(WeightsError, match=r"weights == .*nothere\.npz.*; must be an existing file"):
        load_descriptor(tmp_path / "nothere.npz")


def test_wrong_weights_fail_on_sha256(tmp_path):
    bad = tmp_path / DESCRIPTOR_CARD.weights_file
    shutil.copy(PACKAGE_WEIGHTS / DESCRIPTOR_CARD.weights_file, bad)
    data = bytearray(bad.read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=f"has sha256 .*; must be {DESCRIPTOR_CARD.sha256}"):
        load_descriptor(bad)


def test_fused_model_matches_the_training_graph():
    torch.manual_seed(0)
    m = CopyDescriptor().eval()
    for mod in m.modules():  # non-trivial BatchNorm statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    x = prepare(smooth_images(4))
    with torch.inference_mode():
        torch.testing.assert_close(m.fused()(x), m(x), atol=1e-5, rtol=1e-4)


def test_flops_per_image_is_twice_the_hand_counted_multiply_adds():
    macs, cin, h = 0, 3, 32
    for cout, s in zip((24, 48, 64, 96, 128), (1, 2, 2, 1, 2)):
        h //= s
        macs += h * h * cin * 9 * cout
        cin = cout
    macs += 128 * 128
    assert flops_per_image() == 2 * macs


# --------------------------------------------------------------------------- descriptors


def test_embeddings_are_unit_norm_and_copies_are_nearest():
    img = smooth_images(64, seed=1)
    e = embed(img)
    assert e.shape == (64, 128) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    # a 1-pixel shift and a brightness change of each image: its own original is nearest
    shifted = np.clip(np.roll(img, 1, axis=2).astype(int) + 10, 0, 255).astype(np.uint8)
    idx, sim = cosine_knn(embed(shifted), e, k=1)
    assert (idx[:, 0] == np.arange(64)).mean() >= 0.9
    # oneDNN may block differently by batch size: equal to float32 rounding
    np.testing.assert_allclose(embed(img, batch_size=7), e, atol=1e-5)


def test_cosine_knn_matches_brute_force():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(500, 16)).astype(np.float32)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    q = r[:40] + 0.01 * rng.normal(size=(40, 16)).astype(np.float32)
    idx, sim = cosine_knn(q, r, k=3, block=7)
    full = q @ r.T
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :3])
    np.testing.assert_allclose(sim, np.sort(full, axis=1)[:, ::-1][:, :3], rtol=1e-6)
    assert cosine_knn(q, r[:2], k=5)[0].shape == (40, 2)
    with pytest.raises(ValueError, match="k == 0; must be a positive integer"):
        cosine_knn(q, r, k=0)
    with pytest.raises(ValueError, match=r"query\.shape / reference\.shape"):
        cosine_knn(q, r[:, :8])


# --------------------------------------------------------------------------- training script


def test_augment_is_seeded_and_keeps_shape():
    x = torch.from_numpy(smooth_images(16)).permute(0, 3, 1, 2).contiguous()
    a = td.augment(x, torch.Generator().manual_seed(3))
    b = td.augment(x, torch.Generator().manual_seed(3))
    c = td.augment(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_losses_reward_matching_views():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(32, 16), dim=1)
    aligned = torch.cat([z, z + 0.01 * torch.randn(32, 16)])
    shuffled = torch.cat([z, z[torch.randperm(32)]])
    nce_a, koleo_a = td.losses(F.normalize(aligned, dim=1), 0.05)
    nce_s, _ = td.losses(F.normalize(shuffled, dim=1), 0.05)
    assert nce_a < 0.1 < nce_s
    # KoLeo ignores the positive: the views' own near-copies do not count as neighbours
    d = torch.cdist(z, z) + torch.eye(32) * 10
    assert koleo_a.item() == pytest.approx(-torch.log(d.min(1).values).mean().item(), abs=0.05)


def test_training_runs_two_steps_and_writes_weights(tmp_path, monkeypatch):
    imgs = smooth_images(40)
    monkeypatch.setattr(td, "load_training_images", lambda: imgs)
    td.main(["--steps", "2", "--batch", "16", "--out", str(tmp_path)])
    files = list(tmp_path.glob("copydesc32-*.npz"))
    assert len(files) == 1
    from replicate.models.descriptor import _load_state

    m = _load_state(CopyDescriptor(), files[0])
    assert sum(p.numel() for p in m.parameters()) > 100_000
    assert (tmp_path / "copydesc32_training_log.json").is_file()


# --------------------------------------------------------------------------- in the detector


def test_detector_uses_the_descriptor_end_to_end():
    from conftest import make_imageset

    from replicate.dedup import find_near_duplicates

    ref = make_imageset(40, seed=1, name="ref")
    imgs = make_imageset(10, seed=2, name="new").images.copy()
    imgs[0] = np.clip(np.roll(ref.images[3], 1, axis=1).astype(int) + 15, 0, 255).astype(np.uint8)
    from replicate.imageset import ImageSet

    query = ImageSet(imgs, name="new")
    res = find_near_duplicates(query, {"ref": ref}, feature_model="copydesc32", feature_k=2, within_query=False)
    assert {"feature", "feature_rank"} <= set(res.pairs)
    row = res.pairs[(res.pairs.query_id == query.ids[0]) & (res.pairs.reference_id == ref.ids[3])].iloc[0]
    # the copy is the query's nearest candidate by the descriptor (these blocky synthetic
    # images are far from the training data, so the distance itself is not small)
    mine = res.pairs[res.pairs.query_id == query.ids[0]]
    assert row.feature == mine.feature.min() < 1.0 and row.flagged
    assert query.ids[0] in set(res.flagged.query_id)


def test_shipped_weights_missing_fail_naming_every_place_searched(tmp_path, monkeypatch):
    import replicate.models._weights as w

    monkeypatch.setattr(w, "PACKAGE_WEIGHTS", tmp_path / "empty")
    with pytest.raises(WeightsError, match=r"copydesc32-745199e1\.npz") as e:
        load_descriptor()
    assert "package data" in str(e.value) and "REPLICATE_HOME" in str(e.value)


def test_weights_of_another_model_fail_clearly(tmp_path):
    from replicate.models.descriptor import _load_state

    other = tmp_path / "other.npz"
    np.savez(other, w=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"weights == .*other\.npz.*copydesc32 state"):
        _load_state(CopyDescriptor(), other)


def test_non_square_images_are_stretched_to_32x32():
    wide = smooth_images(2, size=64)[:, ::2]  # 32 x 64: squeezed horizontally, aspect not kept
    x = prepare(np.ascontiguousarray(wide))
    assert x.shape == (2, 3, 32, 32)
    ref = F.interpolate(torch.from_numpy(np.ascontiguousarray(wide)).permute(0, 3, 1, 2).float() / 255, size=(32, 32),
                        mode="bilinear", antialias=True, align_corners=False)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (ref.clamp(0, 1) - mean) / std)
    # embedding works on the resized input, and a 64x64 image embeds close to its 32x32 box-downsampled copy
    big = smooth_images(1, size=64, seed=3)
    box = big.reshape(1, 32, 2, 32, 2, 3).mean(axis=(2, 4)).round().astype(np.uint8)
    assert float((embed(big) @ embed(box).T)[0, 0]) > 0.95
