"""The ``dbp`` command (also ``python -m dbp_core``).

Exit codes: 0 ok, 1 the run failed, 2 bad input (invalid config, missing file, unknown run, a
plugin that broke its contract — docs/plugins.md — even mid-run), 130 interrupted (SIGINT/SIGTERM, or a
sweep whose output pipe was closed; the run is resumable). User errors print one clear message,
never a traceback; a failed run's traceback is in its ``log.txt``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from .interrupts import deferred

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class UserError(Exception):
    """Bad input: printed as 'dbp: error: ...' with exit code 2."""


class OutputClosed(KeyboardInterrupt):
    """The pipe or terminal the progress lines go to was closed (``dbp sweep ... 2>&1 | head``): the
    run stops as an interrupt stops it — recorded 'interrupted', resumable — instead of failing."""


# --------------------------------------------------------------------------- progress display

class ProgressDisplay:
    """tqdm bar on a terminal; otherwise (nohup, CI logs) plain lines, at most one every 2 s:
    'attacks: 50/200 (25%, 3.1/s, eta 48 s)', the rate and eta counted from the stage's first
    line (``clock``: seconds, monotonic)."""

    def __init__(self, stream=None, enabled: bool | None = None, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if enabled is None else enabled
        self.clock = clock
        self.bar = None
        self.stage = None
        self.last_line = 0.0
        self.first = (0.0, 0)  # (time, done) of the stage's first line

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if self.tty:
            from tqdm import tqdm
            if self.bar is None or self.stage != stage:
                self.close()
                self.bar = tqdm(total=total, desc=stage, file=self.stream, dynamic_ncols=True)
                self.stage = stage
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()
        else:
            now = self.clock()
            if stage != self.stage:
                self.first = (now, done)
            if stage != self.stage or done == total or now - self.last_line >= 2.0:
                self.stage, self.last_line = stage, now
                try:
                    print(self.line(stage, done, total, now), file=self.stream, flush=True)
                except BrokenPipeError:
                    raise OutputClosed("its output was closed (a broken pipe)") from None

    def line(self, stage: str, done: int, total: int | None, now: float) -> str:
        """'stage: done/total (percent, rate, eta)', each part where it is known."""
        t0, done0 = self.first
        rate = (done - done0) / (now - t0) if now > t0 and done > done0 else None
        parts = [f"{100 * done / total:.0f}%"] if total else []
        if rate is not None:
            parts.append(f"{rate:.0f}/s" if rate >= 10 else f"{rate:.2g}/s")
            if total and done < total:
                parts.append(f"eta {_seconds((total - done) / rate)}")
        text = f"{stage}: {done}/{total if total is not None else '?'}"
        return text + (f" ({', '.join(parts)})" if parts else "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _seconds(s: float) -> str:
    """A duration as progress lines and `dbp show` print it: '48 s'."""
    return f"{s:.0f} s"


# --------------------------------------------------------------------------- helpers

def _store(args):
    from .runs import RunStore, default_runs_dir
    store = RunStore(default_runs_dir(getattr(args, "runs_dir", None), getattr(args, "_config_runs_dir", None)))
    existing = store.root  # the store, or its nearest existing parent, must be a folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UserError(f"run store {store.root}: {existing} is not a folder; expected a folder (or a path "
                        "that does not exist yet) for --runs-dir / $DBP_RUNS_DIR / output.runs_dir")
    return store


def _open_run(args):
    """The run ``args.run`` names (its callers, resume/show/export, look for a sweep first)."""
    from .runs import RunNotFound
    try:
        return _store(args).open(args.run)
    except RunNotFound as exc:
        message = str(exc)
        if message.startswith("no run "):  # not an ambiguous prefix: nothing matched at all
            message += ", and no sweep (`dbp runs` lists both)"
        raise UserError(message) from None


def _load(args, weights_up_to: int | None = None):
    """The checked config of ``args.file`` (``preflight``: checkpoints' weights read up to
    ``weights_up_to`` bytes a file; None, before a run: all)."""
    with deferred():  # the preflight's first torch import too: an interrupt there could be lost
        from .config import load_config
        from .preflight import preflight
        cfg = load_config(args.file, overrides=args.set or [])
        return preflight(cfg, args.file, weights_up_to)


def _execute(run, cfg, args) -> int:
    display = ProgressDisplay(enabled=False if args.no_progress else None)
    try:
        with deferred():  # importing the runner: an interrupt is delivered after, not lost in an import
            from .runner import run_study
        state = run_study(run, cfg, on_progress=display)
    except KeyboardInterrupt:  # before run_study took over the signals: the run is left as it was
        _leave_interrupted(run)
        raise
    finally:
        display.close()
        run.unlock()  # taken by _prepare_run / _prepare_resume (run_study keeps a lock it did not take)
    with _signals_ignored():  # the run's state is recorded: a late signal cannot cut the report short
        return _report_end(run, state)


@contextlib.contextmanager
def _signals_ignored():
    """Ignore SIGINT/SIGTERM for the block (main thread only), then restore the handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def _report_end(run, state: str) -> int:
    from .results import read_run
    view = read_run(run.path, check_alive=False)
    unrecorded = getattr(run, "unrecorded", None)  # the disk was full even for the final status
    note = f"\n(and the run's state could not be recorded: {unrecorded})" if unrecorded else ""
    if state == "done":
        print("\n".join(results_lines(view)))  # the table of `dbp show`
        print(run.path)
        return EXIT_OK
    if state == "interrupted":
        print(f"dbp: interrupted; resume with: dbp resume {run.id}{note}\n{run.path}", file=sys.stderr)
        return EXIT_INTERRUPTED
    message = view.status.message if view.status and view.status.state == "failed" else ""
    print(f"dbp: run failed: {message}{note}\n(traceback in {run.log_path})\n{run.path}", file=sys.stderr)
    return EXIT_BAD_INPUT if getattr(run, "bad_input", False) else EXIT_FAILED  # a plugin broke its contract


