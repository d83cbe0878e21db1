"""The evaluation audit: automatic checks that an attack's robust accuracy is trustworthy, in the
spirit of Carlini et al. 2019 ("On Evaluating Adversarial Robustness", sec. 5 checklist) and of
AutoAttack's own flags (Croce & Hein 2020, ``checks.py``); docs/science.md, "Evaluation audit".

Each check is a named flag: ``{"name", "raised", "summary", "numbers"}``. The rules below take
per-example outcomes (1 = still correct) of the audited attack and of its variants, all judged by
the same defence with the same evaluation seed, so that differences are paired; a flag compares
against the paired interval, not a bare difference. The model computations (independent EOT
gradient estimates, random points of the same size) are here too; the stage
(``dbp_core/stages/audit.py``) runs the attacks.
"""
from __future__ import annotations

import math

import torch

from ..attacks.apgd import autoattack_start
from ..attacks.eot import eot_gradient
from ..stats import paired_difference, wilson_interval

__all__ = ["flag", "large_eps_flag", "paired_flag", "approximation_flag", "random_noise_flag", "transfer_flag",
           "eot_convergence", "eot_convergence_flag", "zero_gradient_flag", "random_points", "pct"]


def pct(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _acc(v: list[float]) -> float:
    return sum(v) / len(v) if v else math.nan


def flag(name: str, raised: bool, summary: str, **numbers) -> dict:
    return {"name": name, "raised": bool(raised), "summary": summary, "numbers": numbers}


def _diff(a: list[float], b: list[float], confidence: float) -> dict:
    d = paired_difference(a, b, confidence)
    return {"diff": d["diff"], "ci_low": d["ci_low"], "ci_high": d["ci_high"]}


def large_eps_flag(outcomes: list[float], eps: float, large_eps: float, tolerance: float, confidence: float) -> dict:
    """(1) At a budget far beyond the threat model the attack must break (nearly) every example;
    if not, its gradients do not lead anywhere (masking) or it is broken."""
    acc = _acc(outcomes)
    lo, hi = wilson_interval(round(sum(outcomes)), len(outcomes), confidence)
    raised = acc > tolerance
    summary = (f"at eps {large_eps:g} ({large_eps / eps:.3g}x the budget) robust accuracy is {pct(acc)} "
               + (f"> {pct(tolerance)}: the attack cannot break the defence even when it may change the image "
                  "entirely (masked gradients or a broken attack)" if raised else f"<= {pct(tolerance)}"))
    return flag("large-eps", raised, summary, eps=eps, large_eps=large_eps, accuracy=acc, ci_low=lo, ci_high=hi,
                tolerance=tolerance, n=len(outcomes))


def paired_flag(name: str, what: str, base: list[float], doubled: list[float], confidence: float, **extra) -> dict:
    """(2), (3) Doubling the attack's effort must not move robust accuracy beyond the paired
    interval: lower means the attack had not converged, higher that more effort weakens it."""
    d = _diff(doubled, base, confidence)
    lower, higher = d["ci_high"] < 0, d["ci_low"] > 0
    if lower:
        verdict = "lower beyond the interval: the attack had not converged; report the stronger setting"
    elif higher:
        verdict = "higher beyond the interval: more effort weakens the attack (check its selection of examples)"
    else:
        verdict = "within the interval"
    summary = (f"{what}: robust accuracy {pct(_acc(base))} -> {pct(_acc(doubled))} "
               f"({_pts(d['diff'])} pts [{_pts(d['ci_low'])}, {_pts(d['ci_high'])}]), {verdict}")
    return flag(name, lower or higher, summary, accuracy=_acc(base), doubled_accuracy=_acc(doubled), **d,
                n=len(base), **extra)


def approximation_flag(exact: list[float], approximations: dict[str, list[float]], confidence: float) -> dict:
    """(4) BPDA or a blind attack (the classifier alone) stronger than the exact gradient: the
    exact gradient is obfuscated (Athalye et al. 2018)."""
    numbers, stronger = {"exact_accuracy": _acc(exact), "n": len(exact)}, []
    parts = []
    for name, outcomes in approximations.items():
        d = _diff(outcomes, exact, confidence)
        numbers[name] = {"accuracy": _acc(outcomes), **d}
        parts.append(f"{name} {pct(_acc(outcomes))} ({_pts(d['diff'])} pts [{_pts(d['ci_low'])}, {_pts(d['ci_high'])}])")
        if d["ci_high"] < 0:
            stronger.append(name)
    summary = f"exact gradient {pct(_acc(exact))}; " + ", ".join(parts) + (
        f": {' and '.join(stronger)} stronger than the exact gradient beyond the interval (obfuscated gradients)"
        if stronger else ": no approximation is stronger")
    return flag("gradient-approximations", bool(stronger), summary, stronger=stronger, **numbers)


def random_noise_flag(attack: list[float], noise: list[float], samples: int, confidence: float) -> dict:
    """(5) Random points of the same size must be weaker than the attack: raised unless noise leaves
    a robust accuracy higher than the attack's beyond the interval."""
    d = _diff(noise, attack, confidence)
    raised = not d["ci_low"] > 0
    summary = (f"random noise of the same size (worst of {samples}) {pct(_acc(noise))} vs the attack "
               f"{pct(_acc(attack))} ({_pts(d['diff'])} pts [{_pts(d['ci_low'])}, {_pts(d['ci_high'])}])"
               + (": the attack is not stronger than random noise" if raised else ""))
    return flag("random-noise", raised, summary, attack_accuracy=_acc(attack), noise_accuracy=_acc(noise),
                samples=samples, **d, n=len(attack))


def transfer_flag(attack: list[float], transfer: list[float], confidence: float) -> dict:
    """(7) Examples crafted on the undefended classifier, judged by the defence, must not beat the
    attack's own (a white-box attack weaker than transfer is not using the defence's gradients)."""
    d = _diff(transfer, attack, confidence)
    raised = d["ci_high"] < 0
    summary = (f"the undefended classifier's examples judged by the defence {pct(_acc(transfer))} vs the "
               f"attack's own {pct(_acc(attack))} ({_pts(d['diff'])} pts [{_pts(d['ci_low'])}, {_pts(d['ci_high'])}])"
               + (": transfer is stronger than the white-box attack" if raised else ""))
    return flag("transfer", raised, summary, attack_accuracy=_acc(attack), transfer_accuracy=_acc(transfer), **d,
                n=len(attack))


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-example cosine; 0 where either vector is zero (no direction to agree on)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    na, nb = a.norm(dim=1), b.norm(dim=1)
    return torch.where((na > 0) & (nb > 0), (a * b).sum(1) / (na * nb).clamp_min(1e-300), torch.zeros_like(na))


def eot_convergence(model, x, y, uids, ks: list[int], loss: str, seed_of, chunk: int | None = None) -> dict:
    """(6) Per K: the mean over examples of the cosine between two independent EOT-K gradient
    estimates at x (seeds ``seed_of(K, "a")`` and ``seed_of(K, "b")``), and the share of examples
    whose gradient is exactly zero (AutoAttack's check_zero_gradients) at the first K."""
    cos, zero = [], None
    for k in ks:
        ga = eot_gradient(model, x, y, uids, k, chunk, loss, seed=seed_of(k, "a"))[0]
        gb = eot_gradient(model, x, y, uids, k, chunk, loss, seed=seed_of(k, "b"))[0]
        if zero is None:
            zero = float((ga.flatten(1).abs().sum(1) == 0).float().mean())
        cos.append(float(_cos(ga, gb).mean()))
    return {"ks": list(ks), "cosine": cos, "zero_share": zero}


def k_for_cosine(k: int, cosine: float, threshold: float) -> float:
    """The K at which two independent EOT-K estimates reach ``threshold``, extrapolated from their
    cosine at K with the 1/K law: for per-draw gradients g + noise, cos_K = |g|^2 / (|g|^2 + N/K),
    so N/|g|^2 = K (1/cos_K - 1) and cos reaches c at K = (N/|g|^2) c / (1 - c)."""
    if cosine <= 0:
        return math.inf
    return k * (1.0 / cosine - 1.0) * threshold / (1.0 - threshold) if threshold < 1 else math.inf


def eot_convergence_flag(conv: dict, threshold: float, eot: int, limit: int, deterministic: bool) -> dict:
    """(6) The cosine between independent EOT-K gradient estimates as K grows, and the K at which it
    passes ``threshold`` (measured, else extrapolated from the largest K with the 1/K law). Raised
    when it does not grow with K, or would pass only beyond ``limit`` draws: the gradient of the
    expectation is lost in the randomness (stochastic gradients as a masking mechanism)."""
    ks, cos = conv["ks"], conv["cosine"]
    reached = next((k for k, c in zip(ks, cos) if c >= threshold), None)
    if deterministic:
        return flag("eot-convergence", False, "the attacker's model is deterministic (replayed noise): one gradient "
                    "is exact", ks=ks, cosine=cos, k_at_threshold=reached, k_extrapolated=reached, threshold=threshold,
                    eot=eot, limit=limit)
    estimate = reached if reached is not None else k_for_cosine(ks[-1], cos[-1], threshold)
    flat = len(ks) > 1 and cos[-1] <= cos[0]
    raised = flat or estimate > limit
    at_eot = next((c for k, c in zip(ks, cos) if k == eot), None)
    curve = ", ".join(f"K={k}: {c:.2f}" for k, c in zip(ks, cos))
    where = (f"passes {threshold:g} at K = {reached}" if reached is not None
             else f"would pass {threshold:g} at K ~ {estimate:.3g} (1/K law)" if math.isfinite(estimate)
             else f"never passes {threshold:g}")
    verdict = (": it does not grow with K, the gradient is lost in the randomness" if flat
               else f": beyond {limit} draws, the gradient is lost in the randomness" if estimate > limit else "")
    summary = f"cosine of independent EOT-K gradients {curve}; {where}{verdict}" + (
        f" (the attack's EOT {eot}: {at_eot:.2f})" if at_eot is not None else "")
    return flag("eot-convergence", raised, summary, ks=ks, cosine=cos, k_at_threshold=reached,
                k_extrapolated=estimate if math.isfinite(estimate) else None, threshold=threshold, eot=eot,
                limit=limit)


def zero_gradient_flag(share: float, n: int) -> dict:
    """(8) AutoAttack's check_zero_gradients: examples whose gradient at the start is exactly 0."""
    raised = share > 0
    summary = (f"{pct(share)} of the examples have an exactly zero gradient at the clean input"
               + (": gradient-based attacks cannot move them (masked or quantised defence)" if raised else ""))
    return flag("zero-gradients", raised, summary, share=share, n=n)


def random_points(x: torch.Tensor, uids: torch.Tensor, norm: str, eps: float, seed: int) -> torch.Tensor:
    """Random points of norm eps around x (AutoAttack's random start: a uniform direction scaled to
    the sphere for L2, a uniform vector scaled so its largest coordinate is eps for Linf), clamped
    to [0, 1] and addressed by (seed, uid)."""
    return autoattack_start(x, uids, norm, eps, seed)
