"""DDPM / DDIM mathematics: schedules, respacing, forward diffusion, reverse steps, training loss.

References (equation numbers as printed in the papers):

* DDPM — Ho, Jain, Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
  eq. 4 (closed-form q(x_t | x_0)), eq. 7 (posterior q(x_{t-1} | x_t, x_0)),
  eq. 11 (reverse mean in epsilon form), eq. 14 (L_simple), Algorithm 2 (sampling).
* DDIM — Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
  eq. 12 (generalised reverse step; eta = 0 gives the deterministic update).
* Respacing — Nichol & Dhariwal, "Improved DDPM", ICML 2021, sec. 4 ("Improving sampling
  speed"): keep alpha_bar at a subsequence of timesteps and recompute the betas from it.

Conventions (those of openai/improved-diffusion and DiffPure):

* Timesteps are 0-based indices 0..T-1 into ``betas``; ``alpha_bar[t] = prod_{s<=t} (1 - beta_s)``.
* Purifying to ``t* = 0.1`` of T = 1000 means ``n = 100`` noising steps: diffuse to index
  ``n - 1 = 99`` and run the reverse chain at indices 99, 98, ..., 0 (DiffPure
  ``runners/diffpure_guided.py``). A respaced chain of S steps visits S of these indices,
  evenly spaced and always including ``n - 1`` and ``0``.
* Every reverse step is written in the form ``x_prev = c_x * (x_t - c_eps * eps) + sigma * z``
  and executed by the fused op ``ops.ddpm_step`` (addressed noise z, regenerated on demand);
  forward diffusion goes through ``ops.q_sample``.
* The DDPM reverse step does not clip the predicted x_0 to [-1, 1]. DiffPure's guided-diffusion
  sampler clips (``clip_denoised=True``); without clipping the x_0-form mean and the eps-form
  mean (eq. 11) are algebraically identical, and the map stays smooth, so attack gradients
  are exact gradients of the defence that is evaluated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import ops
from . import registry

NUM_TRAIN_STEPS = 1000
BETA_START = 1e-4
BETA_END = 0.02


def linear_beta_schedule(num_steps: int = NUM_TRAIN_STEPS, beta_start: float = BETA_START,
                         beta_end: float = BETA_END) -> torch.Tensor:
    """DDPM sec. 4: betas increasing linearly from 1e-4 to 0.02 over T = 1000 steps (float64)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """DDPM eq. 4 notation: alpha_bar_t = prod_{s<=t} (1 - beta_s), in the betas' dtype."""
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True)
class Schedule:
    """The training noise schedule: float64 master copy, float32 views for the models."""

    betas64: torch.Tensor  # [T] float64

    @property
    def num_steps(self) -> int:
        return int(self.betas64.numel())

    @property
    def alpha_bar64(self) -> torch.Tensor:
        return alphas_cumprod(self.betas64)

    @property
    def betas(self) -> torch.Tensor:
        return self.betas64.float()

    @property
    def alpha_bar(self) -> torch.Tensor:
        return self.alpha_bar64.float()

    def steps_for(self, t_star: float) -> int:
        """Number n of noising steps for a fractional time t* in (0, 1]: round(t* T)."""
        if not 0.0 < t_star <= 1.0:
            raise ValueError(f"t_star must be in (0, 1], got {t_star}")
        return max(1, int(round(t_star * self.num_steps)))


def linear_schedule() -> Schedule:
    """The DDPM / DiffPure schedule: 1000 linear betas 1e-4..0.02."""
    return Schedule(linear_beta_schedule())


