"""One run folder, and what a process running a run writes through
(docs/design.md, "The run folder"; the whole folder: the docstring of :mod:`dbp_core.store`).

A :class:`Run` is the folder ``<root>/<run-id>/``: writer methods are used by the run's own
process, readers by anyone. It puts together the modules of its files — :mod:`.status`,
:mod:`.metrics`, :mod:`.log`, :mod:`.integrity`, :mod:`.reserve`, :mod:`.lock` — and writes
itself the files no other module owns:
  ``results.json``   the final table — replaced atomically, only when the run is done
                     (:meth:`Run.write_results`; the runner writes it with the state ``done``)
  ``checkpoints/``   stage checkpoints — replaced atomically, their checksum recorded in
                     ``checksums.json`` before the file replaces the old one (:meth:`Run.save_checkpoint`)
  ``analysis/``, ``models/``, ``report/``  files stages and reports write, never through a link
                     (:meth:`Run.artifact_path`, :meth:`Run.write_json`)

A process that runs a run writes through a :class:`RunWriter`: a :class:`Run`, or under torchrun
on ranks > 0 a :class:`FollowerRun`, which writes nothing (rank 0 owns the store).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import log as run_log
from .files import (RunFileError, atomic_write, atomic_write_json, json_default, naming, open_nofollow, parse_json,
                    read_bytes_nofollow, read_json_object)
from .integrity import Checksums, PluginRecord, file_digest, file_problems
from .lock import FolderLock, is_stale, proc_start, tmp_writer_alive
from .metrics import MetricsReader, metric_event, metric_line
from .reserve import release_space, reserve_space
from .status import RunStatus


@dataclass
class Run:
    """One run folder. Writer methods are used by the run's own process; readers by anyone."""

    path: Path

    def __post_init__(self):
        self.path = Path(self.path)
        self._metrics_fh = None
        self._lock = FolderLock(self.lock_path, f"run {self.id} is already running", self._status_pid)
        self._checksums = Checksums(self.path)
        self._plugins = PluginRecord(self.path, self._checksums)
        self._status: RunStatus | None = None
        self.claimed_from: RunStatus | None = None  # the status mark_running replaced (first call only)

    # paths
    @property
    def id(self) -> str:
        return self.path.name

    config_path = property(lambda self: self.path / "config.toml")
    status_path = property(lambda self: self.path / "status.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    results_path = property(lambda self: self.path / "results.json")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    log_path = property(lambda self: self.path / "log.txt")
    lock_path = property(lambda self: self.path / ".lock")
    checksums_path = property(lambda self: self.path / "checksums.json")
    plugins_path = property(lambda self: self.path / "plugins.json")
    reserve_path = property(lambda self: self.path / ".reserve")

    # ---- integrity: plain files, checksums, the plugins' code (dbp_core.store.integrity)
    def file_problems(self) -> list[str]:
        """What is not as dbp makes it: a run file that is a link or not a regular file, a run
        subfolder that is a link. Each problem names the path."""
        return file_problems(self.path)

    def record_checksum(self, relative: str, digest: str) -> None:
        """Record ``digest`` as the checksum of ``<run>/<relative>`` (the previous one kept)."""
        self._checksums.record(relative, digest)

    def record_artifact(self, relative: str | os.PathLike) -> str:
        """Record the checksum of a file or folder a stage wrote (a saved model), verified on resume."""
        return self._checksums.record_file(relative)

    def verify_file(self, relative: str) -> None:
        """:class:`RunFileError` if ``<run>/<relative>`` is not what dbp wrote, or has no checksum."""
        self._checksums.verify(relative)

    def verify_integrity(self) -> None:
        """What ``dbp resume`` checks before it continues a run (``Checksums.verify_run``):
        :class:`RunFileError` names the first file that is not what dbp wrote."""
        self._checksums.verify_run()

    def record_plugins(self, sources: dict[str, dict]) -> None:
        """Write ``plugins.json`` (docs/plugins.md, "Reproducibility"), with its checksum."""
        self._plugins.record(sources)

    def recorded_plugins(self) -> dict | None:
        """``plugins.json`` (None for a run without plugins, or made before dbp recorded them)."""
        return self._plugins.read()

    def plugin_changes(self) -> list[dict]:
        """The plugins whose file is not the one the run recorded (``PluginRecord.changes``)."""
        return self._plugins.changes()

    def accept_plugin_changes(self, changes: list[dict]) -> None:
        """Record the current code of changed plugins as the run's (``--allow-changed-code``)."""
        self._plugins.accept(changes)

    # ---- space kept for the last words of a run on a full disk (dbp_core.store.reserve)
    def reserve_space(self) -> None:
        reserve_space(self.reserve_path)

    def release_space(self) -> None:
        release_space(self.reserve_path)

    # ---- the run's lock: one process runs a run at a time (dbp_core.store.lock)
    @property
    def locked(self) -> bool:
        """Does this object hold the run's lock?"""
        return self._lock.held

    def lock(self) -> bool:
        """Take the run's exclusive lock for as long as this process runs the run. Returns True if
        taken now, False if this object already held it; raises :class:`RunLocked` if another
        process (or another Run object) holds it."""
        return self._lock.take()

    def unlock(self) -> None:
        """Release the lock (the .lock file stays: removing it would race with a new locker)."""
        self._lock.release()

    def _status_pid(self) -> int | None:
        """The pid status.json names (the lock holder when .lock does not say)."""
        try:
            return (self.read_status(check_alive=False) or RunStatus(state="queued")).pid
        except RunFileError:
            return None

    # ---- writer side
    def write_status(self, **changes: Any) -> RunStatus:
        """Apply ``changes`` to the status and replace ``status.json`` atomically; always stamps
        ``updated``. The first write of a run must give ``state``."""
        current = self._status if self._status is not None else self.read_status(check_alive=False)
        if current is None:
            if "state" not in changes:
                raise ValueError(f"the first status of run {self.id} must give a state")
            current = RunStatus(state=changes["state"])
        status = current.updated_with(**changes, updated=time.time())
        atomic_write_json(self.status_path, status.to_dict())
        self._status = status
        return status

    def mark_running(self) -> RunStatus:
        """Claim the run for this process (pid, host, process start time); remove temp files
        a killed writer left (the real files are intact: they are only ever replaced). Temp files
        of a live process — another writer, or this one — are left alone. The status replaced
        by the first call is kept in ``claimed_from``."""
        for folder in (self.path, self.checkpoints_dir):
            for tmp in folder.glob(".*.tmp-*"):
                if not tmp_writer_alive(tmp.name):
                    tmp.unlink(missing_ok=True)
        if self.claimed_from is None:
            try:
                self.claimed_from = self.read_status(check_alive=False) or RunStatus(state="queued")
            except RunFileError:
                self.claimed_from = RunStatus(state="queued")
            self._status = self.claimed_from
        return self.write_status(state="running", pid=os.getpid(), host=socket.gethostname(),
                                 proc_start=proc_start(os.getpid()), started=time.time(), message="", eta=None)

    def append_metric(self, kind: str, step: int | None = None, **values: Any) -> dict:
        """Append one event line ``{"time", "kind", "step", **values}`` and flush it."""
        event = metric_event(kind, step, values)
        line = metric_line(event)
        try:
            if self._metrics_fh is None:
                fd = open_nofollow(self.metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                self._metrics_fh = os.fdopen(fd, "a", encoding="utf-8")
            self._metrics_fh.write(line)  # one write per line: a reader sees whole lines or a tail it waits on
            self._metrics_fh.flush()
        except OSError as exc:
            raise naming(exc, self.metrics_path) from None
        return event

    def write_results(self, results: dict) -> None:
        atomic_write_json(self.results_path, results)

    def log(self, message: str) -> None:
        run_log.append_log(self.log_path, message)

    def crash_log(self):
        """``log.txt`` opened for appending, for :mod:`faulthandler` (``log.open_crash_log``)."""
        return run_log.open_crash_log(self.log_path)

    def save_checkpoint(self, name: str, obj: Any) -> Path:
        """Save ``obj`` as ``checkpoints/<name>`` atomically: ``.json`` names are JSON, others
        torch.save; its checksum goes to ``checksums.json`` before the file replaces the old one."""
        self.checkpoints_dir.mkdir(exist_ok=True)
        target = self.checkpoints_dir / name

        def record(tmp: Path) -> None:
            self.record_checksum(f"checkpoints/{name}", file_digest(tmp))
        if name.endswith(".json"):
            atomic_write(target, json.dumps(obj, indent=2, default=json_default) + "\n", before_replace=record)
        else:
            import torch
            atomic_write(target, lambda fh: torch.save(obj, fh), before_replace=record)
        return target

    def load_checkpoint(self, name: str) -> Any | None:
        """``checkpoints/<name>`` or None if absent; :class:`RunFileError` naming the file if it does
        not match its recorded checksum or cannot be read back."""
        target = self.checkpoints_dir / name
        if not os.path.lexists(target):
            return None
        if self.checksums_path.exists() or self._checksums.loaded:
            self.verify_file(f"checkpoints/{name}")
        if name.endswith(".json"):
            return parse_json(read_bytes_nofollow(target) or b"", target, "a JSON checkpoint written by dbp")
        import torch
        try:
            fd = open_nofollow(target, os.O_RDONLY)
            with os.fdopen(fd, "rb") as fh:
                return torch.load(fh, map_location="cpu", weights_only=True)
        except RunFileError:
            raise
        except Exception as exc:  # noqa: BLE001 — truncated, not a torch file, pickled code: name the file
            raise RunFileError(target, f"cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                               "expected a checkpoint dbp wrote with torch.save") from None

    def artifact_path(self, relative: str | os.PathLike) -> Path:
        """``<run>/<relative>`` for a file or folder a stage or report writes; its parents are made.
        Refuses a path that leaves the run folder or passes through a symbolic link."""
        target = self.path / relative
        if ".." in Path(relative).parts or Path(relative).is_absolute():
            raise ValueError(f"{relative}: expected a path inside the run folder")
        here = self.path
        for part in Path(relative).parts:
            here = here / part
            if here.is_symlink():
                raise RunFileError(here, "is a symbolic link; dbp does not follow links inside a run folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_json(self, relative: str | os.PathLike, obj: Any) -> Path:
        """Write ``obj`` as JSON to ``<run>/<relative>`` atomically."""
        target = self.artifact_path(relative)
        atomic_write_json(target, obj)
        return target

    def close(self) -> None:
        """Close the metrics file (the lock, if held, is released by :meth:`unlock`)."""
        if self._metrics_fh is not None:
            self._metrics_fh.close()
            self._metrics_fh = None

    # ---- reader side
    def read_status(self, *, check_alive: bool = True, persist: bool = False) -> RunStatus | None:
        """The status, or None if there is none yet; :class:`RunFileError` (naming the file and
        field) if ``status.json`` is damaged. With ``check_alive``, a 'running' run whose process
        is gone (dead pid, reused pid, zombie; or on another host, no update for STALE_REMOTE_S)
        is reported 'interrupted' — and written so with ``persist``."""
        data = read_json_object(self.status_path)
        if data is None:
            return None
        status = RunStatus.from_dict(data, self.status_path)
        if not check_alive or status.state != "running" or not is_stale(status):
            return status
        crash = self.crash_report()
        if crash:  # it died of a fatal signal (os.abort(), a crash in native code): it failed
            status = status.updated_with(state="failed", message=f"process {status.pid} on {status.host} died: "
                                         f"{crash} (its traceback is in log.txt)")
        else:  # killed (SIGKILL, power loss, os._exit()): resumable from its checkpoints
            status = status.updated_with(state="interrupted",
                                         message=f"process {status.pid} on {status.host} is gone")
        if persist:
            self._status = status
            status = self.write_status()
        return status

    def crash_report(self) -> str | None:
        """The fatal error :mod:`faulthandler` wrote into ``log.txt`` since the run last started
        ('Fatal Python error: Aborted'), if any (``log.crash_report``)."""
        try:
            return run_log.crash_report(self.read_log_tail(400))
        except (OSError, RunFileError):
            return None

    def read_results(self) -> dict | None:
        """results.json, or None before the run is done; RunFileError if the file is damaged."""
        return read_json_object(self.results_path)

    def read_config(self):
        from ..config import load_config
        return load_config(self.config_path)

    def metrics(self, offset: int = 0) -> MetricsReader:
        return MetricsReader(self.metrics_path, offset)

    def read_log_tail(self, lines: int = 20) -> list[str]:
        return run_log.read_log_tail(self.log_path, lines)


class RunWriter(Protocol):
    """What a process running a run writes through (:class:`Run` or :class:`FollowerRun`)."""
    id: str
    path: Path
    claimed_from: RunStatus | None

    def lock(self) -> bool: ...
    def unlock(self) -> None: ...
    def read_status(self, *, check_alive: bool = True, persist: bool = False) -> RunStatus | None: ...
    def mark_running(self) -> RunStatus | None: ...
    def write_status(self, **changes: Any) -> RunStatus | None: ...
    def append_metric(self, kind: str, step: int | None = None, **values: Any) -> dict: ...
    def write_results(self, results: dict) -> None: ...
    def log(self, message: str) -> None: ...
    def save_checkpoint(self, name: str, obj: Any) -> Path | None: ...
    def load_checkpoint(self, name: str) -> Any | None: ...
    def artifact_path(self, relative: str | os.PathLike) -> Path: ...
    def write_json(self, relative: str | os.PathLike, obj: Any) -> Path | None: ...
    def record_artifact(self, relative: str | os.PathLike) -> str | None: ...
    def reserve_space(self) -> None: ...
    def release_space(self) -> None: ...
    def close(self) -> None: ...


class FollowerRun:
    """What ranks > 0 of a torchrun job run through instead of a :class:`Run`: the same id, every
    write a no-op (rank 0 alone writes the store), no checkpoints (rank 0 broadcasts them). Files
    a stage writes go to a private scratch folder (``path``), removed by :meth:`close`."""

    claimed_from: RunStatus | None = None

    def __init__(self, run_id: str, main_path: str | os.PathLike | None = None, rank: int = 1):
        import tempfile
        self.id = run_id
        self.main_path = main_path
        self.path = Path(tempfile.mkdtemp(prefix=f"dbp-rank{rank}-"))

    def lock(self) -> bool:
        return False  # rank 0 holds the run's lock

    def unlock(self) -> None:
        pass

    def read_status(self, **_: Any) -> RunStatus | None:
        return None

    def mark_running(self) -> RunStatus | None:
        return None

    def write_status(self, **changes: Any) -> RunStatus | None:
        return None

    def append_metric(self, kind: str, step: int | None = None, **values: Any) -> dict:
        return {"kind": kind, "step": step, **values}

    def write_results(self, results: dict) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def save_checkpoint(self, name: str, obj: Any) -> None:
        return None

    def load_checkpoint(self, name: str) -> Any | None:
        return None

    def artifact_path(self, relative: str | os.PathLike) -> Path:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_json(self, relative: str | os.PathLike, obj: Any) -> None:
        return None

    def read_results(self) -> dict | None:
        return None

    def reserve_space(self) -> None:
        pass

    def release_space(self) -> None:
        pass

    def record_artifact(self, relative: str | os.PathLike) -> None:
        return None

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

