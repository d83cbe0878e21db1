"""The figures of a run's report (docs/reports.md): attack success per iteration, the gradient
trajectory, the loss landscapes, ADDT training — and what every figure of a report is drawn and
saved with (the Agg canvas, no pyplot state; written atomically). The accuracy figure is
:mod:`.accuracy`."""
from __future__ import annotations

import math
from pathlib import Path

from ..results.rows import finite
from ..store import atomic_write


def figure(w: float = 7.0, h: float = 4.0, ncols: int = 1):
    from matplotlib.figure import Figure  # the Agg canvas, no pyplot state, no display needed
    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def save(fig, path: Path) -> Path:
    """Write the figure atomically: a link at ``path`` is replaced, never written through."""
    import io
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())
    return path


def style(attack: str) -> dict:
    """DW-box dashed, stochastic attacks solid: the paper's contrast at a glance."""
    return {"linestyle": "--" if "dwbox" in attack else "-", "marker": "o", "markersize": 3}


def panel_grid(n: int, ncols_max: int, panel_w: float, panel_h: float):
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
    names = sorted(curves, key=attack_sort_key)
    fig, axes = panel_grid(len(names), 3, 4.2, 2.9)
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
        if any(finite(v) for v in c["loss"]):
            twin = ax.twinx()
            twin.plot(c["iteration"], c["loss"], color="C3", linestyle="--", linewidth=1.2, label="loss")
            twin.set_ylabel("attack loss", color="C3", fontsize=8)
            twin.tick_params(labelsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"{title} — attacker's success rate (solid) and loss (dashed) per iteration")
    return save(fig, path)


def attack_sort_key(attack: str) -> tuple:
    model, _, name = attack.rpartition(":")
    return (model, {"linf": 0, "l2": 1}.get(name.rsplit("-", 1)[-1], 2))


def legend(fig, handles: list, labels: list[str]) -> None:
    """One legend for the whole figure, below the panels, as many columns as its width holds."""
    longest = max((len(lab) for lab in labels), default=10)
    per_col = 0.45 + 0.075 * longest  # inches a legend entry takes at font size 8
    ncols = max(1, min(len(labels), int(fig.get_figwidth() / per_col)))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False)


def plot_trajectory(traj: dict, path: Path, title: str) -> Path | None:
    series = {k: v for k, v in traj.items() if isinstance(v, dict) and "loss" in v}
    if not series:
        return None
    fig, axes = figure(13, 4, 3)
    panels = (("cos_successive", "cos(g_i, g_{i-1}) across iterations"),
              ("cos_replicas", "cos between EOT replicas"), ("loss", "loss"))
    colours = {label: f"C{i}" for i, label in enumerate(sorted(series))}  # one colour per series in every panel
    for ax, (key, name) in zip(axes, panels):
        for label, s in sorted(series.items()):
            ys = [v if finite(v) else math.nan for v in s.get(key, [])]
            if not any(finite(v) for v in ys):
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
    return save(fig, path)


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
    fig, (ax,) = figure(6.5, 4)
    ax.plot(alphas, fixed, marker="o", markersize=3, label="fixed noise (DW-box view)")
    ax.plot(alphas, fresh, marker="s", markersize=3, linestyle="--", label="fresh noise per point (stochastic)")
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set(xlabel="step along the attack direction", ylabel="cross-entropy loss",
           title=f"{title} — loss landscape ({land.get('attack', '?')})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_landscape_2d(land: dict, path: Path, title: str) -> Path | None:
    fixed, fresh, alphas = land.get("fixed"), land.get("fresh"), land.get("alphas")
    if not alphas or not fixed or not isinstance(fixed[0], list) or not fresh:
        return None
    values = [v for grid in (fixed, fresh) for row in grid for v in row if finite(v)]
    if not values:
        return None
    vmin, vmax = min(values), max(values)
    fig, axes = figure(11, 4.5, 2)
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
    return save(fig, path)


def plot_addt(curves: dict, path: Path, title: str) -> Path | None:
    if not curves:
        return None
    groups = (("training loss", ("loss",)), ("CGPO guidance loss", ("cgpo_loss_init", "cgpo_loss_final")),
              ("mean lambda_t", ("lambda_mean",)))
    present = [(name, [k for k in curves if k.split("/")[0] in fields]) for name, fields in groups]
    present = [(name, keys) for name, keys in present if keys]
    fig, axes = figure(4.5 * len(present), 4, len(present))
    for ax, (name, keys) in zip(axes, present):
        for key in sorted(keys):
            xs, ys = curves[key]
            ax.plot(xs, ys, label=key, linewidth=1.2)
        ax.set(xlabel="ADDT step", title=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title} — ADDT training")
    return save(fig, path)
