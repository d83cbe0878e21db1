"""ADDT fine-tuning (docs/science.md, "ADDT"): per step, CGPO finds delta
for the batch, then the model learns to predict the mixed noise eps' (delta
included) with ``|| eps_theta(sqrt(ab) x0 + sqrt(1-ab) eps', t) - eps' ||^2``.

Optimiser as the authors' script (``train_ADDT.py``): AdamW (0.95, 0.999), weight
decay 1e-6, a constant learning rate (their ``--lr_scheduler constant`` ignores the
warm-up steps it is given: ``warmup_steps = 0``; a positive value ramps it linearly),
grad-norm clip 1.0, an EMA of the weights (decay 1 - (1 + step)^-power, capped at
max_decay, as diffusers' EMAModel), dropout 0.1 in every dropout layer of the UNet while
it trains, and CGPO run with the model in train mode (dropout active). Everything
random in a step — which examples, their t, flips, CGPO's noise, the training noise,
the dropout masks (``models/dropout.py``) — is a function of (seed, step) and the
examples' uids, so a step is bit-identical when repeated, whatever the number of
processes, and a resumed run continues exactly where it stopped.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import dist, ops
from ..models.dropout import dropout_addresses, set_dropout
from ..purifier import noise as noise_mod
from ..purifier.noise import derive_seed
from .cgpo import DROPOUT_STREAM, CGPOSettings, cgpo, diffuse, lambda_t, mixed_noise


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 800
    batch_size: int = 32
    lr: float = 2e-4
    warmup_steps: int = 0  # the authors': a constant learning rate
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 1e-6
    grad_clip: float = 1.0
    ema: bool = True
    ema_max_decay: float = 0.9999
    ema_power: float = 0.75
    t_max: int = 1000  # t ~ U{0 .. t_max - 1}: 1000 (paper) or the purification range
    hflip: bool = False
    dropout: float | None = None  # probability set in every dropout layer while training; None: leave them
    cgpo_train_mode: bool = True  # CGPO probes the model in train mode (dropout active), as the authors

    @classmethod
    def from_config(cls, a, t_max: int, hflip: bool) -> "TrainSettings":
        return cls(a.steps, a.batch_size, a.lr, a.warmup_steps, tuple(a.betas), a.weight_decay, a.grad_clip, a.ema,
                   a.ema_max_decay, a.ema_power, t_max, hflip, a.dropout, a.cgpo_train_mode)


_PER_EXAMPLE = {"loss", "lambda_mean", "cgpo_loss_init", "cgpo_loss_final"}  # batch means of this rank's share


class ADDTTrainer:
    """Fine-tunes ``eps_model`` in place; ``train_step()`` runs one step and returns its statistics.

    ``data``: an object with x (float [N, C, H, W] in [0, 1]), y, uids. ``classifier`` maps
    [0, 1] images to logits (normalisation included) and stays frozen."""

    def __init__(self, eps_model, classifier, data, alpha_bar: torch.Tensor, cgpo_settings: CGPOSettings,
                 train: TrainSettings, seed: int):
        self.model, self.classifier = eps_model, classifier.eval().requires_grad_(False)
        self.x, self.y, self.uids = data.x, data.y, data.uids
        self.alpha_bar = alpha_bar.to(self.x.device)
        self.s, self.t, self.seed = cgpo_settings, train, int(seed)
        rank, world = dist.world()
        if world > min(train.batch_size, self.x.shape[0]):
            raise ValueError(f"addt.batch_size ({train.batch_size}) must be at least the number of processes ({world})")
        # every dropout layer gets the configured probability and addressed masks (before the EMA
        # copy is made, so both have the same modules)
        self.dropout_layers = set_dropout(self.model, train.dropout) if train.dropout is not None else 0
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=train.lr, betas=train.betas,
                                     weight_decay=train.weight_decay)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False) if train.ema else None
        # under torchrun each process trains on its share of the global batch; DDP averages the
        # gradients (CGPO, the EMA and checkpoints use the unwrapped model, identical on every rank)
        self.ddp = dist.wrap_ddp(self.model)
        self.step = 0

    # --- what a step draws ---

    def batch_plan(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(example indices, timesteps, flip flags) of the global batch of ``step``."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, "addt-batch", step))
        n = self.x.shape[0]
        idx = torch.randperm(n, generator=g)[: min(self.t.batch_size, n)]
        t = torch.randint(0, self.t.t_max, (idx.numel(),), generator=g)
        flip = torch.rand(idx.numel(), generator=g) < 0.5
        return idx, t, flip & self.t.hflip

    def learning_rate(self, step: int) -> float:
        """Constant (the authors'), after a linear warm-up over ``warmup_steps`` steps if any."""
        return self.t.lr * min(1.0, (step + 1) / self.t.warmup_steps) if self.t.warmup_steps else self.t.lr

    def dropout_seed(self, step: int, forward: int) -> int:
        """Seed of the dropout masks of forward pass ``forward`` of ``step`` (0: the training
        forward, k = 1..K: CGPO's iteration k); masks are addressed by uid (models/dropout.py)."""
        return derive_seed(self.seed, "addt-dropout", step, forward)

    def ema_decay(self, step: int) -> float:
        return min(self.t.ema_max_decay, 1.0 - (1.0 + step) ** -self.t.ema_power)

    def uses_cgpo(self) -> bool:
        return self.s.mapping == "linf-pgd" or self.s.multiplier > 0

    # --- one step ---

    def train_step(self) -> dict:
        idx, t, flip = self.batch_plan(self.step)
        global_n = idx.numel()
        mine = dist.shard(global_n)
        if not isinstance(mine, slice):
            mine = torch.tensor(mine, dtype=torch.long)
        idx, t, flip = idx[mine], t[mine], flip[mine]
        dev = self.x.device
        t = t.to(dev)
        x0 = self.x[idx] * 2.0 - 1.0
        x0 = torch.where(flip.to(dev).view(-1, 1, 1, 1), x0.flip(-1), x0)
        y, uids, ab = self.y[idx], self.uids[idx], self.alpha_bar[t]
        seed = derive_seed(self.seed, "addt-step", self.step)
        stats = {"step": self.step}
        if self.s.mapping == "rbgm":
            stats["lambda_mean"] = float(lambda_t(ab, self.s.multiplier, self.s.clamp).mean())

        # Under DDP every rank must reach the forward (buffer broadcast) and the backward
        # (gradient all-reduce) together: each part runs guarded, so a failure on one rank is
        # raised on every rank, with its message, before anyone enters DDP's collectives.
        def perturbation():
            if not self.uses_cgpo():
                return torch.zeros_like(x0)
            self.model.train(self.t.cgpo_train_mode)  # the authors probe the model in train mode
            res = cgpo(self.model, self.classifier, x0, y, t, uids, ab, seed, self.s,
                       dropout_seed=lambda k: self.dropout_seed(self.step, k))
            stats.update(cgpo_loss_init=res.loss_first, cgpo_loss_final=res.loss_last)
            return res.delta

        delta = dist.guarded(perturbation)

        def denoising_loss():
            self.model.train()
            eps = ops.normal(x0.shape, seed, noise_mod.stream(noise_mod.ADDT_NOISE), uids, 0, x0.dtype)
            target = mixed_noise(eps, delta, ab, self.s)
            with dropout_addresses(self.dropout_seed(self.step, 0), DROPOUT_STREAM, uids):
                value = F.mse_loss(self.ddp(diffuse(x0, target, ab), t), target)
            if not torch.isfinite(value):
                raise FloatingPointError(f"ADDT step {self.step}: non-finite denoising loss {float(value)}")
            return value

        loss = dist.guarded(denoising_loss)
        self.opt.zero_grad(set_to_none=True)
        (loss * dist.ddp_loss_scale(idx.numel(), global_n)).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t.grad_clip)
        for group in self.opt.param_groups:
            group["lr"] = self.learning_rate(self.step)
        self.opt.step()
        if self.ema is not None:
            self._update_ema(self.ema_decay(self.step))
        self.step += 1
        stats.update(loss=float(loss.detach()), grad_norm=float(grad_norm), lr=self.learning_rate(self.step - 1))
        return self._global_means(stats, idx.numel(), global_n)

    @staticmethod
    def _global_means(stats: dict, local_n: int, global_n: int) -> dict:
        """Under DDP the per-example statistics (losses, lambda) are this rank's share: average
        them over the ranks, weighted by shard size, so the logged values are the global batch's."""
        if not dist.is_distributed():
            return stats
        parts = dist.gather_objects((local_n, {k: v for k, v in stats.items() if k in _PER_EXAMPLE}))
        for k in _PER_EXAMPLE & stats.keys():
            stats[k] = sum(n * p[k] for n, p in parts if n) / global_n
        return stats

    @torch.no_grad()
    def _update_ema(self, decay: float) -> None:
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.model.buffers()):
            e.copy_(b)

    def evaluation_model(self):
        """The weights to evaluate: the EMA when kept, else the raw model (eval mode)."""
        return (self.ema if self.ema is not None else self.model).eval()

    # --- checkpoints ---

    def state_dict(self) -> dict:
        return {"step": self.step, "model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])


def denoising_loss_under_cgpo(eps_model, classifier, data, alpha_bar, s: CGPOSettings, t_max: int, seed: int,
                              batches: int = 4, batch_size: int = 64) -> float:
    """Mean denoising MSE of ``eps_model`` on CGPO-perturbed inputs (CGPO run against the model
    itself), over fixed, seeded batches: lower means the model removes the perturbations better."""
    total = 0.0
    for b in range(batches):
        g = torch.Generator().manual_seed(derive_seed(seed, "eval-batch", b))
        idx = torch.randperm(data.x.shape[0], generator=g)[:batch_size]
        t = torch.randint(0, t_max, (idx.numel(),), generator=g)
        x0, uids = data.x[idx] * 2.0 - 1.0, data.uids[idx]
        ab = alpha_bar[t]
        bseed = derive_seed(seed, "eval-step", b)
        delta = cgpo(eps_model, classifier, x0, data.y[idx], t, uids, ab, bseed, s).delta
        eps = ops.normal(x0.shape, bseed, noise_mod.stream(noise_mod.ADDT_NOISE), uids, 0, x0.dtype)
        target = mixed_noise(eps, delta, ab, s)
        with torch.no_grad():
            total += float(F.mse_loss(eps_model(diffuse(x0, target, ab), t), target))
    return total / batches
