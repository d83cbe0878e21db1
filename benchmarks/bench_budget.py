"""Memory and time against ``purifier.memory_budget``, and ``purifier.compile`` against eager, on the CPU,
side by side in one run (docs/performance.md, "Memory budget"; docs/science.md, "Memory budget").

* ``memory``: the CIFAR-10 DDPM UNet (35.7 M parameters, random weights; bench_purify.cifar_unet)
  purification gradient d/dx <w, purify(x)> at each ``--rows`` (batch x EOT: 32 = 4 x 8, 128 = 16 x 8)
  and ``--steps``: ``checkpoint``, ``full`` (where the planner's model says it fits in ``--ram-gb``) and
  budgets from below ``checkpoint``'s peak to above ``full``'s. Peak = torch's CPU allocator
  high-water mark above the level at the call (memory.measure: the budget's definition); one run
  each (allocation is deterministic). Every budgeted gradient is compared with ``checkpoint``'s.
* ``time`` (the Pareto curve): at ``--time-rows`` rows, round-robin over ``--repeats`` rounds of the
  network's floor (one forward + backward per step over all rows, no chain), ``full``, ``checkpoint``
  and three budgets: the smallest above, one between, and one where ``full`` fits. Ratios are medians
  of per-round ratios (the machine's load moves absolute times). Targets: <= 1.05x ``full`` where the
  plain loop fits, <= 1.05x ``checkpoint`` at the smallest budget.
* ``compile``: the shipped digits UNet's purification gradient (batch 16 x EOT 2, 5 steps) eager and
  through ``torch.compile``: the compile time, the round-robin time ratio, the largest output and
  gradient differences, and the purified predictions of the 100 quickstart digits (same noise).
* the planner's model extrapolated to 100 steps from the measured step costs (marked as such).

Writes benchmarks/budget.json and benchmarks/RESULTS-budget.md.

    python benchmarks/bench_budget.py                         # ~40 min on the 2-core machine
    python benchmarks/bench_budget.py --parts time --repeats 5 --update   # redo one part
    python benchmarks/bench_budget.py --parts memory --rows 32 --steps 20 --update  # add a setting
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from dbp_core.purifier import memory, noise  # noqa: E402
from dbp_core.purifier.purifier import Purifier  # noqa: E402

GB = memory.GB
EOT = 8


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse (no mmap per large block, no trimming), as a
    GPU's caching allocator does: otherwise the time of the memory-hungry methods (``full``: 6.8 GB
    of graphs at 32 rows) measures the kernel's page faults on fresh memory, which moves by 1.5x
    with the allocator's history in the process. Returns whether it could (glibc only)."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
        return bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def inputs(rows: int, channels: int = 3, size: int = 32):
    batch = rows // EOT
    x = torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(0))
    w = torch.linspace(-1, 1, rows * x[0].numel()).view(rows, *x.shape[1:])
    return x, torch.arange(batch), w


def purifier(net, steps, **kw) -> Purifier:
    return Purifier(net, t_star=0.1, steps=steps, noise=noise.replay(1), **kw)


def gradient(pur, x, uids, w):
    xx = x.clone().requires_grad_()
    (pur(xx, uids, replicas=EOT) * w).sum().backward()
    return xx.grad


def floor(net, x, steps):
    """The network's own cost: one forward + backward to the input per step over all rows."""
    xr = x.repeat(EOT, 1, 1, 1).requires_grad_()
    t = torch.full((xr.shape[0],), 50)
    for _ in range(steps):
        net(xr, t).sum().backward()


def model_peaks(net, rows, steps):
    """The planner's modelled peaks of ``full`` and ``checkpoint`` (from the measured step costs), and the
    probed purifier's cost cache."""
    x, uids, _ = inputs(rows)
    pur = purifier(net, steps, memory_budget=1e4)
    pur.memory_plan(x, uids, replicas=EOT)
    costs = next(iter(pur._costs.values()))
    full = memory.plan(costs, rows, steps, 1, 1e4).expected_peak
    ck = (5 + steps) * rows * costs.image + max(costs.forward(rows), costs.vjp(rows))
    return full, ck, pur._costs


