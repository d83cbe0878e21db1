"""``log.txt``: the human-readable log of a run (docs/design.md, "The run folder").

Appended, one ``<yyyy-mm-dd hh:mm:ss> <message>`` line per line of a message
(:func:`append_log`): the stages, warnings, tracebacks of failures, and — written by
:mod:`faulthandler` into the same file (:func:`open_crash_log`) — the traceback of a process
that died of a fatal signal.

The runner logs :func:`start_message` each time a run starts or resumes; a reader finds the
fatal error of the last start (:func:`crash_report`) by going back to the last such line
(:func:`is_start_line`). Both are defined here, so the line written and the line looked for
cannot drift apart.
"""
from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

from .files import naming, open_nofollow

STAMP = "%Y-%m-%d %H:%M:%S"  # the time that leads every line (time.strftime)
_STAMP_PATTERN = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"  # what STAMP writes
_STARTS = ("starting", "resuming")  # the first word of start_message: a new run / a resumed run
_START_LINE = re.compile(rf"{_STAMP_PATTERN} ({'|'.join(_STARTS)}) on ")
FATAL = "Fatal Python error:"  # how faulthandler's report of a fatal signal begins


def stamped(message: str) -> str:
    """``message`` as log lines: each of its lines led by the time, each ending in a newline."""
    stamp = time.strftime(STAMP)
    return "".join(f"{stamp} {line}\n" for line in message.rstrip("\n").split("\n"))


def append_log(path: Path, message: str) -> None:
    """Append ``message`` (:func:`stamped`) to the log ``path``; an OSError names it."""
    text = stamped(message)
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        with os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(text)
    except OSError as exc:
        raise naming(exc, path) from None


def open_crash_log(path: Path):
    """The log ``path`` opened for appending, for :mod:`faulthandler`: a process that dies of a fatal
    signal (``os.abort()``, a crash in native code) leaves its traceback there."""
    return os.fdopen(open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a")


def read_log_tail(path: Path, lines: int = 20) -> list[str]:
    """The last ``lines`` lines of the log ``path`` ([] when there is none)."""
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - 64 * 1024 * max(1, lines // 20)))  # the tail of a long log, not all of it
        return fh.read().decode("utf-8", errors="replace").splitlines()[-lines:]


def start_message(resumed: bool) -> str:
    """What the runner logs when a run starts ('starting on <host>') or resumes ('resuming on <host>')."""
    return f"{_STARTS[1] if resumed else _STARTS[0]} on {socket.gethostname()}"


def is_start_line(line: str) -> bool:
    """Is ``line`` of log.txt a :func:`start_message` as :func:`append_log` wrote it?"""
    return _START_LINE.match(line) is not None


def crash_report(tail: list[str]) -> str | None:
    """The fatal error :mod:`faulthandler` wrote into the log lines ``tail`` since the run last
    started ('Fatal Python error: Aborted'), if any."""
    for line in reversed(tail):
        if line.startswith(FATAL):
            return line.strip()
        if is_start_line(line):
            return None
    return None
