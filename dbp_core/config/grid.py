"""``dbp sweep --grid key=v1,v2,...``: the grid's values read as TOML values, deduplicated by
:func:`value_key`, checked (:func:`grid_value_problem`, :data:`UNSWEEPABLE`) and bounded
(:data:`MAX_GRID_POINTS`). Each point of the grid is then a set of ``--set`` overrides
(:mod:`.overrides`). The run store matches a point's run against its values with
:func:`value_key` too."""
from __future__ import annotations

import datetime
import math
import re
from typing import Any

from .errors import ConfigError
from .overrides import MAX_DEPTH, is_utf8, tomllib

# Fields a sweep grid may not set, and why (docs/config.md, "Checkpoints").
UNSWEEPABLE = {"models.trust_pickle": "trusting a pickle is a decision about one file, made in the config or with "
                                      "--set, never one of many points of a grid"}


def _unsweepable(key: str, values: list) -> str | None:
    """Why ``--grid key=values`` may not be swept (it sets a field of UNSWEEPABLE, also through a
    table of its section), or None."""
    for name, why in UNSWEEPABLE.items():
        section, _, leaf = name.rpartition(".")
        if key == name or key.startswith(name + ".") or (
                key == section and any(isinstance(v, dict) and leaf in v for v in values)):
            return f"{name} cannot be swept: {why}"
    return None


MAX_GRID_POINTS = 1000  # points of a sweep unless --max-points lifts it: a typo cannot start thousands of runs


def value_key(v: Any) -> tuple:
    """The identity of a grid value once parsed: equal numbers are one value (``1`` and ``1.0``),
    a table is the same whatever the order of its keys, ``true`` is not ``1``, NaN is NaN. Sweeps
    deduplicate their values by it and match a point's run against its values with it."""
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, (int, float)):
        if isinstance(v, float) and v != v:
            return ("nan",)
        return ("num", int(v) if isinstance(v, float) and v.is_integer() else v)
    if isinstance(v, str):
        return ("str", v)
    if isinstance(v, (list, tuple)):
        return ("list", tuple(value_key(x) for x in v))
    if isinstance(v, dict):
        return ("table", tuple(sorted((str(k), value_key(x)) for k, x in v.items())))
    return ("other", type(v).__name__, repr(v))


def grid_value_problem(v: Any, depth: int = 0) -> str | None:
    """None when ``v`` is a value a sweep can set (what TOML and JSON share: a number, string,
    boolean, array or table, nested at most MAX_DEPTH levels), else what it is instead. TOML's dates
    and times are refused: no experiment field takes one, and sweep.json (JSON) cannot hold them."""
    if depth > MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} levels deep"
    if isinstance(v, (bool, int, float)):
        return None
    if isinstance(v, str):
        return None if is_utf8(v) else f"text {ascii(v)[:40]} that is not valid UTF-8"
    if isinstance(v, (list, tuple)):
        return next((p for p in (grid_value_problem(x, depth + 1) for x in v) if p), None)
    if isinstance(v, dict):
        for key, x in v.items():
            if not isinstance(key, str) or not is_utf8(key):
                return f"a table key {ascii(key)[:40]} that is not UTF-8 text"
            problem = grid_value_problem(x, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(v, (datetime.date, datetime.time)):  # datetime.datetime is a date too
        what = "time" if isinstance(v, datetime.time) else "date" if type(v) is datetime.date else "date and time"
        return f"a TOML {what} ({v.isoformat()}); no experiment field takes one (quote it for a string)"
    return "null" if v is None else f"a {type(v).__name__}"


def split_grid_values(text: str) -> list[str]:
    """``text`` split at its top-level commas: not those inside quotes, [arrays] or {tables}."""
    pieces, depth, quote, escaped, start = [], 0, None, False, 0
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    return [p.strip() for p in pieces]


def _grid_value(piece: str) -> Any:
    """One value of a --grid: a TOML value (``0.1``, ``"s"``, ``[1, 2]``, ``{num_channels = 64}``),
    else a bare word (``ddpm``, ``tests.plugins:tiny``); ValueError saying why it is neither."""
    try:
        doc = tomllib.loads(f"v = {piece}")
    except tomllib.TOMLDecodeError as exc:
        if re.search(r"[\"'\[\]{}=\n]", piece):  # meant as TOML (quotes, brackets, braces): say what is wrong
            raise ValueError(f"not a TOML value ({exc})") from None
        return piece
    except RecursionError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    if list(doc) != ["v"]:  # a newline in the value began another key or table
        raise ValueError("not one TOML value (it holds a line break)")
    return doc["v"]


def parse_grid(items: list[str], file: str | None = None, *, max_points: int | None = MAX_GRID_POINTS,
               notes: list[str] | None = None) -> list[tuple[str, list]]:
    """``key=v1,v2,...`` items (``dbp sweep --grid``) → [(key, [values])]. The values are split at
    their top-level commas and each read as a TOML value (``0.01``, ``"a"``, ``[1,2]``, an inline
    table ``{num_channels=64}``), or else as a word (``ddpm,ddim``); each point is then an override
    ``key=value`` (:func:`apply_overrides`). A value equal to an earlier one once parsed
    (:func:`value_key`: ``1`` and ``1.0``) is swept once, with a line in ``notes``. More than
    ``max_points`` points in all (the product of the grids) is an error saying how to lift it."""
    grid: list[tuple[str, list]] = []

    def bad(key: str, item: str, why: str) -> ConfigError:
        shown = repr(item) if is_utf8(item) else ascii(item)
        return ConfigError(file, [{"path": (key if is_utf8(key) else ascii(key)) or "<grid>", "value": shown,
                                   "type": "grid", "message": f"bad --grid {shown}: {why}"}])
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise bad(key, item, "expected key=value1,value2,... (e.g. attacks.0.eps=0.05,0.1)")
        if not is_utf8(item):
            raise bad(key, item, "not valid UTF-8 (a byte that is not UTF-8 in the command line); expected UTF-8 text")
        if any(not part.strip() for part in key.split(".")):
            raise bad(key, item, "expected a dotted key (e.g. attacks.0.eps) before '='")
        if any(k == key for k, _ in grid):
            raise bad(key, item, "the key is swept twice; expected one --grid per key")
        values, first = [], {}
        for piece in split_grid_values(text):
            if not piece:
                raise bad(key, item, "an empty value; expected key=value1,value2,...")
            try:
                value = _grid_value(piece)
            except ValueError as exc:
                raise bad(key, item, f"the value {piece!r}: {exc}; expected a TOML value (a number, \"text\", "
                          "true/false, [an, array] or {a = table}) or a word") from None
            problem = grid_value_problem(value)
            if problem:
                raise bad(key, item, f"the value {piece!r} is {problem}")
            identity = value_key(value)
            if identity in first:
                if notes is not None:
                    notes.append(f"--grid {key}: {piece} is the same value as {first[identity]}; it is swept once")
                continue
            first[identity] = piece
            values.append(value)
        unsweepable = _unsweepable(key, values)
        if unsweepable:
            raise bad(key, item, unsweepable)
        grid.append((key, values))
    total = math.prod(len(v) for _, v in grid)
    if max_points is not None and total > max_points:
        sizes = " x ".join(str(len(v)) for _, v in grid)
        raise ConfigError(file, [{"path": "<grid>", "value": total, "type": "grid",
                                  "message": f"the grid has {total} points ({sizes}), more than --max-points "
                                  f"{max_points} (default {MAX_GRID_POINTS}: each point is a run); pass "
                                  f"--max-points {total} to run them all"}])
    return grid
