"""Two published Keras CIFAR-10 models, rebuilt in torch and loaded from their Keras weights.

* ``mlperf_tiny_resnet8``: the MLPerf Tiny image-classification reference ResNet-8
  (https://github.com/mlcommons/tiny, Apache-2.0), read from its Keras ``.h5`` with h5py.
* ``keras_cnn``: the CNN shipped in the PyPI package ``cifar-10-model`` 7.4.0, from its
  weights saved as ``.npz`` (optimizer state stripped).

Both take raw 0-255 pixels. Keras kernels are HWIO (conv) and (in, out) (dense);
torch wants OIHW and (out, in). Keras batch norm uses epsilon 1e-3. Keras ``'same'``
padding with stride 2 pads only at the bottom/right when the padding is odd, which
torch's symmetric ``padding=`` cannot express, so those convs pad explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from replicate.models._registry import RAW_0_255, ModelCard, register_model

__all__ = ["KerasSameConv2d", "MLPerfTinyResNet8", "KerasCifarCNN"]

_KERAS_BN_EPS = 1e-3


class KerasSameConv2d(nn.Conv2d):
    """A conv with Keras ``padding='same'``: total padding split with the extra pixel at the end."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> None:
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=0, bias=True)

    def _pads(self, size: int, k: int, s: int) -> tuple[int, int]:
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = self._pads(x.shape[-2], k, s)
        left, right = self._pads(x.shape[-1], k, s)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=_KERAS_BN_EPS)


class MLPerfTinyResNet8(nn.Module):
    """MLPerf Tiny ResNet-8: stem 16, three residual stages 16/32/64, 8x8 average pool, dense 10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = KerasSameConv2d(3, 16, 3)
        self.bn: nn.Module = _bn(16)
        # stage 1 (identity shortcut)
        self.s1_conv1, self.s1_bn1 = KerasSameConv2d(16, 16, 3), _bn(16)
        self.s1_conv2, self.s1_bn2 = KerasSameConv2d(16, 16, 3), _bn(16)
        # stage 2 (1x1 stride-2 projection shortcut, no batch norm on it)
        self.s2_conv1, self.s2_bn1 = KerasSameConv2d(16, 32, 3, 2), _bn(32)
        self.s2_conv2, self.s2_bn2 = KerasSameConv2d(32, 32, 3), _bn(32)
        self.s2_short = KerasSameConv2d(16, 32, 1, 2)
        # stage 3
        self.s3_conv1, self.s3_bn1 = KerasSameConv2d(32, 64, 3, 2), _bn(64)
        self.s3_conv2, self.s3_bn2 = KerasSameConv2d(64, 64, 3), _bn(64)
        self.s3_short = KerasSameConv2d(32, 64, 1, 2)
        self.dense = nn.Linear(64, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 64-d output of the 8x8 average pool."""
        x = F.relu(self.bn(self.conv(x)))
        y = F.relu(self.s1_bn1(self.s1_conv1(x)))
        x = F.relu(x + self.s1_bn2(self.s1_conv2(y)))
        y = F.relu(self.s2_bn1(self.s2_conv1(x)))
        x = F.relu(self.s2_short(x) + self.s2_bn2(self.s2_conv2(y)))
        y = F.relu(self.s3_bn1(self.s3_conv1(x)))
        x = F.relu(self.s3_short(x) + self.s3_bn2(self.s3_conv2(y)))
        return torch.flatten(F.avg_pool2d(x, 8), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (the Keras model ends in a softmax; its argmax is the same)."""
        return self.dense(self.forward_features(x))

    def fuse(self) -> MLPerfTinyResNet8:
        """Fold every batch norm into the conv before it (inference only; in place)."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        for conv, bn in (
            ("conv", "bn"),
            ("s1_conv1", "s1_bn1"),
            ("s1_conv2", "s1_bn2"),
            ("s2_conv1", "s2_bn1"),
            ("s2_conv2", "s2_bn2"),
            ("s3_conv1", "s3_bn1"),
            ("s3_conv2", "s3_bn2"),
        ):
            if isinstance(getattr(self, bn), nn.BatchNorm2d):
                setattr(self, conv, fuse_conv_bn_eval(getattr(self, conv), getattr(self, bn)))
                setattr(self, bn, nn.Identity())
        return self

    # Keras layer name for each torch module, in the file's naming.
    KERAS_NAMES: Mapping[str, str] = {
        "conv": "conv2d",
        "bn": "batch_normalization",
        "s1_conv1": "conv2d_1",
        "s1_bn1": "batch_normalization_1",
        "s1_conv2": "conv2d_2",
        "s1_bn2": "batch_normalization_2",
        "s2_conv1": "conv2d_3",
        "s2_bn1": "batch_normalization_3",
        "s2_conv2": "conv2d_4",
        "s2_short": "conv2d_5",
        "s2_bn2": "batch_normalization_4",
        "s3_conv1": "conv2d_6",
        "s3_bn1": "batch_normalization_5",
        "s3_conv2": "conv2d_7",
        "s3_short": "conv2d_8",
        "s3_bn2": "batch_normalization_6",
        "dense": "dense",
    }


