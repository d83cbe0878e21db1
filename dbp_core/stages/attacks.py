"""The ``attacks`` stage: the attack study's evaluation protocol (docs/results.md, docs/science.md).

For every attack of the config, every attack seed s < ``evaluation.seeds`` and every
batch of examples (uid order), the attack runs against the attacker's model and the
adversarial examples are judged by the defence:

* ``single``     — one purification per example with the evaluation seed E(attack, s)
                   (the paper's protocol). A DW-box attacker was handed E: for it this
                   is accuracy under the *replayed* noise.
* ``fresh-noise``— one purification with a different, fresh seed: for DW-box, how much
                   of the drop stochasticity wins back (the paper's point).
* ``repurify``   — average and worst case over ``n_repurify`` fresh purifications
                   (DiffHammer's stricter view); ``majority`` — their majority vote (Lee & Kim
                   2023; DiffBreak's default); ``ensemble`` — the argmax of their mean logits;
                   ``any-wrong`` — correct only if all N are (DiffBreak's "single" mode: the
                   attack wins if any purification is wrong; the number is ``repurify-worst``).
* ``undefended`` — the bare classifier under the same attack settings (EOT 1).
* ``purified``   — the unattacked examples under the same seed E (the paired baseline), and the
                   unattacked examples under each N-purification protocol.
* ``worst-case`` — per example, the worst over every attack of the same norm, eps and knowledge
                   of the noise (correct only if correct under each), for ``single`` and each
                   N-purification protocol.

Every seed is derived from the run seed, the attack's name, s and the purpose, and noise
is addressed by uid: the numbers do not depend on batch size, order or resumption.
Per attack iteration the attacker's own view (loss, success rate) goes to metrics.jsonl.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .. import dist
from ..attacks import PlainModel
from ..attacks.gradients import attacker_view
from ..attacks.registry import KINDS, build_attack, undefended_config
from ..models.defended import DefendedClassifier
from ..models.loaders import load_model_file, trusted_hashes
from ..plugins import PluginError
from ..purifier import noise as noise_mod
from ..purifier.purifier import Purifier
from ..stats import accuracy_row, paired_difference
from .context import StageContext, purifier_options
from .registry import (ANY_WRONG, ATTACK_ROWS, CLEAN, CONTROL_MODEL, ENSEMBLE, FRESH_NOISE, MAJORITY,
                       N_PURIFICATION_BASELINES, N_PURIFICATION_OUTCOMES, ORIGINAL, PURIFIED, PURIFIED_WORST, REPURIFY,
                       REPURIFY_AVG, REPURIFY_WORST, SINGLE, UNDEFENDED, WORST_CASE, attack_outcomes)

PROGRESS_EVERY_S = 1.0  # status.json updates from inside an attack batch, at most this often


def attacker_model(res, acfg, defended: DefendedClassifier) -> DefendedClassifier:
    """The defence as the attacker sees it: the same model, or a surrogate chain (steps, sampler)."""
    if acfg.surrogate_steps is None and acfg.surrogate_sampler is None:
        return defended
    surrogate = Purifier(defended.purifier.eps_model, **purifier_options(res.cfg.purifier, acfg.surrogate_sampler,
                                                                          acfg.surrogate_steps))
    return DefendedClassifier(defended.classifier, surrogate)


def _logits(model, x, uids, seed) -> torch.Tensor:
    with torch.no_grad():
        return model(x, uids, seed=seed)


def _repurified(defended, x, uids, seeds: list[int]) -> torch.Tensor:
    """[N, B, classes] logits of N purifications with the given seeds."""
    return torch.stack([_logits(defended, x, uids, s) for s in seeds])


def vote(preds: torch.Tensor, classes: int) -> torch.Tensor:
    """[B] majority vote of [N, B] predictions; a tie goes to the lowest class index."""
    return torch.nn.functional.one_hot(preds, num_classes=classes).sum(0).argmax(1)


def n_purification_outcomes(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per example, from [N, B, classes] logits of N purifications: the share correct, all correct
    (the worst case; "any of N wrong" is its complement), the majority vote and the logit-averaged
    ensemble (docs/science.md, "Evaluation protocol")."""
    correct = (logits.argmax(2) == y).float()
    return {"avg": correct.mean(0), "worst": correct.min(0).values,
            "majority": (vote(logits.argmax(2), logits.shape[2]) == y).float(),
            "ensemble": (logits.mean(0).argmax(1) == y).float()}


