"""Lp-ball geometry of the attacks: steps, projections, random starts.

Images live in [0, 1]; eps and step sizes are in the same pixel units
(docs/science.md, "Attacks"). The update order follows PGD as torchattacks and
RobustBench write it: step from the current iterate, project the
perturbation onto the eps-ball, clamp the image to [0, 1].
"""
from __future__ import annotations

import math

import torch

from .. import ops
from .names import NORMS

_TINY = 1e-10  # guards the L2 normalisation of a zero gradient


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit size in the norm: sign(g) for Linf, g/||g||_2 for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / (_flat_norm(grad) + _TINY)


def project(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Nearest point of {x + d : ||d|| <= eps} ∩ [0, 1]^n (Linf: clip; L2: scale by min(eps/||d||, 1))."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * torch.clamp(eps / _flat_norm(delta), max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def random_start(x: torch.Tensor, uids: torch.Tensor, norm: str, eps: float, seed: int) -> torch.Tensor:
    """A random point of the eps-ball around x, addressed by uid (batch-independent).

    Linf: uniform in [-eps, eps]^n. L2: uniform direction, radius eps * U(0, 1)."""
    z = ops.normal(x.shape, seed, 0, uids, 0, x.dtype)
    if norm == "linf":
        u = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
        delta = eps * (2.0 * u - 1.0)
    else:
        r = ops.normal((x.shape[0], 1), seed, 0, uids, 1, x.dtype)
        radius = eps * 0.5 * (1.0 + torch.erf(r / math.sqrt(2.0)))
        delta = z / _flat_norm(z) * radius.view(-1, *([1] * (x.dim() - 1)))
    return (x + delta).clamp(0.0, 1.0)
