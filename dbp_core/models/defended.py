"""The defended model of DBP: ``classifier(purifier(x, uids))`` (docs/design.md, "The defended model")."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .normalized import Normalized


class DefendedClassifier(nn.Module):
    """Logits of the classifier on purified inputs.

    ``classifier`` maps [0, 1] images to logits; pass ``mean`` / ``std`` to wrap it in
    :class:`~dbp_core.models.normalized.Normalized` when it expects normalised inputs.
    ``forward(x, uids, **purify_kwargs)`` forwards ``replicas=`` / ``replica=`` / ``seed=`` to the
    purifier; with ``replicas=K`` the logits are [K * B, classes], replica-major. With ``states=[k, ...]``
    it returns ``(logits, states)``, the purifier's chain states after k reverse steps."""

    def __init__(self, classifier: nn.Module, purifier: nn.Module, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.classifier = Normalized(classifier, mean, std) if mean is not None else classifier
        self.purifier = purifier

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits without purification (the undefended classifier)."""
        return self.classifier(x)

    def forward(self, x: torch.Tensor, uids: torch.Tensor, **purify_kwargs):
        out = self.purifier(x, uids, **purify_kwargs)
        if isinstance(out, tuple):  # states requested: (purified, states)
            return self.classify(out[0]), out[1]
        return self.classify(out)
