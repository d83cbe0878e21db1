"""CGPO — classifier-guided perturbation optimisation (docs/science.md, "CGPO" and "RBGM").

For a training batch (x0 in [-1, 1], labels y, per-sample timesteps t) CGPO
finds a perturbation delta of the diffusion noise that hurts the frozen
classifier most after one-step denoising:

    lambda_t = clamp(m sqrt(ab_t) / sqrt(1 - ab_t), 0, c)                   (step 1)
    eps'     = sqrt(1 - lambda_t^2) eps + lambda_t delta                      (mixed noise)
    x_t      = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps'                           (DDPM eq. 4)
    x0_hat   = (x_t - sqrt(1 - ab_t) eps_theta(x_t, t)) / sqrt(ab_t)         (one-step estimate)
    g       += d CE(f(x0_hat), y) / d delta;   delta = RBGM(g)               (steps 2–3)

starting from delta ~ N(0, I), with a fresh eps each iteration and the gradient
accumulated, never reset. RBGM (``ops.rbgm``) keeps delta exactly a Gaussian
sample in value, ordered like the ascent direction. Ablations: ``guidance =
"mse"`` maximises the denoising error instead; ``mapping = "linf-pgd"`` starts
at 0, takes sign steps of ``pgd_step`` clipped to ``pgd_eps`` (docs/science.md, "ADDT",
in [0, 1] units) with ``x0 + delta`` kept in the image range [-1, 1] (as the authors'
``train_ADDT_linf.py``), and enters as ``eps + delta * min(sqrt(ab)/sqrt(1-ab), 10)``.

All noise is addressed (seed, stream, uid, step): a CGPO call is reproducible
and independent of the batch composition.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch

from .. import ops
from ..models.dropout import dropout_addresses
from ..purifier import noise as noise_mod

DROPOUT_STREAM = noise_mod.stream(noise_mod.ADDT_DROPOUT)


def lambda_t(alpha_bar: torch.Tensor, multiplier: float = 0.03, clamp: float = 0.3) -> torch.Tensor:
    """docs/science.md, "CGPO": lambda_t = clamp(multiplier sqrt(ab) / sqrt(1 - ab), 0, clamp)."""
    return (multiplier * alpha_bar.sqrt() / (1.0 - alpha_bar).sqrt()).clamp(0.0, clamp)


def _rows(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


@dataclass(frozen=True)
class CGPOSettings:
    multiplier: float = 0.03
    clamp: float = 0.3
    iterations: int = 5
    guidance: str = "classifier"  # | "mse"
    mapping: str = "rbgm"  # | "linf-pgd"
    pgd_step: float = 4 / 255  # [0, 1] units (linf-pgd mapping)
    pgd_eps: float = 8 / 255

    @classmethod
    def from_config(cls, a) -> "CGPOSettings":
        return cls(a.lambda_multiplier, a.lambda_clamp, a.cgpo_iterations, a.guidance, a.mapping, a.pgd_step, a.pgd_eps)


def mixed_noise(eps: torch.Tensor, delta: torch.Tensor, alpha_bar: torch.Tensor, s: CGPOSettings) -> torch.Tensor:
    """The noise the model must predict: eps' (rbgm) or eps + delta * min(sqrt(ab/(1-ab)), 10) (linf-pgd)."""
    if s.mapping == "linf-pgd":
        scale = (alpha_bar.sqrt() / (1.0 - alpha_bar).sqrt()).clamp(max=10.0)
        return eps + _rows(scale, eps) * delta
    lam = _rows(lambda_t(alpha_bar, s.multiplier, s.clamp), eps)
    return (1.0 - lam * lam).sqrt() * eps + lam * delta


