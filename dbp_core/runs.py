"""The write side of the run store (docs/design.md, "The run folder"): one folder per run,
plain files, crash-safe. The read side is :mod:`dbp_core.results`.

``<root>/<run-id>/``
  ``config.toml``    the resolved config, frozen at creation
  ``status.json``    state, pid, host, progress, ETA — replaced atomically
  ``metrics.jsonl``  append-only events ``{"time", "kind", "step", ...}``, one per line
  ``results.json``   the final table — replaced atomically, only when the run is done
  ``checkpoints/``   stage checkpoints — replaced atomically
  ``log.txt``        human-readable log, tracebacks of failures
  ``analysis/``, ``models/``, ``report/``  files stages and reports write (``Run.artifact_path``)
  ``.lock``          flock'ed by the one process running the run (its pid inside); see Run.lock

Every file that is rewritten goes through :func:`atomic_write` (temp file in the
same folder, fsync, ``os.replace``), so a reader — or a run killed with SIGKILL —
only ever sees the old or the new version. The writer is a plain process; the
reader side (:meth:`Run.read_status`, :class:`MetricsReader`) tolerates dead
writers and half-written last lines; a status/results file damaged by something else
raises :class:`RunFileError` (a ValueError naming the file).

Integrity (docs/design.md, "The run folder"): files inside a run folder are opened without
following symbolic links (``O_NOFOLLOW``) and must be regular files; ``checksums.json`` holds
the SHA-256 of ``config.toml``, of every checkpoint and of every model a stage saved, recorded
when they were written, and :meth:`Run.verify_integrity` (``dbp resume``) refuses a run whose
files do not match, naming the file. A run holds ``.reserve`` (64 KB) while it runs: when the
disk fills up, it is released so that the run can still record why it failed.

``<root>/sweep-<yyyymmdd>-<hhmmss>-<experiment>-<token>/`` — a sweep (``dbp sweep``), a group of runs
  ``sweep.json``     the manifest, written once: source file, the folder its relative paths resolve
                     against, the grid; point i is the i-th element of the grid's product (:class:`Sweep`)
  ``points.jsonl``   append-only, one line ``{"index", "values", "run", "time"}`` per point run created
                     (the last line of a point names its run)
  ``config.toml``    the base config, frozen at creation; point i runs it with its overrides
  ``report/``        ``dbp report <sweep>``: the accuracy-vs-value curve
  ``.lock``          flock'ed by the one process running the sweep
  The point runs are ordinary run folders of the store (``status.json`` names the ``group``),
  run one after another with the same seed, so every point attacks the same examples.

``<root>/.trash/<run-id>/`` — runs moved away by :meth:`RunStore.trash` (never a running run).

``status.json`` is a :class:`RunStatus`, read and written here alone. A process that runs a
run writes it through a :class:`RunWriter`: a :class:`Run`, or under torchrun on ranks > 0 a
:class:`FollowerRun`, which writes nothing (rank 0 owns the store).
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import stat
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

__all__ = ["RunStore", "Run", "FollowerRun", "RunWriter", "RunStatus", "Progress", "RunNotFound", "RunLocked",
           "RunFileError", "RunStoreError", "MetricsReader", "atomic_write", "STATES", "pid_alive",
           "default_runs_dir", "parse_run_id", "RunId", "Sweep", "SweepPoint", "SWEEP_PREFIX", "TRASH"]

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


def naming(exc: OSError, path: str | os.PathLike) -> OSError:
    """``exc`` with ``path`` as its file name when it has none ('[Errno 28] No space left on device:
    'runs/x/status.json''): a write, flush or fsync error does not say which file it was."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


def _write_error(exc: Exception, path: Path) -> OSError:
    """An OSError for a writer that failed without one (torch.save): ENOSPC when the disk is full."""
    try:
        st = os.statvfs(path.parent)
        full = st.f_bavail * st.f_frsize < 64 * 1024
    except OSError:
        full = False
    code = errno.ENOSPC if full else errno.EIO
    return OSError(code, f"{os.strerror(code)} ({str(exc).splitlines()[0][:120]})", str(path))


def open_nofollow(path: str | os.PathLike, flags: int, mode: int = 0o644) -> int:
    """``os.open`` of a file inside a run folder: never through a symbolic link, never a FIFO,
    device or folder. A link or another kind of file is a :class:`RunFileError` naming it."""
    path = Path(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunFileError(path, "is a symbolic link; dbp does not follow links inside a run folder "
                               "(expected the regular file dbp wrote)") from None
        raise naming(exc, path) from None
    try:
        kind = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(kind):
        os.close(fd)
        raise RunFileError(path, "is not a regular file (expected the file dbp wrote)")
    os.set_blocking(fd, True)
    return fd


def read_bytes_nofollow(path: str | os.PathLike) -> bytes | None:
    """The bytes of a run file (not through a link; :func:`open_nofollow`), None if absent."""
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def file_digest(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file read without following links; a folder: of its files' names and
    digests, in name order (a model saved as several files)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        h = hashlib.sha256()
        for f in sorted(q for q in path.rglob("*") if not q.is_dir() or q.is_symlink()):
            h.update(f"{f.relative_to(path).as_posix()}\0{file_digest(f)}\n".encode())
        return "sha256:" + h.hexdigest()
    h = hashlib.sha256()
    fd = open_nofollow(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None] | bytes | str,
                 before_replace: Callable[[Path], None] | None = None) -> None:
    """Replace ``path`` atomically: write a temp file next to it, fsync, ``os.replace``, fsync the folder.

    ``write`` is the content (bytes/str) or a function given the open binary file;
    ``before_replace(tmp)`` runs once the temp file is complete (e.g. to record its checksum).
    An OSError names ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        try:
            with open(tmp, "xb") as fh:
                if callable(write):
                    try:
                        write(fh)
                    except RuntimeError as exc:  # torch.save reports a failed write as a RuntimeError
                        raise _write_error(exc, path) from None
                else:
                    fh.write(write.encode("utf-8") if isinstance(write, str) else write)
                fh.flush()
                os.fsync(fh.fileno())
            if before_replace is not None:
                before_replace(tmp)
            os.replace(tmp, path)
        except OSError as exc:
            raise naming(exc, path) from None
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


def parse_json(data: bytes, path: Path, expected: str = "a JSON object written by dbp") -> Any:
    """The JSON value of a run file's bytes; :class:`RunFileError` naming ``path`` if it is not one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(path, f"is not UTF-8 text ({exc}); expected {expected}") from None
    if not text.strip():
        raise RunFileError(path, f"is empty; expected {expected}")
    try:
        return json.loads(text)
    except RecursionError:
        raise RunFileError(path, f"is nested too deeply to read; expected {expected}") from None
    except ValueError as exc:
        raise RunFileError(path, f"is not valid JSON ({exc}); expected {expected}") from None


def read_store_file(path: Path, expected: str) -> bytes | None:
    """The bytes of a file of the run store (:func:`read_bytes_nofollow`); None if absent,
    RunFileError naming it (and ``expected``, what it should hold) if it cannot be read."""
    try:
        return read_bytes_nofollow(path)
    except OSError as exc:
        raise RunFileError(path, f"cannot be read ({type(exc).__name__}: {exc}); expected {expected}") from None


def read_json_object(path: Path) -> dict | None:
    """A JSON object file written by the run store; None if absent, RunFileError if damaged."""
    data = read_store_file(path, "a JSON object written by dbp")
    if data is None:
        return None
    obj = parse_json(data, path)
    if not isinstance(obj, dict):
        raise RunFileError(path, f"holds a JSON {type(obj).__name__}; expected a JSON object written by dbp")
    return obj


# --------------------------------------------------------------------------- status.json

@dataclass(frozen=True)
class Progress:
    """How far the current stage is: ``done`` of ``total`` units (examples, steps), total unknown: None."""
    stage: str | None = None
    done: float = 0
    total: float | None = None


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_STATUS_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "experiment": (lambda v: isinstance(v, str), "a string"),
    "pid": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "host": (lambda v: isinstance(v, str), "a string"),
    "proc_start": (lambda v: isinstance(v, str), "a string"),
    "created": (_is_num, "a number (unix time)"),
    "started": (_is_num, "a number (unix time)"),
    "updated": (_is_num, "a number (unix time)"),
    "eta": (_is_num, "a number of seconds"),
    "message": (lambda v: isinstance(v, str), "a string"),
    "source": (lambda v: isinstance(v, str), "a string (the experiment file's path)"),
    "group": (lambda v: isinstance(v, str), "a string (a sweep id)"),
}


@dataclass(frozen=True)
class RunStatus:
    """``status.json``: what a run is doing. ``state`` is one of :data:`STATES`."""
    state: str
    experiment: str | None = None
    pid: int | None = None
    host: str | None = None
    proc_start: str | None = None
    created: float | None = None
    started: float | None = None
    updated: float | None = None
    progress: Progress = field(default_factory=Progress)
    eta: float | None = None
    message: str = ""
    source: str | None = None  # the experiment file `dbp run` was given (absolute path)
    group: str | None = None  # the sweep this run is a point of

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, path: str | os.PathLike = "status.json") -> "RunStatus":
        """Validate the shape of a parsed ``status.json``; :class:`RunFileError` names the field."""
        def bad(name: str, value: Any, expected: str):
            text = json.dumps(value, default=str)
            return RunFileError(path, f"field '{name}' holds {text[:60]}; expected {expected}")
        state = data.get("state")
        if state not in STATES:
            raise bad("state", state, "one of " + ", ".join(STATES))
        values: dict[str, Any] = {"state": state}
        for name, (ok, expected) in _STATUS_TYPES.items():
            v = data.get(name)
            if v is not None and not ok(v):
                raise bad(name, v, expected)
            values[name] = v
        values["message"] = values["message"] or ""
        p = data.get("progress")
        if p is None:
            p = {}
        if not isinstance(p, dict):
            raise bad("progress", p, "an object {stage, done, total}")
        stage, done, total = p.get("stage"), p.get("done", 0), p.get("total")
        if stage is not None and not isinstance(stage, str):
            raise bad("progress.stage", stage, "a string")
        if not _is_num(done):
            raise bad("progress.done", done, "a number")
        if total is not None and not _is_num(total):
            raise bad("progress.total", total, "a number")
        values["progress"] = Progress(stage, done, total)
        return cls(**values)

    def updated_with(self, **changes: Any) -> "RunStatus":
        """A copy with ``changes`` (``progress`` may be given as a dict)."""
        if isinstance(changes.get("progress"), dict):
            changes["progress"] = Progress(**changes["progress"])
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown status field(s): {', '.join(sorted(unknown))}")
        if "state" in changes and changes["state"] not in STATES:
            raise ValueError(f"status state must be one of {STATES}, got {changes['state']!r}")
        status = replace(self, **changes)
        try:  # what is written must read back: the same checks as the reader's
            RunStatus.from_dict(status.to_dict())
        except RunFileError as exc:
            raise ValueError(f"bad status: {exc.problem}") from None
        return status


