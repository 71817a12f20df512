"""The model zoo: published models with verified weights, prediction files, user models.

* :func:`list_models`, :func:`get_card`, :func:`load_model` -- the registry of
  :class:`ModelCard` entries (name, architecture, weights URL and sha256,
  preprocessing, classes, reported accuracy, paper, licence).
* :func:`resolve_weights` -- finds a card's weights (explicit path, package data,
  ``$REPLICATE_HOME``, ``$REPLICATE_WEIGHTS``, download) and checks the sha256 always.
* :func:`load_predictions` / :class:`PredictionSet` -- published prediction files
  (CIFAR-10.1, ImageNetV2) as results bound to the sets they were computed on.
* Architectures: :class:`CifarResNet` (akamaster ResNet-20...1202),
  :class:`MLPerfTinyResNet8`, :class:`KerasCifarCNN`.
"""

from __future__ import annotations

from replicate.models._registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelCard,
    Preprocessing,
    get_card,
    list_models,
    load_model,
    register_model,
)
from replicate.models._weights import WeightsError, check_sha256, home_dir, resolve_weights
from replicate.models.cifar_resnet import CifarResNet, cifar_resnet
from replicate.models.keras_cifar import KerasCifarCNN, MLPerfTinyResNet8
from replicate.models.predictions import (
    AlignmentReport,
    PredictionSet,
    load_predictions,
    published_predictions,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AlignmentReport",
    "CifarResNet",
    "KerasCifarCNN",
    "MLPerfTinyResNet8",
    "ModelCard",
    "PredictionSet",
    "Preprocessing",
    "WeightsError",
    "check_sha256",
    "cifar_resnet",
    "get_card",
    "home_dir",
    "list_models",
    "load_model",
    "load_predictions",
    "published_predictions",
    "register_model",
    "resolve_weights",
]
