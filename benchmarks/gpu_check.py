"""One-shot check of a GPU: writes one markdown table (issue: real scale on one consumer GPU).

1. the ops on the device equal the CPU's bit for bit (every op, float32 and float64);
2. purification gradients on the device vs the CPU in float64 (max |diff| <= 1e-10), every sampler;
3. the quickstart experiment with ``device = <device>``: per-example outcomes equal to the CPU run's;
4. the CIFAR-10 DDPM UNet (google/ddpm-cifar10-32 configuration, random weights) purification
   gradient at batch 32 x EOT 10, 10 and 100 steps: peak memory and time against the network's own
   floor (one forward + backward per step), for ``full``, ``checkpoint`` and a 16 GB budget, fp32 and
   bf16, compile off and on.

    python benchmarks/gpu_check.py --out benchmarks/RESULTS-gpu.md          # on a GPU, <= 6 minutes
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/t.md     # tiny sizes (the test suite)

``--quick`` shrinks part 4 (batch 2 x EOT 2, 2 steps, a small UNet, a 0.05 GB budget) and leaves out
compile (compiling the UNet takes minutes on a CPU); part 3 then runs the quickstart on 10 digits.
On the CPU the "device" and the reference are the same machine: the run checks that the script works.
Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU, torch's CPU allocator events on the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from dbp_core import ops  # noqa: E402
from dbp_core.purifier import memory, noise  # noqa: E402
from dbp_core.purifier.guidance import Guidance  # noqa: E402
from dbp_core.purifier.purifier import Purifier  # noqa: E402

SAMPLERS = {"ddpm": dict(sampler="ddpm"), "ddpm-learned-clip": dict(sampler="ddpm", variance="learned",
                                                                       clip_denoised=True),
            "ddim-eta": dict(sampler="ddim", eta=0.5), "vpsde": dict(sampler="vpsde"), "vpode": dict(sampler="vpode"),
            "gdmp": dict(sampler="ddpm", guidance=Guidance(100.0))}


class SmallEps(torch.nn.Module):
    """A small time-conditioned conv net (per-row computation) for the float64 gradient check."""

    def __init__(self, learned=False, continuous=False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.learned_variance, self.continuous_time = learned, continuous
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 6 if learned else 3, 3, padding=1)
        self.tw = torch.nn.Parameter(torch.randn(8, generator=g))
        with torch.no_grad():
            for p in (*self.c1.parameters(), *self.c2.parameters()):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))

    def forward(self, x, t):
        h = torch.tanh(self.c1(x) + (t.to(x.dtype) / 1000.0)[:, None, None, None] * self.tw[None, :, None, None])
        out = self.c2(h)
        if self.learned_variance:
            out = torch.cat([out[:, :3], torch.tanh(out[:, 3:])], 1)
        return out


def op_rows(device):
    rows = []
    for dtype in (torch.float32, torch.float64):
        gen = torch.Generator().manual_seed(3)
        x = torch.randn(5, 3, 17, 19, generator=gen, dtype=dtype)
        uids = torch.randint(0, 2**40, (5,), generator=gen)
        per = torch.rand(5, generator=gen, dtype=dtype)

        def run(d):
            t = lambda v: v.to(d)  # noqa: E731
            return {"normal": ops.normal((5, 3, 17, 19), 2**63 + 1, 4, t(uids), 9, dtype),
                    "q_sample": ops.q_sample(t(x), t(per), t(1 - per), 5, 1, t(uids), 2),
                    "ddpm_step": ops.ddpm_step(t(x), t(x.flip(0)), t(per), 0.3, t(x.abs()), 7, 2, t(uids), 3),
                    "clipped_step": ops.clipped_step(t(x), t(x.flip(0)), t(1 + per), 0.4, t(per), 0.3, t(x.abs()),
                                                     7, 2, t(uids), 3),
                    "rbgm": ops.rbgm(t(x), 5, 1, t(uids), 2)}
        cpu, dev = run(torch.device("cpu")), run(device)
        for k in cpu:
            same = torch.equal(cpu[k], dev[k].cpu())
            rows.append(("ops", f"{k} {str(dtype)[6:]}", "bit for bit" if same else "DIFFERS", same))
    return rows


def gradient_rows(device):
    rows = []
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    uids = torch.tensor([4, 11])
    for name, kw in SAMPLERS.items():
        net = SmallEps(learned="learned" in name, continuous=name.startswith("vp")).double()
        grads = []
        for d in (torch.device("cpu"), device):
            pur = Purifier(net.to(d), t_star=0.1, steps=6, noise=noise.replay(7), grad_mode="checkpoint", **kw)
            xx = x.to(d).requires_grad_()
            out = pur(xx, uids.to(d), replicas=2)
            (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=d).view_as(out)).sum().backward()
            grads.append(xx.grad.cpu())
        diff = (grads[0] - grads[1]).abs().max().item()
        rows.append(("gradients float64", name, f"max |diff| {diff:.1e}", diff <= 1e-10))
    return rows


def quickstart_rows(device, quick):
    over = ["--set", "data.n_examples=10", "--set", "data.batch_size=10"] if quick else []
    outcomes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for d in ("cpu", device.type):
            if d in outcomes:
                continue
            r = subprocess.run([sys.executable, "-m", "dbp_core", "run", str(HERE.parent / "experiments/quickstart.toml"),
                                "--runs-dir", f"{tmp}/{d}", "--no-progress", "--set", f'device="{d}"', *over],
                               capture_output=True, text=True)
            if r.returncode != 0:
                return [("quickstart", f"device={d}", f"FAILED: {r.stderr.strip().splitlines()[-1:]}", False)]
            from dbp_core.results import per_example_outcomes, read_run
            outcomes[d] = per_example_outcomes(read_run(r.stdout.strip().splitlines()[-1]))
    same = outcomes["cpu"] == outcomes[device.type]
    n = sum(len(v) for v in outcomes["cpu"].values())
    return [("quickstart", f"device={device.type} vs cpu", f"{n} per-example outcomes " +
             ("equal" if same else "DIFFER"), same)]


def cifar_unet(quick):
    from diffusers import UNet2DModel
    sys.path.insert(0, str(HERE))
    from bench_purify import CIFAR10_DDPM_CONFIG
    from dbp_core.models.loaders import DiffusersEps
    cfg = dict(CIFAR10_DDPM_CONFIG)
    if quick:  # a small UNet of the same layout
        cfg.update(block_out_channels=(32, 32, 32, 32), norm_num_groups=8, layers_per_block=1)
    torch.manual_seed(0)
    return DiffusersEps(UNet2DModel(**cfg)).eval()


def unet_rows(device, quick, deadline):
    net = cifar_unet(quick).to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    batch, eot, steps_list = (2, 2, (2,)) if quick else (32, 10, (10, 100))
    budget = 0.05 if quick else 16.0
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    uids = torch.arange(batch, device=device)
    rows = []
    for steps in steps_list:
        # the floor: the network's own forward + backward (to its input) per step, at batch x EOT rows
        xr = x.repeat(eot, 1, 1, 1).requires_grad_()
        t = torch.full((batch * eot,), 50, device=device)

        def floor():
            for _ in range(steps):
                net(xr, t).sum().backward()
        floor_peak, floor_time = _timed(floor, device)
        rows.append(("CIFAR-10 UNet", f"floor, {steps} steps", f"{floor_time:.2f} s, peak {floor_peak / 2**30:.2f} GB",
                     True))
        for mode, budget_gb in (("full", None), ("checkpoint", None), ("checkpoint", budget)):
            for precision in ("fp32", "bf16"):
                for comp in ((False,) if quick else (False, True)):
                    label = f"{mode if budget_gb is None else f'{budget_gb:g} GB budget'}, {precision}" + \
                        (", compile" if comp else "") + f", {steps} steps"
                    if time.perf_counter() > deadline:  # the check must end within its time limit
                        rows.append(("CIFAR-10 UNet", label, "not run: the check's time limit (--limit) was reached",
                                     True))
                        continue
                    pur = Purifier(net, t_star=0.1, steps=steps, noise=noise.replay(1), grad_mode=mode,
                                   memory_budget=budget_gb, precision=precision, compile=comp)
                    try:
                        if budget_gb is not None:
                            pur.memory_plan(x, uids, replicas=eot)
                        if comp:  # compile outside the timing
                            pur(x[:1], uids[:1], replicas=1)

                        def grad():
                            xx = x.clone().requires_grad_()
                            pur(xx, uids, replicas=eot).sum().backward()
                        peak, secs = _timed(grad, device)
                        ok = budget_gb is None or peak <= budget_gb * 2**30
                        rows.append(("CIFAR-10 UNet", label, f"{secs:.2f} s ({secs / floor_time:.2f}x floor), peak "
                                     f"{peak / 2**30:.2f} GB", ok))
                    except (torch.cuda.OutOfMemoryError, RuntimeError, ValueError) as exc:
                        rows.append(("CIFAR-10 UNet", label, f"not run: {type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0][:120]}", isinstance(exc, torch.cuda.OutOfMemoryError)))
    return rows


def _timed(fn, device):
    t0 = time.perf_counter()
    peak, _, _ = memory.measure(fn, device)
    return peak, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (runs in the test suite on the CPU)")
    ap.add_argument("--out", help="markdown file to write (default: print)")
    ap.add_argument("--limit", type=float, default=330.0,
                    help="seconds after which the remaining CIFAR-10 UNet cases are listed as not run (default 330)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --device cpu --quick to check the script", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    rows = (op_rows(device) + gradient_rows(device) + quickstart_rows(device, args.quick)
            + unet_rows(device, args.quick, t0 + args.limit))
    lines = [f"# GPU check ({device}{', --quick' if args.quick else ''}; torch {torch.__version__}; "
             f"ops {ops.backend()}; {time.perf_counter() - t0:.0f} s)", "",
             "| part | case | result | ok |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {'yes' if ok else 'NO'} |" for a, b, c, ok in rows]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    print(json.dumps({"ok": all(r[3] for r in rows), "rows": len(rows)}))
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