def judge(defended, classifier, x, x_adv, y, uids, *, eval_seed: int, fresh_seeds: list[int],
          wanted: set[str]) -> dict:
    """Per-example outcomes of one batch of adversarial examples (lists, JSON-able): only the
    ``wanted`` ones (``registry.attack_outcomes``), so a protocol nobody listed costs nothing.

    ``fresh-noise`` is one purification with ``fresh_seeds[0]``; ``repurify-*`` / ``majority`` /
    ``ensemble`` take all of ``fresh_seeds``; ``purified-avg`` / ``-worst`` / ``-majority`` /
    ``-ensemble`` are the unattacked examples under the same N fresh purifications: the baselines
    of the N-purification protocols (the defence's own instability)."""
    out: dict[str, list] = {}
    if SINGLE in wanted:
        out[SINGLE] = (_logits(defended, x_adv, uids, eval_seed).argmax(1) == y).int().tolist()
    if PURIFIED in wanted:
        out[PURIFIED] = (_logits(defended, x, uids, eval_seed).argmax(1) == y).int().tolist()
    names = dict(zip(("avg", "worst", "majority", "ensemble"), N_PURIFICATION_OUTCOMES))
    fresh_first = None
    if wanted & set(N_PURIFICATION_OUTCOMES):
        fresh_logits = _repurified(defended, x_adv, uids, fresh_seeds)
        fresh_first = fresh_logits[0]
        out.update({names[k]: v for k, v in n_purification_outcomes(fresh_logits, y).items() if names[k] in wanted})
    if FRESH_NOISE in wanted:
        if fresh_first is None:
            fresh_first = _logits(defended, x_adv, uids, fresh_seeds[0])
        out[FRESH_NOISE] = (fresh_first.argmax(1) == y).int().tolist()
    baselines = dict(zip(("avg", "worst", "majority", "ensemble"), N_PURIFICATION_BASELINES))
    if wanted & set(N_PURIFICATION_BASELINES):
        clean = n_purification_outcomes(_repurified(defended, x, uids, fresh_seeds), y)
        out.update({baselines[k]: v for k, v in clean.items() if baselines[k] in wanted})
    if CLEAN in wanted:
        with torch.no_grad():
            out[CLEAN] = (classifier(x).argmax(1) == y).int().tolist()
    # outcomes of one purification are 0/1; the share of N correct ("-avg") is a float
    return {k: v.int().tolist() if isinstance(v, torch.Tensor) and not k.endswith("-avg") else
            v.tolist() if isinstance(v, torch.Tensor) else v for k, v in out.items()}


def _undefended(classifier, acfg, x, y, uids, attack_seed, cache: dict, where) -> list[int]:
    """The bare classifier under the same attack settings (no purifier, EOT 1, exact gradients:
    ``registry.undefended_config``). PGD, PGD-EOT, DW-box and BPDA of equal settings are one and
    the same attack on a deterministic classifier (and so are the fine-tuned variants, which share
    the classifier): computed once per batch."""
    ucfg = undefended_config(acfg)
    if ucfg is None:
        return []
    settings = ucfg.model_dump(exclude={"name", "surrogate_steps", "surrogate_sampler", "eot_chunk"})
    seeded = ucfg.random_start or ucfg.kind not in KINDS  # a plugin's draws come from its attack seed
    key = (where, repr(sorted(settings.items())), attack_seed if seeded else None)
    if key not in cache:
        atk = build_attack(ucfg, eval_seed=0, attack_seed=attack_seed)
        x_adv = atk(PlainModel(classifier), x, y, uids)
        with torch.no_grad():
            cache[key] = (classifier(x_adv).argmax(1) == y).int().tolist()
    return cache[key]


def defences(ctx) -> dict[str, DefendedClassifier]:
    """The defended models to attack: the configured one (``ORIGINAL``) and every diffusion model
    an earlier ``addt`` stage fine-tuned (its variants, e.g. "addt" and "control")."""
    res = ctx.resources
    classifier = res.classifier()
    out = {}
    variants = (ctx.previous.get("addt") or {}).get("variants", {})
    for label, path in [(ORIGINAL, None)] + [(k, v["model"]) for k, v in variants.items()]:
        purifier = res.purifier(noise_mod.named(ctx.seed("unseeded", label)))
        if purifier is None:
            raise ValueError("stage 'attacks' attacks a purified classifier: models.diffusion must not be 'none'")
        if path is not None:  # recorded relative to the run folder (absolute in runs made before)
            purifier.eps_model = load_model_file(ctx.run_file(path), "diffusion", "auto",
                                                 trusted_hashes(res.cfg.models.trust_pickle)).to(res.device)
        out[label] = DefendedClassifier(classifier, purifier).to(res.device)  # the classifier normalises
    return out


