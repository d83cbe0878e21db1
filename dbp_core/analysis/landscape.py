"""Loss landscapes around an example: fixed noise vs fresh noise per grid point.

The grid spans x + a * d1 (+ b * d2) for a, b in [-radius, radius], where d1 is
the attack direction (the sign of the EOT gradient at x: the Linf attacker's step, used
for both norms so the two axes have the same scale) and d2 a random Rademacher
direction, addressed by uid. With *fixed* noise every grid point is purified
with the same seed — the smooth, deterministic function a DW-box attacker
climbs; with *fresh* noise every grid point gets its own seed — the rough
surface a stochastic attacker samples.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import ops
from ..attacks.eot import eot_gradient


def _directions(model, x, y, uids, seed: int, eot: int) -> tuple[torch.Tensor, torch.Tensor]:
    grad, _, _ = eot_gradient(model, x, y, uids, eot, seed=seed)
    d1 = grad.sign()
    d2 = ops.normal(x.shape, seed, 7, uids, 0, x.dtype).sign()
    return d1, d2


def loss_landscape(model, x, y, uids, *, radius: float, grid: int, dims: int, fixed_seed: int,
                   fresh_seed, eot: int = 4) -> dict:
    """Per-example mean CE loss on a ``grid``^dims grid, with fixed and with fresh noise.

    ``fresh_seed(index)`` gives the seed of grid point ``index``. Returns JSON-able lists:
    ``alphas``, ``fixed`` and ``fresh`` ([grid] or [grid][grid], averaged over examples)."""
    d1, d2 = _directions(model, x, y, uids, fixed_seed, eot)
    alphas = torch.linspace(-radius, radius, grid).tolist()
    points = [(a, 0.0) for a in alphas] if dims == 1 else [(a, b) for a in alphas for b in alphas]
    fixed, fresh = [], []
    with torch.no_grad():
        for idx, (a, b) in enumerate(points):
            xp = (x + a * d1 + b * d2).clamp(0, 1)
            fixed.append(float(F.cross_entropy(model(xp, uids, seed=fixed_seed), y)))
            fresh.append(float(F.cross_entropy(model(xp, uids, seed=fresh_seed(idx)), y)))
    shape = (lambda v: v) if dims == 1 else (lambda v: [v[r * grid:(r + 1) * grid] for r in range(grid)])
    return {"alphas": alphas, "dims": dims, "fixed": shape(fixed), "fresh": shape(fresh)}
