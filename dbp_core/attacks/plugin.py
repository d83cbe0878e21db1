"""Plugin attacks: user code named by ``[[attacks]].kind = "package.module:callable"`` (docs/plugins.md).

The contract. The callable is called once per batch as ``attack(model, x, y, uids, cfg) -> x_adv``
(``cfg``: the ``[[attacks]]`` entry, its ``options`` table for the plugin's own settings), and with
``context=`` (an :class:`AttackContext`) too when it accepts that keyword. It declares what it knows
of the defence's noise with an attribute ``noise`` (``"stochastic"``, the default; ``"replay"``:
it attacks the purification the defence will run, as DW-box; ``"replay-forward"``), read by the
config (``[[attacks]].noise``). ``model(x, uids, replicas=1, replica=0)`` is the defended model:

* ``stochastic`` — every call without a ``seed=`` purifies with a fresh seed, named by the attack
  seed and the call's number in the batch (``NoisePlan("fresh")``: the same on every run);
* ``replay`` — every call replays the evaluation seed (forward and reverse noise);
* ``replay-forward`` — the forward draw replayed, the reverse steps fresh per call.

So a plugin written without any seed is reproducible: the defence's noise is addressed, and the
global torch, numpy and Python generators are seeded per batch from the attack seed while the
plugin runs (and restored after). ``context.generator`` is the plugin's own generator;
``context.normal(x)`` draws noise addressed by uid (independent of the batch layout, as the
built-in attacks' random starts).

Every output is checked (:func:`check_adversarial`): a tensor of the input's shape, dtype and
device, finite, in [0, 1] and inside the eps-ball of the entry's norm. A violation is a
:class:`~dbp_core.plugins.PluginError` naming the attack and what was measured.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .. import ops
from ..plugins import PluginError, accepts_keyword, resolve_import_path
from ..purifier.noise import derive_seed
from .base import IterationHook, NoisePlan

__all__ = ["AttackContext", "PluginAttack", "NoisyModel", "check_adversarial", "seeded_global_rngs"]

RANGE_TOL = 1e-6  # [0, 1] exactly after a clamp; float32 rounding of x + delta stays well inside this


@dataclass(frozen=True)
class AttackContext:
    """What a plugin attack is given besides ``(model, x, y, uids, cfg)`` (docs/plugins.md).

    ``generator``: a ``torch.Generator`` on the batch's device, seeded from the attack seed and the
    batch's uids; ``seed``: the attack seed itself (``derive_seed`` of the run seed, the stage, the
    attack's name and the attack-seed index, as every built-in attack's); ``eval_seed``: the seed the
    defence judges with — given only to an attack that declared ``noise = "replay"`` or
    ``"replay-forward"`` (it knows the noise), else None; ``noise``: the declared mode; ``model``: the
    defended model of the contract; ``options``: ``cfg.options``; ``report(i, loss, success)``: the
    attacker's view at iteration i, for metrics.jsonl and the console's curves."""

    generator: torch.Generator
    seed: int
    uids: torch.Tensor
    noise: str
    model: nn.Module
    cfg: Any
    eval_seed: int | None = None
    options: dict = field(default_factory=dict)
    on_iteration: IterationHook | None = None

    def normal(self, like: torch.Tensor, step: int = 0) -> torch.Tensor:
        """N(0, 1) noise of ``like``'s shape and dtype, addressed by (attack seed, uid, ``step``):
        each example's draw is the same whatever the batch it is in."""
        return ops.normal(like.shape, derive_seed(self.seed, "plugin", "normal"), 0, self.uids, int(step), like.dtype)

    def report(self, iteration: int, loss: float, success: float) -> None:
        if self.on_iteration is not None:
            self.on_iteration(int(iteration), float(loss), float(success))


class NoisyModel(nn.Module):
    """The defended model as a plugin sees it: a call without ``seed=`` gets the seeds of ``plan`` for
    its call number (fresh and named, or the evaluation's replayed)."""

    def __init__(self, model: nn.Module, plan: NoisePlan):
        super().__init__()
        self.model, self.plan, self.calls = model, plan, 0

    def forward(self, x: torch.Tensor, uids: torch.Tensor, replicas: int = 1, replica: int = 0, **noise):
        if "seed" not in noise:
            noise.update(self.plan.kwargs(self.calls))
            self.calls += 1
        return self.model(x, uids, replicas=replicas, replica=replica, **noise)


