"""Model cards and the registry: one card per published model, registered by a decorator.

A card records where a model's weights are published (URL and sha256), how its input
must be prepared, how many classes it predicts, the accuracy its authors reported, and
its paper and licence. Builders are registered with :func:`register_model`, which
takes the card; ``list_models("resnet*")`` globs names and ``get_card`` suggests close
names for a typo.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from replicate._validation import check_choice, closest, fail

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "Preprocessing",
    "ModelCard",
    "register_model",
    "list_models",
    "get_card",
    "load_model",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

Scale = Literal["unit", "raw"]
Layout = Literal["NCHW", "NHWC"]
SCALES = ("unit", "raw")
LAYOUTS = ("NCHW", "NHWC")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How uint8 NHWC pixels become a model's float input.

    ``scale="unit"`` divides by 255, ``"raw"`` keeps 0-255; then ``(x - mean) / std``
    per channel when given (in the scaled units); then the tensor is laid out as
    ``layout``. ``input_size`` ``(H, W)`` is the image size the architecture needs
    (``None``: any).
    """

    scale: Scale = "unit"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: Layout = "NCHW"
    input_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        check_choice("preprocessing.scale", self.scale, SCALES)
        check_choice("preprocessing.layout", self.layout, LAYOUTS)
        if (self.mean is None) != (self.std is None):
            raise fail("preprocessing.std", self.std, "given together with mean (both or neither)")
        if self.std is not None and any(float(s) <= 0 for s in self.std):
            raise fail("preprocessing.std", self.std, "positive in every channel")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (part of the evaluation cache key)."""
        return {
            "scale": self.scale,
            "mean": None if self.mean is None else [float(x) for x in self.mean],
            "std": None if self.std is None else [float(x) for x in self.std],
            "layout": self.layout,
            "input_size": None if self.input_size is None else list(self.input_size),
        }

    def describe(self) -> str:
        """One line: ``unit scale, mean/std (...), NCHW, 32x32``."""
        parts = ["pixels / 255" if self.scale == "unit" else "raw 0-255 pixels"]
        if self.mean is not None:
            parts.append(f"mean {tuple(self.mean)} std {tuple(self.std or ())}")
        parts.append(self.layout)
        if self.input_size:
            parts.append(f"{self.input_size[0]}x{self.input_size[1]}")
        return ", ".join(parts)

    def __call__(self, images: np.ndarray, device: Any = "cpu") -> torch.Tensor:
        """uint8 ``(N, H, W, C)`` -> float32 tensor on ``device`` in this layout."""
        import torch

        arr = np.ascontiguousarray(images)
        if not arr.flags.writeable:  # a read-only memmap: torch wants its own copy
            arr = arr.copy()
        x = torch.from_numpy(arr).to(device)
        x = x.permute(0, 3, 1, 2).float()  # NCHW view over NHWC memory: channels-last
        if self.scale == "unit":
            x = x.div_(255.0)  # as torchvision's ToTensor
        if self.mean is not None and self.std is not None:  # as torchvision's Normalize
            mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
            x = x.sub_(mean).div_(std)
        if self.layout == "NHWC":
            x = x.permute(0, 2, 3, 1)
        return x


CIFAR_NORMALIZED = Preprocessing("unit", IMAGENET_MEAN, IMAGENET_STD, "NCHW", (32, 32))
RAW_0_255 = Preprocessing("raw", None, None, "NCHW", (32, 32))


@dataclass(frozen=True)
class ModelCard:
    """What is known about one published model.

    ``weights_file`` is the file name searched for locally; ``url`` is where it can be
    downloaded (``None`` when it is not published as-is); ``sha256`` is the full hex
    digest checked on every load (a shorter hex prefix, as published in some file
    names, is checked as a prefix). ``reported_accuracy`` is the authors' figure in
    percent on ``dataset``; ``measured_accuracy`` is what replicate measured with
    these exact weights.
    """

    name: str
    architecture: str
    num_classes: int
    preprocessing: Preprocessing
    weights_file: str | None = None
    url: str | None = None
    sha256: str | None = None
    reported_accuracy: float | None = None
    measured_accuracy: float | None = None
    dataset: str = "cifar10-test"
    paper: str = ""
    source: str = ""
    licence: str = ""
    kind: Literal["weights", "predictions"] = "weights"
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "name": self.name,
            "architecture": self.architecture,
            "num_classes": self.num_classes,
            "preprocessing": self.preprocessing.to_dict(),
            "weights_file": self.weights_file,
            "url": self.url,
            "sha256": self.sha256,
            "reported_accuracy": self.reported_accuracy,
            "measured_accuracy": self.measured_accuracy,
            "dataset": self.dataset,
            "paper": self.paper,
            "source": self.source,
            "licence": self.licence,
            "kind": self.kind,
            "notes": self.notes,
            "tags": list(self.tags),
        }

    def summary(self) -> str:
        """A few lines for ``replicate models NAME``."""
        acc = "" if self.reported_accuracy is None else f", reported {self.reported_accuracy:.2f}%"
        lines = [
            f"{self.name}: {self.architecture}, {self.num_classes} classes{acc} on {self.dataset}",
            f"  input: {self.preprocessing.describe()}",
        ]
        if self.weights_file:
            lines.append(f"  weights: {self.weights_file} (sha256 {self.sha256 or 'unknown'})")
        if self.url:
            lines.append(f"  url: {self.url}")
        if self.paper:
            lines.append(f"  paper: {self.paper}")
        if self.licence:
            lines.append(f"  licence: {self.licence}")
        return "\n".join(lines)


Builder = Callable[..., Any]
_CARDS: dict[str, ModelCard] = {}
_BUILDERS: dict[str, Builder] = {}


def register_model(card: ModelCard) -> Callable[[Builder], Builder]:
    """Decorator registering a builder ``fn(card, weights_path) -> nn.Module`` under ``card.name``.

    The builder makes the architecture and loads the (already verified) weights file.
    """

    def deco(fn: Builder) -> Builder:
        if card.name in _CARDS:
            raise fail("card.name", card.name, "a name not yet registered", "Pick another name.")
        _CARDS[card.name] = card
        _BUILDERS[card.name] = fn
        return fn

    return deco


def _ensure_loaded() -> None:
    # Importing the architecture modules registers their cards.
    from replicate.models import cifar_resnet, keras_cifar, predictions  # noqa: F401


def list_models(pattern: str = "*", *, kind: str | None = None, local_only: bool = False) -> list[str]:
    """Registered model names matching a glob ``pattern`` (case-insensitive), sorted.

    ``kind="weights"`` or ``"predictions"`` keeps one kind; ``local_only`` keeps the
    models whose files are found on this machine.
    """
    _ensure_loaded()
    pat = pattern.lower()
    names = [n for n in _CARDS if fnmatch.fnmatchcase(n.lower(), pat)]
    if kind is not None:
        check_choice("kind", kind, ("weights", "predictions"))
        names = [n for n in names if _CARDS[n].kind == kind]
    if local_only:
        from replicate.models._weights import find_local

        names = [n for n in names if _CARDS[n].weights_file and find_local(_CARDS[n]) is not None]
    return sorted(names)


def get_card(name: str) -> ModelCard:
    """The card registered under ``name``; an unknown name fails suggesting the closest."""
    _ensure_loaded()
    if isinstance(name, ModelCard):
        return name
    if not isinstance(name, str):
        raise fail("model", name, "a registered model name (a str)", error=TypeError)
    if name in _CARDS:
        return _CARDS[name]
    near = closest(name, _CARDS)
    hint = f"Did you mean {', '.join(repr(x) for x in near)}?" if near else ""
    raise fail(
        "model",
        name,
        f"a registered model name ({len(_CARDS)} known)",
        (hint + " " if hint else "") + "See replicate.models.list_models() or `replicate models`.",
        error=KeyError,
    )


def load_model(
    name: str | ModelCard,
    weights: str | os.PathLike[str] | None = None,
    *,
    download: bool | None = None,
) -> torch.nn.Module:
    """Build a zoo model and load its verified weights (eval mode, on the CPU).

    ``weights`` is an explicit file; otherwise the file is searched for (see
    :func:`replicate.models.resolve_weights`). The weights' sha256 is checked always.
    """
    from replicate.models._weights import resolve_weights_sha

    card = get_card(name) if not isinstance(name, ModelCard) else name
    if card.kind != "weights":
        raise fail(
            "model",
            card.name,
            "a model with weights for load_model()",
            "Prediction-file models have no network: use replicate.evaluate(name, dataset) "
            "or replicate.models.load_predictions().",
        )
    path, sha = resolve_weights_sha(card, weights, download=download)
    model = _BUILDERS[card.name](card, path)
    model.eval()
    model.card = card  # type: ignore[attr-defined]
    model.weights_path = str(path)  # type: ignore[attr-defined]
    model.weights_sha256 = sha  # type: ignore[attr-defined]
    return model
