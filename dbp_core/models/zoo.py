"""The shipped, trained embedded-default models (``dbp_core/weights``; re-create with
``python -m dbp_core.train --out dbp_core/weights --seed 0``)."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from .classifiers import DIGITS_MEAN, DIGITS_STD
from .loaders import CheckpointError, load_checkpoint
from .normalized import Normalized

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
    """The trained digits CNN (eval mode), bare: it expects inputs normalised with
    ``default_normalisation`` (on [0, 1] images it is wrong most of the time); a classifier of
    [0, 1] images is :func:`normalised_classifier`."""
    return load_checkpoint(_stem(dataset, 0))


def normalised_classifier(dataset: str = "digits") -> nn.Module:
    """The trained digits CNN as ``f(x01) -> logits`` on [0, 1] images: :func:`default_classifier`
    wrapped in its own ``Normalized(model, *default_normalisation(dataset))`` (eval mode), what a
    run with ``models.classifier = "default"`` evaluates (docs/api.md)."""
    return Normalized(default_classifier(dataset), *default_normalisation(dataset)).eval()


def default_diffusion(dataset: str = "digits") -> nn.Module:
    """The trained digits DDPM UNet, ``eps_model(x_t, t)`` (eval mode)."""
    return load_checkpoint(_stem(dataset, 1))


def default_normalisation(dataset: str = "digits") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel that :func:`default_classifier` expects its inputs normalised with."""
    if dataset != "digits":
        raise ValueError(f"no shipped models for dataset {dataset!r}")
    return DIGITS_MEAN, DIGITS_STD
