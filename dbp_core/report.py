"""``dbp report RUN [RUN ...]``: PNG figures and a ``report.md`` per run (docs/reports.md).

Reads only plain files of the run store — ``results.json`` (docs/results.md),
``metrics.jsonl`` (``attack_iter``, ``addt_step`` events), ``analysis/trajectory.json``
and ``analysis/landscape.json`` — so it works on finished, failed or still-running
runs; every figure whose data is absent is skipped (and said so in ``report.md``).

Per run, into ``<run>/report/``:

=======================  ==========================================================
``attack_success.png``   one panel per attack: attacker's success rate and loss per iteration
``accuracy.png``         accuracy grouped by norm and attack, protocols side by side (``single``
                         first), 95% interval error bars; one column of panels per model
``trajectory.png``       gradient cosine similarity across iterations / EOT replicas, loss
``landscape_1d.png``     loss along the attack direction, fixed vs fresh noise
``landscape_2d.png``     loss on the 2-D grid (attack x random direction), fixed vs fresh
``addt_loss.png``        ADDT training loss, CGPO loss before/after, mean lambda per step
``report.md``            the figures, the results table and the paired comparisons
=======================  ==========================================================

With several runs, a comparison (``compare_accuracy.png``, ``compare_attack_success.png``, a
side-by-side table, the settings that differ, paired differences on shared examples) with its
own ``report.md`` goes into ``<first run>/report/comparison/``, or into ``--out DIR``. A sweep
(``dbp report <sweep>``) gets ``sweep.png`` (robust accuracy against the swept value) and a
``report.md`` in ``<sweep>/report/``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .results import MetricsView, read_analysis, read_run
from .runs import Run, atomic_write
from .stages.registry import (CLEAN, FRESH_NOISE, MAJORITY, ORIGINAL, PURIFIED, PURIFIED_AVG, PURIFIED_WORST,
                              REPURIFY_AVG, REPURIFY_WORST, SINGLE, UNDEFENDED)

__all__ = ["RunData", "load_run", "write_report", "write_reports", "write_sweep_report", "FIGURES"]

FIGURES = ("attack_success", "accuracy", "trajectory", "landscape_1d", "landscape_2d", "addt_loss")


# --------------------------------------------------------------------------- reading

class RunData:
    """Everything a report reads from one run folder, through :mod:`dbp_core.results`
    (missing parts are None / empty)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.view = read_run(self.path)
        self.metrics = MetricsView(self.path)
        self.metrics.poll()
        analysis, problems = read_analysis(self.path)  # shape checked: a damaged file is named, not drawn
        self.trajectory, self.landscape = analysis["trajectory"], analysis["landscape"]
        self.problems = list(self.view.problems) + problems + ([self.metrics.problem] if self.metrics.problem else [])

    @property
    def id(self) -> str:
        return self.view.id

    @property
    def label(self) -> str:
        return self.view.label

    @property
    def results(self) -> dict | None:
        return self.view.results

    @property
    def state(self) -> str:
        return self.view.state

    @property
    def rows(self) -> list[dict]:
        return self.view.rows

    @property
    def comparisons(self) -> list[dict]:
        return self.view.comparisons

    @property
    def bad_lines(self) -> int:
        return self.metrics.bad_lines

    def attack_curves(self) -> dict[str, dict[str, list[float]]]:
        return self.metrics.attack_curves()

    def addt_curves(self) -> dict[str, tuple[list[int], list[float]]]:
        return self.metrics.addt_curves()


def load_run(path: str | Path) -> RunData:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no run folder {path}")
    return RunData(path)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --------------------------------------------------------------------------- figures

def _figure(w: float = 7.0, h: float = 4.0, ncols: int = 1):
    from matplotlib.figure import Figure  # the Agg canvas, no pyplot state, no display needed
    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _save(fig, path: Path) -> Path:
    """Write the figure atomically: a link at ``path`` is replaced, never written through."""
    import io
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())
    return path


