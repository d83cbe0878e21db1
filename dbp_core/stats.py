"""Interval estimates for accuracies (every reported accuracy carries one; docs/science.md, "Intervals and paired differences")."""
from __future__ import annotations

import math
from statistics import NormalDist

__all__ = ["wilson_interval", "accuracy_row", "paired_difference", "per_example_means"]


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


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def per_example_means(values, seeds: int) -> list[float]:
    """``values`` pooled seed-major over ``seeds`` repeats of the same n examples → the n
    per-example means. Repeats of one example are correlated (same image, same model): the
    example, not the (seed, example) pair, is the independent unit of an interval."""
    values = [float(v) for v in values]
    n, rem = divmod(len(values), max(seeds, 1))
    if rem:
        raise ValueError(f"{len(values)} pooled values are not {seeds} repeats of the same examples")
    return [sum(values[s * n + i] for s in range(seeds)) / seeds for i in range(n)] if seeds > 1 else values


def accuracy_row(protocol: str, correct: int, n: int, *, stage: str, attack: str | None = None,
                 confidence: float = 0.95, seeds: int = 1, pooled=None, **extra) -> dict:
    """One row of ``results.json["accuracies"]`` (schema in docs/results.md).

    One seed of 0/1 outcomes: Wilson interval of ``correct / n``. Several seeds pooled, or
    fractional outcomes (``pooled`` = the seed-major values, e.g. the share of N purifications
    that are correct): the interval is over examples, from the spread of the per-example means
    (normal approximation), never narrower than Wilson's on the number of examples."""
    lo, hi = wilson_interval(correct, n, confidence)
    if pooled is not None and (seeds > 1 or any(float(v) not in (0.0, 1.0) for v in pooled)):
        means = per_example_means(pooled, seeds)
        m = len(means)
        mean = sum(means) / m
        var = sum((v - mean) ** 2 for v in means) / (m - 1) if m > 1 else 0.0
        half = _z(confidence) * math.sqrt(var / m)
        w_lo, w_hi = wilson_interval(round(mean * m), m, confidence)
        lo, hi = min(w_lo, max(0.0, mean - half)), max(w_hi, min(1.0, mean + half))
    return {"stage": stage, "protocol": protocol, "attack": attack, "n": n, "correct": correct,
            "accuracy": correct / n if n else math.nan, "ci_low": lo, "ci_high": hi,
            "confidence": confidence, "seeds": seeds, **extra}


def paired_difference(a, b, confidence: float = 0.95, seeds: int = 1) -> dict:
    """Mean of a_i - b_i over the same examples (and seeds), with its interval.

    Pairing removes the example-to-example variance that two independent intervals
    would double count: the honest way to say whether model A beats model B.

    * one seed, 0/1 outcomes: the Agresti–Min interval for paired proportions (add 1/2 to
      each cell of the 2x2 table), which stays honest when no pair disagrees;
    * otherwise (fractions, or ``seeds`` repeats pooled seed-major): a normal interval from the
      spread of the per-example mean differences, with the same 1/(n+2) floor on its width."""
    if len(a) != len(b):
        raise ValueError(f"paired difference needs the same examples: {len(a)} vs {len(b)} values")
    if len(a) == 0:
        return {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0, "confidence": confidence}
    d = per_example_means([float(x) - float(y) for x, y in zip(a, b)], seeds)
    n = len(d)
    mean = sum(d) / n
    z = _z(confidence)
    if seeds == 1 and all(float(v) in (0.0, 1.0) for v in (*a, *b)):
        n10 = sum(1 for v in d if v > 0) + 0.5
        n01 = sum(1 for v in d if v < 0) + 0.5
        p10, p01 = n10 / (n + 2), n01 / (n + 2)
        centre, half = p10 - p01, z * math.sqrt((p10 + p01 - (p10 - p01) ** 2) / (n + 2))
    else:
        var = sum((v - mean) ** 2 for v in d) / (n - 1) if n > 1 else 0.0
        centre, half = mean, z * max(math.sqrt(var / n), 1.0 / (n + 2))
    return {"diff": mean, "ci_low": centre - half, "ci_high": centre + half, "n": len(a), "examples": n,
            "seeds": seeds, "confidence": confidence}
