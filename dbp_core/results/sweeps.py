"""A sweep as readers see it (docs/design.md, "The run folder"): :func:`read_sweep` — a
:class:`SweepView` of its manifest and of each point's run, checked against the point — its
accuracy-vs-value curves, what each point measures (:meth:`SweepView.point_rows`), and its CSV rows
(:func:`sweep_export_rows`); :func:`list_sweeps`."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..stages.registry import ORIGINAL, SINGLE
from ..store import RunFileError, RunStore, Sweep, SweepPoint, toml_value
from .export import cell, export_rows
from .rows import finite, headline_text
from .run_view import RunView, read_run
from .settings import toml_value_or_dash

# a grid key that sets a field of the N-th [[attacks]] entry: ``attacks.N.<field>`` (the --set /
# --grid spelling) or ``attacks[N].<field>`` (the spelling of config error paths)
_ATTACK_KEY = re.compile(r"attacks(?:\.(\d+)|\[(\d+)\])(?:\.|$)")


def swept_attack_index(key: str) -> int | None:
    """N when the grid key ``key`` sets a field of the N-th ``[[attacks]]`` entry, else None."""
    m = _ATTACK_KEY.match(str(key))
    return int(m.group(1) or m.group(2)) if m else None


def _model_rows(view: RunView, protocol: str) -> list[dict]:
    """The ``protocol`` accuracy rows of the configured model (not an ADDT variant) of ``view``."""
    return [r for r in view.rows if r.get("protocol") == protocol and r.get("model") in (None, ORIGINAL)]


@dataclass
class SweepPointView:
    """One point of a sweep: its values, its run (None before it was started, or when the run it
    names is not this point's: then ``problem`` says why, and its state is 'damaged')."""
    point: SweepPoint
    view: RunView | None
    problem: str | None = None

    @property
    def state(self) -> str:
        if self.problem:
            return "damaged"
        return self.view.state if self.view is not None else "pending"

    def attack_name(self, index: int) -> str | None:
        """The name of the ``[[attacks]]`` entry ``index`` in this point's frozen config (the name
        its accuracy rows carry); None without a run or without that entry."""
        config = self.view.config if self.view is not None else None
        entries = (config or {}).get("attacks")
        if not isinstance(entries, list) or not 0 <= index < len(entries) or not isinstance(entries[index], dict):
            return None
        name = entries[index].get("name")
        return name if isinstance(name, str) else None


@dataclass
class SweepView:
    """What a sweep folder says: the manifest and a view of each point's run. ``problem`` names
    what is wrong with a damaged manifest (then there are no points)."""
    path: Path
    manifest: dict
    points: list[SweepPointView]
    problem: str | None = None

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def experiment(self) -> str:
        return str(self.manifest.get("experiment") or "?")

    @property
    def keys(self) -> list[str]:
        return [key for key, _ in self.grid]

    @property
    def grid(self) -> list[tuple[str, list]]:
        """The grid, [(key, values)], as ``dbp sweep --grid`` gave it."""
        return [(str(g.get("key")), list(g.get("values") or [])) for g in self.manifest.get("grid") or []
                if isinstance(g, dict)]

    @property
    def grid_text(self) -> list[str]:
        """One 'key = v1, v2' per grid key (values as TOML literals)."""
        return [f"{key} = " + ", ".join(toml_value_or_dash(v) for v in values) for key, values in self.grid]

    @property
    def source(self) -> str | None:
        return self.manifest.get("source")

    @property
    def created(self) -> float | None:
        c = self.manifest.get("created")
        return c if finite(c) else None

    @property
    def problems(self) -> list[str]:
        """What is wrong with the sweep's files, in words: its manifest, then each point whose run is
        not its own (:func:`read_sweep`)."""
        return ([self.problem] if self.problem else []) + [pv.problem for pv in self.points if pv.problem]

    @property
    def state(self) -> str:
        """'done' when every point is, 'running' while one runs, else the first unfinished point's
        state ('pending', 'interrupted', 'failed'), or 'damaged'."""
        if self.problem:
            return "damaged"
        states = [p.state for p in self.points]
        if states and all(s == "done" for s in states):
            return "done"
        if "running" in states:
            return "running"
        return next((s for s in states if s != "done"), "pending")

    @property
    def progress_text(self) -> str:
        return f"{sum(p.state == 'done' for p in self.points)}/{len(self.points)} points"

    @property
    def swept_attacks(self) -> list[int] | None:
        """The ``[[attacks]]`` entries the sweep varies (their indices, in grid order) when every
        grid key sets a field of one (``attacks.N.<field>``); None when a key varies something
        every attack sees (``purifier.t_star``): then the sweep measures every attack."""
        indices = [swept_attack_index(k) for k in self.keys]
        if not indices or None in indices:
            return None
        return list(dict.fromkeys(indices))

    @property
    def measured_text(self) -> str:
        """Whose accuracy :meth:`point_rows` gives, in words: 'the swept attack (attacks.0)',
        'the swept attacks (attacks.0, attacks.1)' or 'every attack'."""
        slots = self.swept_attacks
        if slots is None:
            return "every attack"
        return (f"the swept attack{'s' if len(slots) > 1 else ''} ("
                + ", ".join(f"attacks.{i}" for i in slots) + ")")

    def measured_attacks(self, pv: SweepPointView) -> list[str] | None:
        """The names of the attacks the sweep varies at point ``pv`` (attack N of the point's own
        frozen config for each swept ``attacks.N``: a swept ``name`` or ``kind`` renames it);
        None when the sweep measures every attack."""
        slots = self.swept_attacks
        if slots is None:
            return None
        return [n for n in (pv.attack_name(i) for i in slots) if n is not None]

    def point_rows(self, pv: SweepPointView, protocol: str = SINGLE) -> list[dict]:
        """The accuracy rows (``protocol``, the configured model) that the sweep measures at point
        ``pv``: the rows of :meth:`measured_attacks`, in grid order, or every attack's row when the
        grid varies something else; [] while the point has no results."""
        if pv.view is None:
            return []
        rows = _model_rows(pv.view, protocol)
        names = self.measured_attacks(pv)
        if names is None:
            return rows
        return [r for name in names for r in rows if r.get("attack") == name]

    def point_text(self, pv: SweepPointView, protocol: str = SINGLE) -> str:
        """:meth:`point_rows` as 'single/pgd-eot-linf 37.5% [13.7%, 69.4%]' (``; ``-separated),
        '-' while the point has none."""
        return "; ".join(headline_text(r) for r in self.point_rows(pv, protocol)) or "-"

    def curves(self, key: str | None = None, protocol: str = SINGLE) -> dict[str, list[dict]]:
        """Accuracy against the value of ``key`` (default: the first grid key): per line, the points
        ``{"x", "accuracy", "ci_low", "ci_high", "n", "run", "attack"}`` in grid order. A line is an attack
        (its ``protocol`` rows of the configured model), suffixed with the other grid keys' values
        when the grid has several keys. Points without results are left out."""
        keys = self.keys
        key = key or (keys[0] if keys else None)
        lines: dict[str, list[dict]] = {}
        for p in self.points:
            if p.view is None or key not in p.point.values:
                continue
            others = ", ".join(f"{k}={toml_value(v)}" for k, v in p.point.values.items() if k != key)
            for row in _model_rows(p.view, protocol):
                label = str(row.get("attack") or row.get("stage")) + (f" ({others})" if others else "")
                lines.setdefault(label, []).append(
                    {"x": p.point.values[key], "accuracy": row["accuracy"], "ci_low": row["ci_low"],
                     "ci_high": row["ci_high"], "n": row["n"], "run": p.view.id, "attack": row.get("attack")})
        return lines


def read_sweep(path: str | os.PathLike) -> SweepView:
    """A :class:`SweepView` of the sweep folder ``path`` (its point runs are in the same store,
    the folder's parent); never raises. A damaged manifest or points.jsonl is its ``problem`` (then
    there are no points); a point whose run does not have the point's values in its frozen config
    (:func:`point_run_mismatch`) has no view and a ``problem`` naming both."""
    sweep = Sweep(path)
    try:
        manifest = sweep.read()
        points = sweep.points(manifest)
    except (RunFileError, OSError) as exc:
        return SweepView(sweep.path, {}, [], problem=str(exc))
    root = sweep.path.parent
    base_dir = sweep.base_dir(manifest)
    owners: dict[str, list[SweepPoint]] = {}
    for p in points:
        if p.run:
            owners.setdefault(p.run, []).append(p)
    views = []
    for p in points:
        run_path = root / p.run if p.run else None
        view = read_run(run_path) if run_path is not None and run_path.is_dir() else None
        problem = point_run_mismatch(p, view, base_dir) if view is not None else None
        if problem:
            others = [o for o in owners[p.run] if o.index != p.index]
            problem = (f"point {p.index + 1} ({p.label}): its run {p.run} is not this point's: {problem}"
                       + "".join(f"; it is the run of point {o.index + 1} ({o.label})" for o in others)
                       + f" (recorded in {sweep.points_path if sweep.points_path.exists() else sweep.manifest_path})")
            view = None
        views.append(SweepPointView(p, view, problem))
    return SweepView(sweep.path, manifest, views)


def point_run_mismatch(point: SweepPoint, view: RunView, base_dir: Path) -> str | None:
    """None when the frozen config of ``view`` has each of ``point``'s values (a table: each of its
    keys; a relative path: resolved against ``base_dir``, as the run froze it), else the first value
    it differs in, in words. A key the frozen config does not spell (an alias) is not held against it."""
    config = view.config
    if not isinstance(config, dict):
        return None  # unreadable: the run's own problems say so
    for key, want in point.values.items():
        node: Any = config
        for part in key.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = _MISSING
                break
        if node is not _MISSING and not _holds(node, want, base_dir):
            return f"its config.toml has {key} = {toml_value_or_dash(node)}, not {toml_value_or_dash(want)}"
    return None


_MISSING = object()


def _holds(frozen: Any, want: Any, base_dir: Path) -> bool:
    """Does the frozen config value ``frozen`` hold the grid value ``want``?"""
    from ..config import value_key
    if isinstance(want, dict):
        return isinstance(frozen, dict) and all(k in frozen and _holds(frozen[k], v, base_dir) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(frozen, list) and len(frozen) == len(want) and all(
            _holds(f, w, base_dir) for f, w in zip(frozen, want))
    if isinstance(want, str) and isinstance(frozen, str) and want != frozen and os.path.isabs(frozen):
        try:  # a path of the grid, frozen absolute (config.dumps_config)
            return str((base_dir / Path(want).expanduser()).resolve()) == frozen
        except (OSError, ValueError, RuntimeError):
            return False
    return value_key(frozen) == value_key(want)


def list_sweeps(root: str | os.PathLike) -> list[SweepView]:
    """Every sweep of the store at ``root``, oldest first."""
    return [read_sweep(s.path) for s in RunStore(root).list_sweeps()]


@dataclass
class SweepExport:
    """The CSV of a sweep (``dbp export SWEEP``): ``rows`` with the ``columns`` that lead them,
    the points ``skipped`` (no results yet) and the ``problems`` of damaged point runs, in words."""
    rows: list[dict]
    columns: list[str]
    skipped: list[str]
    problems: list[str]


def sweep_export_rows(view: SweepView) -> SweepExport:
    """The :func:`export_rows` of every point run of ``view`` that has results, each led by
    ``point`` (1-based, as ``dbp sweep`` counts them), the swept values (one column per grid
    key, named as the key: the x of a spreadsheet's plot) and ``swept_attack`` (whether the row
    is of an attack the sweep varies, :meth:`SweepView.measured_attacks`)."""
    keys = view.keys
    rows, skipped, problems = [], [], []
    for pv in view.points:
        where = f"point {pv.point.index + 1}/{len(view.points)} ({pv.point.label})"
        if pv.problem:
            problems.append(pv.problem)
            continue
        damaged = next((p for p in pv.view.problems if "results.json" in p), None) if pv.view else None
        if damaged:
            problems.append(f"{where}: {damaged}")
            continue
        if pv.view is None or pv.view.results is None:
            skipped.append(f"{where}: no results yet (state: {pv.state})")
            continue
        names = view.measured_attacks(pv)
        lead = {"point": pv.point.index + 1, **{k: cell(pv.point.values.get(k)) for k in keys}}
        for row in export_rows([pv.view]):
            attack = row.get("attack")
            swept = attack is not None and (names is None or attack in names)
            rows.append({**lead, "swept_attack": swept, **row})
    return SweepExport(rows, ["point", *keys, "swept_attack"], skipped, problems)
