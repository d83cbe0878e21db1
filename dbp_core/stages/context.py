"""What a stage is given: the run's config, its models and data (:class:`Resources`), seeds,
checkpoints, metrics and progress (:class:`StageContext`); see :mod:`dbp_core.stages`.

Torch and the model modules are imported inside functions: the runner imports this module
before it knows which stages a config lists.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import dist
from ..config import ExperimentConfig
from ..plugins import is_import_path, resolve_import_path
from ..purifier.noise import derive_seed
from ..store import RunWriter

__all__ = ["StageContext", "Resources", "Subset", "derive_seed", "purifier_options"]


@dataclass
class Subset:
    """The examples a run evaluates, in uid order: x float32 [N,C,H,W] in [0,1], y, uids int64."""
    x: Any
    y: Any
    uids: Any
    num_classes: int
    name: str

    def __len__(self) -> int:
        return int(self.uids.shape[0])

    def batches(self, size: int) -> list[tuple[int, int]]:
        """``[(lo, hi), ...]`` of consecutive batches of at most ``size`` examples."""
        n = len(self)
        return [(i, min(i + size, n)) for i in range(0, n, size)]


class Resources:
    """Models and data of a config, built on first use."""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg
        self._cache: dict[str, Any] = {}

    def _once(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @property
    def device(self):
        import torch
        d = self.cfg.device
        if d == "auto":
            d = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(d)

    def data(self) -> Subset:
        return self._once("data", self._load_data)

    def full_dataset(self, split: str):
        """Every example of ``split`` of the configured dataset (built-in name or import path)."""
        dc = self.cfg.data
        root = str(self.cfg.resolve_path(dc.root)) if dc.root else None
        if is_import_path(dc.dataset):
            from ..models.plugin import check_dataset
            return check_dataset(resolve_import_path(dc.dataset)(split=split, root=root),
                                 f"data.dataset = '{dc.dataset}'")
        from ..models.datasets import load_dataset
        options = {}
        if dc.dataset == "imagenet":
            options = dict(class_index=str(self.cfg.resolve_path(dc.class_index)) if dc.class_index else None,
                           image_size=dc.image_size, resize=dc.resize)
        return load_dataset(dc.dataset, split, root=root, **options)

    def _load_data(self) -> Subset:
        import torch
        dc = self.cfg.data
        full = self.full_dataset(dc.split)
        total = int(full.y.shape[0])
        if dc.order == "first":
            n = dc.n_examples or total - dc.first
            if dc.first + n > total:
                raise ValueError(f"data.first + data.n_examples = {dc.first + n} exceeds the {total} examples "
                                 f"of {dc.dataset}/{dc.split}")
            idx = torch.arange(dc.first, dc.first + n)
        else:
            n = dc.n_examples or total
            if n > total:
                raise ValueError(f"data.n_examples = {n} exceeds the {total} examples of {dc.dataset}/{dc.split}")
            if dc.order == "diffpure":  # DiffPure's utils.load_data: a seeded choice without replacement
                import numpy as np
                idx = torch.from_numpy(np.random.RandomState(dc.subset_seed).choice(total, n, replace=False))
            else:
                g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "data", "order"))
                idx = torch.randperm(total, generator=g)[:n]
        uids = full.uids[idx]
        order = torch.argsort(uids)  # uid order: independent of how the subset was drawn
        idx = idx[order]
        return Subset(x=full.x[idx].float(), y=full.y[idx].long(), uids=full.uids[idx].long(),
                      num_classes=int(full.num_classes), name=str(getattr(full, "name", dc.dataset)))

    def classifier(self):
        """The classifier as f(x01) -> logits, input normalisation included, eval mode, on device."""
        return self._once("classifier", self._load_classifier)

    def _load_classifier(self):
        mc = self.cfg.models
        model = self._model(mc.classifier, "classifier")
        mean, std = mc.mean, mc.std
        if mean is None and mc.classifier == "default":  # the shipped model's own normalisation
            from ..models import zoo
            mean, std = zoo.default_normalisation(self.cfg.data.dataset)
        elif mean is None and not is_import_path(mc.classifier):  # the checkpoint family's (ImageNet's, ...)
            from ..models.loaders import default_normalisation
            spec = self.model_spec("classifier")
            mean, std = default_normalisation(spec.fmt, spec.arch) or (None, None)
        if mean is not None:
            from ..models.normalized import Normalized
            model = Normalized(model, mean, std)
        return model.to(self.device).eval().requires_grad_(False)

    def eps_model(self):
        """The diffusion eps model ``eps_model(x_t, t)`` or None when models.diffusion = 'none'."""
        return self._once("eps_model", self._load_eps_model)

    def _load_eps_model(self):
        mc = self.cfg.models
        if mc.diffusion == "none":
            return None
        return self._model(mc.diffusion, "diffusion").to(self.device).eval()

    def _model(self, ref: str, role: str):
        dataset = self.cfg.data.dataset
        if ref == "default":
            try:
                from ..models import zoo
            except ImportError as exc:
                raise RuntimeError(f"models.{role} = 'default' needs dbp_core.models.zoo, which is not "
                                   f"available ({exc}); name a checkpoint or an import path instead") from exc
            return getattr(zoo, f"default_{role}")(dataset)
        if is_import_path(ref):  # user code: every output is checked (models/plugin.py)
            from ..models.plugin import build_plugin_model, check_eps, check_logits, watch_outputs
            model, what = build_plugin_model(ref, role), f"models.{role} = '{ref}'"
            if role == "classifier":
                classes = self.data().num_classes
                return watch_outputs(model, lambda x, out: check_logits(x, out, classes, what))
            return watch_outputs(model, lambda x, out: check_eps(x, out, what))
        from ..models.loaders import load_model
        return load_model(self.model_spec(role))

    def model_spec(self, role: str):
        """The checkpoint of ``models.<role>`` (a path) as a ``models.loaders.ModelSpec``: format
        resolved, architecture, overrides, weights entry."""
        from ..models.loaders import model_spec_from
        return self._once(f"spec:{role}", lambda: model_spec_from(
            self.cfg.models, role, self.cfg.resolve_path(getattr(self.cfg.models, role))))

    def purifier(self, noise):
        """A Purifier per the [purifier] section with the given noise mode (None without diffusion)."""
        eps_model = self.eps_model()
        if eps_model is None:
            return None
        from ..purifier.purifier import Purifier
        return Purifier(eps_model, noise=noise, **purifier_options(self.cfg.purifier))


def purifier_options(pc, sampler: str | None = None, steps: int | None = None) -> dict[str, Any]:
    """``Purifier`` keyword arguments of a ``[purifier]`` section, for ``sampler`` / ``steps`` (default: the
    section's). A surrogate chain of another sampler keeps the options that sampler takes and leaves out the
    others (eta is DDIM's; the variance and GDMP guidance are DDPM's; clipping is DDPM's and DDIM's)."""
    from ..purifier.guidance import Guidance
    from ..purifier.registry import DISCRETE_SAMPLERS
    sampler = sampler or pc.sampler
    kw: dict[str, Any] = dict(t_star=pc.t_star, steps=steps or pc.steps, sampler=sampler, grad_mode=pc.grad_mode,
                              segments=pc.segments, clamp_output=pc.clamp_output, memory_budget=pc.memory_budget,
                              precision=pc.precision, compile=pc.compile)
    if sampler == "ddim":
        kw["eta"] = pc.eta
    if sampler == "ddpm":
        kw["variance"] = pc.variance
        if pc.guidance_scale > 0:
            kw["guidance"] = Guidance(pc.guidance_scale, pc.guidance_eps, pc.guidance_target)
    if sampler in DISCRETE_SAMPLERS:
        kw["clip_denoised"] = pc.clip_denoised
        kw["respacing"] = pc.respacing
    return kw


@dataclass
class StageContext:
    cfg: ExperimentConfig
    run: RunWriter
    name: str
    resources: Resources
    on_progress: Callable[[str, int, int | None], None] | None = None
    _t0: float = field(default_factory=time.monotonic)
    _done0: int | None = None
    collective: bool = False  # under torchrun, in a stage run by every rank (dist.all_ranks)
    previous: dict = field(default_factory=dict)  # results of the stages that ran before, by name

    def seed(self, *purpose: Any) -> int:
        return derive_seed(self.cfg.seed, self.name, *purpose)

    def _ckpt_name(self, tensors: bool) -> str:
        return f"{self.name}.{'pt' if tensors else 'json'}"

    def load_checkpoint(self) -> Any | None:
        if self.collective:  # rank 0 owns the store: every rank resumes from its checkpoint
            return dist.broadcast_object(self._load_checkpoint() if dist.is_main() else None)
        return self._load_checkpoint()

    def _load_checkpoint(self) -> Any | None:
        for tensors in (True, False):
            state = self.run.load_checkpoint(self._ckpt_name(tensors))
            if state is not None:
                return state
        return None

    def save_checkpoint(self, state: Any, *, tensors: bool = False) -> None:
        self.run.save_checkpoint(self._ckpt_name(tensors), state)

    def metric(self, kind: str, step: int | None = None, **values: Any) -> None:
        self.run.append_metric(kind, step, stage=self.name, **values)

    def progress(self, done: int, total: int | None, message: str = "") -> None:
        if self._done0 is None:
            self._done0, self._t0 = done, time.monotonic()
        eta = None
        if total is not None and done > self._done0:
            eta = (time.monotonic() - self._t0) / (done - self._done0) * (total - done)
        self.run.write_status(progress={"stage": self.name, "done": done, "total": total}, eta=eta,
                              message=message)
        if self.on_progress:
            self.on_progress(self.name, done, total)

    def log(self, message: str) -> None:
        self.run.log(f"[{self.name}] {message}")

    def artifact_path(self, relative: str) -> Path:
        """A path inside the run folder for a file or folder this stage writes (parents created);
        under torchrun, ranks > 0 get a private scratch folder instead."""
        return self.run.artifact_path(relative)

    def record_artifact(self, relative: str) -> None:
        """Record the checksum of a file or folder this stage wrote under the run folder (a saved
        model): ``dbp resume`` refuses the run if it was changed since (docs/design.md, "The run folder")."""
        self.run.record_artifact(relative)

    def run_file(self, relative: str) -> Path:
        """A path a stage recorded relative to the run folder (e.g. a saved model), made absolute."""
        return Path(self.run.path) / relative

    def write_json(self, relative: str, obj: Any) -> str:
        """Write ``obj`` atomically as ``<run>/<relative>``; returns ``relative`` (for the stage's result)."""
        self.run.write_json(relative, obj)
        return relative
