"""Experiment configuration: a TOML file → a typed, validated ``ExperimentConfig``.

Validation is pydantic v2 (``extra="forbid"`` everywhere); this module only adds
what pydantic does not do: paths resolved against the TOML's folder, import
paths (``package.module:callable``) resolved and checked at validation time,
cross-field rules (eps ≤ 1 for Linf, DW-box has EOT 1, …), ``--set``
overrides, and one error type, :class:`ConfigError`, whose message names the
file, the dotted field path (``attacks[0].eps``), the value given and what was
expected — with a "did you mean" suggestion for unknown keys.

Defaults follow DiffPure / the paper (docs/science.md) for CIFAR-10:
t* = 0.1; the attacks' are those of ``attacks/names.py`` (``KIND_DEFAULTS``: the paper's budgets
and steps, docs/science.md "Attacks"); ADDT as the authors' script (LYMDLUT/ADDT, ``train_ADDT.py``): lr 2e-4
constant (no warm-up), AdamW (0.95, 0.999), weight decay 1e-6, EMA 0.9999 / power 0.75,
lambda 0.03 clamped at 0.3, 5 CGPO iterations with the model in train mode, dropout 0.1.
Field descriptions and bounds are kept in the models
(``json_schema()`` / ``ExperimentConfig.model_fields``) for the console's form.

This module is the schema only: option names come from the light registries
(``attacks/registry.py``, ``purifier/registry.py``, ``models/registry.py``,
``stages/registry.py``), and it imports neither torch nor the runner, so the console
validates a TOML without loading either. Checks that need torch or the files a config names
(a CUDA device, checkpoint contents) are made by ``dbp_core.preflight`` before a run.
"""
from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

from pydantic import (AliasChoices, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo,
                      PrivateAttr, field_validator, model_validator)

from .attacks.names import CHAIN_GRADIENTS
from .attacks.registry import (EPS, GRADIENTS, KINDS, LOSSES, NOISE_KNOWLEDGE, NORMS, OPTIONAL_FIELDS, PLUGIN,
                               SELECTIONS, SHARED_DEFAULTS, default_text, defaults as attack_defaults, kind_names,
                               number_text, plugin_noise)
from .models.registry import (CHANNELS as DATASET_CHANNELS, CLASSES as DATASET_CLASSES, IMAGE_SIZES,
                              CLASSIFIER_ARCHS, CLASSIFIER_FORMATS, DATASETS, DIFFUSION_ARCHS, DIFFUSION_CONFIG_KEYS,
                              DIFFUSION_FORMATS, DIFFUSION_WEIGHTS,
                              SPLIT_SIZES, SPLITS)
from .plugins import is_import_path, resolve_import_path
from .purifier.registry import (DISCRETE_SAMPLERS, GRAD_MODES, GUIDANCE_TARGETS, MAX_MEMORY_BUDGET, PRECISIONS,
                                RESPACINGS, SAMPLERS, VARIANCES)
from .stages.registry import DEFAULT_PROTOCOLS, PROTOCOLS, PURIFYING_PROTOCOLS, stage_names

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConfigError", "ExperimentConfig", "DataConfig", "ModelsConfig", "PurifierConfig",
    "AttackConfig", "EvaluationConfig", "ADDTConfig", "AnalysisConfig", "AuditConfig", "OutputConfig",
    "load_config", "loads_config", "validate_config", "save_config", "dumps_config",
    "apply_overrides", "parse_grid", "MAX_GRID_POINTS", "value_key", "grid_value_problem", "json_schema",
    "is_import_path", "resolve_import_path", "plain_problems", "subset_problem", "MAX_DEPTH",
    "ATTACK_KINDS", "PROTOCOLS",
]

ATTACK_KINDS = kind_names()
MAX_THREADS = 1024  # torch's thread pools; more than the CPUs of the machine is refused by dbp check


# --------------------------------------------------------------------------- errors

class ConfigError(ValueError):
    """A configuration is invalid. ``errors`` holds one dict per problem:
    ``{"path": "attacks[0].eps", "message": ..., "value": ...}``; ``file`` the source."""

    def __init__(self, file: str | os.PathLike | None, errors: list[dict[str, Any]]):
        self.file = str(file) if file is not None else None
        self.errors = errors
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.file or "<config>"
        if len(self.errors) == 1:
            e = self.errors[0]
            return f"{where}: {e['path'] or '<top level>'}: {e['message']}"
        lines = [f"{where}: {len(self.errors)} errors"]
        lines += [f"  {e['path'] or '<top level>'}: {e['message']}" for e in self.errors]
        return "\n".join(lines)


def _fmt_value(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def format_loc(loc: tuple) -> str:
    """('attacks', 0, 'eps') → 'attacks[0].eps'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# --------------------------------------------------------------------------- helpers

def _config_path(value: str, info: ValidationInfo) -> Path:
    """A path of the config: ``~`` expanded, a relative one taken from the config file's folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else _base_dir(info) / path


def _listed_once(values: list[str], what: str) -> list[str]:
    """``values`` if no entry repeats; else ValueError naming the repeated ones."""
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise ValueError(f"{what} listed twice: {', '.join(dup)}")
    return values


def _base_dir(info: ValidationInfo) -> Path:
    ctx = info.context or {}
    return Path(ctx.get("base_dir") or os.getcwd())


def _check_model_ref(value: str, info: ValidationInfo, *, keywords: tuple[str, ...],
                     what: str, allow_dir: bool) -> str:
    """A model reference: a keyword, an import path, or a path (relative to the TOML folder)."""
    if value in keywords:
        return value
    if is_import_path(value):
        resolve_import_path(value)
        return value
    if not value.strip():
        raise ValueError(f"expected {' / '.join(repr(k) for k in keywords)}, a {what} path "
                         "or an import path 'package.module:callable'")
    path = _config_path(value, info)
    if not (path.exists() or path.with_suffix(".json").is_file()):  # dbp checkpoints may be named by stem
        raise ValueError(f"{what} '{path}' does not exist (relative paths are resolved against "
                         f"the config file's folder; expected {' / '.join(repr(k) for k in keywords)}, "
                         "an existing path or 'package.module:callable')")
    if path.is_dir() and not allow_dir:
        raise ValueError(f"{what} '{path}' is a folder, expected a checkpoint file")
    return value


class _Section(BaseModel):
    # strict: no lax coercion (true -> 1, "100" -> 100, 1 -> true); an int is still accepted where a
    # float is expected, and tuple fields take a TOML array (see _tuple_from_list)
    # every number must be finite: nan / inf (valid TOML) would pass every bound and give 0% or a crash
    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True, allow_inf_nan=False)


def _tuple_from_list(v: Any) -> Any:
    """TOML has arrays, not tuples: a list becomes a tuple (its items are still validated strictly)."""
    return tuple(v) if isinstance(v, list) else v


