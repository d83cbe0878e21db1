"""Sweeps: groups of runs over a grid of values (``dbp sweep``; docs/design.md, "The run folder").

``<root>/sweep-<yyyymmdd>-<hhmmss>-<experiment>-<token>/`` — a sweep folder (:class:`Sweep`)
  ``sweep.json``     the manifest, written once (:meth:`Sweep.create`): source file, the folder its
                     relative paths resolve against, the grid; point i is the i-th element of the
                     grid's product, first key slowest
  ``points.jsonl``   append-only, one line ``{"index", "values", "run", "time"}`` per point run created
                     (the last line of a point names its run; :meth:`Sweep.set_run`)
  ``config.toml``    the base config, frozen at creation; point i runs it with its overrides
                     (:attr:`SweepPoint.overrides`, values as TOML literals: :func:`toml_value`)
  ``report/``        ``dbp report <sweep>``: the accuracy-vs-value curve
  ``.lock``          flock'ed by the one process running the sweep (:mod:`.lock`)
The point runs are ordinary run folders of the store (``status.json`` names the ``group``), run
one after another with the same seed, so every point attacks the same examples. Both files are
checked field by field on read: a field that is not what ``dbp sweep`` writes is a
:class:`RunFileError` naming it. A schema-1 folder (the points and runs in sweep.json) is read
too; its later runs go to points.jsonl.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .files import (RunFileError, atomic_write, atomic_write_json, json_default, naming, open_nofollow, parse_json,
                    read_json_object, read_store_file)
from .lock import FolderLock
from .status import is_num

SWEEP_FILE = "sweep.json"
POINTS_FILE = "points.jsonl"
SWEEP_SCHEMA = "dbp-lab.sweep/2"
SWEEP_V1 = "dbp-lab.sweep/1"  # the points and their runs inside sweep.json, rewritten per point: still read


@dataclass(frozen=True)
class SweepPoint:
    """One grid point of a sweep: its index, its values ({dotted key: value}) and its run (None
    until the point has been started)."""
    index: int
    values: dict
    run: str | None

    @property
    def overrides(self) -> list[str]:
        """The ``--set`` overrides of this point (values as TOML literals)."""
        return [f"{k}={toml_value(v)}" for k, v in self.values.items()]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={toml_value(v)}" for k, v in self.values.items())


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_string(s: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped, the rest as it is."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}.get(ch, f"\\u{ord(ch):04x}"))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(v: Any) -> str:
    """A grid value as a TOML literal (what ``--set`` parses back to the same value): a number,
    string, boolean, array or inline table ``{num_channels = 64}``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k if _BARE_KEY.fullmatch(str(k)) else _toml_string(str(k))} = {toml_value(x)}"
                               for k, x in v.items()) + "}"
    raise TypeError(f"a sweep value must be a number, string, boolean, array or table, got {type(v).__name__}")


def _json_kind(v: Any) -> str:
    """What a JSON value is, in words: 'a JSON string', 'null', ..."""
    if v is None:
        return "null"
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}
    return f"a JSON {names.get(type(v), type(v).__name__)}"


def run_name_problem(run: Any) -> str | None:
    """None when ``run`` can name a run folder of the store (one plain folder name), else why not."""
    if not isinstance(run, str):
        return f"is {_json_kind(run)}; expected a run id"
    if not run or run.startswith(".") or any(c in run for c in "/\\\0") or len(run) > 255:
        return f"is {run[:80]!r}; expected a run id (a folder name of the run store)"
    return None


