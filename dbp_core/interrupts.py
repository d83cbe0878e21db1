"""SIGINT and SIGTERM, the one home of their handling (docs/design.md, "Stages and the runner").
Handlers belong to the main thread: off it, each of these changes nothing.

* :func:`deferred` — over code where a KeyboardInterrupt could be lost or do harm: imports
  (Python prints and drops an exception raised inside an import lock's callback, and a Rust
  extension panics if one lands in its module initialisation) and config validation
  (pydantic's validators). A signal is only recorded; when the block ends the previous handlers
  come back and a recorded signal is sent again to this process, so it is handled at that safe
  point as it would have been (a KeyboardInterrupt, or the runner's handler). Deferring rather
  than blocking the signal also covers a signal delivered to another thread of the process.
* :func:`allowed` — inside :func:`deferred`, a block where the signals act as they would outside
  it: a plugin's own module is imported there, so user code that may loop for ever stays
  stoppable.
* :func:`ignored` — the signals ignored for the block: the CLI prints the end of a run whose
  state is recorded, and a late signal must not cut that short.
* :class:`Gate` — the runner's handler while a run runs: the first signal raises
  :class:`Interrupted` where the run is, later ones are ignored, and inside :meth:`Gate.held` a
  signal waits for the block's end (``results.json`` and the state ``done`` are written together
  or not at all).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT / SIGTERM arrived during a run; the run stops at once and is left resumable (a
    BaseException, so a stage's `except Exception` cannot swallow it)."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install(handler: Callable | int) -> dict:
    """Set ``handler`` for SIGINT and SIGTERM; returns the handlers it replaced ({} off the main thread)."""
    if not _on_main_thread():
        return {}
    return {s: signal.signal(s, handler) for s in SIGNALS}


def restore(previous: dict) -> None:
    """Put back the handlers :func:`install` returned."""
    for s, handler in previous.items():
        signal.signal(s, handler)


_deferring: list[tuple[dict, list[int]]] = []  # (handlers replaced, signals recorded) per open deferred()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Record SIGINT and SIGTERM during the block; the first is delivered when it ends."""
    if not _on_main_thread():
        yield
        return
    got: list[int] = []
    before = install(lambda signum, frame: got.append(signum))
    _deferring.append((before, got))
    try:
        yield
    finally:
        _deferring.pop()
        restore(before)
        if got:
            signal.raise_signal(got[0])


@contextlib.contextmanager
def allowed() -> Iterator[None]:
    """Inside :func:`deferred`, a block where SIGINT and SIGTERM act as they would outside it: user
    code that may run for ever (a plugin module that loops while it is imported) must stay
    stoppable. A signal recorded before the block is delivered as it starts. Outside
    :func:`deferred`, or off the main thread, it changes nothing."""
    if not _on_main_thread() or not _deferring:
        yield
        return
    outermost = _deferring[0][0]
    deferring = {s: signal.getsignal(s) for s in SIGNALS}
    pending = [signum for _, got in _deferring for signum in got]
    for _, got in _deferring:
        got.clear()
    try:
        restore(outermost)
        if pending:
            signal.raise_signal(pending[0])
        yield
    finally:
        restore(deferring)


@contextlib.contextmanager
def ignored() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM for the block, then restore the handlers."""
    before = install(signal.SIG_IGN)
    try:
        yield
    finally:
        restore(before)


class Gate:
    """SIGINT and SIGTERM during a run. The first raises :class:`Interrupted` where the run is;
    later ones are ignored (the run is already stopping: a second SIGTERM 1 ms after the first
    must not interrupt the recording of the first). Inside :meth:`held` a signal waits until the
    block ends, so ``results.json`` and the state ``done`` are written together or not at all."""

    def __init__(self):
        self.raised = False
        self.pending: int | None = None
        self.depth = 0

    def handler(self, signum, frame):  # noqa: ARG002
        if self.raised:
            return
        if self.depth:
            self.pending = self.pending or signum
            return
        self.raised = True
        raise Interrupted(signum)

    def install(self) -> dict:
        """Make this gate the handler; returns the handlers replaced, for :func:`restore` (none
        off the main thread, e.g. a console worker)."""
        return install(self.handler)

    @contextlib.contextmanager
    def held(self, deliver: bool = True):
        """Hold signals for the block; afterwards (unless the block raised) deliver one that came,
        or with ``deliver=False`` drop it (the run has finished: nothing is left to interrupt)."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth and self.pending is not None and not self.raised and deliver:
            signum, self.pending = self.pending, None
            self.raised = True
            raise Interrupted(signum)
