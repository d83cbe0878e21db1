"""Benchmark: one ADDT training step vs a plain diffusion training step, side by side.

An ADDT step is K CGPO iterations (each a forward of the diffusion model and the classifier and a
backward to delta) plus one training step (forward + backward to the weights + AdamW + EMA).
Floors, each part timed alone:

* ``floor``: one plain DDPM training step (L_simple forward, backward, AdamW) + K bare CGPO passes
  (the diffusion model's forward at x_t, the classifier's forward on the one-step estimate, the
  cross-entropy, and the backward to x_t — the network work of a CGPO iteration, nothing else);
* ``(1 + K) plain steps``: the coarser floor of the issue text.

``ADDT step / floor`` is the overhead of our CGPO (noise, mixing, RBGM, bookkeeping) and of the
trainer (addressed noise, EMA, statistics). All functions run round-robin in one process
(benchmarks/_harness.py; one thread: thread CPU time): ratios are medians of per-round ratios,
times the best.

    python benchmarks/bench_addt.py [--batch 32] [--iterations 5] [--repeats 7]
"""
from __future__ import annotations

import statistics
from types import SimpleNamespace

import torch
import torch.nn.functional as F

try:
    from . import _harness as H
except ImportError:  # run as a script
    import _harness as H


def setup(batch: int, iterations: int):
    from dbp_core.addt import ADDTTrainer, CGPOSettings, TrainSettings
    from dbp_core.models import zoo
    from dbp_core.models.datasets import load_dataset
    from dbp_core.models.normalized import Normalized
    from dbp_core.purifier.diffusion import linear_schedule
    d = load_dataset("digits", "train")
    data = SimpleNamespace(x=d.x, y=d.y, uids=d.uids)
    clf = Normalized(zoo.default_classifier("digits"), *zoo.default_normalisation("digits")).eval()
    ab = linear_schedule().alpha_bar

    def trainer(mult: float):
        return ADDTTrainer(zoo.default_diffusion("digits"), clf, data, ab,
                           CGPOSettings(multiplier=mult, iterations=iterations),
                           TrainSettings(batch_size=batch, warmup_steps=0), seed=0)
    return trainer, data, ab, clf


def plain_step(model, opt, x0, t, ab):
    """What a plain DDPM fine-tuning step costs: L_simple forward, backward, AdamW."""
    a = ab[t].view(-1, 1, 1, 1)
    eps = torch.randn_like(x0)
    loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps)
    opt.zero_grad()
    loss.backward()
    opt.step()


def bare_cgpo_pass(model, clf, x_t, y, t, ab):
    """The network work of one CGPO iteration: eps forward, classifier on the one-step estimate,
    cross-entropy, backward to x_t (weights' gradients not computed)."""
    a = ab[t].view(-1, 1, 1, 1)
    u = x_t.detach().requires_grad_(True)
    x0_hat = (u - (1 - a).sqrt() * model(u, t)) / a.sqrt()
    loss = F.cross_entropy(clf((x0_hat + 1) * 0.5), y, reduction="none")
    return torch.autograd.grad(loss.sum(), u)[0]


def measure(batch: int = 32, iterations: int = 5, repeats: int = 7) -> H.Timings:
    make, data, ab, clf = setup(batch, iterations)
    addt, control = make(0.03), make(0.0)
    model = control.model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(data.x.shape[0], generator=g)[:batch]
    x0, y, t = data.x[idx] * 2 - 1, data.y[idx], torch.randint(0, 1000, (batch,), generator=g)
    a = ab[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=g)
    cgpo_model = make(0.03).model.eval()

    def cgpo_floor():
        for _ in range(iterations):
            bare_cgpo_pass(cgpo_model, clf, x_t, y, t, ab)

    fns = {
        "plain_step": lambda: plain_step(model, opt, x0, t, ab),
        "cgpo_floor": cgpo_floor,
        "control_step": control.train_step,
        "addt_step": addt.train_step,
    }
    return H.interleaved(fns, repeats)


def rows(T: H.Timings, batch: int, iterations: int) -> list[H.Row]:
    area = f"ADDT digits, K = {iterations}, batch {batch}"
    t = {k: T.best(k) for k in T}
    ms = lambda v: f"{v * 1e3:.1f} ms"  # noqa: E731
    return [
        H.Row(area, "ADDT step vs floor (plain step + K bare CGPO passes)",
              T.ratio("addt_step", ("plain_step", "cgpo_floor")), target="<= 1.15",
              detail=f"{ms(t['addt_step'])} vs {ms(t['plain_step'])} + {ms(t['cgpo_floor'])}"),
        H.Row(area, "ADDT step vs (1 + K) plain training steps", T.ratio("addt_step", "plain_step", 1 + iterations),
              target="<= 1.15", detail=f"{ms(t['addt_step'])} vs {1 + iterations} x {ms(t['plain_step'])}"),
        H.Row(area, "ADDT step vs one plain diffusion training step", T.ratio("addt_step", "plain_step"),
              detail=f"CGPO share of the step ~{1 - T.ratio('control_step', 'addt_step'):.0%}"),
        H.Row(area, "our lambda = 0 step (no CGPO) vs plain step", T.ratio("control_step", "plain_step"),
              detail=f"{ms(t['control_step'])}: addressed noise, EMA, grad clipping, statistics"),
        H.Row(area, "CGPO iterations vs K bare CGPO passes",
              statistics.median((a - c) / f for a, c, f in zip(T["addt_step"], T["control_step"], T["cgpo_floor"])),
              detail="(ADDT step - lambda = 0 step) / bare passes, per round: CGPO's own overhead"),
    ]


def main(argv=None):
    H.timing_cli(__doc__, measure, rows, argv)

if __name__ == "__main__":
    main()
