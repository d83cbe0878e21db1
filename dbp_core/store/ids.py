"""Run and sweep ids: the folder names of the store (docs/design.md, "The run folder").

``<yyyymmdd>-<hhmmss>-<experiment>-<10 hex>`` for a run (:func:`new_run_id`, parsed by
:func:`parse_run_id`, the only parser), ``sweep-<yyyymmdd>-<hhmmss>-<experiment>-<10 hex>`` for
a sweep (:func:`new_sweep_id`). The timestamp leads, so the names sort oldest first.
"""
from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

SWEEP_PREFIX = "sweep-"
ID_TOKEN_BYTES = 5  # 10 hex digits: ~1e-6 chance that 1,000 ids made in one second share one

RUN_ID = re.compile(r"(?P<stamp>\d{8}-\d{6})-(?P<experiment>[A-Za-z0-9][A-Za-z0-9_.-]*)-(?P<token>[0-9a-f]{6,})")


@dataclass(frozen=True)
class RunId:
    """``<yyyymmdd>-<hhmmss>-<experiment>-<token>``, as :func:`new_run_id` makes them."""
    stamp: str
    experiment: str
    token: str


def parse_run_id(run_id: str) -> RunId | None:
    """The parts of a run id, or None for a folder name that is not one."""
    m = RUN_ID.fullmatch(run_id)
    return RunId(m["stamp"], m["experiment"], m["token"]) if m else None


def _id_stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _id_token() -> str:
    return secrets.token_hex(ID_TOKEN_BYTES)


def new_run_id(experiment: str) -> str:
    return f"{_id_stamp()}-{experiment}-{_id_token()}"


def new_sweep_id(experiment: str) -> str:
    return f"{SWEEP_PREFIX}{_id_stamp()}-{experiment}-{_id_token()}"
