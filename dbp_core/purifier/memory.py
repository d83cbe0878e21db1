"""The memory budget of the checkpointed chain (``purifier.memory_budget``; docs/science.md,
"Memory budget").

A budgeted gradient call plans three numbers before its forward:

* ``backward_batch`` — the rows (of batch x EOT) a step's recomputation and backward run at once:
  the backward of one step over all rows is what overflows a consumer GPU (about 48 MB per image
  for the 35.7 M CIFAR-10 UNet), so it runs in micro-batches; the gradient is the same sum.
* ``kept`` — the last ``kept`` steps keep their graphs from the forward (built in micro-batches of
  ``backward_batch``), so their backward needs no recomputation: 1 forward + 1 backward instead of
  checkpointing's 2 forwards + 1 backward. With every step kept at full batch the plan is ``full``.
* ``forward_batch`` — the rows a no-graph forward step runs at once (all of them unless the budget
  is very tight).

The costs are measured, not assumed: one step of the network is probed at two micro-batch sizes
(allocator high-water mark: ``torch.cuda.max_memory_allocated`` on a GPU, torch's CPU allocator
events through ``torch.profiler`` on the CPU), and each cost is fitted as fixed + per-row bytes.
The budget bounds the allocator's high-water mark above what is allocated when the purification
starts (the weights and the caller's tensors are outside it); a safety margin absorbs allocator
rounding.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

GB = 1024 ** 3
MARGIN = 0.15  # the fraction of the budget the plan leaves free (allocator rounding, small temporaries)


class MemoryBudgetError(ValueError):
    """The budget cannot hold even one row's recomputation (the message says how much it needs)."""


@dataclass(frozen=True)
class Linear:
    """A memory cost ``fixed + per_row * rows`` in bytes."""
    fixed: float
    per_row: float

    def __call__(self, rows: int) -> float:
        return self.fixed + self.per_row * rows

    @staticmethod
    def fit(m1: int, c1: float, m2: int, c2: float) -> "Linear":
        per_row = max(0.0, (c2 - c1) / (m2 - m1))
        return Linear(max(0.0, c1 - per_row * m1), per_row)


@dataclass(frozen=True)
class StepCosts:
    """Measured costs of one reverse step: ``forward`` the peak of a step without a graph, ``graph`` the
    bytes its graph holds (output included), ``vjp`` the peak of a step run with a graph and
    backpropagated (weights' gradients included when asked for); ``image`` bytes of one row's state."""
    image: int
    forward: Linear
    graph: Linear
    vjp: Linear


@dataclass(frozen=True)
class MemoryPlan:
    budget: int  # bytes
    rows: int  # batch x EOT
    steps: int
    kept: int  # the last `kept` steps keep their graphs from the forward
    forward_batch: int
    backward_batch: int
    stored: int  # step inputs stored by the forward (checkpoints)
    expected_peak: int  # bytes, the model's estimate

    @property
    def is_full(self) -> bool:
        return self.kept == self.steps and self.backward_batch == self.rows

    def describe(self) -> str:
        return (f"memory plan: budget {self.budget / GB:.2f} GB, {self.rows} rows x {self.steps} steps: "
                f"{self.kept} step(s) keep their graphs, {self.stored} step input(s) stored, forward micro-batch "
                f"{self.forward_batch}, backward micro-batch {self.backward_batch}, expected peak "
                f"{self.expected_peak / GB:.3f} GB" + (" (= full autograd)" if self.is_full else ""))


