"""The run store (DESIGN.md §4): one folder per run, plain files, crash-safe.

``<root>/<run-id>/``
  ``config.toml``    the resolved config, frozen at creation
  ``status.json``    state, pid, host, progress, ETA — replaced atomically
  ``metrics.jsonl``  append-only events ``{"time", "kind", "step", ...}``, one per line
  ``results.json``   the final table — replaced atomically, only when the run is done
  ``checkpoints/``   stage checkpoints — replaced atomically
  ``log.txt``        human-readable log, tracebacks of failures

Every file that is rewritten goes through :func:`atomic_write` (temp file in the
same folder, fsync, ``os.replace``), so a reader — or a run killed with SIGKILL —
only ever sees the old or the new version. The writer is a plain process; the
reader side (:meth:`Run.read_status`, :class:`MetricsReader`) tolerates dead
writers and half-written last lines.
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

__all__ = ["RunStore", "Run", "RunNotFound", "MetricsReader", "atomic_write", "STATES", "pid_alive",
           "default_runs_dir"]

STATES = ("queued", "running", "done", "failed", "interrupted")
FINAL_STATES = ("done", "failed", "interrupted")
STALE_REMOTE_S = 600.0  # a run on another host with no status update for this long is reported interrupted


class RunNotFound(LookupError):
    """No run matches the given id/prefix/path (or several do)."""


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


# --------------------------------------------------------------------------- liveness

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
        a killed writer may have left (the real files are intact: they are only ever replaced)."""
        for folder in (self.path, self.checkpoints_dir):
            for tmp in folder.glob(".*.tmp-*"):
                tmp.unlink(missing_ok=True)
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
        if self._metrics_fh is not None:
            self._metrics_fh.close()
            self._metrics_fh = None

    # ---- reader side
    def read_status(self, *, check_alive: bool = True, persist: bool = False) -> dict | None:
        """The status, or None if there is none yet. With ``check_alive``, a 'running' run whose
        process is gone (dead pid, reused pid, zombie; or on another host, no update for
        STALE_REMOTE_S) is reported 'interrupted' — and written so with ``persist``."""
        status = _read_json(self.status_path)
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
        if status.get("host") == socket.gethostname():
            return not pid_alive(int(status.get("pid") or 0), status.get("proc_start"))
        return time.time() - float(status.get("updated") or 0) > STALE_REMOTE_S

    def read_results(self) -> dict | None:
        return _read_json(self.results_path)

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

class RunStore:
    """A folder of runs. ``create`` makes a new run folder with a unique id."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def new_id(self, experiment: str) -> str:
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{experiment}-{secrets.token_hex(3)}"

    def create(self, cfg=None, *, experiment: str | None = None) -> Run:
        """Create ``<root>/<id>/`` exclusively (os.mkdir; retried on the rare id clash), freeze
        ``cfg`` into ``config.toml`` (absolute paths), and write status 'queued'."""
        experiment = experiment or (cfg.name if cfg is not None else "run")
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            path = self.root / self.new_id(experiment)
            try:
                os.mkdir(path)
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover
            raise RuntimeError(f"could not create a unique run folder under {self.root}")
        run = Run(path)
        (path / "checkpoints").mkdir()
        if cfg is not None:
            from .config import dumps_config
            atomic_write(run.config_path, dumps_config(cfg, absolute_paths=True))
        run.write_status(state="queued", experiment=experiment, pid=None, host=socket.gethostname(),
                         created=time.time(), started=None, progress={"done": 0, "total": None},
                         eta=None, message="")
        run.log(f"created run {run.id}")
        return run

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
