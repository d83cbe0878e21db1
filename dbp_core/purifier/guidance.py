"""GDMP's guidance of the DDPM reverse step toward the input (docs/science.md, "GDMP guidance").

Wang, Lyu, Lin, Dai, Fu, "Guided Diffusion Model for Adversarial Purification" (GDMP, 2022,
arXiv:2205.14969), MSE form, as their released code computes it: at each reverse step the
posterior mean moves along the gradient of the negative distance between the current iterate x_t
and the guidance target, scaled by s_t and by the step's model variance (the classifier-guidance
form of Dhariwal & Nichol 2021, Algorithm 1: ``mean + Sigma grad``):

    mean <- mean + Sigma_t s_t grad_x[ -mean_image (x_t - ref_t)^2 ] = mean + Sigma_t s_t (2/D) (ref_t - x_t)
    s_t   = sqrt(1 - ab_t) / (m sqrt(ab_t)),   m = (2 eps / 3) / scale
    ref_t = sqrt(ab_t) x_in + sqrt(1 - ab_t) z'   ("noised", GDMP on CIFAR-10)  or  x_in ("clean", ImageNet)

with x_in the purifier's input in [-1, 1] (so the attacker's gradient flows through the target
too), D = C H W and z' addressed noise (stream kind GUIDANCE, step = the original timestep).
GDMP's ``F.mse_loss`` averages over the whole batch, so its guidance weakens with the batch size;
we average per image, which is GDMP's guidance at batch size 1 and never depends on the batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import ops
from .diffusion import ReverseStep
from .registry import GUIDANCE_TARGETS


@dataclass(frozen=True)
class Guidance:
    """GDMP's MSE guidance: ``scale`` (their ``guide_scale``: 60000 on CIFAR-10, 1000 on ImageNet),
    ``eps`` (their ``ptb``/255, the budget in [0, 1] pixel units that sets m: 8/255, 4/255),
    ``target`` ("noised": the input re-noised to each step, or "clean": the input)."""

    scale: float
    eps: float = 8 / 255
    target: str = "noised"

    def __post_init__(self):
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"guidance scale must be a positive number, got {self.scale}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"guidance eps must be a positive number, got {self.eps}")
        if self.target not in GUIDANCE_TARGETS:
            raise ValueError(f"guidance target must be one of {GUIDANCE_TARGETS}, got {self.target!r}")


def gdmp_scale(alpha_bar_t: float, scale: float, eps: float) -> float:
    """GDMP's s_t = sqrt(1 - ab_t) / (m sqrt(ab_t)) with m = (2 eps / 3) / scale (their ``compute_scale``)."""
    m = (2.0 * eps / 3.0) / scale
    return math.sqrt(1.0 - alpha_bar_t) / (m * math.sqrt(alpha_bar_t))


def guidance_term(step: ReverseStep, x: torch.Tensor, cond: torch.Tensor, variance, guidance: Guidance,
                  seed: int, stream: int, uids: torch.Tensor) -> torch.Tensor:
    """Sigma_t s_t (2/D) (ref_t - x_t): what GDMP adds to the step's mean. ``variance``: the step's model
    variance (a float, or a tensor for a learned variance); differentiable in x, cond and variance."""
    if guidance.target == "clean":
        ref = cond
    else:
        ref = ops.q_sample(cond, math.sqrt(step.alpha_bar), math.sqrt(1.0 - step.alpha_bar), seed, stream, uids,
                           step.noise_step)
    k = 2.0 * gdmp_scale(step.alpha_bar, guidance.scale, guidance.eps) / x[0].numel()
    return (variance * k) * (ref - x)