def respaced_timesteps(num_noise_steps: int, num_reverse_steps: int) -> list[int]:
    """Improved DDPM sec. 4 respacing: ``num_reverse_steps`` original timesteps out of
    ``0 .. num_noise_steps - 1``, evenly spaced (rounded), including both ends, in
    decreasing order (the order the reverse chain visits them)."""
    n, s = int(num_noise_steps), int(num_reverse_steps)
    if n < 1:
        raise ValueError(f"num_noise_steps must be >= 1, got {n}")
    if not 1 <= s <= n:
        raise ValueError(f"reverse steps must be in [1, {n}] (the noising steps to t*), got {s}")
    if s == 1:
        return [n - 1]
    stride = (n - 1) / (s - 1)
    ts = sorted({int(round(i * stride)) for i in range(s)}, reverse=True)
    if len(ts) != s:  # cannot happen for stride >= 1, kept as a guard
        raise AssertionError(f"respacing produced duplicates: {ts}")
    return ts


@dataclass(frozen=True)
class ReverseStep:
    """Coefficients of one reverse step ``x_prev = c_x * (x_t - c_eps * eps) + sigma * z``."""

    t: int  # original timestep (what the network is conditioned on; also the noise address)
    c_x: float
    c_eps: float
    sigma: float


def respaced_betas(alpha_bar64: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
    """Improved DDPM sec. 4: beta'_i = 1 - alpha_bar[tau_i] / alpha_bar[tau_{i-1}] for the kept
    timesteps tau (increasing), with alpha_bar before the first kept step equal to 1.
    Returns float64 betas in increasing-time order."""
    taus = sorted(timesteps)
    ab = alpha_bar64[taus]
    prev = torch.cat([ab.new_ones(1), ab[:-1]])
    return 1.0 - ab / prev


def ddpm_posterior_mean_coefficients(alpha_bar_t: float, alpha_bar_prev: float) -> tuple[float, float]:
    """DDPM eq. 11: mu(x_t) = 1/sqrt(alpha_t) * (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps),
    with alpha_t = alpha_bar_t / alpha_bar_prev (the respaced step). Returns (c_x, c_eps)."""
    alpha_t = alpha_bar_t / alpha_bar_prev
    beta_t = 1.0 - alpha_t
    return 1.0 / math.sqrt(alpha_t), beta_t / math.sqrt(1.0 - alpha_bar_t)


def ddpm_fixed_large_sigma(alpha_bar_t: float, alpha_bar_prev: float, is_last: bool) -> float:
    """DDPM sec. 3.2 choice sigma_t^2 = beta_t ("fixed_large", as DiffPure / improved-diffusion
    with the respaced beta_t); Algorithm 2 adds no noise on the final step (z = 0 at t = 1)."""
    if is_last:
        return 0.0
    return math.sqrt(1.0 - alpha_bar_t / alpha_bar_prev)


def ddpm_fixed_small_sigma(alpha_bar_t: float, alpha_bar_prev: float, is_last: bool) -> float:
    """DDPM eq. 7 posterior variance ("fixed_small"): sigma_t^2 = beta~_t =
    (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t, with the respaced beta_t. It is exactly
    0 on the final step (alpha_bar_prev = 1)."""
    if is_last:
        return 0.0
    beta_t = 1.0 - alpha_bar_t / alpha_bar_prev
    return math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * beta_t)


SIGMAS = {"fixed_large": ddpm_fixed_large_sigma, "fixed_small": ddpm_fixed_small_sigma}  # registry.VARIANCES


def ddim_eta0_coefficients(alpha_bar_t: float, alpha_bar_prev: float) -> tuple[float, float]:
    """DDIM eq. 12 with eta = 0 (sigma = 0):
    x_prev = sqrt(ab_prev) * (x_t - sqrt(1-ab_t) eps) / sqrt(ab_t) + sqrt(1-ab_prev) * eps,
    rewritten as c_x * (x_t - c_eps * eps) with c_x = sqrt(ab_prev / ab_t) and
    c_eps = sqrt(1 - ab_t) - sqrt(1 - ab_prev) / c_x. Returns (c_x, c_eps)."""
    c_x = math.sqrt(alpha_bar_prev / alpha_bar_t)
    return c_x, math.sqrt(1.0 - alpha_bar_t) - math.sqrt(1.0 - alpha_bar_prev) / c_x


