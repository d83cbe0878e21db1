"""The accuracy figure (docs/reports.md): accuracy with 95% intervals, grouped by norm and attack,
protocols side by side (``single`` first); several runs side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..results.rows import finite
from ..stages.registry import (CLEAN, FRESH_NOISE, MAJORITY, ORIGINAL, PURIFIED, PURIFIED_AVG, PURIFIED_WORST,
                               REPURIFY_AVG, REPURIFY_WORST, SINGLE, UNDEFENDED)
from .data import RunData
from .figures import figure, legend, save


def norm_of(row: dict) -> str:
    """The threat model of an accuracy row: its ``norm`` field, else the ``-linf`` / ``-l2``
    suffix of its attack's default name."""
    if row.get("norm"):
        return str(row["norm"])
    attack = str(row.get("attack") or "")
    return next((n for n in ("linf", "l2") if attack.endswith("-" + n)), "other")


# protocols side by side in this order: the paper's protocol (one purification) first, then the
# other attacked protocols, then the unattacked baselines (docs/results.md, "Accuracy rows")
PROTOCOL_ORDER = (SINGLE, FRESH_NOISE, REPURIFY_AVG, REPURIFY_WORST, MAJORITY, UNDEFENDED,
                  PURIFIED, PURIFIED_AVG, PURIFIED_WORST, CLEAN)
BASELINE_STYLE = {CLEAN: ("black", ":"), PURIFIED: ("dimgray", "--")}


def _protocols(rows: list[dict]) -> list[str]:
    present = [r["protocol"] for r in rows]
    return [p for p in PROTOCOL_ORDER if p in present] + sorted({p for p in present if p not in PROTOCOL_ORDER})


def _bars(ax, groups: list[str], series: list[tuple[str, dict]], colours: dict, values: bool = True) -> None:
    """Grouped bars with 95% interval error bars: one group per label of ``groups``, one bar per
    (name, {group label: row}) of ``series`` that has a row in that group (a group's bars are
    centred, so a protocol an attack lacks leaves no gap), the value (%) above each bar."""
    present = {g: [k for k, (_, by) in enumerate(series) if finite((by.get(g) or {}).get("accuracy"))]
               for g in groups}
    width = 0.84 / max([len(v) for v in present.values()] + [1])
    drawn = set()
    for i, g in enumerate(groups):
        ks = present[g]
        for j, k in enumerate(ks):
            name, by = series[k]
            row = by[g]
            acc = 100 * row["accuracy"]
            x = i + width * (j - (len(ks) - 1) / 2)
            lo = max(0.0, acc - 100 * row.get("ci_low", row["accuracy"]))
            hi = max(0.0, 100 * row.get("ci_high", row["accuracy"]) - acc)
            ax.bar([x], [acc], width=width * 0.92, yerr=[[lo], [hi]], capsize=2, color=colours[name],
                   label=None if name in drawn else name, error_kw={"elinewidth": 0.8, "alpha": 0.7})
            drawn.add(name)
            if values:
                ax.text(x, min(acc + hi, 100) + 1.5, f"{acc:.0f}", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis="y", alpha=0.3)


def _eps_text(rows: list[dict]) -> str:
    eps = sorted({round(float(r["eps"]), 6) for r in rows if finite(r.get("eps"))})
    return ("eps " + ", ".join(f"{e:g}" for e in eps)) if eps else ""


