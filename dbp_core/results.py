"""The read side of the run store: one reader of run folders for ``dbp runs/show/export``,
``dbp report`` and the console (docs/design.md, "The read side"; docs/results.md).

* :func:`read_run` — a :class:`RunView` of one folder: its typed status, its ``results.json``
  (shape checked), and the problems of damaged files, named — it never raises on a damaged run;
* :func:`list_runs` — the views of every run of a store, oldest first;
* :func:`headline` — the number a run is summed up by;
* :class:`MetricsView` — what ``metrics.jsonl`` says, read incrementally: per-iteration attack
  curves, robust accuracy so far, evaluation accuracies, ADDT curves. An event that a resumed
  run repeats (the batch it was killed in is run again) counts once: the last one wins;
* :func:`export_rows` / :data:`EXPORT_COLUMNS` — the CSV rows of ``dbp export`` and the console,
  with the run's settings as columns (``attack.*`` for the row's attack, ``config.*`` the rest);
* :func:`row_meaning` — what an accuracy row measures, in words (``dbp show``, the console);
* :func:`setting_differences`, :func:`paired_between` — what differs between runs' frozen configs,
  and paired differences between runs on the examples they share (per-example outcomes);
* :func:`read_sweep` / :class:`SweepView`, :func:`list_sweeps` — a sweep's points, the robust
  accuracy of the attack(s) it sweeps per point (:meth:`SweepView.point_rows`), its
  accuracy-vs-value curves, and its CSV rows (:func:`sweep_export_rows`);
* :func:`parse_run_id` — the parts of a run id (format owned by :mod:`dbp_core.runs`).

Nothing here imports torch.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .runs import (MetricsReader, Run, RunFileError, RunId, RunStatus, RunStore, Sweep, SweepPoint, parse_json,
                   parse_run_id, read_bytes_nofollow, read_json_object, toml_value)
from .stages.registry import (CLEAN, FRESH_NOISE, MAJORITY, ORIGINAL, PURIFIED, PURIFIED_AVG, PURIFIED_WORST,
                              REPURIFY_AVG, REPURIFY_WORST, SINGLE, UNDEFENDED, outcome_of)
from .stats import paired_difference, per_example_means

__all__ = ["RESULTS_SCHEMA", "headline", "check_results", "check_trajectory", "check_landscape", "read_analysis",
           "RunView", "read_run", "list_runs", "MetricsView",
           "EXPORT_COLUMNS", "export_rows", "write_csv", "parse_run_id", "RunId", "RunStatus", "fmt_pct",
           "headline_text", "row_meaning", "PROTOCOL_MEANINGS", "flat_settings", "setting_differences",
           "same_examples", "paired_between", "per_example_outcomes", "SweepView", "read_sweep", "list_sweeps",
           "running_runs", "config_columns", "export_fieldnames", "SweepPointView", "swept_attack_index",
           "SweepExport", "sweep_export_rows"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RESULTS_SCHEMA = "dbp-lab.results/1"


def headline(rows: list[dict]) -> dict | None:
    """The number a run is summed up by: robust accuracy under its strongest attack (the lowest
    'single' accuracy of the configured model), else purified, else clean accuracy."""
    for protocol in (SINGLE, PURIFIED, CLEAN):
        found = [r for r in rows if r["protocol"] == protocol and r.get("model") in (None, ORIGINAL)]
        if found:
            row = min(found, key=lambda r: r["accuracy"]) if protocol == SINGLE else found[-1]
            return {k: row[k] for k in ("stage", "protocol", "attack", "accuracy", "ci_low", "ci_high", "n")}
    return None


def fmt_pct(x: Any) -> str:
    return "-" if not _finite(x) else f"{100 * x:.1f}%"


def headline_text(h: dict | None, interval: bool = True) -> str:
    """'single/pgd-eot-linf 45.0% [35.6%, 54.8%]' (or '-')."""
    if not h:
        return "-"
    what = str(h.get("protocol")) + (f"/{h['attack']}" if h.get("attack") else "")
    text = f"{what} {fmt_pct(h.get('accuracy'))}"
    return text + (f" [{fmt_pct(h.get('ci_low'))}, {fmt_pct(h.get('ci_high'))}]" if interval else "")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# what each protocol of an accuracy row measures (docs/results.md, "Accuracy rows")
PROTOCOL_MEANINGS = {
    CLEAN: "classifier alone, no purification, no attack",
    PURIFIED: "purified, no attack",
    PURIFIED_AVG: "purified, no attack, mean over N purifications",
    PURIFIED_WORST: "purified, no attack, worst of N purifications",
    SINGLE: "attacked, one purification",
    FRESH_NOISE: "attacked, judged under noise the attacker did not know",
    REPURIFY_AVG: "attacked, mean over N fresh purifications",
    REPURIFY_WORST: "attacked, worst of N fresh purifications",
    MAJORITY: "attacked, majority vote of N purifications",
    UNDEFENDED: "bare classifier under the same attack, no purifier",
}
_BASELINES = (CLEAN, PURIFIED, PURIFIED_AVG, PURIFIED_WORST)


def row_meaning(row: dict) -> str:
    """What an accuracy row measures, in words: 'attacked, one purification'; an unattacked row
    of the attacks stage says whose paired baseline it is ('purified, no attack (paired
    baseline of pgd-eot-linf)'), so rows that look alike are told apart."""
    protocol = str(row.get("protocol"))
    text = PROTOCOL_MEANINGS.get(protocol, protocol)
    attack = row.get("attack")
    if attack and protocol in _BASELINES:
        text += f" (paired baseline of {attack})"
    model = row.get("model")
    if model not in (None, ORIGINAL):
        text += f"; model {model}"
    return text