def whole_replicas(size: int, batch: int | None) -> int:
    """The rows a micro-batch of at most ``size`` rows really holds: at least ``batch`` (uids per replica)
    rows are taken as whole replicas (``chain.row_chunks``), fewer as a slice of one replica's uids."""
    return size if batch is None or size < batch else (size // batch) * batch


def plan(costs: StepCosts, rows: int, steps: int, per_segment: int, budget_gb: float,
         weight_grad_bytes: int = 0, batch: int | None = None) -> MemoryPlan:
    """The fastest plan whose modelled peak fits ``(1 - MARGIN) * budget``: the largest backward
    micro-batch (at most ``rows``; whole replicas of ``batch`` uids once it holds one), then as many
    kept steps as the rest allows (each saves one forward)."""
    budget = int(budget_gb * GB)
    avail = budget * (1.0 - MARGIN)
    # the chain's own tensors: input, diffused input, output, the running gradient, the state being stepped,
    # and the weights' gradient accumulator (plus one summand) when the weights are differentiated
    fixed = 5 * rows * costs.image + 2 * weight_grad_bytes

    def stored(kept: int) -> int:
        return len(range(0, steps - kept, per_segment))

    def largest(cost: Linear, room: float) -> int:
        if cost.per_row <= 0:
            return rows if cost.fixed <= room else 0
        return max(0, min(rows, int(math.floor((room - cost.fixed) / cost.per_row))))

    base = fixed + stored(0) * rows * costs.image
    forward_batch, backward_batch = largest(costs.forward, avail - base), largest(costs.vjp, avail - base)
    if forward_batch < 1 or backward_batch < 1:
        need = (base + max(costs.forward(1), costs.vjp(1))) / (1.0 - MARGIN)
        raise MemoryBudgetError(f"purifier.memory_budget = {budget_gb} GB cannot hold one row's recomputation of "
                                f"a step ({rows} rows x {steps} steps need at least {need / GB:.3f} GB); raise it")
    forward_batch, backward_batch = whole_replicas(forward_batch, batch), whole_replicas(backward_batch, batch)
    fwd, vjp = costs.forward(forward_batch), costs.vjp(backward_batch)
    chunks = math.ceil(rows / backward_batch)
    per_kept = costs.graph.fixed * chunks + costs.graph.per_row * rows

    def peak_with(kept: int) -> float:
        # forward: the kept graphs built, plus a step's transient; backward: the kept graphs are used first,
        # a micro-batch's piece at a time (its own graph counted in vjp), then one recomputation at a time
        held = kept * per_kept - (costs.graph(backward_batch) if kept else 0.0)
        return fixed + stored(kept) * rows * costs.image + max(kept * per_kept + fwd, held + vjp)
    kept = 0
    while kept < steps and peak_with(kept + 1) <= avail:
        kept += 1
    peak = peak_with(kept)
    return MemoryPlan(budget, rows, steps, kept, forward_batch, backward_batch, stored(kept), int(peak))


# --- measuring ---

@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null: the profiler's library prints a line there at every start and stop,
    which would interleave with a run's progress bar."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_profile(fn: Callable[[], object]) -> tuple[int, int, object]:
    """(peak, final) bytes of torch's CPU allocator above its level at the start of ``fn()``, its result."""
    from torch.profiler import ProfilerActivity, profile
    if torch.autograd.profiler._is_profiler_enabled:
        raise RuntimeError("measuring the CPU allocator needs torch.profiler, which is already running; plan the "
                           "memory budget (Purifier.memory_plan) before profiling")
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():
        prof.start()
    try:
        result = fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak, cur, result


def measure(fn: Callable[[], object], device: torch.device) -> tuple[int, int, object]:
    """(peak, final) allocated bytes above the level when ``fn`` starts, and its result: the CUDA caching
    allocator's statistics on a GPU (its peak counter is reset), the CPU allocator's events otherwise."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, torch.cuda.memory_allocated(device) - base, result
    return _cpu_profile(fn)


def process_peak_bytes(device: torch.device) -> tuple[int, str]:
    """The run's peak memory as the device reports it: (bytes, what it is) — the CUDA allocator's
    high-water mark on a GPU, the process's peak resident set size (VmHWM) on the CPU; ``ru_maxrss`` only
    where /proc is missing (on Linux a child inherits its parent's RSS at fork as its ru_maxrss)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "peak RSS (VmHWM)"
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS (ru_maxrss)"
