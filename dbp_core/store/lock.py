"""Who runs a run: its lock, and whether the process a status names is alive (docs/design.md,
"The run folder").

``.lock`` — ``flock``'ed by the one process running the run (or sweep), its pid inside for the
message of others (:class:`FolderLock`). The kernel drops the lock when the process dies, so a
killed run never leaves a stale lock. A ``running`` status whose process is gone — a dead pid,
a reused pid (another start time), a zombie; on another host, no update for
:data:`STALE_REMOTE_S` — is stale (:func:`is_stale`): readers report the run interrupted.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Callable

from .files import open_nofollow, read_bytes_nofollow
from .status import RunStatus

STALE_REMOTE_S = 600.0  # a run on another host with no status update for this long is reported interrupted


class RunLocked(RuntimeError):
    """Another process holds the run's lock (it is running or resuming the run); ``pid`` is its pid
    when known."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


def tmp_writer_alive(name: str) -> bool:
    """Is the process that made temp file ``.<name>.tmp-<pid>-<hex>`` (atomic_write) alive?"""
    try:
        pid = int(name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return False  # not one of ours: a leftover
    return pid_alive(pid)


def proc_start(pid: int) -> str | None:
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
        now = proc_start(pid)
        if now is not None and now != start:
            return False
    return True


def is_stale(status: RunStatus) -> bool:
    """Is the process of a ``running`` status gone (this host: :func:`pid_alive`; another host: no
    update for :data:`STALE_REMOTE_S`)?"""
    if status.host == socket.gethostname():
        return not pid_alive(status.pid or 0, status.proc_start)
    return time.time() - (status.updated or 0) > STALE_REMOTE_S


class FolderLock:
    """The exclusive lock of a run or sweep folder: ``flock`` on its ``.lock`` (non-blocking),
    held by one object of one process. ``busy`` says what the folder is doing when another holds
    it ('run X is already running'); ``holder_fallback`` gives the holder's pid when ``.lock`` does
    not (a run's status.json)."""

    def __init__(self, path: str | os.PathLike, busy: str, holder_fallback: Callable[[], int | None] | None = None):
        self.path = Path(path)
        self.busy = busy
        self.holder_fallback = holder_fallback
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Does this object hold the lock?"""
        return self._fd is not None

    def take(self) -> bool:
        """Take the lock for as long as this process runs the folder; the pid is written into the
        file for the error message of others. Returns True if taken now, False if this object
        already held it; raises :class:`RunLocked` if another process (or another object) holds it."""
        if self._fd is not None:
            return False
        import fcntl
        fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT)  # a link is refused, its target untouched
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.holder()
            raise RunLocked(f"{self.busy} (pid {pid if pid is not None else '?'})", pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        """Release the lock (the .lock file stays: removing it would race with a new locker)."""
        if self._fd is None:
            return
        import fcntl
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def holder(self) -> int | None:
        """The pid of the process holding the lock: from .lock, else from ``holder_fallback``."""
        for _ in range(20):  # the holder writes its pid right after taking the lock: wait for it briefly
            try:
                text = (read_bytes_nofollow(self.path) or b"").decode().strip()
                if text:
                    return int(text)
            except (OSError, ValueError):
                break
            time.sleep(0.01)
        return self.holder_fallback() if self.holder_fallback is not None else None
