"""The shipped, trained embedded-default models (``dbp_core/weights``; re-create with
``python -m dbp_core.train --out dbp_core/weights --seed 0``)."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from .classifiers import DIGITS_MEAN, DIGITS_STD
from .loaders import CheckpointError, load_checkpoint

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
_NAMES = {"digits": ("digits_classifier", "digits_ddpm")}


def _stem(dataset: str, which: int) -> Path:
    if dataset not in _NAMES:
        raise ValueError(f"no shipped models for dataset {dataset!r}; available: {sorted(_NAMES)} "
                         "(CIFAR-10 models load from local files: models.loaders)")
    stem = WEIGHTS / _NAMES[dataset][which]
    if not stem.with_suffix(".safetensors").is_file():
        raise CheckpointError(f"{stem}.safetensors: shipped weights missing; re-create them with "
                              "python -m dbp_core.train --out dbp_core/weights --seed 0")
    return stem


def default_classifier(dataset: str = "digits") -> nn.Module:
    """The trained digits CNN (eval mode); inputs normalised with ``default_normalisation``."""
    return load_checkpoint(_stem(dataset, 0))


def default_diffusion(dataset: str = "digits") -> nn.Module:
    """The trained digits DDPM UNet, ``eps_model(x_t, t)`` (eval mode)."""
    return load_checkpoint(_stem(dataset, 1))


def default_normalisation(dataset: str = "digits") -> tuple[tuple[float, ...], tuple[float, ...]]:
    if dataset != "digits":
        raise ValueError(f"no shipped models for dataset {dataset!r}")
    return DIGITS_MEAN, DIGITS_STD