def memory_part(net, rows, steps, ram_gb):
    x, uids, w = inputs(rows)
    full_model, ck_model, _ = model_peaks(net, rows, steps)
    res = []
    peak_ck, _, g_ck = memory.measure(lambda: gradient(purifier(net, steps), x, uids, w), x.device)
    log(f"memory {rows} rows {steps} steps: checkpoint {peak_ck / GB:.3f} GB")
    res.append(dict(method="checkpoint", peak=peak_ck))
    peak_full = full_model
    if full_model < 0.8 * ram_gb * GB:
        peak_full, _, _ = memory.measure(lambda: gradient(purifier(net, steps, grad_mode="full"), x, uids, w),
                                         x.device)
        res.append(dict(method="full", peak=peak_full))
        log(f"  full {peak_full / GB:.3f} GB")
    else:
        res.append(dict(method="full", peak=None, model=full_model))
        log(f"  full not run: modelled {full_model / GB:.1f} GB > this machine's RAM")
    budgets = [0.3 * peak_ck, 0.6 * peak_ck, 2.0 * peak_ck]
    if peak_full < 0.8 * ram_gb * GB:
        budgets += [0.5 * (peak_ck + peak_full), 1.3 * peak_full]
    for b in sorted(set(budgets)):
        pur = purifier(net, steps, memory_budget=b / GB)
        plan = pur.memory_plan(x, uids, replicas=EOT)  # probes the step before the measurement
        peak, _, g = memory.measure(lambda: gradient(pur, x, uids, w), x.device)
        diff = (g - g_ck).abs().max().item()
        res.append(dict(method="budget", budget=b, peak=peak, kept=plan.kept, micro_batch=plan.backward_batch,
                        expected=plan.expected_peak, diff=diff, fits=peak <= b))
        log(f"  budget {b / GB:.3f} GB: peak {peak / GB:.3f} GB, {plan.describe()}, max |diff| {diff:.1e}")
    return dict(rows=rows, steps=steps, model_full=full_model, model_checkpoint=ck_model, runs=res)