class seeded_global_rngs:
    """Seed torch's (CPU and the current CUDA device), numpy's and Python's global generators with
    ``seed`` for the block, and put their states back after: user code that draws from them is
    reproducible, and draws nothing from the run's own streams."""

    def __init__(self, seed: int, device: torch.device):
        self.seed, self.device = int(seed), device

    def __enter__(self):
        import numpy as np
        self._np, self._py = np.random.get_state(), random.getstate()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        self._fork = torch.random.fork_rng(devices=devices)
        self._fork.__enter__()
        torch.manual_seed(self.seed)
        np.random.seed(self.seed % 2**32)
        random.seed(self.seed)
        return self

    def __exit__(self, *exc):
        import numpy as np
        self._fork.__exit__(*exc)
        np.random.set_state(self._np)
        random.setstate(self._py)
        return False


def _flat_norms(d: torch.Tensor) -> torch.Tensor:
    return d.flatten(1).norm(dim=1) if d.dim() > 1 else d.abs()


def check_adversarial(x: torch.Tensor, x_adv: Any, norm: str, eps: float, what: str) -> torch.Tensor:
    """``x_adv`` detached if it is a valid answer of an attack on ``x`` within ``(norm, eps)``; else
    PluginError naming ``what`` and the violation: not a tensor, another shape, dtype or device,
    NaN/inf, values outside [0, 1], or a perturbation larger than eps."""
    expected = f"expected a tensor like x ({tuple(x.shape)}, {x.dtype}, {x.device}) within the eps-ball"
    if not isinstance(x_adv, torch.Tensor):
        raise PluginError(f"{what} returned {type(x_adv).__name__}; {expected}")
    for name, got, want in (("shape", tuple(x_adv.shape), tuple(x.shape)), ("dtype", x_adv.dtype, x.dtype),
                            ("device", x_adv.device, x.device)):
        if got != want:
            raise PluginError(f"{what} returned a tensor of {name} {got}; expected {name} {want} (the input's)")
    x_adv = x_adv.detach()
    bad = int((~torch.isfinite(x_adv)).sum())
    if bad:
        raise PluginError(f"{what} returned {bad} NaN/inf value(s) of {x_adv.numel()}; expected finite images in [0, 1]")
    lo, hi = float(x_adv.min()), float(x_adv.max())
    if lo < -RANGE_TOL or hi > 1 + RANGE_TOL:
        raise PluginError(f"{what} returned values outside [0, 1] (min {lo:.4g}, max {hi:.4g}); expected images "
                          "clipped to [0, 1]")
    d = (x_adv - x).double()
    size = float(d.abs().flatten(1).max(1).values.max()) if norm == "linf" else float(_flat_norms(d).max())
    tol = eps * (1e-5 if norm == "linf" else 1e-4) + 1e-6
    if size > eps + tol:
        raise PluginError(f"{what} moved an example {size:.4g} from x in {norm}, above eps = {eps:.4g}; expected "
                          "x_adv inside the threat model (project onto the eps-ball)")
    return x_adv


class PluginAttack:
    """The attack of an ``[[attacks]]`` entry whose kind is an import path: the callable under the
    contract of this module (seeded noise of its declared mode, seeded global generators, the
    context, every output checked)."""

    def __init__(self, acfg, *, eval_seed: int, attack_seed: int, on_iteration: IterationHook | None = None):
        self.cfg, self.eval_seed, self.attack_seed, self.on_iteration = acfg, eval_seed, attack_seed, on_iteration
        self.fn: Callable = resolve_import_path(acfg.kind)
        self.wants_context = accepts_keyword(self.fn, "context")
        noise = acfg.noise or "stochastic"
        plan = {"replay": NoisePlan("replay", eval_seed), "replay-forward": NoisePlan("replay-forward", eval_seed)}
        self.plan = plan.get(noise, NoisePlan("fresh", attack_seed).scoped("plugin"))
        self.noise = noise

    @property
    def what(self) -> str:
        return f"plugin attack '{self.cfg.kind}' ({self.cfg.name})"

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, uids: torch.Tensor) -> torch.Tensor:
        x, uids = x.detach(), uids.detach()
        seen = NoisyModel(model, self.plan)
        batch = (int(uids[0]), int(uids[-1]), int(uids.shape[0])) if uids.numel() else (0, 0, 0)
        generator = torch.Generator(device=x.device).manual_seed(derive_seed(self.attack_seed, "generator", *batch))
        kwargs = {}
        if self.wants_context:
            kwargs["context"] = AttackContext(
                generator=generator, seed=self.attack_seed, uids=uids, noise=self.noise, model=seen, cfg=self.cfg,
                eval_seed=None if self.noise == "stochastic" else self.eval_seed, options=dict(self.cfg.options),
                on_iteration=self.on_iteration)
        with seeded_global_rngs(derive_seed(self.attack_seed, "global", *batch), x.device):
            x_adv = self.fn(seen, x.clone(), y.clone(), uids.clone(), self.cfg, **kwargs)
        return check_adversarial(x, x_adv, self.cfg.norm, self.cfg.eps, self.what)
