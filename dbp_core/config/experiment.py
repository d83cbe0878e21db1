"""The experiment: its top-level fields (name, seed, device, threads, stages), its sections and
``[output]``, and the rules across sections (unique attack names, normalisation against the
dataset's channels, a purifier where the stages need one, a gradient through the chain where
an attack or analysis differentiates through it). :func:`json_schema` gives it to forms."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ..attacks.names import CHAIN_GRADIENTS
from ..attacks.registry import GRADIENTS, KINDS
from ..models.registry import CHANNELS as DATASET_CHANNELS
from ..plugins import is_import_path, resolve_import_path
from ..purifier.registry import GRAD_MODES
from ..stages.registry import PURIFYING_PROTOCOLS, stage_names
from .attacks import AttackConfig, check_attack_against_dataset
from .errors import FieldError, did_you_mean
from .fields import Section
from .inputs import DataConfig, ModelsConfig
from .purifier import PurifierConfig
from .stages import ADDTConfig, AnalysisConfig, AuditConfig, EvaluationConfig

MAX_THREADS = 1024  # torch's thread pools; more than the CPUs of the machine is refused by dbp check


class OutputConfig(Section):
    runs_dir: Optional[str] = Field(None, description="Run store root (default: --runs-dir, $DBP_RUNS_DIR, ./runs)")
    checkpoint_every: int = Field(1, ge=1, description="Checkpoint every N batches / training steps")


class ExperimentConfig(Section):
    name: str = Field(..., description="Experiment name (used in run ids)")
    description: str = Field("", description="What the experiment reproduces")
    seed: int = Field(0, ge=0, lt=2**63, description="Master seed; every noise seed is derived from it")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="'auto' = cuda when available; "
                                                   "'cuda' is checked against the devices torch sees "
                                                   "(by dbp check / dbp run)")
    threads: Optional[int] = Field(None, ge=1, le=MAX_THREADS, description="Intra-op CPU threads of torch for the "
                                   "run (default: torch's own choice, usually one per core; dbp check also refuses "
                                   "more than this machine's CPUs)")
    stages: list[str] = Field(default_factory=lambda: ["evaluate"],
                              description="Stages run in order (see dbp_core.stages)")
    data: DataConfig = Field(default_factory=DataConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    purifier: PurifierConfig = Field(default_factory=PurifierConfig)
    attacks: list[AttackConfig] = Field(default_factory=list)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    addt: ADDTConfig = Field(default_factory=ADDTConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    _base_dir: Optional[str] = PrivateAttr(None)  # folder relative paths resolve against

    def resolve_path(self, value: str) -> Path:
        """A path from this config, resolved against the config file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(self._base_dir or os.getcwd()) / path

    def plugin_paths(self) -> dict[str, str]:
        """Every field that names user code by an import path, ``{field: "package.module:callable"}``
        (data.dataset, models.classifier, models.diffusion, attacks[i].kind, stages[j]), in that order."""
        fields = {"data.dataset": self.data.dataset, "models.classifier": self.models.classifier,
                  "models.diffusion": self.models.diffusion}
        fields.update({f"attacks[{i}].kind": a.kind for i, a in enumerate(self.attacks)})
        fields.update({f"stages[{j}]": s for j, s in enumerate(self.stages)})
        return {k: v for k, v in fields.items() if is_import_path(v)}

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", v):
            raise ValueError("expected 1-64 characters: letters, digits, '_', '.', '-' (it becomes part of run ids)")
        return v

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: list[str]) -> list[str]:
        known = stage_names()
        for s in v:
            if s not in known and not is_import_path(s):
                raise ValueError(f"unknown stage '{s}'; expected one of {', '.join(known)} or an import path"
                                 + did_you_mean(s, known))
            if is_import_path(s):
                resolve_import_path(s)
        if len(set(v)) != len(v):
            raise ValueError("a stage is listed twice")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "ExperimentConfig":
        names = [a.name for a in self.attacks]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise FieldError(("attacks", i, "name"), n, "attack names must be unique")
        channels = DATASET_CHANNELS.get(self.data.dataset)
        if channels and self.models.mean is not None and len(self.models.mean) not in (1, channels):
            raise FieldError(("models", "mean"), self.models.mean,
                             f"1 or {channels} values (dataset '{self.data.dataset}' has {channels} channels)")
        for i, a in enumerate(self.attacks):
            check_attack_against_dataset(a, i, self.data.dataset)
        for section, attack in (("analysis", self.analysis.attack), ("audit", self.audit.attack)):
            if attack is not None and attack not in names:
                raise FieldError((section, "attack"), attack,
                                 "the name of one of the [[attacks]]" + did_you_mean(attack, names))
        if "audit" in self.stages and not self.attacks:
            raise FieldError("stages", self.stages, "stage 'audit' audits an attack: add an [[attacks]] entry")
        if (self.analysis.trajectory or self.analysis.landscape) and not self.attacks:
            field = "trajectory" if self.analysis.trajectory else "landscape"
            raise FieldError(("analysis", field), True, "analyses follow an attack: add an [[attacks]] entry")
        if self.purifier.grad_mode == "none" and self.models.diffusion != "none":
            users = _chain_gradient_users(self)
            if users:
                modes = " or ".join(f"'{m}'" for m in GRAD_MODES if m != "none")
                chain_free = " or ".join(f"'{g}'" for g in GRADIENTS if g not in CHAIN_GRADIENTS)
                only_exact = [k.name for k in KINDS.values() if not set(k.gradients) - set(CHAIN_GRADIENTS)]
                raise FieldError(("purifier", "grad_mode"), "none", f"{modes}: grad_mode 'none' gives no gradient "
                                 "through the purifier, and " + "; ".join(users) + " differentiate through it (or "
                                 f"give the attacks a gradient that runs no backward through the chain, {chain_free}; "
                                 f"{' and '.join(only_exact)} take(s) only 'exact')")
        if self.purifier.precision == "tf32" and self.device == "cpu":
            raise FieldError(("purifier", "precision"), "tf32", "'fp32' or 'bf16': tf32 is a CUDA matmul mode, and "
                             "device = 'cpu'")
        if self.models.diffusion == "none":
            needs = [p for p in self.evaluation.protocols if p in PURIFYING_PROTOCOLS]
            # the default list is fine (the stages skip what needs purification): a run's frozen
            # config.toml spells every default out and must load again on resume
            default = EvaluationConfig.model_fields["protocols"].get_default(call_default_factory=True)
            if needs and "protocols" in self.evaluation.model_fields_set and self.evaluation.protocols != default:
                raise FieldError(("evaluation", "protocols"), needs,
                                 "protocols without purification, since models.diffusion = 'none'")
            if self.addt.enabled:
                raise FieldError(("addt", "enabled"), True, "a diffusion model (models.diffusion is 'none')")
            purifying = [s for s in ("attacks", "analysis", "addt", "audit") if s in self.stages]
            if purifying:  # each of them attacks, analyses or fine-tunes the purifier
                raise FieldError(("models", "diffusion"), "none", "a diffusion model: stage "
                                 + ", ".join(f"'{s}'" for s in purifying) + " needs the purifier (or remove the "
                                 "stage; 'evaluate' alone runs without one)")
            for i, a in enumerate(self.attacks):
                if a.kind == "diffattack":
                    raise FieldError(("attacks", i, "kind"), a.kind, "a diffusion model: DiffAttack's loss reads "
                                     "the purifier's intermediate states (models.diffusion is 'none')")
        return self


def _chain_gradient_users(cfg: ExperimentConfig) -> list[str]:
    """What of ``cfg`` differentiates through the reverse chain (needs a purifier.grad_mode other than
    'none'): built-in attacks whose gradient is exact (attacks/gradients.py: bpda, blind and
    forward-only run no backward through the chain; a plugin attack is called by dbp check instead),
    the analyses (EOT gradients of the defended model) and the audit's gradient-approximations check
    (the attack again with gradient 'exact')."""
    users = [f"attack '{a.name}' ({a.kind}, gradient = '{a.gradient}')" for a in cfg.attacks
             if a.kind in KINDS and a.gradient in CHAIN_GRADIENTS]
    users += [f"analysis.{name} = true" for name in ("trajectory", "landscape") if getattr(cfg.analysis, name)]
    if "audit" in cfg.stages and "gradient-approximations" in cfg.audit.checks:
        users.append("audit.checks 'gradient-approximations' (the audited attack with gradient 'exact')")
    return users


def json_schema() -> dict:
    """JSON Schema of an experiment (titles, descriptions, bounds, defaults) for forms."""
    return ExperimentConfig.model_json_schema()