def diffuse(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """DDPM eq. 4 with given noise: sqrt(ab) x0 + sqrt(1 - ab) noise."""
    return _rows(alpha_bar.sqrt(), x0) * x0 + _rows((1.0 - alpha_bar).sqrt(), x0) * noise


def one_step_x0(x_t: torch.Tensor, eps_pred: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """DDPM eq. 15 rearranged: x0_hat = (x_t - sqrt(1 - ab) eps_theta) / sqrt(ab)."""
    return (x_t - _rows((1.0 - alpha_bar).sqrt(), x_t) * eps_pred) / _rows(alpha_bar.sqrt(), x_t)


def cross_entropy_fixed_order(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy ``logsumexp(z) - z_y`` whose sum over classes runs in one fixed
    order (class 0, 1, ...), so it rounds the same whatever SIMD width ATen picks for this CPU
    (docs/science.md, "ADDT across machines"): ``F.cross_entropy`` reduces with the vector width
    of the machine (AVX2: 8 floats, AVX-512: 16), which moves the loss by ~1e-7, the gradient
    CGPO accumulates by ~1e-6, and so the rank order RBGM lays delta out in."""
    z = logits - logits.detach().amax(1, keepdim=True)  # exact; the max only keeps exp in range
    e = z.exp()
    total = e[:, 0]
    for k in range(1, e.shape[1]):
        total = total + e[:, k]
    return total.log() - z.gather(1, y[:, None]).squeeze(1)


def guidance_loss(eps_model, classifier, x0, y, t, alpha_bar, eps, delta, s: CGPOSettings) -> torch.Tensor:
    """Per-example objective CGPO ascends: classifier CE on x0_hat (in [0, 1]) or the denoising MSE."""
    target = mixed_noise(eps, delta, alpha_bar, s)
    x_t = diffuse(x0, target, alpha_bar)
    eps_pred = eps_model(x_t, t)
    if s.guidance == "mse":
        return (eps_pred - target).pow(2).flatten(1).mean(1)
    x0_hat = one_step_x0(x_t, eps_pred, alpha_bar)
    return cross_entropy_fixed_order(classifier((x0_hat + 1.0) * 0.5), y)


@dataclass
class CGPOResult:
    delta: torch.Tensor
    loss_first: float  # objective at the random start (mean over the batch)
    loss_last: float  # objective at the last iterate's delta, before its final mapping


def cgpo(eps_model, classifier, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, uids: torch.Tensor,
         alpha_bar: torch.Tensor, seed: int, s: CGPOSettings,
         dropout_seed: Callable[[int], int] | None = None) -> CGPOResult:
    """Algorithm of the module docstring; ``alpha_bar`` = ab_t per sample [B]. Noise addresses:
    delta_0 and the RBGM draws on stream ADDT_DELTA (steps 0, 1..K), the per-iteration eps on
    stream ADDT_NOISE (steps 1..K; step 0 is left for the training update). A model in train
    mode draws its dropout masks of iteration k from ``dropout_seed(k)`` (k = 1..K), addressed by
    uid (``models/dropout.py``)."""
    delta_stream, eps_stream = noise_mod.stream(noise_mod.ADDT_DELTA), noise_mod.stream(noise_mod.ADDT_NOISE)
    if s.mapping == "linf-pgd":
        delta = torch.zeros_like(x0)
    else:
        delta = ops.normal(x0.shape, seed, delta_stream, uids, 0, x0.dtype)
    g = torch.zeros_like(x0)
    losses = []
    for k in range(s.iterations):
        eps = ops.normal(x0.shape, seed, eps_stream, uids, 1 + k, x0.dtype)
        d = delta.detach().requires_grad_(True)
        masks = dropout_addresses(dropout_seed(1 + k), DROPOUT_STREAM, uids) if dropout_seed else nullcontext()
        with masks:
            loss = guidance_loss(eps_model, classifier, x0, y, t, alpha_bar, eps, d, s)
        grad = torch.autograd.grad(loss.sum(), d)[0]
        losses.append(loss.detach().mean())  # read back once at the end: no device sync per iteration
        if s.mapping == "linf-pgd":  # [0, 1] units -> [-1, 1] units: x2; x0 + delta stays an image
            delta = (delta + 2 * s.pgd_step * grad.sign()).clamp(-2 * s.pgd_eps, 2 * s.pgd_eps)
            delta = torch.maximum(torch.minimum(delta, 1.0 - x0), -1.0 - x0)
        else:
            g = g + grad
            delta = ops.rbgm(g, seed, delta_stream, uids, 1 + k)
    return CGPOResult(delta.detach(), float(losses[0]), float(losses[-1]))
