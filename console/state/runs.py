"""The runs screen's state: the rows of the run-store table, filtering and sorting, the
side-by-side comparison (settings that differ, paired differences), the CSV export, moving runs
to the trash, and the sweeps of the store (docs/console.md, "Runs").

Rows are made from :func:`dbp_core.results.list_runs`, and the export is
:func:`dbp_core.results.export_rows` written with :func:`dbp_core.results.write_csv`: the same
columns (:data:`dbp_core.results.EXPORT_COLUMNS`, then the run's settings) and values as
``dbp export``. Comparisons use :func:`dbp_core.results.setting_differences` and
:func:`dbp_core.results.paired_between`, as ``dbp report A B`` does.

No Textual, no torch: safe in a worker thread.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dbp_core.results import (RunView, export_rows, headline_text, list_runs, list_sweeps, paired_between,
                              setting_differences, write_csv)
from dbp_core.store import RunStore, toml_value
from dbp_core.stages.registry import ORIGINAL

from .format import fmt_diff, fmt_pct

__all__ = ["run_row", "run_rows", "SORT_KEYS", "sort_rows", "RunFilter", "filter_rows", "compare_results",
           "Comparison", "compare_runs", "export_csv", "trash_run", "audit_of", "sweep_rows", "point_labels"]


def audit_of(view: RunView) -> dict | None:
    """The audit block of a finished run (``results.json`` → ``audit``: the attack audited and its
    flags ``{"name", "raised", "summary", "numbers"}``), None when absent or not that shape."""
    audit = getattr(view, "audit", None)
    if audit is None:
        audit = (view.results or {}).get("audit")
    if not isinstance(audit, dict) or not isinstance(audit.get("flags"), list):
        return None
    return audit


def run_row(view: RunView, point: str | None = None) -> dict:
    """The table row of one run: id, experiment, state, progress, created, headline, accuracy,
    source, group, point (its sweep values), path, problems, and the
    :class:`~dbp_core.results.RunView` it was made from (``view``)."""
    h = view.headline or {}
    return {"id": view.id, "experiment": view.experiment, "state": view.state, "progress": view.progress_text(),
            "created": view.status.created if view.status is not None else None,
            "headline": headline_text(view.headline, interval=False), "accuracy": h.get("accuracy"),
            "source": view.source, "group": view.group, "point": point,
            "path": str(view.path), "problems": list(view.problems), "view": view}


def point_labels(root: str | os.PathLike) -> dict[str, str]:
    """Run id → its sweep point ('attacks.0.eps=0.1') for every point run of the store's sweeps."""
    out = {}
    for sweep in RunStore(root).list_sweeps():
        try:
            for p in sweep.points():
                if p.run:
                    out[p.run] = p.label
        except (ValueError, KeyError, TypeError):
            continue
    return out


def run_rows(root: str | os.PathLike) -> list[dict]:
    """One row (:func:`run_row`) per run of the store at ``root``, oldest first."""
    points = point_labels(root)
    return [run_row(v, points.get(v.id)) for v in list_runs(root)]


SORT_KEYS = ("created", "state", "experiment", "accuracy", "id")


def sort_rows(rows: list[dict], key: str, reverse: bool = False) -> list[dict]:
    """``rows`` sorted by ``key``; rows without a value stay last either way."""
    def k(r):
        v = r.get(key)
        return (v is None, v if v is not None else 0) if key in ("created", "accuracy") else (False, str(v))
    out = sorted(rows, key=k)
    if reverse:
        present = [r for r in out if r.get(key) is not None][::-1]
        return present + [r for r in out if r.get(key) is None]
    return out


