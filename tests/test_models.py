"""Tests for the model zoo: registry, weight resolution and checks, architectures, prediction files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replicate.models import (
    CifarResNet,
    KerasCifarCNN,
    MLPerfTinyResNet8,
    ModelCard,
    Preprocessing,
    WeightsError,
    get_card,
    list_models,
    load_model,
    load_predictions,
    register_model,
    resolve_weights,
)
from replicate.models._weights import PACKAGE_DATA, PACKAGE_WEIGHTS
from replicate.models.keras_cifar import KerasSameConv2d

RESNET20_SHA = "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"  # ../shared/README.md
BUNDLED_PREDICTIONS = PACKAGE_DATA / "demo" / "cifar10_1_predictions.npz"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No download, an empty cache, no $REPLICATE_WEIGHTS unless a test sets it."""
    monkeypatch.setenv("REPLICATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REPLICATE_OFFLINE", "1")
    monkeypatch.delenv("REPLICATE_WEIGHTS", raising=False)
    monkeypatch.delenv("REPLICATE_DATA", raising=False)


# --------------------------------------------------------------------------- registry


def test_list_models_globs_and_filters_kind():
    assert list_models("resnet*") == ["resnet110", "resnet1202", "resnet20", "resnet32", "resnet44", "resnet56"]
    assert "mlperf_tiny_resnet8" in list_models(kind="weights")
    preds = list_models(kind="predictions")
    assert len(preds) == 30 + 67  # the two published releases
    assert "cifar10.1/shake_shake_26_2x64d_SSI_cutout16" in preds
    assert "imagenetv2/resnet50" in list_models("IMAGENETV2/RESNET5*")  # case-insensitive


def test_card_records_provenance():
    card = get_card("resnet20")
    assert card.sha256 == RESNET20_SHA
    assert card.url.endswith("pretrained_models/resnet20-12fca82f.th")
    assert card.licence == "BSD-2-Clause"
    assert card.reported_accuracy == 91.73
    assert card.preprocessing.mean == (0.485, 0.456, 0.406)
    assert card.to_dict()["preprocessing"]["input_size"] == [32, 32]
    assert "resnet20" in card.summary()


def test_unknown_name_suggests_closest():
    with pytest.raises(KeyError, match="model == 'resnt20'.*Did you mean 'resnet20'"):
        get_card("resnt20")


def test_register_twice_fails():
    card = ModelCard("resnet20", "x", 10, Preprocessing())
    with pytest.raises(ValueError, match="card.name == 'resnet20'; must be a name not yet registered"):
        register_model(card)(lambda card, path: None)


def test_load_model_refuses_prediction_entries():
    with pytest.raises(ValueError, match=r"use replicate\.evaluate\(name, dataset\)"):
        load_model("cifar10.1/wrn_28_10")


# --------------------------------------------------------------------------- preprocessing


