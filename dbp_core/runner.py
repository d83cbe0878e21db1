"""``run_study``: run (or resume) the stages of a run in order (docs/design.md, "Stages and the runner").

It owns what surrounds the stages: the run's lock and state, SIGINT/SIGTERM (``interrupts.Gate``: the run stops
and stays resumable), torch's thread count, the record of finished stages
(``checkpoints/stages.json``: skipped on resume), and ``results.json`` — written once,
atomically, at the end, together with the state ``done``. The stages run user code (plugin
models, datasets, stages, attacks) under one guard: an exception, ``sys.exit()`` or an empty
``MemoryError`` ends the run ``failed`` with a message that says what and where; a fatal
signal leaves its traceback in ``log.txt`` for readers (docs/design.md, "Stages and the
runner"). Under torchrun every rank runs it; rank 0 alone writes (docs/scale-out.md).
"""
from __future__ import annotations

import contextlib
import faulthandler
import logging
import re
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import dist
from .config import ExperimentConfig
from .interrupts import Gate, Interrupted, restore
from .plugins import PluginError, ProcessExit, exits_raise
from .results import RESULTS_SCHEMA, headline
from .store import RunWriter
from .store.log import start_message
from .stages.context import Resources, StageContext
from .stages.registry import resolve_stage

__all__ = ["run_study", "Interrupted"]


def _exits_recorded(run: RunWriter):
    """While the stages run, ``os._exit(n)`` from the run's code (a plugin) does not leave the run
    'running' with the exit code the plugin chose: the run ends 'failed' (``plugins.exits_raise``)."""
    def in_thread(code: int) -> None:
        where = threading.current_thread().name
        _record_end(run, "failed", f"the run's code called os._exit({code!r}) in thread {where}; a plugin must "
                    "raise an exception, not end the process", f"failed: os._exit({code!r}) in thread {where}", False)
    return exits_raise(on_thread_exit=in_thread)


PEER_LOST = re.compile(r"Connection (closed|reset) by peer|Read error|Broken pipe|remote worker")


