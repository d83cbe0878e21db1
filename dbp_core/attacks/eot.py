"""Expectation over Transformation: the gradient of the loss summed over K
independent purifications (Athalye et al. 2018; Lee & Kim 2023 for DBP).

Replicas run batched: one call purifies ``chunk`` replicas side by side
(replica k gets its own noise streams, the uids stay the dataset ids), and
chunks are looped when K replicas do not fit in memory at once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference-of-logits-ratio loss (Croce & Hein 2020, eq. 6), per example; shift and scale invariant."""
    z = logits.sort(dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    top = logits.argmax(1) == y
    other = torch.where(top, z[:, -2], z[:, -1])  # best logit of another class
    return -(z_y - other) / (z[:, -1] - z[:, -3] + 1e-12)


LOSSES = {"ce": lambda logits, y: F.cross_entropy(logits, y, reduction="none"), "dlr": dlr_loss}


def eot_gradient(model, x: torch.Tensor, y: torch.Tensor, uids: torch.Tensor, eot: int,
                 chunk: int | None = None, loss: str = "ce", **noise) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad, loss per (replica, example), logits) for K = ``eot`` purifications.

    ``noise`` (seed=..., reverse_seed=...) goes to the model: a NoisePlan's kwargs.

    grad = d/dx sum_k loss(model_k(x), y), loss 'ce' or 'dlr'; losses and logits are replica-major [K * B]."""
    chunk = eot if not chunk else max(1, min(chunk, eot))
    x = x.detach().requires_grad_(True)
    grad = torch.zeros_like(x)
    losses, all_logits = [], []
    for k0 in range(0, eot, chunk):
        k = min(chunk, eot - k0)
        logits = model(x, uids, replicas=k, replica=k0, **noise)
        per_example = LOSSES[loss](logits, y.repeat(k))
        grad += torch.autograd.grad(per_example.sum(), x)[0]
        losses.append(per_example.detach())
        all_logits.append(logits.detach())
    return grad, torch.cat(losses), torch.cat(all_logits)
