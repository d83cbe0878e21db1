"""Pure-python side of the console: experiment form model, metric aggregation, run table rows.

Nothing here imports Textual or torch, so it is testable on its own and safe to call from
worker threads. The console never owns a run: everything is read back from the run folder
(``status.json``, ``metrics.jsonl``, ``results.json``, ``log.txt``) written by ``dbp run``.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ExperimentFile", "list_experiments", "FormField", "form_fields", "toml_literal", "parse_value",
           "set_path", "get_path", "ConfigForm", "RunMonitor", "MonitorSnapshot", "run_rows", "sort_rows",
           "compare_results", "export_csv", "fmt_pct", "fmt_eta", "fmt_time", "headline_text"]


# =========================================================================== experiments

@dataclass
class ExperimentFile:
    path: Path
    name: str
    description: str
    error: str | None = None


def list_experiments(folder: str | os.PathLike) -> list[ExperimentFile]:
    """TOML files under ``folder`` (sorted), with the name/description read without validation."""
    folder = Path(folder)
    out = []
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            out.append(ExperimentFile(path, str(data.get("name", path.stem)), str(data.get("description", ""))))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            out.append(ExperimentFile(path, path.stem, "", error=f"{type(exc).__name__}: {exc}"))
    return out


# --------------------------------------------------------------------------- form fields

@dataclass
class FormField:
    key: tuple            # ("attacks", 0, "eps")
    path: str             # "attacks[0].eps" — the same spelling as ConfigError paths
    label: str
    description: str
    kind: str             # "str", "int", "float", "bool", "choice", "list", "dict", "any"
    choices: tuple = ()
    default: Any = None
    required: bool = False


def _fmt_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _kind_of(tp: Any) -> tuple[str, tuple]:
    origin = get_origin(tp)
    if origin is Union or (origin is not None and str(origin) == "types.UnionType"):
        args = [a for a in get_args(tp) if a is not type(None)]
        return _kind_of(args[0]) if len(args) == 1 else ("any", ())
    if origin is Literal:  # words are picked from a list; numbers (landscape_dims: 1 | 2) are typed
        args = tuple(get_args(tp))
        return ("choice" if all(isinstance(a, str) for a in args) else "any"), args
    if origin in (list, tuple):
        return "list", ()
    if origin is dict or tp is dict:
        return "dict", ()
    if tp is bool:
        return "bool", ()
    if tp is int:
        return "int", ()
    if tp is float:
        return "float", ()
    if tp is str:
        return "str", ()
    return "any", ()


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _fields_of(model: type[BaseModel], prefix: tuple) -> list[FormField]:
    out = []
    for name, info in model.model_fields.items():
        kind, choices = _kind_of(info.annotation)
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = None
        out.append(FormField(prefix + (name,), _fmt_loc(prefix + (name,)), name, info.description or "",
                             kind, choices, default, info.is_required()))
    return out


def form_fields(data: dict) -> list[tuple[str, list[FormField]]]:
    """Sections of the experiment form: every field of every section of ``ExperimentConfig``,
    and one section per ``[[attacks]]`` entry present in ``data``."""
    from dbp_core.config import AttackConfig, ExperimentConfig
    top, sections = [], []
    for name, info in ExperimentConfig.model_fields.items():
        ann = info.annotation
        if _is_model(ann):
            sections.append((f"[{name}]", _fields_of(ann, (name,))))
        elif name == "attacks":
            continue
        else:
            top.extend(_fields_of_single(ExperimentConfig, name))
    attacks = data.get("attacks") if isinstance(data.get("attacks"), list) else []
    attack_sections = [(f"[[attacks]] {i}", _fields_of(AttackConfig, ("attacks", i))) for i in range(len(attacks))]
    # order: top level, data, models, purifier, attacks, then the rest
    ordered = [("experiment", top)]
    for title, fields in sections:
        ordered.append((title, fields))
        if title == "[purifier]":
            ordered.extend(attack_sections)
    return ordered


def _fields_of_single(model: type[BaseModel], name: str) -> list[FormField]:
    return [f for f in _fields_of(model, ()) if f.label == name]


# --------------------------------------------------------------------------- values

def toml_literal(value: Any) -> str:
    """A value as an inline TOML literal (what the form shows and parses back)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{k if re.fullmatch(r'[A-Za-z0-9_-]+', str(k)) else json.dumps(str(k))} = {toml_literal(v)}"
                          for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    return json.dumps(str(value))


