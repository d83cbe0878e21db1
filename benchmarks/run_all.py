"""Run every dbp-lab benchmark side by side and print ONE table of ratios, with target and verdict.

Usage (from the repository root, in the project's virtual environment):

    python benchmarks/run_all.py --quick                 # every row, shorter chains/fewer repeats: ~25 min idle, ~90 loaded
    python benchmarks/run_all.py                         # complete: ~2 h on one core (the published table)
    python benchmarks/run_all.py --only ops attack addt  # some sections (ops purify samplers cifar-time cifar attack addt)
    python benchmarks/run_all.py --markdown --json results.json   # markdown table + machine-readable rows

What each row compares (the section's file has the details):

* ``ops`` (bench_ops.py): fused ``ddpm_step`` vs eager ``torch.randn`` + arithmetic, vs ``torch.randn``
  alone, the sigma = 0 step's bandwidth vs a tensor copy; 1M and 4M float32 elements.
* ``purify`` (bench_purify.py, digits UNet, batch 32): one purification gradient per grad mode vs its
  floor (the network's forward + backward summed over the steps, timed alone; 2 forwards + 1 backward
  for ``checkpoint``), vs a plain autograd loop with ``torch.randn`` noise and vs a diffusers
  ``DDPMScheduler`` loop, at 10/100/1000 steps (``--quick``: 10/100); memory (torch allocator high-water
  mark, exact) per mode vs chain length 10/100/1000, each in a fresh process.
* ``samplers`` (bench_purify.py --samplers): every sampler and option (DDPM with and without clipping, a
  learned variance, DDIM with eta, the VP-SDE, its ODE, GDMP guidance), ``checkpoint`` and ``full``,
  vs the same floors, at 10/100 steps (``--quick``: 10); memory of ``checkpoint`` per sampler vs
  chain length 10/100/1000 (``--quick``: 10/1000), each in a fresh process.
* ``cifar-time`` (bench_purify.py --arch cifar): the same time comparison on the CIFAR-10 DDPM
  architecture (diffusers UNet2DModel, google/ddpm-cifar10-32 config, 35.7 M parameters, random
  weights, batch 4), 5-step chains round-robin in one process: the headline's time ratio vs the plain
  loop (per-step costs do not depend on the chain length), for the input gradient an attack needs and
  (complete run) for a ``loss.backward()`` loop that also computes the weights' gradients;
  ``--quick`` runs fewer methods.
* ``cifar`` (bench_cifar.py): the headline's memory — peak RSS of one purification gradient at
  5/20/100 steps for the plain loop, per-step ``torch.utils.checkpoint`` as peers write it, and ours
  (full/checkpoint/segments), each in a fresh process (``--quick``: plain vs ours-checkpoint, the default mode).
* ``attack`` (bench_attack.py): a PGD-EOT iteration (EOT 10) batched vs a per-replica Python loop.
* ``addt`` (bench_addt.py): an ADDT step vs its floor (a plain diffusion training step + K bare CGPO
  forward/backward passes) and vs (1 + K) plain training steps.

Measurement rules (benchmarks/_harness.py): one intra-op thread (``torch.set_num_threads(1)``;
``--threads`` changes it for the in-process timings); the functions of a comparison run round-robin
in one process and each keeps its best time; with one thread the clock is the thread's CPU time, so
time spent descheduled on a shared machine does not count. Verdicts compare ratios, never absolute
times. The machine line at the top says what ran where.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import _harness as H  # noqa: E402

SECTIONS = ("ops", "purify", "samplers", "cifar-time", "cifar", "attack", "addt", "precision")


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from dbp_core import ops
    return (f"{cpu}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, {torch.get_num_threads()} intra-op "
            f"thread(s); Python {platform.python_version()}; dbp ops backend: {ops.backend()}")


def plan(quick: bool) -> dict:
    if quick:
        return dict(ops_sizes=[1 << 20, 1 << 22], ops_repeats=9,
                    purify_time={10: 7, 100: 5}, purify_mem_steps=[10, 100, 1000], purify_mem_batch=8,
                    purify_mem_limit=2.0, purify_mem_at={1000: ["ours-checkpoint", "ours-segments"]},
                    samplers_time={10: 3}, samplers_mem_steps=[10, 1000],
                    cifar_time=dict(steps=5, repeats=2, warmup=0,
                                    methods=["floor", "floor-ckpt", "ours-full", "ours-checkpoint", "ours-segments",
                                             "plain"]),
                    cifar_steps=[5, 20, 100], cifar_methods=["plain", "ours-checkpoint"], cifar_second=0,
                    attack_repeats=3, addt_repeats=5)
    return dict(ops_sizes=[1 << 20, 1 << 22], ops_repeats=15,
                purify_time={10: 9, 100: 3, 1000: 2}, purify_mem_steps=[10, 100, 1000], purify_mem_batch=None,
                purify_mem_limit=8.0, purify_mem_at=None,
                samplers_time={10: 3, 100: 3}, samplers_mem_steps=[10, 100, 1000],
                cifar_time=dict(steps=5, repeats=3, warmup=1, methods=None,
                                weights_methods=["floor", "floor-ckpt", "ours-full", "ours-checkpoint", "ours-segments",
                                                 "plain", "peer-ckpt"]),
                cifar_steps=[5, 20, 100], cifar_methods=None, cifar_second=0,
                attack_repeats=5, addt_repeats=9)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter chains and fewer repeats (1,349 s on an idle core; about 90 min on a loaded 2-core machine)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of the in-process timings")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    a = ap.parse_args(argv)
    H.set_threads(a.threads)
    p = plan(a.quick)
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    rows: list[H.Row] = []
    started = time.time()

    if "ops" in a.only:
        import bench_ops
        for n in p["ops_sizes"]:
            log(f"ops: {n} elements")
            rows += bench_ops.rows(n, bench_ops.measure(n, p["ops_repeats"]))

    if "purify" in a.only:
        import bench_purify as BP
        for steps, reps in p["purify_time"].items():
            log(f"purify digits: time, {steps} steps, {reps} repeats")
            warm = 0 if steps >= 1000 else 1  # long chains: kernels warmed on 1-step chains, not a whole round
            rows += BP.time_rows("digits", steps, BP.measure_time("digits", steps, BP.TIME_METHODS, reps, warmup=warm))
        log("purify digits: memory (one fresh process per method and chain length)")
        mem = BP.measure_memory("digits", p["purify_mem_steps"], BP.MEM_METHODS, p["purify_mem_limit"],
                                p["purify_mem_batch"], log=log, methods_at=p["purify_mem_at"])
        mrows = BP.memory_rows("digits", mem)
        if p["purify_mem_batch"]:
            for r in mrows:
                r.area += f" (batch {p['purify_mem_batch']})"
        rows += mrows

    if "samplers" in a.only:
        import bench_purify as BP
        for steps, reps in p["samplers_time"].items():
            log(f"samplers digits: time, {steps} steps, {reps} repeats")
            rows += BP.sampler_time_rows("digits", steps, BP.measure_time("digits", steps, BP.sampler_methods(), reps))
        log("samplers digits: memory of checkpoint per sampler (one fresh process each)")
        mem = BP.measure_memory("digits", p["samplers_mem_steps"], [f"{n}:checkpoint" for n in BP.SAMPLER_SETTINGS],
                                8.0, log=log)
        rows += BP.sampler_memory_rows("digits", mem)

    if "cifar-time" in a.only:
        import bench_purify as BP
        c = p["cifar_time"]
        methods = c["methods"] or list(BP.TIME_METHODS)
        log(f"purify CIFAR-10 architecture: time, {c['steps']} steps, {c['repeats']} repeats: {methods}")
        rows += BP.time_rows("cifar", c["steps"], BP.measure_time("cifar", c["steps"], methods, c["repeats"],
                                                                  warmup=c["warmup"]))
        if c.get("weights_methods"):  # the same with the weights' gradients (a loss.backward() loop)
            log(f"purify CIFAR-10 architecture: time, gradient wrt x + weights: {c['weights_methods']}")
            rows += BP.time_rows("cifar", c["steps"], BP.measure_time(
                "cifar", c["steps"], c["weights_methods"], c["repeats"], warmup=c["warmup"], wrt="x+weights"),
                wrt="x+weights")

    if "cifar" in a.only:
        import bench_cifar
        methods = p["cifar_methods"] or list(bench_cifar.METHODS)
        log(f"cifar headline: {methods} at {p['cifar_steps']} steps")
        rows += bench_cifar.rows(bench_cifar.measure(p["cifar_steps"], methods, 8.0, p["cifar_second"], log))

    if "attack" in a.only:
        import bench_attack
        log("attack: PGD-EOT iteration")
        rows += bench_attack.rows(bench_attack.measure(32, 10, 5, p["attack_repeats"]), 32, 10, 5)

    if "addt" in a.only:
        import bench_addt
        log("addt: ADDT step")
        rows += bench_addt.rows(bench_addt.measure(32, 5, p["addt_repeats"]), 32, 5)

    if "precision" in a.only:
        import bench_precision
        log("precision: bf16 vs fp32 network")
        rows += bench_precision.rows({s: bench_precision.measure(s, 3) for s in bench_precision.SETTINGS})

    cmd = "python benchmarks/run_all.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"# {cmd.strip()}")
    print(f"# {machine()}")
    print(f"# clock: {H.clock_name()}; ratios = median of per-round ratios of round-robin timings, "
          f"times = best; {time.time() - started:.0f} s in all")
    print(H.render(rows, markdown=a.markdown))
    missed = [r for r in rows if r.verdict == "MISSED"]
    print(f"# targets: {sum(r.verdict == 'met' for r in rows)} met, {len(missed)} missed"
          + ("".join(f"\n#   missed: {r.area} / {r.what}: {H.fmt_value(r)} (target {r.target})" for r in missed)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"command": cmd, "machine": machine(), "rows": [r.as_dict() for r in rows]}, f, indent=1)


if __name__ == "__main__":
    main()
