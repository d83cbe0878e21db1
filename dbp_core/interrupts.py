"""SIGINT / SIGTERM deferred over code where a KeyboardInterrupt could be lost or do harm
(docs/design.md, "Stages and the runner"): imports (Python prints and drops an exception raised
inside an import lock's callback, and a Rust extension panics if one lands in its module
initialisation) and config validation (plugins are imported inside pydantic's validators).

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


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # handlers belong to the main thread
        yield
        return
    got: list[int] = []
    before = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        if got:
            signal.raise_signal(got[0])
