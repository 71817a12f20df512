"""A small copy-detection descriptor for 32x32 images (SSCD-style, trained here).

SSCD (Pizzi et al., "A Self-Supervised Descriptor for Image Copy Detection", CVPR 2022)
trains a ResNet-50 with GeM pooling so that two edits of one photograph (crops, zooms,
colour changes, JPEG, overlays) map to nearby unit vectors and different photographs do
not: an InfoNCE loss over augmented pairs plus an entropy (KoLeo) regulariser that
spreads the descriptors. No such descriptor can be downloaded here, and ImageNet-scale
ones are not made for 32x32 images, so replicate trains a small one on CPU with
``tools/train_descriptor.py`` (the weights ship in ``replicate/data/weights/``; model card:
``replicate/data/weights/copydesc32.md``).

Architecture (:class:`CopyDescriptor`): five 3x3 conv + BatchNorm + ReLU layers
(24, 48, 64, 96, 128 channels; strides 1, 2, 2, 1, 2: 32x32 -> 4x4), GeM pooling
(p = 3), a linear 128 -> 128 projection and L2 normalisation. About 10.5 million
multiply-adds per image (see :func:`flops_per_image`); at inference the BatchNorms are
folded into the convolutions.

Input policy (:func:`prepare`): uint8 ``(N, H, W, 3)`` RGB (or ``(N, H, W)`` /
``(N, H, W, 1)`` grayscale, replicated to 3 channels); images of another size than
32x32 are resized to 32x32 with antialiased bilinear interpolation
(``torch.nn.functional.interpolate(..., mode="bilinear", antialias=True,
align_corners=False)``), aspect ratio not kept (non-square images are stretched), then
scaled to [0, 1] and normalised with CIFAR-10's train mean and std.

Loading (:func:`load_descriptor`) checks the weights file's sha256 against the card, as
for zoo models (:mod:`replicate.models._weights`), and fails with
:class:`~replicate.models._weights.WeightsError` when the file is missing or differs.
Weights are stored as a plain ``.npz`` of float32 arrays (opened without pickle).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from replicate._validation import fail
from replicate.models._registry import ModelCard, Preprocessing

__all__ = [
    "CopyDescriptor",
    "DESCRIPTOR_CARD",
    "INPUT_SIZE",
    "MEAN",
    "STD",
    "build_descriptor",
    "load_descriptor",
    "prepare",
    "embed",
    "flops_per_image",
    "save_weights",
    "cosine_knn",
]

INPUT_SIZE = 32
# CIFAR-10 train per-channel mean / std of pixels / 255
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
CHANNELS = (24, 48, 64, 96, 128)
STRIDES = (1, 2, 2, 1, 2)
DIM = 128
GEM_P = 3.0

WEIGHTS_FILE = "copydesc32-745199e1.npz"
WEIGHTS_SHA256 = "745199e137f32b4169f03db36208ebabac95aa49c6da3e8fb5a2640cbf268f2b"

DESCRIPTOR_CARD = ModelCard(
    name="copydesc32",
    architecture="5 conv3x3-BN-ReLU (24-48-64-96-128, strides 1-2-2-1-2) + GeM(p=3) + linear 128, L2-normalised",
    num_classes=0,
    preprocessing=Preprocessing("unit", MEAN, STD, "NCHW", (INPUT_SIZE, INPUT_SIZE)),
    weights_file=WEIGHTS_FILE,
    url=None,
    sha256=WEIGHTS_SHA256,
    dataset="none (a descriptor, not a classifier)",
    paper="Pizzi, Roy, Ravindra, Goyal, Douze. A Self-Supervised Descriptor for Image Copy Detection. "
    "CVPR 2022 (arXiv:2202.10261)",
    source="trained by replicate: tools/train_descriptor.py",
    licence="same as replicate",
    notes="self-supervised on CIFAR-10 train + the Tiny-ImageNet candidate pool; see the model card .md",
    tags=("descriptor", "copy-detection"),
)


def build_descriptor() -> CopyDescriptor:
    """A fresh (untrained) :class:`CopyDescriptor`."""
    return CopyDescriptor()


class CopyDescriptor(nn.Module):
    """See the module docstring. ``forward`` takes the normalised NCHW float input
    (:func:`prepare`) and returns unit-norm ``(N, 128)`` descriptors."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout, s in zip(CHANNELS, STRIDES):
            layers += [nn.Conv2d(cin, cout, 3, s, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(cin, DIM)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """GeM-pooled features before the projection: ``(mean x^p)^(1/p)``, p = 3."""
        f = self.features(x)
        return f.clamp(min=1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.pooled(x)), dim=1)

    def fused(self) -> CopyDescriptor:
        """An eval-mode, channels-last copy with every BatchNorm folded into its convolution."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        m = CopyDescriptor().eval()
        m.load_state_dict(self.state_dict())
        mods = list(m.features)
        out: list[nn.Module] = []
        i = 0
        while i < len(mods):
            conv, bn = mods[i], mods[i + 1] if i + 1 < len(mods) else None
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                out.append(fuse_conv_bn_eval(conv, bn))
                i += 2
            else:
                out.append(mods[i])
                i += 1
        m.features = nn.Sequential(*out)
        return m.to(memory_format=torch.channels_last)


def prepare(images: np.ndarray) -> Any:
    """uint8 images -> the descriptor's normalised float32 NCHW input (the input policy
    of the module docstring). Fails on anything that is not uint8 ``(N, H, W[, C])``
    with C in {1, 3}."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise fail("images.dtype", str(arr.dtype), "uint8", "Pass 0-255 pixels as uint8.")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3) or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise fail("images.shape", arr.shape, "(N, H, W, 3) RGB or (N, H, W) / (N, H, W, 1) grayscale")
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
        x = x.clamp_(0.0, 1.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def save_weights(model: Any, path: str | os.PathLike[str]) -> str:
    """Write ``model``'s state as a float32 ``.npz`` (no pickle); returns its sha256."""
    from replicate.manifest import sha256_file

    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v.astype(np.int64)) for k, v in state.items()}
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return sha256_file(path)


