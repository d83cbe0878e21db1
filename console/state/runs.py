"""The runs screen's state: the rows of the run-store table, sorting, the side-by-side comparison
and the CSV export (docs/console.md, "Runs").

Rows are made from :func:`dbp_core.results.list_runs`, and the export is
:func:`dbp_core.results.export_rows` written with :func:`dbp_core.results.write_csv`: the same
columns (:data:`dbp_core.results.EXPORT_COLUMNS`) and values as ``dbp export``.

No Textual, no torch: safe in a worker thread.
"""
from __future__ import annotations

import os
from pathlib import Path

from dbp_core.results import RunView, export_rows, headline_text, list_runs, write_csv

from .format import fmt_pct

__all__ = ["run_row", "run_rows", "SORT_KEYS", "sort_rows", "compare_results", "export_csv"]


def run_row(view: RunView) -> dict:
    """The table row of one run: id, experiment, state, progress, created, headline, accuracy,
    path, problems, and the :class:`~dbp_core.results.RunView` it was made from (``view``)."""
    h = view.headline or {}
    return {"id": view.id, "experiment": view.experiment, "state": view.state, "progress": view.progress_text(),
            "created": view.status.created if view.status is not None else None,
            "headline": headline_text(view.headline, interval=False), "accuracy": h.get("accuracy"),
            "path": str(view.path), "problems": list(view.problems), "view": view}


def run_rows(root: str | os.PathLike) -> list[dict]:
    """One row (:func:`run_row`) per run of the store at ``root``, oldest first."""
    return [run_row(v) for v in list_runs(root)]


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
            attack = a.get("attack") if model in (None, "original") else f"{model}:{a.get('attack') or '-'}"
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


def export_csv(rows: list[dict], target: str | os.PathLike) -> Path:
    """Write the accuracy rows of the runs of ``rows`` to ``target`` as ``dbp export`` does (a run
    without results: one line with its state)."""
    return write_csv(export_rows(r["view"] for r in rows), target)
