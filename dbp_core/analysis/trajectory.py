"""Attack trajectories: how consistent are the gradients an attacker gets?

Along a PGD path (the attacker's own noise plan), at every iterate we take the
gradient of each EOT replica separately and record, per example:

* ``cos_successive`` — cosine similarity of the EOT-mean gradient with the
  previous iterate's (does the ascent direction persist?);
* ``cos_replicas``   — mean pairwise cosine similarity of the replicas'
  gradients (do different purifications agree on the direction?);
* ``grad_rel_var``   — total variance of the replica gradients over the squared
  norm of their mean (noise-to-signal of one EOT sample);
* ``loss``           — mean loss over the replicas.

Under a replayed noise plan (DW-box) the replicas would be one purification;
the stochastic-vs-fixed contrast is the paper's first claim.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attacks.lp import ascent_direction, project


def _replica_gradients(model, x, y, uids, replicas: int, noise: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """[K, B, ...] gradient of each replica's loss and [K, B] losses."""
    grads, losses = [], []
    for k in range(replicas):
        xk = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xk, uids, replicas=1, replica=k, **noise), y, reduction="none")
        grads.append(torch.autograd.grad(loss.sum(), xk)[0])
        losses.append(loss.detach())
    return torch.stack(grads), torch.stack(losses)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-20)


def attack_trajectory(model, x, y, uids, *, norm: str, eps: float, step: float, iterations: int,
                      replicas: int, plan) -> dict:
    """Run PGD with ``replicas`` EOT samples per step and record the statistics above per iteration.

    Returns lists over iterations of per-example-averaged values (JSON-able)."""
    x = x.detach()
    x_adv, prev = x.clone(), None
    out = {"iteration": [], "loss": [], "cos_successive": [], "cos_replicas": [], "grad_rel_var": []}
    for i in range(iterations):
        g, losses = _replica_gradients(model, x_adv, y, uids, replicas, plan.kwargs(i))
        mean = g.mean(0)
        if replicas > 1:
            pairs = [_cos(g[a], g[b]) for a in range(replicas) for b in range(a + 1, replicas)]
            cos_rep = float(torch.stack(pairs).mean())
            var = ((g - mean) ** 2).flatten(2).sum(2).mean(0) * replicas / (replicas - 1)
            rel_var = float((var / mean.flatten(1).pow(2).sum(1).clamp_min(1e-30)).mean())
        else:
            cos_rep, rel_var = float("nan"), float("nan")
        out["iteration"].append(i)
        out["loss"].append(float(losses.mean()))
        out["cos_replicas"].append(cos_rep)
        out["grad_rel_var"].append(rel_var)
        out["cos_successive"].append(float(_cos(mean, prev).mean()) if prev is not None else float("nan"))
        prev = mean
        x_adv = project(x_adv + step * ascent_direction(mean, norm), x, norm, eps)
    return out
