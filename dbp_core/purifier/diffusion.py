"""DDPM / DDIM mathematics: schedules, respacing, forward diffusion, reverse steps, training loss.

References (equation numbers as printed in the papers):

* DDPM — Ho, Jain, Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
  eq. 4 (closed-form q(x_t | x_0)), eq. 7 (posterior q(x_{t-1} | x_t, x_0)),
  eq. 11 (reverse mean in epsilon form), eq. 14 (L_simple), Algorithm 2 (sampling).
* DDIM — Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
  eq. 12 (generalised reverse step; eta = 0 gives the deterministic update), eq. 16 (sigma(eta)).
* Respacing — Nichol & Dhariwal, "Improved DDPM", ICML 2021, sec. 4 ("Improving sampling
  speed"): keep alpha_bar at a subsequence of timesteps and recompute the betas from it;
  eq. 15 (learned-range variance, the guided-diffusion models' ``learn_sigma``).

Conventions (those of openai/improved-diffusion and DiffPure):

* Timesteps are 0-based indices 0..T-1 into ``betas``; ``alpha_bar[t] = prod_{s<=t} (1 - beta_s)``.
* Purifying to ``t* = 0.1`` of T = 1000 means ``n = 100`` noising steps: diffuse to index
  ``n - 1 = 99`` and run the reverse chain at indices 99, 98, ..., 0 (DiffPure
  ``runners/diffpure_guided.py``). A respaced chain of S steps visits S of these indices,
  evenly spaced and always including ``n - 1`` and ``0``.
* Every reverse step is written in the form ``x_prev = c_x * (x_t - c_eps * eps) + sigma * z``
  and executed by the fused op ``ops.ddpm_step`` (addressed noise z, regenerated on demand);
  forward diffusion goes through ``ops.q_sample``.
* With ``clip_denoised`` (guided-diffusion's ``p_mean_variance``, diffusers' ``clip_sample``) the
  step is written in its x_0 form ``x_prev = c0 * clamp(a * x_t - b * eps, -1, 1) + c1 * x_t +
  sigma * z`` and runs as ``ops.clipped_step``; without clipping the two forms are algebraically
  identical and the eps form (the default, unchanged) is used (docs/science.md, "Clipping the
  predicted x_0").
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


def global_respaced_timesteps(num_train_steps: int, count: int, num_noise_steps: int) -> list[int]:
    """guided-diffusion's respacing over the whole schedule (``space_timesteps(T, str(count))``: ``count``
    steps of 0..T-1 at the fractional stride (T-1)/(count-1), accumulated and rounded as it does), cut to
    the steps a purification to ``num_noise_steps`` visits: the kept steps <= num_noise_steps - 1, in
    decreasing order, so the chain starts at the last kept step below t* (GDMP on ImageNet: 250 over
    1000, t* = 0.178: 45 steps from 177)."""
    T, k = int(num_train_steps), int(count)
    if not 1 <= k <= T:
        raise ValueError(f"global respacing keeps 1..{T} steps of the {T}-step schedule, got {k}")
    stride = (T - 1) / (k - 1) if k > 1 else 1
    kept, idx = set(), 0.0
    for _ in range(k):
        kept.add(round(idx))
        idx += stride
    return sorted((t for t in kept if t <= num_noise_steps - 1), reverse=True)


@dataclass(frozen=True)
class ReverseStep:
    """Coefficients of one reverse step (float64 scalars; docs/science.md, "DDPM reverse step").

    Unclipped: ``x_prev = c_x * (x_t - c_eps * eps) + sigma * z``. With the predicted x_0 clipped:
    ``x_prev = c0 * clamp(a * x_t - b * eps, -1, 1) + c1 * x_t + sigma * z``. With a learned
    variance sigma comes from the network (``log_var_min`` / ``log_var_max``), and ``variance``
    is the step's model variance, which GDMP's guidance is multiplied by."""

    t: int  # original timestep (what a discrete network is conditioned on; also the noise address)
    c_x: float
    c_eps: float
    sigma: float
    a: float = 0.0  # x_0 form: x0 = a x_t - b eps (DDPM eq. 15 solved for x_0)
    b: float = 0.0
    c0: float = 0.0  # x_0 form: x_prev = c0 x0 + c1 x_t + sigma z
    c1: float = 0.0
    variance: float = 0.0  # the model variance of the step (guided-diffusion's p_mean_variance "variance")
    log_var_min: float = 0.0  # learned range, Nichol & Dhariwal 2021 eq. 15: between log beta~ ...
    log_var_max: float = 0.0  # ... and log beta
    alpha_bar: float = 1.0  # alpha_bar of the step's timestep (GDMP's guidance scale and target)
    noise: bool = True  # False on the final step (Algorithm 2: z = 0 at t = 1)
    time: float | None = None  # time of a continuous-time network (None: t / (T - 1))
    address: int | None = None  # the noise address's step field (None: t)

    @property
    def noise_step(self) -> int:
        return self.t if self.address is None else self.address

    def model_time(self, num_train_steps: int = NUM_TRAIN_STEPS) -> float:
        """What a continuous-time network is given: its own time, or for a discrete chain t / (T - 1)
        (a score_sde model's label 999 t is then the timestep t; docs/science.md, "Model time")."""
        return self.time if self.time is not None else self.t / (num_train_steps - 1)


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


def predict_x0_coefficients(alpha_bar_t: float) -> tuple[float, float]:
    """DDPM eq. 4 solved for x_0 (guided-diffusion's ``_predict_xstart_from_eps``):
    x0 = sqrt(1/ab_t) x_t - sqrt(1/ab_t - 1) eps. Returns (a, b)."""
    return math.sqrt(1.0 / alpha_bar_t), math.sqrt(1.0 / alpha_bar_t - 1.0)


def ddpm_posterior_x0_coefficients(alpha_bar_t: float, alpha_bar_prev: float) -> tuple[float, float]:
    """DDPM eq. 7, posterior mean mu~(x_t, x_0) = c0 x_0 + c1 x_t with the respaced beta'_t:
    c0 = sqrt(ab_prev) beta'_t / (1 - ab_t), c1 = sqrt(alpha'_t) (1 - ab_prev) / (1 - ab_t). Returns (c0, c1)."""
    alpha_t = alpha_bar_t / alpha_bar_prev
    beta_t = 1.0 - alpha_t
    return math.sqrt(alpha_bar_prev) * beta_t / (1.0 - alpha_bar_t), \
        math.sqrt(alpha_t) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)


