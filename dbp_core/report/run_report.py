"""The report of one run (``dbp report RUN``): its figures and ``report.md`` in ``<run>/report/``
(docs/reports.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..store import Run, atomic_write
from .accuracy import plot_accuracy
from .data import RunData
from .figures import plot_addt, plot_attack_success, plot_landscape_1d, plot_landscape_2d, plot_trajectory
from .tables import comparisons_table, figure_lines, pct, results_table

FIGURES = ("attack_success", "accuracy", "trajectory", "landscape_1d", "landscape_2d", "addt_loss")


def write_report(run: RunData, out_dir: Path | None = None) -> dict[str, Any]:
    """Figures and report.md of one run into ``out_dir`` (default ``<run>/report``)."""
    # inside the run folder: not through a link (Run.artifact_path refuses one)
    folder = Path(out_dir) if out_dir else Run(run.path).artifact_path("report/report.md").parent
    folder.mkdir(parents=True, exist_ok=True)
    title = run.label
    figures: dict[str, Path | None] = {
        "attack_success": plot_attack_success(run.attack_curves(), folder / "attack_success.png", title),
        "accuracy": plot_accuracy([run], folder / "accuracy.png", f"{title} — accuracy"),
        "trajectory": plot_trajectory(run.trajectory, folder / "trajectory.png", title) if run.trajectory else None,
        "landscape_1d": plot_landscape_1d(run.landscape, folder / "landscape_1d.png", title) if run.landscape else None,
        "landscape_2d": plot_landscape_2d(run.landscape, folder / "landscape_2d.png", title) if run.landscape else None,
        "addt_loss": plot_addt(run.addt_curves(), folder / "addt_loss.png", title),
    }
    res = run.results or {}
    head = res.get("headline")
    lines = [f"# Report: {run.id}", ""]
    meta = [("experiment", run.view.experiment),
            ("description", res.get("description")), ("state", run.state),
            ("seed", res.get("seed")), ("data", "/".join(str(v) for v in (res.get("data") or {}).values()) or None),
            ("backend", (res.get("environment") or {}).get("backend")),
            ("ranks", (res.get("environment") or {}).get("world_size"))]
    lines += [f"- **{k}**: {v}" for k, v in meta if v not in (None, "")]
    if head:
        what = head["protocol"] + (f" / {head['attack']}" if head.get("attack") else "")
        lines.append(f"- **headline**: {what} {pct(head['accuracy'])} "
                     f"[{pct(head['ci_low'])}, {pct(head['ci_high'])}], n = {head['n']}")
    if run.bad_lines:
        lines.append(f"- metrics.jsonl: {run.bad_lines} malformed line(s) skipped")
    lines += [f"- **damaged**: {p}" for p in run.problems]
    lines += ["", "## Results", ""] + results_table(run.rows) + comparisons_table(run.comparisons)
    lines += ["## Figures", ""] + figure_lines(figures, folder)
    md = folder / "report.md"
    atomic_write(md, "\n".join(lines))
    return {"folder": folder, "report": md, "figures": {k: v for k, v in figures.items() if v is not None},
            "problems": list(run.problems)}
