"""``run_study``: run (or resume) the stages of a run in order (docs/design.md, "Stages and the runner").

It owns what surrounds the stages: the run's lock and state, SIGINT/SIGTERM (the run stops
and stays resumable), torch's thread count, the record of finished stages
(``checkpoints/stages.json``: skipped on resume), and ``results.json`` — written once,
atomically, at the end. Under torchrun every rank runs it; rank 0 alone writes (docs/scale-out.md).
"""
from __future__ import annotations

import signal
import socket
import sys
import threading
import time
import traceback
from typing import Callable

from . import dist
from .config import ExperimentConfig
from .results import RESULTS_SCHEMA, headline
from .runs import RunWriter
from .stages.context import Resources, StageContext
from .stages.registry import resolve_stage

__all__ = ["run_study", "Interrupted"]


class Interrupted(BaseException):
    """SIGINT / SIGTERM arrived; the run stops at once and is left resumable (a BaseException,
    so a stage's `except Exception` cannot swallow it)."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def _install_signal_handlers() -> dict:
    previous = {}

    def handler(signum, frame):  # noqa: ARG001
        raise Interrupted(signum)
    if threading.current_thread() is not threading.main_thread():
        return previous  # signals can only be handled in the main thread (e.g. a console worker)
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def run_study(run: RunWriter, cfg: ExperimentConfig | None = None,
              on_progress: Callable[[str, int, int | None], None] | None = None) -> str:
    """Run (or resume) every stage of ``run``; returns the final state: 'done', 'interrupted' or
    'failed'. Never leaves a half-written file: results.json is written once, atomically, at the end."""
    cfg = cfg or run.read_config()
    # one process per run: the lock (dbp_core.runs.Run.lock) is taken before the state is read and
    # held until the end; a caller that already holds it (the CLI) keeps it. FollowerRun: no lock.
    own_lock = run.lock()  # RunLocked: another process runs it
    try:
        return _run_locked(run, cfg, on_progress)
    finally:
        if own_lock:
            run.unlock()


def _set_threads(cfg: ExperimentConfig) -> int | None:
    """Apply ``cfg.threads`` (torch's intra-op thread count) before any stage; returns the previous
    count to restore, or None when the config leaves torch's default."""
    if cfg.threads is None:
        return None
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    return before


def _run_locked(run: RunWriter, cfg: ExperimentConfig,
                on_progress: Callable[[str, int, int | None], None] | None) -> str:
    previous = _install_signal_handlers()
    claimed = run.claimed_from  # the CLI marks a resumed run running right after locking it
    if claimed is None:
        status = run.read_status(check_alive=False)
        run.mark_running()
    else:
        status = claimed
        run.claimed_from = None  # consumed: a later run_study on this object reads the status again
    resumed = status is not None and status.state != "queued"
    run.log(("resuming" if resumed else "starting") + f" on {socket.gethostname()}")
    run.append_metric("resume" if resumed else "start", None)
    started = time.time()
    distributed = dist.is_distributed()  # under torchrun: rank 0 writes, other ranks get a runs.FollowerRun
    threads_before = None
    try:
        threads_before = _set_threads(cfg)
        if cfg.threads is not None:
            run.log(f"torch intra-op threads: {cfg.threads}")
        done: dict = run.load_checkpoint("stages.json") or {}
        if distributed:
            done = dist.broadcast_object(done)
        resources = Resources(cfg)
        for name in cfg.stages:
            if name in done:
                continue
            fn = resolve_stage(name)
            here = not distributed or dist.is_main() or getattr(fn, "dbp_all_ranks", False)
            ctx = StageContext(cfg=cfg, run=run, name=name, resources=resources, on_progress=on_progress,
                               collective=distributed and getattr(fn, "dbp_all_ranks", False), previous=done)
            run.log(f"stage {name}")
            done[name] = fn(ctx) if here else None
            if distributed:
                dist.barrier()  # every rank finished the stage (raises dist.PeerFailed if one failed)
                if not getattr(fn, "dbp_all_ranks", False):  # later stages may read it on every rank
                    done[name] = dist.broadcast_object(done[name])
            run.save_checkpoint("stages.json", done)
        results = _results(run, cfg, done, (status.created if status else None) or started)
        run.write_results(results)
        run.append_metric("done", None, headline=results["headline"])
        run.write_status(state="done", eta=0, message="")
        run.log("done")
        return "done"
    except (Interrupted, KeyboardInterrupt) as exc:
        dist.report_failure(exc)
        msg = str(exc) or "interrupted"
        run.write_status(state="interrupted", message=msg)
        run.log(f"{msg}; resume with: dbp resume {run.id}")
        return "interrupted"
    except Exception as exc:  # noqa: BLE001 — recorded, then reported by the CLI
        dist.report_failure(exc)  # under torchrun: every rank learns of it before rank 0 writes
        run.log("failed:\n" + traceback.format_exc() + getattr(exc, "tracebacks", ""))
        run.write_status(state="failed", message=f"{type(exc).__name__}: {exc}")
        return "failed"
    finally:
        dist.settle()  # under torchrun, after a failure: every rank waits until rank 0 has written
        run.close()
        if threads_before is not None:
            import torch
            torch.set_num_threads(threads_before)
        for sig, h in previous.items():
            signal.signal(sig, h)


def _results(run: RunWriter, cfg: ExperimentConfig, stages: dict, created: float) -> dict:
    import torch

    from . import ops
    rows = [row for result in stages.values() for row in result.get("accuracies", [])]
    audits = [r["audit"] for r in stages.values() if isinstance(r, dict) and isinstance(r.get("audit"), dict)]
    return {
        "schema": RESULTS_SCHEMA,
        "run_id": run.id,
        "experiment": cfg.name,
        "description": cfg.description,
        "seed": cfg.seed,
        "data": {"dataset": cfg.data.dataset, "split": cfg.data.split},
        "created": created,
        "finished": time.time(),
        "environment": {"backend": ops.backend(), "torch": torch.__version__, "python": sys.version.split()[0],
                        "host": socket.gethostname(), "world_size": dist.world()[1],
                        "threads": torch.get_num_threads()},
        "headline": headline(rows),
        "accuracies": rows,
        "comparisons": [c for result in stages.values() for c in result.get("comparisons", [])],
        **({"audit": audits[-1]} if audits else {}),  # the audit stage's flags (docs/results.md, "The audit")
        "stages": stages,
    }
