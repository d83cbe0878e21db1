"""The purifier of diffusion-based purification (DiffPure-style; docs/design.md, docs/science.md).

``Purifier(eps_model, t_star, steps, sampler, noise, grad_mode)`` maps images in [0, 1] to
purified images in [0, 1]:

    x -> 2x - 1 -> x_{t*} = sqrt(ab) x + sqrt(1 - ab) z      (DDPM eq. 4, ``ops.q_sample``)
      -> reverse chain from t* to 0                          (see the samplers below)
      -> (x + 1) / 2                                          (clamped to [0, 1] with ``clamp_output``)

Samplers (docs/science.md; every one a chain of steps affine in (x, the network's output) plus
addressed noise, so that all of them replay exactly, regenerate their noise in backward and get
the exact gradient in every gradient mode):

* ``ddpm`` — DDPM eq. 11 (respaced to ``steps``), variance ``fixed_large`` / ``fixed_small`` /
  ``learned`` (guided-diffusion's learned range: the network outputs [eps, v]);
* ``ddim`` — DDIM eq. 12 with ``eta`` (eq. 16; 0 = deterministic);
* ``vpsde`` — DiffPure's reverse VP-SDE, Euler-Maruyama on DiffPure's time grid (``purifier/vpsde.py``);
* ``vpode`` — the probability-flow ODE, Euler on DiffPure's ODE grid.

Options: ``clip_denoised`` (ddpm / ddim: the predicted x_0 clipped to [-1, 1] in every step, as
guided-diffusion and diffusers do), ``guidance`` (ddpm: GDMP's guidance toward the input,
``purifier/guidance.py``), ``clamp_output`` (the purified image clamped to [0, 1]). With a clamp
the gradient is the exact gradient of the clamped defence (zero where a clamp saturates).

Gradient modes (all give the same gradient; tests check allclose):

* ``none``       — ``torch.no_grad``; for evaluation only.
* ``full``       — plain autograd: memory = every step's network activations.
* ``checkpoint`` — per-step checkpointing: the forward runs without a graph and keeps each
  step's input image; the backward re-runs one step at a time with a graph and backpropagates
  through it. Memory = one image per step plus one network's activations; cost = 2 forwards +
  1 backward. Noise is regenerated from its address, never stored.
* ``segments``   — the chain is cut into ``segments`` (default ceil(sqrt(S))) segments; only the
  segment boundaries are kept, and the backward re-runs each segment (no graph) to recover its
  step inputs, then proceeds step by step as ``checkpoint``: memory = about 2 sqrt(S) images
  plus one network's activations; cost = 3 forwards + 1 backward (minus one forward per segment).

Both checkpointing modes run as one autograd node for the whole chain (``chain.ChainCheckpoint``):
no saved-tensor hooks or per-step graph bookkeeping; in backward a step's arithmetic is re-run
without its noise draw (unless a learned sigma needs it), so only the network costs. Gradients
flow to the input (through the guidance target too) and to the parameters of ``eps_model`` (an
``nn.Module``); gradients the running backward does not ask for (the weights' under
``torch.autograd.grad(loss, x)``, even if they require grad) are not computed. The global RNG
state of each step is replayed in the recomputation and restored afterwards (as
``torch.utils.checkpoint`` does), so a network with dropout gets the same masks. An ``eps_model``
that is a plain callable, or a call under autocast, uses ``torch.utils.checkpoint``
(non-reentrant) per step instead — same gradients, more overhead.

The eps-model interface: ``eps_model(x_t, t)``. If ``eps_model.continuous_time`` is true, ``t`` is a
float tensor [B] of times in [0, 1] (score_sde's convention; ddpm/ddim give it timestep/999),
else an int64 tensor [B] of timesteps 0..999 (vpsde/vpode give it DiffPure's floor(1000 s)). If
``eps_model.learned_variance`` is true the output has 2C channels, [eps, v].

EOT replicas: ``purifier(x, uids, replicas=K)`` purifies K copies in one batch (layout
replica-major: rows ``k*B .. (k+1)*B - 1`` are replica ``k``); replica k uses the streams of
replica ``replica + k`` so replicas get independent noise while uids stay the dataset ids.
Every call takes one seed from the noise source (``noise.stochastic()`` or ``noise.replay(s)``);
``seed=`` overrides it for one call, and ``reverse_seed=`` gives the reverse steps (and the
guidance target's draws) a seed of their own (the DW-box variant that replays only the forward
noise). ``states=[k, ...]`` also returns the chain's states after k reverse steps.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import ops
from . import noise as noise_mod
from . import memory
from .chain import ChainCheckpoint, ChainPlan, _rng_state, _set_rng_state, step_vjp
from .memory import MemoryPlan, StepCosts
from .diffusion import ReverseStep, Schedule, linear_schedule, q_sample, reverse_chain
from .guidance import Guidance, guidance_term
from .precision import check_precision, compiled_network, network_precision
from .registry import DISCRETE_SAMPLERS, GRAD_MODES, MAX_MEMORY_BUDGET, RESPACINGS, SAMPLERS, VARIANCES
from .vpsde import continuous_chain, vp_sigma


def check_options(sampler: str, variance: str, eta: float, clip_denoised: bool, guidance,
                  respacing: str = "t_star") -> None:
    """The combinations a sampler takes (ValueError naming the option otherwise)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if respacing not in RESPACINGS:
        raise ValueError(f"respacing must be one of {RESPACINGS}, got {respacing!r}")
    if respacing != "t_star" and sampler not in DISCRETE_SAMPLERS:
        raise ValueError(f"respacing respaces DDPM/DDIM's timesteps; sampler {sampler!r} has none")
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    if eta != 0.0 and sampler != "ddim":
        raise ValueError(f"eta is DDIM's (sampler 'ddim'), got eta={eta} with sampler {sampler!r}")
    if variance != "fixed_large" and sampler != "ddpm":
        raise ValueError(f"variance is DDPM's (sampler 'ddpm'), got variance={variance!r} with sampler {sampler!r}")
    if clip_denoised and sampler not in DISCRETE_SAMPLERS:
        raise ValueError(f"clip_denoised clips DDPM/DDIM's predicted x_0; sampler {sampler!r} predicts none")
    if guidance is not None and sampler != "ddpm":
        raise ValueError(f"guidance (GDMP) guides the DDPM step, got sampler {sampler!r}")


