"""The shape of ``results.json`` and of ``analysis/*.json`` (docs/results.md), as far as readers rely
on it: a file that is off is a :class:`~dbp_core.store.RunFileError` naming the file and the
first field that is off."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..store import RunFileError
from ..store.files import parse_json, read_bytes_nofollow
from ..store.status import is_num

def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _str_or_null(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and all(x is None or is_num(x) for x in v)


_ROW_FIELDS = {"protocol": (_is_str, "a string"), "accuracy": (is_num, "a number"), "ci_low": (is_num, "a number"),
               "ci_high": (is_num, "a number"), "n": (is_int, "an integer")}
_OPTIONAL_ROW_FIELDS = {"stage": (_is_str, "a string"), "attack": (_str_or_null, "a string or null"),
                        "model": (_str_or_null, "a string or null"), "correct": (is_num, "a number"),
                        "kind": (_str_or_null, "a string or null"), "norm": (_str_or_null, "a string or null"),
                        "eps": (lambda v: v is None or is_num(v), "a number or null"),
                        "confidence": (is_num, "a number"), "seeds": (is_int, "an integer"),
                        "per_seed": (_numbers, "a list of numbers"), "mean": (is_num, "a number")}
_COMPARISON_FIELDS = {"a": (_is_str, "a string"), "b": (_is_str, "a string"), "diff": (is_num, "a number"),
                      "ci_low": (is_num, "a number"), "ci_high": (is_num, "a number")}
_OPTIONAL_COMPARISON_FIELDS = {"what": (_is_str, "a string"), "n": (is_int, "an integer")}
_TOP_FIELDS = {"schema": (_is_str, "a string"), "run_id": (_is_str, "a string"), "experiment": (_is_str, "a string"),
               "description": (_is_str, "a string"), "seed": (is_int, "an integer"),
               "created": (is_num, "a number (unix time)"), "finished": (is_num, "a number (unix time)"),
               "data": (lambda v: isinstance(v, dict) and all(_is_str(x) for x in v.values()),
                        "an object of strings {dataset, split}"),
               "environment": (lambda v: isinstance(v, dict), "an object"),
               "stages": (lambda v: isinstance(v, dict), "an object (results by stage)")}
_ENVIRONMENT_FIELDS = {"backend": (_is_str, "a string"), "torch": (_is_str, "a string"),
                       "python": (_is_str, "a string"), "host": (_is_str, "a string"),
                       "world_size": (is_int, "an integer"), "threads": (is_int, "an integer")}


def show(v: Any) -> str:
    try:
        return json.dumps(v)[:60]
    except (TypeError, ValueError, RecursionError):
        return type(v).__name__


def _check_fields(obj: Any, where: str, required: dict, optional: dict, path) -> None:
    if not isinstance(obj, dict):
        raise RunFileError(path, f"field '{where}' holds {show(obj)}; expected an object")
    for name, (ok, expected) in required.items():
        if name not in obj or not ok(obj[name]):
            raise RunFileError(path, f"field '{where}.{name}' holds {show(obj.get(name))}; expected {expected}")
    for name, (ok, expected) in optional.items():
        if name in obj and not ok(obj[name]):
            raise RunFileError(path, f"field '{where}.{name}' holds {show(obj[name])}; expected {expected}")


_AUDIT_FIELDS = {"attack": (lambda v: isinstance(v, str), "a string"),
                 "flags": (lambda v: isinstance(v, list), "a list of flags")}
_FLAG_FIELDS = {"name": (lambda v: isinstance(v, str), "a string"),
                "raised": (lambda v: isinstance(v, bool), "true or false"),
                "summary": (lambda v: isinstance(v, str) and "\n" not in v, "a one-line string"),
                "numbers": (lambda v: isinstance(v, dict), "an object")}


def check_results(obj: dict, path: str | os.PathLike = "results.json") -> dict:
    """``obj`` if it has the shape of ``results.json`` (docs/results.md) as far as readers rely
    on it; else :class:`RunFileError` naming the file and the first field that is off."""
    for name, (ok, expected) in _TOP_FIELDS.items():
        if name in obj and not ok(obj[name]):
            raise RunFileError(path, f"field '{name}' holds {show(obj[name])}; expected {expected}")
    if isinstance(obj.get("environment"), dict):
        _check_fields(obj["environment"], "environment", {}, _ENVIRONMENT_FIELDS, path)
    rows = obj.get("accuracies", [])
    if not isinstance(rows, list):
        raise RunFileError(path, f"field 'accuracies' holds {show(rows)}; expected a list of rows")
    for i, row in enumerate(rows):
        _check_fields(row, f"accuracies[{i}]", _ROW_FIELDS, _OPTIONAL_ROW_FIELDS, path)
    comps = obj.get("comparisons", [])
    if not isinstance(comps, list):
        raise RunFileError(path, f"field 'comparisons' holds {show(comps)}; expected a list")
    for i, c in enumerate(comps):
        _check_fields(c, f"comparisons[{i}]", _COMPARISON_FIELDS, _OPTIONAL_COMPARISON_FIELDS, path)
    h = obj.get("headline")
    if h is not None:
        _check_fields(h, "headline", _ROW_FIELDS, _OPTIONAL_ROW_FIELDS, path)
    if "audit" in obj:
        _check_fields(obj["audit"], "audit", _AUDIT_FIELDS, {}, path)
        for i, f in enumerate(obj["audit"]["flags"]):
            _check_fields(f, f"audit.flags[{i}]", _FLAG_FIELDS, {}, path)
    return obj


# --------------------------------------------------------------------------- analysis/*.json shape

def check_trajectory(obj: Any, path: str | os.PathLike = "analysis/trajectory.json") -> dict:
    """``analysis/trajectory.json`` (docs/results.md): ``{attack, replicas, <noise>: {iteration,
    loss, cos_successive, cos_replicas, grad_rel_var}}``; RunFileError naming the first field that is off."""
    _check_fields(obj, "<top>", {}, {"attack": (_is_str, "a string"), "replicas": (is_int, "an integer")}, path)
    for label, series in obj.items():
        if label in ("attack", "replicas"):
            continue
        if not isinstance(series, dict):
            raise RunFileError(path, f"field '{label}' holds {show(series)}; expected an object of per-iteration lists")
        lengths = set()
        for key, values in series.items():
            ok = (isinstance(values, list) and all(is_int(v) for v in values)) if key == "iteration" else _numbers(values)
            if not ok:
                raise RunFileError(path, f"field '{label}.{key}' holds {show(values)}; expected a list of "
                                   + ("integers" if key == "iteration" else "numbers"))
            lengths.add(len(values))
        if len(lengths) > 1:
            raise RunFileError(path, f"field '{label}' has lists of different lengths {sorted(lengths)}; expected "
                               "one value per iteration in each")
    return obj


def check_landscape(obj: Any, path: str | os.PathLike = "analysis/landscape.json") -> dict:
    """``analysis/landscape.json``: ``{attack, radius, dims, alphas, fixed, fresh}`` with ``fixed`` and
    ``fresh`` one value per alpha (dims 1) or a square grid over the alphas (dims 2)."""
    _check_fields(obj, "<top>", {"alphas": (lambda v: _numbers(v) and len(v) >= 2 and None not in v,
                                            "a list of at least 2 numbers")},
                  {"attack": (_is_str, "a string"), "radius": (is_num, "a number"),
                   "dims": (lambda v: v in (1, 2) and not isinstance(v, bool), "1 or 2")}, path)
    n = len(obj["alphas"])
    for key in ("fixed", "fresh"):
        grid = obj.get(key)
        line = _numbers(grid) and len(grid) == n
        square = isinstance(grid, list) and len(grid) == n and all(_numbers(r) and len(r) == n for r in grid)
        if not (line or square):
            raise RunFileError(path, f"field '{key}' holds {show(grid)}; expected {n} numbers (one per alpha) or "
                               f"a {n} x {n} grid of numbers")
    if isinstance(obj["fixed"][0], list) != isinstance(obj["fresh"][0], list):
        raise RunFileError(path, "fields 'fixed' and 'fresh' differ in shape; expected both a line or both a grid")
    return obj


ANALYSIS_FILES = {"trajectory": check_trajectory, "landscape": check_landscape}


def read_analysis(path: str | os.PathLike) -> tuple[dict[str, dict | None], list[str]]:
    """The analysis files of a run folder, shape checked: ``({"trajectory": obj | None, "landscape":
    obj | None}, problems)``; a damaged file is None and named in ``problems``."""
    out, problems = {}, []
    for name, check in ANALYSIS_FILES.items():
        target = Path(path) / "analysis" / f"{name}.json"
        try:
            data = read_bytes_nofollow(target)
            out[name] = None if data is None else check(parse_json(data, target, "the JSON an analysis wrote"), target)
        except RunFileError as exc:
            out[name] = None
            problems.append(str(exc))
        except OSError as exc:
            out[name] = None
            problems.append(f"{target}: cannot be read ({exc.strerror or exc})")
    return out, problems
