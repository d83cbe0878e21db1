"""The ``audit`` stage: is the robust accuracy of an attack trustworthy? (docs/results.md, "The audit";
docs/science.md, "Evaluation audit").

The audited attack (``audit.attack``, default the first) is re-run with one change at a time on
the first ``audit.examples`` examples, and every variant is judged by the defence with the
evaluation seed the ``attacks`` stage uses for the attack's seed 0, so that the variants'
outcomes are paired with each other and with the attack's own (which are taken from the
``attacks`` stage when it ran before, else computed here with the same seeds):

* ``large-eps``               the attack at a very large budget (default: Linf 1, L2 the image space's diameter);
* ``more-iterations``         twice the iterations;
* ``more-eot``                twice the EOT (stochastic attackers);
* ``gradient-approximations`` the same attack with ``gradient`` = exact, bpda and blind;
* ``random-noise``            ``noise_samples`` random points of norm eps per example;
* ``transfer``                the attack's undefended twin on the bare classifier, its examples judged by the defence;
* ``eot-convergence`` and ``zero-gradients``  independent EOT-K gradient estimates at the clean input.

The flags (``dbp_core.analysis.audit``) go to ``results.json["audit"]``; the stage adds no
accuracy rows (a large-eps row would become the run's headline).
"""
from __future__ import annotations

import math

import torch

from ..analysis import audit as rules
from ..attacks import PlainModel
from ..attacks.gradients import attacker_view
from ..attacks.registry import KINDS, build_attack, undefended_config
from ..models.defended import DefendedClassifier
from ..purifier import noise as noise_mod
from ..purifier.noise import derive_seed
from .attacks import attacker_model
from .context import StageContext

# the check each attack variant serves (a variant runs only when its check is listed)
VARIANT_CHECKS = {"large-eps": "large-eps", "more-iterations": "more-iterations", "more-eot": "more-eot",
                  "exact": "gradient-approximations", "bpda": "gradient-approximations",
                  "blind": "gradient-approximations", "transfer": "transfer", "noise": "random-noise"}


def audited_attack(cfg):
    name = cfg.audit.attack
    return next(a for a in cfg.attacks if a.name == name) if name else cfg.attacks[0]


def large_budget(acfg, image_numel: int, configured: float | None) -> float:
    """The very large budget: 1 (the whole box) in Linf, the diameter sqrt(d) of [0, 1]^d in L2."""
    if configured is not None:
        return float(configured)
    return 1.0 if acfg.norm == "linf" else math.sqrt(image_numel)


def variants(acfg, checks: list[str], large: float) -> dict:
    """``{variant: [[attacks]] entry}`` of the attack variants the listed checks need."""
    kind = KINDS.get(acfg.kind)
    stochastic = acfg.noise == "stochastic" and not (kind is not None and kind.deterministic)
    out = {}
    if "large-eps" in checks:
        update = {"eps": large}
        if acfg.step is not None:
            update["step"] = acfg.step * large / acfg.eps
        out["large-eps"] = acfg.model_copy(update=update)
    if "more-iterations" in checks:
        out["more-iterations"] = acfg.model_copy(update={"iterations": 2 * acfg.iterations})
    if "more-eot" in checks and stochastic:
        out["more-eot"] = acfg.model_copy(update={"eot": 2 * acfg.eot})
    if "gradient-approximations" in checks:
        for gradient in ("exact", "bpda", "blind"):
            if gradient != acfg.gradient:
                out[gradient] = acfg.model_copy(update={"gradient": gradient})
    return out