def _replays(acfg) -> bool:
    """Does the attacker replay the defence's noise (DW-box, or a plugin that declared it)? Then its
    examples are also judged under fresh noise."""
    return acfg.noise != "stochastic"


def model_scoped(model: str, name: str) -> str:
    """``name`` of the configured defence as is, of a fine-tuned variant as ``model:name``."""
    return name if model == ORIGINAL else f"{model}:{name}"


def outcome_key(model: str, attack: str, seed: int) -> str:
    return model_scoped(model, f"{attack}/{seed}")


@dataclass(frozen=True)
class Job:
    """One unit of the stage's work, checkpointed after it: a batch of one attack seed against one
    defended model (``attack`` indexes ``cfg.attacks``, ``batch`` the data's batches)."""
    model: str
    attack: int
    seed: int
    batch: int


class Throttle:
    """True at most once every ``every`` seconds (monotonic clock)."""

    def __init__(self, every: float):
        self.every, self.last = every, 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.every:
            return False
        self.last = now
        return True


@dataclass
class IterationReporter:
    """``on_iteration`` of one job's attack: the attacker's view of every iteration to metrics.jsonl
    and a live progress bar within the batch (``done`` examples before it, ``size`` in it), not a
    status write per step."""
    ctx: StageContext
    job: Job
    attack: str
    n: int  # examples attacked here (this rank's share under torchrun)
    done: int
    size: int
    total: int
    message: str
    iterations: int
    throttle: Throttle

    def __call__(self, i: int, loss: float, success: float) -> None:
        self.ctx.metric("attack_iter", i, attack=model_scoped(self.job.model, self.attack), seed=self.job.seed,
                        batch=self.job.batch, n=self.n, loss=loss, success=success)
        if self.throttle.due():
            self.ctx.progress(self.done + self.size * min(i + 1, self.iterations) // self.iterations, self.total,
                              message=self.message)


