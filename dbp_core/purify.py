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
* ``checkpoint`` — per-step checkpointing: the forward runs without a graph and keeps each
  step's input image; the backward re-runs one step's network at a time with a graph and
  backpropagates through it. Memory = one image per step plus one network's activations;
  cost = 2 forwards + 1 backward. Noise is regenerated from its address, never stored.
* ``segments``   — the chain is cut into ``segments`` (default ceil(sqrt(S))) segments; only the
  segment boundaries are kept, and the backward re-runs each segment (no graph) to recover its
  step inputs, then proceeds step by step as ``checkpoint``: memory = about 2 sqrt(S) images
  plus one network's activations; cost = 3 forwards + 1 backward (minus one forward per segment).

Both checkpointing modes run as one autograd node for the whole chain (``_ChainCheckpoint``):
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
from torch.autograd.function import once_differentiable

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
        params = self._chain_params(x)
        if params is not None:  # the lean path: one autograd node for the whole chain
            if not (x.requires_grad or params):
                with torch.no_grad():  # nothing to differentiate
                    return self._steps(x, 0, n, seed, uids, replica, replicas, ckpt_each=False)
            per_segment = 1 if mode == "checkpoint" else math.ceil(n / min(self.segments, n))
            plan = _ChainPlan(self, seed, uids, replica, replicas, per_segment)
            return _ChainCheckpoint.apply(plan, x, *params)
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


# --- checkpointed chain: one autograd node, no saved-tensor hooks ---

class _ChainPlan:
    """What a checkpointed chain needs besides its tensors (passed through Function.apply)."""

    def __init__(self, purifier: Purifier, seed: int, uids: torch.Tensor, replica: int, replicas: int,
                 per_segment: int):
        self.purifier, self.seed, self.uids = purifier, seed, uids
        self.replica, self.replicas, self.per_segment = replica, replicas, per_segment

    def step(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return self.purifier._step(x, i, self.seed, self.uids, self.replica, self.replicas)


def _rng_state(device: torch.device):
    """The global RNG states a network's random ops (dropout) draw from on ``device``."""
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_state(device: torch.device, state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class _RngStates:
    """The RNG states at the kept steps. A network that draws no random numbers leaves the state
    unchanged from step to step: consecutive equal states are stored once (a CPU state is 5 KB,
    more than a small image)."""

    def __init__(self, count: int, device: torch.device):
        self.device = device
        self.unique: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.index = [0] * count

    def capture(self, k: int) -> None:
        cpu, dev = _rng_state(self.device)
        if self.unique:
            last_cpu, last_dev = self.unique[-1]
            if torch.equal(cpu, last_cpu) and (dev is None or torch.equal(dev, last_dev)):
                self.index[k] = len(self.unique) - 1
                return
        self.unique.append((cpu, dev))
        self.index[k] = len(self.unique) - 1

    def get(self, k: int):
        return self.unique[self.index[k]]


def _engine_needs(t: torch.Tensor) -> bool:
    """Will the running backward use a gradient for ``t``? (``torch.autograd.grad(loss, x)`` does
    not want the weights' gradients even when they require grad.)"""
    try:
        return bool(torch._C._will_engine_execute_node(torch.autograd.graph.get_gradient_edge(t).node))
    except (RuntimeError, AttributeError):  # not inside a backward / API not available: compute it
        return True


class _ChainCheckpoint(torch.autograd.Function):
    """The reverse chain with its step inputs kept every ``per_segment`` steps (1: per-step
    checkpointing; ~sqrt(S): segments). Forward: all steps without a graph. Backward: per segment,
    last first, recover the step inputs (no graph) from the kept one, then step by step re-run the
    network with a graph and backpropagate (``Purifier._step_vjp``)."""

    @staticmethod
    def forward(ctx, plan: _ChainPlan, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        n = len(plan.purifier.chain)
        # the kept inputs packed in one allocation: many small blocks pinned between the
        # network's large, short-lived ones fragment the heap (peak RSS would creep up with S)
        store = x.new_empty((len(range(0, n, plan.per_segment)),) + tuple(x.shape))
        states = _RngStates(store.shape[0], x.device)
        for i in range(n):
            if i % plan.per_segment == 0:
                store[i // plan.per_segment].copy_(x)
                states.capture(i // plan.per_segment)
            x = plan.step(x, i)
        # saved through autograd: freed after the backward (unless retain_graph), packed by any
        # saved-tensor hooks in force (e.g. torch.autograd.graph.save_on_cpu)
        ctx.save_for_backward(store)
        ctx.plan, ctx.states, ctx.params = plan, states, params
        return x

    @staticmethod
    @once_differentiable  # the recomputed steps are differentiated once: double backward raises
    def backward(ctx, g: torch.Tensor):
        plan, (store,), states = ctx.plan, ctx.saved_tensors, ctx.states
        pur, n, seg = plan.purifier, len(plan.purifier.chain), plan.per_segment
        use = [w and _engine_needs(p) for p, w in zip(ctx.params, ctx.needs_input_grad[2:])]
        params = [p for p, u in zip(ctx.params, use) if u]
        need_x0 = ctx.needs_input_grad[1]
        acc: list[torch.Tensor | None] = [None] * len(params)
        device = g.device
        outer = _rng_state(device)
        try:
            for lo in reversed(range(0, n, seg)):
                hi = min(lo + seg, n)
                x, state = store[lo // seg], states.get(lo // seg)
                inputs = [(x, state)]
                if hi - lo > 1:  # recover the segment's step inputs (the last step's output is not needed)
                    _set_rng_state(device, state)
                    with torch.no_grad():
                        for i in range(lo, hi - 1):
                            x = plan.step(x, i)
                            inputs.append((x, _rng_state(device)))
                for i in reversed(range(lo, hi)):
                    need_x = i > 0 or need_x0
                    if not (need_x or params):
                        break
                    x, state = inputs.pop()
                    _set_rng_state(device, state)
                    g, grads = pur._step_vjp(i, x, g, params, need_x)
                    for j, gp in enumerate(grads):  # out of place: autograd may hand out aliased grads
                        if gp is not None:
                            acc[j] = gp if acc[j] is None else acc[j] + gp
        finally:
            _set_rng_state(device, outer)
        it = iter(acc)
        return (None, g if need_x0 else None, *(next(it) if u else None for u in use))
