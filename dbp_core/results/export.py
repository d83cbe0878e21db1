"""The CSV rows of ``dbp export`` and the console (one column set: :data:`EXPORT_COLUMNS`, then the
run's settings, ``attack.*`` for the row's attack and ``config.*`` the rest)."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable

from ..store import toml_value
from .run_view import RunView
from .settings import flat_settings

EXPORT_COLUMNS = ("run_id", "experiment", "state", "stage", "model", "protocol", "attack", "kind", "norm", "eps",
                  "n", "correct", "accuracy", "ci_low", "ci_high", "confidence", "path")
# after these: the run's settings (config_columns): ``source`` and ``group``, the row's own
# ``[[attacks]]`` entry as ``attack.<field>``, every other frozen setting as ``config.<key>``


def cell(v: Any) -> Any:
    """A setting as a CSV cell: scalars as they are, lists as TOML literals."""
    if isinstance(v, (list, dict)):
        try:
            return toml_value(v) if isinstance(v, list) else json.dumps(v)
        except TypeError:
            return json.dumps(v, default=str)
    return v


def config_columns(view: RunView, attack: str | None = None) -> dict[str, Any]:
    """The settings columns of an export row of ``view``: ``source``, ``group``, the
    ``[[attacks]]`` entry named ``attack`` as ``attack.<field>``, and every other setting of the
    frozen config as ``config.<dotted key>``."""
    cols: dict[str, Any] = {"source": view.source, "group": view.group}
    config = view.config or {}
    for k, v in flat_settings({k: v for k, v in config.items() if k != "attacks"}).items():
        cols[f"config.{k}"] = cell(v)
    entries = config.get("attacks") if isinstance(config.get("attacks"), list) else []
    entry = next((e for e in entries if isinstance(e, dict) and e.get("name") == attack), None) if attack else None
    for k, v in flat_settings(entry).items():
        cols[f"attack.{k}"] = cell(v)
    return cols


def export_rows(views: Iterable[RunView]) -> list[dict]:
    """One CSV row per accuracy row of each run (a run without results: one row with its
    state), with the run's settings (:func:`config_columns`)."""
    out = []
    for v in views:
        base = {"run_id": v.id, "experiment": v.experiment, "state": v.state, "path": str(v.path.resolve())}
        if not v.rows:
            out.append({**base, **config_columns(v)})
        for row in v.rows:
            out.append({**{k: row.get(k) for k in EXPORT_COLUMNS if k in row}, **base,
                        **config_columns(v, row.get("attack"))})
    return out


def export_fieldnames(rows: list[dict], lead: Iterable[str] = ()) -> list[str]:
    """``lead`` (a sweep's point and swept values), :data:`EXPORT_COLUMNS`, then ``source``,
    ``group``, the ``attack.*`` and ``config.*`` columns present in ``rows`` (in first-seen order)."""
    lead = list(lead)
    extra: list[str] = []
    seen = set(EXPORT_COLUMNS) | set(lead)
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                extra.append(k)
    head = [k for k in ("source", "group") if k in extra]
    attack = [k for k in extra if k.startswith("attack.")]
    rest = [k for k in extra if k not in head and k not in attack]
    return lead + list(EXPORT_COLUMNS) + head + attack + rest


def write_csv(rows: list[dict], target: str | os.PathLike | None = None, stream=None,
              lead: Iterable[str] = ()) -> Path | None:
    """Write ``rows`` with :func:`export_fieldnames` (``lead`` first) to ``target`` (or ``stream``)."""
    def write(fh):
        w = csv.DictWriter(fh, fieldnames=export_fieldnames(rows, lead), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    if target is None:
        write(stream)
        return None
    with open(target, "w", newline="", encoding="utf-8") as fh:
        write(fh)
    return Path(target)