class KerasCifarCNN(nn.Module):
    """The ``cifar-10-model`` CNN: 6 valid 3x3 convs (ReLU, then batch norm), max pools after 2 and 4, dense 1024/512/10."""

    CHANNELS = (64, 64, 128, 128, 64, 64)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        chans = (3, *self.CHANNELS)
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3) for i in range(6))
        self.bns = nn.ModuleList(_bn(c) for c in self.CHANNELS)
        self.fc1 = nn.Linear(64, 1024)
        self.fc2 = nn.Linear(1024, 512)
        self.fc3 = nn.Linear(512, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-d output of the second dense layer (after ReLU)."""
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            x = bn(F.relu(conv(x)))
            if i in (1, 3):
                x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)  # 1x1x64: NHWC and NCHW flatten agree
        return F.relu(self.fc2(F.relu(self.fc1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.forward_features(x))


# --------------------------------------------------------------------------- weights


def _set_conv(conv: nn.Module, kernel: np.ndarray, bias: np.ndarray | None) -> None:
    weight: torch.Tensor = conv.weight  # type: ignore[assignment]
    w = torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1))))  # HWIO -> OIHW
    if tuple(w.shape) != tuple(weight.shape):
        raise ValueError(f"kernel shape {kernel.shape} does not fit {conv}")
    weight.data.copy_(w)
    conv_bias = getattr(conv, "bias", None)
    if bias is not None and conv_bias is not None:
        conv_bias.data.copy_(torch.from_numpy(np.asarray(bias)))


def _set_bn(bn: nn.Module, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray) -> None:
    state = {"weight": gamma, "bias": beta, "running_mean": mean, "running_var": var}
    for key, v in state.items():
        getattr(bn, key).data.copy_(torch.from_numpy(np.asarray(v, dtype=np.float32)))


def _set_dense(lin: nn.Linear, kernel: np.ndarray, bias: np.ndarray) -> None:
    lin.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(np.asarray(kernel).T)))
    lin.bias.data.copy_(torch.from_numpy(np.asarray(bias)))


def load_resnet8_h5(model: MLPerfTinyResNet8, path: str | Path) -> MLPerfTinyResNet8:
    """Copy the Keras ``.h5`` weights (group ``model_weights``) into the torch ResNet-8."""
    import h5py

    with h5py.File(path, "r") as f:
        g = f["model_weights"]

        def get(layer: str, var: str) -> np.ndarray:
            return np.asarray(g[layer][layer][f"{var}:0"])

        for attr, layer in model.KERAS_NAMES.items():
            mod = getattr(model, attr)
            if isinstance(mod, nn.BatchNorm2d):
                _set_bn(mod, *(get(layer, v) for v in ("gamma", "beta", "moving_mean", "moving_variance")))
            elif isinstance(mod, nn.Linear):
                _set_dense(mod, get(layer, "kernel"), get(layer, "bias"))
            else:
                _set_conv(mod, get(layer, "kernel"), get(layer, "bias"))
    return model


def load_keras_cnn_npz(model: KerasCifarCNN, path: str | Path) -> KerasCifarCNN:
    """Copy the ``layer.variable`` arrays of the ``.npz`` into the torch CNN."""
    with np.load(path, allow_pickle=False) as d:
        for i in range(6):
            sfx = "" if i == 0 else f"_{i}"
            _set_conv(model.convs[i], d[f"conv2d{sfx}.kernel"], d[f"conv2d{sfx}.bias"])
            bn = f"batch_normalization{sfx}"
            _set_bn(model.bns[i], d[f"{bn}.gamma"], d[f"{bn}.beta"], d[f"{bn}.moving_mean"], d[f"{bn}.moving_variance"])
        for lin, layer in ((model.fc1, "dense"), (model.fc2, "dense_1"), (model.fc3, "dense_2")):
            _set_dense(lin, d[f"{layer}.kernel"], d[f"{layer}.bias"])
    return model


@register_model(
    ModelCard(
        name="mlperf_tiny_resnet8",
        architecture="MLPerf Tiny ResNet-8 (Keras)",
        num_classes=10,
        preprocessing=RAW_0_255,
        weights_file="pretrainedResnet.h5",
        url="https://github.com/mlcommons/tiny/raw/master/benchmark/training/image_classification/trained_models/pretrainedResnet.h5",
        sha256="5f938a8eea605438cc7360aa13c987bc6d7bd0c8d931b2917361ae7ae4eeda2f",
        reported_accuracy=None,
        measured_accuracy=87.21,
        dataset="cifar10-test",
        paper="Banbury et al. MLPerf Tiny Benchmark. NeurIPS Datasets and Benchmarks 2021 (arXiv:2106.07597)",
        source="https://github.com/mlcommons/tiny",
        licence="Apache-2.0",
        notes="no CIFAR-10 test accuracy is published beside the file (about 87%); measured 87.21",
        tags=("cifar10", "resnet", "keras"),
    )
)
def _build_resnet8(card: ModelCard, path: Path) -> nn.Module:
    return load_resnet8_h5(MLPerfTinyResNet8(card.num_classes), path)


@register_model(
    ModelCard(
        name="keras_cnn",
        architecture="Keras CNN, 6 conv + 3 dense (cifar-10-model 7.4.0)",
        num_classes=10,
        preprocessing=RAW_0_255,
        weights_file="cnn_model_weights.npz",
        url=None,
        sha256="7e1c06086fa40351538bc867bb819cb3fa124face2b6e43e52d60c5fdfffa2db",
        reported_accuracy=None,
        measured_accuracy=80.17,
        dataset="cifar10-test",
        paper="",
        source="https://pypi.org/project/cifar-10-model/7.4.0/",
        licence="BSD-3-Clause / MIT",
        notes="weights converted from the package's Keras file to .npz (optimizer state stripped); "
        "the .npz is not published as-is",
        tags=("cifar10", "cnn", "keras"),
    )
)
def _build_keras_cnn(card: ModelCard, path: Path) -> nn.Module:
    return load_keras_cnn_npz(KerasCifarCNN(card.num_classes), path)
