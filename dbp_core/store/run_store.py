"""The run store: a folder of run folders and sweep folders (docs/design.md, "The run folder").

``<root>/<run-id>/`` — a run (:class:`~dbp_core.store.run.Run`), made by :meth:`RunStore.create`:
  exclusively (``os.mkdir`` of a fresh id, :mod:`.ids`), all of it or no folder — the frozen
  ``config.toml`` and its checksum, ``plugins.json``, ``.reserve``, the status 'queued' and the
  first log line.
``<root>/sweep-<...>/`` — a sweep (:mod:`.sweeps`), made by :meth:`RunStore.create_sweep`.
``<root>/.trash/<run-id>/`` — runs moved away by :meth:`RunStore.trash` (never a running run).

The root is ``--runs-dir`` > ``$DBP_RUNS_DIR`` > the config's ``output.runs_dir`` > ``./runs``
(:func:`default_runs_dir`).
"""
from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable

from .files import RunFileError, atomic_write, atomic_write_json
from .ids import SWEEP_PREFIX, new_run_id, new_sweep_id
from .integrity import file_digest
from .lock import RunLocked
from .run import Run
from .sweeps import SWEEP_FILE, Sweep

TRASH = ".trash"


class RunNotFound(LookupError):
    """No run matches the given id/prefix/path (or several do)."""



class RunStoreError(OSError):
    """The run store root cannot be used (it is a file, cannot be created, ...)."""


def default_runs_dir(explicit: str | os.PathLike | None = None, config_value: str | None = None) -> Path:
    """Run store root: explicit (--runs-dir) > $DBP_RUNS_DIR > the config's output.runs_dir > ./runs."""
    for candidate in (explicit, os.environ.get("DBP_RUNS_DIR") or None, config_value):
        if candidate:
            return Path(candidate).expanduser()
    return Path("runs")


