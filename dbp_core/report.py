"""``dbp report RUN [RUN ...]``: PNG figures and a ``report.md`` per run (docs/reports.md).

Reads only plain files of the run store — ``results.json`` (docs/results.md),
``metrics.jsonl`` (``attack_iter``, ``addt_step`` events), ``analysis/trajectory.json``
and ``analysis/landscape.json`` — so it works on finished, failed or still-running
runs; every figure whose data is absent is skipped (and said so in ``report.md``).

Per run, into ``<run>/report/``:

=======================  ==========================================================
``attack_success.png``   attacker's success rate and loss per iteration, one line per attack
``accuracy.png``         accuracy per attack and protocol, 95% interval error bars
``trajectory.png``       gradient cosine similarity across iterations / EOT replicas, loss
``landscape_1d.png``     loss along the attack direction, fixed vs fresh noise
``landscape_2d.png``     loss on the 2-D grid (attack x random direction), fixed vs fresh
``addt_loss.png``        ADDT training loss, CGPO loss before/after, mean lambda per step
``report.md``            the figures, the results table and the paired comparisons
=======================  ==========================================================

With several runs, a comparison (``compare_accuracy.png``, ``compare_attack_success.png``
and a side-by-side table) goes into the first run's report, or into ``--out DIR``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .results import MetricsView, read_analysis, read_run
from .runs import Run, atomic_write

__all__ = ["RunData", "load_run", "write_report", "write_reports", "FIGURES"]

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


def plot_attack_success(curves: dict, path: Path, title: str) -> Path | None:
    if not curves:
        return None
    fig, (ax_s, ax_l) = _figure(10, 4, 2)
    for attack, c in sorted(curves.items()):
        ax_s.plot(c["iteration"], [100 * v for v in c["success"]], label=attack, **_style(attack))
        ax_l.plot(c["iteration"], c["loss"], label=attack, **_style(attack))
    ax_s.set(xlabel="attack iteration", ylabel="attack success (%)", title="attacker's success rate")
    ax_l.set(xlabel="attack iteration", ylabel="attack loss", title="attacker's loss")
    ax_s.set_ylim(-2, 102)
    for ax in (ax_s, ax_l):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def _row_label(row: dict) -> str:
    """'attack / protocol' (the stage when no attack), prefixed by the model when it is a
    fine-tuned variant (ADDT runs evaluate 'original', 'addt', 'control' side by side)."""
    head = row["attack"] if row.get("attack") else row.get("stage", "")
    model = row.get("model")
    return (f"{model}: " if model and model != "original" else "") + f"{head}\n{row['protocol']}"


def plot_accuracy(runs: list[RunData], path: Path, title: str) -> Path | None:
    """Grouped bars: one group per (attack, protocol), one bar per run, Wilson 95% CIs."""
    labels: list[str] = []
    for r in runs:
        for row in r.rows:
            if _row_label(row) not in labels:
                labels.append(_row_label(row))
    if not labels:
        return None
    width = 0.8 / len(runs)
    fig, (ax,) = _figure(max(6.0, 0.55 * len(labels) * max(1, len(runs)) + 2), 4.5)
    for k, r in enumerate(runs):
        by = {_row_label(row): row for row in r.rows}
        xs, ys, lo, hi = [], [], [], []
        for i, lab in enumerate(labels):
            row = by.get(lab)
            if row is None or not _finite(row.get("accuracy")):
                continue
            acc = 100 * row["accuracy"]
            xs.append(i - 0.4 + width * (k + 0.5))
            ys.append(acc)
            lo.append(max(0.0, acc - 100 * row.get("ci_low", row["accuracy"])))
            hi.append(max(0.0, 100 * row.get("ci_high", row["accuracy"]) - acc))
        ax.bar(xs, ys, width=width * 0.95, yerr=[lo, hi], capsize=3, label=r.label if len(runs) > 1 else None)
    ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=45, ha="right")
    ax.set(ylabel="accuracy (%) with 95% CI", title=title, ylim=(0, 105))
    ax.grid(axis="y", alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


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
    fig, (ax,) = _figure(8, 4.5)
    drawn = False
    for r in runs:
        for attack, c in sorted(r.attack_curves().items()):
            ax.plot(c["iteration"], [100 * v for v in c["success"]], label=f"{r.label}: {attack}", **_style(attack))
            drawn = True
    if not drawn:
        return None
    ax.set(xlabel="attack iteration", ylabel="attack success (%)", title="attack success across runs",
           ylim=(-2, 102))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


# --------------------------------------------------------------------------- markdown

def _pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if _finite(v) else "–"


def _signed(v: Any) -> str:
    return f"{100 * v:+.1f} pts" if _finite(v) else "–"


def results_table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["_No results.json (the run has not finished, or failed): no accuracy table._", ""]
    models = any(row.get("model") not in (None, "original") for row in rows)
    out = (["| stage | model | attack | protocol | accuracy | 95% CI | n |", "|---|---|---|---|---:|---|---:|"]
           if models else ["| stage | attack | protocol | accuracy | 95% CI | n |", "|---|---|---|---:|---|---:|"])
    for row in rows:
        conf = row.get("confidence")
        ci = f"[{_pct(row.get('ci_low'))}, {_pct(row.get('ci_high'))}]"
        if _finite(conf) and abs(conf - 0.95) > 1e-9:
            ci += f" ({100 * conf:g}%)"
        per_seed = row.get("per_seed")
        extra = f" (per seed: {', '.join(_pct(v) for v in per_seed)})" if per_seed and len(per_seed) > 1 else ""
        model = f" {row.get('model') or 'original'} |" if models else ""
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
                       "over batches and seeds. Dashed: DW-box (noise replayed), solid: stochastic attacks."),
    "accuracy": ("Accuracy per attack and protocol", "Bars: accuracy; error bars: 95% interval."),
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


def comparison_lines(runs: list[RunData], figures: dict[str, Path | None], folder: Path) -> list[str]:
    lines = ["## Comparison across runs", "", "| attack | protocol | " + " | ".join(r.label for r in runs) + " |",
             "|---|---|" + "---|" * len(runs)]
    keys: list[tuple] = []
    for r in runs:
        for row in r.rows:
            k = (row.get("stage"), row.get("attack"), row["protocol"])
            if k not in keys:
                keys.append(k)
    for k in keys:
        cells = []
        for r in runs:
            row = next((x for x in r.rows if (x.get("stage"), x.get("attack"), x["protocol"]) == k), None)
            cells.append("–" if row is None else
                         f"{_pct(row.get('accuracy'))} [{_pct(row.get('ci_low'))}, {_pct(row.get('ci_high'))}] "
                         f"n={row.get('n')}")
        lines.append(f"| {k[1] or k[0]} | {k[2]} | " + " | ".join(cells) + " |")
    lines += ["", "Intervals overlap does not mean no difference: runs on the same examples and seeds are "
              "best compared by paired differences (per-example outcomes in results.json).", ""]
    for key, title in (("compare_accuracy", "Accuracy across runs"), ("compare_attack_success",
                                                                       "Attack success across runs")):
        path = figures.get(key)
        if path is not None:
            rel = Path(path).relative_to(folder) if Path(path).is_relative_to(folder) else Path(path)
            lines += [f"### {title}", "", f"![{title}]({rel.as_posix()})", ""]
    lines.append("Runs: " + ", ".join(f"`{r.id}`" for r in runs))
    return lines + [""]


def write_reports(paths: list[str | Path], out: str | Path | None = None) -> dict[str, Any]:
    """Per-run reports for every path; with several runs a comparison into ``out`` (its own
    report.md) or appended to the first run's report.md. Returns what was written."""
    runs = [load_run(p) for p in paths]
    single_out = out if len(runs) == 1 else None  # one run with --out: its report goes there
    written = {"runs": [write_report(r, single_out) for r in runs], "comparison": None}
    if len(runs) > 1:
        folder = Path(out) if out else runs[0].path / "report"
        folder.mkdir(parents=True, exist_ok=True)
        figures = {"compare_accuracy": plot_accuracy(runs, folder / "compare_accuracy.png", "accuracy across runs"),
                   "compare_attack_success": plot_compare_success(runs, folder / "compare_attack_success.png")}
        lines = comparison_lines(runs, figures, folder)
        md = folder / "report.md"
        if out:
            atomic_write(md, "\n".join([f"# Comparison of {len(runs)} runs", ""] + lines))
        else:
            atomic_write(md, md.read_text(encoding="utf-8") + "\n" + "\n".join(lines))
        written["comparison"] = {"folder": folder, "report": md,
                                 "figures": {k: v for k, v in figures.items() if v is not None}}
    return written
