"""The run store (DESIGN.md §4): one folder per run, plain files, crash-safe.

``<root>/<run-id>/``
  ``config.toml``    the resolved config, frozen at creation
  ``status.json``    state, pid, host, progress, ETA — replaced atomically
  ``metrics.jsonl``  append-only events ``{"time", "kind", "step", ...}``, one per line
  ``results.json``   the final table — replaced atomically, only when the run is done
  ``checkpoints/``   stage checkpoints — replaced atomically
  ``log.txt``        human-readable log, tracebacks of failures
  ``.lock``          flock'ed by the one process running the run (its pid inside); see Run.lock

Every file that is rewritten goes through :func:`atomic_write` (temp file in the
same folder, fsync, ``os.replace``), so a reader — or a run killed with SIGKILL —
only ever sees the old or the new version. The writer is a plain process; the
reader side (:meth:`Run.read_status`, :class:`MetricsReader`) tolerates dead
writers and half-written last lines; a status/results file damaged by something else
raises :class:`RunFileError` (a ValueError naming the file).
"""
from __future__ import annotations

import io
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["RunStore", "Run", "RunNotFound", "RunLocked", "RunFileError", "RunStoreError", "MetricsReader",
           "atomic_write", "STATES", "pid_alive", "default_runs_dir"]

STATES = ("queued", "running", "done", "failed", "interrupted")
FINAL_STATES = ("done", "failed", "interrupted")
STALE_REMOTE_S = 600.0  # a run on another host with no status update for this long is reported interrupted


class RunNotFound(LookupError):
    """No run matches the given id/prefix/path (or several do)."""


class RunLocked(RuntimeError):
    """Another process holds the run's lock (it is running or resuming the run); ``pid`` is its pid
    when known."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


class RunFileError(ValueError):
    """A run file (``status.json``, ``results.json``) exists but is not what the run store writes
    (empty, not JSON, not a JSON object, unreadable). A ValueError, as a JSONDecodeError was."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class RunStoreError(OSError):
    """The run store root cannot be used (it is a file, cannot be created, ...)."""


def default_runs_dir(explicit: str | os.PathLike | None = None, config_value: str | None = None) -> Path:
    """Run store root: explicit (--runs-dir) > $DBP_RUNS_DIR > the config's output.runs_dir > ./runs."""
    for candidate in (explicit, os.environ.get("DBP_RUNS_DIR") or None, config_value):
        if candidate:
            return Path(candidate).expanduser()
    return Path("runs")


# --------------------------------------------------------------------------- atomic files

def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover — not supported on this platform
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None] | bytes | str) -> None:
    """Replace ``path`` atomically: write a temp file next to it, fsync, ``os.replace``, fsync the folder.

    ``write`` is the content (bytes/str) or a function given the open binary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb") as fh:
            if callable(write):
                write(fh)
            else:
                fh.write(write.encode("utf-8") if isinstance(write, str) else write)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def _read_json_object(path: Path) -> dict | None:
    """A JSON object file written by the run store; None if absent, RunFileError if damaged."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFileError(path, f"cannot be read ({type(exc).__name__}: {exc}); expected a JSON object "
                           "written by dbp") from None
    if not text.strip():
        raise RunFileError(path, "is empty; expected a JSON object written by dbp")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise RunFileError(path, f"is not valid JSON ({exc}); expected a JSON object written by dbp") from None
    if not isinstance(obj, dict):
        raise RunFileError(path, f"holds a JSON {type(obj).__name__}; expected a JSON object written by dbp")
    return obj


# --------------------------------------------------------------------------- liveness

