"""Shared machinery of the benchmarks: side-by-side timing, memory counting, result rows.

Timing (``interleaved``): every function of a comparison runs once as a warm-up, then the
functions run round-robin ``repeats`` times (the order rotates each round). A ratio is the median
over rounds of the per-round ratio (``Timings.ratio``): the paired measurements were taken close
in time, so a burst of load from other processes that slows one round cancels out. Absolute times
shown beside the ratios are each function's best (minimum).
The clock is the calling thread's CPU time (``time.thread_time``) when torch runs one intra-op
thread — everything then runs on this thread (the CPU autograd engine runs the backward on the
calling thread), and time spent descheduled by other processes on a shared machine is not
counted — and wall-clock time otherwise.

Memory: ``alloc_high_water`` counts the bytes torch's CPU allocator holds at its high-water mark
during a call (the running sum of the profiler's allocation/free events, ``profile_memory=True``):
exact and independent of page granularity or allocator caching, so it resolves the few-MB
differences at 8x8 images. ``peak_rss_mb`` is the process's peak resident set size (what the
operating system had to provide, libraries and weights included). Measure each configuration in
a fresh process (``run_json``): the peak RSS is a high-water mark of the whole process.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))


def set_threads(n: int) -> None:
    import torch
    torch.set_num_threads(n)


def clock_name() -> str:
    import torch
    return "thread CPU time" if torch.get_num_threads() == 1 else "wall-clock"


def _clock() -> Callable[[], float]:
    import torch
    return time.thread_time if torch.get_num_threads() == 1 else time.perf_counter


class Timings(dict):
    """name -> seconds of each round-robin round (``interleaved``).

    ``ratio(a, b)`` is the median over rounds of a's time / b's time (a or b may be a tuple of
    names, summed per round): the two are paired in time, so a burst of load from other processes
    that slows one round cancels out. ``best(k)`` is the minimum (shown beside the ratios)."""

    def best(self, k) -> float:
        return min(self._series(k))

    def _series(self, k) -> list[float]:
        names = (k,) if isinstance(k, str) else tuple(k)
        return [sum(v) for v in zip(*(self[n] for n in names))]

    def ratio(self, a, b, scale_b: float = 1.0) -> float:
        sa, sb = self._series(a), self._series(b)
        if len(sa) != len(sb):  # not measured in the same rounds: best vs best
            return min(sa) / (scale_b * min(sb))
        return statistics.median(x / (scale_b * y) for x, y in zip(sa, sb))


def header(repeats: int) -> str:
    import torch
    return (f"{torch.get_num_threads()} thread(s), clock: {clock_name()}, ratios = median of per-round ratios over "
            f"{repeats} round-robin rounds, times = best")


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> Timings:
    """Seconds per call of each function, measured round-robin (see module doc)."""
    clock = _clock()
    names = list(fns)
    for _ in range(warmup):
        for k in names:
            fns[k]()
    out = Timings({k: [] for k in names})
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            t0 = clock()
            fns[k]()
            out[k].append(clock() - t0)
    return out


def best(times: dict[str, list[float]]) -> dict[str, float]:
    return {k: min(v) for k, v in times.items()}


def alloc_high_water(fn: Callable[[], object]) -> tuple[float, object]:
    """(MiB held by torch's CPU allocator at its peak during ``fn()`` above what it held before,
    fn's result): the measurement the memory budget plans with (dbp_core/purifier/memory.py)."""
    import torch
    from dbp_core.purifier.memory import measure

    peak, _, result = measure(fn, torch.device("cpu"))
    return peak / 2**20, result


def peak_rss_mb() -> float:
    """The process's peak RSS (VmHWM): what a run reports as its measured peak on the CPU
    (dbp_core/purifier/memory.py, ``process_peak_bytes``)."""
    import torch
    from dbp_core.purifier.memory import process_peak_bytes

    return process_peak_bytes(torch.device("cpu"))[0] / 2**20


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak is this region's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_json(argv: list[str], timeout: float | None = None) -> dict:
    """Run ``python <argv>`` in a fresh process (one intra-op thread unless argv says otherwise,
    no BLAS helper threads) and parse the JSON object on its last stdout line."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.path.dirname(HERE), env.get("PYTHONPATH")) if p)
    r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed: {' '.join(argv)}\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def memory_sweep(methods, steps_list, run_one: Callable[[str, int], dict], mem_key: str, limit_mb: float,
                 also_estimate: tuple[str, ...] = (), wanted: Callable[[str, int], bool] | None = None,
                 log: Callable[[str], None] | None = None, describe: Callable[[dict], str] = str) -> dict:
    """{(method, steps): run_one(method, steps)} for every method and chain length, shortest first.

    A length whose ``mem_key`` (MB), extrapolated linearly from the method's two previous
    lengths, exceeds ``limit_mb`` is not run: it is recorded as ``{"skipped": True, "est_mb": ...}``
    plus ``est_<key>`` for each key of ``also_estimate``, extrapolated the same way."""
    out: dict[tuple[str, int], dict] = {}
    for m in methods:
        seen: list[tuple[int, dict]] = []
        for s in sorted(steps_list):
            if wanted and not wanted(m, s):
                continue
            if len(seen) >= 2:
                (s1, r1), (s2, r2) = seen[-2:]
                grow = (s - s2) / (s2 - s1)
                est = {k: r2[k] + (r2[k] - r1[k]) * grow for k in (mem_key, *also_estimate)}
                if est[mem_key] > limit_mb:
                    out[(m, s)] = {"method": m, "steps": s, "skipped": True, "est_mb": est[mem_key],
                                   **{f"est_{k}": est[k] for k in also_estimate}}
                    if log:
                        log(f"{m} {s} steps: skipped, ~{est[mem_key] / 1024:.1f} GB extrapolated")
                    continue
            r = out[(m, s)] = run_one(m, s)
            seen.append((s, r))
            if log:
                log(f"{m} {s} steps: {describe(r)}")
    return out


def sweep_points(res: dict[tuple[str, int], dict], methods) -> Iterator[tuple[str, int, dict]]:
    """(method, steps, result) of each point of a ``memory_sweep``: the methods in the order given,
    each one's chain lengths shortest first."""
    steps_all = sorted({s for _, s in res})
    for m in methods:
        for s in steps_all:
            if (m, s) in res:
                yield m, s, res[(m, s)]


def skipped_row(area: str, what: str, unit: str, r: dict, why: str) -> Row:
    """The row of a point that ``memory_sweep`` did not run (``r["skipped"]``)."""
    return Row(area, what, None, unit=unit, note=f"{why}: ~{r['est_mb'] / 1024:.1f} GB extrapolated")


def timing_cli(doc: str, measure: Callable[..., Timings], rows: Callable[..., list], argv=None) -> None:
    """The command line of a one-table timing benchmark: an integer option ``--NAME`` for each
    parameter of ``measure`` (its default the option's, ``repeats`` among them) and ``--threads``;
    prints the header and the table of ``rows(timings, **the options but repeats)``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, param in inspect.signature(measure).parameters.items():
        ap.add_argument(f"--{name}", type=int, default=param.default)
    ap.add_argument("--threads", type=int, default=1)
    a = vars(ap.parse_args(argv))
    set_threads(a.pop("threads"))
    timings = measure(**a)
    repeats = a.pop("repeats")
    print(header(repeats))
    print(render(rows(timings, **a)))


def emit(obj: dict) -> None:
    """The last stdout line of a ``--one`` subprocess."""
    print(json.dumps(obj), flush=True)


# --- result rows: one table for everything ---

@dataclass
class Row:
    area: str  # e.g. "ops", "purify digits", "purify CIFAR"
    what: str
    value: float | None  # the ratio (or MB) the target is about; None when not measured
    unit: str = "x"  # "x" ratio, "MB", "GB"
    target: str = ""  # e.g. "<= 1.10", ">= 2"
    detail: str = ""  # the absolute figures behind the ratio
    note: str = ""  # why not measured / caveats
    extra: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if not self.target:
            return ""
        if self.value is None:
            return "n/a"
        op, bound = self.target.split()
        bound = float(bound)
        ok = self.value <= bound if op == "<=" else self.value >= bound
        return "met" if ok else "MISSED"

    def as_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


def fmt_value(r: Row) -> str:
    if r.value is None:
        return "-"
    if r.unit == "x":
        return f"{r.value:.2f}x"
    if r.unit == "GB":
        return f"{r.value:.2f} GB"
    return f"{r.value:.1f} {r.unit}"


def render(rows: list[Row], markdown: bool = False) -> str:
    head = ["area", "comparison", "measured", "target", "verdict", "detail"]
    body = [[r.area, r.what, fmt_value(r), r.target, r.verdict,
             (r.detail + ("; " + r.note if r.note else "")).strip("; ")] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]
    widths[-1] = len(head[-1])  # the detail column is not padded
    fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths[:-1]] + ["------"])] + [fmt(row) for row in body])
