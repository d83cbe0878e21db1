"""What the attacker differentiates: the defence itself or a gradient approximation of it
(``[[attacks]].gradient``; docs/science.md, "Gradient approximations"). The defence that judges
the examples is always the real one; these wrappers only change the attacker's model.

* ``exact``        — the defended model, gradients through the whole purification (default);
* ``bpda``         — the defence forward, the purifier's backward replaced by the identity
                     (Athalye et al. 2018, sec. 4.1; :class:`~dbp_core.attacks.bpda.StraightThrough`);
* ``blind``        — the classifier alone, forward and backward: the defence appears only at
                     judgement (DiffBreak's ``blind``);
* ``forward-only`` — the forward diffusion to t* (the purifier's own addressed noise), then the
                     classifier, without the reverse chain (DiffBreak's ``forward_diff_only``).

Every wrapper keeps the attack-model face ``model(x, uids, replicas=K, replica=r, **noise)`` and
uses only the defended model's public parts: ``classify``, ``purifier`` and, for ``forward-only``,
the purifier's ``schedule`` and first reverse step ``chain[0].t`` with ``purifier.diffusion.q_sample``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..purifier import noise as noise_mod
from ..purifier.diffusion import q_sample
from .bpda import StraightThrough
from .names import GRADIENTS

__all__ = ["GRADIENTS", "attacker_view", "Blind", "ForwardOnly", "StraightThrough"]


def _replicated(x: torch.Tensor, replicas: int) -> torch.Tensor:
    return x.repeat(replicas, *([1] * (x.dim() - 1))) if replicas > 1 else x


class Blind(nn.Module):
    """The classifier alone: ``classify(x)`` for every replica (no purification at all)."""

    def __init__(self, defended):
        super().__init__()
        self.defended = defended

    def forward(self, x, uids, replicas: int = 1, replica: int = 0, **noise):
        return self.defended.classify(_replicated(x, replicas))


class ForwardOnly(nn.Module):
    """``classify((q_sample(2x - 1, t*) + 1) / 2)``: the purifier's forward noise (the same
    addressed draw the purification makes with this seed and replica), no reverse chain."""

    def __init__(self, defended):
        super().__init__()
        self.defended = defended

    def forward(self, x, uids, replicas: int = 1, replica: int = 0, seed: int | None = None,
                reverse_seed: int | None = None):
        purifier = self.defended.purifier
        seed = purifier.noise.next_seed() if seed is None else int(seed)
        uids = uids.to(x.device)
        t = purifier.chain[0].t
        x_t = torch.cat([q_sample(purifier.schedule, 2.0 * x - 1.0, t, seed,
                                  noise_mod.stream(noise_mod.FORWARD, replica + k), uids) for k in range(replicas)])
        return self.defended.classify((x_t + 1.0) * 0.5)


def attacker_view(model, gradient: str = "exact"):
    """The model an attack with gradient approximation ``gradient`` differentiates; ``model`` is
    the defended model (with ``classify`` and ``purifier``) or, for ``exact``, any attack model."""
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    if gradient == "exact":
        return model
    if not (hasattr(model, "classify") and hasattr(model, "purifier")):
        raise TypeError(f"gradient = {gradient!r} approximates a purifier: the model must be a defended "
                        f"classifier (classify + purifier), got {type(model).__name__}")
    return {"bpda": StraightThrough, "blind": Blind, "forward-only": ForwardOnly}[gradient](model)