def _tmp_writer_alive(name: str) -> bool:
    """Is the process that made temp file ``.<name>.tmp-<pid>-<hex>`` (atomic_write) alive?"""
    try:
        pid = int(name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return False  # not one of ours: a leftover
    return pid_alive(pid)


def _proc_start(pid: int) -> str | None:
    """Start time of a process (Linux /proc), to tell a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _proc_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].startswith("Z")


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Is process ``pid`` (started at ``start``, if known) alive on this host?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _proc_zombie(pid):
        return False
    if start is not None:
        now = _proc_start(pid)
        if now is not None and now != start:
            return False
    return True


# --------------------------------------------------------------------------- metrics

class MetricsReader:
    """Incremental reader of ``metrics.jsonl``.

    Each :meth:`read` returns the events completed since the last call. A last line
    without its newline (the writer is mid-write, or died there) is left unread until
    it is completed; a complete line that is not valid JSON is skipped and counted in
    ``bad_lines``. Safe on a file that grows (or does not exist yet) while being read."""

    def __init__(self, path: str | os.PathLike, offset: int = 0):
        self.path = Path(path)
        self.offset = offset
        self.bad_lines = 0

    def read(self) -> list[dict]:
        events, self.offset, bad = read_metrics(self.path, self.offset)
        self.bad_lines += bad
        return events

    def __iter__(self) -> Iterator[dict]:
        return iter(self.read())


def read_metrics(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict], int, int]:
    """Events from byte ``offset`` → (events, new offset, number of malformed lines skipped)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return [], offset, 0
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset, 0
    events, bad = [], 0
    for line in chunk[:end].split(b"\n"):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(event, dict):
            events.append(event)
        else:
            bad += 1
    return events, offset + end + 1, bad


# --------------------------------------------------------------------------- a run

@dataclass
class Run:
    """One run folder. Writer methods are used by the run's own process; readers by anyone."""

    path: Path

    def __post_init__(self):
        self.path = Path(self.path)
        self._status: dict | None = None
        self._metrics_fh = None
        self._lock_fd: int | None = None
        self.claimed_from: dict | None = None  # the status mark_running replaced (first call only)

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

    # ---- the run's lock: one process runs a run at a time
    @property
    def locked(self) -> bool:
        """Does this object hold the run's lock?"""
        return self._lock_fd is not None

    def lock(self) -> bool:
        """Take the run's exclusive lock (``flock`` on ``<run>/.lock``, non-blocking) for as long as
        this process runs the run; the pid is written into the file for the error message of others.
        Returns True if taken now, False if this object already held it; raises :class:`RunLocked`
        if another process (or another Run object) holds it. The kernel drops the lock when the
        process dies, so a killed run never leaves a stale lock."""
        if self._lock_fd is not None:
            return False
        import fcntl
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self._lock_holder()
            raise RunLocked(f"run {self.id} is already running (pid {pid if pid is not None else '?'})",
                            pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        """Release the lock (the .lock file stays: removing it would race with a new locker)."""
        if self._lock_fd is None:
            return
        import fcntl
        fd, self._lock_fd = self._lock_fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _lock_holder(self) -> int | None:
        """The pid of the process holding the lock: from .lock, else from status.json."""
        for _ in range(20):  # the holder writes its pid right after taking the lock: wait for it briefly
            try:
                text = self.lock_path.read_text().strip()
                if text:
                    return int(text)
            except (OSError, ValueError):
                break
            time.sleep(0.01)
        try:
            pid = (self.read_status(check_alive=False) or {}).get("pid")
            return int(pid) if pid is not None else None
        except (ValueError, TypeError):
            return None

    # ---- writer side
    def write_status(self, **fields: Any) -> dict:
        """Merge ``fields`` into the status and replace ``status.json`` atomically.
        Always stamps ``updated``; ``state`` must be one of STATES."""
        status = dict(self._status if self._status is not None else (self.read_status(check_alive=False) or {}))
        status.update(fields)
        if status.get("state") not in STATES:
            raise ValueError(f"status state must be one of {STATES}, got {status.get('state')!r}")
        status["updated"] = time.time()
        atomic_write_json(self.status_path, status)
        self._status = status
        return status

    def mark_running(self) -> dict:
        """Claim the run for this process (pid, host, process start time); remove temp files
        a killed writer left (the real files are intact: they are only ever replaced). Temp files
        of a live process — another writer, or this one — are left alone. The status replaced
        by the first call is kept in ``claimed_from``."""
        for folder in (self.path, self.checkpoints_dir):
            for tmp in folder.glob(".*.tmp-*"):
                if not _tmp_writer_alive(tmp.name):
                    tmp.unlink(missing_ok=True)
        if self.claimed_from is None:
            try:
                self.claimed_from = dict(self.read_status(check_alive=False) or {})
            except RunFileError:
                self.claimed_from = {}
        now = time.time()
        return self.write_status(state="running", pid=os.getpid(), host=socket.gethostname(),
                                 proc_start=_proc_start(os.getpid()), started=now, message="",
                                 progress=(self._status or {}).get("progress", {"done": 0, "total": None}),
                                 eta=None)

    def append_metric(self, kind: str, step: int | None = None, **values: Any) -> dict:
        """Append one event line ``{"time", "kind", "step", **values}`` and flush it."""
        event = {"time": time.time(), "kind": kind, "step": step, **values}
        line = json.dumps(event, default=_json_default, allow_nan=True) + "\n"
        if self._metrics_fh is None:
            self._metrics_fh = open(self.metrics_path, "a", encoding="utf-8")
        self._metrics_fh.write(line)  # one write per line: a reader sees whole lines or a tail it waits on
        self._metrics_fh.flush()
        return event

    def write_results(self, results: dict) -> None:
        atomic_write_json(self.results_path, results)

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.log_path, "a", encoding="utf-8") as fh:
            for line in message.rstrip("\n").split("\n"):
                fh.write(f"{stamp} {line}\n")

    def save_checkpoint(self, name: str, obj: Any) -> Path:
        """Save ``obj`` as ``checkpoints/<name>`` atomically: ``.json`` names are JSON, others torch.save."""
        self.checkpoints_dir.mkdir(exist_ok=True)
        target = self.checkpoints_dir / name
        if name.endswith(".json"):
            atomic_write_json(target, obj)
        else:
            import torch
            atomic_write(target, lambda fh: torch.save(obj, fh))
        return target

    def load_checkpoint(self, name: str) -> Any | None:
        target = self.checkpoints_dir / name
        if not target.exists():
            return None
        if name.endswith(".json"):
            return _read_json(target)
        import torch
        return torch.load(target, map_location="cpu", weights_only=True)

    def close(self) -> None:
        """Close the metrics file (the lock, if held, is released by :meth:`unlock`)."""
        if self._metrics_fh is not None:
            self._metrics_fh.close()
            self._metrics_fh = None

    # ---- reader side
    def read_status(self, *, check_alive: bool = True, persist: bool = False) -> dict | None:
        """The status, or None if there is none yet. With ``check_alive``, a 'running' run whose
        process is gone (dead pid, reused pid, zombie; or on another host, no update for
        STALE_REMOTE_S) is reported 'interrupted' — and written so with ``persist``."""
        status = _read_json_object(self.status_path)  # RunFileError if damaged
        if status is None or not check_alive or status.get("state") != "running":
            return status
        if self._is_stale(status):
            status = {**status, "state": "interrupted",
                      "message": f"process {status.get('pid')} on {status.get('host')} is gone"}
            if persist:
                self._status = None
                status = self.write_status(**status)
        return status

    @staticmethod
    def _is_stale(status: dict) -> bool:
        try:
            if status.get("host") == socket.gethostname():
                return not pid_alive(int(status.get("pid") or 0), status.get("proc_start"))
            return time.time() - float(status.get("updated") or 0) > STALE_REMOTE_S
        except (TypeError, ValueError):  # a pid / time that is not a number: nobody can be running it
            return True

    def read_results(self) -> dict | None:
        """results.json, or None before the run is done; RunFileError if the file is damaged."""
        return _read_json_object(self.results_path)

    def read_config(self):
        from .config import load_config
        return load_config(self.config_path)

    def metrics(self, offset: int = 0) -> MetricsReader:
        return MetricsReader(self.metrics_path, offset)

    def read_log_tail(self, lines: int = 20) -> list[str]:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            return []


# --------------------------------------------------------------------------- the store

ID_TOKEN_BYTES = 5  # 10 hex digits: ~1e-6 chance that 1,000 ids made in one second share one


def _id_stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _id_token() -> str:
    return secrets.token_hex(ID_TOKEN_BYTES)


class RunStore:
    """A folder of runs. ``create`` makes a new run folder with a unique id."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def new_id(self, experiment: str) -> str:
        return f"{_id_stamp()}-{experiment}-{_id_token()}"

    def create(self, cfg=None, *, experiment: str | None = None, lock: bool = False) -> Run:
        """Create ``<root>/<id>/`` exclusively (os.mkdir; retried on the rare id clash), freeze
        ``cfg`` into ``config.toml`` (absolute paths), and write status 'queued'. With ``lock``
        the returned run already holds its lock (:meth:`Run.lock`)."""
        experiment = experiment or (cfg.name if cfg is not None else "run")
        self.ensure_root()
        for _ in range(100):
            path = self.root / self.new_id(experiment)
            try:
                os.mkdir(path)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise RunStoreError(f"cannot create a run folder in {self.root} ({exc.strerror}); "
                                    "expected a writable folder") from None
        else:
            raise RunStoreError(f"could not create a unique run folder under {self.root} (100 id clashes)")
        run = Run(path)
        if lock:
            run.lock()  # nobody else can run it before this process does (it was just created)
        (path / "checkpoints").mkdir()
        if cfg is not None:
            from .config import dumps_config
            atomic_write(run.config_path, dumps_config(cfg, absolute_paths=True))
        run.write_status(state="queued", experiment=experiment, pid=None, host=socket.gethostname(),
                         created=time.time(), started=None, progress={"done": 0, "total": None},
                         eta=None, message="")
        run.log(f"created run {run.id}")
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
