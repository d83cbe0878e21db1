"""APGD-CE (Croce & Hein 2020, Algorithm 1) with EOT gradients, and the
selection rule corrected for stochastic defences (docs/science.md, "APGD"):
each iterate is evaluated by N purifications — its own fresh ones when
``selection_samples`` is set (the authors use 20), else the K purifications of
its EOT gradient — and per example the iterate with the lowest fraction of
correct predictions is kept (ties: the higher loss), not the last one, and not
the first that fooled one lucky purification.

Everything (step size, restarts from the best point) is per example, so the
result of an example does not depend on the rest of its batch.
"""
from __future__ import annotations

import torch

from .base import IterationHook, NoisePlan, as_attack_model, derive_seed, success_rate
from .eot import eot_gradient
from .lp import NORMS, ascent_direction, project, random_start


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


class APGD:
    def __init__(self, norm: str = "linf", eps: float = 8 / 255, iterations: int = 100, eot: int = 20,
                 eot_chunk: int | None = None, noise: NoisePlan | None = None, random_start: bool = True,
                 start_seed: int = 0, loss: str = "ce", rho: float = 0.75, momentum: float = 0.75,
                 on_iteration: IterationHook | None = None, selection_samples: int | None = None):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.norm, self.eps, self.iterations, self.eot, self.eot_chunk = norm, float(eps), int(iterations), int(eot), eot_chunk
        self.noise = noise or NoisePlan("fresh", 0)
        self.random_start, self.start_seed = random_start, start_seed
        self.rho, self.momentum, self.on_iteration, self.loss = rho, momentum, on_iteration, loss
        self.selection_samples = selection_samples

    def _evaluate(self, model, x_adv, y, uids, i):
        grad, loss, logits = eot_gradient(model, x_adv, y, uids, self.eot, self.eot_chunk, self.loss, **self.noise.kwargs(i))
        B = y.shape[0]
        loss_ex = loss.view(-1, B).mean(0)
        if self.on_iteration is not None:
            self.on_iteration(i, float(loss_ex.mean()), success_rate(logits, y))
        if self.selection_samples:  # fresh purifications, independent of the gradient's
            with torch.no_grad():
                logits = model(x_adv, uids, replicas=self.selection_samples,
                               seed=derive_seed(self.noise.base, "selection", i))
        correct_frac = (logits.argmax(1) == y.repeat(logits.shape[0] // B)).float().view(-1, B).mean(0)
        return grad, loss_ex, correct_frac

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, uids: torch.Tensor) -> torch.Tensor:
        model = as_attack_model(model)
        x = x.detach()
        n = self.iterations
        # checkpoint schedule: first after 22% of the iterations, then shrinking by 3% down to 6%
        interval, min_interval, decrement = max(int(0.22 * n), 1), max(int(0.06 * n), 1), max(int(0.03 * n), 1)

        x_adv = random_start(x, uids, self.norm, self.eps, self.start_seed) if self.random_start else x.clone()
        grad, loss, frac = self._evaluate(model, x_adv, y, uids, 0)
        step = torch.full_like(loss, 2 * self.eps)
        best_loss, x_best, grad_best = loss.clone(), x_adv.clone(), grad.clone()
        sel_frac, sel_loss, x_sel = frac.clone(), loss.clone(), x_adv.clone()  # the selection rule's choice
        x_old = x_adv.clone()
        increases = torch.zeros_like(loss)
        prev_loss = loss.clone()
        best_at_check, reduced_at_check = best_loss.clone(), torch.ones_like(loss, dtype=torch.bool)
        since_check = 0
        for i in range(1, n):
            a = self.momentum if i > 1 else 1.0
            z = project(x_adv + _rows(step, x) * ascent_direction(grad, self.norm), x, self.norm, self.eps)
            x_new = project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_old), x, self.norm, self.eps)
            x_old, x_adv = x_adv, x_new
            grad, loss, frac = self._evaluate(model, x_adv, y, uids, i)

            better = (frac < sel_frac) | ((frac == sel_frac) & (loss > sel_loss))
            sel_frac, sel_loss = torch.where(better, frac, sel_frac), torch.where(better, loss, sel_loss)
            x_sel = torch.where(_rows(better, x), x_adv, x_sel)

            increases += (loss > prev_loss).float()
            prev_loss = loss
            improved = loss > best_loss
            best_loss = torch.where(improved, loss, best_loss)
            x_best = torch.where(_rows(improved, x), x_adv, x_best)
            grad_best = torch.where(_rows(improved, x), grad, grad_best)

            since_check += 1
            if since_check == interval:
                oscillating = increases <= interval * self.rho
                stalled = ~reduced_at_check & (best_at_check >= best_loss)
                halve = oscillating | stalled
                step = torch.where(halve, step / 2, step)
                x_adv = torch.where(_rows(halve, x), x_best, x_adv)
                grad = torch.where(_rows(halve, x), grad_best, grad)
                reduced_at_check, best_at_check = halve, best_loss.clone()
                increases.zero_()
                since_check = 0
                interval = max(interval - decrement, min_interval)
        return x_sel.detach()
