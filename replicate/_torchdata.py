"""A torch Dataset over an ImageSet (kept apart so importing replicate needs no torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

if TYPE_CHECKING:  # pragma: no cover
    from replicate.imageset import ImageSet


class ImageSetDataset(Dataset):
    """``(image, label)`` pairs; the image is a uint8 ``(C, H, W)`` tensor."""

    def __init__(self, imageset: ImageSet, transform: Any = None, target_transform: Any = None):
        self.imageset = imageset
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.imageset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image = torch.from_numpy(self.imageset.images[index].copy()).permute(2, 0, 1)
        label: Any = int(self.imageset.labels[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label
