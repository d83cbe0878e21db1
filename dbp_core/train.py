"""Training of the embedded default on the CPU: the digits DDPM and the digits classifier.

Deterministic given a seed (fixed thread count; model init from ``torch.manual_seed``;
minibatches and timesteps from a seeded ``torch.Generator``; training noise addressed by
(seed, TRAIN stream, uid, iteration)). Re-create the shipped weights with::

    python -m dbp_core.train --out dbp_core/weights --seed 0

``train_default(out_dir, seed, ...)`` is the library entry (``dbp train``). It prints and
returns the metrics: classifier clean test accuracy (target >= 95%), purified clean accuracy at
t* = 0.1 (target >= 90%), and the share of DDPM samples the classifier labels with confidence
>= 0.9.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import ops
from .models.classifiers import DIGITS_MEAN, DIGITS_STD, DigitsCNN
from .models.datasets import ImageSet, load_digits
from .models.defended import DefendedClassifier
from .models.loaders import save_checkpoint
from .models.normalized import Normalized
from .models.unet import UNet, UNetConfig
from .purifier import noise
from .purifier.diffusion import Schedule, eps_prediction_loss, linear_schedule, reverse_chain, reverse_step
from .purifier.purifier import Purifier

DEFAULT_UNET = UNetConfig(in_channels=1, base_channels=16, channel_mult=(1, 2, 2), attention=True)
DEFAULT_DDPM_STEPS = 2000
DEFAULT_BATCH = 64
CONFIDENT = 0.9


def set_threads(n: int = 2) -> None:
    """Fixed intra-op threads: results then do not depend on the machine's core count."""
    torch.set_num_threads(n)


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translation by -1..1 pixels (zero fill), one shift per image."""
    b = x.shape[0]
    pad = F.pad(x, (1, 1, 1, 1))
    dx = torch.randint(0, 3, (b,), generator=gen)
    dy = torch.randint(0, 3, (b,), generator=gen)
    rows = dy[:, None] + torch.arange(x.shape[2])
    cols = dx[:, None] + torch.arange(x.shape[3])
    out = pad[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def train_classifier(train: ImageSet, seed: int, epochs: int = 20, batch: int = 64, progress: bool = True) -> DigitsCNN:
    """DigitsCNN with shift augmentation and light Gaussian noise (sigma ~ U(0, 0.1)), so that it
    tolerates the small residual differences of purified images. Adam, cosine lr."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = DigitsCNN(width=16)
    norm = Normalized(model, DIGITS_MEAN, DIGITS_STD)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    n = len(train)
    total = epochs * math.ceil(n / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=total)
    model.train()
    bar = tqdm(total=total, desc="classifier", disable=not progress, file=sys.stderr)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            x = _shift(train.x[idx], gen)
            sig = torch.rand(x.shape[0], 1, 1, 1, generator=gen) * 0.1
            x = x + sig * torch.randn(x.shape, generator=gen)
            loss = F.cross_entropy(norm(x), train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


class EMA:
    """Exponential moving average of parameters with the usual warm-up min(decay, (1+n)/(10+n))."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.n = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module):
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)


def train_ddpm(train: ImageSet, seed: int, steps: int = DEFAULT_DDPM_STEPS, batch: int = DEFAULT_BATCH,
               config: UNetConfig = DEFAULT_UNET, lr: float = 2e-3, ema_decay: float = 0.995,
               progress: bool = True) -> tuple[UNet, dict]:
    """DDPM eq. 14 (L_simple) on x in [-1, 1], t ~ U{0..999}; AdamW, 100 warm-up steps then cosine
    decay to lr/20, grad-norm clip 1, EMA. Returns the EMA model (eval) and stats."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 2)
    schedule = linear_schedule()
    model = UNet(config)
    ema = EMA(model, ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def lr_at(i):
        if i < 100:
            return lr * (i + 1) / 100
        p = (i - 100) / max(1, steps - 100)
        return lr / 20 + (lr - lr / 20) * 0.5 * (1 + math.cos(math.pi * p))

    x_all = train.x * 2 - 1
    n = len(train)
    stream = noise.stream(noise.TRAIN)
    losses = []
    model.train()
    bar = tqdm(range(steps), desc="ddpm", disable=not progress, file=sys.stderr)
    t0 = time.time()
    for i in bar:
        idx = torch.randint(0, n, (batch,), generator=gen)
        t = torch.randint(0, schedule.num_steps, (batch,), generator=gen)
        # minibatches are drawn with replacement, so a uid may repeat within a batch; the noise address
        # (seed, TRAIN, uid * batch + slot, iteration) keeps each slot's draw distinct.
        uids = train.uids[idx] * batch + torch.arange(batch)
        for g in opt.param_groups:
            g["lr"] = lr_at(i)
        loss = eps_prediction_loss(model, schedule, x_all[idx], t, seed, stream, uids, i)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model)
        losses.append(loss.item())
        if i % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
    model.load_state_dict(ema.shadow)
    stats = {"final_loss_mean_last_200": sum(losses[-200:]) / len(losses[-200:]),
             "train_seconds": round(time.time() - t0, 1), "steps": steps, "batch": batch}
    return model.eval(), stats


@torch.no_grad()
def sample(eps_model, n: int, shape: tuple[int, ...], steps: int, seed: int, schedule: Schedule | None = None,
           sampler: str = "ddpm") -> torch.Tensor:
    """Unconditional samples in [0, 1]: x_T ~ N(0, I) (addressed), respaced reverse chain from
    T - 1 to 0 (DDPM Algorithm 2 / DDIM)."""
    schedule = schedule or linear_schedule()
    uids = torch.arange(n, dtype=torch.int64)
    chain = reverse_chain(schedule, schedule.num_steps, steps, sampler)
    x = ops.normal((n, *shape), seed, noise.stream(noise.FORWARD), uids, schedule.num_steps)
    for st in chain:
        t = torch.full((n,), st.t, dtype=torch.long)
        x = reverse_step(x, eps_model(x, t), st, seed, noise.stream(noise.REVERSE), uids)
    return ((x + 1) / 2).clamp(0, 1)


@torch.no_grad()
def accuracy(logits_fn, data: ImageSet, batch: int = 512) -> float:
    correct = 0
    for i in range(0, len(data), batch):
        correct += (logits_fn(data.x[i:i + batch], data.uids[i:i + batch]).argmax(1) == data.y[i:i + batch]).sum().item()
    return correct / len(data)


def evaluate(classifier, ddpm, seed: int, progress: bool = True) -> dict:
    """The printed targets: clean accuracy, purified accuracy (t* = 0.1; 10- and 100-step DDPM
    chains, replayed seed), share of confident samples."""
    test = load_digits("test")
    plain = Normalized(classifier, DIGITS_MEAN, DIGITS_STD)
    m = {"classifier_clean_test_acc": accuracy(lambda x, u: plain(x), test)}
    for steps in (10, 100):
        pur = Purifier(ddpm, t_star=0.1, steps=steps, noise=noise.replay(seed), grad_mode="none")
        d = DefendedClassifier(classifier, pur, DIGITS_MEAN, DIGITS_STD)
        m[f"purified_clean_test_acc_t0.1_{steps}steps"] = accuracy(d, test, batch=360)
    xs = sample(ddpm, 200, (1, 8, 8), steps=50, seed=seed)
    p = torch.softmax(plain(xs), 1).max(1).values
    m["samples_confident_share"] = (p >= CONFIDENT).float().mean().item()
    m["samples_class_histogram"] = torch.bincount(plain(xs).argmax(1), minlength=10).tolist()
    return m


def train_default(out_dir: str | Path, seed: int = 0, ddpm_steps: int = DEFAULT_DDPM_STEPS,
                  classifier_epochs: int = 20, batch: int = DEFAULT_BATCH, threads: int = 1,
                  progress: bool = True, command: str | None = None) -> dict:
    """Train classifier + DDPM, evaluate, write ``digits_classifier`` and ``digits_ddpm``
    checkpoints (safetensors + json with command, seed, steps, metrics) to ``out_dir``."""
    set_threads(threads)
    out = Path(out_dir)
    train = load_digits("train")
    t0 = time.time()
    clf = train_classifier(train, seed, epochs=classifier_epochs, progress=progress)
    clf_s = time.time() - t0
    ddpm, stats = train_ddpm(train, seed, steps=ddpm_steps, batch=batch, progress=progress)
    metrics = evaluate(clf, ddpm, seed, progress)
    metrics.update({"ddpm_" + k: v for k, v in stats.items()}, classifier_train_seconds=round(clf_s, 1))
    meta = {"command": command or f"python -m dbp_core.train --out {out} --seed {seed} --ddpm-steps {ddpm_steps}",
            "seed": seed, "ddpm_steps": ddpm_steps, "classifier_epochs": classifier_epochs, "batch": batch,
            "threads": threads, "torch": torch.__version__, "metrics": metrics}
    save_checkpoint(clf, out / "digits_classifier", "digits_cnn", {"num_classes": 10, "width": 16}, meta)
    save_checkpoint(ddpm, out / "digits_ddpm", "unet", DEFAULT_UNET.to_dict(), meta)
    targets = [("classifier clean test accuracy", metrics["classifier_clean_test_acc"], 0.95),
               ("purified clean accuracy (t*=0.1, 10 steps)", metrics["purified_clean_test_acc_t0.1_10steps"], 0.90),
               ("purified clean accuracy (t*=0.1, 100 steps)", metrics["purified_clean_test_acc_t0.1_100steps"], 0.90)]
    for name, v, target in targets:
        print(f"{name}: {v:.2%} (target >= {target:.0%}) {'OK' if v >= target else 'BELOW TARGET'}")
    print(f"DDPM samples classified with confidence >= {CONFIDENT}: {metrics['samples_confident_share']:.1%} "
          f"(class histogram {metrics['samples_class_histogram']})")
    print(f"DDPM final loss {stats['final_loss_mean_last_200']:.4f} in {stats['train_seconds']}s; wrote {out}")
    return metrics


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train the embedded default (digits DDPM + classifier) on CPU.")
    ap.add_argument("--out", default=str(Path(__file__).parent / "weights"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ddpm-steps", type=int, default=DEFAULT_DDPM_STEPS)
    ap.add_argument("--classifier-epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    cmd = "python -m dbp_core.train " + " ".join(sys.argv[1:] if argv is None else argv)
    metrics = train_default(a.out, a.seed, a.ddpm_steps, a.classifier_epochs, threads=a.threads, command=cmd)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
