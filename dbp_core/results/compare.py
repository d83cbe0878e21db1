"""Paired comparisons between runs, on the examples they share
(docs/science.md, "Intervals and paired differences"): the per-example outcomes of a run (seeds
averaged) and the paired differences of every accuracy row two runs both report."""
from __future__ import annotations

from ..stages.registry import ORIGINAL, outcome_of
from ..stats import paired_difference, per_example_means
from .run_view import RunView
from .settings import flat_settings, toml_value_or_dash

_SELECTION = ("data.dataset", "data.root", "data.split", "data.first", "data.n_examples", "data.order")


def same_examples(a: RunView, b: RunView) -> str | None:
    """None when runs ``a`` and ``b`` evaluated the same examples in the same (uid) order — the
    same data selection in their frozen configs — else why not, naming the setting."""
    fa, fb = flat_settings(a.config), flat_settings(b.config)
    if not fa or not fb:
        return "a frozen config.toml is missing"
    keys = list(_SELECTION) + (["seed"] if fa.get("data.order") == "random" else [])
    for k in keys:
        if fa.get(k) != fb.get(k):
            return f"{k} differs ({toml_value_or_dash(fa.get(k))} vs {toml_value_or_dash(fb.get(k))})"
    return None


def per_example_outcomes(view: RunView) -> dict[tuple, list[float]]:
    """Per accuracy row key (stage, model, attack, protocol), the per-example outcome, averaged
    over the run's seeds (uid order; ``results.json`` ``stages.*.per_example``)."""
    stages = (view.results or {}).get("stages") or {}
    out: dict[tuple, list[float]] = {}
    ev = (stages.get("evaluate") or {}).get("per_example") or {}
    for protocol, values in ev.items():
        if isinstance(values, list) and values:
            out[("evaluate", ORIGINAL, None, protocol)] = [float(v) for v in values]
    pooled: dict[tuple, list[list[float]]] = {}
    for key, protocols in ((stages.get("attacks") or {}).get("per_example") or {}).items():
        name, _, seed = str(key).rpartition("/")
        model, _, attack = name.rpartition(":") if ":" in name else (ORIGINAL, "", name)
        if not isinstance(protocols, dict) or not seed.isdigit():
            continue
        for protocol, values in protocols.items():
            if isinstance(values, list) and values:
                pooled.setdefault(("attacks", model or ORIGINAL, attack, protocol), []).append(
                    [float(v) for v in values])
    for k, per_seed in pooled.items():
        if len({len(v) for v in per_seed}) == 1:
            out[k] = per_example_means([v for vs in per_seed for v in vs], len(per_seed))
    return out


def paired_between(a: RunView, b: RunView, confidence: float = 0.95) -> tuple[list[dict], str | None]:
    """Paired differences accuracy(a) − accuracy(b) for every accuracy row the two runs share, on
    the examples they share (docs/science.md, "Intervals and paired differences"): the per-example
    outcomes (seeds averaged) of both runs, Agresti–Min for one seed of 0/1 outcomes, else the
    normal interval of the per-example differences. Returns (rows, None), or ([], why not)."""
    why = same_examples(a, b)
    if why:
        return [], f"no shared examples: {why}"
    oa, ob = per_example_outcomes(a), per_example_outcomes(b)
    if not oa or not ob:
        return [], "no per-example outcomes (a run without results.json)"
    rows = []
    for stage, model, attack, protocol in _reported_rows(a) & _reported_rows(b):  # only rows both runs show
        key = (stage, model, attack, protocol if stage != "attacks" else outcome_of(protocol))
        if key not in oa or key not in ob or len(oa[key]) != len(ob[key]):
            continue
        d = paired_difference(oa[key], ob[key], confidence)
        rows.append({"stage": stage, "model": model, "attack": attack, "protocol": protocol,
                     "a": sum(oa[key]) / len(oa[key]), "b": sum(ob[key]) / len(ob[key]), **d})
    order = {(r.get("stage"), r.get("model") or ORIGINAL, r.get("attack"), r["protocol"]): i
             for i, r in enumerate(a.rows)}
    rows.sort(key=lambda r: order.get((r["stage"], r["model"], r["attack"], r["protocol"]), len(order)))
    return rows, (None if rows else "no accuracy row in common")


def _reported_rows(view: RunView) -> set[tuple]:
    """(stage, model, attack, protocol) of every accuracy row a run reports (its evaluation.protocols):
    a run made before dbp stored only the listed protocols' outcomes holds more outcomes than rows."""
    return {(r.get("stage"), r.get("model") or ORIGINAL, r.get("attack"), r["protocol"]) for r in view.rows
            if isinstance(r, dict) and isinstance(r.get("protocol"), str)}
