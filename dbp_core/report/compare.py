"""The comparison of several runs (``dbp report A B ...``; docs/reports.md): a side-by-side table,
the settings that differ, paired differences on shared examples (:mod:`dbp_core.results`), and
two figures, with its own ``report.md``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..results import paired_between, setting_differences
from ..stages.registry import ORIGINAL
from ..store import atomic_write
from .accuracy import plot_accuracy
from .data import RunData, load_run
from .figures import attack_sort_key, legend, panel_grid, save
from .run_report import write_report
from .tables import pct, signed


def plot_compare_success(runs: list[RunData], path: Path) -> Path | None:
    """One panel per attack, one line per run: the attacker's success rate per iteration."""
    per_attack: dict[str, list[tuple[str, dict]]] = {}
    for r in runs:
        for attack, c in r.attack_curves().items():
            per_attack.setdefault(attack, []).append((r.label, c))
    if not per_attack:
        return None
    names = sorted(per_attack, key=attack_sort_key)
    colours = {r.label: f"C{i}" for i, r in enumerate(runs)}
    fig, axes = panel_grid(len(names), 3, 4.2, 2.9)
    for ax, attack in zip(axes, names):
        for label, c in per_attack[attack]:
            ax.plot(c["iteration"], [100 * v for v in c["success"]], label=label, color=colours[label],
                    marker="o", markersize=2.5)
        ax.set_title(attack, fontsize=10)
        ax.set(xlabel="attack iteration", ylabel="attack success (%)", ylim=(-2, 102))
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    legend(fig, handles, labels)
    fig.suptitle("attack success across runs")
    return save(fig, path)


def row_label(row: dict) -> str:
    """'attack / protocol' (the stage when no attack), prefixed by the model when it is a
    fine-tuned variant (ADDT runs evaluate 'original', 'addt', 'control' side by side)."""
    head = row["attack"] if row.get("attack") else row.get("stage", "")
    model = row.get("model")
    return (f"{model}: " if model and model != ORIGINAL else "") + f"{head} / {row['protocol']}"


def comparison_lines(runs: list[RunData], figures: dict[str, Path | None], folder: Path) -> list[str]:
    lines = ["## Comparison across runs", "", "| row | " + " | ".join(r.label for r in runs) + " |",
             "|---|" + "---|" * len(runs)]
    keys: list[str] = []
    for r in runs:
        for row in r.rows:
            if row_label(row) not in keys:
                keys.append(row_label(row))
    for k in keys:
        cells = []
        for r in runs:
            row = next((x for x in r.rows if row_label(x) == k), None)
            cells.append("–" if row is None else
                         f"{pct(row.get('accuracy'))} [{pct(row.get('ci_low'))}, {pct(row.get('ci_high'))}] "
                         f"n={row.get('n')}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("")
    # paired differences against the first run, on the examples both evaluated (dbp_core.results)
    diffs = setting_differences([r.view for r in runs])
    if diffs:
        lines += ["### Settings that differ", "", "| setting | " + " | ".join(r.label for r in runs) + " |",
                  "|---|" + "---|" * len(runs)]
        lines += [f"| `{k}` | " + " | ".join("–" if v is None else f"`{v}`" for v in values) + " |"
                  for k, values in diffs]
        lines.append("")
    for other in runs[1:]:
        rows, why = paired_between(other.view, runs[0].view)
        lines += [f"### Paired differences: {other.label} − {runs[0].label}", ""]
        if why:
            lines += [f"_Not computed: {why}._", ""]
            continue
        lines += ["| row | a | b | difference | 95% CI | n |", "|---|---:|---:|---:|---|---:|"]
        for d in rows:
            lines.append(f"| {row_label(d)} | {pct(d['a'])} | {pct(d['b'])} | {signed(d['diff'])} | "
                         f"[{signed(d['ci_low'])}, {signed(d['ci_high'])}] | {d['n']} |")
        lines.append("")
    for key, title in (("compare_accuracy", "Accuracy across runs"), ("compare_attack_success",
                                                                       "Attack success across runs")):
        path = figures.get(key)
        if path is not None:
            rel = Path(path).relative_to(folder) if Path(path).is_relative_to(folder) else Path(path)
            lines += [f"### {title}", "", f"![{title}]({rel.as_posix()})", ""]
    lines.append("Runs: " + ", ".join(f"`{r.id}`" for r in runs))
    return lines + [""]


def write_reports(paths: list[str | Path], out: str | Path | None = None) -> dict[str, Any]:
    """Per-run reports for every path; with several runs a comparison with its own report.md in
    ``out`` (default ``<first run>/report/comparison/``), never appended to a run's report.
    Returns what was written."""
    runs = [load_run(p) for p in paths]
    single_out = out if len(runs) == 1 else None  # one run with --out: its report goes there
    written = {"runs": [write_report(r, single_out) for r in runs], "comparison": None}
    if len(runs) > 1:
        folder = Path(out) if out else runs[0].path / "report" / "comparison"
        folder.mkdir(parents=True, exist_ok=True)
        figures = {"compare_accuracy": plot_accuracy(runs, folder / "compare_accuracy.png", "accuracy across runs"),
                   "compare_attack_success": plot_compare_success(runs, folder / "compare_attack_success.png")}
        lines = comparison_lines(runs, figures, folder)
        md = folder / "report.md"
        atomic_write(md, "\n".join([f"# Comparison of {len(runs)} runs", ""] + lines))
        written["comparison"] = {"folder": folder, "report": md,
                                 "figures": {k: v for k, v in figures.items() if v is not None}}
    return written
