"""The ``[data]`` and ``[models]`` sections: the examples a run evaluates and the classifier and
diffusion model it defends with (docs/config.md, "Checkpoints" and "ImageNet"). The names they
take come from ``models/registry.py``: datasets and their split sizes, checkpoint formats and
architecture presets."""
from __future__ import annotations

import re
from typing import Any, Literal, Optional, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..models.registry import (CLASSIFIER_ARCHS, CLASSIFIER_FORMATS, DATASETS, DIFFUSION_ARCHS, DIFFUSION_CONFIG_KEYS,
                               DIFFUSION_FORMATS, DIFFUSION_WEIGHTS, SPLIT_SIZES, SPLITS)
from ..plugins import is_import_path
from .errors import FieldError, did_you_mean
from .fields import Section, built_in_or_plugin, check_model_ref, existing_path


class DataConfig(Section):
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

    _dataset = field_validator("dataset")(built_in_or_plugin(DATASETS, "dataset"))
    _root = field_validator("root")(existing_path(folder=True, what="dataset folder",
                                                  expected="the dataset folder"))
    _class_index = field_validator("class_index")(existing_path(
        folder=False, what="class-index file",
        expected="the class-index file (imagenet_class_index.json or a text file of wnids)"))

    @model_validator(mode="after")
    def _needs_root(self) -> "DataConfig":
        if self.dataset == "cifar10" and self.root is None:
            raise FieldError("root", None, "dataset 'cifar10' needs `root`, the folder holding cifar-10-batches-py "
                             "(nothing is downloaded at run time)")
        if self.dataset == "imagenet" and self.root is None:
            raise FieldError("root", None, "dataset 'imagenet' needs `root`, the folder of <wnid>/*.JPEG class "
                             "folders (the val set; or its parent holding val/ and train/)")
        if self.dataset != "imagenet":
            for name in ("class_index", "image_size", "resize"):
                if getattr(self, name) is not None:
                    raise FieldError(name, getattr(self, name), f"to be left out: {name} is a field of dataset 'imagenet', "
                                     f"and dataset = '{self.dataset}'")
        if self.order != "diffpure" and self.subset_seed != 0:
            raise FieldError("subset_seed", self.subset_seed, f"0 (its default): subset_seed picks DiffPure's subset "
                             f"(order = 'diffpure'), and order = '{self.order}'")
        return self

    @model_validator(mode="after")
    def _within_split(self) -> "DataConfig":
        sizes = SPLIT_SIZES.get(self.dataset, {})
        if sizes and self.split not in sizes:
            raise FieldError("split", self.split, f"one of {', '.join(sizes)} (the splits of {self.dataset})")
        size = sizes.get(self.split)
        where = f"{self.dataset}/{self.split} has {size} examples"
        problem = None if size is None else subset_problem(self, size, where)
        if problem:
            raise FieldError(*problem)
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


class ModelsConfig(Section):
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
        return check_model_ref(v, info, keywords=("default",), what="classifier checkpoint", allow_dir=False)

    @field_validator("diffusion")
    @classmethod
    def _diffusion(cls, v: str, info: ValidationInfo) -> str:
        return check_model_ref(v, info, keywords=("default", "none"), what="diffusion checkpoint",
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
                raise FieldError(f"{role}_arch", arch, f"to be left out: it describes a checkpoint file, and models.{role} "
                                 f"= {ref!r}")
            allowed = archs.get(fmt, ()) if fmt != "auto" else tuple(a for names in archs.values() for a in names)
            if arch not in allowed:
                where = (f"one of {', '.join(allowed)}" if allowed else
                         f"to be left out: format '{fmt}' fixes the architecture")
                raise FieldError(f"{role}_arch", arch, where + did_you_mean(arch, allowed))
        family = self.diffusion_format if self.diffusion_format != "auto" else next(
            (f for f, names in DIFFUSION_ARCHS.items() if self.diffusion_arch in names), "auto")
        if self.diffusion_config is not None:
            keys = DIFFUSION_CONFIG_KEYS.get(family) if family != "auto" else tuple(
                sorted({k for ks in DIFFUSION_CONFIG_KEYS.values() for k in ks}))
            if keys is None:
                raise FieldError("diffusion_config", self.diffusion_config,
                                 f"to be left out: it overrides a 'guided-diffusion' or 'score-sde' architecture, and "
                                 f"diffusion_format = '{family}'")
            for key in self.diffusion_config:
                if key not in keys:
                    raise FieldError(("diffusion_config", key), self.diffusion_config[key],
                                     f"a field of the {family} architecture: {', '.join(keys)}"
                                     + did_you_mean(key, keys))
        if self.diffusion_weights is not None and family not in ("score-sde", "auto"):
            raise FieldError("diffusion_weights", self.diffusion_weights, f"to be left out: it picks the weights of a "
                             f"'score-sde' checkpoint, and diffusion_format = '{family}'")
        return self

    @model_validator(mode="after")
    def _norm_pair(self) -> "ModelsConfig":
        if (self.mean is None) != (self.std is None):
            missing = "std" if self.std is None else "mean"
            raise FieldError(missing, None, "give both `mean` and `std`, or neither")
        if self.mean is not None and len(self.mean) != len(self.std):
            raise FieldError("std", self.std, f"as many values as `mean` ({len(self.mean)})")
        return self