class Sweep:
    """A sweep folder (see the module docstring). :meth:`read` gives its manifest, checked field by
    field (:class:`RunFileError` naming the field); :meth:`points` its points with their runs;
    :meth:`set_run` appends a point's run to ``points.jsonl``; :meth:`lock` makes one process at a
    time run its points. A schema-1 folder (the points and runs in sweep.json) is read too; its
    later runs go to points.jsonl."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = FolderLock(self.path / ".lock", f"sweep {self.id} is already being run")

    @classmethod
    def create(cls, path: Path, experiment: str, config_text: str, grid: list[tuple[str, list]], *,
               source: str | None = None, overrides: list[str] = (), base_dir: str | None = None) -> "Sweep":
        """Write the sweep into the new, empty folder ``path``: the frozen base config and its
        manifest — the grid ((key, values) pairs; the points are their cartesian product, first key
        slowest) and ``base_dir``, the folder relative paths of the grid resolve against (the
        experiment file's, as for ``dbp run``). The points' runs are recorded as they are created
        (:meth:`set_run`)."""
        atomic_write(path / "config.toml", config_text)
        manifest = {"schema": SWEEP_SCHEMA, "id": path.name, "experiment": experiment, "source": source,
                    "base_dir": base_dir, "created": time.time(), "overrides": list(overrides),
                    "grid": [{"key": k, "values": list(v)} for k, v in grid]}
        atomic_write_json(path / SWEEP_FILE, manifest)
        return cls(path)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / SWEEP_FILE

    @property
    def points_path(self) -> Path:
        return self.path / POINTS_FILE

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    def read(self) -> dict:
        """The manifest, checked: RunFileError naming the field if it is missing or damaged."""
        data = read_json_object(self.manifest_path)
        if data is None:
            raise RunFileError(self.manifest_path, "is missing; expected the manifest dbp sweep writes")
        _check_manifest(data, self.manifest_path)
        return data

    def base_dir(self, manifest: dict | None = None) -> Path:
        """Where the grid's relative paths resolve: the experiment file's folder (a schema-1 sweep:
        the sweep folder, as its points were run)."""
        manifest = manifest if manifest is not None else self.read()
        return Path(manifest.get("base_dir") or self.path)

    def points(self, manifest: dict | None = None) -> list[SweepPoint]:
        """Every point (the grid's product, in order) with its run: the last line of points.jsonl
        that names it, else (schema 1) the run in sweep.json."""
        manifest = manifest if manifest is not None else self.read()
        values = _grid_points(manifest)
        runs = {i: p.get("run") for i, p in enumerate(manifest["points"])} if manifest["schema"] == SWEEP_V1 else {}
        runs.update(self._point_runs(values))
        return [SweepPoint(i, v, runs.get(i)) for i, v in enumerate(values)]

    def keys(self) -> list[str]:
        return [g["key"] for g in self.read()["grid"]]

    def _point_runs(self, values: list[dict]) -> dict[int, str]:
        """{index: run} from points.jsonl, each line checked (RunFileError naming the line). A last
        line without its newline was cut short by a crash while it was written: not a record."""
        path = self.points_path
        data = read_store_file(path, "the points' runs, one JSON object a line, as dbp sweep appends them")
        if data is None:
            return {}
        lines = data.split(b"\n")[:-1]  # the part after the last newline is a torn line (or nothing)
        from ..config import value_key
        runs: dict[int, str] = {}
        for n, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            where = f"line {n}"
            try:
                obj = parse_json(raw, path, "one JSON object a line, {\"index\", \"values\", \"run\"}")
            except RunFileError as exc:
                raise RunFileError(path, f"{where} {exc.problem}") from None
            if not isinstance(obj, dict):
                raise RunFileError(path, f"{where} is {_json_kind(obj)}; expected an object "
                                   "{\"index\", \"values\", \"run\"} as dbp sweep appends them")
            index = obj.get("index")
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(values):
                raise RunFileError(path, f"{where}: index is {index!r}; expected a point index, an integer from 0 "
                                   f"to {len(values) - 1}")
            problem = run_name_problem(obj.get("run"))
            if problem:
                raise RunFileError(path, f"{where}: run {problem}")
            if "values" in obj and (not isinstance(obj["values"], dict) or value_key(obj["values"]) !=
                                    value_key(values[index])):
                raise RunFileError(path, f"{where}: values {json.dumps(obj['values'])[:120]} are not those of point "
                                   f"{index + 1} ({json.dumps(values[index])[:120]}); expected the point's values")
            runs[index] = obj["run"]
        return runs

    def set_run(self, index: int, run_id: str) -> None:
        """Record that point ``index`` runs as ``run_id``: one line appended to points.jsonl (fsync'ed;
        a torn line a crash left at the end is cut off first)."""
        points = self.points()
        if not 0 <= index < len(points):
            raise IndexError(f"sweep {self.id} has no point {index} (it has {len(points)})")
        line = json.dumps({"index": index, "values": points[index].values, "run": run_id, "time": time.time()},
                          default=json_default) + "\n"
        fd = open_nofollow(self.points_path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.ftruncate(fd, os.pread(fd, size, 0).rfind(b"\n") + 1)
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        except OSError as exc:
            raise naming(exc, self.points_path) from None
        finally:
            os.close(fd)

    def lock(self) -> bool:
        """Take the sweep's lock (``FolderLock.take``): :class:`RunLocked` when another process runs it."""
        return self._lock.take()

    def unlock(self) -> None:
        self._lock.release()


def _check_manifest(m: dict, path: Path) -> None:
    """RunFileError naming the first field of the sweep manifest ``m`` that is not what dbp sweep
    writes (the point list too, for schema 1)."""
    from ..config import grid_value_problem, value_key

    def bad(field: str, problem: str) -> RunFileError:
        return RunFileError(path, f"{field} {problem}; expected the manifest dbp sweep writes")
    if m.get("schema") not in (SWEEP_SCHEMA, SWEEP_V1):
        raise bad("schema", f"is {json.dumps(m.get('schema'))[:60]}, not {SWEEP_SCHEMA} (or {SWEEP_V1})")
    for field in ("experiment", "source", "base_dir", "id"):
        if m.get(field) is not None and not isinstance(m[field], str):
            raise bad(field, f"is {_json_kind(m[field])}; expected a string")
    if m.get("created") is not None and (not is_num(m["created"])):
        raise bad("created", f"is {_json_kind(m['created'])}; expected a time in seconds")
    overrides = m.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise bad("overrides", "is not a list of strings (--set key=value)")
    grid = m.get("grid")
    if not isinstance(grid, list) or not grid:
        raise bad("grid", f"is {_json_kind(grid)}{' (empty)' if grid == [] else ''}; expected a list of "
                  "{\"key\", \"values\"}")
    keys = []
    for i, g in enumerate(grid):
        if not isinstance(g, dict):
            raise bad(f"grid[{i}]", f"is {_json_kind(g)}; expected an object {{\"key\", \"values\"}}")
        key = g.get("key")
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise bad(f"grid[{i}].key", f"is {json.dumps(key)[:60]}; expected a dotted key (attacks.0.eps)")
        if key in keys:
            raise bad(f"grid[{i}].key", f"'{key}' is swept twice")
        keys.append(key)
        values = g.get("values")
        if not isinstance(values, list) or not values:
            raise bad(f"grid[{i}].values", f"is {_json_kind(values)}; expected a non-empty list of values")
        seen = set()
        for j, v in enumerate(values):
            problem = grid_value_problem(v)
            if problem:
                raise bad(f"grid[{i}].values[{j}]", f"is {problem}; expected a number, string, boolean, array or table")
            if value_key(v) in seen:
                raise bad(f"grid[{i}].values[{j}]", f"{json.dumps(v)[:60]} is listed twice")
            seen.add(value_key(v))
    if m["schema"] == SWEEP_V1:
        _check_v1_points(m, path, bad)


def _grid_points(m: dict) -> list[dict]:
    """The values of each point of a checked manifest: the grid's product, first key slowest."""
    import itertools
    keys = [g["key"] for g in m["grid"]]
    return [dict(zip(keys, combo)) for combo in itertools.product(*[g["values"] for g in m["grid"]])]


def _check_v1_points(m: dict, path: Path, bad: Callable[[str, str], RunFileError]) -> None:
    """A schema-1 manifest's ``points``: one object {index, values, run} per point of the grid's
    product, in order, each with the point's values."""
    from ..config import value_key
    points, expected = m.get("points"), _grid_points(m)
    if not isinstance(points, list):
        raise bad("points", f"is {_json_kind(points)}; expected a list of {{\"index\", \"values\", \"run\"}}")
    if len(points) != len(expected):
        raise bad("points", f"has {len(points)} entries; the grid has {len(expected)} points")
    for i, (p, want) in enumerate(zip(points, expected)):
        if not isinstance(p, dict):
            raise bad(f"points[{i}]", f"is {_json_kind(p)}; expected an object {{\"index\", \"values\", \"run\"}}")
        if p.get("index") != i or isinstance(p.get("index"), bool) or not isinstance(p.get("index"), int):
            raise bad(f"points[{i}].index", f"is {json.dumps(p.get('index'))[:40]}; expected {i} (its position)")
        values = p.get("values")
        if not isinstance(values, dict):
            raise bad(f"points[{i}].values", f"is {_json_kind(values)}; expected an object {{key: value}}")
        if list(values) != list(want) or any(value_key(values[k]) != value_key(want[k]) for k in want):
            raise bad(f"points[{i}].values", f"are {json.dumps(values)[:120]}, not the grid's point {i + 1} "
                      f"({json.dumps(want)[:120]})")
        if p.get("run") is not None:
            problem = run_name_problem(p["run"])
            if problem:
                raise bad(f"points[{i}].run", problem)
