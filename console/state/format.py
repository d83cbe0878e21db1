"""How the console shows numbers and times. Percentages are :func:`dbp_core.results.fmt_pct`,
the same as ``dbp runs`` / ``dbp show`` print."""
from __future__ import annotations

import math
import time
from typing import Any

from dbp_core.results import fmt_pct

__all__ = ["fmt_pct", "fmt_eta", "fmt_time", "fmt_diff", "STAGE_UNITS", "progress_text", "STATE_GLYPHS",
           "state_glyph"]


def fmt_eta(seconds: Any) -> str:
    """Seconds → '1h05m', '3m07s', '42s' ('-' when unknown)."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) \
            or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def fmt_time(t: Any) -> str:
    """Unix time → 'YYYY-mm-dd HH:MM' in UTC (stable across machines and time zones)."""
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


def fmt_diff(x: Any) -> str:
    """A paired difference in percentage points: '+12.5 pts' ('-' when unknown)."""
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
        return "-"
    return f"{100 * x:+.1f} pts"


# what ``status.json`` progress counts, per stage (the stages' ctx.progress calls)
STAGE_UNITS = {"evaluate": "examples", "attacks": "examples × attacks × seeds", "addt": "training steps",
               "analysis": "analyses"}


def progress_text(stage: str | None, done: float, total: float | None) -> str:
    """'attacks 24/48 examples × attacks × seeds (50%)'; the unit is left out for a stage not known."""
    if not stage and not total:
        return "-"
    unit = STAGE_UNITS.get(stage or "", "")
    tot = f"{total:g}" if total else "?"
    pct = f" ({100 * done / total:.0f}%)" if total else ""
    return f"{stage or ''} {done:g}/{tot}{' ' + unit if unit else ''}{pct}".strip()


# a state is shown by a glyph as well as a colour, so it reads without colour too
STATE_GLYPHS = {"running": ("▶", "yellow"), "done": ("✓", "green"), "failed": ("✗", "red"),
                "interrupted": ("⏸", "magenta"), "queued": ("…", "cyan"), "damaged": ("!", "red"),
                "unknown": ("?", "white"), "pending": ("·", "white"), "starting": ("…", "cyan")}


def state_glyph(state: str) -> str:
    """The state's glyph in its colour, as Rich markup: '[green]✓[/]'."""
    glyph, colour = STATE_GLYPHS.get(state, ("?", "white"))
    return f"[{colour}]{glyph}[/]"