def time_part(net, rows, steps, repeats, peaks):
    """Round-robin timing of the floor, full, checkpoint and three budgets (``peaks``: measured
    checkpoint and full peaks at this size, from the memory part)."""
    x, uids, w = inputs(rows)
    p_ck, p_full = peaks
    configs = {"full": purifier(net, steps, grad_mode="full"), "checkpoint": purifier(net, steps)}
    for name, b in (("smallest budget", 0.3 * p_ck), ("middle budget", 0.5 * (p_ck + p_full)),
                    ("budget where full fits", 1.3 * p_full)):
        configs[name] = purifier(net, steps, memory_budget=b / GB)
        plan = configs[name].memory_plan(x, uids, replicas=EOT)
        log(f"time: {name}: {plan.describe()}")
    times: dict[str, list[float]] = {k: [] for k in ["floor", *configs]}
    for r in range(repeats):
        for name in times:
            t0 = time.perf_counter()
            floor(net, x, steps) if name == "floor" else gradient(configs[name], x, uids, w)
            times[name].append(time.perf_counter() - t0)
        log(f"  round {r}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))
    out = {}
    for name in times:
        plan = getattr(configs.get(name), "last_plan", None)
        out[name] = dict(seconds=statistics.median(times[name]), x_floor=ratio(name, "floor"),
                         x_full=ratio(name, "full"), x_checkpoint=ratio(name, "checkpoint"),
                         budget=None if plan is None else plan.budget, kept=None if plan is None else plan.kept,
                         micro_batch=None if plan is None else plan.backward_batch)
    return dict(rows=rows, steps=steps, repeats=repeats, configs=out)


def compile_part(repeats):
    from dbp_core.models import zoo
    net = zoo.default_diffusion("digits")
    for p in net.parameters():
        p.requires_grad_(False)
    x, uids, w = inputs(16 * EOT, channels=1, size=8)
    eager, comp = purifier(net, 5), purifier(net, 5, compile=True)
    t0 = time.perf_counter()
    gradient(comp, x, uids, w)
    compile_s = time.perf_counter() - t0
    log(f"compile: first call {compile_s:.0f} s")
    te, tc = [], []
    for _ in range(repeats):
        for lst, pur in ((te, eager), (tc, comp)):
            t0 = time.perf_counter()
            gradient(pur, x, uids, w)
            lst.append(time.perf_counter() - t0)
    with torch.no_grad():
        out_e, out_c = eager(x, uids, replicas=EOT), comp(x, uids, replicas=EOT)
    g_e, g_c = gradient(eager, x, uids, w), gradient(comp, x, uids, w)
    # the quickstart's 100 digits, purified with the same noise: the classifier's predictions
    from dbp_core.models.datasets import load_digits
    from dbp_core.models.normalized import Normalized
    data = load_digits("test")
    clf = Normalized(zoo.default_classifier("digits"), *zoo.default_normalisation("digits"))
    xs, us = data.x[:100], data.uids[:100]
    with torch.no_grad():
        pe = clf(eager(xs, us)).argmax(1)
        pc = clf(comp(xs, us)).argmax(1)
    return dict(compile_seconds=compile_s, eager_s=statistics.median(te), compiled_s=statistics.median(tc),
                x_eager=statistics.median(c / e for c, e in zip(tc, te)),
                max_output_diff=(out_e - out_c).abs().max().item(), max_grad_diff=(g_e - g_c).abs().max().item(),
                predictions_equal=int((pe == pc).sum()), predictions=len(pe))


def extrapolate(net, rows_list):
    out = []
    for rows in rows_list:
        full, ck, cache = model_peaks(net, rows, 100)
        costs = next(iter(cache.values()))
        x, uids, _ = inputs(rows)
        plans = {}
        for b in (2.0, 8.0, 16.0):
            pur = purifier(net, 100, memory_budget=b)
            pur._costs = cache  # the step was probed once (a step's cost does not depend on the chain's length)
            try:
                plans[b] = pur.memory_plan(x, uids, replicas=EOT).describe()
            except memory.MemoryBudgetError as exc:
                plans[b] = str(exc)
        out.append(dict(rows=rows, full=full, checkpoint=ck, plans=plans,
                        graph_per_row=costs.graph.per_row, vjp_per_row=costs.vjp.per_row, image=costs.image))
    return out


def markdown(res) -> str:
    md = ["# purifier.memory_budget and purifier.compile on the CPU (benchmarks/bench_budget.py)", "",
          f"torch {res['torch']}, {res['threads']} threads; CIFAR-10 DDPM UNet (35.7 M, random weights), "
          f"EOT {EOT}; peak = torch's CPU allocator high-water mark above the call's start.", ""]
    for m in res.get("memory", []):
        md += [f"## Peak memory vs budget: {m['rows']} rows, {m['steps']} steps", "",
               "| method | budget GB | peak GB | peak <= budget | planner's peak GB | kept steps | micro-batch | "
               "max abs grad diff vs checkpoint |", "|---|---|---|---|---|---|---|---|"]
        for r in m["runs"]:
            if r["method"] == "budget":
                md.append(f"| budget | {r['budget'] / GB:.3f} | {r['peak'] / GB:.3f} | {'yes' if r['fits'] else 'NO'} | "
                          f"{r['expected'] / GB:.3f} | {r['kept']} | {r['micro_batch']} | {r['diff']:.1e} |")
            elif r["peak"] is None:
                md.append(f"| {r['method']} | | not run (modelled {r['model'] / GB:.1f} GB) | | | | | |")
            else:
                md.append(f"| {r['method']} | | {r['peak'] / GB:.3f} | | | | | |")
        md.append("")
    if "time" in res:
        t = res["time"]
        md += [f"## Time vs budget: {t['rows']} rows, {t['steps']} steps, {t['repeats']} round-robin rounds "
               f"(malloc: {res.get('time_malloc', 'glibc default')})", "",
               "| method | budget GB | kept / micro-batch | median s | x floor | x full | x checkpoint |",
               "|---|---|---|---|---|---|---|"]
        for name, c in t["configs"].items():
            b = "" if c["budget"] is None else f"{c['budget'] / GB:.3f}"
            km = "" if c["kept"] is None else f"{c['kept']} / {c['micro_batch']}"
            md.append(f"| {name} | {b} | {km} | {c['seconds']:.1f} | {c['x_floor']:.2f} | {c['x_full']:.2f} | "
                      f"{c['x_checkpoint']:.2f} |")
        md.append("")
    if "compile" in res:
        c = res["compile"]
        md += ["## torch.compile vs eager: the digits UNet, batch 16 x EOT 8, 5 steps", "",
               f"First call (compiles) {c['compile_seconds']:.0f} s; then {c['compiled_s']:.3f} s vs eager "
               f"{c['eager_s']:.3f} s per gradient ({c['x_eager']:.2f}x eager, median of rounds); largest "
               f"difference: output {c['max_output_diff']:.1e}, gradient {c['max_grad_diff']:.1e}; purified "
               f"predictions of the 100 quickstart digits equal for {c['predictions_equal']} / {c['predictions']}.", ""]
    for e in res.get("extrapolated", []):
        md += [f"## Extrapolated to 100 steps, {e['rows']} rows (the planner's model, not measured)", "",
               f"`full` {e['full'] / GB:.1f} GB, `checkpoint` {e['checkpoint'] / GB:.2f} GB (graph "
               f"{e['graph_per_row'] / 2**20:.1f} MB and recomputation peak {e['vjp_per_row'] / 2**20:.1f} MB per row)."]
        md += [f"* {float(b):g} GB: {p}" for b, p in e["plans"].items()]
        md.append("")
    return "\n".join(md)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[32, 128], help="batch x EOT of the memory part")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--time-rows", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ram-gb", type=float, default=24.0, help="skip `full` where its modelled peak exceeds 0.8x this")
    ap.add_argument("--parts", nargs="+", default=["memory", "time", "compile", "extrapolate"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--malloc", choices=("keep", "default"), default="keep",
                    help="keep: glibc keeps freed memory for reuse (keep_freed_memory); default: as glibc starts")
    ap.add_argument("--update", action="store_true",
                    help="keep the parts of benchmarks/budget.json that this run does not redo")
    ap.add_argument("--out", default=str(HERE / "RESULTS-budget.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory() if args.malloc == "keep" else False
    from bench_purify import cifar_unet
    net = cifar_unet()
    for p in net.parameters():
        p.requires_grad_(False)
    res: dict = json.loads((HERE / "budget.json").read_text()) if args.update else {}
    res.update(torch=torch.__version__, threads=args.threads)
    if "time" in args.parts:
        res["time_malloc"] = "keep freed memory (mallopt)" if kept else "glibc default"
    if "memory" in args.parts:
        new = [memory_part(net, rows, args.steps, args.ram_gb) for rows in args.rows]
        redone = {(m["rows"], m["steps"]) for m in new}
        res["memory"] = [m for m in res.get("memory", []) if (m["rows"], m["steps"]) not in redone] + new
    if "time" in args.parts:
        m = next((m for m in res.get("memory", []) if (m["rows"], m["steps"]) == (args.time_rows, args.steps)), None)
        if m is None:
            m = memory_part(net, args.time_rows, args.steps, args.ram_gb)
        by = {r["method"]: r["peak"] for r in m["runs"] if r["method"] != "budget"}
        res["time"] = time_part(net, args.time_rows, args.steps, args.repeats, (by["checkpoint"], by["full"]))
    if "compile" in args.parts:
        res["compile"] = compile_part(args.repeats)
    if "extrapolate" in args.parts:
        res["extrapolated"] = extrapolate(net, sorted(set(args.rows) | {320}))  # 320: the paper's batch 32 x EOT 10
    (HERE / "budget.json").write_text(json.dumps(res, indent=1) + "\n")
    text = markdown(res)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