def _leave_interrupted(run) -> None:
    """A signal between the creation (or claim) of a run and its start: record it interrupted
    (unless the run already recorded how it ended: the signal came after)."""
    try:
        status = run.read_status(check_alive=False)
        if status is not None and status.final:
            return
        run.release_space()
        run.write_status(state="interrupted", message="interrupted before it started")
    except (OSError, ValueError):
        pass


# --------------------------------------------------------------------------- commands

def cmd_check(args) -> int:
    from .preflight import CHECK_READS_WEIGHTS_UP_TO, unread_weights
    cfg = _load(args, CHECK_READS_WEIGHTS_UP_TO)
    attacks = ", ".join(a.name for a in cfg.attacks) or "none"
    print(f"ok: {args.file} — experiment '{cfg.name}', data {cfg.data.dataset}/{cfg.data.split}, "
          f"stages {', '.join(cfg.stages)}, attacks: {attacks}")
    called = [f for f in cfg.plugin_paths() if not f.startswith("stages")]
    if called:  # dbp_core/smoke.py
        print(f"plugins called once on 2 examples and checked: {', '.join(called)}")
    for field, path, size in unread_weights(cfg, CHECK_READS_WEIGHTS_UP_TO):
        print(f"note: {field}: the weights of {path} ({size:,} bytes) were not read (keys, shapes and dtypes were): "
              "dbp run checks that they are finite before it creates the run folder")
    return EXIT_OK


def _prepare_run(args):
    from .runs import RunStoreError
    cfg = _load(args)
    args._config_runs_dir = cfg.output.runs_dir
    try:
        # locked: no `dbp resume` can start it before we do
        run = _store(args).create(cfg, lock=True, source=str(Path(args.file).resolve()))
    except RunStoreError as exc:
        raise UserError(str(exc)) from None
    try:
        print(f"run {run.id} in {run.path}", file=sys.stderr)
    except KeyboardInterrupt:
        _leave_interrupted(run)
        run.unlock()
        raise
    return run, cfg


def cmd_run(args) -> int:
    from . import dist
    if dist.env_world_size() > 1:
        return _distributed(args, _prepare_run)
    run, cfg = _prepare_run(args)
    return _execute(run, cfg, args)


def _prepare_resume(args):
    """Take the run's lock (a second `dbp resume`, or the run's own process, holds it → exit 2),
    check its state, mark it running at once, then read its frozen config."""
    return _claim_for_resume(_open_run(args), getattr(args, "allow_changed_code", False))


def _changed_code(run, allow: bool) -> None:
    """Refuse (UserError) to resume a run whose plugin code is not what it started with — its result
    would mix two versions of the code — unless ``allow`` (``--allow-changed-code``): then the change
    is logged and recorded in plugins.json."""
    changes = run.plugin_changes()
    if not changes:
        return
    what = "; ".join(f"{c['field']} = '{c['import']}' in {c['now_file'] or c['file']} (sha256 "
                     f"{(c['recorded'] or 'none')[:12]} when the run started, {(c['now'] or 'unreadable')[:12]} now)"
                     for c in changes)
    if not allow:
        raise UserError(f"run {run.id} cannot be resumed: its plugin code changed since it started: {what}; "
                        "resuming would mix two versions of the code in one result. Restore the file, start a "
                        "new run, or resume with --allow-changed-code (recorded in the run's log)")
    run.accept_plugin_changes(changes)
    run.log(f"resumed with changed plugin code (--allow-changed-code): {what}")
    print(f"dbp: warning: resuming with changed plugin code: {what}", file=sys.stderr)