def _no_bool(v: Any) -> Any:
    """Literal[1, 2] would accept True/False as 1/0 (bool is an int subclass) even in strict mode."""
    if isinstance(v, bool):
        raise ValueError("expected an integer, not a boolean")
    return v


# --------------------------------------------------------------------------- sections

class DataConfig(_Section):
    dataset: str = Field("digits", description="'digits' (embedded scikit-learn digits, 8x8), 'cifar10' "
                         "(local cifar-10-batches-py folder in `root`), 'imagenet' (local folder of <wnid>/*.JPEG "
                         "class folders in `root`) or an import path returning an ImageSet")
    root: Optional[str] = Field(None, description="Dataset folder (cifar10, imagenet); relative to the config file")
    split: Literal[SPLITS] = Field("test", description="Which split to evaluate on")
    n_examples: Optional[int] = Field(None, ge=1, description="How many examples (default: all; the paper: 1024)")
    first: int = Field(0, ge=0, description="Index of the first example (order = 'first') ")
    order: Literal["first", "random", "diffpure"] = Field(
        "first", description="'first': examples first..first+n-1; 'random': a seeded random subset; 'diffpure': "
        "DiffPure's evaluation subset, numpy RandomState(subset_seed).choice(N, n_examples, replace=False)")
    subset_seed: int = Field(0, ge=0, lt=2**32, description="order = 'diffpure': DiffPure's --data_seed (0..7 for "
                             "CIFAR-10, 0..31 for ImageNet in its scripts)")
    class_index: Optional[str] = Field(None, description="imagenet: the class-index file, imagenet_class_index.json "
                                       "({\"0\": [\"n01440364\", \"tench\"], ...}) or a text file of wnids, one per "
                                       "line in class order (default: imagenet_class_index.json in `root` or its parent, "
                                       "else the sorted folder names when there are 1000); relative to the config file")
    image_size: Optional[int] = Field(None, ge=8, description="imagenet: side of the center crop (default 256, the "
                                      "guided-diffusion model's)")
    resize: Optional[int] = Field(None, ge=8, description="imagenet: the shorter side is resized to this before the "
                                  "crop (default: image_size; torchvision's eval transform: 256 then a 224 crop)")
    batch_size: int = Field(64, ge=1, description="Examples per batch (results do not depend on it)")

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        if v in DATASETS:
            return v
        if is_import_path(v):
            resolve_import_path(v)
            return v
        hint = difflib.get_close_matches(v, DATASETS, n=1)
        raise ValueError(f"unknown dataset; expected one of {', '.join(DATASETS)} or an import path "
                         "'package.module:callable'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))

    @field_validator("root")
    @classmethod
    def _root(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        if v is None:
            return v
        path = _config_path(v, info)
        if path.exists() and not path.is_dir():
            raise ValueError(f"'{path}' is a file, not a folder; expected the dataset folder")
        if not path.is_dir():
            raise ValueError(f"dataset folder '{path}' does not exist (relative to the config file's folder)")
        return v

    @field_validator("class_index")
    @classmethod
    def _class_index(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        if v is None:
            return v
        path = _config_path(v, info)
        if path.is_dir():
            raise ValueError(f"'{path}' is a folder, not a file; expected the class-index file "
                             "(imagenet_class_index.json or a text file of wnids)")
        if not path.is_file():
            raise ValueError(f"class-index file '{path}' does not exist (relative to the config file's folder)")
        return v

    @model_validator(mode="after")
    def _needs_root(self) -> "DataConfig":
        if self.dataset == "cifar10" and self.root is None:
            raise _FieldError("root", None, "dataset 'cifar10' needs `root`, the folder holding cifar-10-batches-py "
                             "(nothing is downloaded at run time)")
        if self.dataset == "imagenet" and self.root is None:
            raise _FieldError("root", None, "dataset 'imagenet' needs `root`, the folder of <wnid>/*.JPEG class "
                             "folders (the val set; or its parent holding val/ and train/)")
        if self.dataset != "imagenet":
            for name in ("class_index", "image_size", "resize"):
                if getattr(self, name) is not None:
                    raise _FieldError(name, getattr(self, name), f"to be left out: {name} is a field of dataset 'imagenet', "
                                      f"and dataset = '{self.dataset}'")
        if self.order != "diffpure" and self.subset_seed != 0:
            raise _FieldError("subset_seed", self.subset_seed, f"0 (its default): subset_seed picks DiffPure's subset "
                              f"(order = 'diffpure'), and order = '{self.order}'")
        return self

    @model_validator(mode="after")
    def _within_split(self) -> "DataConfig":
        sizes = SPLIT_SIZES.get(self.dataset, {})
        if sizes and self.split not in sizes:
            raise _FieldError("split", self.split, f"one of {', '.join(sizes)} (the splits of {self.dataset})")
        size = sizes.get(self.split)
        where = f"{self.dataset}/{self.split} has {size} examples"
        problem = None if size is None else subset_problem(self, size, where)
        if problem:
            raise _FieldError(*problem)
        return self


def subset_problem(data: DataConfig, size: int, where: str) -> tuple[str, Any, str] | None:
    """``(field of [data], value, what was expected)`` when the examples ``data`` asks for (``first``,
    ``n_examples``, ``order``) do not fit a split of ``size`` examples (``where`` says whose), else None.
    The schema checks the built-in splits; ``dbp check`` checks an image folder's count with it."""
    if data.order in ("random", "diffpure"):
        if data.n_examples is not None and data.n_examples > size:
            return "n_examples", data.n_examples, f"at most {size} ({where})"
    elif data.first >= size:
        return "first", data.first, f"an index below {size} ({where})"
    elif data.n_examples is not None and data.first + data.n_examples > size:
        return "n_examples", data.n_examples, (f"data.first + data.n_examples <= {size} ({where}; data.first = "
                                               f"{data.first}, so n_examples <= {size - data.first})")
    return None


class ModelsConfig(_Section):
    classifier: str = Field("default", description="'default' (the shipped model for the dataset), a "
                            "checkpoint path, or an import path 'package.module:callable' returning an nn.Module")
    classifier_format: Literal[CLASSIFIER_FORMATS] = Field(
        "auto", description="Checkpoint format of `classifier` when it is a path: 'dbp', 'robustbench' (CIFAR-10 "
        "WideResNets), 'torchvision' (ImageNet ResNets) or 'auto' (by classifier_arch, else by the file)")
    classifier_arch: Optional[str] = Field(
        None, description="Architecture of a 'robustbench' / 'torchvision' checkpoint: " + "; ".join(
            f"{fmt}: {', '.join(names)}" for fmt, names in CLASSIFIER_ARCHS.items()) + " (default: the first)")
    mean: Optional[list[float]] = Field(None, description="Classifier input normalisation mean, per channel "
                                        "(default: none, or the default model's own)")
    std: Optional[list[float]] = Field(None, description="Classifier input normalisation std, per channel")
    diffusion: str = Field("default", description="'default', 'none' (no purification), a checkpoint file, a "
                           "diffusers folder (UNet2DModel layout) or an import path returning eps_model(x_t, t)")
    diffusion_format: Literal[DIFFUSION_FORMATS] = Field(
        "auto", description="Format of `diffusion` when it is a path: 'dbp', 'diffusers' (a folder), "
        "'guided-diffusion' (openai's UNet state dict), 'score-sde' (score_sde_pytorch's checkpoint) or 'auto' "
        "(by diffusion_arch, else by what is on disk)")
    diffusion_arch: Optional[str] = Field(
        None, description="Architecture preset of a 'guided-diffusion' / 'score-sde' checkpoint: " + "; ".join(
            f"{fmt}: {', '.join(names)}" for fmt, names in DIFFUSION_ARCHS.items()) + " (default: the first)")
    diffusion_config: Optional[dict[str, Any]] = Field(
        None, description="Architecture fields that override the preset, in the family's own names "
        "(guided-diffusion's create_model flags, score_sde's config.model fields), e.g. {num_channels = 128}")
    diffusion_weights: Optional[Literal[DIFFUSION_WEIGHTS]] = Field(
        None, description="'score-sde' training checkpoints: 'ema' (the EMA weights, as DiffPure; default) or "
        "'model' (the raw training weights)")
    trust_pickle: Union[bool, str, list[str]] = Field(
        False, description="Checkpoints that may be fully unpickled (files that store Python objects, which can run "
        "code), by the sha256 of the file: one hash or a list ('dbp check' prints the hash of a pickle it refuses); "
        "false: none. `true` (trust any file at the path) is refused, printing the hash. Not sweepable")

    @field_validator("trust_pickle", mode="before")
    @classmethod
    def _trust_pickle(cls, v: Any) -> Any:
        hashes = [v] if isinstance(v, str) else v if isinstance(v, list) else None
        if isinstance(v, bool):
            return v  # true is refused by dbp check, which can print the file's hash (preflight.py)
        if hashes is None or not all(isinstance(h, str) and re.fullmatch(r"[0-9a-fA-F]{64}", h) for h in hashes):
            raise ValueError("expected the sha256 of the pickle file you trust (64 hex digits, as `dbp check` "
                             "prints it when it refuses the file), a list of them, or false")
        return v.lower() if isinstance(v, str) else [h.lower() for h in v]

    @field_validator("classifier")
    @classmethod
    def _classifier(cls, v: str, info: ValidationInfo) -> str:
        return _check_model_ref(v, info, keywords=("default",), what="classifier checkpoint", allow_dir=False)

    @field_validator("diffusion")
    @classmethod
    def _diffusion(cls, v: str, info: ValidationInfo) -> str:
        return _check_model_ref(v, info, keywords=("default", "none"), what="diffusion checkpoint",
                                allow_dir=True)

    @field_validator("std")
    @classmethod
    def _std_positive(cls, v: Optional[list[float]]) -> Optional[list[float]]:
        if v is not None and any(s <= 0 for s in v):
            raise ValueError("every std must be > 0")
        return v

    @model_validator(mode="after")
    def _architectures(self) -> "ModelsConfig":
        for role, archs in (("classifier", CLASSIFIER_ARCHS), ("diffusion", DIFFUSION_ARCHS)):
            arch, fmt, ref = getattr(self, f"{role}_arch"), getattr(self, f"{role}_format"), getattr(self, role)
            if arch is None:
                continue
            if ref in ("default", "none") or is_import_path(ref):
                raise _FieldError(f"{role}_arch", arch, f"to be left out: it describes a checkpoint file, and models.{role} "
                                  f"= {ref!r}")
            allowed = archs.get(fmt, ()) if fmt != "auto" else tuple(a for names in archs.values() for a in names)
            if arch not in allowed:
                hint = difflib.get_close_matches(arch, allowed, n=1)
                where = (f"one of {', '.join(allowed)}" if allowed else
                         f"to be left out: format '{fmt}' fixes the architecture")
                raise _FieldError(f"{role}_arch", arch, where + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        family = self.diffusion_format if self.diffusion_format != "auto" else next(
            (f for f, names in DIFFUSION_ARCHS.items() if self.diffusion_arch in names), "auto")
        if self.diffusion_config is not None:
            keys = DIFFUSION_CONFIG_KEYS.get(family) if family != "auto" else tuple(
                sorted({k for ks in DIFFUSION_CONFIG_KEYS.values() for k in ks}))
            if keys is None:
                raise _FieldError("diffusion_config", self.diffusion_config,
                                  f"to be left out: it overrides a 'guided-diffusion' or 'score-sde' architecture, and "
                                  f"diffusion_format = '{family}'")
            for key in self.diffusion_config:
                if key not in keys:
                    hint = difflib.get_close_matches(key, keys, n=1)
                    raise _FieldError(("diffusion_config", key), self.diffusion_config[key],
                                      f"a field of the {family} architecture: {', '.join(keys)}"
                                      + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        if self.diffusion_weights is not None and family not in ("score-sde", "auto"):
            raise _FieldError("diffusion_weights", self.diffusion_weights, f"to be left out: it picks the weights of a "
                              f"'score-sde' checkpoint, and diffusion_format = '{family}'")
        return self

    @model_validator(mode="after")
    def _norm_pair(self) -> "ModelsConfig":
        if (self.mean is None) != (self.std is None):
            missing = "std" if self.std is None else "mean"
            raise _FieldError(missing, None, "give both `mean` and `std`, or neither")
        if self.mean is not None and len(self.mean) != len(self.std):
            raise _FieldError("std", self.std, f"as many values as `mean` ({len(self.mean)})")
        return self


class PurifierConfig(_Section):
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
        "CPU and GPU) or 'tf32' (TF32 matmuls, CUDA only); the chain's steps stay in float32 (README, "
        "'Performance': the measured cost of bf16)")
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


def _option_of(name: str, value: Any, whose: str, instead: str, fix: str) -> "_FieldError":
    """The error for ``name`` set where it does nothing: whose option it is, what is set instead,
    and both ways out ('eta is an option of the 'ddim' sampler, and sampler = "ddpm"; set
    sampler = "ddim" to use it, or remove eta')."""
    return _FieldError(name, value, f"{name} is {whose}, and {instead}; {fix} to use it, or remove {name}")


class AttackConfig(_Section):
    name: Optional[str] = Field(None, description="Label in results (default: '<kind>-<norm>'); unique")
    kind: str = Field(..., description=" | ".join(ATTACK_KINDS) + ", or an import path to "
                      "attack(model, x, y, uids, cfg) -> x_adv")
    # the defaults are the attack kinds' (attacks/names.py, resolved by attacks/registry.py
    # ``defaults``): a schema default here is the shared one, which _defaults_and_rules replaces by
    # the kind's own
    norm: Literal[NORMS] = Field(NORMS[0], description="Threat model")
    eps: Optional[float] = Field(None, gt=0, description="Budget in [0,1] pixel units (default "
                                 + default_text("eps") + ")")
    step: Optional[float] = Field(None, gt=0, description="Step size of the PGD kinds (default "
                                  + default_text("step") + "); APGD's steps adapt from 2 eps")
    iterations: int = Field(SHARED_DEFAULTS["iterations"], ge=1, description="Attack iterations (updates; default: "
                            + default_text("iterations") + ")")
    eot: Optional[int] = Field(None, ge=1, description="Purifications averaged per gradient (default: "
                               + default_text("eot") + ")")
    eot_chunk: Optional[int] = Field(None, ge=1, description="Replicas per forward pass (default: all at once)")
    random_start: bool = Field(SHARED_DEFAULTS["random_start"], description="Start from a random point in the eps-ball "
                               "(default: " + default_text("random_start") + ")")
    noise: Optional[Literal[NOISE_KNOWLEDGE]] = Field(
        None, description="What the attacker knows of the defence's noise: nothing ('stochastic'), every draw "
        "('replay', DW-box) or the forward draw only ('replay-forward'); default from kind: "
        + default_text("noise"))
    surrogate_steps: Optional[int] = Field(None, ge=1, description="Reverse steps of the attacker's chain "
                                           "(default: the defence's)")
    surrogate_sampler: Optional[Literal[SAMPLERS]] = Field(None, description="Sampler of the attacker's chain")
    loss: Optional[Literal[LOSSES]] = Field(
        None, description="Attack loss: ce, margin (Carlini-Wagner), dlr, dlr-targeted (default: "
        + default_text("loss") + ")")
    gradient: Optional[Literal[GRADIENTS]] = Field(
        None, description="What the attacker differentiates: 'exact' (the defence), 'bpda' (identity backward "
        "through the purifier), 'blind' (the classifier alone), 'forward-only' (forward noise, then the "
        "classifier); the defence always judges (default: " + default_text("gradient") + ")")
    restarts: int = Field(SHARED_DEFAULTS["restarts"], ge=1, description="APGD kinds: runs from new random "
                          "starts on the points not yet fooled (default " + default_text("restarts") + ")")
    targets: Optional[int] = Field(None, ge=1, description="APGD with loss dlr-targeted: target classes, the "
                                   "2nd..(targets+1)-th largest clean logits (default "
                                   + default_text("targets") + ", AutoAttack's)")
    selection: Optional[Literal[SELECTIONS]] = Field(
        None, description="APGD's returned example: 'autoattack' (the last iterate one purification "
        "misclassified) or 'lowest-correct' (the iterate with the lowest share of correct purifications); "
        "default: " + default_text("selection"))
    selection_samples: Optional[int] = Field(
        None, ge=1, description="selection = 'lowest-correct': fresh purifications per iterate (the authors' "
        "AutoAttack fix: 20); default: the iterate's EOT replicas")
    evaluations: Optional[int] = Field(None, ge=1, description="autoattack-rand, diffattack: purifications that "
                                       "judge each point's examples (default " + default_text("evaluations")
                                       + ", the ICLR 2025 authors' fix)")
    queries: Optional[int] = Field(None, ge=1, description="autoattack-standard: Square's queries (default "
                                   + default_text("queries") + ")")
    deviation_weight: Optional[float] = Field(None, ge=0, description="diffattack: lambda, the weight of the "
                                              "deviated-reconstruction loss (default "
                                              + default_text("deviation_weight") + ", Kang et al. 2023)")
    options: dict[str, Any] = Field(default_factory=dict, description="Extra arguments for a plugin attack")

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v in ATTACK_KINDS:
            return v
        if is_import_path(v):
            resolve_import_path(v)
            return v
        hint = difflib.get_close_matches(v, ATTACK_KINDS, n=1)
        raise ValueError(f"unknown attack kind; expected one of {', '.join(ATTACK_KINDS)} or an import path "
                         "'package.module:callable'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))

    @field_validator("name")
    @classmethod
    def _name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}", v):
            raise ValueError("expected 1-64 characters: letters, digits, '_', '.', '+', '-'")
        return v

    @model_validator(mode="after")
    def _defaults_and_rules(self) -> "AttackConfig":
        """The kind's defaults for the fields left unset, and the rules of what the kind takes, in this
        order (a later rule reads what an earlier one filled in)."""
        kind = KINDS.get(self.kind, PLUGIN)  # PLUGIN: an import path
        defaults = attack_defaults(self.kind, self.norm, self.eps)  # the step at this eps
        self.eps = defaults["eps"]
        self._check_eps_range()
        self._check_fields_read(kind)
        self._take_plugin_noise()
        self._fill_defaults(defaults)
        self._check_loss(kind, defaults)
        self._check_apgd_fields(kind, defaults)
        self._check_gradient(kind)
        if self.name is None:
            self.name = f"{self.kind if self.kind in KINDS else self.kind.rpartition(':')[2]}-{self.norm}"
        self._check_noise(kind)
        if self.kind in KINDS and self.options:
            raise _FieldError("options", self.options, "`options` are only for plugin attacks (kind = "
                              "'package.module:callable')")
        return self

    def _check_eps_range(self) -> None:
        if self.norm == "linf" and self.eps > 1:
            raise _FieldError("eps", self.eps, "Linf eps is in [0, 1] pixel units; expected a number <= 1 "
                              f"({number_text(EPS['linf'])} = {EPS['linf']:.4f} is the CIFAR-10 default)")

    def _check_fields_read(self, kind) -> None:
        """A field the kind does not read is an error, not silently ignored."""
        for field in OPTIONAL_FIELDS:
            value = getattr(self, field)
            if field not in kind.reads and value is not None and not (field == "restarts"
                                                                      and value == SHARED_DEFAULTS["restarts"]):
                users = [k.name for k in KINDS.values() if field in k.reads]
                raise _FieldError(field, value, f"kind '{self.kind}' does not use `{field}` (it is read by "
                                  + ", ".join(users) + "); remove it")

    def _take_plugin_noise(self) -> None:
        """A plugin declares what it knows of the noise (docs/plugins.md)."""
        if self.kind in KINDS:
            return
        try:
            declared = plugin_noise(self.kind)
        except ValueError as exc:
            raise _FieldError("kind", self.kind, str(exc)) from None
        if declared is not None and self.noise is not None and self.noise != declared:
            raise _FieldError("noise", self.noise, f"plugin attack '{self.kind}' declares noise = '{declared}'; "
                              "remove `noise` (the plugin's declaration is its contract)")
        self.noise = self.noise or declared

    def _fill_defaults(self, defaults: dict) -> None:
        # fields left unset take the kind's default (a field the kind does not read stays unset)
        for field in ("step", "noise", "eot", "gradient", "selection", "evaluations", "queries", "deviation_weight"):
            if getattr(self, field) is None and defaults.get(field) is not None:
                setattr(self, field, defaults[field])
        # kind defaults of fields whose schema default is the shared one (a form shows a number)
        for field in ("iterations", "random_start", "restarts"):
            if field not in self.model_fields_set and field in defaults:
                setattr(self, field, defaults[field])

    def _check_loss(self, kind, defaults: dict) -> None:
        if kind.loss is None:
            if self.loss is not None:
                raise _FieldError("loss", self.loss, f"kind '{self.kind}' runs its own losses (AutoAttack's); "
                                  "remove `loss`")
        elif self.loss is None:
            self.loss = defaults["loss"]
        elif self.loss not in kind.losses:
            raise _FieldError("loss", self.loss, f"kind '{self.kind}' takes loss "
                              + " or ".join(f"'{x}'" for x in kind.losses))

    def _check_apgd_fields(self, kind, defaults: dict) -> None:
        """APGD's targets (of loss dlr-targeted) and selection_samples (of selection lowest-correct)."""
        if self.targets is not None and self.loss != "dlr-targeted":
            raise _FieldError("targets", self.targets, "targets are for loss = 'dlr-targeted' (kind 'apgd-t'); "
                              "remove it")
        if self.targets is None and self.loss == "dlr-targeted" and "targets" in kind.reads:
            self.targets = defaults["targets"]
        if self.selection_samples is not None and self.selection != "lowest-correct":
            raise _FieldError("selection_samples", self.selection_samples, "fresh purifications for "
                              "selection = 'lowest-correct' (the default of apgd-eot); remove it or set that selection")

    def _check_gradient(self, kind) -> None:
        if self.kind not in KINDS:
            return
        if self.gradient not in kind.gradients:
            raise _FieldError("gradient", self.gradient, f"kind '{self.kind}' takes gradient "
                              + " or ".join(f"'{g}'" for g in kind.gradients)
                              + (" (its deviation loss reads the purifier's intermediate states)"
                                 if kind.name == "diffattack" else ""))
        if kind.name == "bpda" and self.gradient != "bpda":
            raise _FieldError("gradient", self.gradient, "kind 'bpda' is PGD with gradient = 'bpda'; for another "
                              "gradient use kind 'pgd' or 'pgd-eot' with `gradient`")

    def _check_noise(self, kind) -> None:
        """A built-in kind's knowledge of the noise is its own; EOT 1 where it is replayed."""
        if self.kind not in KINDS:
            return
        replaying = [k.name for k in KINDS.values() if k.noise != "stochastic"]
        if kind.noise != "stochastic":
            if self.eot != 1:
                what = "AutoAttack's standard version attacks a deterministic setting (the replayed defence)" \
                    if kind.extra else "DW-box knows the defence's noise"
                raise _FieldError("eot", self.eot, f"{what}: EOT on a deterministic setting averages one "
                                  "function with itself, so EOT must be 1")
            if self.noise != kind.noise:
                raise _FieldError("noise", self.noise, f"kind '{self.kind}' implies noise = '{kind.noise}'")
        elif self.noise != "stochastic":
            raise _FieldError("noise", self.noise, f"kind '{self.kind}' attacks fresh noise; use kind "
                              + " or ".join(f"'{k}'" for k in replaying) + " for noise replay")


class EvaluationConfig(_Section):
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
        return _listed_once(v, "protocol")


class ADDTConfig(_Section):
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

    _betas_tuple = field_validator("betas", mode="before")(_tuple_from_list)

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("each beta must be in [0, 1)")
        return v


class AnalysisConfig(_Section):
    trajectory: bool = Field(False, description="Record gradient cosine similarities / variance along attacks")
    landscape: bool = Field(False, description="Loss landscape around x (fixed vs fresh noise)")
    attack: Optional[str] = Field(None, description="Name of the attack analysed (default: the first)")
    examples: int = Field(4, ge=1, description="Examples analysed")
    landscape_dims: Literal[1, 2] = Field(2, description="1-D or 2-D grid")
    landscape_grid: int = Field(21, ge=3, le=201, description="Grid points per axis")
    landscape_radius: Optional[float] = Field(None, gt=0, description="Grid half-width in [0,1] pixel units "
                                              "(default: 2 x the attack's eps)")

    _dims_not_bool = field_validator("landscape_dims", mode="before")(_no_bool)


AUDIT_CHECKS = ("large-eps", "more-iterations", "more-eot", "gradient-approximations", "random-noise",
                "eot-convergence", "transfer", "zero-gradients")


class AuditConfig(_Section):
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
        return _listed_once(v, "check")

    @field_validator("eot_ks")
    @classmethod
    def _ks(cls, v: list[int]) -> list[int]:
        if not v or any(isinstance(k, bool) or k < 1 for k in v) or sorted(set(v)) != v:
            raise ValueError("expected increasing EOT sizes >= 1, e.g. [1, 2, 4, 8]")
        return v


class OutputConfig(_Section):
    runs_dir: Optional[str] = Field(None, description="Run store root (default: --runs-dir, $DBP_RUNS_DIR, ./runs)")
    checkpoint_every: int = Field(1, ge=1, description="Checkpoint every N batches / training steps")


class ExperimentConfig(_Section):
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
                              description="Stages run in order (see dbp_core.study)")
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
                hint = difflib.get_close_matches(s, known, n=1)
                raise ValueError(f"unknown stage '{s}'; expected one of {', '.join(known)} or an import path"
                                 + (f" (did you mean '{hint[0]}'?)" if hint else ""))
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
                raise _FieldError(("attacks", i, "name"), n, "attack names must be unique")
        channels = DATASET_CHANNELS.get(self.data.dataset)
        if channels and self.models.mean is not None and len(self.models.mean) not in (1, channels):
            raise _FieldError(("models", "mean"), self.models.mean,
                              f"1 or {channels} values (dataset '{self.data.dataset}' has {channels} channels)")
        for i, a in enumerate(self.attacks):
            _check_attack_against_dataset(a, i, self.data.dataset)
        if self.analysis.attack is not None and self.analysis.attack not in names:
            hint = difflib.get_close_matches(self.analysis.attack, names, n=1)
            raise _FieldError(("analysis", "attack"), self.analysis.attack,
                              "the name of one of the [[attacks]]" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        if self.audit.attack is not None and self.audit.attack not in names:
            hint = difflib.get_close_matches(self.audit.attack, names, n=1)
            raise _FieldError(("audit", "attack"), self.audit.attack,
                              "the name of one of the [[attacks]]" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        if "audit" in self.stages and not self.attacks:
            raise _FieldError("stages", self.stages, "stage 'audit' audits an attack: add an [[attacks]] entry")
        if (self.analysis.trajectory or self.analysis.landscape) and not self.attacks:
            field = "trajectory" if self.analysis.trajectory else "landscape"
            raise _FieldError(("analysis", field), True, "analyses follow an attack: add an [[attacks]] entry")
        if self.purifier.grad_mode == "none" and self.models.diffusion != "none":
            users = _chain_gradient_users(self)
            if users:
                modes = " or ".join(f"'{m}'" for m in GRAD_MODES if m != "none")
                chain_free = " or ".join(f"'{g}'" for g in GRADIENTS if g not in CHAIN_GRADIENTS)
                only_exact = [k.name for k in KINDS.values() if not set(k.gradients) - set(CHAIN_GRADIENTS)]
                raise _FieldError(("purifier", "grad_mode"), "none", f"{modes}: grad_mode 'none' gives no gradient "
                                  "through the purifier, and " + "; ".join(users) + " differentiate through it (or "
                                  f"give the attacks a gradient that runs no backward through the chain, {chain_free}; "
                                  f"{' and '.join(only_exact)} take(s) only 'exact')")
        if self.purifier.precision == "tf32" and self.device == "cpu":
            raise _FieldError(("purifier", "precision"), "tf32", "'fp32' or 'bf16': tf32 is a CUDA matmul mode, and "
                              "device = 'cpu'")
        if self.models.diffusion == "none":
            needs = [p for p in self.evaluation.protocols if p in PURIFYING_PROTOCOLS]
            # the default list is fine (the stages skip what needs purification): a run's frozen
            # config.toml spells every default out and must load again on resume
            default = EvaluationConfig.model_fields["protocols"].get_default(call_default_factory=True)
            if needs and "protocols" in self.evaluation.model_fields_set and self.evaluation.protocols != default:
                raise _FieldError(("evaluation", "protocols"), needs,
                                  "protocols without purification, since models.diffusion = 'none'")
            if self.addt.enabled:
                raise _FieldError(("addt", "enabled"), True, "a diffusion model (models.diffusion is 'none')")
            purifying = [s for s in ("attacks", "analysis", "addt", "audit") if s in self.stages]
            if purifying:  # each of them attacks, analyses or fine-tunes the purifier
                raise _FieldError(("models", "diffusion"), "none", "a diffusion model: stage "
                                  + ", ".join(f"'{s}'" for s in purifying) + " needs the purifier (or remove the "
                                  "stage; 'evaluate' alone runs without one)")
            for i, a in enumerate(self.attacks):
                if a.kind == "diffattack":
                    raise _FieldError(("attacks", i, "kind"), a.kind, "a diffusion model: DiffAttack's loss reads "
                                      "the purifier's intermediate states (models.diffusion is 'none')")
        return self


def _chain_gradient_users(cfg: "ExperimentConfig") -> list[str]:
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


# the losses each AutoAttack kind runs, for the class-count checks
_KIND_LOSSES = {"autoattack-rand": ("dlr",), "diffattack": ("dlr",), "autoattack-standard": ("dlr-targeted",)}
_MIN_CLASSES = {"ce": 2, "margin": 2, "dlr": 3, "dlr-targeted": 4}  # as attacks/losses.py (no torch here)


def _check_attack_against_dataset(a: "AttackConfig", i: int, dataset: str) -> None:
    """Budgets and losses a built-in dataset cannot meet: an L2 eps beyond the diameter of [0, 1]^d,
    a DLR loss with too few classes, more APGD-T targets than wrong classes."""
    channels, size, classes = DATASET_CHANNELS.get(dataset), IMAGE_SIZES.get(dataset), DATASET_CLASSES.get(dataset)
    if channels and size and a.norm == "l2":
        diameter = (channels * size * size) ** 0.5
        if a.eps > diameter:
            raise _FieldError(("attacks", i, "eps"), a.eps, f"an L2 eps <= {diameter:.4g}, the diameter of the "
                              f"[0, 1] image space of '{dataset}' ({channels}x{size}x{size}); a larger ball adds nothing")
    if not classes:
        return
    for loss in ((a.loss,) if a.loss else _KIND_LOSSES.get(a.kind, ())):
        if classes < _MIN_CLASSES[loss]:
            raise _FieldError(("attacks", i, "loss" if a.loss else "kind"), a.loss or a.kind,
                              f"loss '{loss}' needs at least {_MIN_CLASSES[loss]} classes; '{dataset}' has {classes}")
    if a.targets is not None and a.targets > classes - 1:
        raise _FieldError(("attacks", i, "targets"), a.targets,
                          f"at most {classes - 1} targets ('{dataset}' has {classes} classes)")


class _FieldError(ValueError):
    """Raised inside model validators to point at a sub-field (relative loc) instead of the model."""

    def __init__(self, loc: str | tuple, value: Any, expected: str):
        self.loc = (loc,) if isinstance(loc, str) else tuple(loc)
        self.value = value
        self.expected = expected
        super().__init__(expected)


# --------------------------------------------------------------------------- error translation

def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model class that owns the key at the end of ``loc`` (for "did you mean")."""
    model: Any = ExperimentConfig
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = _unwrap(model.model_fields[part].annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    origin = get_origin(tp)
    if origin in (list, Union) or (origin is not None and str(origin) == "types.UnionType"):
        for arg in get_args(tp):
            inner = _unwrap(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return tp


def _translate(exc: ValidationError, overridden: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        value = err.get("input")
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _FieldError):
            loc = loc + ctx_err.loc
            value = ctx_err.value
            expected = ctx_err.expected
        elif err["type"] == "extra_forbidden":
            key = loc[-1]
            owner = _model_at(loc[:-1])
            fields = list(owner.model_fields) if owner else []
            hint = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.5)
            suggestion = f"did you mean '{hint[0]}'? " if hint else ""
            section = format_loc(loc[:-1]) or "the top level"
            expected = (f"unknown key; {suggestion}valid keys in {section}: {', '.join(fields)}")
        elif err["type"] == "missing":
            expected = "required field is missing"
            value = None
        else:
            expected = err["msg"].removeprefix("Value error, ")
            if expected.startswith("Input should be "):
                rest = expected.removeprefix("Input should be ")
                if err["type"] == "model_type":
                    rest = "a table (section)"
                if rest.startswith(("greater", "less")):
                    rest = "a value " + rest
                expected = "expected " + rest
        path = format_loc(loc)
        given = err["type"] not in ("missing", "extra_forbidden") and not (value is None and ctx_err is not None)
        message = f"got {_fmt_value(value)}: {expected}" if given else expected
        if path in overridden:
            message += f" (from --set {overridden[path]})"
        out.append({"path": path, "message": message, "value": value, "type": err["type"]})
    return out


# --------------------------------------------------------------------------- overrides

MAX_DEPTH = 32  # tables and arrays nested deeper than this are refused (an experiment needs < 6)


def _parse_override_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        return _TooDeep()


class _TooDeep:
    """An override value nested too deeply for the TOML parser: reported by :func:`_plain_problems`."""


def plain_problems(data: Any) -> list[dict[str, Any]]:
    """What the schema cannot be given safely, found without recursion: nesting deeper than
    MAX_DEPTH (a RecursionError later), and text that is not valid UTF-8 (a non-UTF-8 byte in a
    command-line argument becomes a lone surrogate, which no file can hold)."""
    problems: list[dict[str, Any]] = []
    stack: list[tuple[tuple, Any, int]] = [((), data, 0)]
    while stack and len(problems) < 5:
        loc, value, depth = stack.pop()
        where = format_loc(loc[:8]) + ("..." if len(loc) > 8 else "")
        if isinstance(value, _TooDeep) or depth > MAX_DEPTH:
            problems.append({"path": where, "value": None, "type": "depth",
                             "message": f"nested more than {MAX_DEPTH} levels deep; expected the tables and "
                             "values of an experiment (docs/config.md)"})
            continue
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            if isinstance(key, str) and not _is_utf8(key):
                problems.append({"path": where, "value": None, "type": "encoding",
                                 "message": f"key {ascii(key)} is not valid UTF-8; expected UTF-8 text"})
                continue
            stack.append((loc + (key,), item, depth + 1))
        if isinstance(value, str) and not _is_utf8(value):
            problems.append({"path": where, "value": None, "type": "encoding",
                             "message": f"got {ascii(value)[:80]}: not valid UTF-8 (a byte that is not UTF-8, e.g. "
                             "from --set in another encoding); expected UTF-8 text"})
    return problems


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def apply_overrides(data: dict, overrides: list[str], file: str | None = None) -> dict[str, str]:
    """Apply ``dotted.key=value`` overrides to ``data`` in place (``attacks.0.eps=0.1``).

    Values are parsed as TOML values (``0.1``, ``true``, ``[1, 2]``, ``"s"``), falling back to a
    plain string. Returns {formatted field path: override text} for error messages."""
    done: dict[str, str] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = key.split(".") if key else []
        if not sep or not parts or any(not p for p in parts):
            raise ConfigError(file, [{"path": key or "<override>", "value": item, "type": "override",
                                      "message": f"bad override {item!r}: expected dotted.key=value"}])
        loc: list[str | int] = []
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit():
                    raise ConfigError(file, [{"path": format_loc(tuple(loc)), "value": item, "type": "override",
                                              "message": f"bad override {item!r}: '{part}' must be a list index"}])
                idx = int(part)
                if idx > len(node):
                    raise ConfigError(file, [{"path": format_loc(tuple(loc + [idx])), "value": item,
                                              "type": "override",
                                              "message": f"bad override {item!r}: index {idx} out of range "
                                              f"(the list has {len(node)} entries; {len(node)} appends one)"}])
                if idx == len(node):
                    node.append({})
                loc.append(idx)
                if last:
                    node[idx] = _parse_override_value(text)
                else:
                    node = node[idx]
                continue
            if not isinstance(node, dict):
                raise ConfigError(file, [{"path": format_loc(tuple(loc)), "value": item, "type": "override",
                                          "message": f"bad override {item!r}: {format_loc(tuple(loc))} is not a table"}])
            loc.append(part)
            if last:
                node[part] = _parse_override_value(text)
            else:
                if part not in node:
                    node[part] = [] if part == "attacks" else {}
                node = node[part]
        done[format_loc(tuple(loc))] = item
    return done


# Fields a sweep grid may not set, and why (docs/config.md, "Checkpoints").
UNSWEEPABLE = {"models.trust_pickle": "trusting a pickle is a decision about one file, made in the config or with "
                                      "--set, never one of many points of a grid"}


def _unsweepable(key: str, values: list) -> str | None:
    """Why ``--grid key=values`` may not be swept (it sets a field of UNSWEEPABLE, also through a
    table of its section), or None."""
    for name, why in UNSWEEPABLE.items():
        section, _, leaf = name.rpartition(".")
        if key == name or key.startswith(name + ".") or (
                key == section and any(isinstance(v, dict) and leaf in v for v in values)):
            return f"{name} cannot be swept: {why}"
    return None


MAX_GRID_POINTS = 1000  # points of a sweep unless --max-points lifts it: a typo cannot start thousands of runs


def value_key(v: Any) -> tuple:
    """The identity of a grid value once parsed: equal numbers are one value (``1`` and ``1.0``),
    a table is the same whatever the order of its keys, ``true`` is not ``1``, NaN is NaN. Sweeps
    deduplicate their values by it and match a point's run against its values with it."""
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, (int, float)):
        if isinstance(v, float) and v != v:
            return ("nan",)
        return ("num", int(v) if isinstance(v, float) and v.is_integer() else v)
    if isinstance(v, str):
        return ("str", v)
    if isinstance(v, (list, tuple)):
        return ("list", tuple(value_key(x) for x in v))
    if isinstance(v, dict):
        return ("table", tuple(sorted((str(k), value_key(x)) for k, x in v.items())))
    return ("other", type(v).__name__, repr(v))


def grid_value_problem(v: Any, depth: int = 0) -> str | None:
    """None when ``v`` is a value a sweep can set (what TOML and JSON share: a number, string,
    boolean, array or table, nested at most MAX_DEPTH levels), else what it is instead. TOML's dates
    and times are refused: no experiment field takes one, and sweep.json (JSON) cannot hold them."""
    if depth > MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} levels deep"
    if isinstance(v, (bool, int, float)):
        return None
    if isinstance(v, str):
        return None if _is_utf8(v) else f"text {ascii(v)[:40]} that is not valid UTF-8"
    if isinstance(v, (list, tuple)):
        return next((p for p in (grid_value_problem(x, depth + 1) for x in v) if p), None)
    if isinstance(v, dict):
        for key, x in v.items():
            if not isinstance(key, str) or not _is_utf8(key):
                return f"a table key {ascii(key)[:40]} that is not UTF-8 text"
            problem = grid_value_problem(x, depth + 1)
            if problem:
                return problem
        return None
    import datetime
    if isinstance(v, (datetime.date, datetime.time)):  # datetime.datetime is a date too
        what = "time" if isinstance(v, datetime.time) else "date" if type(v) is datetime.date else "date and time"
        return f"a TOML {what} ({v.isoformat()}); no experiment field takes one (quote it for a string)"
    return "null" if v is None else f"a {type(v).__name__}"


def split_grid_values(text: str) -> list[str]:
    """``text`` split at its top-level commas: not those inside quotes, [arrays] or {tables}."""
    pieces, depth, quote, escaped, start = [], 0, None, False, 0
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    return [p.strip() for p in pieces]


def _grid_value(piece: str) -> Any:
    """One value of a --grid: a TOML value (``0.1``, ``"s"``, ``[1, 2]``, ``{num_channels = 64}``),
    else a bare word (``ddpm``, ``tests.plugins:tiny``); ValueError saying why it is neither."""
    try:
        doc = tomllib.loads(f"v = {piece}")
    except tomllib.TOMLDecodeError as exc:
        if re.search(r"[\"'\[\]{}=\n]", piece):  # meant as TOML (quotes, brackets, braces): say what is wrong
            raise ValueError(f"not a TOML value ({exc})") from None
        return piece
    except RecursionError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    if list(doc) != ["v"]:  # a newline in the value began another key or table
        raise ValueError("not one TOML value (it holds a line break)")
    return doc["v"]


def parse_grid(items: list[str], file: str | None = None, *, max_points: int | None = MAX_GRID_POINTS,
               notes: list[str] | None = None) -> list[tuple[str, list]]:
    """``key=v1,v2,...`` items (``dbp sweep --grid``) → [(key, [values])]. The values are split at
    their top-level commas and each read as a TOML value (``0.01``, ``"a"``, ``[1,2]``, an inline
    table ``{num_channels=64}``), or else as a word (``ddpm,ddim``); each point is then an override
    ``key=value`` (:func:`apply_overrides`). A value equal to an earlier one once parsed
    (:func:`value_key`: ``1`` and ``1.0``) is swept once, with a line in ``notes``. More than
    ``max_points`` points in all (the product of the grids) is an error saying how to lift it."""
    grid: list[tuple[str, list]] = []

    def bad(key: str, item: str, why: str) -> ConfigError:
        shown = repr(item) if _is_utf8(item) else ascii(item)
        return ConfigError(file, [{"path": (key if _is_utf8(key) else ascii(key)) or "<grid>", "value": shown,
                                   "type": "grid", "message": f"bad --grid {shown}: {why}"}])
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise bad(key, item, "expected key=value1,value2,... (e.g. attacks.0.eps=0.05,0.1)")
        if not _is_utf8(item):
            raise bad(key, item, "not valid UTF-8 (a byte that is not UTF-8 in the command line); expected UTF-8 text")
        if any(not part.strip() for part in key.split(".")):
            raise bad(key, item, "expected a dotted key (e.g. attacks.0.eps) before '='")
        if any(k == key for k, _ in grid):
            raise bad(key, item, "the key is swept twice; expected one --grid per key")
        values, first = [], {}
        for piece in split_grid_values(text):
            if not piece:
                raise bad(key, item, "an empty value; expected key=value1,value2,...")
            try:
                value = _grid_value(piece)
            except ValueError as exc:
                raise bad(key, item, f"the value {piece!r}: {exc}; expected a TOML value (a number, \"text\", "
                          "true/false, [an, array] or {a = table}) or a word") from None
            problem = grid_value_problem(value)
            if problem:
                raise bad(key, item, f"the value {piece!r} is {problem}")
            identity = value_key(value)
            if identity in first:
                if notes is not None:
                    notes.append(f"--grid {key}: {piece} is the same value as {first[identity]}; it is swept once")
                continue
            first[identity] = piece
            values.append(value)
        unsweepable = _unsweepable(key, values)
        if unsweepable:
            raise bad(key, item, unsweepable)
        grid.append((key, values))
    import math
    total = math.prod(len(v) for _, v in grid)
    if max_points is not None and total > max_points:
        sizes = " x ".join(str(len(v)) for _, v in grid)
        raise ConfigError(file, [{"path": "<grid>", "value": total, "type": "grid",
                                  "message": f"the grid has {total} points ({sizes}), more than --max-points "
                                  f"{max_points} (default {MAX_GRID_POINTS}: each point is a run); pass "
                                  f"--max-points {total} to run them all"}])
    return grid


# --------------------------------------------------------------------------- load / save

def validate_config(data: dict, *, file: str | os.PathLike | None = None, base_dir: str | os.PathLike | None = None,
                    overrides: list[str] | None = None) -> ExperimentConfig:
    """Validate a parsed TOML document (plus overrides) → ExperimentConfig, or raise ConfigError."""
    import copy
    problems = plain_problems(data)
    if problems:
        raise ConfigError(file, problems)
    data = copy.deepcopy(data)
    for item in overrides or []:
        if not _is_utf8(item):
            key = item.partition("=")[0]
            raise ConfigError(file, [{"path": key if _is_utf8(key) else "<override>", "value": None,
                                      "type": "encoding", "message": f"--set {ascii(item)[:80]}: not valid UTF-8 "
                                      "(a byte that is not UTF-8 in the command line); expected UTF-8 text"}])
    overridden = apply_overrides(data, list(overrides or []), str(file) if file else None)
    problems = plain_problems(data)
    if problems:
        raise ConfigError(file, problems)
    if base_dir is None:
        base_dir = Path(file).resolve().parent if file else Path.cwd()
    try:
        cfg = ExperimentConfig.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        raise ConfigError(file, _translate(exc, overridden)) from None
    except RecursionError:
        raise ConfigError(file, [{"path": "", "value": None, "type": "depth",
                                  "message": "nested too deeply to validate"}]) from None
    cfg._base_dir = str(base_dir)
    return cfg


def loads_config(text: str, *, file: str | None = None, base_dir: str | None = None,
                 overrides: list[str] | None = None) -> ExperimentConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, [{"path": "", "value": None, "type": "toml", "message": f"not valid TOML: {exc}"}]) from None
    except RecursionError:
        raise ConfigError(file, [{"path": "", "value": None, "type": "depth", "message": "tables or arrays nested "
                                  "too deeply to read; expected the tables and values of an experiment "
                                  "(docs/config.md)"}]) from None
    return validate_config(data, file=file, base_dir=base_dir, overrides=overrides)


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read and validate an experiment TOML; relative paths inside resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, [{"path": "", "value": None, "type": "file", "message": "file not found"}]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [{"path": "", "value": None, "type": "file", "message": f"cannot read: {exc}"}]) from None
    return loads_config(text, file=str(path), base_dir=str(path.resolve().parent), overrides=overrides)


def _to_toml_data(cfg: ExperimentConfig, *, absolute_paths: bool) -> dict:
    data = cfg.model_dump(mode="json", exclude_none=True)
    if absolute_paths:
        base = Path(getattr(cfg, "_base_dir", None) or os.getcwd())
        m = data["models"]
        for key, keywords in (("classifier", ("default",)), ("diffusion", ("default", "none"))):
            if m[key] not in keywords and not is_import_path(m[key]):
                m[key] = str((base / Path(m[key]).expanduser()).resolve())
        for key in ("root", "class_index"):
            if key in data["data"]:
                data["data"][key] = str((base / Path(data["data"][key]).expanduser()).resolve())
    return data


def dumps_config(cfg: ExperimentConfig, *, absolute_paths: bool = False) -> str:
    import tomli_w
    data = _to_toml_data(cfg, absolute_paths=absolute_paths)
    head = {k: data.pop(k) for k in ("name", "description", "seed", "device", "threads", "stages") if k in data}
    return tomli_w.dumps({**head, **data})


def save_config(cfg: ExperimentConfig, path: str | os.PathLike, *, absolute_paths: bool = False) -> None:
    """Write ``cfg`` as TOML (tomli-w). ``absolute_paths`` makes checkpoint/data paths absolute —
    used when freezing a run's config so it resolves from anywhere."""
    Path(path).write_text(dumps_config(cfg, absolute_paths=absolute_paths), encoding="utf-8")


def json_schema() -> dict:
    """JSON Schema of an experiment (titles, descriptions, bounds, defaults) for forms."""
    return ExperimentConfig.model_json_schema()
