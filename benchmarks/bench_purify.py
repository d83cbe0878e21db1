"""Benchmark: one purification gradient d/dx sum(purify(x)), side by side.

Methods, same network (the shipped digits UNet, or a random one of the same config), same batch:

* ``ours-full`` / ``ours-checkpoint`` / ``ours-segments``: ``dbp_core.purify.Purifier`` per grad mode;
* ``plain``: the loop peers write — torch.randn noise, eager posterior-mean arithmetic, plain autograd;
* ``diffusers``: ``diffusers.DDPMScheduler`` (fixed_large, no clipping, custom timesteps) loop, plain autograd;
* ``floor``: the network's own forward+backward summed over the steps, timed alone.

Memory: every (method, steps) runs in a fresh subprocess; we report the growth of the process's
peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) during the first gradient,
over the RSS after setup (model loaded, one no-grad forward). This counts everything the
allocator really took (activations, saved tensors, noise), unlike tracemalloc, which does not see
torch's allocations. It is coarse (page granularity, allocator caching), so compare within a run.
Time: the best of ``--repeats`` gradients after that first one.

    python benchmarks/bench_purify.py                 # 10- and 100-step chains
    python benchmarks/bench_purify.py --steps 10 100 1000   # 1000 is slow on CPU (minutes per method)
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

METHODS = ("floor", "ours-full", "ours-checkpoint", "ours-segments", "plain", "diffusers")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _setup(batch: int):
    from dbp_core.models.unet import UNet
    from dbp_core.train import DEFAULT_UNET
    try:
        from dbp_core.models.zoo import default_diffusion
        net = default_diffusion("digits")
    except Exception:  # noqa: BLE001 — weights not shipped yet: same architecture, random weights
        net = UNet(DEFAULT_UNET).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.rand(batch, 1, 8, 8)
    uids = torch.arange(batch)
    with torch.no_grad():
        net(x, torch.zeros(batch, dtype=torch.long))
    return net, x, uids


def _t_star(steps: int) -> float:
    return 0.1 if steps <= 100 else 1.0


def _make(method: str, steps: int, net, x, uids):
    from dbp_core import noise
    from dbp_core.diffusion import linear_schedule, reverse_chain
    from dbp_core.purify import Purifier

    t_star = _t_star(steps)
    schedule = linear_schedule()
    n = schedule.steps_for(t_star)
    chain = reverse_chain(schedule, n, steps, "ddpm")
    b = x.shape[0]

    if method.startswith("ours-"):
        pur = Purifier(net, t_star=t_star, steps=steps, noise=noise.stochastic(), grad_mode=method[5:])
        return lambda v: pur(v, uids)

    if method == "plain":
        ab = schedule.alpha_bar
        ts = [st.t for st in chain]

        def plain(v):
            xt = ab[ts[0]].sqrt() * (2 * v - 1) + (1 - ab[ts[0]]).sqrt() * torch.randn_like(v)
            for i, t in enumerate(ts):
                ab_prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
                alpha = ab[t] / ab_prev
                eps = net(xt, torch.full((b,), t, dtype=torch.long))
                mean = (xt - (1 - alpha) / (1 - ab[t]).sqrt() * eps) / alpha.sqrt()
                xt = mean + ((1 - alpha).sqrt() * torch.randn_like(v) if i + 1 < len(ts) else 0)
            return (xt + 1) / 2
        return plain

    if method == "diffusers":
        from diffusers import DDPMScheduler
        sch = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                            variance_type="fixed_large", clip_sample=False)
        sch.set_timesteps(timesteps=[st.t for st in chain])

        def diff(v):
            t0 = torch.tensor([chain[0].t])
            xt = sch.add_noise(2 * v - 1, torch.randn_like(v), t0)
            for t in sch.timesteps:
                eps = net(xt, t.expand(b))
                xt = sch.step(eps, t, xt).prev_sample
            return (xt + 1) / 2
        return diff

    if method == "floor":
        ts = [st.t for st in chain]

        def floor(v):  # the network alone: forward+backward at each step, nothing else
            u = (2 * v - 1).detach().requires_grad_()
            for t in ts:
                net(u, torch.full((b,), t, dtype=torch.long)).sum().backward()
            return None
        return floor
    raise ValueError(method)


def _grad(fn, x):
    v = x.clone().requires_grad_()
    out = fn(v)
    if out is not None:
        out.sum().backward()
    return v.grad


def run_one(method: str, steps: int, batch: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    net, x, uids = _setup(batch)
    fn = _make(method, steps, net, x, uids)
    base = _rss_mb()
    t0 = time.perf_counter()
    _grad(fn, x)
    first = time.perf_counter() - t0
    peak = _rss_mb() - base
    times = [first]
    for _ in range(repeats):
        t0 = time.perf_counter()
        _grad(fn, x)
        times.append(time.perf_counter() - t0)
    return {"method": method, "steps": steps, "time_s": min(times), "peak_mb": peak}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    # 1 thread by default: on a shared 2-core machine, 2 OpenMP threads per process are up to 20x
    # slower (threads wait at every barrier for a descheduled peer); pass --threads 2 on an idle box.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "STEPS"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(run_one(a.one[0], int(a.one[1]), a.batch, a.repeats, a.threads)))
        return
    rows = []
    for steps in a.steps:
        for m in a.methods:
            r = subprocess.run([sys.executable, __file__, "--one", m, str(steps), "--batch", str(a.batch),
                                "--repeats", str(a.repeats), "--threads", str(a.threads)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{m} {steps}: failed\n{r.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(f"  done {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    print(f"\nbatch {a.batch} x 1x8x8, digits UNet, {a.threads} threads; time = best of {a.repeats + 1}; "
          "peak = growth of peak RSS during the first gradient (fresh process)")
    print(f"{'steps':>5} {'method':16s} {'time s':>8} {'x floor':>8} {'peak MB':>8} {'x ckpt-mem':>10}")
    for steps in a.steps:
        sel = {r["method"]: r for r in rows if r["steps"] == steps}
        fl = sel.get("floor", {}).get("time_s")
        ck = sel.get("ours-checkpoint", {}).get("peak_mb")
        for m in a.methods:
            if m not in sel:
                continue
            r = sel[m]
            ratio = f"{r['time_s'] / fl:8.2f}" if fl else "       -"
            mem = f"{r['peak_mb'] / ck:10.2f}" if ck else "         -"
            print(f"{steps:5d} {m:16s} {r['time_s']:8.3f} {ratio} {r['peak_mb']:8.1f} {mem}")
    seg = {r["steps"]: r["peak_mb"] for r in rows if r["method"] == "ours-segments"}
    if 100 in seg and 1000 in seg:
        print(f"segments peak memory 1000 vs 100 steps: {seg[1000] / max(seg[100], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