def accuracy_figure(runs: list[RunData], title: str):
    """Accuracy with 95% intervals, grouped by attack and norm.

    One run: one row of panels per norm (one column per model when an ADDT run evaluates
    several); in a panel, one group of bars per attack and one bar per protocol, side by side
    (``single`` — one purification, the paper's protocol — first; unattacked baselines last); the
    evaluate stage's clean and purified accuracies as horizontal lines. Several runs: one bar
    per run, a group per (attack, protocol). The figure is sized for its bars; None without rows."""
    if len(runs) > 1:
        return _accuracy_runs_figure(runs, title)
    rows = runs[0].rows
    if not rows:
        return None
    attack_rows = [r for r in rows if r.get("attack")]
    base_rows = [r for r in rows if not r.get("attack")]
    if not attack_rows:  # evaluate only: one bar per protocol
        fig, (ax,) = figure(max(4.0, 1.0 * len(base_rows) + 2), 3.6)
        groups = [r["protocol"] for r in base_rows]
        _bars(ax, groups, [("accuracy", {r["protocol"]: r for r in base_rows})], {"accuracy": "C0"})
        ax.set(ylabel="accuracy (%), 95% CI", title=title)
        return fig
    models = list(dict.fromkeys(r.get("model") or ORIGINAL for r in attack_rows))
    norms = sorted(dict.fromkeys(norm_of(r) for r in attack_rows), key=lambda n: {"linf": 0, "l2": 1}.get(n, 2))
    protocols = _protocols(attack_rows)
    colours = {p: f"C{i}" for i, p in enumerate(protocols)}
    n_attacks = max(len({r["attack"] for r in attack_rows if norm_of(r) == n}) for n in norms)
    panel_w = max(4.0, 0.2 * n_attacks * len(protocols) + 0.9 * n_attacks + 1.0)
    from matplotlib.figure import Figure
    fig = Figure(figsize=(min(panel_w * len(models) + 0.8, 30.0), 3.1 * len(norms) + 1.3), dpi=100,
                 layout="constrained")
    axes = fig.subplots(len(norms), len(models), squeeze=False)
    for ri, norm in enumerate(norms):
        for ci, model in enumerate(models):
            ax = axes[ri][ci]
            mine = [r for r in attack_rows if norm_of(r) == norm and (r.get("model") or ORIGINAL) == model]
            groups = list(dict.fromkeys(r["attack"] for r in mine))
            series = [(p, {r["attack"]: r for r in mine if r["protocol"] == p}) for p in protocols]
            _bars(ax, groups, series, colours)
            for r in base_rows if model == ORIGINAL else []:
                colour, style = BASELINE_STYLE.get(r["protocol"], ("gray", "-."))
                ax.axhline(100 * r["accuracy"], color=colour, linestyle=style, linewidth=1,
                           label=f"{r['protocol']} (no attack, {r.get('stage', '')})")
            head = {"linf": "Linf", "l2": "L2"}.get(norm, norm)
            eps = _eps_text(mine)
            ax.set_title(head + (f" ({eps})" if eps else "") + (f" — model {model}" if len(models) > 1 else ""),
                         fontsize=10)
            if ci == 0:
                ax.set_ylabel("accuracy (%), 95% CI")
    found: dict[str, Any] = {}
    for row in axes:
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                found.setdefault(lab, h)
    labels = [p for p in protocols if p in found] + [lab for lab in found if lab not in protocols]
    legend(fig, [found[lab] for lab in labels], labels)
    fig.suptitle(title)
    return fig


def _accuracy_runs_figure(runs: list[RunData], title: str):
    """Several runs: a group per (attack, protocol), one bar per run; at most 12 groups a row."""
    keys: list[tuple] = []
    for r in runs:
        for row in r.rows:
            k = (norm_of(row) if row.get("attack") else "", row.get("model") or ORIGINAL,
                 row.get("attack") or row.get("stage", ""), row["protocol"])
            if k not in keys:
                keys.append(k)
    if not keys:
        return None
    order = {p: i for i, p in enumerate(PROTOCOL_ORDER)}
    keys.sort(key=lambda k: ({"": 0, "linf": 1, "l2": 2}.get(k[0], 3), k[1] != ORIGINAL, k[1], k[2],
                             order.get(k[3], 99)))

    def label(k):
        return (f"{k[1]}: " if k[1] != ORIGINAL else "") + f"{k[2]}\n{k[3]}"
    per_row = 12
    chunks = [keys[i:i + per_row] for i in range(0, len(keys), per_row)]
    width = max(6.0, (0.18 * len(runs) + 0.45) * min(len(keys), per_row) + 1.5)
    from matplotlib.figure import Figure
    fig = Figure(figsize=(min(width, 30.0), 3.2 * len(chunks) + 1.2), dpi=100, layout="constrained")
    axes = fig.subplots(len(chunks), 1, squeeze=False)[:, 0]
    colours = {r.label: f"C{i}" for i, r in enumerate(runs)}
    for ax, chunk in zip(axes, chunks):
        groups = [label(k) for k in chunk]
        series = []
        for r in runs:
            by = {}
            for row in r.rows:
                k = (norm_of(row) if row.get("attack") else "", row.get("model") or ORIGINAL,
                     row.get("attack") or row.get("stage", ""), row["protocol"])
                if k in chunk:
                    by[label(k)] = row
            series.append((r.label, by))
        _bars(ax, groups, series, colours, values=len(runs) <= 3)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylabel("accuracy (%), 95% CI")
    handles, labels = axes[0].get_legend_handles_labels()
    legend(fig, handles, labels)
    fig.suptitle(title)
    return fig


def plot_accuracy(runs: list[RunData], path: Path, title: str) -> Path | None:
    """:func:`accuracy_figure` saved as ``path`` (None when there is nothing to draw)."""
    fig = accuracy_figure(runs, title)
    return save(fig, path) if fig is not None else None