def ddpm_posterior_variance(alpha_bar_t: float, alpha_bar_prev: float) -> float:
    """DDPM eq. 7: beta~_t = (1 - ab_prev) / (1 - ab_t) beta'_t (0 on the final step, ab_prev = 1)."""
    return (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_prev)


def ddim_sigma(alpha_bar_t: float, alpha_bar_prev: float, eta: float) -> float:
    """DDIM eq. 16: sigma = eta sqrt((1 - ab_prev)/(1 - ab_t)) sqrt(1 - ab_t/ab_prev)
    (eta = 1: the DDPM posterior standard deviation; eta = 0: deterministic)."""
    if eta == 0.0:
        return 0.0
    return eta * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)) * math.sqrt(1.0 - alpha_bar_t / alpha_bar_prev)


def ddim_coefficients(alpha_bar_t: float, alpha_bar_prev: float, eta: float = 0.0) -> tuple[float, float, float]:
    """DDIM eq. 12:
    x_prev = sqrt(ab_prev) (x_t - sqrt(1-ab_t) eps) / sqrt(ab_t) + sqrt(1 - ab_prev - sigma^2) eps + sigma z,
    rewritten as c_x (x_t - c_eps eps) + sigma z with c_x = sqrt(ab_prev / ab_t) and
    c_eps = sqrt(1 - ab_t) - sqrt(1 - ab_prev - sigma^2) / c_x; sigma from eq. 16.
    Returns (c_x, c_eps, sigma)."""
    sigma = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    c_x = math.sqrt(alpha_bar_prev / alpha_bar_t)
    return c_x, math.sqrt(1.0 - alpha_bar_t) - math.sqrt(1.0 - alpha_bar_prev - sigma * sigma) / c_x, sigma