def _claim_for_resume(run, allow_changed_code: bool = False):
    """:func:`_prepare_resume` of an opened run: (run, cfg), or EXIT_OK for a run already done."""
    from .config import ConfigError
    from .runs import RunFileError, RunLocked
    problems = run.file_problems()  # a link in place of .lock or log.txt: refused before either is opened
    if problems:
        raise UserError(f"run {run.id} cannot be resumed: {problems[0]}")
    try:
        run.lock()
    except RunLocked as exc:
        raise UserError(str(exc)) from None
    except RunFileError as exc:
        raise UserError(f"run {run.id} cannot be resumed: {exc}") from None
    try:
        try:
            status = run.read_status(persist=True)
            if status is None or status.state != "done":
                run.verify_integrity()  # the frozen config, checkpoints, saved models: as dbp wrote them
        except RunFileError as exc:
            raise UserError(f"run {run.id} cannot be resumed: {exc}") from None
        state = status.state if status else None
        if state == "done":
            run.unlock()
            print(f"run {run.id} is already done\n{run.path}")
            return EXIT_OK
        if state == "running":  # alive, yet it did not hold the lock: a dbp without run locks
            raise UserError(f"run {run.id} is already running (pid {status.pid} on {status.host})")
        try:
            run.reserve_space()
        except OSError as exc:
            raise UserError(f"run {run.id} cannot be resumed: no room for its files ({exc}); free some space") from None
        run.mark_running()
        try:
            from .preflight import preflight
            with deferred():
                frozen = run.read_config()
            cfg = preflight(frozen, str(run.config_path))
            _changed_code(run, allow_changed_code)
        except BaseException:
            if run.claimed_from is not None:  # put the status back as it was
                run.write_status(**{k: v for k, v in run.claimed_from.to_dict().items() if k != "updated"})
            raise
    except BaseException:
        run.release_space()
        run.unlock()
        raise
    print(f"resuming run {run.id} ({state})", file=sys.stderr)
    return run, cfg


def cmd_resume(args) -> int:
    from . import dist
    sweep = _find_sweep(args, args.run)
    if sweep is not None:
        return _run_sweep(sweep, args)
    if dist.env_world_size() > 1:
        return _distributed(args, _prepare_resume)
    prepared = _prepare_resume(args)
    if isinstance(prepared, int):
        return prepared
    return _execute(*prepared, args)


# --------------------------------------------------------------------------- sweeps

def _find_sweep(args, ref):
    from .runs import RunNotFound
    try:
        return _store(args).find_sweep(ref)
    except RunNotFound as exc:
        raise UserError(str(exc)) from None


def cmd_sweep(args) -> int:
    """``dbp sweep FILE --grid key=v1,v2 [--grid ...]``: one run per grid point, in a sweep group
    (dbp_core/runs.py: the sweep folder); every point is checked as ``dbp run`` checks it (the
    schema, then preflight) before the first one runs."""
    import itertools
    import math

    from . import dist
    from .config import ConfigError, dumps_config, load_config, loads_config, parse_grid
    from .preflight import preflight
    from .runs import RunStoreError, SweepPoint
    if dist.env_world_size() > 1:
        raise UserError("dbp sweep runs its points one after another in one process; under torchrun, run "
                        "`dbp run FILE --set key=value` per point instead")
    notes: list[str] = []
    grid = parse_grid(args.grid, args.file, max_points=args.max_points, notes=notes)
    if not grid:
        raise UserError("dbp sweep needs at least one --grid key=value1,value2,...")
    for note in notes:
        print(f"dbp: note: {note}", file=sys.stderr)
    with deferred():  # the base's schema only: the points are what runs, each preflighted below
        cfg = load_config(args.file, overrides=args.set or [])
    args._config_runs_dir = cfg.output.runs_dir
    base = dumps_config(cfg, absolute_paths=True)  # the points' base: frozen, paths absolute
    base_dir = str(Path(args.file).resolve().parent)  # a point's relative paths resolve as `dbp run` resolves them
    keys = [k for k, _ in grid]
    total = math.prod(len(v) for _, v in grid)
    display = ProgressDisplay(enabled=False if args.no_progress else None)
    cache: dict = {}  # preflight's slow checks, once per distinct value of what they read
    try:
        for i, combo in enumerate(itertools.product(*[v for _, v in grid])):
            point = SweepPoint(i, dict(zip(keys, combo)), None)
            try:
                with deferred():
                    preflight(loads_config(base, file=args.file, base_dir=base_dir, overrides=point.overrides),
                              args.file, cache=cache)
            except ConfigError as exc:
                where = f"point {i + 1}/{total}: {point.label}"
                raise ConfigError(exc.file, [_grid_problem(e, where) for e in exc.errors]) from None
            display("checking points", i + 1, total)
    finally:
        display.close()
    try:
        sweep = _store(args).create_sweep(cfg.name, base, grid, source=str(Path(args.file).resolve()),
                                          overrides=list(args.set or []), base_dir=base_dir)
    except RunStoreError as exc:
        raise UserError(str(exc)) from None
    print(f"sweep {sweep.id} in {sweep.path}: {total} points over "
          + " x ".join(f"{k} ({len(v)})" for k, v in grid), file=sys.stderr)
    return _run_sweep(sweep, args)


