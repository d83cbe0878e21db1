"""Accuracy rows in words: the headline a run is summed up by, percentages, what each protocol's
row measures (docs/results.md, "Accuracy rows"). Read by ``dbp show``, reports and the console."""
from __future__ import annotations

import math
from typing import Any

from ..stages.registry import (CLEAN, FRESH_NOISE, MAJORITY, ORIGINAL, PURIFIED, PURIFIED_AVG, PURIFIED_WORST,
                               REPURIFY_AVG, REPURIFY_WORST, SINGLE, UNDEFENDED)

RESULTS_SCHEMA = "dbp-lab.results/1"


def headline(rows: list[dict]) -> dict | None:
    """The number a run is summed up by: robust accuracy under its strongest attack (the lowest
    'single' accuracy of the configured model), else purified, else clean accuracy."""
    for protocol in (SINGLE, PURIFIED, CLEAN):
        found = [r for r in rows if r["protocol"] == protocol and r.get("model") in (None, ORIGINAL)]
        if found:
            row = min(found, key=lambda r: r["accuracy"]) if protocol == SINGLE else found[-1]
            return {k: row[k] for k in ("stage", "protocol", "attack", "accuracy", "ci_low", "ci_high", "n")}
    return None


def fmt_pct(x: Any) -> str:
    return "-" if not finite(x) else f"{100 * x:.1f}%"


def headline_text(h: dict | None, interval: bool = True) -> str:
    """'single/pgd-eot-linf 45.0% [35.6%, 54.8%]' (or '-')."""
    if not h:
        return "-"
    what = str(h.get("protocol")) + (f"/{h['attack']}" if h.get("attack") else "")
    text = f"{what} {fmt_pct(h.get('accuracy'))}"
    return text + (f" [{fmt_pct(h.get('ci_low'))}, {fmt_pct(h.get('ci_high'))}]" if interval else "")


def finite(v: Any) -> bool:
    """Is ``v`` a finite number (not a boolean)?"""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# what each protocol of an accuracy row measures (docs/results.md, "Accuracy rows")
PROTOCOL_MEANINGS = {
    CLEAN: "classifier alone, no purification, no attack",
    PURIFIED: "purified, no attack",
    PURIFIED_AVG: "purified, no attack, mean over N purifications",
    PURIFIED_WORST: "purified, no attack, worst of N purifications",
    SINGLE: "attacked, one purification",
    FRESH_NOISE: "attacked, judged under noise the attacker did not know",
    REPURIFY_AVG: "attacked, mean over N fresh purifications",
    REPURIFY_WORST: "attacked, worst of N fresh purifications",
    MAJORITY: "attacked, majority vote of N purifications",
    UNDEFENDED: "bare classifier under the same attack, no purifier",
}
_BASELINES = (CLEAN, PURIFIED, PURIFIED_AVG, PURIFIED_WORST)


def row_meaning(row: dict) -> str:
    """What an accuracy row measures, in words: 'attacked, one purification'; an unattacked row
    of the attacks stage says whose paired baseline it is ('purified, no attack (paired
    baseline of pgd-eot-linf)'), so rows that look alike are told apart."""
    protocol = str(row.get("protocol"))
    text = PROTOCOL_MEANINGS.get(protocol, protocol)
    attack = row.get("attack")
    if attack and protocol in _BASELINES:
        text += f" (paired baseline of {attack})"
    model = row.get("model")
    if model not in (None, ORIGINAL):
        text += f"; model {model}"
    return text
