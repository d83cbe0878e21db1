"""Benchmark: one ADDT training step vs a plain diffusion training step, side by side.

An ADDT step is K CGPO iterations (each a forward of the diffusion model and the classifier
and a backward to delta) plus one training step (forward + backward to the weights + AdamW +
EMA). Its floor is therefore about (1 + K) plain training steps: the ratio
``ADDT step / ((1 + K) x plain step)`` is the overhead of our CGPO + RBGM + bookkeeping.

    python benchmarks/bench_addt.py [--batch 32] [--iterations 5] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F


def _setup(batch: int, iterations: int):
    from dbp_core.addt import ADDTTrainer, CGPOSettings, TrainSettings
    from dbp_core.data import load_dataset
    from dbp_core.diffusion import linear_schedule
    from dbp_core.models import zoo
    from dbp_core.study import Normalized
    d = load_dataset("digits", "train")
    data = SimpleNamespace(x=d.x, y=d.y, uids=d.uids)
    clf = Normalized(zoo.default_classifier("digits"), *zoo.default_normalisation("digits")).eval()
    ab = linear_schedule().alpha_bar
    trainer = lambda mult: ADDTTrainer(zoo.default_diffusion("digits"), clf, data, ab,  # noqa: E731
                                       CGPOSettings(multiplier=mult, iterations=iterations),
                                       TrainSettings(batch_size=batch, warmup=0), seed=0)
    return trainer, data, ab


def _plain_step(model, opt, x0, t, ab):
    """What a plain DDPM fine-tuning step costs: L_simple forward, backward, AdamW."""
    a = ab[t].view(-1, 1, 1, 1)
    eps = torch.randn_like(x0)
    loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(batch: int = 32, iterations: int = 5, repeats: int = 5) -> dict[str, float]:
    torch.set_num_threads(2)
    make, data, ab = _setup(batch, iterations)
    addt, control = make(0.03), make(0.0)
    model = control.model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(data.x.shape[0], generator=g)[:batch]
    x0, t = data.x[idx] * 2 - 1, torch.randint(0, 1000, (batch,), generator=g)
    return {
        "plain_step": _best(lambda: _plain_step(model, opt, x0, t, ab), repeats),
        "control_step": _best(control.train_step, repeats),
        "addt_step": _best(addt.train_step, repeats),
    }


def report(t: dict[str, float], batch: int, iterations: int) -> list[str]:
    floor = (1 + iterations) * t["plain_step"]
    return [
        f"## ADDT step (CGPO K = {iterations}, batch {batch}, digits UNet), 2 threads",
        f"plain diffusion training step        {t['plain_step'] * 1e3:8.1f} ms",
        f"our lambda = 0 step (no CGPO)         {t['control_step'] * 1e3:8.1f} ms  "
        f"{t['control_step'] / t['plain_step']:5.2f}x plain (bookkeeping: EMA, addressed noise)",
        f"ADDT step                             {t['addt_step'] * 1e3:8.1f} ms  "
        f"{t['addt_step'] / t['plain_step']:5.2f}x plain",
        f"ADDT step / floor (1 + K plain steps)  {t['addt_step'] / floor:5.2f}x   target <= 1.15",
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    print("\n".join(report(measure(a.batch, a.iterations, a.repeats), a.batch, a.iterations)))


if __name__ == "__main__":
    main()
