"""What a dataset loader returns (:class:`ImageSet`) and the error it raises (:class:`DatasetError`),
shared by ``datasets.py`` and ``imagenet.py``."""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DatasetError", "ImageSet"]


class DatasetError(ValueError):
    """A dataset is missing or not in the expected format (message names the path)."""


@dataclass
class ImageSet:
    x: torch.Tensor  # float32 [N, C, H, W] in [0, 1] (imagenet: a LazyImages, decoded when indexed)
    y: torch.Tensor  # int64 [N]
    uids: torch.Tensor  # int64 [N], index in the original dataset
    num_classes: int
    name: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, n: int) -> "ImageSet":
        """The first n samples (e.g. the paper's 'first 1024 test images')."""
        return ImageSet(self.x[:n], self.y[:n], self.uids[:n], self.num_classes, self.name)