def _grid_problem(problem: dict, where: str) -> dict:
    """A point's config problem as the grid gave it: '(from --grid key=value)' where an override of
    the point set the field, else the point named."""
    message = problem["message"]
    if "(from --set" in message:
        message = message.replace("(from --set", "(from --grid")
    else:
        message += f" (at sweep {where})"
    return {**problem, "message": message}


def _run_sweep(sweep, args) -> int:
    """Run the sweep's points in order: a point without a run gets one, an interrupted or failed
    point is resumed, a done point is skipped. Stops at the first point that does not finish
    (``dbp resume <sweep>`` continues from there). A damaged sweep folder (results.read_sweep's
    problems) is refused before anything runs; a closed output pipe stops the sweep resumable."""
    from .results import read_sweep
    store = _store(args)
    sweep.lock()  # RunLocked (exit 2) when another process runs this sweep
    run, where = None, "its start"
    try:
        view = read_sweep(sweep.path)  # the manifest, points.jsonl, each point's run against its values
        if view.problems:
            raise UserError(f"sweep {sweep.id} cannot be resumed: " + "; ".join(view.problems))
        base_text = _sweep_base(sweep)
        points = [pv.point for pv in view.points]
        for p in points:
            where = f"point {p.index + 1}/{len(points)}: {p.label}"
            run = None
            prepared = _prepare_point(store, sweep, view.manifest, base_text, p, where, args)
            if isinstance(prepared, int):
                continue  # done
            run, cfg, claimed = prepared
            print(f"({where})" if claimed else f"run {run.id} in {run.path} ({where})", file=sys.stderr)
            rc = _execute(run, cfg, args)
            sys.stdout.flush()  # a reader that went away (`| head`) is seen here, between two points
            if rc != EXIT_OK:
                print(f"dbp: sweep {sweep.id} stopped at {where}; continue with: dbp resume {sweep.id}",
                      file=sys.stderr)
                return rc
        run = None
        view = read_sweep(sweep.path)
        print(f"\nsweep {view.id}: {view.progress_text}")
        print("\n".join(sweep_lines(view)))
        print(sweep.path, flush=True)
    except BrokenPipeError:
        return _output_closed(sweep, run, where)
    finally:
        sweep.unlock()
    return EXIT_OK


def _sweep_base(sweep) -> str:
    """The base config text the sweep froze (UserError naming the file if it cannot be read)."""
    try:
        return sweep.config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"sweep {sweep.id} cannot be resumed: {sweep.config_path} cannot be read ({exc}); "
                        "expected the base config dbp sweep froze") from None


def _prepare_point(store, sweep, manifest: dict, base_text: str, p, where: str, args):
    """A point ready to run, ``(run, cfg, claimed)`` — its run claimed for resume (claimed True), or a
    new run created and recorded in points.jsonl — or EXIT_OK when its run is done."""
    from .config import ConfigError, loads_config
    from .preflight import preflight
    from .runs import RunNotFound
    if p.run:
        try:
            prepared = _claim_for_resume(store.open(p.run), getattr(args, "allow_changed_code", False))
            return prepared if isinstance(prepared, int) else (*prepared, True)
        except RunNotFound:
            print(f"dbp: {where}: its run {p.run} is gone (deleted?); running the point again", file=sys.stderr)
    try:
        with deferred():
            cfg = preflight(loads_config(base_text, file=str(sweep.config_path),
                                         base_dir=str(sweep.base_dir(manifest)), overrides=p.overrides),
                            str(sweep.config_path))
    except ConfigError as exc:
        raise ConfigError(exc.file, [_grid_problem(e, where) for e in exc.errors]) from None
    with deferred():  # the run and its record in points.jsonl together: no run of no point
        run = store.create(cfg, lock=True, source=manifest.get("source"), group=sweep.id)
        try:
            sweep.set_run(p.index, run.id)
        except BaseException:  # not recorded (a full disk): the new, untouched folder goes
            run.unlock()
            shutil.rmtree(run.path, ignore_errors=True)
            raise
    return run, cfg, False


def _output_closed(sweep, run, where: str) -> int:
    """``dbp sweep ... | head``: the reader of the output went away. The point's run, if it had not
    ended, is recorded interrupted (resumable, never left 'queued'); what is left to print goes
    nowhere; the exit code says the sweep did not finish."""
    if run is not None:
        _leave_interrupted(run)
        run.unlock()
    message = f"dbp: sweep {sweep.id} stopped at {where}: its output was closed; continue with: dbp resume {sweep.id}"
    for stream in (sys.stderr, sys.stdout):
        try:
            if stream is sys.stderr:
                print(message, file=stream)
            stream.flush()
        except OSError:  # closed too: what remains in its buffer goes to /dev/null, not to an error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    return EXIT_INTERRUPTED


