"""PGD in Linf and L2 (Madry et al. 2018) with EOT gradients: the attack of
the paper (docs/science.md, "Attacks": eps 8/255, step 2/255, 20 iterations, EOT 10;
L2 eps 0.5, step 0.1)."""
from __future__ import annotations

import torch

from .base import IterationHook, NoisePlan, as_attack_model, logits_of, success_rate
from .eot import eot_gradient
from .losses import attack_loss, best_other_class, is_targeted
from .lp import NORMS, ascent_direction, project, random_start


class PGD:
    """``PGD(...)(model, x, y, uids) -> x_adv``.

    ``noise`` says which purification noise the attacker's gradient uses per
    iteration (fresh: stochastic white-box; replay: DW-box). ``eot`` replicas
    per gradient, ``eot_chunk`` of them per forward. ``on_iteration(i, loss,
    success)`` receives the attacker's view at each iterate (before its step).
    ``loss``: ce, margin, dlr or dlr-targeted (losses.py); a targeted loss aims at the best
    other class of the attacker's model at the clean input.
    """

    def __init__(self, norm: str = "linf", eps: float = 8 / 255, step: float | None = None, iterations: int = 20,
                 random_start: bool = False, eot: int = 1, eot_chunk: int | None = None,
                 noise: NoisePlan | None = None, start_seed: int = 0, loss: str = "ce", on_iteration: IterationHook | None = None):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if eps <= 0 or iterations < 0 or eot < 1:
            raise ValueError(f"need eps > 0, iterations >= 0, eot >= 1; got {eps}, {iterations}, {eot}")
        self.norm, self.eps, self.iterations = norm, float(eps), int(iterations)
        self.step = float(step) if step is not None else self.eps / 4
        self.random_start, self.eot, self.eot_chunk = random_start, int(eot), eot_chunk
        self.noise = noise or NoisePlan("fresh", 0)
        self.start_seed = start_seed
        attack_loss(loss)  # an unknown name fails here, not mid-attack
        self.on_iteration, self.loss = on_iteration, loss
        self.target: torch.Tensor | None = None

    def gradient(self, model, x_adv, y, uids, i):
        return eot_gradient(model, x_adv, y, uids, self.eot, self.eot_chunk, self.loss, self.target,
                            **self.noise.kwargs(i))

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, uids: torch.Tensor) -> torch.Tensor:
        model = as_attack_model(model)
        x = x.detach()
        if is_targeted(self.loss):
            with torch.no_grad():
                self.target = best_other_class(logits_of(model(x, uids, **self.noise.kwargs("target"))), y)
        x_adv = random_start(x, uids, self.norm, self.eps, self.start_seed) if self.random_start else x.clone()
        for i in range(self.iterations):
            grad, loss, logits = self.gradient(model, x_adv, y, uids, i)
            if self.on_iteration is not None:
                self.on_iteration(i, float(loss.mean()), success_rate(logits, y))
            x_adv = project(x_adv + self.step * ascent_direction(grad, self.norm), x, self.norm, self.eps)
        return x_adv.detach()
