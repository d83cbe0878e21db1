"""The defended model of DBP: ``classifier(normalise(purifier(x, uids)))`` (DESIGN.md §1)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class DefendedClassifier(nn.Module):
    """Logits of the classifier on purified inputs, with the classifier's own normalisation.

    ``forward(x, uids, **purify_kwargs)`` forwards ``replicas=`` / ``replica=`` / ``seed=`` to the
    purifier; with ``replicas=K`` the logits are [K * B, classes], replica-major."""

    def __init__(self, classifier: nn.Module, purifier: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.classifier = classifier
        self.purifier = purifier
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits without purification (the undefended classifier)."""
        return self.classifier(self.normalise(x))

    def forward(self, x: torch.Tensor, uids: torch.Tensor, **purify_kwargs) -> torch.Tensor:
        return self.classify(self.purifier(x, uids, **purify_kwargs))
