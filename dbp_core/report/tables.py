"""The markdown of a report (docs/reports.md): the results table, the paired comparisons, the
figures with their captions."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..results.rows import finite
from ..stages.registry import ORIGINAL


def pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if finite(v) else "–"


def interval(row: dict, attack: str | None = None) -> str:
    """An accuracy with its interval, '37.5% [13.7%, 69.4%]', led by ``attack`` when given."""
    text = f"{pct(row['accuracy'])} [{pct(row['ci_low'])}, {pct(row['ci_high'])}]"
    return f"{attack}: {text}" if attack else text


def signed(v: Any) -> str:
    return f"{100 * v:+.1f} pts" if finite(v) else "–"


def results_table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["_No results.json (the run has not finished, or failed): no accuracy table._", ""]
    models = any(row.get("model") not in (None, ORIGINAL) for row in rows)
    out = (["| stage | model | attack | protocol | accuracy | 95% CI | n |", "|---|---|---|---|---:|---|---:|"]
           if models else ["| stage | attack | protocol | accuracy | 95% CI | n |", "|---|---|---|---:|---|---:|"])
    for row in rows:
        conf = row.get("confidence")
        ci = f"[{pct(row.get('ci_low'))}, {pct(row.get('ci_high'))}]"
        if finite(conf) and abs(conf - 0.95) > 1e-9:
            ci += f" ({100 * conf:g}%)"
        per_seed = row.get("per_seed")
        extra = f" (per seed: {', '.join(pct(v) for v in per_seed)})" if per_seed and len(per_seed) > 1 else ""
        model = f" {row.get('model') or ORIGINAL} |" if models else ""
        out.append(f"| {row.get('stage', '')} |{model} {row.get('attack') or '–'} | {row['protocol']} | "
                   f"{pct(row.get('accuracy'))}{extra} | {ci} | {row.get('n', '')} |")
    return out + [""]


def comparisons_table(comps: list[dict]) -> list[str]:
    if not comps:
        return []
    out = ["### Paired comparisons", "",
           "Same examples and seeds; difference = accuracy(a) − accuracy(b) with its 95% interval.", "",
           "| a | b | what | difference | 95% CI | n |", "|---|---|---|---:|---|---:|"]
    for c in comps:
        out.append(f"| {c.get('a')} | {c.get('b')} | {c.get('what', '')} | {signed(c.get('diff'))} | "
                   f"[{signed(c.get('ci_low'))}, {signed(c.get('ci_high'))}] | {c.get('n', '')} |")
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


def figure_lines(figures: dict[str, Path | None], folder: Path) -> list[str]:
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