def sweep_lines(view) -> list[str]:
    """A sweep's points as ``dbp sweep`` ends and ``dbp show SWEEP`` prints them: values, state,
    run, and the robust accuracy of what the sweep varies (results.SweepView.point_rows)."""
    label_w = max([len(p.point.label) for p in view.points] + [5])
    run_w = max([len(p.point.run or "-") for p in view.points] + [3])
    lines = [f"robust accuracy (protocol single, 95% interval) of {view.measured_text}, per point:"]
    for pv in view.points:
        lines.append(f"  {pv.point.label:<{label_w}}  {pv.state:<11}  {pv.point.run or '-':<{run_w}}  "
                     f"{view.point_text(pv)}")
    return lines


def _distributed(args, prepare) -> int:
    """``dbp run`` / ``dbp resume`` under torchrun (docs/scale-out.md): rank 0 alone creates or
    opens the run and writes its store; it hands the run id and the resolved config to the other
    ranks in one exchange, then every rank runs the study (dbp_core.runner / dbp_core.dist)."""
    from . import dist
    dist.init_from_env()
    rank, world = dist.world()
    try:
        prepared, error = None, None
        if rank == 0:
            try:
                prepared = prepare(args)
            except Exception as exc:  # noqa: BLE001 — re-raised below for the usual message
                error = exc

        def share():
            if error is not None:
                raise error
            if isinstance(prepared, int):
                return ("exit", prepared)
            if prepared is not None:
                run, cfg = prepared
                return ("run", str(run.path), run.id, cfg)
            return None
        try:
            shared = dist.run_guarded(share)[0]
        except dist.PeerFailed:
            if error is not None:
                raise error from None  # rank 0: 'dbp: invalid config: ...' etc.
            return EXIT_BAD_INPUT
        if shared[0] == "exit":
            return shared[1]
        if rank == 0:
            print(f"distributed run over {world} ranks", file=sys.stderr)
            return _execute(prepared[0], prepared[1], args)
        from .runner import run_study
        from .runs import FollowerRun
        run = FollowerRun(shared[2], shared[1], rank=rank)
        state = run_study(run, shared[3])
        if state == "done":
            return EXIT_OK
        print(f"dbp [rank {rank}]: run {state}; see {shared[1]}/log.txt", file=sys.stderr)
        return EXIT_INTERRUPTED if state == "interrupted" else EXIT_FAILED
    finally:
        dist.settle()
        dist.shutdown()


def cmd_runs(args) -> int:
    from .results import headline_text, list_runs
    views = list_runs(_store(args).root)
    rows = []
    for v in views:  # a damaged run is listed as 'damaged' (and a warning), never ends the listing
        for p in v.problems:
            print(f"dbp: warning: {p}", file=sys.stderr)
        rows.append((v.id, v.experiment, v.state, v.progress_text(), headline_text(v.headline)))
    if args.json:
        print(json.dumps([dict(zip(("id", "experiment", "state", "progress", "headline"), r)) for r in rows], indent=2))
        return EXIT_OK
    if not rows:
        print(f"no runs in {_store(args).root}")
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"runs in {_store(args).root}")
    for col in ("id", "experiment", "state", "progress", "headline result"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*r)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    from .results import list_sweeps
    sweeps = list_sweeps(_store(args).root)
    if sweeps:  # the groups of `dbp sweep`: their points are rows of the table above
        st = Table(title="sweeps")
        for col in ("id", "experiment", "swept", "state", "points"):
            st.add_column(col, overflow="fold")
        for sv in sweeps:
            st.add_row(sv.id, sv.experiment, ", ".join(sv.keys), sv.state, sv.progress_text)
        console.print(st)
    return EXIT_OK


