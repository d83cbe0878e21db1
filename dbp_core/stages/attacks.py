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
from .registry import ATTACK_ROWS, N_PURIFICATION_BASELINES, N_PURIFICATION_OUTCOMES, attack_outcomes

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
    if "single" in wanted:
        out["single"] = (_logits(defended, x_adv, uids, eval_seed).argmax(1) == y).int().tolist()
    if "purified" in wanted:
        out["purified"] = (_logits(defended, x, uids, eval_seed).argmax(1) == y).int().tolist()
    names = dict(zip(("avg", "worst", "majority", "ensemble"), N_PURIFICATION_OUTCOMES))
    fresh_first = None
    if wanted & set(N_PURIFICATION_OUTCOMES):
        fresh_logits = _repurified(defended, x_adv, uids, fresh_seeds)
        fresh_first = fresh_logits[0]
        out.update({names[k]: v for k, v in n_purification_outcomes(fresh_logits, y).items() if names[k] in wanted})
    if "fresh-noise" in wanted:
        if fresh_first is None:
            fresh_first = _logits(defended, x_adv, uids, fresh_seeds[0])
        out["fresh-noise"] = (fresh_first.argmax(1) == y).int().tolist()
    baselines = dict(zip(("avg", "worst", "majority", "ensemble"), N_PURIFICATION_BASELINES))
    if wanted & set(N_PURIFICATION_BASELINES):
        clean = n_purification_outcomes(_repurified(defended, x, uids, fresh_seeds), y)
        out.update({baselines[k]: v for k, v in clean.items() if baselines[k] in wanted})
    if "clean" in wanted:
        with torch.no_grad():
            out["clean"] = (classifier(x).argmax(1) == y).int().tolist()
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
    """The defended models to attack: the configured one ("original") and every diffusion model
    an earlier ``addt`` stage fine-tuned (its variants, e.g. "addt" and "control")."""
    res = ctx.resources
    classifier = res.classifier()
    out = {}
    variants = (ctx.previous.get("addt") or {}).get("variants", {})
    for label, path in [("original", None)] + [(k, v["model"]) for k, v in variants.items()]:
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


def outcome_key(model: str, attack: str, seed: int) -> str:
    return f"{attack}/{seed}" if model == "original" else f"{model}:{attack}/{seed}"


