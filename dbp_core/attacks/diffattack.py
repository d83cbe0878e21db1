"""DiffAttack: AutoAttack's rand version with a deviated-reconstruction loss on the purifier's
intermediate states (Kang, Song, Li, NeurIPS 2023; docs/science.md, "DiffAttack").

The attacker maximises ``L_cls + lambda * L_dev`` with
``L_dev = mean_{k in S} mean_pixels (x'_k - x_k)^2``: ``x'_k`` the chain's state after k reverse
steps, ``x_k`` the input diffused by the forward process to the same time with the purification's
own forward draw (``Purifier.diffused``), S uniformly spaced states (paper, sec. 3.3: alpha(t) =
1/|S|, lambda = 1). The gradient of both terms is the exact one of our gradient modes
(``Purifier(..., states=S)``; memory flat in the chain length in ``checkpoint`` mode), where the
authors re-run the chain segment by segment.
"""
from __future__ import annotations

import torch
from torch import nn

from .autoattack_rand import AutoAttackRand
from .base import ModelOutput
from .names import with_defaults

__all__ = ["DiffAttack", "DeviationObjective", "deviation_states", "deviated_reconstruction"]


def deviation_states(chain_length: int, count: int = 10) -> list[int]:
    """S: about ``count`` uniformly spaced states 1..n-1 of an n-step chain (every step when the
    chain is short). State 0 is left out: it is the forward draw itself, so its deviation is 0."""
    interval = max(1, chain_length // count)
    return list(range(interval, chain_length, interval))


def deviated_reconstruction(states: list[torch.Tensor], diffused: list[torch.Tensor]) -> torch.Tensor:
    """L_dev per row [R]: the mean over states of the mean squared difference between each reverse
    state and the forward-diffused input at its time (Kang et al. 2023, eq. 5 with alpha = 1/|S|)."""
    per_state = [(s - d).pow(2).flatten(1).mean(1) for s, d in zip(states, diffused)]
    return torch.stack(per_state).mean(0)


class DeviationObjective(nn.Module):
    """The defended model seen by DiffAttack: ``ModelOutput(logits, weight * L_dev)`` per row.

    ``defended`` is a defended classifier (``classify`` + ``purifier``; its purifier must give
    intermediate states and ``diffused``). The forward target and the purification share the seed
    of the call, so both see the same forward draw."""

    def __init__(self, defended, weight: float = 1.0, states: list[int] | None = None):
        super().__init__()
        purifier = getattr(defended, "purifier", None)
        if purifier is None or not hasattr(purifier, "diffused"):
            raise TypeError("DiffAttack needs the defence's purifier (a defended classifier with a Purifier); "
                            f"got {type(defended).__name__}")
        self.defended, self.weight = defended, float(weight)
        self.states = deviation_states(len(purifier.chain)) if states is None else [int(k) for k in states]

    def forward(self, x, uids, replicas: int = 1, replica: int = 0, seed: int | None = None,
                reverse_seed: int | None = None):
        purifier = self.defended.purifier
        seed = purifier.noise.next_seed() if seed is None else int(seed)
        if not self.states:  # a one-step chain has no intermediate state: plain AutoAttack
            return self.defended(x, uids, replicas=replicas, replica=replica, seed=seed, reverse_seed=reverse_seed)
        logits, states = self.defended(x, uids, replicas=replicas, replica=replica, seed=seed,
                                       reverse_seed=reverse_seed, states=self.states)
        target = purifier.diffused(x, uids, self.states, seed, replicas=replicas, replica=replica)
        return ModelOutput(logits, self.weight * deviated_reconstruction(states, target))


class DiffAttack(AutoAttackRand):
    r"""DiffAttack: APGD-CE then APGD-DLR on ``L_cls + lambda * L_dev``, judged as AutoAttack-rand.

    Paper: Kang, Song, Li, "DiffAttack: Evasion Attacks Against Diffusion-Based Adversarial
    Purification", NeurIPS 2023 (sec. 3.2-3.4): built on AutoAttack's APGD with its settings
    (100 iterations, EOT 20, CE then DLR), lambda = 1, alpha(t) = 1/|S| over uniformly spaced steps.
    The forward-diffused reference is in the graph (the paper's objective and the authors'
    score-SDE code; their DDPM code holds it constant). APGD's step-size control and its best
    point use the whole objective. Each point's example is kept over ``evaluations`` purifications
    as in :class:`~dbp_core.attacks.autoattack_rand.AutoAttackRand` (the ICLR 2025 authors' fix;
    Kang et al. judge by one forward pass).

    The arguments left None take kind ``diffattack``'s defaults (names.py,
    ``KIND_DEFAULTS``), the same as an ``[[attacks]]`` entry of that kind and norm.

    Arguments:
        deviation_weight (float): lambda, the weight of L_dev. (Default: 1)
        states (list[int] | None): S, chain states after k reverse steps. (Default: about 10
            uniformly spaced, :func:`deviation_states`)
        everything else as :class:`~dbp_core.attacks.autoattack_rand.AutoAttackRand` (norm, eps,
        iterations, eot, eot_chunk, evaluations, noise, random_start, start_seed, selection,
        on_iteration), with kind diffattack's defaults.

    Shape:
        - x: [B, C, H, W] in [0, 1]; y: [B]; uids: [B] int64. Output: [B, C, H, W].
        - The model must be a defended classifier (``classify`` + ``purifier``).
    """

    kind = "diffattack"

    def __init__(self, deviation_weight: float | None = None, states: list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        deviation_weight = with_defaults(self.kind, self.norm, deviation_weight=deviation_weight)["deviation_weight"]
        if deviation_weight < 0:
            raise ValueError(f"deviation_weight must be >= 0, got {deviation_weight}")
        self.deviation_weight, self.states = float(deviation_weight), states

    def attacker(self, model):
        return DeviationObjective(model, self.deviation_weight, self.states)
