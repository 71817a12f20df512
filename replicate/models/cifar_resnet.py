"""CIFAR ResNets (He et al. 2016, section 4.2) with option-A shortcuts, as published by akamaster.

ResNet-(6n+2): a 3x3 conv with 16 channels, three stages of ``n`` basic blocks with
16/32/64 channels (stride 2 at the start of stages 2 and 3), global average pooling
and a linear layer. Option A shortcuts subsample by 2 and zero-pad the new channels,
so the network has no extra parameters. The weights are the ``pretrained_models/``
checkpoints of https://github.com/akamaster/pytorch_resnet_cifar10 (BSD-2-Clause):
legacy torch pickles whose ``state_dict`` keys carry a ``module.`` prefix.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from replicate.models._registry import CIFAR_NORMALIZED, ModelCard, register_model

__all__ = ["CifarResNet", "BasicBlock", "cifar_resnet"]

_REPO = "https://github.com/akamaster/pytorch_resnet_cifar10"
_PAPER = "He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016 (arXiv:1512.03385)"


class _PadShortcut(nn.Module):
    """Option A: take every second pixel and zero-pad the channel dimension."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and an identity (or option-A) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1: nn.Module = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2: nn.Module = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = (
            _PadShortcut(planes) if stride != 1 or in_planes != planes else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; ``forward_features`` gives the 64-d pooled features."""

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth == {depth}; must be 6n+2 (20, 32, 44, 56, 110, 1202).")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1: nn.Module = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, 1)
        self.layer2 = self._stage(16, 32, n, 2)
        self.layer3 = self._stage(32, 64, n, 2)
        self.linear = nn.Linear(64, num_classes)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: globally averaged output of the last stage, ``(N, 64)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.forward_features(x))

    def fuse(self) -> CifarResNet:
        """Fold every batch norm into the conv before it (inference only; in place)."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        pairs: list[tuple[nn.Module, str, str]] = [(self, "conv1", "bn1")]
        for stage in (self.layer1, self.layer2, self.layer3):
            for block in stage:
                pairs += [(block, "conv1", "bn1"), (block, "conv2", "bn2")]
        for mod, conv, bn in pairs:
            if isinstance(getattr(mod, bn), nn.BatchNorm2d):
                setattr(mod, conv, fuse_conv_bn_eval(getattr(mod, conv), getattr(mod, bn)))
                setattr(mod, bn, nn.Identity())
        return self


def load_akamaster_state(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an akamaster checkpoint (a legacy pickle; ``module.`` prefix removed)."""
    # The published files are pickled dicts written by torch 0.x. Only files whose sha256
    # matched the card reach here, and they are still read with weights_only=True (tensors,
    # dicts and numbers only), so no pickled code runs even if a card were wrong.
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt["state_dict"] if isinstance(ckpt, dict) and "state_dict" in ckpt else ckpt
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model


def cifar_resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    """An untrained CIFAR ResNet of the given depth (6n+2)."""
    return CifarResNet(depth, num_classes)


# Reported: the akamaster README's test errors (8.27, 7.37, 6.90, 6.61, 6.32, 6.18 %).
# Measured: accuracy of these exact files on the CIFAR-10 test set in ../shared with
# replicate.evaluate (validation/validate_models.py; CPU and CUDA give the same counts).
_AKAMASTER = [
    (20, "resnet20-12fca82f.th", "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8", 91.73, 91.73),
    (32, "resnet32-d509ac18.th", "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850", 92.63, 92.63),
    (44, "resnet44-014dd654.th", "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4", 93.10, 93.11),
    (56, "resnet56-4bfd9763.th", "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367", 93.39, 93.39),
    # Not in ../shared: only the sha256 prefix in the published file name is known.
    (110, "resnet110-1d1ed7c2.th", "1d1ed7c2", 93.68, None),
    (1202, "resnet1202-f3b1deed.th", "f3b1deed", 93.82, None),
]


def _register(depth: int, filename: str, sha: str, reported: float, measured: float | None) -> None:
    card = ModelCard(
        name=f"resnet{depth}",
        architecture=f"CIFAR ResNet-{depth} (option A shortcuts)",
        num_classes=10,
        preprocessing=CIFAR_NORMALIZED,
        weights_file=filename,
        url=f"{_REPO}/raw/master/pretrained_models/{filename}",
        sha256=sha,
        reported_accuracy=reported,
        measured_accuracy=measured,
        dataset="cifar10-test",
        paper=_PAPER,
        source=_REPO,
        licence="BSD-2-Clause",
        notes="sha256 prefix only (from the published file name)" if len(sha) < 64 else "",
        tags=("cifar10", "resnet"),
    )

    @register_model(card)
    def _build(card: ModelCard, path: Path) -> nn.Module:
        return load_akamaster_state(CifarResNet(depth, card.num_classes), path)


for _row in _AKAMASTER:
    _register(*_row)