PROBE_ROWS = 4  # step_costs measures a step at up to 2 and 4 rows of the batch


class Purifier(nn.Module):
    """Diffuse to t* and denoise back (see module docstring). Call: ``purifier(x, uids)``."""

    def __init__(self, eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], t_star: float = 0.1,
                 steps: int | None = None, sampler: str = "ddpm", noise: noise_mod.NoiseSource | None = None,
                 grad_mode: str = "checkpoint", schedule: Schedule | None = None, variance: str = "fixed_large",
                 segments: int | None = None, *, eta: float = 0.0, clip_denoised: bool = False,
                 clamp_output: bool = False, guidance: Guidance | None = None, respacing: str = "t_star",
                 memory_budget: float | None = None, precision: str = "fp32", compile: bool = False):
        super().__init__()
        check_precision(precision)
        if memory_budget is not None:
            if not 0 < memory_budget <= MAX_MEMORY_BUDGET:  # NaN and inf too
                raise ValueError(f"memory_budget must be a positive number of GB, at most {MAX_MEMORY_BUDGET:.0f}, "
                                 f"got {memory_budget}")
            if not isinstance(eps_model, nn.Module):
                raise ValueError("memory_budget plans the checkpointed chain of an nn.Module eps_model; "
                                 f"got a {type(eps_model).__name__}")
        if grad_mode not in GRAD_MODES:
            raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {grad_mode!r}")
        check_options(sampler, variance, float(eta), bool(clip_denoised), guidance, respacing)
        if variance == "learned" and not getattr(eps_model, "learned_variance", False):
            raise ValueError("variance 'learned' needs a network that outputs [eps, v] (eps_model.learned_variance "
                             "is not set); use 'fixed_large' or 'fixed_small'")
        self.eps_model = eps_model
        self.schedule = schedule or linear_schedule()
        self.t_star = float(t_star)
        self.num_noise_steps = self.schedule.steps_for(self.t_star)
        requested = int(steps) if steps is not None else self.num_noise_steps  # see the property ``steps``
        self.sampler = sampler
        self.noise = noise if noise is not None else noise_mod.stochastic()
        self.grad_mode = grad_mode
        self.variance = variance
        self.eta = float(eta)
        self.clip_denoised = bool(clip_denoised)
        self.clamp_output = bool(clamp_output)
        self.guidance = guidance
        self.respacing = respacing
        self.precision = precision
        if sampler in DISCRETE_SAMPLERS:
            self.chain: list[ReverseStep] = reverse_chain(self.schedule, self.num_noise_steps, requested, sampler,
                                                          variance, self.eta, respacing)
        else:
            self.chain = continuous_chain(sampler, self.t_star, requested)
        if segments is not None and segments < 1:
            raise ValueError(f"segments must be >= 1, got {segments}")
        # segments mode: ceil(sqrt(S)) by default, the count that minimises stored images (~2 sqrt(S))
        self.segments = int(segments) if segments is not None else max(1, math.ceil(math.sqrt(len(self.chain))))
        self.memory_budget = None if memory_budget is None else float(memory_budget)
        self.compile = bool(compile)
        # the network as called: compiled (torch.compile) or not; kept out of the module tree so that
        # parameters() lists the weights once
        self.__dict__["_net"] = compiled_network(eps_model) if compile else eps_model
        self._costs: dict = {}  # measured step costs (memory.StepCosts) by (row shape, dtype, device, weights)
        self.last_plan: MemoryPlan | None = None

    @property
    def steps(self) -> int:
        """The reverse steps the purifier runs: the length of its chain. The ``steps`` argument asks for
        a resolution; the chain may have fewer (a global respacing keeps only its steps below t*) or
        other (DiffPure's SDE and ODE time grids round their last step)."""
        return len(self.chain)

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in (("eta", self.eta), ("clip_denoised", self.clip_denoised),
                                                     ("clamp_output", self.clamp_output),
                                                     ("guidance", self.guidance)) if v not in (0.0, False, None))
        extra += f", respacing={self.respacing!r}" if self.respacing != "t_star" else ""
        extra += f", memory_budget={self.memory_budget}" if self.memory_budget is not None else ""
        extra += f", precision={self.precision!r}" if self.precision != "fp32" else ""
        extra += ", compile=True" if self.compile else ""
        return (f"t_star={self.t_star}, steps={self.steps}, sampler={self.sampler!r}, variance={self.variance!r}, "
                f"noise={self.noise!r}, grad_mode={self.grad_mode!r}, segments={self.segments}{extra}")

    # --- one reverse step, the unit of checkpointing ---

    def _model_input_time(self, st: ReverseStep, x: torch.Tensor) -> torch.Tensor:
        """What the network is conditioned on (the eps-model interface, module docstring)."""
        if getattr(self.eps_model, "continuous_time", False):
            return torch.full((x.shape[0],), st.model_time(self.schedule.num_steps), dtype=x.dtype, device=x.device)
        return torch.full((x.shape[0],), st.t, dtype=torch.long, device=x.device)

    def _step(self, x: torch.Tensor, cond: torch.Tensor | None, i: int, seed: int, uids: torch.Tensor,
              replica: int, replicas: int, draw: bool = True) -> torch.Tensor:
        """Reverse step ``i`` of the batch (``replicas`` replicas of ``uids``, replica-major). ``cond``: the
        purifier's input in [-1, 1] (the guidance target; None without guidance). ``draw=False``: skip
        the noise term where nothing differentiates through it (the backward's recomputation)."""
        st = self.chain[i]
        with network_precision(self.precision, x.device.type):
            out = self._net(x, self._model_input_time(st, x))
        out = out.to(x.dtype)  # the step's arithmetic stays in the chain's dtype
        c = x.shape[1]
        if getattr(self.eps_model, "learned_variance", False):
            if out.shape[1] != 2 * c:
                raise ValueError(f"eps_model.learned_variance is set, so the network must output 2 x {c} channels "
                                 f"[eps, v]; got {out.shape[1]}")
            eps, v = out[:, :c], out[:, c:]
        else:
            eps, v = out, None
        b = uids.shape[0]
        parts = [self._update(st, x[k * b:(k + 1) * b], eps[k * b:(k + 1) * b],
                              None if v is None else v[k * b:(k + 1) * b], cond, seed, replica + k, uids, draw)
                 for k in range(replicas)]
        return parts[0] if replicas == 1 else torch.cat(parts)

    def _update(self, st: ReverseStep, x, eps, v, cond, seed: int, replica: int, uids, draw: bool):
        """x_prev of one replica from x_t and the network's output (docs/science.md, "DDPM reverse step",
        "Clipping the predicted x_0", "Learned variance", "GDMP guidance")."""
        if self.variance == "learned":
            # Nichol & Dhariwal 2021 eq. 15: log Sigma = frac log beta + (1 - frac) log beta~, frac = (v + 1)/2
            frac = (v + 1.0) / 2.0
            log_var = frac * st.log_var_max + (1.0 - frac) * st.log_var_min
            variance = torch.exp(log_var)
            sigma = torch.exp(0.5 * log_var) if st.noise else 0.0
            if not draw and not (torch.is_tensor(sigma) and sigma.requires_grad):
                sigma = 0.0
        else:
            variance, sigma = st.variance, (st.sigma if draw else 0.0)
        stream = noise_mod.stream(noise_mod.REVERSE, replica)
        if self.clip_denoised:
            y = ops.clipped_step(x, eps, st.a, st.b, st.c0, st.c1, sigma, seed, stream, uids, st.noise_step)
        else:
            y = ops.ddpm_step(x, eps, st.c_x, st.c_eps, sigma, seed, stream, uids, st.noise_step)
        if self.guidance is not None:
            y = y + guidance_term(st, x, cond, variance, self.guidance, seed,
                                  noise_mod.stream(noise_mod.GUIDANCE, replica), uids)
        return y

    def _steps(self, x, cond, lo, hi, seed, uids, replica, replicas, ckpt_each: bool, keep=(), kept=None):
        for i in range(lo, hi):
            if i in keep:
                kept[i] = x
            if ckpt_each:
                x = checkpoint(self._step, x, cond, i, seed, uids, replica, replicas, use_reentrant=False)
            else:
                x = self._step(x, cond, i, seed, uids, replica, replicas)
        if hi in keep:
            kept[hi] = x
        return x

    def _reverse(self, x, cond, seed, uids, replica, replicas, keep: tuple[int, ...]):
        """The chain from x_{t*}: (last state, {k: state after k steps for k in keep})."""
        n = len(self.chain)
        kept: dict[int, torch.Tensor] = {}
        mode = self.grad_mode if torch.is_grad_enabled() else "none"
        budgeted = self.memory_budget is not None and mode != "none"
        if mode == "none" or (mode == "full" and not budgeted):
            return self._steps(x, cond, 0, n, seed, uids, replica, replicas, False, keep, kept), kept
        params = self._chain_params(x)
        if params is not None:  # the lean path: one autograd node for the whole chain
            if not (x.requires_grad or (cond is not None and cond.requires_grad) or params):
                with torch.no_grad():  # nothing to differentiate
                    return self._steps(x, cond, 0, n, seed, uids, replica, replicas, False, keep, kept), kept
            per_segment = self._per_segment(mode)
            memory = self._memory_plan(x, cond, seed, uids, replica, replicas, per_segment, params) if budgeted else None
            plan = ChainPlan(self, seed, uids, replica, replicas, per_segment, keep, memory)
            out, *states = ChainCheckpoint.apply(plan, x, cond, *params)
            return out, dict(zip(keep, states))
        if mode == "checkpoint":
            return self._steps(x, cond, 0, n, seed, uids, replica, replicas, True, keep, kept), kept
        seg = math.ceil(n / min(self.segments, n))  # steps per segment; each segment checkpointed, nested per step
        for lo in range(0, n, seg):
            hi = min(lo + seg, n)
            inner = tuple(k for k in keep if lo <= k < hi)
            x, *states = checkpoint(self._segment, x, cond, lo, hi, seed, uids, replica, replicas, inner,
                                    use_reentrant=False)
            kept.update(zip(inner, states))
        if n in keep:
            kept[n] = x
        return x, kept

    def _per_segment(self, mode: str) -> int:
        """Steps between the step inputs the checkpointed chain stores: one in `checkpoint`, ~sqrt(S) in
        `segments`."""
        n = len(self.chain)
        return math.ceil(n / min(self.segments, n)) if mode == "segments" else 1

    # --- the memory budget (purifier/memory.py) ---

    def step_costs(self, x: torch.Tensor, cond: torch.Tensor | None, seed: int, uids: torch.Tensor,
                   replica: int, replicas: int, params: list[torch.Tensor]) -> StepCosts:
        """The memory one reverse step needs, measured on this batch's first rows at two micro-batch sizes
        (cached per row shape, dtype, device and whether the weights are differentiated). The global RNG
        state is restored afterwards, so a network with dropout draws as it would have."""
        key = (tuple(x.shape[1:]), x.dtype, x.device, bool(params), None if cond is None else cond.requires_grad)
        if key in self._costs:
            return self._costs[key]
        rows = x.shape[0]
        m1 = max(1, min(PROBE_ROWS // 2, rows // 2))
        m2 = min(rows, 2 * m1)
        if m2 == m1:
            m2 = m1 + 1  # one row only: probe two rows of a repeated batch
            x = torch.cat([x, x])
            uids, replicas = torch.cat([uids, uids]), 1
        cplan = ChainPlan(self, seed, uids, replica, replicas, 1)
        need_cond = cond is not None and cond.requires_grad
        rng = _rng_state(x.device)
        res = {}
        try:
            for m in (m1, m2):
                rows_m = cplan.chunks(m)[0] if cplan.chunks(m) else None
                xm = (x if rows_m is None else x[rows_m.lo:rows_m.hi]).detach()
                with torch.no_grad():
                    fwd, _, _ = memory.measure(lambda: cplan.step(xm, cond, 0, rows=rows_m), x.device)

                def build():
                    xg = xm.clone().requires_grad_()
                    c = None if cond is None else cond.detach().requires_grad_(need_cond)
                    with torch.enable_grad():
                        return cplan.step(xg, c, 0, draw=False, rows=rows_m)
                _, graph, y = memory.measure(build, x.device)
                del y
                vjp, _, _ = memory.measure(lambda: step_vjp(cplan, 0, xm, cond, torch.ones_like(xm), params, True,
                                                            need_cond, rows=rows_m), x.device)
                res[m] = (fwd, graph, vjp)
        finally:
            _set_rng_state(x.device, rng)
        fit = [memory.Linear.fit(m1, res[m1][k], m2, res[m2][k]) for k in range(3)]
        costs = StepCosts(x[0].numel() * x.element_size(), *fit)
        self._costs[key] = costs
        return costs

    def _memory_plan(self, x, cond, seed, uids, replica, replicas, per_segment, params) -> MemoryPlan:
        costs = self.step_costs(x, cond, seed, uids, replica, replicas, params)
        return self._plan(costs, x.shape[0], uids.shape[0], per_segment, params)

    def _plan(self, costs: StepCosts, rows: int, batch: int, per_segment: int, params) -> MemoryPlan:
        weight_bytes = sum(p.numel() * p.element_size() for p in params)
        plan = memory.plan(costs, rows, len(self.chain), per_segment, self.memory_budget, weight_bytes, batch=batch)
        self.last_plan = plan
        return plan

    def memory_plan(self, x: torch.Tensor, uids: torch.Tensor, replicas: int = 1,
                    weights: bool = False) -> MemoryPlan:
        """The plan a budgeted gradient call on ``x`` ([B, C, H, W] in [0, 1]) with ``replicas`` EOT replicas
        will use (``weights``: the network's weights are differentiated too); probes the network once, on
        the first rows of the first replica (those a gradient call probes: ``step_costs``), so ``x`` may
        be a batch of one image expanded to B rows."""
        if self.memory_budget is None:
            raise ValueError("memory_plan needs a memory_budget")
        probe = min(x.shape[0], PROBE_ROWS)
        uids = uids.to(x.device)
        xt = 2.0 * x[:probe].detach() - 1.0
        cond = xt if self.guidance is not None else None
        params = [p for p in self.eps_model.parameters() if p.requires_grad] if weights else []
        costs = self.step_costs(xt, cond, 0, uids[:probe], 0, 1, params)
        return self._plan(costs, x.shape[0] * replicas, uids.shape[0], self._per_segment(self.grad_mode), params)

    def _segment(self, x, cond, lo, hi, seed, uids, replica, replicas, inner):
        """Steps lo..hi-1, each checkpointed; returns the last state and the states ``inner`` (segments mode
        of a plain-callable eps_model)."""
        kept: dict[int, torch.Tensor] = {}
        x = self._steps(x, cond, lo, hi, seed, uids, replica, replicas, True, inner, kept)
        return (x, *(kept[k] for k in inner))

    def _chain_params(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        """The tensors the chain's gradient can flow to besides ``x`` (the parameters of an
        ``nn.Module`` eps_model that require grad), or None when the lean checkpointing path
        cannot see them all (a plain callable) or cannot replay the call exactly (autocast)."""
        if not isinstance(self.eps_model, nn.Module):
            return None
        if torch.is_autocast_enabled(x.device.type):
            if self.memory_budget is not None:
                raise ValueError("memory_budget cannot replay a purification called under autocast; set "
                                 "purifier.precision = 'bf16' instead (autocast of the network inside each step)")
            return None
        return [p for p in self.eps_model.parameters() if p.requires_grad]

    # --- public entry ---

    def forward(self, x: torch.Tensor, uids: torch.Tensor, replicas: int = 1, replica: int = 0,
                seed: int | None = None, reverse_seed: int | None = None,
                states: Sequence[int] | None = None):
        """Purify ``x`` ([B, C, H, W] in [0, 1]) of samples ``uids`` (int64 [B], dataset ids).

        Returns [replicas * B, C, H, W] in (about) [0, 1]; replica-major layout. With ``states``
        (indices k in 0..len(chain)): ``(purified, [state_k, ...])``, state k the chain's state after
        k reverse steps in the model's [-1, 1] space (0: the diffused input x_{t*}; len(chain): the
        last state, before mapping to [0, 1]), [replicas * B, ...] each; gradients flow from losses on
        them in every gradient mode, and only the requested states are kept."""
        if x.dim() < 2 or x.shape[0] != uids.shape[0]:
            raise ValueError(f"x must be a batch with one uid per sample: x {list(x.shape)}, uids {list(uids.shape)}")
        if uids.dtype != torch.int64:
            raise ValueError(f"uids must be int64 dataset indices, got {uids.dtype}")
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        want = None if states is None else [int(k) for k in states]
        if want is not None and any(not 0 <= k <= len(self.chain) for k in want):
            raise ValueError(f"states must be step counts in [0, {len(self.chain)}] (the chain has "
                             f"{len(self.chain)} reverse steps), got {list(states)}")
        uids = uids.to(x.device)
        seed = self.noise.next_seed() if seed is None else int(seed)
        reverse_seed = seed if reverse_seed is None else int(reverse_seed)
        keep = tuple(sorted(set(want or ())))
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.grad_mode != "none"):
            out, kept = self._purify(x, uids, replicas, replica, seed, reverse_seed, keep)
        return out if want is None else (out, [kept[k] for k in want])

    @property
    def noise_timestep(self) -> int:
        """The timestep of the forward noising: DiffPure noises with the discrete alpha_bar at index
        n - 1 (a global respacing: at its first kept step)."""
        return self.chain[0].t if self.sampler in DISCRETE_SAMPLERS else self.num_noise_steps - 1

    def state_alpha_bar(self, k: int) -> float:
        """alpha_bar at the time of the chain's state after ``k`` reverse steps (the input of step k):
        the step's own for a discrete chain, ``1 - sigma(s)^2`` of the VP kernel at its time s for a
        continuous one (Song et al. 2021, appendix B), 1 after the last step."""
        if not 0 <= k <= len(self.chain):
            raise ValueError(f"state must be a step count in [0, {len(self.chain)}], got {k}")
        if k == len(self.chain):
            return 1.0
        step = self.chain[k]
        return 1.0 - vp_sigma(step.time) ** 2 if step.time is not None else step.alpha_bar

    def diffused(self, x: torch.Tensor, uids: torch.Tensor, states: Sequence[int], seed: int,
                 replicas: int = 1, replica: int = 0) -> list[torch.Tensor]:
        """The input diffused by the forward process to the time of each chain state k,
        ``sqrt(ab_k) (2x - 1) + sqrt(1 - ab_k) z`` (DDPM eq. 4) with z the forward draw the
        purification with ``seed`` makes: the reference that DiffAttack's deviated-reconstruction
        loss compares the chain's states to (docs/science.md, "DiffAttack"). Differentiable in x;
        [replicas * B, ...] each, replica-major like ``forward``."""
        x = 2.0 * x - 1.0
        uids = uids.to(x.device)
        out = []
        for k in states:
            ab = self.state_alpha_bar(int(k))
            out.append(torch.cat([ops.q_sample(x, math.sqrt(ab), math.sqrt(1.0 - ab), int(seed),
                                               noise_mod.stream(noise_mod.FORWARD, replica + r), uids,
                                               self.noise_timestep) for r in range(replicas)]))
        return out

    def _purify(self, x, uids, replicas, replica, seed, reverse_seed, keep):
        x = 2.0 * x - 1.0
        t_noise = self.noise_timestep
        x_t = torch.cat([q_sample(self.schedule, x, t_noise, seed, noise_mod.stream(noise_mod.FORWARD, replica + k),
                                  uids) for k in range(replicas)]) if replicas > 1 else \
            q_sample(self.schedule, x, t_noise, seed, noise_mod.stream(noise_mod.FORWARD, replica), uids)
        assert x_t.shape[0] == replicas * x.shape[0]
        cond = x if self.guidance is not None else None
        last, kept = self._reverse(x_t, cond, reverse_seed, uids, replica, replicas, keep)
        out = (last + 1.0) * 0.5
        return (out.clamp(0.0, 1.0) if self.clamp_output else out), kept
