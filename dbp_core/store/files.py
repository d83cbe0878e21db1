"""Plain files of the run store, crash-safe (docs/design.md, "The run folder").

Every file of a run or sweep folder that is rewritten goes through :func:`atomic_write` (temp
file ``.<name>.tmp-<pid>-<hex>`` in the same folder, fsync, ``os.replace``, fsync of the
folder), so a reader — or a run killed with SIGKILL — only ever sees the old or the new
version; a killed writer's temp files are removed by the next claim of the run
(``Run.mark_running``, ``lock.tmp_writer_alive``).

Files inside a run folder are opened without following symbolic links (``O_NOFOLLOW``,
:func:`open_nofollow`) and must be regular files. A file that is there but is not what the
store writes (empty, not JSON, not a JSON object, a link, unreadable) is a
:class:`RunFileError` naming it; an OSError of a write names the file it was writing
(:func:`naming`).
"""
from __future__ import annotations

import errno
import io
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Callable

class RunFileError(ValueError):
    """A run file (``status.json``, ``results.json``) exists but is not what the run store writes
    (empty, not JSON, not a JSON object, unreadable). A ValueError, as a JSONDecodeError was."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")



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
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def json_default(obj: Any) -> Any:
    """What JSON is written for a value ``json`` cannot write: numpy / torch values as lists, paths as strings."""
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


