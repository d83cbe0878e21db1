"""DiffPure's continuous-time purifiers: the reverse VP-SDE and the probability-flow ODE, as chains
of Euler steps on DiffPure's own time grids (docs/science.md, "Reverse VP-SDE" and
"Probability-flow ODE").

References:

* Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole, "Score-Based Generative Modeling through
  Stochastic Differential Equations", ICLR 2021: eq. 11 (VP-SDE), eq. 6 (reverse-time SDE),
  eq. 13 (probability-flow ODE), appendix B (the VP perturbation kernel: mean and variance).
* Nie et al., "Diffusion Models for Adversarial Purification" (DiffPure), ICML 2022: eq. 3-4
  (purification by the reverse SDE from t*), and the released code (``runners/diffpure_sde.py``,
  ``runners/diffpure_ode.py``), whose time grids are reproduced here exactly.

Every step is affine in (x, eps) plus addressed noise, ``x' = c_x (x - c_eps eps) + sigma z``,
so it runs as the fused ``ops.ddpm_step`` and checkpoints like the DDPM chain.

* SDE (Euler-Maruyama, torchsde's ``method="euler"``), forward time s, step h > 0 down in s:
  ``x' = x + (1/2 beta(s) x + beta(s) score) h + sqrt(beta(s)) dW``, ``score = -eps / sigma(s)``,
  ``dW = sqrt(h) z``: ``c_x = 1 + beta h / 2``, ``c_eps = beta h / (sigma(s) c_x)``, ``sigma = sqrt(beta h)``.
* ODE (Euler, torchdiffeq's fixed-grid ``method="euler"``):
  ``x' = x + (1/2 beta(s) x + 1/2 beta(s) score) h``: ``c_eps = beta h / (2 sigma(s) c_x)``, no noise.

Times are those of DiffPure's solvers, computed in float32 as they compute them (then the
coefficients in float64 from those float32 values):

* SDE: torchsde integrates its own time u from ``1 - t*`` to ``1 - 1e-5`` (float32 ``linspace``);
  ``u_{k+1} = min(u_k + dt, u_end)`` accumulated in float32; the network sees s = 1 - u.
* ODE: torchdiffeq negates the decreasing span ``[t*, 1e-5]`` and builds the grid
  ``-t* + j dt`` (float32, ``ceil((t* - 1e-5)/dt + 1)`` points, the last one set to ``-1e-5``).

``dt = t* / steps``: DiffPure's 1e-3 when ``steps`` is the number of noising steps (t* = 0.1:
100 steps). A discrete-time network is given DiffPure's timestep ``floor(1000 s)`` (float32),
a continuous-time one s itself.
"""
from __future__ import annotations

import math

import numpy as np

from .diffusion import NUM_TRAIN_STEPS, ReverseStep

BETA_MIN = 0.1  # beta(0), DiffPure / score_sde VPSDE (beta_min)
BETA_MAX = 20.0  # beta(1) (beta_max); the discrete schedule 1e-4..0.02 over T = 1000 is beta(s)/T
T_END = 1e-5  # DiffPure's end time (epsilon_dt1): the chains stop at s = 1e-5, not 0

_f32 = np.float32


def vp_beta(s: float) -> float:
    """Song et al. 2021 eq. 11: beta(s) = beta_min + s (beta_max - beta_min)."""
    return BETA_MIN + s * (BETA_MAX - BETA_MIN)


def vp_sigma(s: float) -> float:
    """Song et al. 2021, appendix B, the VP marginal's standard deviation:
    sigma(s) = sqrt(1 - exp(-s^2 (beta_max - beta_min)/2 - s beta_min))."""
    return math.sqrt(-math.expm1(-0.5 * s * s * (BETA_MAX - BETA_MIN) - s * BETA_MIN))


