"""purifier.memory_budget, precision and compile on the CPU, side by side in one process.

* memory and time vs budget: the CIFAR-10 DDPM UNet (random weights; bench_purify.cifar_unet's
  configuration) purification gradient at ``--batch`` x ``--eot`` rows and ``--steps`` steps, for
  ``full``, ``checkpoint`` and budgets between checkpoint's floor and full's peak; peak = torch's CPU
  allocator high-water mark above the level at the call (the budget's definition). The 100-step
  figure is the planner's model extrapolated from the measured step costs (marked so);
* bf16 vs fp32: time, the cosine between the two input gradients and the fraction of pixels whose
  Linf step sign(grad) agrees, on the CIFAR-10 UNet and on the embedded digits UNet (the digits
  figures go to benchmarks/budget_figures.json; tests/test_precision.py holds bf16 to them);
* ``--robust``: the quickstart experiment with precision = "bf16" vs "fp32": robust accuracy
  difference with its paired interval.

    python benchmarks/bench_budget.py --batch 4 --eot 8 --steps 2      # ~10 min on the loaded 2-core machine
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from dbp_core.purifier import memory, noise  # noqa: E402
from dbp_core.purifier.purifier import Purifier  # noqa: E402

GB = memory.GB


def gradient(net, x, uids, eot, steps, **kw):
    """(input gradient of <w, purify(x)>, allocator peak, seconds, plan)."""
    pur = Purifier(net, t_star=0.1, steps=steps, noise=noise.replay(1), **kw)
    plan = pur.memory_plan(x, uids, replicas=eot) if kw.get("memory_budget") else None
    w = torch.linspace(-1, 1, x.numel() * eot).view(eot * x.shape[0], *x.shape[1:])

    def run():
        xx = x.clone().requires_grad_()
        (pur(xx, uids, replicas=eot) * w).sum().backward()
        return xx.grad
    t0 = time.perf_counter()
    peak, _, g = memory.measure(run, x.device)
    return g, peak, time.perf_counter() - t0, plan


def agreement(g, ref):
    cos = torch.nn.functional.cosine_similarity(g.flatten(), ref.flatten(), dim=0).item()
    return cos, (g.sign() == ref.sign()).double().mean().item()


def budget_rows(net, batch, eot, steps, log):
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    uids = torch.arange(batch)
    out = []
    g_ck, p_ck, t_ck, _ = gradient(net, x, uids, eot, steps, grad_mode="checkpoint")
    log(f"checkpoint {p_ck / GB:.3f} GB {t_ck:.1f} s")
    g_f, p_f, t_f, _ = gradient(net, x, uids, eot, steps, grad_mode="full")
    log(f"full {p_f / GB:.3f} GB {t_f:.1f} s")
    out.append(dict(method="full", budget=None, peak=p_f, time=t_f))
    out.append(dict(method="checkpoint", budget=None, peak=p_ck, time=t_ck))
    for frac in (0.4, 0.7, 1.0, 0.5 * (1 + p_f / p_ck), 1.3 * p_f / p_ck):
        b = frac * p_ck / GB
        try:
            g, p, t, plan = gradient(net, x, uids, eot, steps, grad_mode="checkpoint", memory_budget=b)
        except memory.MemoryBudgetError as exc:
            log(f"budget {b:.3f} GB: {exc}")
            continue
        diff = (g - g_ck).abs().max().item()
        out.append(dict(method="budget", budget=b, peak=p, time=t, kept=plan.kept, mb=plan.backward_batch,
                        diff=diff))
        log(f"budget {b:.3f} GB: peak {p / GB:.3f} GB {t:.1f} s kept {plan.kept} mb {plan.backward_batch} diff {diff:.1e}")
    return out, (g_ck, t_ck)


def precision_rows(net, x, uids, eot, steps):
    g32, _, t32, _ = gradient(net, x, uids, eot, steps, grad_mode="checkpoint")
    g16, _, t16, _ = gradient(net, x, uids, eot, steps, grad_mode="checkpoint", precision="bf16")
    cos, sign = agreement(g16, g32)
    return dict(time_fp32=t32, time_bf16=t16, cosine=cos, sign_agreement=sign)


def digits_precision():
    """The digits figure tests/test_precision.py is held to (same inputs there)."""
    from dbp_core.models import zoo
    net = zoo.default_diffusion("digits")
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return precision_rows(net, x, torch.arange(8), 4, 5)


def robust(log):
    from dbp_core.results import paired_between, read_run
    views = {}
    with tempfile.TemporaryDirectory() as tmp:
        for prec in ("fp32", "bf16"):
            r = subprocess.run([sys.executable, "-m", "dbp_core", "run", str(HERE.parent / "experiments/quickstart.toml"),
                                "--runs-dir", tmp, "--no-progress", "--set", f'purifier.precision="{prec}"'],
                               capture_output=True, text=True, check=True)
            views[prec] = read_run(r.stdout.strip().splitlines()[-1])
        rows, why = paired_between(views["bf16"], views["fp32"])
    return rows, why


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--eot", type=int, default=8)
    ap.add_argument("--steps", type=int, nargs="+", default=[2])
    ap.add_argument("--robust", action="store_true")
    ap.add_argument("--out", default=str(HERE / "RESULTS-budget.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    from bench_purify import cifar_unet
    net = cifar_unet()
    for p in net.parameters():
        p.requires_grad_(False)
    rows = args.batch * args.eot
    md = [f"# memory_budget / precision on the CPU ({rows} rows = batch {args.batch} x EOT {args.eot}, "
          "CIFAR-10 DDPM UNet, random weights)", "",
          "| steps | method | budget GB | peak GB | peak <= budget | time s | x full | x checkpoint | kept | "
          "micro-batch | max abs grad diff |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for steps in args.steps:
        res, _ = budget_rows(net, args.batch, args.eot, steps, log)
        t_full = res[0]["time"]
        t_ck = res[1]["time"]
        for r in res:
            b = "" if r["budget"] is None else f"{r['budget']:.3f}"
            ok = "" if r["budget"] is None else ("yes" if r["peak"] <= r["budget"] * GB else "NO")
            md.append(f"| {steps} | {r['method']} | {b} | {r['peak'] / GB:.3f} | {ok} | {r['time']:.1f} | "
                      f"{r['time'] / t_full:.2f} | {r['time'] / t_ck:.2f} | {r.get('kept', '')} | {r.get('mb', '')} | "
                      f"{r.get('diff', ''):.1e} |" if "diff" in r else
                      f"| {steps} | {r['method']} | {b} | {r['peak'] / GB:.3f} | {ok} | {r['time']:.1f} | "
                      f"{r['time'] / t_full:.2f} | {r['time'] / t_ck:.2f} | | | |")
    # the planner's model at 100 steps from the measured step costs (extrapolated, not measured)
    x = torch.rand(args.batch, 3, 32, 32)
    pur = Purifier(net, steps=100, memory_budget=16.0)
    plan100 = pur.memory_plan(x, torch.arange(args.batch), replicas=args.eot)
    costs = next(iter(pur._costs.values()))
    ck100 = memory.plan(costs, rows, 100, 1, 1e3)
    full100 = ck100.expected_peak  # every step kept: plain autograd's model
    ck_floor = 5 * rows * costs.image + 100 * rows * costs.image + max(costs.forward(rows), costs.vjp(rows))
    md += ["", f"Extrapolated (the planner's model from measured step costs, not measured) at 100 steps, {rows} rows: "
           f"`full` {full100 / GB:.1f} GB, `checkpoint` {ck_floor / GB:.2f} GB; a 16 GB budget: {plan100.describe()}."]
    pr = precision_rows(net, x, torch.arange(args.batch), args.eot, args.steps[0])
    dg = digits_precision()
    md += ["", "| precision check | time fp32 s | time bf16 s | bf16 / fp32 time | gradient cosine | Linf step sign "
           "agreement |", "|---|---|---|---|---|---|"]
    for name, r in ((f"CIFAR-10 UNet, {rows} rows, {args.steps[0]} steps", pr), ("digits UNet, 32 rows, 5 steps", dg)):
        md.append(f"| {name} | {r['time_fp32']:.2f} | {r['time_bf16']:.2f} | {r['time_bf16'] / r['time_fp32']:.2f} | "
                  f"{r['cosine']:.4f} | {r['sign_agreement']:.4f} |")
    (HERE / "budget_figures.json").write_text(json.dumps({"digits_bf16": dg}, indent=1) + "\n")
    if args.robust:
        prow, why = robust(log)
        md += ["", "quickstart, bf16 - fp32 (paired): " + (why or "; ".join(
            f"{r['attack'] or r['stage']}/{r['protocol']}: {100 * r['diff']:+.1f} pp "
            f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] (n = {r['n']})" for r in prow
            if r["protocol"] in ("single", "purified")))]
    Path(args.out).write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