@dataclass(frozen=True)
class RunFilter:
    """A filter typed in the runs screen: ``name:<text>`` (the experiment), ``state:<state>``
    (several: any of them), other words anywhere in the row (id, experiment, source, sweep point,
    headline). Case-insensitive; every term must match."""
    names: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "RunFilter":
        names, states, words = [], [], []
        for term in text.lower().split():
            key, sep, value = term.partition(":")
            if sep and key in ("name", "experiment") and value:
                names.append(value)
            elif sep and key == "state" and value:
                states.append(value)
            else:
                words.append(term)
        return cls(tuple(names), tuple(states), tuple(words))

    def __bool__(self) -> bool:
        return bool(self.names or self.states or self.words)

    def matches(self, row: dict) -> bool:
        if any(n not in str(row["experiment"]).lower() for n in self.names):
            return False
        if self.states and not any(str(row["state"]).lower().startswith(s) for s in self.states):
            return False
        text = " ".join(str(row.get(k) or "") for k in ("id", "experiment", "source", "point", "group",
                                                          "headline", "state")).lower()
        return all(w in text for w in self.words)


def filter_rows(rows: list[dict], text: str) -> list[dict]:
    """The rows matching the filter ``text`` (:class:`RunFilter`)."""
    f = RunFilter.parse(text)
    return [r for r in rows if f.matches(r)] if f else list(rows)


def compare_results(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Side-by-side accuracy table: one line per (stage, protocol, attack), one column per run.
    A row of a model other than the configured one (an ADDT variant) is a line of its own, its
    attack shown as '<model>:<attack>' (as in ``metrics.jsonl``)."""
    keys: list[tuple] = []
    per_run: list[dict] = []
    for r in rows:
        acc = {}
        for a in r["view"].rows:
            model = a.get("model")
            attack = a.get("attack") if model in (None, ORIGINAL) else f"{model}:{a.get('attack') or '-'}"
            k = (a.get("stage"), a.get("protocol"), attack)
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


@dataclass
class Comparison:
    """What the compare view shows: the accuracy table (:func:`compare_results`), the settings
    that differ ([(key, [value per run])], values as TOML literals), and for each run after the
    first its paired differences against the first ((label, rows, why-not))."""
    header: list[str]
    table: list[list[str]]
    settings: list[tuple[str, list[str]]]
    paired: list[tuple[str, list[list[str]], str | None]]


def compare_runs(rows: list[dict]) -> Comparison:
    header, table = compare_results(rows)
    views = [r["view"] for r in rows]
    settings = [(k, ["-" if v is None else _literal(v) for v in values])
                for k, values in setting_differences(views)]
    paired = []
    for i, v in enumerate(views[1:], 2):
        diffs, why = paired_between(v, views[0])
        lines = []
        for d in diffs:
            model = f"{d['model']}:" if d["model"] not in (None, ORIGINAL) else ""
            lines.append([str(d["stage"]), str(d["protocol"]), model + str(d["attack"] or "-"),
                          fmt_pct(d["a"]), fmt_pct(d["b"]), fmt_diff(d["diff"]),
                          f"[{fmt_diff(d['ci_low'])}, {fmt_diff(d['ci_high'])}]", str(d["n"])])
        paired.append((f"run {i} − run 1", lines, why))
    return Comparison(header, table, settings, paired)


def _literal(v) -> str:
    try:
        return toml_value(v)
    except TypeError:
        return str(v)


def export_csv(rows: list[dict], target: str | os.PathLike) -> Path:
    """Write the accuracy rows of the runs of ``rows`` to ``target`` as ``dbp export`` does (a run
    without results: one line with its state), with the runs' settings as columns."""
    return write_csv(export_rows(r["view"] for r in rows), target)


def trash_run(root: str | os.PathLike, run_id: str) -> Path:
    """Move a run to ``<root>/.trash/`` (:meth:`dbp_core.store.RunStore.trash`); a running run
    raises :class:`dbp_core.store.RunLocked`."""
    return RunStore(root).trash(run_id)


def sweep_rows(root: str | os.PathLike) -> list[dict]:
    """One row per sweep of the store: id, experiment, keys, state, progress, created, view."""
    return [{"id": s.id, "experiment": s.experiment, "keys": ", ".join(s.keys), "state": s.state,
             "progress": s.progress_text, "created": s.created, "view": s} for s in list_sweeps(root)]

