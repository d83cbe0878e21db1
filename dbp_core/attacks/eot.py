"""Expectation over Transformation: the gradient of the loss summed over K
independent purifications (Athalye et al. 2018; Lee & Kim 2023 for DBP).

Replicas run batched: one call purifies ``chunk`` replicas side by side
(replica k gets its own noise streams, the uids stay the dataset ids), and
chunks are looped when K replicas do not fit in memory at once.
"""
from __future__ import annotations

import torch

from .losses import dlr_loss, objective  # noqa: F401  (dlr_loss: its old home)


def eot_gradient(model, x: torch.Tensor, y: torch.Tensor, uids: torch.Tensor, eot: int,
                 chunk: int | None = None, loss: str = "ce", target: torch.Tensor | None = None,
                 **noise) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad, loss per (replica, example), logits) for K = ``eot`` purifications.

    ``noise`` (seed=..., reverse_seed=...) goes to the model: a NoisePlan's kwargs. ``loss`` is a
    name of ``losses.LOSSES``; ``target`` [B] the target classes of a targeted loss.

    grad = d/dx sum_k loss(model_k(x), y); losses and logits are replica-major [K * B]."""
    chunk = eot if not chunk else max(1, min(chunk, eot))
    x = x.detach().requires_grad_(True)
    grad = torch.zeros_like(x)
    losses, all_logits = [], []
    for k0 in range(0, eot, chunk):
        k = min(chunk, eot - k0)
        out = model(x, uids, replicas=k, replica=k0, **noise)
        per_example, logits = objective(out, y.repeat(k), loss, None if target is None else target.repeat(k))
        grad += torch.autograd.grad(per_example.sum(), x)[0]
        losses.append(per_example.detach())
        all_logits.append(logits.detach())
    return grad, torch.cat(losses), torch.cat(all_logits)
