"""The sweep view's state: one sweep followed live, its robust accuracy against the swept value
(docs/console.md, "Sweeps"), read through :func:`dbp_core.results.read_sweep` — the curve
``dbp report <sweep>`` draws.

No Textual, no torch: safe in a worker thread.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from dbp_core.results import SweepView, read_sweep
from dbp_core.store import toml_value
from dbp_core.stages.registry import SINGLE

from .format import fmt_pct

__all__ = ["SweepSeries", "SweepSnapshot", "sweep_snapshot"]


@dataclass
class SweepSeries:
    """One line of the sweep plot: an attack's accuracy (%) and its 95% interval per point."""
    label: str
    xs: list[float]
    ys: list[float]
    lo: list[float]
    hi: list[float]


@dataclass
class SweepSnapshot:
    """A sweep at one poll: its view, the swept key, whether its values are numbers (else they are
    placed at 0, 1, 2 … and named by ``ticks``), the series, and the table: ``columns`` and one
    line per point (values, state, each attack's accuracy with its interval, run id)."""
    view: SweepView
    key: str
    numeric: bool
    ticks: list[str]
    series: list[SweepSeries]
    columns: list[str]
    table: list[list[str]]

    @property
    def points_per_line(self) -> dict[str, int]:
        return {s.label: len(s.xs) for s in self.series}


def sweep_snapshot(path: str | os.PathLike, key: str | None = None, protocol: str = SINGLE) -> SweepSnapshot:
    view = read_sweep(Path(path))
    key = key or (view.keys[0] if view.keys else "value")
    lines = view.curves(key, protocol)
    values = [p.point.values.get(key) for p in view.points if key in p.point.values]
    numeric = bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    ticks = list(dict.fromkeys(json.dumps(v) for v in values))
    series = []
    for label, pts in sorted(lines.items()):
        xs = [float(pt["x"]) if numeric else float(ticks.index(json.dumps(pt["x"]))) for pt in pts]
        series.append(SweepSeries(label, xs, [100 * pt["accuracy"] for pt in pts],
                                  [100 * pt["ci_low"] for pt in pts], [100 * pt["ci_high"] for pt in pts]))
    attacks = sorted(lines)
    table = []
    for p in view.points:
        cells = [p.point.label, p.state]
        for a in attacks:
            pt = next((x for x in lines[a] if p.view is not None and x["run"] == p.view.id), None)
            cells.append("-" if pt is None else f"{fmt_pct(pt['accuracy'])} [{fmt_pct(pt['ci_low'])}, "
                         f"{fmt_pct(pt['ci_high'])}]")
        cells.append(p.view.id if p.view is not None else "-")
        table.append(cells)
    return SweepSnapshot(view, key, numeric, [_tick(t) for t in ticks], series,
                         ["point", "state", *attacks, "run"], table)


def _tick(t: str) -> str:
    v = json.loads(t)
    return v if isinstance(v, str) else toml_value(v)
