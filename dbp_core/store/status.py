"""``status.json``: what a run is doing (docs/design.md, "The run folder"), a :class:`RunStatus`
read and written here alone — replaced atomically by ``Run.write_status`` on every change.

States: ``queued → running → done | failed | interrupted``; a ``running`` run whose process is
gone reads as ``interrupted`` (``Run.read_status``, :mod:`dbp_core.store.lock`). Besides the
state: pid, host and process start time of the process running it, progress, ETA, a message,
the experiment file it came from (``source``) and the sweep it is a point of (``group``).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable

from .files import RunFileError

STATES = ("queued", "running", "done", "failed", "interrupted")
FINAL_STATES = ("done", "failed", "interrupted")


@dataclass(frozen=True)
class Progress:
    """How far the current stage is: ``done`` of ``total`` units (examples, steps), total unknown: None."""
    stage: str | None = None
    done: float = 0
    total: float | None = None




def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_STATUS_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "experiment": (lambda v: isinstance(v, str), "a string"),
    "pid": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "host": (lambda v: isinstance(v, str), "a string"),
    "proc_start": (lambda v: isinstance(v, str), "a string"),
    "created": (is_num, "a number (unix time)"),
    "started": (is_num, "a number (unix time)"),
    "updated": (is_num, "a number (unix time)"),
    "eta": (is_num, "a number of seconds"),
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
        if not is_num(done):
            raise bad("progress.done", done, "a number")
        if total is not None and not is_num(total):
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

