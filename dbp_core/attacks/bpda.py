"""BPDA (Athalye et al. 2018): purify in the forward pass, treat the purifier
as the identity in the backward pass. The classic, weak baseline against DBP:
its gradient is the classifier's gradient at the purified point."""
from __future__ import annotations

import torch
from torch import nn

from .pgd import PGD


class StraightThrough(nn.Module):
    """``classify(x + stopgrad(purify(x) - x))``: forward = defended model, backward = identity purifier."""

    def __init__(self, defended):
        super().__init__()
        self.defended = defended

    def forward(self, x, uids, replicas: int = 1, replica: int = 0, **noise):
        with torch.no_grad():
            purified = self.defended.purifier(x, uids, replicas=replicas, replica=replica, **noise)
        x_rep = x.repeat(replicas, *([1] * (x.dim() - 1)))
        return self.defended.classify(x_rep + (purified - x_rep).detach())


class BPDA(PGD):
    r"""BPDA: PGD whose gradient passes straight through the purifier.

    Paper: Athalye, Carlini, Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML
    2018 (sec. 4.1; docs/science.md, "BPDA").

    The arguments left None take kind ``bpda``'s defaults (names.py, ``KIND_DEFAULTS``), the same
    as an ``[[attacks]]`` entry ``kind = "bpda"`` with that norm (which runs PGD with
    ``gradient = "bpda"``, gradients.py).

    Arguments: as :class:`~dbp_core.attacks.pgd.PGD`, with kind bpda's defaults.

    Shape: as :class:`~dbp_core.attacks.pgd.PGD`; the model must be a defended classifier
    (``classify`` + ``purifier``).
    """

    kind = "bpda"

    def __call__(self, model, x, y, uids):
        return super().__call__(StraightThrough(model), x, y, uids)
