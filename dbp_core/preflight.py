"""Checks of a validated config against this machine and the files it names, made by
``dbp check`` and by ``dbp run`` before it creates a run folder (docs/config.md).

The schema (:mod:`dbp_core.config`) stays free of torch; what needs torch lives here.
A problem is reported as a :class:`~dbp_core.config.ConfigError` naming the field.
"""
from __future__ import annotations

import importlib.util

from .attacks.registry import KINDS
from .config import ConfigError, ExperimentConfig

__all__ = ["preflight", "cuda_problem", "missing_extra"]


def cuda_problem() -> str | None:
    """None when torch sees a CUDA device, else what is available instead."""
    import torch
    if torch.cuda.is_available():
        return None
    built = getattr(torch.version, "cuda", None)
    why = (f"torch {torch.__version__} is built with CUDA {built} but sees no CUDA device" if built
           else f"torch {torch.__version__} is built without CUDA")
    return f"{why}; available: 'cpu' (or 'auto', which picks cuda when there is one)"


def missing_extra(kind: str) -> str | None:
    """None when the optional extra an attack kind needs is importable, else how to install it."""
    k = KINDS.get(kind)
    if k is None or k.requires is None:
        return None
    try:
        found = importlib.util.find_spec(k.requires) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return None
    return (f"kind '{kind}' needs the optional extra '{k.extra}' (the module {k.requires} is not installed): "
            f"pip install 'dbp-lab[{k.extra}]'")


def preflight(cfg: ExperimentConfig, file: str | None = None) -> ExperimentConfig:
    """``cfg`` if this machine can run it; else ConfigError naming each field that cannot be met."""
    errors = []
    for i, a in enumerate(cfg.attacks):
        problem = missing_extra(a.kind)
        if problem:
            errors.append({"path": f"attacks[{i}].kind", "value": a.kind, "type": "extra",
                           "message": f"got '{a.kind}': {problem}"})
    if cfg.device == "cuda":
        problem = cuda_problem()
        if problem:
            errors.append({"path": "device", "value": "cuda", "type": "device",
                           "message": f"got 'cuda': no CUDA device: {problem}"})
    if errors:
        raise ConfigError(file, errors)
    return cfg