def test_preprocessing_matches_torchvision_normalize():
    img = np.zeros((1, 2, 2, 3), np.uint8)
    img[0, 0, 0] = (255, 128, 0)
    pre = Preprocessing("unit", (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    x = pre(img)
    assert x.shape == (1, 3, 2, 2)
    expected = (torch.tensor([255, 128, 0]) / 255.0 - 0.5) / torch.tensor([0.25, 0.5, 1.0])
    torch.testing.assert_close(x[0, :, 0, 0], expected)
    raw = Preprocessing("raw", layout="NHWC")(img)
    assert raw.shape == (1, 2, 2, 3) and float(raw[0, 0, 0, 0]) == 255.0


def test_preprocessing_bad_input():
    with pytest.raises(ValueError, match="preprocessing.scale == 'unit255'; must be one of: 'unit', 'raw'"):
        Preprocessing("unit255")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="preprocessing.std == None; must be given together with mean"):
        Preprocessing("unit", mean=(0.5,))
    with pytest.raises(ValueError, match="positive in every channel"):
        Preprocessing("unit", mean=(0.5,), std=(0.0,))


# --------------------------------------------------------------------------- weights


def test_package_weights_are_found_first_and_verified():
    path = resolve_weights("resnet20")
    assert path.parent == PACKAGE_WEIGHTS
    model = load_model("resnet20")
    assert model.weights_sha256 == RESNET20_SHA
    assert isinstance(model, CifarResNet) and not model.training


def test_weights_found_recursively_in_replicate_weights(monkeypatch, tmp_path):
    deep = tmp_path / "w" / "a" / "b"
    deep.mkdir(parents=True)
    shutil.copy(PACKAGE_WEIGHTS / "resnet20-12fca82f.th", deep / "resnet32-d509ac18.th")
    monkeypatch.setenv("REPLICATE_WEIGHTS", str(tmp_path / "nothing") + ":" + str(tmp_path / "w"))
    # found by name in a nested folder, then rejected: the bytes are ResNet-20's
    with pytest.raises(WeightsError, match=r"resnet32-d509ac18.th' has sha256 12fca82f.*must be d509ac18"):
        resolve_weights("resnet32")


def test_sha256_mismatch_names_expected_found_and_path(tmp_path):
    bad = tmp_path / "resnet20-12fca82f.th"
    data = bytearray((PACKAGE_WEIGHTS / "resnet20-12fca82f.th").read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=rf"{tmp_path}.*has sha256 [0-9a-f]{{64}}; must be {RESNET20_SHA}"):
        load_model("resnet20", weights=bad)


def test_no_weights_found_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATE_WEIGHTS", str(tmp_path / "mine"))
    with pytest.raises(WeightsError) as info:
        resolve_weights("resnet110", download=False)
    msg = str(info.value)
    assert "no weights found for model 'resnet110'" in msg
    assert str(PACKAGE_WEIGHTS) in msg and str(tmp_path / "home" / "weights") in msg
    assert str(tmp_path / "mine") in msg and "(download disabled)" in msg
    assert "pass weights=PATH" in msg and "$REPLICATE_WEIGHTS" in msg


def test_explicit_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights == .*nope.th'; must be an existing file"):
        load_model("resnet20", weights=tmp_path / "nope.th")


# --------------------------------------------------------------------------- architectures


def test_cifar_resnet_shapes_and_depths():
    m = CifarResNet(20).eval()
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == (2, 10) and m.forward_features(x).shape == (2, 64)
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == 269_722  # ResNet-20, option A: 0.27M (He et al. 2016 Table 6); akamaster resnet.py prints 269722
    with pytest.raises(ValueError, match="depth == 21; must be 6n\\+2"):
        CifarResNet(21)


def test_fuse_keeps_logits():
    torch.manual_seed(0)
    m = CifarResNet(20).eval()
    for mod in m.modules():  # non-trivial batch-norm statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        ref = m(x)
        fused = m.fuse()(x)
    torch.testing.assert_close(fused, ref, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())


def test_keras_same_padding_is_asymmetric_for_stride_2():
    torch.manual_seed(0)
    conv = KerasSameConv2d(3, 4, 3, stride=2)
    x = torch.randn(1, 3, 32, 32)
    # TensorFlow 'same': total padding 1 for 32 -> 16 with k=3, s=2, all of it at bottom/right
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(conv(x), expected)
    assert conv(x).shape == (1, 4, 16, 16)
    one = KerasSameConv2d(3, 4, 1, stride=2)
    torch.testing.assert_close(one(x), F.conv2d(x, one.weight, one.bias, stride=2))


def test_keras_models_shapes():
    x = torch.rand(2, 3, 32, 32) * 255
    r8 = MLPerfTinyResNet8().eval()
    cnn = KerasCifarCNN().eval()
    assert r8(x).shape == (2, 10) and r8.forward_features(x).shape == (2, 64)
    assert cnn(x).shape == (2, 10) and cnn.forward_features(x).shape == (2, 512)


# --------------------------------------------------------------------------- prediction files


@pytest.fixture(scope="module")
def cifar_preds():
    return load_predictions(BUNDLED_PREDICTIONS)


def test_cifar10_1_predictions_reproduce_published_accuracy(cifar_preds):
    assert cifar_preds.datasets.keys() == {"cifar10-test", "cifar10.1-v4", "cifar10.1-v6"}
    assert len(cifar_preds.models) == 30
    r = cifar_preds.result("shake_shake_26_2x64d_SSI_cutout16", "cifar10-test")
    # 97.11 on CIFAR-10 test: ../shared/README.md (the published number); labels shipped with replicate
    assert (r.n, r.n_correct) == (10000, 9711)
    assert r.source == "predictions" and r.flags == ()
    v6 = cifar_preds.result("shake_shake_26_2x64d_SSI_cutout16", "v6")  # file key as alias
    assert (v6.dataset, v6.n, v6.n_correct) == ("cifar10.1-v6", 2000, 1862)  # computed from the release file
    assert len(cifar_preds.results("cifar10.1-v4")) == 30
    assert cifar_preds.check_alignment("cifar10.1-v4").flagged == ()


def test_prediction_result_bad_input(cifar_preds):
    with pytest.raises(ValueError, match="len\\(labels\\) == 9999; must be 10000, the number of images predicted"):
        cifar_preds.result("wrn_28_10", "cifar10-test", labels=np.zeros(9999, int))
    with pytest.raises(KeyError, match="model == 'wrn_28_1'.*Did you mean 'wrn_28_10'"):
        cifar_preds.result("wrn_28_1", "cifar10-test")
    with pytest.raises(ValueError, match="dataset == 'v5'; must be one of: 'cifar10-test'"):
        cifar_preds.result("wrn_28_10", "v5")


def test_prediction_file_with_mismatched_lengths(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, model_names=np.array(["a", "b"]), pred_v4=np.zeros((2, 5), np.int8), labels_v4=np.zeros(4, int))
    with pytest.raises(ValueError, match="len\\(labels\\) of 'cifar10.1-v4' == 4; must be 5, the number of images"):
        load_predictions(path)
    np.savez(path, x=np.zeros(3))
    with pytest.raises(ValueError, match="must be the CIFAR-10.1 layout"):
        load_predictions(path)


def test_bind_imageset_by_label_sequence(cifar_preds):
    from conftest import make_imageset

    from replicate.imageset import CIFAR10_CLASSES, ImageSet

    labels = np.load(PACKAGE_DATA / "demo" / "cifar10_test_labels.npz")["labels"]
    fake = ImageSet(np.zeros((10000, 2, 2, 3), np.uint8), labels, CIFAR10_CLASSES, name="mine")
    assert cifar_preds.bind(fake) == "cifar10-test"
    with pytest.raises(ValueError, match="dataset == \"'toy' \\(40 images\\)\"; must be one of the sets"):
        cifar_preds.bind(make_imageset())


@pytest.mark.shared
def test_imagenetv2_predictions_and_alignment_flags(shared):
    ps = load_predictions(shared / "data/imagenetv2/predictions.npz")
    r = ps.result("resnet50", "imagenetv2-matched-frequency")
    # ../shared/README.md: resnet50 63.33% top-1 and 84.65% top-5 on MatchedFrequency, 76.13% on validation
    assert (r.n_correct, r.n_top5_correct) == (6333, 8465)
    assert ps.result("resnet50", "imagenet-val").n_correct == 38065
    assert len(r.class_names) == 1000 and r.flags == ()
    rep = ps.check_alignment("imagenetv2-b-33")
    assert rep.flagged == ("fv_16k",)  # 2.47% vs 28.33% (../shared/README.md: a mismatched file)
    flagged = ps.result("fv_16k", "imagenetv2-matched-frequency")
    assert flagged.n_correct == 247 and "implausible gap" in flagged.flags[0]
    assert "implausible gap" in flagged.summary()
    assert ps.check_alignment("imagenetv2-threshold0.7").missing_on_dataset == ("fv_64k",)
    with pytest.raises(KeyError, match="It has predictions on imagenet-val, imagenetv2-matched-frequency"):
        ps.result("fv_16k", "imagenetv2-top-images")


@pytest.mark.shared
def test_prediction_entries_are_found_with_checked_sha(shared, monkeypatch):
    from replicate.models import published_predictions

    monkeypatch.setenv("REPLICATE_DATA", str(shared / "data"))
    ps = published_predictions("imagenetv2")
    assert ps.sha256 == "857647f1d1e2085b4dcfb6364b71875e4b5adfe49a9873624f8e297b6643b77c"  # ../shared/README.md
    assert Path(published_predictions("cifar10.1").path).parent == PACKAGE_DATA / "demo"


def test_top1_top5_disagreement_is_flagged(tmp_path):
    path = tmp_path / "inet.npz"
    y = np.array([0, 1, 2, 3])
    np.savez(
        path,
        labels__a=y,
        models__a=np.array(["m"]),
        top1__a=np.array([[0, 1, 0, 0]]),
        top5_correct__a=np.array([[True, False, True, True]]),  # image 1: top-1 right, top-5 wrong
    )
    r = load_predictions(path).result("m", "a")
    assert (r.n_correct, r.n_top5_correct) == (2, 3)
    assert r.flags == ("inconsistent prediction file: 1 images are correct at top-1 but not at top-5",)


def test_hub_spec_is_checked_before_any_download(toy):
    from replicate.evaluation import evaluate

    with pytest.raises(ValueError, match="model == 'hub:resnet'; must be 'hub:owner/repo:entry'"):
        evaluate("hub:resnet", toy)
