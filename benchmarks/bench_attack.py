"""Benchmark: one PGD-EOT iteration (EOT 10) on the defended digits model, side by side.

* ``ours-batched``: ``dbp_core.attacks.eot_gradient`` — the 10 replicas purified side by side
  in one batch (replica k on its own noise streams), one backward;
* ``ours-chunk1``: the same function, one replica per forward (the memory-saving fallback);
* ``loop``: the per-replica Python loop peers write — for each replica a purification with
  ``torch.randn`` noise and eager arithmetic, loss.backward(), gradients summed.

Each method runs in a fresh subprocess; time is the best of ``--repeats`` iterations after a
warm-up, memory the growth of peak RSS during the first iteration (see bench_purify.py).

    python benchmarks/bench_attack.py [--batch 32] [--eot 10] [--steps 5]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

METHODS = ("ours-batched", "ours-chunk1", "loop")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _setup(batch: int, steps: int):
    from dbp_core.models import zoo
    from dbp_core.models.defended import DefendedClassifier
    from dbp_core.purify import Purifier
    eps_model = zoo.default_diffusion("digits").requires_grad_(False)
    clf = zoo.default_classifier("digits").requires_grad_(False)
    mean, std = zoo.default_normalisation("digits")
    purifier = Purifier(eps_model, t_star=0.2, steps=steps, grad_mode="full")
    model = DefendedClassifier(clf, purifier, mean, std)
    from dbp_core.data import load_dataset
    d = load_dataset("digits", "test")
    return model, d.x[:batch], d.y[:batch], d.uids[:batch]


def _loop_gradient(model, x, y, eot: int):
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


def run_one(method: str, batch: int, eot: int, steps: int, repeats: int) -> dict:
    torch.set_num_threads(2)
    from dbp_core.attacks import eot_gradient
    model, x, y, uids = _setup(batch, steps)
    with torch.no_grad():
        model(x, uids, seed=0)
    base = _rss_mb()
    fns = {
        "ours-batched": lambda: eot_gradient(model, x, y, uids, eot, seed=1)[0],
        "ours-chunk1": lambda: eot_gradient(model, x, y, uids, eot, chunk=1, seed=1)[0],
        "loop": lambda: _loop_gradient(model, x, y, eot),
    }
    fn = fns[method]
    fn()
    mem = _rss_mb() - base
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"method": method, "seconds": min(times), "peak_mb": mem}


def measure(batch: int = 32, eot: int = 10, steps: int = 5, repeats: int = 3) -> dict[str, dict]:
    out = {}
    for m in METHODS:
        r = subprocess.run([sys.executable, __file__, "--one", m, "--batch", str(batch), "--eot", str(eot),
                            "--steps", str(steps), "--repeats", str(repeats)], capture_output=True, text=True, check=True)
        out[m] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def report(res: dict[str, dict], batch: int, eot: int, steps: int) -> list[str]:
    loop = res["loop"]["seconds"]
    rows = [f"## PGD-EOT iteration: EOT {eot}, batch {batch}, {steps}-step chain (digits UNet), 2 threads",
            f"{'method':16s} {'s/iter':>8s} {'peak MB':>8s} {'speed-up vs loop':>17s}"]
    for m in METHODS:
        r = res[m]
        rows.append(f"{m:16s} {r['seconds']:8.3f} {r['peak_mb']:8.0f} {loop / r['seconds']:16.2f}x")
    rows.append("target: ours-batched >= 1.3x the per-replica loop")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--eot", type=int, default=10)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(run_one(a.one, a.batch, a.eot, a.steps, a.repeats)))
        return
    print("\n".join(report(measure(a.batch, a.eot, a.steps, a.repeats), a.batch, a.eot, a.steps)))


if __name__ == "__main__":
    main()