class AttackStudy:
    """The stage's loop over its jobs: what stays fixed over a run (config, data, the defended
    models, batches) and what it remembers between jobs (the undefended outcomes, in memory only:
    a resumed run recomputes them deterministically; the warnings and memory plans already logged)."""

    def __init__(self, ctx: StageContext):
        self.ctx, self.cfg, self.res = ctx, ctx.cfg, ctx.resources
        self.data, self.classifier, self.device = self.res.data(), self.res.classifier(), self.res.device
        self.models = defences(ctx)
        ev = self.cfg.evaluation
        self.batches = self.data.batches(self.cfg.data.batch_size)
        self.jobs = [Job(m, a, s, b) for m in self.models for a in range(len(self.cfg.attacks)) for s in range(ev.seeds)
                     for b in range(len(self.batches))]
        self.total = len(self.jobs) and sum(hi - lo for lo, hi in self.batches) * len(self.cfg.attacks) * ev.seeds \
            * len(self.models)
        self.undefended_cache: dict = {}
        self.logged: set[str] = set()
        self.logged_plans: set[str] = set()
        self.throttle = Throttle(PROGRESS_EVERY_S)

    def size(self, job: Job) -> int:
        lo, hi = self.batches[job.batch]
        return hi - lo

    def message(self, job: Job) -> str:
        return f"{self.cfg.attacks[job.attack].name} seed {job.seed}" + ("" if job.model == ORIGINAL
                                                                          else f" ({job.model})")

    def run(self, state: dict) -> None:
        """Every job from ``state["next"]`` on; the state is checkpointed after each."""
        done = sum(self.size(job) for job in self.jobs[:state["next"]])
        for j in range(state["next"], len(self.jobs)):
            job = self.jobs[j]
            acc = self.record(state, job, self.attack(job, done))
            state["next"] = j + 1
            self.ctx.save_checkpoint(state)
            done += self.size(job)
            self.report(job, acc, done)

    def attack(self, job: Job, done: int) -> dict:
        """Per-example outcomes of one job: every rank's share of the batch, in uid order."""
        acfg = self.cfg.attacks[job.attack]
        lo, hi = self.batches[job.batch]
        sel = dist.shard_indices(lo, hi)  # slice(lo, hi) single-process; this rank's share under torchrun
        x, y, uids = self.data.x[sel].to(self.device), self.data.y[sel].to(self.device), \
            self.data.uids[sel].to(self.device)
        hook = IterationReporter(self.ctx, job, acfg.name, len(uids), done, hi - lo, self.total, self.message(job),
                                 max(acfg.iterations, 1), self.throttle)
        try:
            return dist.outcomes_by_uid(uids, lambda: self.outcomes(job, x, y, uids, hook))
        except PluginError as exc:  # user code broke its contract: say where in the run
            raise PluginError(f"{exc} (attack '{acfg.name}', seed {job.seed}, batch {job.batch + 1} of "
                              f"{len(self.batches)}: examples {lo}..{hi - 1})") from exc

    def outcomes(self, job: Job, x, y, uids, hook: IterationReporter) -> dict:
        """This rank's outcomes of one job: the attack against the attacker's model, its examples judged."""
        acfg, defended, ctx = self.cfg.attacks[job.attack], self.models[job.model], self.ctx
        ev = self.cfg.evaluation
        eval_seed, attack_seed = ctx.seed("eval", acfg.name, job.seed), ctx.seed("attack", acfg.name, job.seed)
        attack = build_attack(acfg, eval_seed=eval_seed, attack_seed=attack_seed, on_iteration=hook)
        x_adv = attack(attacker_view(attacker_model(self.res, acfg, defended), acfg.gradient), x, y, uids)
        self.log_once(self.logged, getattr(attack, "warnings", ()), f"{acfg.name}: AutoAttack: ")  # checks.py
        wanted = attack_outcomes(ev.protocols, _replays(acfg))
        n_fresh = ev.n_repurify if wanted & {*N_PURIFICATION_OUTCOMES, *N_PURIFICATION_BASELINES} else 1
        fresh = [ctx.seed("fresh", acfg.name, job.seed, r) for r in range(n_fresh)]
        out = judge(defended, self.classifier, x, x_adv, y, uids, eval_seed=eval_seed, fresh_seeds=fresh,
                    wanted=wanted)
        if UNDEFENDED in wanted:
            out[UNDEFENDED] = _undefended(self.classifier, acfg, x, y, uids, attack_seed, self.undefended_cache,
                                          where=tuple(uids.tolist()))
        return out

    def log_once(self, seen: set[str], lines, prefix: str) -> None:
        for line in lines:
            if line not in seen:
                seen.add(line)
                self.ctx.log(prefix + line)

    def record(self, state: dict, job: Job, out: dict) -> dict:
        """Append one job's outcomes to the state's; returns the outcomes of its attack seed so far."""
        acc = state["outcomes"].setdefault(outcome_key(job.model, self.cfg.attacks[job.attack].name, job.seed), {})
        for k, v in out.items():
            acc.setdefault(k, []).extend(v)
        return acc

    def report(self, job: Job, acc: dict, done: int) -> None:
        """After a job: the attack seed's robust accuracy so far, the progress bar, the memory plan."""
        if acc.get(SINGLE):
            self.ctx.metric("attack_batch", job.batch, attack=self.cfg.attacks[job.attack].name, model=job.model,
                            seed=job.seed, done=len(acc[SINGLE]), robust_acc=sum(acc[SINGLE]) / len(acc[SINGLE]))
        self.ctx.progress(done, self.total, message=self.message(job))
        plan = getattr(getattr(self.models[job.model], "purifier", None), "last_plan", None)
        if plan is not None:  # purifier.memory_budget
            self.log_once(self.logged_plans, [plan.describe()], f"{job.model}: ")


def log_peak_memory(ctx: StageContext, device) -> None:
    """Under ``purifier.memory_budget``: the process's measured peak, next to the budget."""
    from ..purifier.memory import process_peak_bytes
    peak, what = process_peak_bytes(device)
    ctx.log(f"measured peak memory: {peak / 2**30:.3f} GB ({what}; purifier.memory_budget = "
            f"{ctx.cfg.purifier.memory_budget} GB bounds the gradient's share of it)")


@dist.all_ranks  # under torchrun every rank attacks its shard of each batch
def run(ctx: StageContext) -> dict:
    """The ``attacks`` stage (see the module docstring). Checkpoints after every batch."""
    if not ctx.cfg.attacks:
        raise ValueError("stage 'attacks' needs at least one [[attacks]] entry")
    study = AttackStudy(ctx)
    state = ctx.load_checkpoint() or {"next": 0, "outcomes": {}}
    study.run(state)
    if ctx.cfg.purifier.memory_budget is not None:
        log_peak_memory(ctx, study.device)
    return summarize(ctx.cfg, state["outcomes"], len(study.data), list(study.models))


