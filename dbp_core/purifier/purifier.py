"""The purifier of diffusion-based purification (DiffPure-style; docs/design.md, docs/science.md).

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
* ``checkpoint`` — per-step checkpointing: the forward runs without a graph and keeps each
  step's input image; the backward re-runs one step's network at a time with a graph and
  backpropagates through it. Memory = one image per step plus one network's activations;
  cost = 2 forwards + 1 backward. Noise is regenerated from its address, never stored.
* ``segments``   — the chain is cut into ``segments`` (default ceil(sqrt(S))) segments; only the
  segment boundaries are kept, and the backward re-runs each segment (no graph) to recover its
  step inputs, then proceeds step by step as ``checkpoint``: memory = about 2 sqrt(S) images
  plus one network's activations; cost = 3 forwards + 1 backward (minus one forward per segment).

Both checkpointing modes run as one autograd node for the whole chain (``chain.ChainCheckpoint``):
no saved-tensor hooks or per-step graph bookkeeping, and the fused step's backward (two
scalings) is applied directly, so only the network is recomputed. Gradients flow to the input
and to the parameters of ``eps_model`` (an ``nn.Module``); gradients the running backward does not
ask for (the weights' under ``torch.autograd.grad(loss, x)``, even if they require grad) are not
computed. The
global RNG state of each step is replayed in the recomputation and restored afterwards (as
``torch.utils.checkpoint`` does), so a network with dropout gets the same masks. An ``eps_model``
that is a plain callable, or a call under autocast, uses ``torch.utils.checkpoint``
(non-reentrant) per step instead — same gradients, more overhead.

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
from .chain import ChainCheckpoint, ChainPlan
from .diffusion import ReverseStep, Schedule, linear_schedule, q_sample, reverse_chain, reverse_step
from .registry import GRAD_MODES, SAMPLERS


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
        params = self._chain_params(x)
        if params is not None:  # the lean path: one autograd node for the whole chain
            if not (x.requires_grad or params):
                with torch.no_grad():  # nothing to differentiate
                    return self._steps(x, 0, n, seed, uids, replica, replicas, ckpt_each=False)
            per_segment = 1 if mode == "checkpoint" else math.ceil(n / min(self.segments, n))
            plan = ChainPlan(self, seed, uids, replica, replicas, per_segment)
            return ChainCheckpoint.apply(plan, x, *params)
        if mode == "checkpoint":
            return self._steps(x, 0, n, seed, uids, replica, replicas, ckpt_each=True)
        seg = math.ceil(n / min(self.segments, n))  # steps per segment; each segment checkpointed, nested per step
        for lo in range(0, n, seg):
            x = checkpoint(self._steps, x, lo, min(lo + seg, n), seed, uids, replica, replicas, True,
                           use_reentrant=False)
        return x

    def _chain_params(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        """The tensors the chain's gradient can flow to besides ``x`` (the parameters of an
        ``nn.Module`` eps_model that require grad), or None when the lean checkpointing path
        cannot see them all (a plain callable) or cannot replay the call exactly (autocast)."""
        if not isinstance(self.eps_model, nn.Module):
            return None
        if torch.is_autocast_enabled(x.device.type):
            return None
        return [p for p in self.eps_model.parameters() if p.requires_grad]

    def _step_vjp(self, i: int, x: torch.Tensor, g: torch.Tensor, params: list[torch.Tensor], need_x: bool):
        """Backward of reverse step ``i`` at input ``x`` for the output gradient ``g``.

        The fused step ``c_x (x - c_eps eps) + sigma z`` (every replica has the same
        coefficients) has the backward of ``ops.ddpm_step``: g_x = g c_x, g_eps = -(g_x c_eps);
        only the network is re-run with a graph. Returns (grad wrt x or None, grads wrt params)."""
        st = self.chain[i]
        c_x = torch.tensor(st.c_x, dtype=g.dtype, device=g.device)
        c_eps = torch.tensor(st.c_eps, dtype=g.dtype, device=g.device)
        g_x = g * c_x
        g_eps = -(g_x * c_eps)
        x = x.detach().requires_grad_(need_x)
        with torch.enable_grad():
            eps = self.eps_model(x, torch.full((x.shape[0],), st.t, dtype=torch.long, device=x.device))
        inputs = ([x] if need_x else []) + params
        grads = list(torch.autograd.grad(eps, inputs, g_eps, allow_unused=True)) if eps.requires_grad else \
            [None] * len(inputs)
        g_in = None
        if need_x:
            g_net = grads.pop(0)
            g_in = g_x if g_net is None else g_x + g_net
        return g_in, grads

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
