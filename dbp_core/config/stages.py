"""The sections of the stages after the attacks: ``[evaluation]`` (protocols, repurifications,
seeds, confidence), ``[addt]`` (fine-tuning, as the authors' script LYMDLUT/ADDT
``train_ADDT.py``: lr 2e-4 constant, AdamW (0.95, 0.999), weight decay 1e-6, EMA 0.9999 / power
0.75, lambda 0.03 clamped at 0.3, 5 CGPO iterations in train mode, dropout 0.1), ``[analysis]``
(trajectories, loss landscapes) and ``[audit]`` (docs/results.md, "The audit")."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import AliasChoices, Field, field_validator

from ..stages.registry import DEFAULT_PROTOCOLS, PROTOCOLS
from .fields import Section, listed_once, no_bool, tuple_from_list


class EvaluationConfig(Section):
    protocols: list[Literal[PROTOCOLS]] = Field(
        default_factory=lambda: list(DEFAULT_PROTOCOLS),
        description="clean / purified: accuracy without attack; undefended: the bare classifier under the same "
        "attack; single: one fresh purification per adversarial example (the paper); repurify: average and "
        "worst case over n_repurify purifications; majority: majority vote over them; fresh-noise: DW-box "
        "examples evaluated under fresh noise")
    n_repurify: int = Field(10, ge=1, description="Purifications per example for repurify / majority")
    seeds: int = Field(1, ge=1, description="Attack repeats with different seeds, pooled")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the reported intervals")

    @field_validator("protocols")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return listed_once(v, "protocol")


class ADDTConfig(Section):
    enabled: bool = Field(False, description="Run adversarial denoising diffusion training")
    steps: int = Field(800, ge=1, description="Fine-tuning steps")
    batch_size: int = Field(32, ge=1, description="Global training batch: all processes together (under "
                            "torchrun each takes its share); the authors: 32 per GPU x 8 GPUs = 256")
    lr: float = Field(2e-4, gt=0, le=1, description="Learning rate (constant, as the authors; after the warm-up "
                      "if warmup_steps > 0)")
    warmup_steps: int = Field(0, ge=0, validation_alias=AliasChoices("warmup_steps", "warmup"),
                              description="Linear warm-up steps of the learning rate (the authors: none, their "
                              "'constant' scheduler ignores --lr_warmup_steps; old name: warmup)")
    betas: tuple[float, float] = Field((0.95, 0.999), description="AdamW betas")
    weight_decay: float = Field(1e-6, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clip")
    ema: bool = Field(True, description="Keep an EMA of the weights (used for evaluation)")
    ema_max_decay: float = Field(0.9999, gt=0, lt=1, description="EMA maximum decay")
    ema_power: float = Field(0.75, gt=0, description="EMA warm-up power")
    lambda_multiplier: float = Field(0.03, ge=0, description="lambda_t = clamp(m * sqrt(ab)/sqrt(1-ab), 0, clamp); "
                                     "0 = plain Gaussian fine-tuning (the control)")
    lambda_clamp: float = Field(0.3, ge=0, lt=1, description="Upper clamp of lambda_t (must be < 1)")
    t_range: Literal["full", "purification"] = Field(
        "full", description="Sample t in 0..T-1 ('full', the paper) or only t <= t* ('purification')")
    cgpo_iterations: int = Field(5, ge=1, description="CGPO iterations per batch")
    guidance: Literal["classifier", "mse"] = Field("classifier", description="CGPO objective (ablation: 'mse')")
    mapping: Literal["rbgm", "linf-pgd"] = Field("rbgm", description="Perturbation mapping (ablation: 'linf-pgd')")
    pgd_step: float = Field(4 / 255, gt=0, le=1, description="Step of the linf-pgd mapping, [0,1] units")
    pgd_eps: float = Field(8 / 255, gt=0, le=1, description="Clip of the linf-pgd mapping, [0,1] units")
    hflip: Optional[bool] = Field(None, description="Random horizontal flip (default: on for cifar10, off for digits)")
    control: bool = Field(False, description="Also train the lambda = 0 control on the same data and seeds")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout probability set in every dropout layer of the "
                           "diffusion model while it is fine-tuned, masks addressed by example (the authors: 0.1)")
    cgpo_train_mode: bool = Field(True, description="CGPO probes the model in train mode, dropout active (the "
                                  "authors'); false: in eval mode")

    _betas_tuple = field_validator("betas", mode="before")(tuple_from_list)

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("each beta must be in [0, 1)")
        return v


class AnalysisConfig(Section):
    trajectory: bool = Field(False, description="Record gradient cosine similarities / variance along attacks")
    landscape: bool = Field(False, description="Loss landscape around x (fixed vs fresh noise)")
    attack: Optional[str] = Field(None, description="Name of the attack analysed (default: the first)")
    examples: int = Field(4, ge=1, description="Examples analysed")
    landscape_dims: Literal[1, 2] = Field(2, description="1-D or 2-D grid")
    landscape_grid: int = Field(21, ge=3, le=201, description="Grid points per axis")
    landscape_radius: Optional[float] = Field(None, gt=0, description="Grid half-width in [0,1] pixel units "
                                              "(default: 2 x the attack's eps)")

    _dims_not_bool = field_validator("landscape_dims", mode="before")(no_bool)


AUDIT_CHECKS = ("large-eps", "more-iterations", "more-eot", "gradient-approximations", "random-noise",
                "eot-convergence", "transfer", "zero-gradients")


class AuditConfig(Section):
    attack: Optional[str] = Field(None, description="Name of the attack audited (default: the first)")
    examples: int = Field(64, ge=1, description="Examples audited: the first of the run's (each check re-runs "
                          "the attack on them)")
    checks: list[Literal[AUDIT_CHECKS]] = Field(
        default_factory=lambda: list(AUDIT_CHECKS),
        description="The checks run (docs/results.md, \"The audit\"): large-eps, more-iterations, more-eot, "
        "gradient-approximations, random-noise, eot-convergence, transfer, zero-gradients")
    large_eps: Optional[float] = Field(None, gt=0, description="The very large budget of check large-eps "
                                       "(default: 1 for Linf, the diameter of the image space for L2)")
    large_eps_accuracy: float = Field(0.1, ge=0, le=1, description="large-eps is raised when robust accuracy "
                                      "stays above this")
    noise_samples: int = Field(10, ge=1, description="random-noise: random points per example; the example "
                               "counts as broken if any is misclassified")
    eot_ks: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64],
                              description="eot-convergence: the EOT sizes K whose independent estimates are compared")
    cosine: float = Field(0.9, gt=0, lt=1, description="eot-convergence: the cosine the estimates must reach")
    eot_limit: int = Field(1000, ge=1, description="eot-convergence is raised when the estimates would reach "
                           "`cosine` only beyond this many draws (extrapolated with the 1/K law) or do not "
                           "improve with K")

    @field_validator("checks")
    @classmethod
    def _unique_checks(cls, v: list[str]) -> list[str]:
        return listed_once(v, "check")

    @field_validator("eot_ks")
    @classmethod
    def _ks(cls, v: list[int]) -> list[int]:
        if not v or any(isinstance(k, bool) or k < 1 for k in v) or sorted(set(v)) != v:
            raise ValueError("expected increasing EOT sizes >= 1, e.g. [1, 2, 4, 8]")
        return v
