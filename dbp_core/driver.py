"""What ``dbp run`` and ``dbp resume`` do around :func:`runner.run_study`
(docs/design.md, "The driver and the sweep driver").

* :func:`create_run` — a new run of a checked config, its lock held from its creation: no
  ``dbp resume`` can start it before this process does;
* :func:`claim_for_resume` — an existing run taken for ``dbp resume``: locked (a second resume,
  or the run's own process, holds it: refused), its files verified (``Run.verify_integrity``),
  marked running at once, its frozen config checked again, its plugins' code compared with what
  the run started with (:func:`changed_code`); any refusal puts the status back as it was;
* :func:`execute` — run it to its end; a signal before the runner takes the signals over leaves
  the run interrupted (:func:`leave_interrupted`), never 'queued' or 'running'.

The sweep driver (:mod:`dbp_core.sweep_driver`) claims and executes its points through these.
Nothing here prints: the CLI (``dbp_core/cli.py``) parses the arguments, prints, and maps the
outcome to an exit code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .interrupts import deferred
from .store import Run, RunFileError, RunLocked, RunStore, RunStoreError

if TYPE_CHECKING:
    from .config import ExperimentConfig


class UserError(Exception):
    """Bad input: the CLI prints it as 'dbp: error: ...' with exit code 2."""


@dataclass
class Claim:
    """A run claimed for ``dbp resume``: locked and marked running, with its checked frozen config
    (``cfg``) — or, ``cfg`` None, a run that is already done (not locked). ``state`` is the state
    it was resumed from; ``changed_code`` the plugin changes accepted (``--allow-changed-code``),
    in words."""
    run: Run
    cfg: ExperimentConfig | None
    state: str | None
    changed_code: str | None = None

    @property
    def done(self) -> bool:
        return self.cfg is None


def create_run(store: RunStore, cfg: ExperimentConfig, source: str, group: str | None = None) -> Run:
    """A new run of ``cfg`` (started from the experiment file ``source``) in ``store``, locked."""
    try:
        return store.create(cfg, lock=True, source=source, group=group)
    except RunStoreError as exc:
        raise UserError(str(exc)) from None


def claim_for_resume(run: Run, allow_changed_code: bool = False) -> Claim:
    """Take ``run`` for ``dbp resume`` (see the module docstring); :class:`UserError` when it
    cannot be resumed, saying why."""
    _lock_for_resume(run)
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
            return Claim(run, None, state)
        if state == "running":  # alive, yet it did not hold the lock: a dbp without run locks
            raise UserError(f"run {run.id} is already running (pid {status.pid} on {status.host})")
        try:
            run.reserve_space()
        except OSError as exc:
            raise UserError(f"run {run.id} cannot be resumed: no room for its files ({exc}); free some space") from None
        run.mark_running()
        cfg, changed = _frozen_config(run, allow_changed_code)
    except BaseException:
        run.release_space()
        run.unlock()
        raise
    return Claim(run, cfg, state, changed)


def _lock_for_resume(run: Run) -> None:
    """The run's lock, or UserError: another process holds it, or a run file is not a plain file
    (a link in place of .lock or log.txt is refused before either is opened)."""
    problems = run.file_problems()
    if problems:
        raise UserError(f"run {run.id} cannot be resumed: {problems[0]}")
    try:
        run.lock()
    except RunLocked as exc:
        raise UserError(str(exc)) from None
    except RunFileError as exc:
        raise UserError(f"run {run.id} cannot be resumed: {exc}") from None


def _frozen_config(run: Run, allow_changed_code: bool) -> tuple[ExperimentConfig, str | None]:
    """The claimed run's frozen config, checked as ``dbp run`` checks a config, and the plugin
    changes accepted; on any refusal the status the claim replaced is put back."""
    try:
        from .preflight import preflight
        with deferred():
            frozen = run.read_config()
        cfg = preflight(frozen, str(run.config_path))
        return cfg, changed_code(run, allow_changed_code)
    except BaseException:
        if run.claimed_from is not None:  # put the status back as it was
            run.write_status(**{k: v for k, v in run.claimed_from.to_dict().items() if k != "updated"})
        raise


def changed_code(run: Run, allow: bool) -> str | None:
    """Refuse (UserError) to resume a run whose plugin code is not what it started with — its result
    would mix two versions of the code — unless ``allow`` (``--allow-changed-code``): then the change
    is logged, recorded in plugins.json and returned, in words. None when nothing changed."""
    changes = run.plugin_changes()
    if not changes:
        return None
    what = "; ".join(f"{c['field']} = '{c['import']}' in {c['now_file'] or c['file']} (sha256 "
                     f"{(c['recorded'] or 'none')[:12]} when the run started, {(c['now'] or 'unreadable')[:12]} now)"
                     for c in changes)
    if not allow:
        raise UserError(f"run {run.id} cannot be resumed: its plugin code changed since it started: {what}; "
                        "resuming would mix two versions of the code in one result. Restore the file, start a "
                        "new run, or resume with --allow-changed-code (recorded in the run's log)")
    run.accept_plugin_changes(changes)
    run.log(f"resumed with changed plugin code (--allow-changed-code): {what}")
    return what


def execute(run: Run, cfg: ExperimentConfig,
            on_progress: Callable[[str, int, int | None], None] | None = None) -> str:
    """Run the created or claimed ``run`` to its end (``runner.run_study``); its final state. The
    lock its creator or claimer took is released."""
    try:
        with deferred():  # importing the runner: an interrupt is delivered after, not lost in an import
            from .runner import run_study
        return run_study(run, cfg, on_progress=on_progress)
    except KeyboardInterrupt:  # before run_study took over the signals: the run is left as it was
        leave_interrupted(run)
        raise
    finally:
        run.unlock()  # run_study keeps a lock it did not take


def leave_interrupted(run: Run) -> None:
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