def run(ctx: StageContext) -> dict:
    cfg, res = ctx.cfg, ctx.resources
    ac = cfg.audit
    if not cfg.attacks:
        raise ValueError("stage 'audit' audits an attack: add an [[attacks]] entry")
    acfg = audited_attack(cfg)
    kind = KINDS.get(acfg.kind)
    deterministic = acfg.noise != "stochastic" or (kind is not None and kind.deterministic)
    purifier = res.purifier(noise_mod.named(ctx.seed("unseeded")))
    if purifier is None:
        raise ValueError("stage 'audit' audits a purified classifier: models.diffusion must not be 'none'")
    classifier, device, data = res.classifier(), res.device, res.data()
    defended = DefendedClassifier(classifier, purifier).to(device)
    n = min(ac.examples, len(data))
    batches = [(lo, min(lo + cfg.data.batch_size, n)) for lo in range(0, n, cfg.data.batch_size)]
    # the attacks stage's seeds of this attack's seed 0: the variants are paired with its outcomes
    eval_seed = derive_seed(cfg.seed, "attacks", "eval", acfg.name, 0)
    attack_seed = derive_seed(cfg.seed, "attacks", "attack", acfg.name, 0)
    large = large_budget(acfg, int(data.x[0].numel()), ac.large_eps)
    todo = {"attack": acfg, **variants(acfg, ac.checks, large)}
    if "transfer" in ac.checks and undefended_config(acfg) is not None:
        todo["transfer"] = undefended_config(acfg)
    if "random-noise" in ac.checks:
        todo["noise"] = None

    state = ctx.load_checkpoint() or {"outcomes": {}}
    done_before = (ctx.previous.get("attacks") or {}).get("per_example", {}).get(f"{acfg.name}/0", {}).get("single")
    if "attack" not in state["outcomes"] and done_before is not None and len(done_before) >= n:
        state["outcomes"]["attack"] = [float(v) for v in done_before[:n]]  # the same seeds: the same outcomes

    def judged(x_adv, y, uids) -> list[float]:
        with torch.no_grad():
            return (defended(x_adv, uids, seed=eval_seed).argmax(1) == y).float().tolist()

    def outcomes_of(name, vcfg, x, y, uids) -> list[float]:
        if name == "noise":  # worst of R random points of norm eps
            ok = torch.ones_like(y, dtype=torch.bool)
            for r in range(ac.noise_samples):
                x_r = rules.random_points(x, uids, acfg.norm, acfg.eps, ctx.seed("noise", r))
                ok &= torch.tensor(judged(x_r, y, uids), device=device).bool()
            return ok.float().tolist()
        attack = build_attack(vcfg, eval_seed=eval_seed, attack_seed=attack_seed)
        if name == "transfer":
            return judged(attack(PlainModel(classifier), x, y, uids), y, uids)
        return judged(attack(attacker_view(attacker_model(res, vcfg, defended), vcfg.gradient), x, y, uids), y, uids)

    names = list(todo)
    for j, name in enumerate(names):
        if name in state["outcomes"]:
            continue
        values: list[float] = []
        for lo, hi in batches:
            x, y, uids = data.x[lo:hi].to(device), data.y[lo:hi].to(device), data.uids[lo:hi].to(device)
            values += outcomes_of(name, todo[name], x, y, uids)
            ctx.progress(j * n + hi, len(names) * n + 1, message=f"audit of {acfg.name}: {name}")
        state["outcomes"][name] = values
        ctx.metric("audit_variant", j, variant=name, accuracy=sum(values) / len(values))
        ctx.save_checkpoint(state)

    out = state["outcomes"]
    conf = cfg.evaluation.confidence
    flags = []
    if "large-eps" in out:
        flags.append(rules.large_eps_flag(out["large-eps"], acfg.eps, large, ac.large_eps_accuracy, conf))
    if "more-iterations" in out:
        flags.append(rules.paired_flag("more-iterations", f"{acfg.iterations} -> {2 * acfg.iterations} iterations",
                                       out["attack"], out["more-iterations"], conf, iterations=acfg.iterations))
    if "more-eot" in ac.checks:
        if "more-eot" in out:
            flags.append(rules.paired_flag("more-eot", f"EOT {acfg.eot} -> {2 * acfg.eot}", out["attack"],
                                           out["more-eot"], conf, eot=acfg.eot))
        else:
            flags.append(rules.flag("more-eot", False, "the attacker's model is deterministic (replayed noise): "
                                    "EOT does not apply", eot=acfg.eot))
    if "gradient-approximations" in ac.checks:
        by_gradient = {acfg.gradient: out["attack"], **{g: out[g] for g in ("exact", "bpda", "blind") if g in out}}
        flags.append(rules.approximation_flag(by_gradient["exact"], {g: by_gradient[g] for g in ("bpda", "blind")},
                                              conf))
    if "noise" in out:
        flags.append(rules.random_noise_flag(out["attack"], out["noise"], ac.noise_samples, conf))
    if "transfer" in out:
        flags.append(rules.transfer_flag(out["attack"], out["transfer"], conf))
    if "eot-convergence" in ac.checks or "zero-gradients" in ac.checks:
        x, y, uids = data.x[:n].to(device), data.y[:n].to(device), data.uids[:n].to(device)
        ks = [1] if deterministic else ac.eot_ks
        seed_of = (lambda k, part: eval_seed) if deterministic else (lambda k, part: ctx.seed("eot", k, part))
        model = attacker_view(attacker_model(res, acfg, defended), acfg.gradient)
        conv = rules.eot_convergence(model, x, y, uids, ks, acfg.loss or "ce", seed_of, acfg.eot_chunk)
        if "eot-convergence" in ac.checks:
            flags.append(rules.eot_convergence_flag(conv, ac.cosine, acfg.eot, ac.eot_limit, deterministic))
        if "zero-gradients" in ac.checks:
            flags.append(rules.zero_gradient_flag(conv["zero_share"], n))
    raised = [f["name"] for f in flags if f["raised"]]
    ctx.log(f"audit of {acfg.name}: " + (f"raised {', '.join(raised)}" if raised else "no flag raised"))
    return {"audit": {"attack": acfg.name, "examples": n, "raised": raised, "flags": flags},
            "per_example": out}