def ddim_x0_coefficients(alpha_bar_t: float, alpha_bar_prev: float, sigma: float) -> tuple[float, float]:
    """DDIM eq. 12 with eps re-derived from a (clipped) x_0, as guided-diffusion's ``ddim_sample``:
    eps' = (a x_t - x0) / b, x_prev = sqrt(ab_prev) x0 + k eps' = c0 x0 + c1 x_t with
    k = sqrt(1 - ab_prev - sigma^2), c0 = sqrt(ab_prev) - k / b, c1 = k a / b. Returns (c0, c1)."""
    a, b = predict_x0_coefficients(alpha_bar_t)
    k = math.sqrt(1.0 - alpha_bar_prev - sigma * sigma)
    return math.sqrt(alpha_bar_prev) - k / b, k * a / b


def reverse_chain(schedule: Schedule, num_noise_steps: int, num_reverse_steps: int,
                  sampler: str = "ddpm", variance: str = "fixed_large", eta: float = 0.0,
                  respacing: str = "t_star") -> list[ReverseStep]:
    """The reverse steps (in execution order) from index ``num_noise_steps - 1`` down to 0
    (``respacing = "t_star"``: ``num_reverse_steps`` spread over that range), or over the kept steps
    below t* of a respacing of the whole schedule to ``num_reverse_steps`` (``"global"``,
    :func:`global_respaced_timesteps`; the chain then starts at its first kept step).

    Coefficients are computed in float64 from the float64 alpha_bar. ``sampler`` is
    ``"ddpm"`` (eq. 11 mean; ``variance`` "fixed_large" sigma^2 = beta_t, DiffPure's choice,
    "fixed_small" sigma^2 = the eq. 7 posterior variance, or "learned": the network's
    [eps, v] output, Nichol & Dhariwal 2021 eq. 15) or ``"ddim"`` (eq. 12 with eta, eq. 16).
    Every step also carries its x_0-form coefficients (for ``clip_denoised``) and its model
    variance as guided-diffusion defines it (for GDMP guidance)."""
    if sampler not in registry.DISCRETE_SAMPLERS:
        raise ValueError(f"sampler must be one of {registry.DISCRETE_SAMPLERS} for a discrete chain, got {sampler!r}")
    if variance not in registry.VARIANCES:
        raise ValueError(f"variance must be one of {registry.VARIANCES}, got {variance!r}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    if num_noise_steps > schedule.num_steps:
        raise ValueError(f"cannot diffuse {num_noise_steps} steps with a {schedule.num_steps}-step schedule")
    if respacing not in registry.RESPACINGS:
        raise ValueError(f"respacing must be one of {registry.RESPACINGS}, got {respacing!r}")
    ts = (respaced_timesteps(num_noise_steps, num_reverse_steps) if respacing == "t_star" else
          global_respaced_timesteps(schedule.num_steps, num_reverse_steps, num_noise_steps))
    ab = schedule.alpha_bar64
    abs_ = [float(ab[t]) for t in ts] + [1.0]  # alpha_bar of each step, then 1 after the last
    out = []
    for i, t in enumerate(ts):
        ab_t, ab_prev = abs_[i], abs_[i + 1]
        last = i + 1 == len(ts)
        a, b = predict_x0_coefficients(ab_t)
        beta_t = 1.0 - ab_t / ab_prev
        # guided-diffusion replaces the final step's (zero) posterior variance by the one before it
        # (posterior_log_variance_clipped; fixed_large's variance at spaced index 0)
        post = ddpm_posterior_variance(ab_t, ab_prev)
        post_clipped = ddpm_posterior_variance(abs_[i - 1], ab_t) if last and i > 0 else (post if not last else beta_t)
        if sampler == "ddpm":
            c_x, c_eps = ddpm_posterior_mean_coefficients(ab_t, ab_prev)
            c0, c1 = ddpm_posterior_x0_coefficients(ab_t, ab_prev)
            sigma = SIGMAS[variance](ab_t, ab_prev, last) if variance != "learned" else 0.0
            model_var = {"fixed_large": post_clipped if last else beta_t, "fixed_small": post,
                         "learned": 0.0}[variance]
        else:
            c_x, c_eps, sigma = ddim_coefficients(ab_t, ab_prev, eta)
            c0, c1 = ddim_x0_coefficients(ab_t, ab_prev, sigma)
            model_var = sigma * sigma
        out.append(ReverseStep(t=t, c_x=c_x, c_eps=c_eps, sigma=sigma, a=a, b=b, c0=c0, c1=c1, variance=model_var,
                               log_var_min=math.log(post_clipped), log_var_max=math.log(beta_t), alpha_bar=ab_t,
                               noise=not last))
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