@dist.all_ranks  # under torchrun every rank attacks its shard of each batch
def run(ctx: StageContext) -> dict:
    """The ``attacks`` stage (see the module docstring). Checkpoints after every batch."""
    cfg, res = ctx.cfg, ctx.resources
    if not cfg.attacks:
        raise ValueError("stage 'attacks' needs at least one [[attacks]] entry")
    data, classifier, device = res.data(), res.classifier(), res.device
    models = defences(ctx)
    ev = cfg.evaluation
    batches = data.batches(cfg.data.batch_size)
    jobs = [(m, a, s, b) for m in models for a in range(len(cfg.attacks)) for s in range(ev.seeds)
            for b in range(len(batches))]
    state = ctx.load_checkpoint() or {"next": 0, "outcomes": {}}
    undefended_cache: dict = {}  # in memory only: a resumed run recomputes (deterministically)
    logged: set[str] = set()
    last_progress = [0.0]
    total = len(jobs) and sum(hi - lo for lo, hi in batches) * len(cfg.attacks) * ev.seeds * len(models)
    done = sum(batches[b][1] - batches[b][0] for _, _, _, b in jobs[:state["next"]])
    logged_plans: set[str] = set()
    for j in range(state["next"], len(jobs)):
        m, a, s, b = jobs[j]
        acfg, defended = cfg.attacks[a], models[m]
        lo, hi = batches[b]
        sel = dist.shard_indices(lo, hi)  # slice(lo, hi) single-process; this rank's share under torchrun
        x, y, uids = data.x[sel].to(device), data.y[sel].to(device), data.uids[sel].to(device)
        eval_seed = ctx.seed("eval", acfg.name, s)
        attack_seed = ctx.seed("attack", acfg.name, s)

        message = f"{acfg.name} seed {s}" + ("" if m == "original" else f" ({m})")

        def on_iteration(i, loss, success, _a=acfg.name, _s=s, _b=b, _n=len(uids), _m=m, _done=done, _size=hi - lo,
                         _msg=message, _iters=max(acfg.iterations, 1)):
            ctx.metric("attack_iter", i, attack=_a if _m == "original" else f"{_m}:{_a}", seed=_s, batch=_b, n=_n,
                       loss=loss, success=success)
            now = time.monotonic()
            if now - last_progress[0] >= PROGRESS_EVERY_S:  # a live bar within a long batch, not a write per step
                last_progress[0] = now
                ctx.progress(_done + _size * min(i + 1, _iters) // _iters, total, message=_msg)

        def batch_outcomes():
            attack = build_attack(acfg, eval_seed=eval_seed, attack_seed=attack_seed, on_iteration=on_iteration)
            x_adv = attack(attacker_view(attacker_model(res, acfg, defended), acfg.gradient), x, y, uids)
            for w in getattr(attack, "warnings", ()):  # AutoAttack's own flags (checks.py)
                if w not in logged:
                    logged.add(w)
                    ctx.log(f"{acfg.name}: AutoAttack: {w}")
            wanted = attack_outcomes(ev.protocols, _replays(acfg))
            n_fresh = ev.n_repurify if wanted & {*N_PURIFICATION_OUTCOMES, *N_PURIFICATION_BASELINES} else 1
            fresh = [ctx.seed("fresh", acfg.name, s, r) for r in range(n_fresh)]
            out = judge(defended, classifier, x, x_adv, y, uids, eval_seed=eval_seed, fresh_seeds=fresh,
                        wanted=wanted)
            if "undefended" in wanted:
                out["undefended"] = _undefended(classifier, acfg, x, y, uids, attack_seed, undefended_cache,
                                                where=tuple(uids.tolist()))
            return out
        try:
            out = dist.outcomes_by_uid(uids, batch_outcomes)  # every rank's share, in uid order
        except PluginError as exc:  # user code broke its contract: say where in the run
            raise PluginError(f"{exc} (attack '{acfg.name}', seed {s}, batch {b + 1} of {len(batches)}: examples "
                              f"{lo}..{hi - 1})") from exc
        acc = state["outcomes"].setdefault(outcome_key(m, acfg.name, s), {})
        for k, v in out.items():
            acc.setdefault(k, []).extend(v)
        state["next"] = j + 1
        ctx.save_checkpoint(state)
        done += hi - lo
        if acc.get("single"):
            ctx.metric("attack_batch", b, attack=acfg.name, model=m, seed=s, done=len(acc["single"]),
                       robust_acc=sum(acc["single"]) / len(acc["single"]))
        ctx.progress(done, total, message=message)
        plan = getattr(getattr(defended, "purifier", None), "last_plan", None)
        if plan is not None and plan.describe() not in logged_plans:  # purifier.memory_budget
            logged_plans.add(plan.describe())
            ctx.log(f"{m}: {plan.describe()}")
    if cfg.purifier.memory_budget is not None:
        from ..purifier.memory import process_peak_bytes
        peak, what = process_peak_bytes(device)
        ctx.log(f"measured peak memory: {peak / 2**30:.3f} GB ({what}; purifier.memory_budget = "
                f"{cfg.purifier.memory_budget} GB bounds the gradient's share of it)")
    return summarize(cfg, state["outcomes"], len(data), list(models))


# N-purification protocols: (attacked row, its unattacked baseline row, what the comparison says)
N_PURIFICATION = [("repurify-worst", "purified-worst", "repurify", "attack vs no attack, worst of N"),
                  ("majority", "purified-majority", "majority", "attack vs no attack, majority of N"),
                  ("ensemble", "purified-ensemble", "ensemble", "attack vs no attack, ensemble of N"),
                  ("any-wrong", "purified-any-wrong", "any-wrong", "attack vs no attack, any of N wrong")]
# worst case over the suite: (row, per-example outcome it takes the minimum of, protocol that enables it)
WORST_CASE = [("worst-case", "single", "single"), ("worst-case-avg", "repurify-avg", "repurify"),
              ("worst-case-majority", "majority", "majority"), ("worst-case-ensemble", "ensemble", "ensemble")]


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


def worst_case(outcomes: dict, names: list[str], key: str, seeds: int, model: str = "original") -> list[float]:
    """Per (seed, example), seed-major: the minimum of outcome ``key`` over the attacks ``names``
    (an example counts as correct only if it is correct under every attack)."""
    per_attack = [_pooled(outcomes, n, key, seeds, model) for n in names]
    if not per_attack or any(len(v) != len(per_attack[0]) or not v for v in per_attack):
        return []
    return [min(vals) for vals in zip(*per_attack)]


def _pooled(outcomes: dict, name: str, key: str, seeds: int, model: str = "original") -> list[float]:
    return [v for s in range(seeds) for v in outcomes.get(outcome_key(model, name, s), {}).get(key, [])]


def label_of(model: str, attack: str, protocol: str) -> str:
    """``[model:]attack:protocol``: the label of a row in ``comparisons``."""
    return f"{attack}:{protocol}" if model == "original" else f"{model}:{attack}:{protocol}"


def summarize(cfg, outcomes: dict, n_examples: int, models: list[str] = ("original",)) -> dict:
    """Accuracy rows (pooled over seeds, with per-seed values) and paired comparisons: within a
    model (attack vs no attack, replayed vs fresh noise, attack vs attack) and across models
    (each fine-tuned variant vs the original, ADDT vs its control) on the same examples and seeds."""
    ev, conf = cfg.evaluation, cfg.evaluation.confidence
    rows, comparisons = [], []

    keys = {protocol: key for protocol, key, _ in ATTACK_ROWS}

    def compare(what, model_a, attack_a, proto_a, model_b, attack_b, proto_b):
        a = _pooled(outcomes, attack_a, keys.get(proto_a, proto_a), ev.seeds, model_a)
        b = _pooled(outcomes, attack_b, keys.get(proto_b, proto_b), ev.seeds, model_b)
        if a and b:
            comparisons.append({"a": label_of(model_a, attack_a, proto_a), "b": label_of(model_b, attack_b, proto_b),
                                "what": what, **paired_difference(a, b, conf, seeds=ev.seeds)})

    def add_row(model, attack, protocol, pooled, **extra):
        per_seed = [sum(pooled[s * n:(s + 1) * n]) / n for s in range(ev.seeds)] if (n := len(pooled) // ev.seeds) \
            else []
        rows.append(accuracy_row(protocol, round(sum(pooled)), len(pooled), stage="attacks", attack=attack,
                                 confidence=conf, per_seed=per_seed, seeds=ev.seeds, pooled=pooled, model=model,
                                 mean=sum(pooled) / len(pooled), **extra))

    for model in models:
        for acfg in cfg.attacks:
            for protocol, key, enabled_by in ATTACK_ROWS:
                if enabled_by not in ev.protocols:
                    continue
                if protocol == "fresh-noise" and not _replays(acfg):
                    continue  # for a stochastic attacker this is the same as `single`
                pooled = _pooled(outcomes, acfg.name, key, ev.seeds, model)
                if pooled:
                    add_row(model, acfg.name, protocol, pooled, kind=acfg.kind, norm=acfg.norm, eps=acfg.eps)
            compare("attack vs no attack", model, acfg.name, "single", model, acfg.name, "purified")
            for attacked, baseline, enabled_by, what in N_PURIFICATION:
                if enabled_by in ev.protocols:
                    compare(what, model, acfg.name, attacked, model, acfg.name, baseline)
            for protocol in ("majority", "ensemble"):
                if protocol in ev.protocols:
                    compare(f"{protocol} of N vs single purification", model, acfg.name, protocol, model,
                            acfg.name, "single")
            if _replays(acfg):
                compare("replayed vs fresh noise", model, acfg.name, "single", model, acfg.name, "fresh-noise")
        for i, a in enumerate(cfg.attacks):
            for b in cfg.attacks[i + 1:]:
                if a.norm == b.norm:
                    compare("attack vs attack", model, a.name, "single", model, b.name, "single")
        if "worst-case" in ev.protocols:
            for label, group in suites(cfg.attacks).items():
                names = [a.name for a in group]
                for protocol, key, enabled_by in WORST_CASE:
                    if enabled_by not in ev.protocols:
                        continue
                    pooled = worst_case(outcomes, names, key, ev.seeds, model)
                    if not pooled:
                        continue
                    add_row(model, label, protocol, pooled, kind="worst-case", norm=group[0].norm, eps=group[0].eps,
                            attacks=names)
                    for name in names:  # how much the suite adds to each attack alone
                        b = _pooled(outcomes, name, key, ev.seeds, model)
                        comparisons.append({"a": label_of(model, label, protocol), "b": label_of(model, name, key),
                                            "what": "worst case over the suite vs one attack",
                                            **paired_difference(pooled, b, conf, seeds=ev.seeds)})
    for model in models:
        if model == "original":
            continue
        for acfg in cfg.attacks:
            for proto in ("single", "purified"):
                compare(f"{model} vs original", model, acfg.name, proto, "original", acfg.name, proto)
                if model != "control" and "control" in models:
                    compare(f"{model} vs control", model, acfg.name, proto, "control", acfg.name, proto)
    return {"accuracies": rows, "comparisons": comparisons, "attacks": [a.name for a in cfg.attacks],
            "models": list(models), "n": n_examples, "per_example": outcomes}