def parse_value(text: str, kind: str) -> Any:
    """Form text → value. Empty = unset (the default). String fields take the text as is
    (quotes optional); other fields parse it as a TOML value, falling back to the plain text
    (so the validator, not the form, says what is wrong with it)."""
    text = text.strip()
    if text == "":
        return None
    if kind in ("str", "choice") and not (len(text) >= 2 and text[0] == text[-1] == '"'):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def get_path(data: dict, key: tuple) -> Any:
    node: Any = data
    for part in key:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def set_path(data: dict, key: tuple, value: Any) -> None:
    """Set (or with ``value=None`` remove) ``data[key...]``, creating tables on the way."""
    node: Any = data
    for part in key[:-1]:
        if isinstance(node, list):
            node = node[part]
            continue
        if part not in node or not isinstance(node[part], (dict, list)):
            if value is None:
                return
            node[part] = {}
        node = node[part]
    last = key[-1]
    if value is None:
        if isinstance(node, dict):
            node.pop(last, None)
    else:
        node[last] = value


class ConfigForm:
    """The state behind the experiment form: the raw TOML document being edited and the
    result of validating it with ``dbp_core.config`` (errors keyed by dotted field path)."""

    def __init__(self, path: Path | None, text: str | None = None):
        self.path = Path(path) if path is not None else None
        self.base_dir = str(self.path.resolve().parent) if self.path else os.getcwd()
        self.parse_error: str | None = None
        try:
            self.data: dict = tomllib.loads(text if text is not None else self.path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            self.data = {}
            self.parse_error = f"cannot read {self.path}: {exc}"
        self.errors: dict[str, str] = {}
        self.general_errors: list[str] = []
        self.valid = False
        self.cfg = None

    def sections(self) -> list[tuple[str, list[FormField]]]:
        return form_fields(self.data)

    def text_of(self, f: FormField) -> str:
        return toml_literal(get_path(self.data, f.key))

    def set_text(self, f: FormField, text: str) -> None:
        set_path(self.data, f.key, parse_value(text, f.kind))

    def add_attack(self, kind: str = "pgd-eot") -> int:
        self.data.setdefault("attacks", []).append({"kind": kind})
        return len(self.data["attacks"]) - 1

    def check(self, data: dict) -> tuple[bool, dict[str, str], list[str]]:
        """Validate ``data`` (a copy of the document; safe in a worker thread) →
        (valid, {field path: message}, [messages not tied to a form field])."""
        from dbp_core.config import ConfigError, validate_config
        if self.parse_error:
            return False, {}, [self.parse_error]
        errors: dict[str, str] = {}
        general: list[str] = []
        try:
            validate_config(data, file=str(self.path) if self.path else None, base_dir=self.base_dir)
            return True, errors, general
        except ConfigError as exc:
            known = {f.path for _, fs in form_fields(data) for f in fs}
            for e in exc.errors:
                path = e.get("path") or ""
                if path in known and path not in errors:
                    errors[path] = e["message"]
                else:
                    general.append(f"{path or '<top level>'}: {e['message']}")
            return False, errors, general

    def validate(self) -> bool:
        """Validate the current document; fills ``errors`` (by field path) and ``general_errors``."""
        import copy
        self.valid, self.errors, self.general_errors = self.check(copy.deepcopy(self.data))
        return self.valid

    def dumps(self) -> str:
        import tomli_w
        head = {k: self.data[k] for k in ("name", "description", "seed", "device", "stages") if k in self.data}
        rest = {k: v for k, v in self.data.items() if k not in head}
        return tomli_w.dumps({**head, **rest})

    def save_as(self, target: Path, overwrite: bool = False) -> Path:
        """Write the (valid) document to ``target`` as a new file (never over an existing one
        unless ``overwrite``)."""
        target = Path(target)
        if target.suffix != ".toml":
            target = target.with_suffix(".toml")
        if not self.validate():
            raise ValueError("the experiment has errors; fix them before saving")
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; choose a new name")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "x" if not overwrite else "w", encoding="utf-8") as fh:
            fh.write(self.dumps())
        return target


# =========================================================================== monitor

@dataclass
class Curve:
    """Per-iteration attacker-view curve of one attack: n-weighted means over every batch seen."""
    n: dict[int, float] = field(default_factory=dict)
    success: dict[int, float] = field(default_factory=dict)  # sums of success * n
    loss: dict[int, float] = field(default_factory=dict)     # sums of loss * n (finite only)
    loss_n: dict[int, float] = field(default_factory=dict)

    def add(self, step: int, n: float, success: Any, loss: Any) -> None:
        if isinstance(success, (int, float)) and math.isfinite(success):
            self.n[step] = self.n.get(step, 0.0) + n
            self.success[step] = self.success.get(step, 0.0) + success * n
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            self.loss_n[step] = self.loss_n.get(step, 0.0) + n
            self.loss[step] = self.loss.get(step, 0.0) + loss * n

    def success_curve(self) -> tuple[list[int], list[float]]:
        xs = sorted(self.n)
        return xs, [self.success[i] / self.n[i] for i in xs if self.n[i] > 0]

    def loss_curve(self) -> tuple[list[int], list[float]]:
        xs = sorted(k for k, v in self.loss_n.items() if v > 0)
        return xs, [self.loss[i] / self.loss_n[i] for i in xs]


@dataclass
class MonitorSnapshot:
    run_id: str
    path: Path
    state: str
    experiment: str
    progress: dict
    eta: float | None
    message: str
    log_tail: list[str]
    events: int
    bad_lines: int
    curves: dict[str, tuple[list[int], list[float], list[int], list[float]]]
    train_loss: tuple[list[int], list[float]]
    robust: dict[str, float]
    evals: dict[str, float]
    pid: int | None = None

    @property
    def points(self) -> int:
        return sum(len(c[0]) for c in self.curves.values()) + len(self.train_loss[0])

    @property
    def fraction(self) -> float | None:
        total = (self.progress or {}).get("total")
        if not total:
            return None
        return max(0.0, min(1.0, float((self.progress or {}).get("done", 0)) / float(total)))


class RunMonitor:
    """Incrementally follows one run folder. :meth:`poll` reads only what was appended to
    ``metrics.jsonl`` since the last call (a half-written last line waits for its newline),
    and survives a missing or corrupt ``status.json``, an empty or missing metrics file and
    a run whose process died (reported 'interrupted' by the run store)."""

    def __init__(self, path: str | os.PathLike):
        from dbp_core.runs import MetricsReader, Run
        self.run = Run(Path(path))
        self.reader = MetricsReader(self.run.metrics_path)
        self.curves: dict[str, Curve] = {}
        self.train_steps: dict[int, float] = {}
        self.robust: dict[str, float] = {}
        self.evals: dict[str, float] = {}
        self.events = 0

    @property
    def id(self) -> str:
        return self.run.id

    def _ingest(self, e: dict) -> None:
        kind = e.get("kind")
        step = e.get("step")
        if kind == "attack_iter" and isinstance(step, int):
            n = e.get("n") if isinstance(e.get("n"), (int, float)) and e.get("n") > 0 else 1
            self.curves.setdefault(str(e.get("attack", "?")), Curve()).add(step, float(n), e.get("success"),
                                                                           e.get("loss"))
        elif kind == "attack_batch" and isinstance(e.get("robust_acc"), (int, float)):
            self.robust[str(e.get("attack", "?"))] = float(e["robust_acc"])
        elif kind == "eval":
            for k in ("clean_acc", "purified_acc"):
                if isinstance(e.get(k), (int, float)):
                    self.evals[k] = float(e[k])
        elif kind == "addt_step" and isinstance(step, int) and isinstance(e.get("loss"), (int, float)):
            self.train_steps[step] = float(e["loss"])

    def read_status(self) -> dict:
        try:
            return self.run.read_status() or {}
        except (OSError, ValueError):  # a corrupt status.json (not written by the run store)
            return {}

    def poll(self, log_lines: int = 8) -> MonitorSnapshot:
        try:
            events = self.reader.read()
        except OSError:
            events = []
        for e in events:
            self._ingest(e)
        self.events += len(events)
        status = self.read_status()
        try:
            tail = self.run.read_log_tail(log_lines)
        except OSError:
            tail = []
        curves = {}
        for name, c in self.curves.items():
            xs, ys = c.success_curve()
            lx, ly = c.loss_curve()
            curves[name] = (xs, ys, lx, ly)
        steps = sorted(self.train_steps)
        state = status.get("state") or ("unknown" if not self.run.status_path.exists() else "?")
        return MonitorSnapshot(
            run_id=self.run.id, path=self.run.path, state=state,
            experiment=str(status.get("experiment") or _experiment_from_id(self.run.id)),
            progress=status.get("progress") or {}, eta=status.get("eta"), message=str(status.get("message") or ""),
            log_tail=tail, events=self.events, bad_lines=self.reader.bad_lines, curves=curves,
            train_loss=(steps, [self.train_steps[s] for s in steps]), robust=dict(self.robust),
            evals=dict(self.evals), pid=status.get("pid"))


def _experiment_from_id(run_id: str) -> str:
    m = re.fullmatch(r"\d{8}-\d{6}-(.+)-[0-9a-f]{6,}", run_id)
    return m.group(1) if m else "?"


# =========================================================================== runs table

def fmt_pct(x: Any) -> str:
    return "-" if not isinstance(x, (int, float)) or math.isnan(x) else f"{100 * x:.1f}%"


def fmt_eta(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or seconds < 0 or math.isnan(seconds):
        return "-"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def fmt_time(t: Any) -> str:
    """Unix time → 'YYYY-mm-dd HH:MM' in UTC (stable across machines and time zones)."""
    if not isinstance(t, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


def headline_text(results: dict | None) -> str:
    h = (results or {}).get("headline")
    if not h:
        return "-"
    what = str(h.get("protocol")) + (f"/{h['attack']}" if h.get("attack") else "")
    return f"{what} {fmt_pct(h.get('accuracy'))}"


def run_rows(root: str | os.PathLike) -> list[dict]:
    """One dict per run of the store: id, experiment, state, progress, created, headline, path."""
    from dbp_core.runs import RunStore
    rows = []
    for run in RunStore(root).list():
        try:
            status = run.read_status() or {}
        except (OSError, ValueError):
            status = {}
        try:
            results = run.read_results()
        except (OSError, ValueError):
            results = None
        p = status.get("progress") or {}
        progress = f"{p.get('done', 0)}/{p['total']}" if p.get("total") else "-"
        h = (results or {}).get("headline") or {}
        rows.append({"id": run.id, "experiment": str(status.get("experiment") or _experiment_from_id(run.id)),
                     "state": str(status.get("state", "?")), "progress": progress,
                     "created": status.get("created"), "headline": headline_text(results),
                     "accuracy": h.get("accuracy"), "path": str(run.path), "results": results})
    return rows


SORT_KEYS = ("created", "state", "experiment", "accuracy", "id")


def sort_rows(rows: list[dict], key: str, reverse: bool = False) -> list[dict]:
    def k(r):
        v = r.get(key)
        return (v is None, v if v is not None else 0) if key in ("created", "accuracy") else (False, str(v))
    out = sorted(rows, key=k)
    if reverse:  # missing values stay last
        present = [r for r in out if r.get(key) is not None][::-1]
        return present + [r for r in out if r.get(key) is None]
    return out


def compare_results(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Side-by-side accuracy table: one line per (stage, protocol, attack), one column per run."""
    keys: list[tuple] = []
    per_run: list[dict] = []
    for r in rows:
        acc = {}
        for a in ((r.get("results") or {}).get("accuracies") or []):
            k = (a.get("stage"), a.get("protocol"), a.get("attack"))
            acc[k] = a
            if k not in keys:
                keys.append(k)
        per_run.append(acc)
    header = ["stage", "protocol", "attack"] + [r["id"] for r in rows]
    table = []
    for k in keys:
        line = [str(k[0]), str(k[1]), str(k[2] or "-")]
        for acc in per_run:
            a = acc.get(k)
            line.append("-" if a is None else f"{fmt_pct(a.get('accuracy'))} "
                        f"[{fmt_pct(a.get('ci_low'))},{fmt_pct(a.get('ci_high'))}] n={a.get('n')}")
        table.append(line)
    return header, table


EXPORT_COLUMNS = ("run_id", "experiment", "state", "stage", "protocol", "attack", "n", "correct", "accuracy",
                  "ci_low", "ci_high", "confidence", "path")


def export_csv(rows: list[dict], target: str | os.PathLike) -> Path:
    """Every accuracy row of the given runs (runs without results get one line with their state)."""
    target = Path(target)
    with open(target, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=EXPORT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            base = {"run_id": r["id"], "experiment": r["experiment"], "state": r["state"], "path": r["path"]}
            accs = (r.get("results") or {}).get("accuracies") or []
            if not accs:
                w.writerow(base)
            for a in accs:
                w.writerow({**a, **base})
    return target