# --------------------------------------------------------------------------- run ids

RUN_ID = re.compile(r"(?P<stamp>\d{8}-\d{6})-(?P<experiment>[A-Za-z0-9][A-Za-z0-9_.-]*)-(?P<token>[0-9a-f]{6,})")


@dataclass(frozen=True)
class RunId:
    """``<yyyymmdd>-<hhmmss>-<experiment>-<token>``, as :meth:`RunStore.new_id` makes them."""
    stamp: str
    experiment: str
    token: str


def parse_run_id(run_id: str) -> RunId | None:
    """The parts of a run id, or None for a folder name that is not one."""
    m = RUN_ID.fullmatch(run_id)
    return RunId(m["stamp"], m["experiment"], m["token"]) if m else None


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
    """Events from byte ``offset`` → (events, new offset, number of malformed lines skipped).
    A link or a file of another kind is a :class:`RunFileError`."""
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except FileNotFoundError:
        return [], offset, 0
    with os.fdopen(fd, "rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset, 0
    events, bad = [], 0
    for line in chunk[:end].split(b"\n"):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
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
        self._metrics_fh = None
        self._lock_fd: int | None = None
        self._digests: dict | None = None
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

    # ---- integrity: plain files, checksums (docs/design.md, "The run folder")
    FILES = ("config.toml", "status.json", "metrics.jsonl", "results.json", "log.txt", ".lock",
             "checksums.json", ".reserve", "plugins.json")
    FOLDERS = ("checkpoints", "analysis", "models", "report")

    def file_problems(self) -> list[str]:
        """What is not as dbp makes it: a run file that is a link or not a regular file, a run
        subfolder that is a link. Each problem names the path."""
        problems = []
        for name in self.FILES:
            try:
                mode = os.lstat(self.path / name).st_mode
            except FileNotFoundError:
                continue
            except OSError as exc:
                problems.append(f"{self.path / name}: cannot be inspected ({exc.strerror})")
                continue
            if stat.S_ISLNK(mode):
                problems.append(f"{self.path / name}: is a symbolic link; dbp does not follow links inside "
                                "a run folder (expected the regular file dbp wrote)")
            elif not stat.S_ISREG(mode):
                problems.append(f"{self.path / name}: is not a regular file (expected the file dbp wrote)")
        for name in self.FOLDERS:
            folder = self.path / name
            if folder.is_symlink():
                problems.append(f"{folder}: is a symbolic link; expected a folder of the run")
            elif folder.exists() and not folder.is_dir():
                problems.append(f"{folder}: is not a folder")
        return problems

    def _checksums(self) -> dict:
        if self._digests is None:
            data = read_json_object(self.checksums_path)
            self._digests = {} if data is None else data
        return self._digests

    def record_checksum(self, relative: str, digest: str) -> None:
        """Record ``digest`` as the checksum of ``<run>/<relative>``, keeping the previous one: until
        the file is replaced, it still holds the previous content (a kill in between leaves either)."""
        digests = dict(self._checksums())
        before = digests.get(relative) or []
        digests[relative] = ([before[-1]] if before and before[-1] != digest else []) + [digest]
        atomic_write_json(self.checksums_path, digests)
        self._digests = digests

    def record_artifact(self, relative: str | os.PathLike) -> str:
        """Record the checksum of a file or folder a stage wrote (a saved model), verified on resume."""
        relative = Path(relative).as_posix()
        digest = file_digest(self.path / relative)
        self.record_checksum(relative, digest)
        return digest

    def verify_file(self, relative: str) -> None:
        """:class:`RunFileError` if ``<run>/<relative>`` is not what dbp wrote (its checksum is not
        the one recorded), or it has no checksum recorded (it was not written by this run)."""
        target = self.path / relative
        entry = self._checksums().get(relative)
        try:
            digest = file_digest(target)
        except OSError as exc:
            raise RunFileError(target, f"cannot be read ({exc.strerror or exc})") from None
        if not entry:
            raise RunFileError(target, f"has no checksum in {self.checksums_path.name}: it was not written by "
                               "this run (copied in?); expected only files dbp wrote")
        if digest not in entry:
            raise RunFileError(target, f"does not match the checksum recorded when dbp wrote it "
                               f"({self.checksums_path.name}): it was edited or damaged; restore it, or start "
                               "a new run")

    def verify_integrity(self) -> None:
        """What ``dbp resume`` checks before it continues a run: every run file is a plain file, and
        the frozen config, every checkpoint and every saved model match the checksums recorded
        when they were written. :class:`RunFileError` names the first file that does not."""
        problems = self.file_problems()
        if problems:
            path, _, problem = problems[0].partition(": ")
            raise RunFileError(path, problem)
        if not self.checksums_path.exists():
            raise RunFileError(self.checksums_path, "is missing: the run's checksums are gone (or an older dbp "
                               "made the run); expected the file dbp writes when it creates a run")
        self._digests = None
        self.verify_file("config.toml")
        if self.checkpoints_dir.is_dir():
            for f in sorted(self.checkpoints_dir.iterdir()):
                if not f.name.startswith("."):
                    self.verify_file(f"checkpoints/{f.name}")
        for relative in self._checksums():
            if not relative.startswith("checkpoints/") and relative != "config.toml" and (self.path / relative).exists():
                self.verify_file(relative)

    # ---- the user code a run executes (docs/plugins.md, "Reproducibility")
    def record_plugins(self, sources: dict[str, dict]) -> None:
        """Write ``plugins.json``: per config field naming a plugin, its import path, resolved file and
        sha256 (``plugins.plugin_source``), with its checksum (verified on resume like config.toml)."""
        atomic_write(self.plugins_path, json.dumps({"plugins": sources, "accepted_changes": []}, indent=2),
                     before_replace=lambda tmp: self.record_checksum("plugins.json", file_digest(tmp)))

    def recorded_plugins(self) -> dict | None:
        """``plugins.json`` (None for a run without plugins, or made before dbp recorded them)."""
        return read_json_object(self.plugins_path)

    def plugin_changes(self) -> list[dict]:
        """The plugins whose file is not the one the run recorded: ``[{"field", "import", "file",
        "recorded", "now"}]`` (``now`` None when the file is gone or unreadable)."""
        from .plugins import plugin_source
        recorded = (self.recorded_plugins() or {}).get("plugins") or {}
        changes = []
        for field_name, rec in recorded.items():
            if not isinstance(rec, dict) or not isinstance(rec.get("import"), str):
                raise RunFileError(self.plugins_path, f"entry {field_name!r} is not what dbp writes")
            try:
                now = plugin_source(rec["import"])
            except ValueError:  # it no longer imports
                now = {"file": None, "sha256": None}
            if now.get("sha256") != rec.get("sha256") or now.get("file") != rec.get("file"):
                changes.append({"field": field_name, "import": rec["import"], "file": rec.get("file"),
                                "recorded": rec.get("sha256"), "now": now.get("sha256"), "now_file": now.get("file")})
        return changes

    def accept_plugin_changes(self, changes: list[dict]) -> None:
        """Record the current code of changed plugins as the run's (``dbp resume --allow-changed-code``),
        keeping what was accepted and when in ``accepted_changes``."""
        data = self.recorded_plugins() or {"plugins": {}, "accepted_changes": []}
        for c in changes:
            data["plugins"][c["field"]] = {"import": c["import"], "file": c["now_file"], "sha256": c["now"]}
        data.setdefault("accepted_changes", []).append({"at": time.time(), "changes": changes})
        atomic_write(self.plugins_path, json.dumps(data, indent=2),
                     before_replace=lambda tmp: self.record_checksum("plugins.json", file_digest(tmp)))

    # ---- space kept for the last words of a run on a full disk
    RESERVE_BYTES = 64 * 1024

    def reserve_space(self) -> None:
        """Hold ``.reserve`` (random bytes: a compressing filesystem cannot shrink it) while the run
        runs; :meth:`release_space` frees it so the final status and log lines can be written."""
        fd = open_nofollow(self.reserve_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(self.RESERVE_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            self.reserve_path.unlink(missing_ok=True)
            raise naming(exc, self.reserve_path) from None

    def release_space(self) -> None:
        try:
            if not self.reserve_path.is_symlink():
                self.reserve_path.unlink(missing_ok=True)
        except OSError:
            pass

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
        fd = open_nofollow(self.lock_path, os.O_RDWR | os.O_CREAT)  # a link is refused, its target untouched
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
                text = (read_bytes_nofollow(self.lock_path) or b"").decode().strip()
                if text:
                    return int(text)
            except (OSError, ValueError):
                break
            time.sleep(0.01)
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
                if not _tmp_writer_alive(tmp.name):
                    tmp.unlink(missing_ok=True)
        if self.claimed_from is None:
            try:
                self.claimed_from = self.read_status(check_alive=False) or RunStatus(state="queued")
            except RunFileError:
                self.claimed_from = RunStatus(state="queued")
            self._status = self.claimed_from
        return self.write_status(state="running", pid=os.getpid(), host=socket.gethostname(),
                                 proc_start=_proc_start(os.getpid()), started=time.time(), message="", eta=None)

    def append_metric(self, kind: str, step: int | None = None, **values: Any) -> dict:
        """Append one event line ``{"time", "kind", "step", **values}`` and flush it."""
        event = {"time": time.time(), "kind": kind, "step": step, **values}
        line = json.dumps(event, default=_json_default, allow_nan=True) + "\n"
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
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        text = "".join(f"{stamp} {line}\n" for line in message.rstrip("\n").split("\n"))
        fd = open_nofollow(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            with os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace") as fh:
                fh.write(text)
        except OSError as exc:
            raise naming(exc, self.log_path) from None

    def crash_log(self):
        """``log.txt`` opened for appending, for :mod:`faulthandler`: a process that dies of a fatal
        signal (``os.abort()``, a crash in native code) leaves its traceback there."""
        return os.fdopen(open_nofollow(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a")

    def save_checkpoint(self, name: str, obj: Any) -> Path:
        """Save ``obj`` as ``checkpoints/<name>`` atomically: ``.json`` names are JSON, others
        torch.save; its checksum goes to ``checksums.json`` before the file replaces the old one."""
        self.checkpoints_dir.mkdir(exist_ok=True)
        target = self.checkpoints_dir / name

        def record(tmp: Path) -> None:
            self.record_checksum(f"checkpoints/{name}", file_digest(tmp))
        if name.endswith(".json"):
            atomic_write(target, json.dumps(obj, indent=2, default=_json_default) + "\n", before_replace=record)
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
        if self.checksums_path.exists() or self._digests:
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
        if not check_alive or status.state != "running" or not self._is_stale(status):
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
        ('Fatal Python error: Aborted'), if any."""
        try:
            tail = self.read_log_tail(400)
        except (OSError, RunFileError):
            return None
        for line in reversed(tail):
            if line.startswith("Fatal Python error:"):
                return line.strip()
            if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (starting|resuming) on ", line):
                return None
        return None

    @staticmethod
    def _is_stale(status: RunStatus) -> bool:
        if status.host == socket.gethostname():
            return not pid_alive(status.pid or 0, status.proc_start)
        return time.time() - (status.updated or 0) > STALE_REMOTE_S

    def read_results(self) -> dict | None:
        """results.json, or None before the run is done; RunFileError if the file is damaged."""
        return read_json_object(self.results_path)

    def read_config(self):
        from .config import load_config
        return load_config(self.config_path)

    def metrics(self, offset: int = 0) -> MetricsReader:
        return MetricsReader(self.metrics_path, offset)

    def read_log_tail(self, lines: int = 20) -> list[str]:
        try:
            fd = open_nofollow(self.log_path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        with os.fdopen(fd, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 64 * 1024 * max(1, lines // 20)))  # the tail of a long log, not all of it
            return fh.read().decode("utf-8", errors="replace").splitlines()[-lines:]


# --------------------------------------------------------------------------- writers

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
            from .config import dumps_config
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
                    from .plugins import plugin_source
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
        return f"{SWEEP_PREFIX}{_id_stamp()}-{experiment}-{_id_token()}"

    def create_sweep(self, experiment: str, config_text: str, grid: list[tuple[str, list]], *,
                     source: str | None = None, overrides: list[str] = (), base_dir: str | None = None) -> "Sweep":
        """Create ``<root>/sweep-<...>/`` with the frozen base config and its manifest: the grid
        ((key, values) pairs; the points are their cartesian product, first key slowest) and
        ``base_dir``, the folder relative paths of the grid resolve against (the experiment file's,
        as for ``dbp run``). The points' runs are recorded as they are created (:meth:`Sweep.set_run`)."""
        path = self._mkdir_unique(lambda: self.new_sweep_id(experiment), "sweep folder")
        atomic_write(path / "config.toml", config_text)
        manifest = {"schema": SWEEP_SCHEMA, "id": path.name, "experiment": experiment, "source": source,
                    "base_dir": base_dir, "created": time.time(), "overrides": list(overrides),
                    "grid": [{"key": k, "values": list(v)} for k, v in grid]}
        atomic_write_json(path / SWEEP_FILE, manifest)
        return Sweep(path)

    def list_sweeps(self) -> list["Sweep"]:
        """Sweeps of the store, oldest first."""
        if not self.root.is_dir():
            return []
        return [Sweep(p) for p in sorted(self.root.iterdir(), key=lambda p: p.name)
                if p.is_dir() and p.name.startswith(SWEEP_PREFIX) and (p / SWEEP_FILE).exists()]

    def find_sweep(self, ref: str | os.PathLike) -> "Sweep | None":
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


TRASH = ".trash"
SWEEP_PREFIX = "sweep-"
SWEEP_FILE = "sweep.json"
POINTS_FILE = "points.jsonl"
SWEEP_SCHEMA = "dbp-lab.sweep/2"
SWEEP_V1 = "dbp-lab.sweep/1"  # the points and their runs inside sweep.json, rewritten per point: still read


@dataclass(frozen=True)
class SweepPoint:
    """One grid point of a sweep: its index, its values ({dotted key: value}) and its run (None
    until the point has been started)."""
    index: int
    values: dict
    run: str | None

    @property
    def overrides(self) -> list[str]:
        """The ``--set`` overrides of this point (values as TOML literals)."""
        return [f"{k}={toml_value(v)}" for k, v in self.values.items()]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={toml_value(v)}" for k, v in self.values.items())


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_string(s: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped, the rest as it is."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}.get(ch, f"\\u{ord(ch):04x}"))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(v: Any) -> str:
    """A grid value as a TOML literal (what ``--set`` parses back to the same value): a number,
    string, boolean, array or inline table ``{num_channels = 64}``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k if _BARE_KEY.fullmatch(str(k)) else _toml_string(str(k))} = {toml_value(x)}"
                               for k, x in v.items()) + "}"
    raise TypeError(f"a sweep value must be a number, string, boolean, array or table, got {type(v).__name__}")


def _json_kind(v: Any) -> str:
    """What a JSON value is, in words: 'a JSON string', 'null', ..."""
    if v is None:
        return "null"
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}
    return f"a JSON {names.get(type(v), type(v).__name__)}"


def run_name_problem(run: Any) -> str | None:
    """None when ``run`` can name a run folder of the store (one plain folder name), else why not."""
    if not isinstance(run, str):
        return f"is {_json_kind(run)}; expected a run id"
    if not run or run.startswith(".") or any(c in run for c in "/\\\0") or len(run) > 255:
        return f"is {run[:80]!r}; expected a run id (a folder name of the run store)"
    return None


class Sweep:
    """A sweep folder (see the module docstring). :meth:`read` gives its manifest, checked field by
    field (:class:`RunFileError` naming the field); :meth:`points` its points with their runs;
    :meth:`set_run` appends a point's run to ``points.jsonl``; :meth:`lock` makes one process at a
    time run its points. A schema-1 folder (the points and runs in sweep.json) is read too; its
    later runs go to points.jsonl."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = Run(self.path)  # the same flock'ed .lock file as a run

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / SWEEP_FILE

    @property
    def points_path(self) -> Path:
        return self.path / POINTS_FILE

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    def read(self) -> dict:
        """The manifest, checked: RunFileError naming the field if it is missing or damaged."""
        data = read_json_object(self.manifest_path)
        if data is None:
            raise RunFileError(self.manifest_path, "is missing; expected the manifest dbp sweep writes")
        _check_manifest(data, self.manifest_path)
        return data

    def base_dir(self, manifest: dict | None = None) -> Path:
        """Where the grid's relative paths resolve: the experiment file's folder (a schema-1 sweep:
        the sweep folder, as its points were run)."""
        manifest = manifest if manifest is not None else self.read()
        return Path(manifest.get("base_dir") or self.path)

    def points(self, manifest: dict | None = None) -> list[SweepPoint]:
        """Every point (the grid's product, in order) with its run: the last line of points.jsonl
        that names it, else (schema 1) the run in sweep.json."""
        manifest = manifest if manifest is not None else self.read()
        values = _grid_points(manifest)
        runs = {i: p.get("run") for i, p in enumerate(manifest["points"])} if manifest["schema"] == SWEEP_V1 else {}
        runs.update(self._point_runs(values))
        return [SweepPoint(i, v, runs.get(i)) for i, v in enumerate(values)]

    def keys(self) -> list[str]:
        return [g["key"] for g in self.read()["grid"]]

    def _point_runs(self, values: list[dict]) -> dict[int, str]:
        """{index: run} from points.jsonl, each line checked (RunFileError naming the line). A last
        line without its newline was cut short by a crash while it was written: not a record."""
        path = self.points_path
        data = read_store_file(path, "the points' runs, one JSON object a line, as dbp sweep appends them")
        if data is None:
            return {}
        lines = data.split(b"\n")[:-1]  # the part after the last newline is a torn line (or nothing)
        from .config import value_key
        runs: dict[int, str] = {}
        for n, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            where = f"line {n}"
            try:
                obj = parse_json(raw, path, "one JSON object a line, {\"index\", \"values\", \"run\"}")
            except RunFileError as exc:
                raise RunFileError(path, f"{where} {exc.problem}") from None
            if not isinstance(obj, dict):
                raise RunFileError(path, f"{where} is {_json_kind(obj)}; expected an object "
                                   "{\"index\", \"values\", \"run\"} as dbp sweep appends them")
            index = obj.get("index")
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(values):
                raise RunFileError(path, f"{where}: index is {index!r}; expected a point index, an integer from 0 "
                                   f"to {len(values) - 1}")
            problem = run_name_problem(obj.get("run"))
            if problem:
                raise RunFileError(path, f"{where}: run {problem}")
            if "values" in obj and (not isinstance(obj["values"], dict) or value_key(obj["values"]) !=
                                    value_key(values[index])):
                raise RunFileError(path, f"{where}: values {json.dumps(obj['values'])[:120]} are not those of point "
                                   f"{index + 1} ({json.dumps(values[index])[:120]}); expected the point's values")
            runs[index] = obj["run"]
        return runs

    def set_run(self, index: int, run_id: str) -> None:
        """Record that point ``index`` runs as ``run_id``: one line appended to points.jsonl (fsync'ed;
        a torn line a crash left at the end is cut off first)."""
        points = self.points()
        if not 0 <= index < len(points):
            raise IndexError(f"sweep {self.id} has no point {index} (it has {len(points)})")
        line = json.dumps({"index": index, "values": points[index].values, "run": run_id, "time": time.time()},
                          default=_json_default) + "\n"
        fd = open_nofollow(self.points_path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.ftruncate(fd, os.pread(fd, size, 0).rfind(b"\n") + 1)
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        except OSError as exc:
            raise naming(exc, self.points_path) from None
        finally:
            os.close(fd)

    def lock(self) -> bool:
        try:
            return self._lock.lock()
        except RunLocked as exc:
            raise RunLocked(f"sweep {self.id} is already being run (pid {exc.pid if exc.pid is not None else '?'})",
                            exc.pid) from None

    def unlock(self) -> None:
        self._lock.unlock()


def _check_manifest(m: dict, path: Path) -> None:
    """RunFileError naming the first field of the sweep manifest ``m`` that is not what dbp sweep
    writes (the point list too, for schema 1)."""
    from .config import grid_value_problem, value_key

    def bad(field: str, problem: str) -> RunFileError:
        return RunFileError(path, f"{field} {problem}; expected the manifest dbp sweep writes")
    if m.get("schema") not in (SWEEP_SCHEMA, SWEEP_V1):
        raise bad("schema", f"is {json.dumps(m.get('schema'))[:60]}, not {SWEEP_SCHEMA} (or {SWEEP_V1})")
    for field in ("experiment", "source", "base_dir", "id"):
        if m.get(field) is not None and not isinstance(m[field], str):
            raise bad(field, f"is {_json_kind(m[field])}; expected a string")
    if m.get("created") is not None and (not _is_num(m["created"])):
        raise bad("created", f"is {_json_kind(m['created'])}; expected a time in seconds")
    overrides = m.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise bad("overrides", "is not a list of strings (--set key=value)")
    grid = m.get("grid")
    if not isinstance(grid, list) or not grid:
        raise bad("grid", f"is {_json_kind(grid)}{' (empty)' if grid == [] else ''}; expected a list of "
                  "{\"key\", \"values\"}")
    keys = []
    for i, g in enumerate(grid):
        if not isinstance(g, dict):
            raise bad(f"grid[{i}]", f"is {_json_kind(g)}; expected an object {{\"key\", \"values\"}}")
        key = g.get("key")
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise bad(f"grid[{i}].key", f"is {json.dumps(key)[:60]}; expected a dotted key (attacks.0.eps)")
        if key in keys:
            raise bad(f"grid[{i}].key", f"'{key}' is swept twice")
        keys.append(key)
        values = g.get("values")
        if not isinstance(values, list) or not values:
            raise bad(f"grid[{i}].values", f"is {_json_kind(values)}; expected a non-empty list of values")
        seen = set()
        for j, v in enumerate(values):
            problem = grid_value_problem(v)
            if problem:
                raise bad(f"grid[{i}].values[{j}]", f"is {problem}; expected a number, string, boolean, array or table")
            if value_key(v) in seen:
                raise bad(f"grid[{i}].values[{j}]", f"{json.dumps(v)[:60]} is listed twice")
            seen.add(value_key(v))
    if m["schema"] == SWEEP_V1:
        _check_v1_points(m, path, bad)


def _grid_points(m: dict) -> list[dict]:
    """The values of each point of a checked manifest: the grid's product, first key slowest."""
    import itertools
    keys = [g["key"] for g in m["grid"]]
    return [dict(zip(keys, combo)) for combo in itertools.product(*[g["values"] for g in m["grid"]])]


def _check_v1_points(m: dict, path: Path, bad: Callable[[str, str], RunFileError]) -> None:
    """A schema-1 manifest's ``points``: one object {index, values, run} per point of the grid's
    product, in order, each with the point's values."""
    from .config import value_key
    points, expected = m.get("points"), _grid_points(m)
    if not isinstance(points, list):
        raise bad("points", f"is {_json_kind(points)}; expected a list of {{\"index\", \"values\", \"run\"}}")
    if len(points) != len(expected):
        raise bad("points", f"has {len(points)} entries; the grid has {len(expected)} points")
    for i, (p, want) in enumerate(zip(points, expected)):
        if not isinstance(p, dict):
            raise bad(f"points[{i}]", f"is {_json_kind(p)}; expected an object {{\"index\", \"values\", \"run\"}}")
        if p.get("index") != i or isinstance(p.get("index"), bool) or not isinstance(p.get("index"), int):
            raise bad(f"points[{i}].index", f"is {json.dumps(p.get('index'))[:40]}; expected {i} (its position)")
        values = p.get("values")
        if not isinstance(values, dict):
            raise bad(f"points[{i}].values", f"is {_json_kind(values)}; expected an object {{key: value}}")
        if list(values) != list(want) or any(value_key(values[k]) != value_key(want[k]) for k in want):
            raise bad(f"points[{i}].values", f"are {json.dumps(values)[:120]}, not the grid's point {i + 1} "
                      f"({json.dumps(want)[:120]})")
        if p.get("run") is not None:
            problem = run_name_problem(p["run"])
            if problem:
                raise bad(f"points[{i}].run", problem)
