"""Checks of a validated config against this machine and the files it names, made by
``dbp check`` and by ``dbp run`` before it creates a run folder (docs/config.md).

The schema (:mod:`dbp_core.config`) stays free of torch; what needs torch lives here.
A problem is reported as a :class:`~dbp_core.config.ConfigError` naming the field.
"""
from __future__ import annotations

from .config import ConfigError, ExperimentConfig

__all__ = ["preflight", "cuda_problem"]


def cuda_problem() -> str | None:
    """None when torch sees a CUDA device, else what is available instead."""
    import torch
    if torch.cuda.is_available():
        return None
    built = getattr(torch.version, "cuda", None)
    why = (f"torch {torch.__version__} is built with CUDA {built} but sees no CUDA device" if built
           else f"torch {torch.__version__} is built without CUDA")
    return f"{why}; available: 'cpu' (or 'auto', which picks cuda when there is one)"


def preflight(cfg: ExperimentConfig, file: str | None = None) -> ExperimentConfig:
    """``cfg`` if this machine can run it; else ConfigError naming each field that cannot be met."""
    errors = []
    if cfg.device == "cuda":
        problem = cuda_problem()
        if problem:
            errors.append({"path": "device", "value": "cuda", "type": "device",
                           "message": f"got 'cuda': no CUDA device: {problem}"})
    if errors:
        raise ConfigError(file, errors)
    return cfg