def results_lines(view) -> list[str]:
    """The results of a run as ``dbp show`` prints them (and ``dbp run`` at its end): every
    accuracy row with its interval and what it measures, the paired differences, the headline."""
    from .results import fmt_pct, headline_text, row_meaning
    from .stages.registry import ORIGINAL, SINGLE
    if not view.results:
        return []
    lines = ["", "accuracies:"]
    for row in view.rows:
        model = f"{row['model']}: " if row.get("model") not in (None, ORIGINAL) else ""
        what = model + row["protocol"] + (f" / {row['attack']}" if row.get("attack") else "")
        lines.append(f"  {row.get('stage', ''):<10} {what:<36} {fmt_pct(row['accuracy']):>7}  "
                     f"[{fmt_pct(row['ci_low'])}, {fmt_pct(row['ci_high'])}]  n={row['n']}  {row_meaning(row)}")
    if view.comparisons:
        lines += ["", "paired differences (a - b, same examples and seeds):"]
        for c in view.comparisons:
            lines.append(f"  {c['a']:<30} - {c['b']:<30} {100 * c['diff']:+6.1f} pts  "
                         f"[{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]  ({c.get('what', '')})")
    if view.audit:
        flags = view.audit["flags"]
        raised = sum(f["raised"] for f in flags)
        lines += ["", f"audit of {view.audit['attack']}: {raised} of {len(flags)} flags raised"]
        lines += [f"  {'RAISED' if f['raised'] else 'ok':<7}{f['name']:<25}{f['summary']}" for f in flags]
    if view.headline:
        note = "  (robust accuracy under the strongest attack)" if view.headline.get("protocol") == SINGLE else ""
        lines += ["", f"headline:   {headline_text(view.headline).replace('/', ' / ', 1)}{note}"]
    return lines


