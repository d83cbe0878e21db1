"""Fused ops vs. the eager PyTorch a user would write, side by side in one run.

    python benchmarks/bench_ops.py [--sizes 1048576 4194304] [--repeat 15]

Prints elements/s and ratios (never pass/fail timings): fused ddpm_step and
q_sample vs. `torch.randn` + arithmetic, vs. `torch.randn` alone (the noise
floor) and vs. our pure-PyTorch reference; the sigma = 0 step's effective
bandwidth vs. a plain tensor copy of the same size (the memory limit).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from dbp_core import _reference as ref
from dbp_core import ops


def median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(n: int, repeat: int) -> dict[str, float]:
    B = 16
    x = torch.randn(B, n // B)
    eps = torch.randn_like(x)
    uids = torch.arange(B)
    c_x, c_eps, sigma = 1.01, 0.02, 0.1
    dst = torch.empty_like(x)
    t = {
        "copy": lambda: dst.copy_(x),
        "randn": lambda: torch.randn_like(x),
        "eager_step": lambda: c_x * (x - c_eps * eps) + sigma * torch.randn_like(x),
        "eager_step_sigma0": lambda: c_x * (x - c_eps * eps),
        "fused_step": lambda: ops.ddpm_step(x, eps, c_x, c_eps, sigma, 1, 0, uids, 3),
        "fused_step_sigma0": lambda: ops.ddpm_step(x, eps, c_x, c_eps, 0.0, 1, 0, uids, 3),
        "fused_normal": lambda: ops.normal(x.shape, 1, 0, uids, 3),
        "eager_q_sample": lambda: 0.9 * x + 0.43 * torch.randn_like(x),
        "fused_q_sample": lambda: ops.q_sample(x, 0.9, 0.43, 1, 0, uids, 3),
    }
    out = {k: median_seconds(f, repeat) for k, f in t.items()}
    a = torch.tensor(c_x)
    out["reference_step"] = median_seconds(
        lambda: ref.ddpm_step(x, eps, a, torch.tensor(c_eps), torch.tensor(sigma), 1, 0, uids, 3), max(3, repeat // 5))
    return out


def report(n: int, t: dict[str, float]) -> list[str]:
    gbs = lambda bytes_, s: bytes_ / s / 1e9  # noqa: E731
    copy_gbs = gbs(2 * 4 * n, t["copy"])
    step0_gbs = gbs(3 * 4 * n, t["fused_step_sigma0"])  # reads x, eps; writes out
    rows = [
        f"## {n:,} float32 elements, {torch.get_num_threads()} threads, backend {ops.backend()}",
        f"{'what':42s} {'ms':>8s} {'M elem/s':>9s}",
    ]
    for k in ("copy", "randn", "fused_normal", "eager_step", "fused_step", "reference_step",
              "eager_step_sigma0", "fused_step_sigma0", "eager_q_sample", "fused_q_sample"):
        rows.append(f"{k:42s} {t[k] * 1e3:8.2f} {n / t[k] / 1e6:9.0f}")
    rows += [
        "ratios (higher is better for ours):",
        f"  fused ddpm_step vs eager (randn + arithmetic)   {t['eager_step'] / t['fused_step']:6.2f}x   target >= 2",
        f"  fused ddpm_step vs torch.randn alone            {t['randn'] / t['fused_step']:6.2f}x   target >= 1",
        f"  dbp.normal vs torch.randn                       {t['randn'] / t['fused_normal']:6.2f}x",
        f"  fused ddpm_step vs our reference                {t['reference_step'] / t['fused_step']:6.2f}x",
        f"  fused q_sample vs eager                         {t['eager_q_sample'] / t['fused_q_sample']:6.2f}x",
        f"  sigma=0 step bandwidth vs copy  {step0_gbs:5.1f} / {copy_gbs:5.1f} GB/s = {step0_gbs / copy_gbs:5.2f}   target >= 0.6",
        f"  sigma=0 fused vs eager sigma=0                  {t['eager_step_sigma0'] / t['fused_step_sigma0']:6.2f}x",
    ]
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1 << 20, 1 << 22])
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args(argv)
    for n in args.sizes:
        print("\n".join(report(n, measure(n, args.repeat))) + "\n")


if __name__ == "__main__":
    main()
