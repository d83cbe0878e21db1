"""``metrics.jsonl``: the events of a run, append-only, one JSON object ``{"time", "kind", "step",
...}`` a line (docs/design.md, "The run folder"; the kinds: docs/results.md).

The writer (``Run.append_metric``) writes each line in one write and flushes it
(:func:`metric_line`), so a reader sees whole lines or a tail it waits on; the reader
(:class:`MetricsReader`) tolerates a dead writer and a half-written last line.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

from .files import json_default, open_nofollow


def metric_event(kind: str, step: int | None, values: dict[str, Any]) -> dict:
    """The event ``Run.append_metric`` appends: ``{"time", "kind", "step", **values}``."""
    return {"time": time.time(), "kind": kind, "step": step, **values}


def metric_line(event: dict) -> str:
    """The event as one line of metrics.jsonl."""
    return json.dumps(event, default=json_default, allow_nan=True) + "\n"


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