# N-purification protocols: (attacked row, its unattacked baseline row, what the comparison says)
N_PURIFICATION = [(REPURIFY_WORST, PURIFIED_WORST, REPURIFY, "attack vs no attack, worst of N"),
                  (MAJORITY, "purified-majority", MAJORITY, "attack vs no attack, majority of N"),
                  (ENSEMBLE, "purified-ensemble", ENSEMBLE, "attack vs no attack, ensemble of N"),
                  (ANY_WRONG, "purified-any-wrong", ANY_WRONG, "attack vs no attack, any of N wrong")]
# worst case over the suite: (row, per-example outcome it takes the minimum of, protocol that enables it)
WORST_CASE_ROWS = [(WORST_CASE, SINGLE, SINGLE), ("worst-case-avg", REPURIFY_AVG, REPURIFY),
                   ("worst-case-majority", MAJORITY, MAJORITY), ("worst-case-ensemble", ENSEMBLE, ENSEMBLE)]


def suite_label(acfg) -> str:
    """The ``attack`` of a worst-case row: every attack of one threat model (norm, eps) and one
    knowledge of the noise (a DW-box attacker who knows it is another threat model)."""
    return f"suite-{acfg.norm}-{acfg.eps:.4g}" + ("" if acfg.noise == "stochastic" else f"-{acfg.noise}")


def suites(attacks) -> dict[str, list]:
    """Attacks grouped by threat model, in config order; only groups of 2 or more."""
    groups: dict[str, list] = {}
    for a in attacks:
        groups.setdefault(suite_label(a), []).append(a)
    return {k: v for k, v in groups.items() if len(v) > 1}


def worst_case(outcomes: dict, names: list[str], key: str, seeds: int, model: str = ORIGINAL) -> list[float]:
    """Per (seed, example), seed-major: the minimum of outcome ``key`` over the attacks ``names``
    (an example counts as correct only if it is correct under every attack)."""
    per_attack = [_pooled(outcomes, n, key, seeds, model) for n in names]
    if not per_attack or any(len(v) != len(per_attack[0]) or not v for v in per_attack):
        return []
    return [min(vals) for vals in zip(*per_attack)]


def _pooled(outcomes: dict, name: str, key: str, seeds: int, model: str = ORIGINAL) -> list[float]:
    return [v for s in range(seeds) for v in outcomes.get(outcome_key(model, name, s), {}).get(key, [])]


def label_of(model: str, attack: str, protocol: str) -> str:
    """``[model:]attack:protocol``: the label of a row in ``comparisons``."""
    return model_scoped(model, f"{attack}:{protocol}")


