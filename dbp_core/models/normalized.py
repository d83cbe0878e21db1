"""A classifier's own input normalisation, ``model((x - mean) / std)`` for x in [0, 1].

The one place inputs are normalised: a run wraps its classifier once (``models.mean`` /
``models.std``, or the shipped model's own constants), so every caller — the defended
classifier, the undefended baseline, ADDT's guidance — sees a classifier of [0, 1] images.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Normalized(nn.Module):
    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))