def _style(attack: str) -> dict:
    """DW-box dashed, stochastic attacks solid: the paper's contrast at a glance."""
    return {"linestyle": "--" if "dwbox" in attack else "-", "marker": "o", "markersize": 3}


def _grid(n: int, ncols_max: int, panel_w: float, panel_h: float):
    """A figure of ``n`` panels, ``ncols_max`` per row, each ``panel_w`` x ``panel_h`` inches;
    unused cells hidden. Returns (fig, axes) with len(axes) == n."""
    from matplotlib.figure import Figure
    ncols = max(1, min(ncols_max, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(panel_w * ncols + 0.6, panel_h * nrows + 0.8), dpi=100, layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def plot_attack_success(curves: dict, path: Path, title: str) -> Path | None:
    """One panel per attack: the attacker's success rate (%, solid, left axis) and its loss
    (dashed, right axis) per iteration — small multiples stay readable with many attacks."""
    if not curves:
        return None
    names = sorted(curves, key=_attack_sort_key)
    fig, axes = _grid(len(names), 3, 4.2, 2.9)
    for ax, attack in zip(axes, names):
        c = curves[attack]
        ax.plot(c["iteration"], [100 * v for v in c["success"]], color="C0", marker="o", markersize=2.5,
                label="success rate")
        ax.set_ylim(-2, 102)
        ax.set_ylabel("attack success (%)", color="C0", fontsize=8)
        ax.set_xlabel("attack iteration", fontsize=8)
        ax.set_title(attack, fontsize=10)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if any(_finite(v) for v in c["loss"]):
            twin = ax.twinx()
            twin.plot(c["iteration"], c["loss"], color="C3", linestyle="--", linewidth=1.2, label="loss")
            twin.set_ylabel("attack loss", color="C3", fontsize=8)
            twin.tick_params(labelsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"{title} — attacker's success rate (solid) and loss (dashed) per iteration")
    return _save(fig, path)


def _norm_of(row: dict) -> str:
    """The threat model of an accuracy row: its ``norm`` field, else the ``-linf`` / ``-l2``
    suffix of its attack's default name."""
    if row.get("norm"):
        return str(row["norm"])
    attack = str(row.get("attack") or "")
    return next((n for n in ("linf", "l2") if attack.endswith("-" + n)), "other")


def _attack_sort_key(attack: str) -> tuple:
    model, _, name = attack.rpartition(":")
    return (model, {"linf": 0, "l2": 1}.get(name.rsplit("-", 1)[-1], 2))


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
    present = {g: [k for k, (_, by) in enumerate(series) if _finite((by.get(g) or {}).get("accuracy"))]
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


def _legend(fig, handles: list, labels: list[str]) -> None:
    """One legend for the whole figure, below the panels, as many columns as its width holds."""
    longest = max((len(lab) for lab in labels), default=10)
    per_col = 0.45 + 0.075 * longest  # inches a legend entry takes at font size 8
    ncols = max(1, min(len(labels), int(fig.get_figwidth() / per_col)))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False)


def _eps_text(rows: list[dict]) -> str:
    eps = sorted({round(float(r["eps"]), 6) for r in rows if _finite(r.get("eps"))})
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
        fig, (ax,) = _figure(max(4.0, 1.0 * len(base_rows) + 2), 3.6)
        groups = [r["protocol"] for r in base_rows]
        _bars(ax, groups, [("accuracy", {r["protocol"]: r for r in base_rows})], {"accuracy": "C0"})
        ax.set(ylabel="accuracy (%), 95% CI", title=title)
        return fig
    models = list(dict.fromkeys(r.get("model") or ORIGINAL for r in attack_rows))
    norms = sorted(dict.fromkeys(_norm_of(r) for r in attack_rows), key=lambda n: {"linf": 0, "l2": 1}.get(n, 2))
    protocols = _protocols(attack_rows)
    colours = {p: f"C{i}" for i, p in enumerate(protocols)}
    n_attacks = max(len({r["attack"] for r in attack_rows if _norm_of(r) == n}) for n in norms)
    panel_w = max(4.0, 0.2 * n_attacks * len(protocols) + 0.9 * n_attacks + 1.0)
    from matplotlib.figure import Figure
    fig = Figure(figsize=(min(panel_w * len(models) + 0.8, 30.0), 3.1 * len(norms) + 1.3), dpi=100,
                 layout="constrained")
    axes = fig.subplots(len(norms), len(models), squeeze=False)
    for ri, norm in enumerate(norms):
        for ci, model in enumerate(models):
            ax = axes[ri][ci]
            mine = [r for r in attack_rows if _norm_of(r) == norm and (r.get("model") or ORIGINAL) == model]
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
    _legend(fig, [found[lab] for lab in labels], labels)
    fig.suptitle(title)
    return fig


def _accuracy_runs_figure(runs: list[RunData], title: str):
    """Several runs: a group per (attack, protocol), one bar per run; at most 12 groups a row."""
    keys: list[tuple] = []
    for r in runs:
        for row in r.rows:
            k = (_norm_of(row) if row.get("attack") else "", row.get("model") or ORIGINAL,
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
                k = (_norm_of(row) if row.get("attack") else "", row.get("model") or ORIGINAL,
                     row.get("attack") or row.get("stage", ""), row["protocol"])
                if k in chunk:
                    by[label(k)] = row
            series.append((r.label, by))
        _bars(ax, groups, series, colours, values=len(runs) <= 3)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylabel("accuracy (%), 95% CI")
    handles, labels = axes[0].get_legend_handles_labels()
    _legend(fig, handles, labels)
    fig.suptitle(title)
    return fig


def plot_accuracy(runs: list[RunData], path: Path, title: str) -> Path | None:
    """:func:`accuracy_figure` saved as ``path`` (None when there is nothing to draw)."""
    fig = accuracy_figure(runs, title)
    return _save(fig, path) if fig is not None else None


def plot_trajectory(traj: dict, path: Path, title: str) -> Path | None:
    series = {k: v for k, v in traj.items() if isinstance(v, dict) and "loss" in v}
    if not series:
        return None
    fig, axes = _figure(13, 4, 3)
    panels = (("cos_successive", "cos(g_i, g_{i-1}) across iterations"),
              ("cos_replicas", "cos between EOT replicas"), ("loss", "loss"))
    colours = {label: f"C{i}" for i, label in enumerate(sorted(series))}  # one colour per series in every panel
    for ax, (key, name) in zip(axes, panels):
        for label, s in sorted(series.items()):
            ys = [v if _finite(v) else math.nan for v in s.get(key, [])]
            if not any(_finite(v) for v in ys):
                continue
            xs = s.get("iteration") or list(range(len(ys)))
            ax.plot(xs, ys, label=label, color=colours[label], linestyle="--" if label == "replayed" else "-",
                    marker="o", markersize=3)
        ax.set(xlabel="attack iteration", title=name)
        ax.xaxis.get_major_locator().set_params(integer=True)  # iterations are whole numbers
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[0].set_ylabel("cosine similarity")
    fig.suptitle(f"{title} — gradient trajectory ({traj.get('attack', '?')}, {traj.get('replicas', '?')} replicas)")
    return _save(fig, path)


def landscape_line(land: dict) -> tuple[list[float], list[float], list[float]] | None:
    """(alphas, fixed, fresh) along the attack direction (the centre column of a 2-D grid)."""
    alphas, fixed, fresh = land.get("alphas"), land.get("fixed"), land.get("fresh")
    if not alphas or not fixed or not fresh:
        return None
    if isinstance(fixed[0], list):
        mid = len(alphas) // 2
        fixed, fresh = [row[mid] for row in fixed], [row[mid] for row in fresh]
    return alphas, fixed, fresh


def plot_landscape_1d(land: dict, path: Path, title: str) -> Path | None:
    line = landscape_line(land)
    if line is None:
        return None
    alphas, fixed, fresh = line
    fig, (ax,) = _figure(6.5, 4)
    ax.plot(alphas, fixed, marker="o", markersize=3, label="fixed noise (DW-box view)")
    ax.plot(alphas, fresh, marker="s", markersize=3, linestyle="--", label="fresh noise per point (stochastic)")
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set(xlabel="step along the attack direction", ylabel="cross-entropy loss",
           title=f"{title} — loss landscape ({land.get('attack', '?')})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_landscape_2d(land: dict, path: Path, title: str) -> Path | None:
    fixed, fresh, alphas = land.get("fixed"), land.get("fresh"), land.get("alphas")
    if not alphas or not fixed or not isinstance(fixed[0], list) or not fresh:
        return None
    values = [v for grid in (fixed, fresh) for row in grid for v in row if _finite(v)]
    if not values:
        return None
    vmin, vmax = min(values), max(values)
    fig, axes = _figure(11, 4.5, 2)
    half = (alphas[-1] - alphas[0]) / max(1, len(alphas) - 1) / 2  # cells centred on the grid points
    extent = (alphas[0] - half, alphas[-1] + half, alphas[0] - half, alphas[-1] + half)
    for ax, grid, name in ((axes[0], fixed, "fixed noise"), (axes[1], fresh, "fresh noise")):
        # fixed[r][c]: r along the attack direction (a), c along the random one (b)
        image = [[grid[r][c] for r in range(len(grid))] for c in range(len(grid[0]))]
        im = ax.imshow(image, origin="lower", extent=extent, vmin=vmin, vmax=vmax, cmap="viridis", aspect="auto")
        ax.set(xlabel="attack direction", ylabel="random direction", title=name)
        ax.plot([0], [0], marker="+", color="white", markersize=10)
    fig.colorbar(im, ax=axes, label="cross-entropy loss")
    fig.suptitle(f"{title} — 2-D loss landscape ({land.get('attack', '?')})")
    return _save(fig, path)


def plot_addt(curves: dict, path: Path, title: str) -> Path | None:
    if not curves:
        return None
    groups = (("training loss", ("loss",)), ("CGPO guidance loss", ("cgpo_loss_init", "cgpo_loss_final")),
              ("mean lambda_t", ("lambda_mean",)))
    present = [(name, [k for k in curves if k.split("/")[0] in fields]) for name, fields in groups]
    present = [(name, keys) for name, keys in present if keys]
    fig, axes = _figure(4.5 * len(present), 4, len(present))
    for ax, (name, keys) in zip(axes, present):
        for key in sorted(keys):
            xs, ys = curves[key]
            ax.plot(xs, ys, label=key, linewidth=1.2)
        ax.set(xlabel="ADDT step", title=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title} — ADDT training")
    return _save(fig, path)


def plot_compare_success(runs: list[RunData], path: Path) -> Path | None:
    """One panel per attack, one line per run: the attacker's success rate per iteration."""
    per_attack: dict[str, list[tuple[str, dict]]] = {}
    for r in runs:
        for attack, c in r.attack_curves().items():
            per_attack.setdefault(attack, []).append((r.label, c))
    if not per_attack:
        return None
    names = sorted(per_attack, key=_attack_sort_key)
    colours = {r.label: f"C{i}" for i, r in enumerate(runs)}
    fig, axes = _grid(len(names), 3, 4.2, 2.9)
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
    _legend(fig, handles, labels)
    fig.suptitle("attack success across runs")
    return _save(fig, path)


def plot_sweep(lines: dict[str, list[dict]], key: str, path: Path, title: str) -> Path | None:
    """Robust accuracy against a swept value, one line per attack, 95% interval error bars.
    Numeric values on a numeric axis; others (words, lists) one tick per value in grid order."""
    if not any(lines.values()):
        return None
    xs_all = [pt["x"] for pts in lines.values() for pt in pts]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs_all)
    ticks = list(dict.fromkeys(json.dumps(x) for x in xs_all))
    fig, (ax,) = _figure(max(6.0, 0.7 * len(ticks) + 4), 4.2)
    for attack, pts in sorted(lines.items(), key=lambda kv: _attack_sort_key(kv[0])):
        if not pts:
            continue
        xs = [pt["x"] if numeric else ticks.index(json.dumps(pt["x"])) for pt in pts]
        ys = [100 * pt["accuracy"] for pt in pts]
        lo = [max(0.0, y - 100 * pt["ci_low"]) for y, pt in zip(ys, pts)]
        hi = [max(0.0, 100 * pt["ci_high"] - y) for y, pt in zip(ys, pts)]
        ax.errorbar(xs, ys, yerr=[lo, hi], capsize=3, label=attack, **_style(attack))
    if not numeric:
        ax.set_xticks(range(len(ticks)), [json.loads(t) if isinstance(json.loads(t), str) else t for t in ticks])
    elif len(ticks) <= 12:
        ax.set_xticks(sorted({float(x) for x in xs_all}))
    ax.set(xlabel=key, ylabel="robust accuracy (%), 95% CI", ylim=(-2, 102), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


# --------------------------------------------------------------------------- markdown

def _pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if _finite(v) else "–"


def _interval(row: dict, attack: str | None = None) -> str:
    """An accuracy with its interval, '37.5% [13.7%, 69.4%]', led by ``attack`` when given."""
    text = f"{_pct(row['accuracy'])} [{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]"
    return f"{attack}: {text}" if attack else text


def _signed(v: Any) -> str:
    return f"{100 * v:+.1f} pts" if _finite(v) else "–"


def results_table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["_No results.json (the run has not finished, or failed): no accuracy table._", ""]
    models = any(row.get("model") not in (None, ORIGINAL) for row in rows)
    out = (["| stage | model | attack | protocol | accuracy | 95% CI | n |", "|---|---|---|---|---:|---|---:|"]
           if models else ["| stage | attack | protocol | accuracy | 95% CI | n |", "|---|---|---|---:|---|---:|"])
    for row in rows:
        conf = row.get("confidence")
        ci = f"[{_pct(row.get('ci_low'))}, {_pct(row.get('ci_high'))}]"
        if _finite(conf) and abs(conf - 0.95) > 1e-9:
            ci += f" ({100 * conf:g}%)"
        per_seed = row.get("per_seed")
        extra = f" (per seed: {', '.join(_pct(v) for v in per_seed)})" if per_seed and len(per_seed) > 1 else ""
        model = f" {row.get('model') or ORIGINAL} |" if models else ""
        out.append(f"| {row.get('stage', '')} |{model} {row.get('attack') or '–'} | {row['protocol']} | "
                   f"{_pct(row.get('accuracy'))}{extra} | {ci} | {row.get('n', '')} |")
    return out + [""]


def comparisons_table(comps: list[dict]) -> list[str]:
    if not comps:
        return []
    out = ["### Paired comparisons", "",
           "Same examples and seeds; difference = accuracy(a) − accuracy(b) with its 95% interval.", "",
           "| a | b | what | difference | 95% CI | n |", "|---|---|---|---:|---|---:|"]
    for c in comps:
        out.append(f"| {c.get('a')} | {c.get('b')} | {c.get('what', '')} | {_signed(c.get('diff'))} | "
                   f"[{_signed(c.get('ci_low'))}, {_signed(c.get('ci_high'))}] | {c.get('n', '')} |")
    return out + [""]


CAPTIONS = {
    "attack_success": ("Attack success per iteration",
                       "The attacker's own view (its success rate and loss on the examples it attacks), averaged "
                       "over batches and seeds; one panel per attack, success solid (left axis), loss dashed "
                       "(right axis)."),
    "accuracy": ("Accuracy per attack and protocol",
                 "One row of panels per norm; per attack, one bar per protocol (single = one purification, the "
                 "paper's protocol, first; unattacked baselines last), the number above each bar its accuracy "
                 "(%); error bars: 95% interval; horizontal lines: the evaluate stage's clean and purified "
                 "accuracy."),
    "trajectory": ("Gradient trajectory",
                   "Cosine similarity of successive EOT gradients and between EOT replicas, stochastic vs "
                   "replayed (fixed) noise."),
    "landscape_1d": ("Loss along the attack direction", "Fixed noise vs fresh noise per grid point."),
    "landscape_2d": ("2-D loss landscape", "Attack direction x random direction; fixed vs fresh noise."),
    "addt_loss": ("ADDT training", "Denoising loss, CGPO loss before/after optimisation, mean lambda_t per step."),
}


def _figure_lines(figures: dict[str, Path | None], folder: Path) -> list[str]:
    out = []
    missing = []
    for key, path in figures.items():
        title, caption = CAPTIONS.get(key, (key, ""))
        if path is None:
            missing.append(title.lower())
            continue
        rel = Path(path).relative_to(folder) if Path(path).is_relative_to(folder) else Path(path)
        out += [f"### {title}", "", f"![{title}]({rel.as_posix()})", "", caption, ""]
    if missing:
        out += [f"_Not in this run (no data): {', '.join(missing)}._", ""]
    return out


# --------------------------------------------------------------------------- writing

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
        lines.append(f"- **headline**: {what} {_pct(head['accuracy'])} "
                     f"[{_pct(head['ci_low'])}, {_pct(head['ci_high'])}], n = {head['n']}")
    if run.bad_lines:
        lines.append(f"- metrics.jsonl: {run.bad_lines} malformed line(s) skipped")
    lines += [f"- **damaged**: {p}" for p in run.problems]
    lines += ["", "## Results", ""] + results_table(run.rows) + comparisons_table(run.comparisons)
    lines += ["## Figures", ""] + _figure_lines(figures, folder)
    md = folder / "report.md"
    atomic_write(md, "\n".join(lines))
    return {"folder": folder, "report": md, "figures": {k: v for k, v in figures.items() if v is not None},
            "problems": list(run.problems)}


def _row_label(row: dict) -> str:
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
            if _row_label(row) not in keys:
                keys.append(_row_label(row))
    for k in keys:
        cells = []
        for r in runs:
            row = next((x for x in r.rows if _row_label(x) == k), None)
            cells.append("–" if row is None else
                         f"{_pct(row.get('accuracy'))} [{_pct(row.get('ci_low'))}, {_pct(row.get('ci_high'))}] "
                         f"n={row.get('n')}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("")
    # paired differences against the first run, on the examples both evaluated (dbp_core.results)
    from .results import paired_between, setting_differences
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
            lines.append(f"| {_row_label(d)} | {_pct(d['a'])} | {_pct(d['b'])} | {_signed(d['diff'])} | "
                         f"[{_signed(d['ci_low'])}, {_signed(d['ci_high'])}] | {d['n']} |")
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


def write_sweep_report(path: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """``dbp report <sweep>``: ``sweep.png`` (robust accuracy against the first swept value, one
    line per attack, 95% intervals — the curve the console's sweep view draws) and a report.md
    with one line per point, into ``out`` (default ``<sweep>/report/``). ``problems``: what is
    damaged (results.SweepView.problems); a damaged manifest writes nothing (``report`` None), a
    point whose run is not its own is reported without that run's numbers."""
    from .results import read_sweep
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
    attacks = [a for a in sorted(lines, key=_attack_sort_key) if not all(pt["attack"] in swept for pt in lines[a])]
    heads = ([view.measured_text.removeprefix("the ")] if measured else []) + attacks
    md += [f"## Robust accuracy (protocol `single`, 95% interval) per point: {view.measured_text}"
           + (", then the other attacks" if measured and attacks else ""), "",
           "| point | run | state | " + " | ".join(heads) + " |", "|---|---|---|" + "---:|" * len(heads)]
    for pv in view.points:
        cells = ["; ".join(_interval(r, r.get("attack")) for r in view.point_rows(pv)) or "–"] if measured else []
        for a in attacks:
            pt = next((x for x in lines[a] if pv.view is not None and x["run"] == pv.view.id), None)
            cells.append("–" if pt is None else _interval(pt))
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