def _load_state(model: Any, path: Path) -> Any:
    with np.load(path, allow_pickle=False) as z:
        state = {k: torch.from_numpy(z[k].copy()) for k in z.files}
    expected = set(model.state_dict())
    if set(state) != expected:
        raise fail("weights", str(path), f"a copydesc32 state with keys {sorted(expected)[:3]}...",
                   "This file is not copydesc32 weights.")
    model.load_state_dict(state)
    return model


def load_descriptor(weights: str | os.PathLike[str] | None = None) -> Any:
    """The trained descriptor, eval mode, BatchNorm folded, channels-last.

    ``weights``: a path to the ``.npz`` (checked against the card's sha256), or ``None``
    for the shipped file (searched as zoo weights are: package data, ``$REPLICATE_HOME``,
    ``$REPLICATE_WEIGHTS``). Raises :class:`~replicate.models._weights.WeightsError` when the
    file is missing or its sha256 differs.
    """
    from replicate.models._weights import resolve_weights

    path = resolve_weights(DESCRIPTOR_CARD, weights, download=False)
    return _load_state(CopyDescriptor(), path).eval().fused()


_CACHE: dict[str, Any] = {}


def embed(images: np.ndarray, model: Any = None, batch_size: int = 128) -> np.ndarray:
    """Unit-norm float32 ``(N, 128)`` descriptors of uint8 images (shipped weights unless
    ``model`` is given; the shipped model is loaded once per process).

    ``batch_size`` images go through the network at once. 128 keeps each layer's
    activations in cache: on the 2-core AVX-512 box, 12,288 CIFAR-10 train images ran at
    9,037 images/s with 128, against 5,822 with 1,024 and 5,322 with 4,096. The descriptors
    were the same bits at every batch size tried (64-4,096)."""
    if model is None:
        if "default" not in _CACHE:
            _CACHE["default"] = load_descriptor()
        model = _CACHE["default"]
    if not isinstance(batch_size, int) or batch_size < 1:
        raise fail("batch_size", batch_size, "a positive integer")
    arr = np.asarray(images)
    out = np.empty((len(arr), DIM), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(arr), batch_size):
            out[s : s + batch_size] = model(prepare(arr[s : s + batch_size])).numpy()
    return out


def flops_per_image(model: Any = None) -> int:
    """Floating-point operations of one forward pass on a 32x32 image (multiply-adds
    count 2), as ``torch.utils.flop_counter`` counts them (convolutions and the linear
    layer; BatchNorm, ReLU and pooling are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = CopyDescriptor().eval() if model is None else model
    x = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model(x)
    return int(fc.get_total_flops())


def cosine_knn(query: np.ndarray, reference: np.ndarray, k: int = 5, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest references of each query by cosine (rows are unit vectors):
    ``(positions, similarities)``, both ``(len(query), k)``, most similar first.

    Blocked numpy matmul (``block`` queries at a time) and ``argpartition``; ties are
    ordered by position within the top k (stable sort)."""
    q = np.asarray(query, dtype=np.float32)
    r = np.asarray(reference, dtype=np.float32)
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1]:
        raise fail("query.shape / reference.shape", (q.shape, r.shape), "2-d with the same number of columns")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise fail("k", k, "a positive integer")
    k = int(min(k, len(r)))
    idx = np.empty((len(q), k), np.int64)
    sim = np.empty((len(q), k), np.float32)
    if k == 0:
        return idx, sim
    for s in range(0, len(q), block):
        c = q[s : s + block] @ r.T
        part = np.argpartition(-c, k - 1, axis=1)[:, :k] if k < len(r) else np.broadcast_to(np.arange(len(r)), c.shape)
        ps = np.take_along_axis(c, part, 1)
        order = np.argsort(-ps, axis=1, kind="stable")
        idx[s : s + block] = np.take_along_axis(part, order, 1)
        sim[s : s + block] = np.take_along_axis(ps, order, 1)
    return idx, sim