def reverse_chain(schedule: Schedule, num_noise_steps: int, num_reverse_steps: int,
                  sampler: str = "ddpm", variance: str = "fixed_large") -> list[ReverseStep]:
    """The reverse steps (in execution order) from index ``num_noise_steps - 1`` down to 0.

    Coefficients are computed in float64 from the float64 alpha_bar. ``sampler`` is
    ``"ddpm"`` (eq. 11 mean; ``variance`` "fixed_large" sigma^2 = beta_t, DiffPure's choice, or
    "fixed_small" sigma^2 = the eq. 7 posterior variance) or ``"ddim"`` (eq. 12, eta = 0)."""
    if sampler not in registry.SAMPLERS:
        raise ValueError(f"sampler must be one of {registry.SAMPLERS}, got {sampler!r}")
    if variance not in registry.VARIANCES:
        raise ValueError(f"variance must be one of {registry.VARIANCES}, got {variance!r}")
    if num_noise_steps > schedule.num_steps:
        raise ValueError(f"cannot diffuse {num_noise_steps} steps with a {schedule.num_steps}-step schedule")
    ts = respaced_timesteps(num_noise_steps, num_reverse_steps)
    ab = schedule.alpha_bar64
    out = []
    for i, t in enumerate(ts):
        ab_t = float(ab[t])
        ab_prev = float(ab[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        last = i + 1 == len(ts)
        if sampler == "ddpm":
            c_x, c_eps = ddpm_posterior_mean_coefficients(ab_t, ab_prev)
            sigma = SIGMAS[variance](ab_t, ab_prev, last)
        else:
            c_x, c_eps = ddim_eta0_coefficients(ab_t, ab_prev)
            sigma = 0.0
        out.append(ReverseStep(t=t, c_x=c_x, c_eps=c_eps, sigma=sigma))
    return out


def q_sample(schedule: Schedule, x0: torch.Tensor, t: int, seed: int, stream: int,
             uids: torch.Tensor, step: int | None = None) -> torch.Tensor:
    """DDPM eq. 4: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) z, z addressed by
    (seed, stream, uid, step) with ``step`` defaulting to t. Differentiable in x_0."""
    ab = float(schedule.alpha_bar64[t])
    return ops.q_sample(x0, math.sqrt(ab), math.sqrt(1.0 - ab), seed, stream, uids,
                        t if step is None else step)


def reverse_step(x_t: torch.Tensor, eps: torch.Tensor, step: ReverseStep, seed: int, stream: int,
                 uids: torch.Tensor) -> torch.Tensor:
    """One reverse step (DDPM eq. 11 + sigma z, or DDIM eq. 12) through the fused op; the noise
    address's ``step`` field is the original timestep ``step.t``."""
    return ops.ddpm_step(x_t, eps, step.c_x, step.c_eps, step.sigma, seed, stream, uids, step.t)


def eps_prediction_loss(eps_model, schedule: Schedule, x0: torch.Tensor, t: torch.Tensor,
                        seed: int, stream: int, uids: torch.Tensor, step: int,
                        noise: torch.Tensor | None = None) -> torch.Tensor:
    """DDPM eq. 14 (L_simple): E || eps - eps_theta(sqrt(ab_t) x0 + sqrt(1-ab_t) eps, t) ||^2.

    ``t``: int64 [B] per-sample timesteps. The noise is addressed (seed, stream, uid, step)
    unless ``noise`` is given (ADDT passes its mixed noise eps')."""
    ab = schedule.alpha_bar.to(x0.device)[t].to(x0.dtype)
    if noise is None:  # the same address as the op's in-kernel draw (tested)
        x_t = ops.q_sample(x0, ab.sqrt(), (1.0 - ab).sqrt(), seed, stream, uids, step)
        noise = ops.normal(x0.shape, seed, stream, uids, step, dtype=x0.dtype)
    else:
        shape = (-1,) + (1,) * (x0.dim() - 1)
        x_t = ab.sqrt().view(shape) * x0 + (1.0 - ab).sqrt().view(shape) * noise
    return F.mse_loss(eps_model(x_t, t), noise)
