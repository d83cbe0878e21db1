"""How the console shows numbers and times. Percentages are :func:`dbp_core.results.fmt_pct`,
the same as ``dbp runs`` / ``dbp show`` print."""
from __future__ import annotations

import math
import time
from typing import Any

from dbp_core.results import fmt_pct

__all__ = ["fmt_pct", "fmt_eta", "fmt_time"]


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