def cmd_show(args) -> int:
    from .results import read_run
    sweep = _find_sweep(args, args.run)
    if sweep is not None:
        return _show_sweep(sweep)
    view = read_run(_open_run(args).path)
    status = view.status
    print(f"run:        {view.id}\nfolder:     {view.path}")
    if view.source:
        print(f"source:     {view.source}")
    if view.group:
        print(f"sweep:      {view.group}")
    message = status.message if status else view.status_problem
    print(f"experiment: {view.experiment}\nstate:      {view.state}" + (f" — {message}" if message else ""))
    eta = status.eta if status else None
    show_eta = view.state == "running" and eta is not None and eta > 0
    print(f"progress:   {view.progress_text()}" + (f", eta {_seconds(eta)}" if show_eta else ""))
    for line in results_lines(view):
        print(line)
    tail = view.log_tail(5)
    if tail:
        print("\nlog:\n  " + "\n  ".join(tail))
    if view.problems:  # shown as far as possible, but the run is damaged: exit 2
        for p in view.problems:
            print(f"dbp: error: {p}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _show_sweep(sweep) -> int:
    """``dbp show SWEEP``: where it came from, its grid, its points, its progress."""
    from .results import read_sweep
    view = read_sweep(sweep.path)
    print(f"sweep:      {view.id}\nfolder:     {view.path}\nexperiment: {view.experiment}")
    if view.source:
        print(f"source:     {view.source}")
    for i, text in enumerate(view.grid_text):
        print(f"{'grid:' if i == 0 else '':<12}{text}")
    print(f"state:      {view.state}\n")
    print("\n".join(sweep_lines(view)))
    print(f"\nprogress:   {view.progress_text}")
    problems = view.problems + [
        f"point {pv.point.index + 1} ({pv.point.label}): {p}" for pv in view.points if pv.view for p in pv.view.problems]
    for p in problems:  # shown as far as possible, but a file is damaged: exit 2
        print(f"dbp: error: {p}", file=sys.stderr)
    return EXIT_BAD_INPUT if problems else EXIT_OK


def cmd_export(args) -> int:
    from .results import export_rows, read_run
    sweep = _find_sweep(args, args.run)
    if sweep is not None:
        return _export_sweep(sweep, args)
    view = read_run(_open_run(args).path)
    results_problem = next((p for p in view.problems if "results.json" in p), None)
    if results_problem:
        raise UserError(f"run {view.id} cannot be exported: {results_problem}")
    if view.results is None:
        raise UserError(f"run {view.id} has no results.json yet (state: {view.state})")
    return _write_csv(args, export_rows([view]))


def _export_sweep(sweep, args) -> int:
    """``dbp export SWEEP``: the rows of every point run with results, led by the swept values
    (results.sweep_export_rows); a point without results is skipped with a note."""
    from .results import read_sweep, sweep_export_rows
    view = read_sweep(sweep.path)
    if view.problem:
        raise UserError(f"sweep {view.id} cannot be exported: {view.problem}")
    export = sweep_export_rows(view)
    if not export.rows:
        why = export.problems[0] if export.problems else f"{view.progress_text} done"
        raise UserError(f"sweep {view.id} has no point with results to export ({why})")
    for note in export.skipped:
        print(f"dbp: note: {note}; skipped", file=sys.stderr)
    rc = _write_csv(args, export.rows, export.columns)
    for p in export.problems:  # the readable points are exported; a damaged one is named and the exit is 2
        print(f"dbp: error: {p}; skipped", file=sys.stderr)
    return EXIT_BAD_INPUT if export.problems else rc


def _write_csv(args, rows: list[dict], lead: list[str] = ()) -> int:
    """Write export ``rows`` (``lead`` columns first) to ``--csv FILE``, or standard output."""
    import io
    from .results import write_csv
    buf = io.StringIO(newline="")
    write_csv(rows, stream=buf, lead=lead)
    if args.csv in (None, "-"):
        sys.stdout.write(buf.getvalue())
        return EXIT_OK
    target = Path(args.csv)
    if target.is_dir():
        raise UserError(f"cannot write CSV to {target}: it is a folder; expected a file path (e.g. {target / 'results.csv'})")
    try:
        with open(target, "w", newline="", encoding="utf-8") as out:
            out.write(buf.getvalue())
    except OSError as exc:
        raise UserError(f"cannot write CSV to {target} ({exc.strerror or exc}); expected a path to a file "
                        "that can be written") from None
    return EXIT_OK


def cmd_report(args) -> int:
    """PNG figures + report.md per run (dbp_core/report.py, docs/reports.md)."""
    from .runs import RunNotFound
    store = _store(args)
    paths = []
    sweeps = [s for s in (_find_sweep(args, ref) for ref in args.runs) if s is not None]
    if sweeps:
        if len(sweeps) != len(args.runs):
            raise UserError("dbp report takes runs or sweeps, not both")
        from .report import write_sweep_report
        problems = []
        for sweep in sweeps:
            rep = write_sweep_report(sweep.path, out=args.out if len(sweeps) == 1 else None)
            if rep["report"] is None:  # the manifest is damaged: nothing to report
                problems += [f"sweep {sweep.id} cannot be reported: {p}" for p in rep["problems"]]
                continue
            print(f"{rep['report']}  ({len(rep['figures'])} figures)")
            problems += rep["problems"]
        for p in problems:  # the report shows what could be read; a damaged file is named and the exit is 2
            print(f"dbp: error: {p}", file=sys.stderr)
        return EXIT_BAD_INPUT if problems else EXIT_OK
    for ref in args.runs:
        try:
            paths.append(store.open(ref).path)
        except RunNotFound as exc:
            if Path(ref).is_dir() and ((Path(ref) / "metrics.jsonl").exists() or (Path(ref) / "results.json").exists()):
                paths.append(Path(ref))  # a copied run folder without status.json
            else:
                raise UserError(str(exc)) from None
    from .report import write_reports
    written = write_reports(paths, out=args.out)
    for rep in written["runs"]:
        print(f"{rep['report']}  ({len(rep['figures'])} figures)")
    if written["comparison"]:
        print(f"{written['comparison']['report']}  (comparison of {len(paths)} runs)")
    problems = [p for rep in written["runs"] for p in rep["problems"]]
    for p in problems:  # the report shows what could be read; a damaged file is named and the exit is 2
        print(f"dbp: error: {p}", file=sys.stderr)
    return EXIT_BAD_INPUT if problems else EXIT_OK


def cmd_backend(args) -> int:
    from . import ops
    print(ops.backend())
    return EXIT_OK


def cmd_train(args) -> int:
    from . import train
    if args.dataset != "digits":
        raise UserError(f"only the embedded 'digits' default can be trained here, got '{args.dataset}'")
    out = Path(args.out)
    command = (f"dbp train --out {args.out} --seed {args.seed} --ddpm-steps {args.ddpm_steps} "
               f"--classifier-epochs {args.classifier_epochs} --threads {args.threads}")
    train.train_default(out, seed=args.seed, ddpm_steps=args.ddpm_steps, classifier_epochs=args.classifier_epochs,
                        threads=args.threads, command=command)
    print(f"use them with: models.classifier = \"{out / 'digits_classifier'}\", "
          f"models.diffusion = \"{out / 'digits_ddpm'}\" (--set models.classifier=...)")
    return EXIT_OK


# --------------------------------------------------------------------------- parser

def cmd_console(args) -> int:
    """The console is its own program (``python -m console``): the core never imports the UI."""
    argv = [sys.executable, "-m", "console", "--experiments", args.experiments,
            "--max-parallel", str(args.max_parallel)]
    if getattr(args, "runs_dir", None):
        argv += ["--runs-dir", str(args.runs_dir)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
    return EXIT_OK  # pragma: no cover — execv does not return


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    from .config import MAX_GRID_POINTS
    runs_dir = argparse.ArgumentParser(add_help=False)
    runs_dir.add_argument("--runs-dir", metavar="DIR", default=argparse.SUPPRESS,
                          help="run store root (default: $DBP_RUNS_DIR, the config's output.runs_dir, ./runs)")
    parser = argparse.ArgumentParser(prog="dbp", description="dbp-lab: attack, measure and harden "
                                     "diffusion-based purification.", parents=[runs_dir],
                                     epilog="exit codes: 0 ok, 1 run failed, 2 bad input, 130 interrupted")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, fn, help_):
        p = sub.add_parser(name, help=help_, description=help_, parents=[runs_dir])
        p.set_defaults(fn=fn)
        return p

    def add_set(p):
        p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                       help="override a config field, e.g. --set attacks.0.eps=0.1 (repeatable; value parsed as TOML)")

    p = add("run", cmd_run, "Run an experiment; prints the run folder when it ends")
    p.add_argument("file", help="experiment TOML")
    add_set(p)
    p.add_argument("--no-progress", action="store_true", help="plain progress lines even on a terminal")
    p = add("sweep", cmd_sweep, "Run an experiment once per point of a grid of values (a sweep group)")
    p.add_argument("file", help="experiment TOML")
    p.add_argument("--grid", metavar="KEY=V1,V2,...", action="append", default=[],
                   help="a field and its values, e.g. --grid attacks.0.eps=0.05,0.1,0.2 (repeatable: the "
                   "product of the grids; values as TOML, tables too: 'models.diffusion_config={num_channels=64},"
                   "{num_channels=128}')")
    p.add_argument("--max-points", metavar="N", type=_positive_int, default=MAX_GRID_POINTS,
                   help=f"the most points (runs) the grid may have (default: {MAX_GRID_POINTS})")
    add_set(p)
    p.add_argument("--no-progress", action="store_true", help="plain progress lines even on a terminal")
    p = add("resume", cmd_resume, "Continue an interrupted or failed run (or the unfinished points of a sweep) "
            "from its last checkpoint")
    p.add_argument("run", help="run id, unique prefix or folder; or a sweep id")
    p.add_argument("--no-progress", action="store_true", help="plain progress lines even on a terminal")
    p.add_argument("--allow-changed-code", action="store_true", help="resume even though a plugin's file changed "
                   "since the run started (the change is recorded in log.txt and plugins.json)")
    p = add("check", cmd_check, "Validate an experiment TOML without running it")
    p.add_argument("file", help="experiment TOML")
    add_set(p)
    p = add("runs", cmd_runs, "List runs: id, experiment, state, progress, headline result")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add("show", cmd_show, "Show a run's status and results, or a sweep's points")
    p.add_argument("run", help="run id, unique prefix or folder; or a sweep id (or unique prefix)")
    p = add("export", cmd_export, "Export a run's accuracy table (a sweep: every point's, with the swept values)")
    p.add_argument("run", help="run id, unique prefix or folder; or a sweep id (or unique prefix)")
    p.add_argument("--csv", nargs="?", const="-", default="-", metavar="FILE",
                   help="write CSV to FILE (default: standard output)")
    p = add("report", cmd_report, "Write PNG figures and report.md into each run's report/ folder")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run id, unique prefix or folder (several: also a "
                   "comparison); or a sweep id (its accuracy-vs-value curve)")
    p.add_argument("--out", metavar="DIR", help="where the comparison of several runs goes (default: the first "
                   "run's report/comparison/); with one run or sweep, where its report goes")
    add("backend", cmd_backend, "Print which implementation of the dbp ops is live")
    p = add("train", cmd_train, "Train the embedded default models (classifier and DDPM)")
    p.add_argument("--dataset", default="digits", help="dataset (default: digits)")
    p.add_argument("--out", metavar="DIR", default="digits-weights",
                   help="where to write the weights (default: ./digits-weights; the shipped ones were made with "
                   "the defaults below)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    p.add_argument("--ddpm-steps", type=int, default=2000, help="DDPM training steps (default: 2000)")
    p.add_argument("--classifier-epochs", type=int, default=20, help="classifier epochs (default: 20)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads (default: 1; results are bit-identical only at the same count)")
    p = add("console", cmd_console, "Open the Textual console: edit, launch and watch experiments")
    p.add_argument("--experiments", metavar="DIR", default="experiments", help="experiment TOMLs (default: ./experiments)")
    p.add_argument("--max-parallel", type=int, default=1, help="runs executing at once (default: 1)")
    return parser


def _printable_streams() -> None:
    """A path or value that is not valid UTF-8 (a non-UTF-8 byte in an argument becomes a lone
    surrogate) is printed with backslash escapes instead of ending the command."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):  # not a text stream (a test's capture)
            pass


def main(argv: list[str] | None = None) -> int:
    try:
        _printable_streams()
        with deferred():  # pydantic builds the schema's validators in Rust: not interruptible
            from .config import ConfigError
        from .runs import RunFileError, RunLocked, RunStoreError
        parser = build_parser()
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or bad usage (2, its message printed); returned, not raised
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    except KeyboardInterrupt:  # Ctrl-C while starting
        print("dbp: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        return args.fn(args)
    except ConfigError as exc:
        print(f"dbp: invalid config: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (UserError, RunLocked, RunFileError, RunStoreError) as exc:  # bad input, run already running,
        # damaged run file, unusable store
        print(f"dbp: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # `dbp runs | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # a path given on the command line that cannot be used: no traceback
        print(f"dbp: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("dbp: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