class RunStore:
    """A folder of runs. ``create`` makes a new run folder with a unique id."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def new_id(self, experiment: str) -> str:
        return new_run_id(experiment)

    def _mkdir_unique(self, make_id: Callable[[], str], what: str = "run folder") -> Path:
        """Create ``<root>/<make_id()>`` exclusively (os.mkdir; retried on the rare id clash)."""
        self.ensure_root()
        for _ in range(100):
            path = self.root / make_id()
            try:
                os.mkdir(path)
                return path
            except FileExistsError:
                continue
            except OSError as exc:
                raise RunStoreError(f"cannot create a {what} in {self.root} ({exc.strerror}); "
                                    "expected a writable folder") from None
        raise RunStoreError(f"could not create a unique {what} under {self.root} (100 id clashes)")

    def create(self, cfg=None, *, experiment: str | None = None, lock: bool = False, source: str | None = None,
               group: str | None = None) -> Run:
        """Create ``<root>/<id>/`` exclusively, freeze ``cfg`` into ``config.toml`` (absolute
        paths), and write status 'queued' with the experiment file it came from (``source``) and
        the sweep it belongs to (``group``). With ``lock`` the returned run already holds its lock
        (:meth:`Run.lock`)."""
        experiment = experiment or (cfg.name if cfg is not None else "run")
        frozen = None
        if cfg is not None:  # rendered before the folder exists: a config that cannot be written leaves none
            from ..config import dumps_config
            try:
                frozen = dumps_config(cfg, absolute_paths=True).encode("utf-8")
            except UnicodeEncodeError as exc:  # e.g. a model path under a folder whose name is not UTF-8
                bad = exc.object[max(0, exc.start - 30):exc.end + 10]
                raise RunStoreError(f"cannot freeze the config into config.toml: {ascii(bad)} is not valid UTF-8; "
                                    "expected paths and values in UTF-8") from None
        path = self._mkdir_unique(lambda: self.new_id(experiment))
        run = Run(path)
        try:  # all of it or no folder: a full disk or a signal leaves no half-made run behind
            if lock:
                run.lock()  # nobody else can run it before this process does (it was just created)
            (path / "checkpoints").mkdir()
            if frozen is not None:
                atomic_write(run.config_path, frozen, before_replace=lambda tmp: run.record_checksum(
                    "config.toml", file_digest(tmp)))
                if cfg.plugin_paths():  # the user code the run executes, to tell when it changed
                    from ..plugins import plugin_source
                    run.record_plugins({k: plugin_source(v) for k, v in cfg.plugin_paths().items()})
            else:
                atomic_write_json(run.checksums_path, {})
            run.reserve_space()
            run.write_status(state="queued", experiment=experiment, pid=None, host=socket.gethostname(),
                             created=time.time(), started=None, progress={"done": 0, "total": None},
                             eta=None, message="", source=source, group=group)
            run.log(f"created run {run.id}" + (f" from {source}" if source else ""))
        except BaseException as exc:
            run.unlock()
            shutil.rmtree(path, ignore_errors=True)
            if isinstance(exc, (OSError, RunFileError)):
                raise RunStoreError(f"cannot create run {run.id} in {self.root}: {exc}") from None
            raise
        return run

    def ensure_root(self) -> None:
        """Create the root folder if needed; RunStoreError (naming it) if it cannot be a folder."""
        if self.root.exists() and not self.root.is_dir():
            raise RunStoreError(f"run store {self.root} is not a folder; expected a folder (or a path "
                                "that does not exist yet) for --runs-dir / $DBP_RUNS_DIR / output.runs_dir")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunStoreError(f"cannot create the run store folder {self.root} ({exc.strerror}); "
                                "expected a folder that can be created") from None

    def list(self) -> list[Run]:
        """Runs, oldest first (ids start with a timestamp)."""
        if not self.root.is_dir():
            return []
        return [Run(p) for p in sorted(self.root.iterdir(), key=lambda p: p.name)
                if p.is_dir() and (p / "status.json").exists()]

    def open(self, ref: str | os.PathLike) -> Run:
        """A run by folder path, full id, or unique id prefix/substring; RunNotFound otherwise."""
        ref_s = str(ref)
        direct = Path(ref_s)
        if direct.is_dir() and (direct / "status.json").exists():
            return Run(direct)
        candidate = self.root / ref_s
        if candidate.is_dir() and (candidate / "status.json").exists():
            return Run(candidate)
        matches = [r for r in self.list() if r.id.startswith(ref_s)] or \
                  [r for r in self.list() if ref_s in r.id]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RunNotFound(f"no run '{ref_s}' in {self.root}")
        raise RunNotFound(f"'{ref_s}' matches {len(matches)} runs in {self.root}: "
                          + ", ".join(r.id for r in matches[:5]))

    # ---- deleting: runs are moved to <root>/.trash/, never removed
    def trash(self, ref: str | os.PathLike) -> Path:
        """Move the run ``ref`` to ``<root>/.trash/<id>`` and return its new path. A running run
        (its lock is held, or its live process says 'running') is refused with :class:`RunLocked`."""
        run = self.open(ref)
        try:
            run.lock()
        except RunLocked as exc:
            raise RunLocked(f"run {run.id} is running (pid {exc.pid if exc.pid is not None else '?'}); "
                            "cancel it before deleting it", exc.pid) from None
        try:
            try:
                status = run.read_status()
            except RunFileError:
                status = None  # a damaged run can be deleted
            if status is not None and status.state == "running":
                raise RunLocked(f"run {run.id} is running (pid {status.pid} on {status.host}); cancel it "
                                "before deleting it", status.pid)
            bin_ = self.root / TRASH
            bin_.mkdir(exist_ok=True)
            target = bin_ / run.id
            n = 1
            while target.exists():
                n += 1
                target = bin_ / f"{run.id}.{n}"
            os.rename(run.path, target)
            return target
        finally:
            run.unlock()

    # ---- sweeps: groups of runs over a grid of values
    def new_sweep_id(self, experiment: str) -> str:
        return new_sweep_id(experiment)

    def create_sweep(self, experiment: str, config_text: str, grid: list[tuple[str, list]], *,
                     source: str | None = None, overrides: list[str] = (), base_dir: str | None = None) -> Sweep:
        """Create ``<root>/sweep-<...>/`` with the frozen base config and its manifest
        (:meth:`Sweep.create`)."""
        path = self._mkdir_unique(lambda: self.new_sweep_id(experiment), "sweep folder")
        return Sweep.create(path, experiment, config_text, grid, source=source, overrides=overrides, base_dir=base_dir)

    def list_sweeps(self) -> list[Sweep]:
        """Sweeps of the store, oldest first."""
        if not self.root.is_dir():
            return []
        return [Sweep(p) for p in sorted(self.root.iterdir(), key=lambda p: p.name)
                if p.is_dir() and p.name.startswith(SWEEP_PREFIX) and (p / SWEEP_FILE).exists()]

    def find_sweep(self, ref: str | os.PathLike) -> Sweep | None:
        """The sweep ``ref`` names (folder path, id, or unique prefix of an id), else None."""
        direct = Path(ref)
        if direct.is_dir() and (direct / SWEEP_FILE).exists():
            return Sweep(direct)
        ref_s = str(ref)
        sweeps = self.list_sweeps()
        matches = [s for s in sweeps if s.id == ref_s] or [s for s in sweeps if s.id.startswith(ref_s)]
        if len(matches) > 1:
            raise RunNotFound(f"'{ref_s}' matches {len(matches)} sweeps in {self.root}: "
                              + ", ".join(s.id for s in matches[:5]))
        return matches[0] if matches else None

