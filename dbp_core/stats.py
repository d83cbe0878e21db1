"""Interval estimates for accuracies (every reported accuracy carries one, DESIGN.md §1)."""
from __future__ import annotations

import math
from statistics import NormalDist

__all__ = ["wilson_interval", "accuracy_row", "paired_difference"]


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``correct / n``.

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 % and
    100 % — the common case for robust accuracy. Returns (nan, nan) when n == 0."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, n={n}], got {correct}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if correct == 0 else max(0.0, centre - half)  # exact bounds at 0 and n (rounding)
    hi = 1.0 if correct == n else min(1.0, centre + half)
    return (lo, hi)


def accuracy_row(protocol: str, correct: int, n: int, *, stage: str, attack: str | None = None,
                 confidence: float = 0.95, **extra) -> dict:
    """One row of ``results.json["accuracies"]`` (schema in docs/results.md)."""
    lo, hi = wilson_interval(correct, n, confidence)
    return {"stage": stage, "protocol": protocol, "attack": attack, "n": n, "correct": correct,
            "accuracy": correct / n if n else math.nan, "ci_low": lo, "ci_high": hi,
            "confidence": confidence, **extra}


def paired_difference(a, b, confidence: float = 0.95) -> dict:
    """Mean of a_i - b_i over the same examples (and seeds), with a normal-approximation
    interval from the spread of the per-example differences (values 0/1 or fractions).

    Pairing removes the example-to-example variance that two independent intervals
    would double count: the honest way to say whether model A beats model B."""
    if len(a) != len(b):
        raise ValueError(f"paired difference needs the same examples: {len(a)} vs {len(b)} values")
    n = len(a)
    if n == 0:
        return {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0, "confidence": confidence}
    d = [float(x) - float(y) for x, y in zip(a, b)]
    mean = sum(d) / n
    var = sum((v - mean) ** 2 for v in d) / (n - 1) if n > 1 else 0.0
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * math.sqrt(var / n)
    return {"diff": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n, "confidence": confidence}