# --------------------------------------------------------------------------- results.json shape

def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _str_or_null(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and all(x is None or _is_num(x) for x in v)


_ROW_FIELDS = {"protocol": (_is_str, "a string"), "accuracy": (_is_num, "a number"), "ci_low": (_is_num, "a number"),
               "ci_high": (_is_num, "a number"), "n": (_is_int, "an integer")}
_OPTIONAL_ROW_FIELDS = {"stage": (_is_str, "a string"), "attack": (_str_or_null, "a string or null"),
                        "model": (_str_or_null, "a string or null"), "correct": (_is_num, "a number"),
                        "kind": (_str_or_null, "a string or null"), "norm": (_str_or_null, "a string or null"),
                        "eps": (lambda v: v is None or _is_num(v), "a number or null"),
                        "confidence": (_is_num, "a number"), "seeds": (_is_int, "an integer"),
                        "per_seed": (_numbers, "a list of numbers"), "mean": (_is_num, "a number")}
_COMPARISON_FIELDS = {"a": (_is_str, "a string"), "b": (_is_str, "a string"), "diff": (_is_num, "a number"),
                      "ci_low": (_is_num, "a number"), "ci_high": (_is_num, "a number")}
_OPTIONAL_COMPARISON_FIELDS = {"what": (_is_str, "a string"), "n": (_is_int, "an integer")}
_TOP_FIELDS = {"schema": (_is_str, "a string"), "run_id": (_is_str, "a string"), "experiment": (_is_str, "a string"),
               "description": (_is_str, "a string"), "seed": (_is_int, "an integer"),
               "created": (_is_num, "a number (unix time)"), "finished": (_is_num, "a number (unix time)"),
               "data": (lambda v: isinstance(v, dict) and all(_is_str(x) for x in v.values()),
                        "an object of strings {dataset, split}"),
               "environment": (lambda v: isinstance(v, dict), "an object"),
               "stages": (lambda v: isinstance(v, dict), "an object (results by stage)")}
_ENVIRONMENT_FIELDS = {"backend": (_is_str, "a string"), "torch": (_is_str, "a string"),
                       "python": (_is_str, "a string"), "host": (_is_str, "a string"),
                       "world_size": (_is_int, "an integer"), "threads": (_is_int, "an integer")}


def _show(v: Any) -> str:
    try:
        return json.dumps(v)[:60]
    except (TypeError, ValueError, RecursionError):
        return type(v).__name__


def _check_fields(obj: Any, where: str, required: dict, optional: dict, path) -> None:
    if not isinstance(obj, dict):
        raise RunFileError(path, f"field '{where}' holds {_show(obj)}; expected an object")
    for name, (ok, expected) in required.items():
        if name not in obj or not ok(obj[name]):
            raise RunFileError(path, f"field '{where}.{name}' holds {_show(obj.get(name))}; expected {expected}")
    for name, (ok, expected) in optional.items():
        if name in obj and not ok(obj[name]):
            raise RunFileError(path, f"field '{where}.{name}' holds {_show(obj[name])}; expected {expected}")


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
            raise RunFileError(path, f"field '{name}' holds {_show(obj[name])}; expected {expected}")
    if isinstance(obj.get("environment"), dict):
        _check_fields(obj["environment"], "environment", {}, _ENVIRONMENT_FIELDS, path)
    rows = obj.get("accuracies", [])
    if not isinstance(rows, list):
        raise RunFileError(path, f"field 'accuracies' holds {_show(rows)}; expected a list of rows")
    for i, row in enumerate(rows):
        _check_fields(row, f"accuracies[{i}]", _ROW_FIELDS, _OPTIONAL_ROW_FIELDS, path)
    comps = obj.get("comparisons", [])
    if not isinstance(comps, list):
        raise RunFileError(path, f"field 'comparisons' holds {_show(comps)}; expected a list")
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
    _check_fields(obj, "<top>", {}, {"attack": (_is_str, "a string"), "replicas": (_is_int, "an integer")}, path)
    for label, series in obj.items():
        if label in ("attack", "replicas"):
            continue
        if not isinstance(series, dict):
            raise RunFileError(path, f"field '{label}' holds {_show(series)}; expected an object of per-iteration lists")
        lengths = set()
        for key, values in series.items():
            ok = (isinstance(values, list) and all(_is_int(v) for v in values)) if key == "iteration" else _numbers(values)
            if not ok:
                raise RunFileError(path, f"field '{label}.{key}' holds {_show(values)}; expected a list of "
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
                  {"attack": (_is_str, "a string"), "radius": (_is_num, "a number"),
                   "dims": (lambda v: v in (1, 2) and not isinstance(v, bool), "1 or 2")}, path)
    n = len(obj["alphas"])
    for key in ("fixed", "fresh"):
        grid = obj.get(key)
        line = _numbers(grid) and len(grid) == n
        square = isinstance(grid, list) and len(grid) == n and all(_numbers(r) and len(r) == n for r in grid)
        if not (line or square):
            raise RunFileError(path, f"field '{key}' holds {_show(grid)}; expected {n} numbers (one per alpha) or "
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


# --------------------------------------------------------------------------- one run

@dataclass
class RunView:
    """What a run folder says, read once. ``problems`` names each damaged file (and field);
    ``status`` is None when ``status.json`` is missing or damaged."""
    path: Path
    status: RunStatus | None
    results: dict | None
    problems: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def run(self) -> Run:
        return Run(self.path)

    @property
    def state(self) -> str:
        """The run's state; 'damaged' when status.json cannot be read, 'unknown' when absent."""
        if self.status is not None:
            return self.status.state
        return "damaged" if self.status_problem else "unknown"

    @property
    def status_problem(self) -> str | None:
        return next((p for p in self.problems if "status.json" in p), None)

    @property
    def experiment(self) -> str:
        if self.status is not None and self.status.experiment:
            return self.status.experiment
        if self.results and isinstance(self.results.get("experiment"), str):
            return self.results["experiment"]
        parsed = parse_run_id(self.id)
        return parsed.experiment if parsed else "?"

    @property
    def label(self) -> str:
        """'<experiment> (<token>)': short and unique within a store."""
        parsed = parse_run_id(self.id)
        return f"{self.experiment} ({parsed.token})" if parsed else self.id

    @property
    def rows(self) -> list[dict]:
        return list((self.results or {}).get("accuracies") or [])

    @property
    def comparisons(self) -> list[dict]:
        return list((self.results or {}).get("comparisons") or [])

    @property
    def headline(self) -> dict | None:
        return (self.results or {}).get("headline")

    @property
    def audit(self) -> dict | None:
        """The evaluation audit, ``{"attack", "flags": [{"name", "raised", "summary", "numbers"}]}``
        (docs/results.md, "The audit"); None when the run has none."""
        return (self.results or {}).get("audit")

    def progress_text(self) -> str:
        p = self.status.progress if self.status is not None else None
        if p is None or not p.total:
            return "-"
        return f"{p.stage or ''} {p.done:g}/{p.total:g}".strip()

    def log_tail(self, lines: int = 20) -> list[str]:
        try:
            return self.run.read_log_tail(lines)
        except (OSError, RunFileError):  # a link in place of log.txt is named in `problems`
            return []

    @property
    def source(self) -> str | None:
        """The experiment file the run was started from (``dbp run FILE``), when recorded."""
        return self.status.source if self.status is not None else None

    @property
    def group(self) -> str | None:
        """The sweep this run is a point of, if any."""
        return self.status.group if self.status is not None else None

    @property
    def config_text(self) -> str | None:
        """``config.toml``, the frozen config, as written (None when absent or unreadable)."""
        try:
            return self.run.config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    @property
    def config(self) -> dict | None:
        """The frozen config as a plain TOML document (not validated: no torch, no imports);
        None when absent or not TOML."""
        if "_config" not in self.__dict__:
            text = self.config_text
            try:
                self.__dict__["_config"] = tomllib.loads(text) if text is not None else None
            except tomllib.TOMLDecodeError:
                self.__dict__["_config"] = None
        return self.__dict__["_config"]


def read_run(path: str | os.PathLike, *, check_alive: bool = True) -> RunView:
    """A :class:`RunView` of the run folder ``path``; damaged files become ``problems``."""
    run = Run(Path(path))
    problems = run.file_problems()  # a link or a non-file in place of a run file
    try:
        status = run.read_status(check_alive=check_alive)
    except RunFileError as exc:
        status = None
        problems.append(str(exc))
    except OSError as exc:
        status = None
        problems.append(f"{run.status_path}: cannot be read ({exc.strerror or exc})")
    try:
        data = read_json_object(run.results_path)
        results = check_results(data, run.results_path) if data is not None else None
    except RunFileError as exc:
        results = None
        problems.append(str(exc))
    return RunView(run.path, status, results, list(dict.fromkeys(problems)))


def list_runs(root: str | os.PathLike) -> list[RunView]:
    """Every run of the store at ``root``, oldest first; never raises on a damaged run."""
    return [read_run(r.path) for r in RunStore(root).list()]


# --------------------------------------------------------------------------- metrics.jsonl

class MetricsView:
    """What ``metrics.jsonl`` of a run says, read incrementally (:meth:`poll` reads what was
    appended since the last call). Events a resumed run repeats count once: per attack
    iteration the key is (attack, stage, seed, batch, step), per ADDT step (variant, step), and
    the last event of a key wins — a re-run batch is deterministic, so it repeats the values."""

    def __init__(self, path: str | os.PathLike):
        self.reader = MetricsReader(Path(path) / "metrics.jsonl")
        self.events = 0
        self.problem: str | None = None  # the first thing wrong with metrics.jsonl (a link, an event's shape)
        self._bad_events = 0
        self._iters: dict[tuple, tuple[float, Any, Any]] = {}
        self._addt: dict[tuple, dict] = {}
        self.robust: dict[str, float] = {}  # attack -> robust accuracy so far (attacker's batches)
        self.evals: dict[str, float] = {}  # clean_acc / purified_acc so far

    @property
    def bad_lines(self) -> int:
        """Lines skipped: not JSON objects, or events of a known kind whose fields have the wrong type."""
        return self.reader.bad_lines + self._bad_events

    def poll(self) -> int:
        """Read the new events; returns how many."""
        try:
            events = self.reader.read()
        except (OSError, RunFileError) as exc:
            self.problem = self.problem or str(exc)
            events = []
        for e in events:
            problem = event_problem(e)
            if problem:
                self._bad_events += 1
                self.problem = self.problem or f"{self.reader.path}: {problem}"
                continue
            self.ingest(e)
        self.events += len(events)
        return len(events)

    def ingest(self, e: dict) -> None:
        kind, step = e.get("kind"), e.get("step")
        if kind == "attack_iter" and isinstance(step, int) and not isinstance(step, bool) and e.get("attack"):
            n = e.get("n") if _finite(e.get("n")) and e.get("n") > 0 else 1
            key = (str(e["attack"]), e.get("stage"), e.get("seed"), e.get("batch"), step)
            self._iters[key] = (float(n), e.get("success"), e.get("loss"))
        elif kind == "attack_batch" and _finite(e.get("robust_acc")):
            self.robust[str(e.get("attack", "?"))] = float(e["robust_acc"])
        elif kind == "eval":
            for k in ("clean_acc", "purified_acc"):
                if _finite(e.get(k)):
                    self.evals[k] = float(e[k])
        elif kind == "addt_step" and isinstance(step, int) and not isinstance(step, bool):
            self._addt[(e.get("variant"), step)] = e

    def attack_curves(self) -> dict[str, dict[str, list]]:
        """Per attack: ``{"iteration", "success", "loss"}``, each iteration's values averaged over
        seeds and batches weighted by batch size (NaN where no finite value was reported)."""
        acc: dict[str, dict[int, list[float]]] = {}
        for (attack, _, _, _, step), (n, success, loss) in self._iters.items():
            s = acc.setdefault(attack, {}).setdefault(step, [0.0, 0.0, 0.0, 0.0])
            if _finite(success):
                s[0] += n * float(success)
                s[1] += n
            if _finite(loss):
                s[2] += n * float(loss)
                s[3] += n
        curves = {}
        for attack, steps in acc.items():
            it = sorted(steps)
            curves[attack] = {"iteration": it,
                              "success": [steps[i][0] / steps[i][1] if steps[i][1] else math.nan for i in it],
                              "loss": [steps[i][2] / steps[i][3] if steps[i][3] else math.nan for i in it]}
        return curves

    def addt_curves(self) -> dict[str, tuple[list[int], list[float]]]:
        """``addt_step`` fields per step: ``loss``, ``cgpo_loss_init``, ``cgpo_loss_final``,
        ``lambda_mean``, keyed ``field`` or ``field/variant``."""
        curves: dict[str, tuple[list[int], list[float]]] = {}
        for (variant, step), e in sorted(self._addt.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            for name in ("loss", "cgpo_loss_init", "cgpo_loss_final", "lambda_mean"):
                if _finite(e.get(name)):
                    key = name if variant is None else f"{name}/{variant}"
                    xs, ys = curves.setdefault(key, ([], []))
                    xs.append(step)
                    ys.append(float(e[name]))
        return curves


_KEY_FIELDS = ("attack", "stage", "seed", "batch", "variant", "model", "noise")  # make up the keys events are merged by


def event_problem(e: dict) -> str | None:
    """What is wrong with the shape of one ``metrics.jsonl`` event (docs/results.md), or None: the
    fields that key and order events must be scalars, ``step`` an integer or null."""
    step = e.get("step")
    if step is not None and not _is_int(step):
        return f"an event's field 'step' holds {_show(step)}; expected an integer or null"
    for name in _KEY_FIELDS:
        v = e.get(name)
        if v is not None and not isinstance(v, (str, int, float)):
            return f"an event's field '{name}' holds {_show(v)}; expected a string or a number"
    if not isinstance(e.get("kind"), str):
        return f"an event's field 'kind' holds {_show(e.get('kind'))}; expected a string"
    return None


# --------------------------------------------------------------------------- settings of runs

def _flatten(value: Any, prefix: str, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):  # [[attacks]]: attacks.0.eps, as --set spells it
            _flatten(v, f"{prefix}.{i}", out)
    else:
        out[prefix] = value


def flat_settings(config: dict | None) -> dict[str, Any]:
    """A config document as {dotted key: value} (``attacks.0.eps``, the ``--set`` spelling)."""
    out: dict[str, Any] = {}
    if config:
        _flatten(config, "", out)
    return out


_NOT_SETTINGS = ("description",)  # prose, not a setting


def setting_differences(views: list[RunView]) -> list[tuple[str, list[Any]]]:
    """The frozen-config settings that differ between runs: [(dotted key, [value per run])], a
    value None where a run does not set the key (or has no readable config.toml)."""
    flats = [flat_settings(v.config) for v in views]
    keys: list[str] = []
    for f in flats:
        keys += [k for k in f if k not in keys]
    out = []
    for k in keys:
        if k in _NOT_SETTINGS:
            continue
        values = [f.get(k) for f in flats]
        if any(v != values[0] for v in values[1:]):
            out.append((k, values))
    return out


_SELECTION = ("data.dataset", "data.root", "data.split", "data.first", "data.n_examples", "data.order")


def same_examples(a: RunView, b: RunView) -> str | None:
    """None when runs ``a`` and ``b`` evaluated the same examples in the same (uid) order — the
    same data selection in their frozen configs — else why not, naming the setting."""
    fa, fb = flat_settings(a.config), flat_settings(b.config)
    if not fa or not fb:
        return "a frozen config.toml is missing"
    keys = list(_SELECTION) + (["seed"] if fa.get("data.order") == "random" else [])
    for k in keys:
        if fa.get(k) != fb.get(k):
            return f"{k} differs ({toml_value_or_dash(fa.get(k))} vs {toml_value_or_dash(fb.get(k))})"
    return None


def toml_value_or_dash(v: Any) -> str:
    return "-" if v is None else toml_value(v) if isinstance(v, (bool, int, float, str, list, dict)) else str(v)


def per_example_outcomes(view: RunView) -> dict[tuple, list[float]]:
    """Per accuracy row key (stage, model, attack, protocol), the per-example outcome, averaged
    over the run's seeds (uid order; ``results.json`` ``stages.*.per_example``)."""
    stages = (view.results or {}).get("stages") or {}
    out: dict[tuple, list[float]] = {}
    ev = (stages.get("evaluate") or {}).get("per_example") or {}
    for protocol, values in ev.items():
        if isinstance(values, list) and values:
            out[("evaluate", ORIGINAL, None, protocol)] = [float(v) for v in values]
    pooled: dict[tuple, list[list[float]]] = {}
    for key, protocols in ((stages.get("attacks") or {}).get("per_example") or {}).items():
        name, _, seed = str(key).rpartition("/")
        model, _, attack = name.rpartition(":") if ":" in name else (ORIGINAL, "", name)
        if not isinstance(protocols, dict) or not seed.isdigit():
            continue
        for protocol, values in protocols.items():
            if isinstance(values, list) and values:
                pooled.setdefault(("attacks", model or ORIGINAL, attack, protocol), []).append(
                    [float(v) for v in values])
    for k, per_seed in pooled.items():
        if len({len(v) for v in per_seed}) == 1:
            out[k] = per_example_means([v for vs in per_seed for v in vs], len(per_seed))
    return out


def paired_between(a: RunView, b: RunView, confidence: float = 0.95) -> tuple[list[dict], str | None]:
    """Paired differences accuracy(a) − accuracy(b) for every accuracy row the two runs share, on
    the examples they share (docs/science.md, "Intervals and paired differences"): the per-example
    outcomes (seeds averaged) of both runs, Agresti–Min for one seed of 0/1 outcomes, else the
    normal interval of the per-example differences. Returns (rows, None), or ([], why not)."""
    why = same_examples(a, b)
    if why:
        return [], f"no shared examples: {why}"
    oa, ob = per_example_outcomes(a), per_example_outcomes(b)
    if not oa or not ob:
        return [], "no per-example outcomes (a run without results.json)"
    rows = []
    for stage, model, attack, protocol in _reported_rows(a) & _reported_rows(b):  # only rows both runs show
        key = (stage, model, attack, protocol if stage != "attacks" else outcome_of(protocol))
        if key not in oa or key not in ob or len(oa[key]) != len(ob[key]):
            continue
        d = paired_difference(oa[key], ob[key], confidence)
        rows.append({"stage": stage, "model": model, "attack": attack, "protocol": protocol,
                     "a": sum(oa[key]) / len(oa[key]), "b": sum(ob[key]) / len(ob[key]), **d})
    order = {(r.get("stage"), r.get("model") or ORIGINAL, r.get("attack"), r["protocol"]): i
             for i, r in enumerate(a.rows)}
    rows.sort(key=lambda r: order.get((r["stage"], r["model"], r["attack"], r["protocol"]), len(order)))
    return rows, (None if rows else "no accuracy row in common")


def _reported_rows(view: RunView) -> set[tuple]:
    """(stage, model, attack, protocol) of every accuracy row a run reports (its evaluation.protocols):
    a run made before dbp stored only the listed protocols' outcomes holds more outcomes than rows."""
    return {(r.get("stage"), r.get("model") or ORIGINAL, r.get("attack"), r["protocol"]) for r in view.rows
            if isinstance(r, dict) and isinstance(r.get("protocol"), str)}


# --------------------------------------------------------------------------- export

EXPORT_COLUMNS = ("run_id", "experiment", "state", "stage", "model", "protocol", "attack", "kind", "norm", "eps",
                  "n", "correct", "accuracy", "ci_low", "ci_high", "confidence", "path")
# after these: the run's settings (config_columns): ``source`` and ``group``, the row's own
# ``[[attacks]]`` entry as ``attack.<field>``, every other frozen setting as ``config.<key>``


def _cell(v: Any) -> Any:
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
        cols[f"config.{k}"] = _cell(v)
    entries = config.get("attacks") if isinstance(config.get("attacks"), list) else []
    entry = next((e for e in entries if isinstance(e, dict) and e.get("name") == attack), None) if attack else None
    for k, v in flat_settings(entry).items():
        cols[f"attack.{k}"] = _cell(v)
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


# --------------------------------------------------------------------------- live runs

def running_runs(root: str | os.PathLike) -> list[str]:
    """Ids of the runs of the store whose process is alive and says 'running' — whoever started
    them (a shell, this console, another one). Reads ``status.json`` only."""
    out = []
    for run in RunStore(root).list():
        try:
            status = run.read_status()
        except RunFileError:
            continue
        if status is not None and status.state == "running":
            out.append(run.id)
    return out


# --------------------------------------------------------------------------- sweeps

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
        return c if _finite(c) else None

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
    from .config import value_key
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
        lead = {"point": pv.point.index + 1, **{k: _cell(pv.point.values.get(k)) for k in keys}}
        for row in export_rows([pv.view]):
            attack = row.get("attack")
            swept = attack is not None and (names is None or attack in names)
            rows.append({**lead, "swept_attack": swept, **row})
    return SweepExport(rows, ["point", *keys, "swept_attack"], skipped, problems)