def sde_time_grid(t_star: float, dt: float) -> list[tuple[float, float]]:
    """The (s_k, h_k) of DiffPure's ``torchsde.sdeint(..., method="euler", dt=dt)`` from t* to 1e-5:
    s_k the forward time of step k's network call, h_k its step. float32 as torchsde computes them."""
    u, u_end = _f32(1.0 - t_star), _f32(1.0 - T_END)  # torch.linspace(1 - t*, 1 - 1e-5, 2), float32
    step = _f32(dt)
    grid = []
    while u < u_end:
        nxt = min(_f32(u + step), u_end)
        grid.append((float(_f32(_f32(1.0) - u)), float(_f32(nxt - u))))
        u = nxt
    return grid


def ode_time_grid(t_star: float, dt: float) -> list[tuple[float, float]]:
    """The (s_j, h_j) of DiffPure's ``torchdiffeq.odeint(..., method="euler", options={"step_size": dt})``
    over ``[t*, 1e-5]``: torchdiffeq integrates -s on the grid -t* + j dt (float32, the last point set
    to -1e-5); s_j is the time of step j's network call, h_j > 0 its step."""
    start, end = _f32(-_f32(t_star)), _f32(-_f32(T_END))
    step = _f32(dt)
    count = int(math.ceil(float(_f32(_f32(end - start) / step + _f32(1.0)))))
    grid = [_f32(_f32(_f32(j) * step) + start) for j in range(count)]
    grid[-1] = end
    return [(float(-grid[j]), float(_f32(grid[j + 1] - grid[j]))) for j in range(count - 1)]


def discrete_timestep(s: float) -> int:
    """DiffPure's timestep for a discrete-time network (guided-diffusion): ``(s.float() * 1000).long()``."""
    return int(math.floor(_f32(_f32(s) * _f32(NUM_TRAIN_STEPS))))


def vpsde_step(s: float, h: float) -> tuple[float, float, float]:
    """One Euler-Maruyama step of the reverse VP-SDE (Song et al. 2021 eq. 6 with eq. 11, DiffPure eq. 4)
    down from s by h, with score = -eps/sigma(s): returns (c_x, c_eps, sigma) of
    x' = c_x (x - c_eps eps) + sigma z."""
    beta = vp_beta(s)
    c_x = 1.0 + 0.5 * beta * h
    return c_x, beta * h / (vp_sigma(s) * c_x), math.sqrt(beta * h)


def vpode_step(s: float, h: float) -> tuple[float, float]:
    """One Euler step of the probability-flow ODE (Song et al. 2021 eq. 13 with eq. 11) down from s by h:
    returns (c_x, c_eps) of x' = c_x (x - c_eps eps)."""
    beta = vp_beta(s)
    c_x = 1.0 + 0.5 * beta * h
    return c_x, 0.5 * beta * h / (vp_sigma(s) * c_x)


def continuous_chain(sampler: str, t_star: float, steps: int) -> list[ReverseStep]:
    """The Euler steps of ``"vpsde"`` or ``"vpode"`` from t* to 1e-5 with dt = t*/steps, in execution
    order. Step k's noise address is k (its position on the grid); the ODE draws nothing."""
    if sampler not in ("vpsde", "vpode"):
        raise ValueError(f"continuous sampler must be 'vpsde' or 'vpode', got {sampler!r}")
    if not 0.0 < t_star <= 1.0:
        raise ValueError(f"t_star must be in (0, 1], got {t_star}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    dt = t_star / steps
    grid = sde_time_grid(t_star, dt) if sampler == "vpsde" else ode_time_grid(t_star, dt)
    out = []
    for k, (s, h) in enumerate(grid):
        if sampler == "vpsde":
            c_x, c_eps, sigma = vpsde_step(s, h)
        else:
            (c_x, c_eps), sigma = vpode_step(s, h), 0.0
        out.append(ReverseStep(t=discrete_timestep(s), c_x=c_x, c_eps=c_eps, sigma=sigma, time=s, address=k,
                               noise=sigma > 0.0))
    return out