class Summary:
    """The accuracy rows and paired comparisons of the per-example ``outcomes``, gathered in the
    order :func:`summarize` asks for them."""

    def __init__(self, cfg, outcomes: dict):
        self.cfg, self.outcomes = cfg, outcomes
        self.protocols, self.seeds, self.conf = cfg.evaluation.protocols, cfg.evaluation.seeds, \
            cfg.evaluation.confidence
        self.keys = {protocol: key for protocol, key, _ in ATTACK_ROWS}  # row name -> outcome it reads
        self.rows: list[dict] = []
        self.comparisons: list[dict] = []

    def pooled(self, model: str, attack: str, key: str) -> list[float]:
        return _pooled(self.outcomes, attack, key, self.seeds, model)

    def compare(self, what: str, model_a: str, attack_a: str, proto_a: str, model_b: str, attack_b: str,
                proto_b: str) -> None:
        a = self.pooled(model_a, attack_a, self.keys.get(proto_a, proto_a))
        b = self.pooled(model_b, attack_b, self.keys.get(proto_b, proto_b))
        if a and b:
            self.comparisons.append({"a": label_of(model_a, attack_a, proto_a),
                                     "b": label_of(model_b, attack_b, proto_b), "what": what,
                                     **paired_difference(a, b, self.conf, seeds=self.seeds)})

    def add_row(self, model: str, attack: str, protocol: str, pooled: list[float], **extra) -> None:
        seeds = self.seeds
        per_seed = [sum(pooled[s * n:(s + 1) * n]) / n for s in range(seeds)] if (n := len(pooled) // seeds) else []
        self.rows.append(accuracy_row(protocol, round(sum(pooled)), len(pooled), stage="attacks", attack=attack,
                                      confidence=self.conf, per_seed=per_seed, seeds=seeds, pooled=pooled,
                                      model=model, mean=sum(pooled) / len(pooled), **extra))

    def attack_rows(self, model: str, acfg) -> None:
        """One attack's rows: every listed protocol it has outcomes of."""
        for protocol, key, enabled_by in ATTACK_ROWS:
            if enabled_by not in self.protocols:
                continue
            if protocol == FRESH_NOISE and not _replays(acfg):
                continue  # for a stochastic attacker this is the same as `single`
            pooled = self.pooled(model, acfg.name, key)
            if pooled:
                self.add_row(model, acfg.name, protocol, pooled, kind=acfg.kind, norm=acfg.norm, eps=acfg.eps)

    def within_attack(self, model: str, acfg) -> None:
        """One attack's comparisons: attacked vs unattacked, N purifications vs one, replayed vs fresh noise."""
        name = acfg.name
        self.compare("attack vs no attack", model, name, SINGLE, model, name, PURIFIED)
        for attacked, baseline, enabled_by, what in N_PURIFICATION:
            if enabled_by in self.protocols:
                self.compare(what, model, name, attacked, model, name, baseline)
        for protocol in (MAJORITY, ENSEMBLE):
            if protocol in self.protocols:
                self.compare(f"{protocol} of N vs single purification", model, name, protocol, model, name, SINGLE)
        if _replays(acfg):
            self.compare("replayed vs fresh noise", model, name, SINGLE, model, name, FRESH_NOISE)

    def between_attacks(self, model: str) -> None:
        attacks = self.cfg.attacks
        for i, a in enumerate(attacks):
            for b in attacks[i + 1:]:
                if a.norm == b.norm:
                    self.compare("attack vs attack", model, a.name, SINGLE, model, b.name, SINGLE)

    def worst_cases(self, model: str) -> None:
        """Per threat model of 2+ attacks: the worst-case rows, and how much the suite adds to each attack."""
        for label, group in suites(self.cfg.attacks).items():
            names = [a.name for a in group]
            for protocol, key, enabled_by in WORST_CASE_ROWS:
                if enabled_by not in self.protocols:
                    continue
                pooled = worst_case(self.outcomes, names, key, self.seeds, model)
                if not pooled:
                    continue
                self.add_row(model, label, protocol, pooled, kind=WORST_CASE, norm=group[0].norm,
                             eps=group[0].eps, attacks=names)
                for name in names:
                    self.comparisons.append({"a": label_of(model, label, protocol), "b": label_of(model, name, key),
                                             "what": "worst case over the suite vs one attack",
                                             **paired_difference(pooled, self.pooled(model, name, key), self.conf,
                                                                 seeds=self.seeds)})

    def across_models(self, models: list[str]) -> None:
        """Each fine-tuned variant vs the original and (ADDT) vs its control, on the same examples and seeds."""
        for model in models:
            if model == ORIGINAL:
                continue
            for acfg in self.cfg.attacks:
                for proto in (SINGLE, PURIFIED):
                    self.compare(f"{model} vs {ORIGINAL}", model, acfg.name, proto, ORIGINAL, acfg.name, proto)
                    if model != CONTROL_MODEL and CONTROL_MODEL in models:
                        self.compare(f"{model} vs {CONTROL_MODEL}", model, acfg.name, proto, CONTROL_MODEL,
                                     acfg.name, proto)


def summarize(cfg, outcomes: dict, n_examples: int, models: list[str] = (ORIGINAL,)) -> dict:
    """Accuracy rows (pooled over seeds, with per-seed values) and paired comparisons: within a
    model (attack vs no attack, replayed vs fresh noise, attack vs attack) and across models
    (each fine-tuned variant vs the original, ADDT vs its control) on the same examples and seeds."""
    summary = Summary(cfg, outcomes)
    for model in models:
        for acfg in cfg.attacks:
            summary.attack_rows(model, acfg)
            summary.within_attack(model, acfg)
        summary.between_attacks(model)
        if WORST_CASE in cfg.evaluation.protocols:
            summary.worst_cases(model)
    summary.across_models(list(models))
    return {"accuracies": summary.rows, "comparisons": summary.comparisons, "attacks": [a.name for a in cfg.attacks],
            "models": list(models), "n": n_examples, "per_example": outcomes}
