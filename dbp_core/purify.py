"""The purifier of diffusion-based purification (DiffPure-style; DESIGN.md §1, NOTES.md).

``Purifier(eps_model, t_star, steps, sampler, noise, grad_mode)`` maps images in [0, 1] to
purified images in [0, 1]:

    x -> 2x - 1 -> x_{t*} = sqrt(ab) x + sqrt(1 - ab) z      (DDPM eq. 4, ``ops.q_sample``)
      -> reverse chain t* - 1 .. 0 (respaced to ``steps``)   (DDPM eq. 11 / DDIM eq. 12, ``ops.ddpm_step``)
      -> (x + 1) / 2

Nothing is clamped: the map is smooth, so the gradient an attacker gets is the gradient of the
function that is evaluated (a clamp would zero gradients of saturated pixels). The classifier
receives the unclamped image; with a trained model it stays within a few 1e-2 of [0, 1].

Gradient modes (all give the same gradient; tests check allclose):

* ``none``       — ``torch.no_grad``; for evaluation only.
* ``full``       — plain autograd: memory = every step's network activations.
* ``checkpoint`` — each reverse step (network + fused update) under
  ``torch.utils.checkpoint(use_reentrant=False)``: memory = one image per step plus one
  network's activations; cost = 2 forwards + 1 backward. Noise is regenerated from its
  address in the recomputation, so nothing random is stored or replayed from state.
* ``segments``   — the chain is cut into ``segments`` (default ceil(sqrt(S))) segments, each checkpointed, and each
  step inside is checkpointed again (nested, non-reentrant): memory = about 2 sqrt(S) images
  plus one network's activations; cost = 3 forwards + 1 backward.

EOT replicas: ``purifier(x, uids, replicas=K)`` purifies K copies in one batch (layout
replica-major: rows ``k*B .. (k+1)*B - 1`` are replica ``k``); replica k uses the streams of
replica ``replica + k`` so replicas get independent noise while uids stay the dataset ids.
Every call takes one seed from the noise source (``noise.stochastic()`` or ``noise.replay(s)``);
``seed=`` overrides it for one call, and ``reverse_seed=`` gives the reverse steps a seed of their
own (the DW-box variant that replays only the forward noise).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import noise as noise_mod
from .diffusion import ReverseStep, Schedule, linear_schedule, q_sample, reverse_chain, reverse_step

GRAD_MODES = ("none", "full", "checkpoint", "segments")
SAMPLERS = ("ddpm", "ddim")


class Purifier(nn.Module):
    """Diffuse to t* and denoise back (see module docstring). Call: ``purifier(x, uids)``."""

    def __init__(self, eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], t_star: float = 0.1,
                 steps: int | None = None, sampler: str = "ddpm", noise: noise_mod.NoiseSource | None = None,
                 grad_mode: str = "checkpoint", schedule: Schedule | None = None, variance: str = "fixed_large",
                 segments: int | None = None):
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if grad_mode not in GRAD_MODES:
            raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {grad_mode!r}")
        self.eps_model = eps_model
        self.schedule = schedule or linear_schedule()
        self.t_star = float(t_star)
        self.num_noise_steps = self.schedule.steps_for(self.t_star)
        self.steps = int(steps) if steps is not None else self.num_noise_steps
        self.sampler = sampler
        self.noise = noise if noise is not None else noise_mod.stochastic()
        self.grad_mode = grad_mode
        self.variance = variance
        self.chain: list[ReverseStep] = reverse_chain(self.schedule, self.num_noise_steps, self.steps, sampler,
                                                      variance)
        if segments is not None and segments < 1:
            raise ValueError(f"segments must be >= 1, got {segments}")
        # segments mode: ceil(sqrt(S)) by default, the count that minimises stored images (~2 sqrt(S))
        self.segments = int(segments) if segments is not None else max(1, math.ceil(math.sqrt(len(self.chain))))

    def extra_repr(self) -> str:
        return (f"t_star={self.t_star}, steps={self.steps}, sampler={self.sampler!r}, variance={self.variance!r}, "
                f"noise={self.noise!r}, grad_mode={self.grad_mode!r}, segments={self.segments}")

    # --- one reverse step, the unit of checkpointing ---

    def _step(self, x: torch.Tensor, i: int, seed: int, uids: torch.Tensor, replica: int, replicas: int):
        st = self.chain[i]
        t = torch.full((x.shape[0],), st.t, dtype=torch.long, device=x.device)
        eps = self.eps_model(x, t)
        b = uids.shape[0]
        parts = [reverse_step(x[k * b:(k + 1) * b], eps[k * b:(k + 1) * b], st, seed,
                              noise_mod.stream(noise_mod.REVERSE, replica + k), uids)
                 for k in range(replicas)]
        return parts[0] if replicas == 1 else torch.cat(parts)

    def _steps(self, x, lo, hi, seed, uids, replica, replicas, ckpt_each: bool):
        for i in range(lo, hi):
            if ckpt_each:
                x = checkpoint(self._step, x, i, seed, uids, replica, replicas, use_reentrant=False)
            else:
                x = self._step(x, i, seed, uids, replica, replicas)
        return x

    def _reverse(self, x, seed, uids, replica, replicas):
        n = len(self.chain)
        mode = self.grad_mode if torch.is_grad_enabled() else "none"
        if mode in ("none", "full"):
            return self._steps(x, 0, n, seed, uids, replica, replicas, ckpt_each=False)
        if mode == "checkpoint":
            return self._steps(x, 0, n, seed, uids, replica, replicas, ckpt_each=True)
        seg = math.ceil(n / min(self.segments, n))  # steps per segment; each segment checkpointed, nested per step
        for lo in range(0, n, seg):
            x = checkpoint(self._steps, x, lo, min(lo + seg, n), seed, uids, replica, replicas, True,
                           use_reentrant=False)
        return x

    # --- public entry ---

    def forward(self, x: torch.Tensor, uids: torch.Tensor, replicas: int = 1, replica: int = 0,
                seed: int | None = None, reverse_seed: int | None = None) -> torch.Tensor:
        """Purify ``x`` ([B, C, H, W] in [0, 1]) of samples ``uids`` (int64 [B], dataset ids).

        Returns [replicas * B, C, H, W] in (about) [0, 1]; replica-major layout."""
        if x.dim() < 2 or x.shape[0] != uids.shape[0]:
            raise ValueError(f"x must be a batch with one uid per sample: x {list(x.shape)}, uids {list(uids.shape)}")
        if uids.dtype != torch.int64:
            raise ValueError(f"uids must be int64 dataset indices, got {uids.dtype}")
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        uids = uids.to(x.device)
        seed = self.noise.next_seed() if seed is None else int(seed)
        reverse_seed = seed if reverse_seed is None else int(reverse_seed)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.grad_mode != "none"):
            return self._purify(x, uids, replicas, replica, seed, reverse_seed)

    def _purify(self, x, uids, replicas, replica, seed, reverse_seed):
        x = 2.0 * x - 1.0
        b = x.shape[0]
        x_t = torch.cat([q_sample(self.schedule, x, self.chain[0].t, seed,
                                  noise_mod.stream(noise_mod.FORWARD, replica + k), uids)
                         for k in range(replicas)]) if replicas > 1 else \
            q_sample(self.schedule, x, self.chain[0].t, seed, noise_mod.stream(noise_mod.FORWARD, replica), uids)
        assert x_t.shape[0] == replicas * b
        return (self._reverse(x_t, reverse_seed, uids, replica, replicas) + 1.0) * 0.5
