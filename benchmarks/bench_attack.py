"""Benchmark: one PGD-EOT iteration (EOT 10) on the defended digits model, side by side.

* ``ours-batched``: ``dbp_core.attacks.eot_gradient`` — the 10 replicas purified side by side in
  one batch (replica k on its own noise streams), one backward; purifier grad mode ``full``
  (plain autograd, like the loop it is compared with);
* ``ours-batched-ckpt``: the same with grad mode ``checkpoint`` (the memory-bounded default);
* ``ours-chunk1``: the same function, one replica per forward (``eot_chunk=1``, the fallback);
* ``loop``: the per-replica Python loop peers write — for each replica a purification with
  ``torch.randn`` noise and eager arithmetic, plain autograd, gradients summed.

An iteration = the EOT gradient + the Linf sign step and projection. All methods run round-robin
in one process (benchmarks/_harness.py; one thread: thread CPU time): ratios are medians of per-round
ratios over ``--repeats`` rounds, times the best.

    python benchmarks/bench_attack.py [--batch 32] [--eot 10] [--steps 5] [--repeats 5]
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

try:
    from . import _harness as H
except ImportError:  # run as a script
    import _harness as H

METHODS = ("ours-batched", "ours-batched-ckpt", "ours-chunk1", "loop")


def setup(batch: int, steps: int):
    from dbp_core.models import zoo
    from dbp_core.models.datasets import load_dataset
    from dbp_core.models.defended import DefendedClassifier
    from dbp_core.purifier import Purifier
    eps_model = zoo.default_diffusion("digits")  # weights not frozen, as the study loads them
    clf = zoo.default_classifier("digits").requires_grad_(False)
    mean, std = zoo.default_normalisation("digits")
    models = {mode: DefendedClassifier(clf, Purifier(eps_model, t_star=0.2, steps=steps, grad_mode=mode), mean, std)
              for mode in ("full", "checkpoint")}
    d = load_dataset("digits", "test")
    return models, d.x[:batch], d.y[:batch], d.uids[:batch]


def loop_gradient(model, x, y, eot: int):
    """The peer's loop: a DiffPure purification per replica with torch.randn, plain autograd."""
    p = model.purifier
    ab = p.schedule.alpha_bar
    t_star = p.chain[0].t
    x = x.detach().requires_grad_(True)
    grad = torch.zeros_like(x)
    for _ in range(eot):
        xt = ab[t_star].sqrt() * (2 * x - 1) + (1 - ab[t_star]).sqrt() * torch.randn_like(x)
        for st in p.chain:
            eps = p.eps_model(xt, torch.full((x.shape[0],), st.t))
            xt = st.c_x * (xt - st.c_eps * eps) + st.sigma * torch.randn_like(xt)
        loss = F.cross_entropy(model.classify((xt + 1) / 2), y, reduction="sum")
        grad += torch.autograd.grad(loss, x)[0]
    return grad


def iteration_fns(models, x, y, uids, eot: int) -> dict:
    from dbp_core.attacks import eot_gradient
    eps_step, eps = 2 / 255, 8 / 255

    def pgd_step(grad):  # the rest of a Linf PGD iteration
        return (x + (x + eps_step * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)

    return {
        "ours-batched": lambda: pgd_step(eot_gradient(models["full"], x, y, uids, eot, seed=1)[0]),
        "ours-batched-ckpt": lambda: pgd_step(eot_gradient(models["checkpoint"], x, y, uids, eot, seed=1)[0]),
        "ours-chunk1": lambda: pgd_step(eot_gradient(models["full"], x, y, uids, eot, chunk=1, seed=1)[0]),
        "loop": lambda: pgd_step(loop_gradient(models["full"], x, y, eot)),
    }


def measure(batch: int = 32, eot: int = 10, steps: int = 5, repeats: int = 5) -> H.Timings:
    models, x, y, uids = setup(batch, steps)
    return H.interleaved(iteration_fns(models, x, y, uids, eot), repeats)


def rows(T: H.Timings, batch: int, eot: int, steps: int) -> list[H.Row]:
    area = f"PGD-EOT {eot}, batch {batch}, {steps}-step chain"
    t = {k: T.best(k) for k in T}
    out = [H.Row(area, "ours-batched (full) vs per-replica loop: speed-up", T.ratio("loop", "ours-batched"),
                 target=">= 1.3", detail=f"{t['ours-batched']:.3f} s vs {t['loop']:.3f} s per iteration")]
    for m, label in (("ours-batched-ckpt", "ours-batched (checkpoint, the default mode)"),
                     ("ours-chunk1", "ours one replica per forward (eot_chunk=1)")):
        out.append(H.Row(area, f"{label} vs loop: speed-up", T.ratio("loop", m), detail=f"{t[m]:.3f} s"))
    return out


def main(argv=None):
    H.timing_cli(__doc__, measure, rows, argv)

if __name__ == "__main__":
    main()