def describe(exc: BaseException) -> str:
    """One line saying why the run failed: the exception and its message; for an exception without
    a message (``MemoryError()``) or an exit the run's own code called, where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, ProcessExit) and len(frames) > 1:
        frames = frames[:-1]  # the caller of os._exit, not the guard that raised for it
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
    if isinstance(exc, ProcessExit):
        return f"the run's code called os._exit({exc.code!r}) at {where}; a plugin must raise an exception, " \
               "not end the process"
    if isinstance(exc, SystemExit):
        return f"SystemExit: the run's code called sys.exit({exc.code!r}) at {where}; a plugin must raise " \
               "an exception, not exit"
    text = " ".join(str(exc).split())
    if dist.is_distributed() and PEER_LOST.search(text):  # gloo / NCCL: the other end of a collective is gone
        return (f"a peer process of the torchrun job died or lost its connection ({type(exc).__name__}: "
                f"{text[:160]}); torchrun's output says which rank and why")
    if not text:
        text = ("out of memory" if isinstance(exc, MemoryError) else "raised without a message") + f", at {where}"
    return f"{type(exc).__name__}: {text}"


def run_study(run: RunWriter, cfg: ExperimentConfig | None = None,
              on_progress: Callable[[str, int, int | None], None] | None = None) -> str:
    """Run (or resume) every stage of ``run``; returns the final state: 'done', 'interrupted' or
    'failed'. Never leaves a half-written file: results.json is written once, atomically, at the end.
    Whatever the run's code does — raise, call ``sys.exit()``, exhaust memory — ends as a failed
    run with its message; a signal ends it as interrupted (docs/design.md, "Stages and the runner")."""
    cfg = cfg or run.read_config()
    # one process per run: the lock (dbp_core.store.Run.lock) is taken before the state is read and
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


@contextlib.contextmanager
def _crash_reports(run: RunWriter):
    """While the run runs, a fatal signal (``os.abort()``, a crash in native code) writes the
    Python traceback into ``log.txt`` (:mod:`faulthandler`); readers then report the run failed
    with that error (``store.Run.crash_report``) instead of leaving it 'running'."""
    open_log = getattr(run, "crash_log", None)
    fh = None
    was_enabled = faulthandler.is_enabled()
    try:
        fh = open_log() if open_log is not None else None
    except (OSError, ValueError):
        fh = None
    if fh is not None:
        faulthandler.enable(file=fh, all_threads=True)
    try:
        yield
    finally:
        if fh is not None:
            faulthandler.disable()
            if was_enabled:
                faulthandler.enable(file=sys.__stderr__ or sys.stderr)
            fh.close()


class _RunLogHandler(logging.Handler):
    """Writes what dbp_core's modules log as warnings into the run's log.txt."""

    def __init__(self, run: RunWriter):
        super().__init__(logging.WARNING)
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.run.log(f"warning: {record.getMessage()}")
        except (OSError, ValueError):  # a full disk, a link in place of log.txt: the warning was on stderr too
            pass


@contextlib.contextmanager
def _warnings_logged(run: RunWriter):
    """While the run runs, warnings logged under ``dbp_core`` (e.g. a trusted pickle unpickled,
    models/checkpoint_io.py) go into its log.txt."""
    handler, logger = _RunLogHandler(run), logging.getLogger("dbp_core")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _record_end(run: RunWriter, state: str, message: str, log: str, drop_results: bool) -> None:
    """Write the final state of a run that did not finish. The disk may be full: the run's
    reserved space is released first; what cannot be written is kept in ``run.unrecorded``."""
    run.release_space()
    problems = []
    if drop_results and getattr(run, "results_path", None) is not None:
        try:  # results.json was written but the state 'done' was not: an unfinished run has none
            run.results_path.unlink(missing_ok=True)
        except OSError as exc:
            problems.append(str(exc))
    for write in (lambda: run.log(log), lambda: run.write_status(state=state, message=message)):
        try:
            write()
        except (OSError, ValueError) as exc:  # ValueError: RunFileError (a link put in place of a run file)
            problems.append(str(exc))
    if problems:
        run.unrecorded = "; ".join(problems)


@dataclass
class _Attempt:
    """How far one run_study got, for its end: the signal gate, torch's thread count to restore, and
    whether results.json is written without the state 'done' (an unfinished run must not keep it)."""
    gate: Gate
    distributed: bool  # under torchrun: rank 0 writes, other ranks get a store.FollowerRun
    threads_before: int | None = None
    results_written: bool = False


def _run_locked(run: RunWriter, cfg: ExperimentConfig,
                on_progress: Callable[[str, int, int | None], None] | None) -> str:
    attempt = _Attempt(Gate(), dist.is_distributed())
    previous = attempt.gate.install()
    run.bad_input = False
    try:
        with _crash_reports(run), _exits_recorded(run), _warnings_logged(run):
            try:
                return _run_to_done(run, cfg, on_progress, attempt)
            except (Interrupted, KeyboardInterrupt) as exc:
                return _end_interrupted(run, attempt, exc)
            except BaseException as exc:  # noqa: BLE001 — any end of the run's code, sys.exit() included
                return _end_failed(run, attempt, exc)
    finally:
        with attempt.gate.held(deliver=False):
            _settle(run, attempt.threads_before, previous)


def _run_to_done(run: RunWriter, cfg: ExperimentConfig, on_progress, attempt: _Attempt) -> str:
    """Mark the run running, run the stages not done yet, write results.json and the state 'done'."""
    with attempt.gate.held():
        status = _mark_running(run)
    started = time.time()
    attempt.threads_before = _set_threads(cfg)
    if cfg.threads is not None:
        run.log(f"torch intra-op threads: {cfg.threads}")
    done = _run_stages(run, cfg, on_progress, attempt.distributed)
    results = _results(run, cfg, done, (status.created if status else None) or started)
    with attempt.gate.held(deliver=False):  # results.json and 'done' together: a signal now changes nothing
        run.write_results(results)
        attempt.results_written = True
        run.append_metric("done", None, headline=results["headline"])
        run.release_space()
        run.write_status(state="done", eta=0, message="")
        attempt.results_written = False  # recorded: the run is done
        run.log("done")
    return "done"


def _mark_running(run: RunWriter):
    """The run's status before this start (None for a new run), the run marked running and the
    start (or resumption) logged."""
    claimed = run.claimed_from  # the CLI marks a resumed run running right after locking it
    if claimed is None:
        status = run.read_status(check_alive=False)
        run.mark_running()
    else:
        status = claimed
        run.claimed_from = None  # consumed: a later run_study on this object reads the status again
    resumed = status is not None and status.state != "queued"
    run.log(start_message(resumed))  # where readers look back to for a crash (store.log.crash_report)
    run.append_metric("resume" if resumed else "start", None)
    return status


def _run_stages(run: RunWriter, cfg: ExperimentConfig, on_progress, distributed: bool) -> dict:
    """``{stage: result}`` of every stage, those recorded in stages.json skipped; the record is saved
    after each stage (under torchrun: on every rank, a stage run by rank 0 alone broadcast)."""
    done: dict = run.load_checkpoint("stages.json") or {}
    if distributed:
        done = dist.broadcast_object(done)
    resources = Resources(cfg)
    for name in cfg.stages:
        if name in done:
            continue
        fn = resolve_stage(name)
        all_ranks = getattr(fn, "dbp_all_ranks", False)
        here = not distributed or dist.is_main() or all_ranks
        ctx = StageContext(cfg=cfg, run=run, name=name, resources=resources, on_progress=on_progress,
                           collective=distributed and all_ranks, previous=done)
        run.log(f"stage {name}")
        done[name] = fn(ctx) if here else None
        if distributed:
            dist.barrier()  # every rank finished the stage (raises dist.PeerFailed if one failed)
            if not all_ranks:  # later stages may read it on every rank
                done[name] = dist.broadcast_object(done[name])
        run.save_checkpoint("stages.json", done)
    return done


def _end_interrupted(run: RunWriter, attempt: _Attempt, exc: BaseException) -> str:
    with attempt.gate.held(deliver=False):
        attempt.gate.raised = True  # a KeyboardInterrupt not from our handler: ignore further signals too
        dist.report_failure(exc)
        msg = str(exc) or "interrupted"
        if attempt.distributed:
            msg += " (under torchrun: if no one sent it, a peer process died; torchrun's output says which)"
        _record_end(run, "interrupted", msg, f"{msg}; resume with: dbp resume {run.id}", attempt.results_written)
    return "interrupted"


def _end_failed(run: RunWriter, attempt: _Attempt, exc: BaseException) -> str:
    """Called while ``exc`` is being handled (its traceback goes to log.txt)."""
    with attempt.gate.held(deliver=False):
        attempt.gate.raised = True
        run.bad_input = isinstance(exc, PluginError)  # a plugin broke its contract: exit code 2
        dist.report_failure(exc)  # under torchrun: every rank learns of it before rank 0 writes
        _record_end(run, "failed", describe(exc), "failed:\n" + traceback.format_exc()
                    + getattr(exc, "tracebacks", ""), attempt.results_written)
    return "failed"


def _settle(run: RunWriter, threads_before: int | None, previous_handlers: dict) -> None:
    """However the run ended: wait for the other ranks, release the reserve, close the run, and put
    torch's thread count and the signal handlers back."""
    dist.settle()  # under torchrun, after a failure: every rank waits until rank 0 has written
    run.release_space()
    run.close()
    if threads_before is not None:
        import torch
        torch.set_num_threads(threads_before)
    restore(previous_handlers)


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
                        "threads": torch.get_num_threads(), "plugins": _plugins_of(run)},
        "headline": headline(rows),
        "accuracies": rows,
        "comparisons": [c for result in stages.values() for c in result.get("comparisons", [])],
        **({"audit": audits[-1]} if audits else {}),  # the audit stage's flags (docs/results.md, "The audit")
        "stages": stages,
    }


def _plugins_of(run: RunWriter) -> dict:
    """The plugins the run executed, as recorded in plugins.json: ``{field: {"import", "file", "sha256"}}``."""
    recorded = getattr(run, "recorded_plugins", None)
    try:
        return ((recorded() if recorded else None) or {}).get("plugins") or {}
    except (OSError, ValueError):
        return {}
