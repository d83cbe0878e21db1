"""The report of a sweep (``dbp report <sweep>``; docs/reports.md): ``sweep.png``, robust accuracy
against the swept value, and a ``report.md`` with one line per point, in ``<sweep>/report/``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..results import read_sweep
from .figures import attack_sort_key, figure, save, style
from .tables import interval


def plot_sweep(lines: dict[str, list[dict]], key: str, path: Path, title: str) -> Path | None:
    """Robust accuracy against a swept value, one line per attack, 95% interval error bars.
    Numeric values on a numeric axis; others (words, lists) one tick per value in grid order."""
    if not any(lines.values()):
        return None
    xs_all = [pt["x"] for pts in lines.values() for pt in pts]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs_all)
    ticks = list(dict.fromkeys(json.dumps(x) for x in xs_all))
    fig, (ax,) = figure(max(6.0, 0.7 * len(ticks) + 4), 4.2)
    for attack, pts in sorted(lines.items(), key=lambda kv: attack_sort_key(kv[0])):
        if not pts:
            continue
        xs = [pt["x"] if numeric else ticks.index(json.dumps(pt["x"])) for pt in pts]
        ys = [100 * pt["accuracy"] for pt in pts]
        lo = [max(0.0, y - 100 * pt["ci_low"]) for y, pt in zip(ys, pts)]
        hi = [max(0.0, 100 * pt["ci_high"] - y) for y, pt in zip(ys, pts)]
        ax.errorbar(xs, ys, yerr=[lo, hi], capsize=3, label=attack, **style(attack))
    if not numeric:
        ax.set_xticks(range(len(ticks)), [json.loads(t) if isinstance(json.loads(t), str) else t for t in ticks])
    elif len(ticks) <= 12:
        ax.set_xticks(sorted({float(x) for x in xs_all}))
    ax.set(xlabel=key, ylabel="robust accuracy (%), 95% CI", ylim=(-2, 102), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def write_sweep_report(path: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """``dbp report <sweep>``: ``sweep.png`` (robust accuracy against the first swept value, one
    line per attack, 95% intervals — the curve the console's sweep view draws) and a report.md
    with one line per point, into ``out`` (default ``<sweep>/report/``). ``problems``: what is
    damaged (results.SweepView.problems); a damaged manifest writes nothing (``report`` None), a
    point whose run is not its own is reported without that run's numbers."""
    view = read_sweep(path)
    if view.problem:
        return {"folder": None, "report": None, "figures": {}, "problems": view.problems}
    folder = Path(out) if out else view.path / "report"
    folder.mkdir(parents=True, exist_ok=True)
    key = view.keys[0] if view.keys else "value"
    lines = view.curves(key)
    figures = {"sweep": plot_sweep(lines, key, folder / "sweep.png", f"{view.experiment}: robust accuracy vs {key}")}
    md = [f"# Sweep: {view.id}", "", f"- **experiment**: {view.experiment}", f"- **source**: {view.source or '–'}",
          "- **grid**: " + "; ".join(f"`{text}`" for text in view.grid_text),
          f"- **points**: {view.progress_text}", ""]
    # the attack(s) the sweep varies lead (as `dbp sweep` / `dbp show SWEEP` print them), then
    # the other attacks' lines: every attack when the grid varies what every attack sees
    measured = view.swept_attacks is not None
    swept = {a for pv in view.points for a in (view.measured_attacks(pv) or [])}
    attacks = [a for a in sorted(lines, key=attack_sort_key) if not all(pt["attack"] in swept for pt in lines[a])]
    heads = ([view.measured_text.removeprefix("the ")] if measured else []) + attacks
    md += [f"## Robust accuracy (protocol `single`, 95% interval) per point: {view.measured_text}"
           + (", then the other attacks" if measured and attacks else ""), "",
           "| point | run | state | " + " | ".join(heads) + " |", "|---|---|---|" + "---:|" * len(heads)]
    for pv in view.points:
        cells = ["; ".join(interval(r, r.get("attack")) for r in view.point_rows(pv)) or "–"] if measured else []
        for a in attacks:
            pt = next((x for x in lines[a] if pv.view is not None and x["run"] == pv.view.id), None)
            cells.append("–" if pt is None else interval(pt))
        md.append(f"| {pv.point.label} | `{pv.view.id if pv.view else '–'}` | {pv.state} | " + " | ".join(cells) + " |")
    md.append("")
    if view.problems:
        md += ["Damaged points (left out):", ""] + [f"- {p}" for p in view.problems] + [""]
    if figures["sweep"] is not None:
        md += ["## Robust accuracy vs " + key, "", "![sweep](sweep.png)", "",
               "Every point attacks the same examples with the same seeds, so the curve's steps are paired "
               "(`dbp report RUN_A RUN_B` gives the paired differences of two points).", ""]
    else:
        md += ["_No point has results yet: no figure._", ""]
    report = folder / "report.md"
    report.write_text("\n".join(md), encoding="utf-8")
    return {"folder": folder, "report": report, "figures": {k: v for k, v in figures.items() if v is not None},
            "problems": view.problems}
