"""Checks of a validated config against this machine and the files it names, made by
``dbp check`` and by ``dbp run`` before it creates a run folder (docs/config.md).

The schema (:mod:`dbp_core.config`) stays free of torch; what needs torch lives here.
A problem is reported as a :class:`~dbp_core.config.ConfigError` naming the field.

Checkpoints (:func:`checkpoint_problems`): every ``models.classifier`` / ``models.diffusion`` that
is a path must fit its format and architecture — the network is built on the meta device and the
file is inspected without reading its weights (``models/loaders.py``, ``check_model``), so even a
2 GB checkpoint is checked in about a second. Dataset files that a run reads first
(:func:`dataset_problems`: ImageNet's class index and folders) are checked too.
"""
from __future__ import annotations

import importlib.util

from .attacks.registry import KINDS
from .config import ConfigError, ExperimentConfig

__all__ = ["preflight", "cuda_problem", "missing_extra", "checkpoint_problems", "dataset_problems"]


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
    errors += checkpoint_problems(cfg)
    errors += dataset_problems(cfg)
    if errors:
        raise ConfigError(file, errors)
    return cfg


def checkpoint_problems(cfg: ExperimentConfig) -> list[dict]:
    """One error per ``models.classifier`` / ``models.diffusion`` checkpoint that does not fit
    its family and architecture (the message names the file and the first keys)."""
    from .models.checkpoint_io import CheckpointError
    from .models.loaders import check_model, model_spec_from
    from .plugins import is_import_path
    errors = []
    mc = cfg.models
    for role in ("classifier", "diffusion"):
        ref = getattr(mc, role)
        if ref in ("default", "none") or is_import_path(ref):
            continue
        try:
            check_model(model_spec_from(mc, role, cfg.resolve_path(ref)))
        except CheckpointError as exc:
            msg = str(exc)
            field = next((f"models.{f}" for f in ("diffusion_config", "diffusion_weights", f"{role}_arch")
                          if msg.startswith(f"models.{f}")), f"models.{role}")
            errors.append({"path": field, "value": ref, "type": "checkpoint", "message": msg})
    return errors


def dataset_problems(cfg: ExperimentConfig) -> list[dict]:
    """ImageNet: the class index reads and every class folder is in it (the images are read by the run)."""
    dc = cfg.data
    if dc.dataset != "imagenet" or dc.root is None:
        return []
    from .models.datasets import DatasetError
    from .models.imagenet import check_folder
    try:
        check_folder(dc.split, cfg.resolve_path(dc.root),
                     cfg.resolve_path(dc.class_index) if dc.class_index else None, dc.image_size, dc.resize)
    except DatasetError as exc:
        return [{"path": "data.class_index" if dc.class_index and str(exc).startswith(
            str(cfg.resolve_path(dc.class_index))) else "data.root", "value": dc.root, "type": "dataset",
                 "message": str(exc)}]
    return []
