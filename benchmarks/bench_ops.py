"""Fused ops vs. the eager PyTorch a user would write, side by side in one run.

    python benchmarks/bench_ops.py [--sizes 1048576 4194304] [--repeats 15] [--threads 1]

Prints elements/s and ratios (never pass/fail timings): fused ddpm_step and q_sample vs.
`torch.randn` + arithmetic, vs. `torch.randn` alone (the noise floor) and vs. our pure-PyTorch
reference; the sigma = 0 step's effective bandwidth vs. a plain tensor copy of the same size (the
memory limit). All functions are timed round-robin (benchmarks/_harness.py): ratios are medians of
per-round ratios, times the best; with one thread the clock is the thread's CPU time.
"""
from __future__ import annotations

import argparse

import torch

try:
    from . import _harness as H
except ImportError:  # run as a script
    import _harness as H


def measure(n: int, repeats: int) -> H.Timings:
    from dbp_core.ops import reference as ref
    from dbp_core import ops

    B = 16
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, n // B, generator=g)
    eps = torch.randn(x.shape, generator=g)
    uids = torch.arange(B)
    c_x, c_eps, sigma = 1.01, 0.02, 0.1
    dst = torch.empty_like(x)
    fns = {
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
    out = H.interleaved(fns, repeats)
    a, ce, sg = torch.tensor(c_x), torch.tensor(c_eps), torch.tensor(sigma)
    out["reference_step"] = H.interleaved(
        {"r": lambda: ref.ddpm_step(x, eps, a, ce, sg, 1, 0, uids, 3)}, max(2, repeats // 5))["r"]
    return out


def rows(n: int, T: H.Timings) -> list[H.Row]:
    from dbp_core import ops

    t = {k: T.best(k) for k in T}
    gbs = lambda bytes_, s: bytes_ / s / 1e9  # noqa: E731
    copy_gbs = gbs(2 * 4 * n, t["copy"])
    step0_gbs = gbs(3 * 4 * n, t["fused_step_sigma0"])  # reads x, eps; writes out
    ms = lambda k: f"{t[k] * 1e3:.2f} ms"  # noqa: E731
    area = f"ops {n / 2**20:g}M f32"
    return [
        H.Row(area, "fused ddpm_step vs eager (randn + arithmetic)", T.ratio("eager_step", "fused_step"), target=">= 2",
              detail=f"{ms('fused_step')} vs {ms('eager_step')}"),
        H.Row(area, "fused ddpm_step (with noise) vs torch.randn alone", T.ratio("randn", "fused_step"), target=">= 1",
              detail=f"{ms('fused_step')} vs {ms('randn')}"),
        # reads x and eps, writes the output (3 x 4n bytes) vs a copy's read + write (2 x 4n bytes)
        H.Row(area, "sigma=0 ddpm_step bandwidth vs copy", 1.5 * T.ratio("copy", "fused_step_sigma0"), target=">= 0.6",
              detail=f"{step0_gbs:.1f} vs {copy_gbs:.1f} GB/s (best times)"),
        H.Row(area, "sigma=0 fused vs eager arithmetic", T.ratio("eager_step_sigma0", "fused_step_sigma0"),
              detail=f"{ms('fused_step_sigma0')} vs {ms('eager_step_sigma0')}"),
        H.Row(area, "dbp.normal vs torch.randn", T.ratio("randn", "fused_normal"),
              detail=f"{ms('fused_normal')} vs {ms('randn')}; {n / t['fused_normal'] / 1e6:.0f} M normals/s"),
        H.Row(area, "fused q_sample vs eager", T.ratio("eager_q_sample", "fused_q_sample"),
              detail=f"{ms('fused_q_sample')} vs {ms('eager_q_sample')}"),
        H.Row(area, "fused ddpm_step vs our pure-PyTorch reference", T.ratio("reference_step", "fused_step"),
              detail=f"{ms('fused_step')} vs {ms('reference_step')}; backend {ops.backend()}"),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1 << 20, 1 << 22])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    H.set_threads(a.threads)
    out = []
    for n in a.sizes:
        out += rows(n, measure(n, a.repeats))
    print(H.header(a.repeats))
    print(H.render(out))


if __name__ == "__main__":
    main()
