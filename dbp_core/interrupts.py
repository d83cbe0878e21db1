"""SIGINT / SIGTERM deferred over code where a KeyboardInterrupt could be lost or do harm
(docs/design.md, "Stages and the runner"): imports (Python prints and drops an exception raised
inside an import lock's callback, and a Rust extension panics if one lands in its module
initialisation) and config validation (pydantic's validators). A plugin's own module is imported
inside :func:`allowed`: user code that may loop for ever stays stoppable by SIGINT and SIGTERM.

Inside :func:`deferred` a signal is only recorded; when the block ends the previous handlers come
back and a recorded signal is sent again to this process, so it is handled at that safe point as
it would have been (a KeyboardInterrupt, or the runner's handler). Deferring rather than blocking
the signal also covers a signal delivered to another thread of the process.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


_deferring: list[tuple[dict, list[int]]] = []  # (handlers replaced, signals recorded) per open deferred()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # handlers belong to the main thread
        yield
        return
    got: list[int] = []
    before = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in SIGNALS}
    _deferring.append((before, got))
    try:
        yield
    finally:
        _deferring.pop()
        for s, handler in before.items():
            signal.signal(s, handler)
        if got:
            signal.raise_signal(got[0])


@contextlib.contextmanager
def allowed() -> Iterator[None]:
    """Inside :func:`deferred`, a block where SIGINT and SIGTERM act as they would outside it: user
    code that may run for ever (a plugin module that loops while it is imported) must stay
    stoppable. A signal recorded before the block is delivered as it starts. Outside
    :func:`deferred`, or off the main thread, it changes nothing."""
    if threading.current_thread() is not threading.main_thread() or not _deferring:
        yield
        return
    outermost = _deferring[0][0]
    deferring = {s: signal.getsignal(s) for s in SIGNALS}
    pending = [signum for _, got in _deferring for signum in got]
    for _, got in _deferring:
        got.clear()
    try:
        for s, handler in outermost.items():
            signal.signal(s, handler)
        if pending:
            signal.raise_signal(pending[0])
        yield
    finally:
        for s, handler in deferring.items():
            signal.signal(s, handler)
