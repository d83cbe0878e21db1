"""Headline benchmark: one purification gradient on the real CIFAR-10 DDPM architecture.

A diffusers ``UNet2DModel`` with the google/ddpm-cifar10-32 configuration (35.7 M parameters,
random weights — time and memory do not depend on the weight values), batch 4, 3x32x32,
t* = 0.1, chains of 5 / 20 / 100 steps. Methods (benchmarks/bench_purify.py has their code):

* ``plain``: the autograd loop peers write (torch.randn noise, eager arithmetic);
* ``peer-ckpt``: the same loop with each step under ``torch.utils.checkpoint(use_reentrant=False)``;
* ``ours-full`` / ``ours-checkpoint`` / ``ours-segments``: ``Purifier`` with the UNet wrapped by
  ``dbp_core.models.loaders.DiffusersEps`` as its eps_model.

Each (method, steps) runs in a fresh process: build the model, reset the peak-RSS mark, compute
one gradient d/dx <w, purify(x)>. Peak memory = the process's peak RSS during that gradient
(VmHWM: libraries and weights included, as a user sees it). The gradient's thread CPU time is shown
too, but processes run at different moments of a shared machine's load: the time ratios with
targets come from the round-robin comparison in one process (bench_purify.py --arch cifar, which
run_all.py runs as its ``cifar-time`` section).
A method whose memory, extrapolated linearly from its shorter chains, exceeds ``--mem-limit-gb``
is not run (a plain loop needs ~20 GB at 100 steps); its time at that length is extrapolated from
its per-step time and marked so.

Targets (docs/performance.md): ours <= 1.0 GB at 20 steps, <= 1.1x that at 100 steps (and, from the round-robin
timing, <= 1.4x the plain loop's time).

    python benchmarks/bench_cifar.py                       # 5/20/100 steps, ~40 min on one core
    python benchmarks/bench_cifar.py --steps 5 20           # ~10 min
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

try:
    from . import _harness as H
except ImportError:  # run as a script
    import _harness as H

METHODS = ("plain", "peer-ckpt", "ours-full", "ours-checkpoint", "ours-segments")
# the memory-bounded modes the targets are about (``full`` is plain autograd by design)
BOUNDED = ("ours-checkpoint", "ours-segments")


def one(method: str, steps: int, second_run_max: int) -> dict:
    import bench_purify as BP

    net, x, w, uids = BP.setup("cifar")
    params = sum(p.numel() for p in net.parameters())
    fn = BP.make_method(method, steps, net, x, w, uids)
    H.reset_peak_rss()
    base = H.current_rss_mb()
    t0 = time.thread_time()
    fn()
    first = time.thread_time() - t0
    peak = H.peak_rss_mb()
    times = [first]
    if steps <= second_run_max:
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return {"method": method, "steps": steps, "peak_mb": peak, "base_mb": base, "seconds": min(times),
            "params": params}


def measure(steps_list, methods, mem_limit_gb: float, second_run_max: int, log=None) -> dict:
    def run_one(m: str, s: int) -> dict:
        return H.run_json([__file__, "--one", m, str(s), "--second-run-max", str(second_run_max)])

    return H.memory_sweep(methods, steps_list, run_one, "peak_mb", mem_limit_gb * 1024, also_estimate=("seconds",),
                          log=log and (lambda msg: log(f"cifar {msg}")),
                          describe=lambda r: f"peak {r['peak_mb']:.0f} MB, {r['seconds']:.1f} s")


def rows(res: dict) -> list[H.Row]:
    area = "purify CIFAR-10 DDPM, batch 4"
    out = []
    params = next((r["params"] for r in res.values() if "params" in r), None)
    if params:
        out.append(H.Row(area, "UNet2DModel (google/ddpm-cifar10-32 config) parameters", params / 1e6, unit="M",
                         detail="random weights; one intra-op thread"))

    def sec(m, s):
        r = res.get((m, s), {})
        return r.get("seconds", r.get("est_seconds"))

    for m, s, r in H.sweep_points(res, METHODS):
        if r.get("skipped"):
            out.append(H.skipped_row(area, f"{m} peak RSS, {s} steps", "GB", r, "not run"))
            continue
        p = sec("plain", s)
        est = res.get(("plain", s), {}).get("skipped")
        detail = f"gradient {r['seconds']:.1f} s in its process" + (
            f" ({r['seconds'] / p:.2f}x plain{', extrapolated' if est else ''})" if p and m != "plain" else "")
        target = "<= 1.0" if m in BOUNDED and s == 20 else ""
        out.append(H.Row(area, f"{m} peak RSS, {s} steps", r["peak_mb"] / 1024, unit="GB", target=target,
                         detail=detail + f"; base {r['base_mb'] / 1024:.2f} GB"))
    for m in ("ours-full", "ours-checkpoint", "ours-segments", "peer-ckpt"):
        a, b = res.get((m, 100), {}), res.get((m, 20), {})
        if "peak_mb" in a and "peak_mb" in b:
            out.append(H.Row(area, f"{m} peak RSS 100 vs 20 steps", a["peak_mb"] / b["peak_mb"],
                             target="<= 1.1" if m in BOUNDED else "",
                             detail=f"{a['peak_mb'] / 1024:.2f} vs {b['peak_mb'] / 1024:.2f} GB"))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[5, 20, 100])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--mem-limit-gb", type=float, default=8.0)
    ap.add_argument("--second-run-max", type=int, default=0)
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "STEPS"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    H.set_threads(1)
    if a.one:
        H.emit(one(a.one[0], int(a.one[1]), a.second_run_max))
        return
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    res = measure(a.steps, a.methods, a.mem_limit_gb, a.second_run_max, log)
    print(H.render(rows(res)))


if __name__ == "__main__":
    main()
