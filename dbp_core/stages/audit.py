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
from .attacks import attacker_model, outcome_key
from .context import StageContext
from .registry import ORIGINAL, SINGLE

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


def planned(acfg, ac, large: float) -> dict:
    """``{variant: [[attacks]] entry or None}`` of every run the listed checks need, the audited
    attack itself first (``noise``: the random points, no attack)."""
    todo = {"attack": acfg, **variants(acfg, ac.checks, large)}
    if "transfer" in ac.checks and undefended_config(acfg) is not None:
        todo["transfer"] = undefended_config(acfg)
    if "random-noise" in ac.checks:
        todo["noise"] = None
    return todo


class Audit:
    """One audit of one attack: the defence that judges, the examples, the seeds the variants share
    with the ``attacks`` stage's seed 0 of the attack, and the variants to run."""

    def __init__(self, ctx: StageContext):
        cfg, res = ctx.cfg, ctx.resources
        self.ctx, self.res, self.ac, self.conf = ctx, res, cfg.audit, cfg.evaluation.confidence
        self.acfg = acfg = audited_attack(cfg)
        kind = KINDS.get(acfg.kind)
        self.deterministic = acfg.noise != "stochastic" or (kind is not None and kind.deterministic)
        purifier = res.purifier(noise_mod.named(ctx.seed("unseeded")))
        if purifier is None:
            raise ValueError("stage 'audit' audits a purified classifier: models.diffusion must not be 'none'")
        self.classifier, self.device, self.data = res.classifier(), res.device, res.data()
        self.defended = DefendedClassifier(self.classifier, purifier).to(self.device)
        self.n = n = min(self.ac.examples, len(self.data))
        size = cfg.data.batch_size
        self.batches = [(lo, min(lo + size, n)) for lo in range(0, n, size)]
        # the attacks stage's seeds of this attack's seed 0: the variants are paired with its outcomes
        self.eval_seed = derive_seed(cfg.seed, "attacks", "eval", acfg.name, 0)
        self.attack_seed = derive_seed(cfg.seed, "attacks", "attack", acfg.name, 0)
        self.large = large_budget(acfg, int(self.data.x[0].numel()), self.ac.large_eps)
        self.todo = planned(acfg, self.ac, self.large)

    def examples(self, lo: int, hi: int):
        d = self.data
        return d.x[lo:hi].to(self.device), d.y[lo:hi].to(self.device), d.uids[lo:hi].to(self.device)

    def load_state(self) -> dict:
        """The checkpoint, or a new state; the attack's own outcomes taken from the ``attacks`` stage
        when it ran before (the same seeds: the same outcomes)."""
        state = self.ctx.load_checkpoint() or {"outcomes": {}}
        done_before = (self.ctx.previous.get("attacks") or {}).get("per_example", {}).get(
            outcome_key(ORIGINAL, self.acfg.name, 0), {}).get(SINGLE)
        if "attack" not in state["outcomes"] and done_before is not None and len(done_before) >= self.n:
            state["outcomes"]["attack"] = [float(v) for v in done_before[:self.n]]
        return state

    def judged(self, x_adv, y, uids) -> list[float]:
        with torch.no_grad():
            return (self.defended(x_adv, uids, seed=self.eval_seed).argmax(1) == y).float().tolist()

    def outcomes_of(self, name: str, x, y, uids) -> list[float]:
        """Per example of one batch: correct under variant ``name``, judged by the defence."""
        acfg, vcfg = self.acfg, self.todo[name]
        if name == "noise":  # worst of R random points of norm eps
            ok = torch.ones_like(y, dtype=torch.bool)
            for r in range(self.ac.noise_samples):
                x_r = rules.random_points(x, uids, acfg.norm, acfg.eps, self.ctx.seed("noise", r))
                ok &= torch.tensor(self.judged(x_r, y, uids), device=self.device).bool()
            return ok.float().tolist()
        attack = build_attack(vcfg, eval_seed=self.eval_seed, attack_seed=self.attack_seed)
        if name == "transfer":
            return self.judged(attack(PlainModel(self.classifier), x, y, uids), y, uids)
        model = attacker_view(attacker_model(self.res, vcfg, self.defended), vcfg.gradient)
        return self.judged(attack(model, x, y, uids), y, uids)

    def run_variants(self, state: dict) -> None:
        """Every variant not in ``state`` yet, batch by batch; checkpointed after each variant."""
        names, n = list(self.todo), self.n
        for j, name in enumerate(names):
            if name in state["outcomes"]:
                continue
            values: list[float] = []
            for lo, hi in self.batches:
                values += self.outcomes_of(name, *self.examples(lo, hi))
                self.ctx.progress(j * n + hi, len(names) * n + 1, message=f"audit of {self.acfg.name}: {name}")
            state["outcomes"][name] = values
            self.ctx.metric("audit_variant", j, variant=name, accuracy=sum(values) / len(values))
            self.ctx.save_checkpoint(state)

    def variant_flags(self, out: dict) -> list[dict]:
        """The flags of the checks that compare variants' outcomes with the attack's."""
        acfg, ac, conf, flags = self.acfg, self.ac, self.conf, []
        if "large-eps" in out:
            flags.append(rules.large_eps_flag(out["large-eps"], acfg.eps, self.large, ac.large_eps_accuracy, conf))
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
        return flags

    def gradient_flags(self) -> list[dict]:
        """The flags of independent EOT-K gradient estimates at the clean input (eot-convergence, zero-gradients)."""
        acfg, ac, flags = self.acfg, self.ac, []
        if "eot-convergence" not in ac.checks and "zero-gradients" not in ac.checks:
            return flags
        x, y, uids = self.examples(0, self.n)
        ks = [1] if self.deterministic else ac.eot_ks
        seed_of = (lambda k, part: self.eval_seed) if self.deterministic else \
            (lambda k, part: self.ctx.seed("eot", k, part))
        model = attacker_view(attacker_model(self.res, acfg, self.defended), acfg.gradient)
        conv = rules.eot_convergence(model, x, y, uids, ks, acfg.loss or "ce", seed_of, acfg.eot_chunk)
        if "eot-convergence" in ac.checks:
            flags.append(rules.eot_convergence_flag(conv, ac.cosine, acfg.eot, ac.eot_limit, self.deterministic))
        if "zero-gradients" in ac.checks:
            flags.append(rules.zero_gradient_flag(conv["zero_share"], self.n))
        return flags


def run(ctx: StageContext) -> dict:
    if not ctx.cfg.attacks:
        raise ValueError("stage 'audit' audits an attack: add an [[attacks]] entry")
    audit = Audit(ctx)
    state = audit.load_state()
    audit.run_variants(state)
    out = state["outcomes"]
    flags = audit.variant_flags(out) + audit.gradient_flags()
    raised = [f["name"] for f in flags if f["raised"]]
    ctx.log(f"audit of {audit.acfg.name}: " + (f"raised {', '.join(raised)}" if raised else "no flag raised"))
    return {"audit": {"attack": audit.acfg.name, "examples": audit.n, "raised": raised, "flags": flags},
            "per_example": out}
