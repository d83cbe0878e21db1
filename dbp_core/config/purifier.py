"""The ``[purifier]`` section: t*, the sampler and its options, how attacks differentiate through
the chain, GDMP guidance, the network's arithmetic and memory budget. The names it takes come
from ``purifier/registry.py``; an option of another sampler than the one set is an error that
says whose option it is."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from ..purifier.registry import (DISCRETE_SAMPLERS, GRAD_MODES, GUIDANCE_TARGETS, MAX_MEMORY_BUDGET, PRECISIONS,
                                 RESPACINGS, SAMPLERS, VARIANCES)
from .errors import FieldError
from .fields import Section


class PurifierConfig(Section):
    t_star: float = Field(0.1, gt=0, le=1, description="Diffusion time purified to, as a fraction of the "
                          "training steps (DiffPure: 0.1 = 100 of 1000)")
    steps: int = Field(100, ge=1, description="Reverse steps from t* to 0 (respaced; 100 = the full chain at "
                       "t*=0.1; vpsde/vpode: Euler steps of t*/steps, DiffPure's 1e-3 at 1000 t*)")
    sampler: Literal[SAMPLERS] = Field(
        "ddpm", description="'ddpm' (stochastic reverse), 'ddim' (with eta), 'vpsde' (DiffPure's reverse VP-SDE, "
        "Euler-Maruyama) or 'vpode' (the probability-flow ODE, Euler)")
    grad_mode: Literal[GRAD_MODES] = Field(
        "checkpoint", description="How attacks differentiate through the chain: 'checkpoint' per step "
        "(default: one image kept per step), 'full' autograd (every step's activations), 'segments' "
        "(~2 sqrt(steps) images kept, 1.2-1.3x checkpoint's time: for long chains at large batches), or 'none'")
    segments: Optional[int] = Field(None, ge=1, description="Checkpointed segments when grad_mode = 'segments' "
                                    "(default ceil(sqrt(steps)): memory ~ 2 sqrt(steps) images)")
    variance: Literal[VARIANCES] = Field(
        "fixed_large", description="Reverse variance of 'ddpm': 'fixed_large' (beta_t, as DiffPure), 'fixed_small' "
        "(posterior) or 'learned' (a guided-diffusion network's [eps, v] output)")
    eta: float = Field(0.0, ge=0, le=1, description="DDIM's eta (sampler 'ddim'): 0 = deterministic, 1 = the DDPM "
                       "posterior variance")
    clip_denoised: bool = Field(False, description="Clip the predicted x_0 to [-1, 1] in every step ('ddpm', "
                                "'ddim'; as guided-diffusion's clip_denoised and diffusers' clip_sample)")
    clamp_output: bool = Field(False, description="Clamp the purified image to [0, 1] before the classifier")
    guidance_scale: float = Field(0.0, ge=0, description="GDMP guidance toward the input (sampler 'ddpm'): "
                                  "GDMP's guide_scale (60000 CIFAR-10, 1000 ImageNet); 0 = no guidance")
    guidance_eps: float = Field(8 / 255, gt=0, le=1, description="GDMP's ptb/255, the [0, 1] budget in its "
                                "scale m = (2 eps / 3) / guide_scale (8/255 CIFAR-10, 4/255 ImageNet)")
    guidance_target: Literal[GUIDANCE_TARGETS] = Field(
        "noised", description="GDMP's guidance target: the input re-noised to each step ('noised', CIFAR-10) or "
        "the input itself ('clean', ImageNet)")
    precision: Literal[PRECISIONS] = Field(
        "fp32", description="The noise network's arithmetic: 'fp32' (default: exact gradients), 'bf16' (autocast, "
        "CPU and GPU) or 'tf32' (TF32 matmuls, CUDA only); the chain's steps stay in float32 (docs/performance.md: "
        "the measured cost of bf16)")
    respacing: Literal[RESPACINGS] = Field(
        "t_star", description="'ddpm'/'ddim' timesteps: `steps` spread over the t* range ('t_star'), or `steps` "
        "respaced over all 1000 as guided-diffusion's timestep_respacing, the chain starting at the last kept "
        "step below t* ('global': GDMP on ImageNet, steps = 250, t_star = 0.178)")
    memory_budget: Optional[float] = Field(
        None, gt=0, description="GB the gradient through the chain may add to the allocator's peak: each step's "
        "recomputation runs in micro-batches that fit, and the last steps keep their forward graphs when there "
        "is room (toward 'full' speed); the plan and the measured peak go to log.txt. Default: no budget")
    compile: bool = Field(False, description="torch.compile the noise network (inductor; the first call compiles)")

    @field_validator("memory_budget")
    @classmethod
    def _budget_bound(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and not v <= MAX_MEMORY_BUDGET:  # inf too
            raise ValueError(f"at most {MAX_MEMORY_BUDGET:.0f} GB (1 PiB, more than any machine has); leave "
                             "memory_budget out for no budget")
        return v

    @model_validator(mode="after")
    def _sampler_options(self) -> "PurifierConfig":
        sampler = f'sampler = "{self.sampler}"'
        discrete = " / ".join(f"'{s}'" for s in DISCRETE_SAMPLERS)
        discrete_fix = "set sampler = " + " or ".join(f'"{s}"' for s in DISCRETE_SAMPLERS)
        if self.eta != 0 and self.sampler != "ddim":
            raise _option_of("eta", self.eta, "an option of the 'ddim' sampler", sampler, 'set sampler = "ddim"')
        if self.variance != "fixed_large" and self.sampler != "ddpm":
            raise _option_of("variance", self.variance, "an option of the 'ddpm' sampler", sampler,
                             'set sampler = "ddpm"')
        if self.respacing != "t_star" and self.sampler not in DISCRETE_SAMPLERS:
            raise _option_of("respacing", self.respacing, f"an option of the {discrete} samplers (it respaces their "
                             "timesteps)", f"{sampler} has no discrete timesteps", discrete_fix)
        if self.clip_denoised and self.sampler not in DISCRETE_SAMPLERS:
            raise _option_of("clip_denoised", True, f"an option of the {discrete} samplers (it clips their "
                             "predicted x_0)", f"{sampler} predicts no x_0", discrete_fix)
        if self.guidance_scale > 0 and self.sampler != "ddpm":
            raise _option_of("guidance_scale", self.guidance_scale, "an option of the 'ddpm' sampler (GDMP guidance "
                             "guides its step)", sampler, 'set sampler = "ddpm"')
        if self.guidance_scale == 0:
            defaults = PurifierConfig.model_fields
            for name in ("guidance_eps", "guidance_target"):
                if getattr(self, name) != defaults[name].default:
                    raise _option_of(name, getattr(self, name), "an option of GDMP guidance",
                                     "guidance is off (guidance_scale = 0)", "set guidance_scale > 0")
        return self


def _option_of(name: str, value: Any, whose: str, instead: str, fix: str) -> "FieldError":
    """The error for ``name`` set where it does nothing: whose option it is, what is set instead,
    and both ways out ('eta is an option of the 'ddim' sampler, and sampler = "ddpm"; set
    sampler = "ddim" to use it, or remove eta')."""
    return FieldError(name, value, f"{name} is {whose}, and {instead}; {fix} to use it, or remove {name}")
