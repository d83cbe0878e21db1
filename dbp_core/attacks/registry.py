"""Attack kinds: the single list of what ``[[attacks]].kind`` accepts (docs/design.md, "Registries").

Each kind says what its attacker knows of the defence's noise, its default EOT, which attack gives
its "undefended" baseline row (the same settings on the bare classifier, EOT 1), its defaults, the
fields it reads, any optional extra it needs, and how to build it from an ``[[attacks]]`` entry.
Light on purpose — no torch at import — so that ``dbp_core.config`` validates against it; a
constructor imports its attack class when it is called. A kind that is an import path
``package.module:callable`` is a plugin: ``attack(model, x, y, uids, cfg[, context=])`` under the
contract of ``attacks/plugin.py`` (docs/plugins.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .names import GRADIENTS, LOSSES, NOISE_KNOWLEDGE, NORMS, SELECTIONS

__all__ = ["AttackKind", "KINDS", "kind_names", "build_attack", "attack_template", "undefended_config",
           "plugin_noise", "NOISE_KNOWLEDGE", "NORMS", "LOSSES", "GRADIENTS", "SELECTIONS", "OPTIONAL_FIELDS"]

# fields of [[attacks]] that only some kinds read; a kind lists those it reads in `reads`
OPTIONAL_FIELDS = ("step", "restarts", "targets", "selection", "selection_samples", "evaluations", "queries",
                   "deviation_weight")


@dataclass(frozen=True)
class AttackKind:
    name: str
    summary: str
    noise: str  # one of NOISE_KNOWLEDGE: fresh noise, every draw replayed (DW-box), or the forward draw
    eot: int  # default purifications per gradient
    undefended: str | None  # the kind whose attack, EOT 1, on the bare classifier is the "undefended" row
    build: Callable[..., Any]  # (acfg, *, eval_seed, attack_seed, on_iteration) -> attack(model, x, y, uids)
    reads: tuple[str, ...] = ("step",)  # which of OPTIONAL_FIELDS it uses
    iterations: int = 20  # default iterations
    random_start: bool = False  # default
    loss: str | None = "ce"  # default loss; None: the kind runs its own losses (AutoAttack)
    losses: tuple[str, ...] = LOSSES  # the losses it accepts
    gradient: str = "exact"  # default gradient approximation (gradients.py)
    selection: str | None = None  # default APGD selection rule (names.SELECTIONS)
    extra: str | None = None  # optional extra of dbp-lab it needs ("autoattack")
    requires: str | None = None  # the module that extra installs
    deterministic: bool = False  # attacks only deterministic settings (noise replayed, EOT 1)
    gradients: tuple[str, ...] = GRADIENTS  # the gradient approximations it accepts
    template: dict = field(default_factory=dict)  # extra fields of a new ``[[attacks]]`` entry (attack_template)


def _common(acfg, attack_seed: int, on_iteration) -> dict:
    return dict(norm=acfg.norm, eps=acfg.eps, iterations=acfg.iterations, eot_chunk=acfg.eot_chunk,
                start_seed=attack_seed, on_iteration=on_iteration)


def _plan(acfg, eval_seed: int, attack_seed: int):
    """The attacker's noise: fresh per iteration, or the evaluation seed replayed (DW-box)."""
    from .base import NoisePlan
    if acfg.noise == "replay":
        return NoisePlan("replay", eval_seed)
    if acfg.noise == "replay-forward":
        return NoisePlan("replay-forward", eval_seed)
    return NoisePlan("fresh", attack_seed)


def _pgd(acfg, *, eval_seed: int, attack_seed: int, on_iteration=None):
    from .pgd import PGD
    return PGD(step=acfg.step, random_start=acfg.random_start, eot=acfg.eot, noise=_plan(acfg, eval_seed, attack_seed),
               loss=acfg.loss, **_common(acfg, attack_seed, on_iteration))


def _apgd(acfg, *, eval_seed: int, attack_seed: int, on_iteration=None):
    from .apgd import APGD
    return APGD(eot=acfg.eot, noise=_plan(acfg, eval_seed, attack_seed), random_start=acfg.random_start,
                restarts=acfg.restarts, loss=acfg.loss, targets=acfg.targets or 9, selection=acfg.selection,
                selection_samples=acfg.selection_samples, **_common(acfg, attack_seed, on_iteration))


def _autoattack_rand(acfg, *, eval_seed: int, attack_seed: int, on_iteration=None):
    from .autoattack_rand import AutoAttackRand
    return AutoAttackRand(eot=acfg.eot, evaluations=acfg.evaluations or 20, noise=_plan(acfg, eval_seed, attack_seed),
                          random_start=acfg.random_start, selection=acfg.selection,
                          **_common(acfg, attack_seed, on_iteration))


def _diffattack(acfg, *, eval_seed: int, attack_seed: int, on_iteration=None):
    from .diffattack import DiffAttack
    return DiffAttack(deviation_weight=acfg.deviation_weight, eot=acfg.eot, evaluations=acfg.evaluations or 20,
                      noise=_plan(acfg, eval_seed, attack_seed), random_start=acfg.random_start,
                      selection=acfg.selection, **_common(acfg, attack_seed, on_iteration))


def _autoattack_standard(acfg, *, eval_seed: int, attack_seed: int, on_iteration=None):
    from .autoattack_standard import AutoAttackStandard
    return AutoAttackStandard(norm=acfg.norm, eps=acfg.eps, iterations=acfg.iterations,
                              noise=_plan(acfg, eval_seed, attack_seed), start_seed=attack_seed,
                              queries=acfg.queries or 5000)


_APGD_READS = ("restarts", "targets", "selection", "selection_samples")

KINDS: dict[str, AttackKind] = {k.name: k for k in (
    AttackKind("pgd", "PGD with one fresh purification per gradient", "stochastic", 1, "pgd", _pgd),
    AttackKind("pgd-eot", "PGD with EOT gradients over fresh purifications", "stochastic", 10, "pgd", _pgd),
    AttackKind("dwbox", "DW-box: PGD replaying every noise draw of the evaluation", "replay", 1, "pgd", _pgd,
               deterministic=True),
    AttackKind("dwbox-forward", "DW-box replaying only the forward noise", "replay-forward", 1, "pgd", _pgd),
    AttackKind("bpda", "PGD with the purifier's backward replaced by the identity", "stochastic", 1, "pgd", _pgd,
               gradient="bpda"),
    AttackKind("apgd", "AutoAttack's APGD (CE, Margin or DLR), its selection rule; EOT as AutoAttack averages it",
               "stochastic", 1, "apgd", _apgd, reads=_APGD_READS, iterations=100, random_start=True,
               selection="autoattack"),
    AttackKind("apgd-t", "AutoAttack's APGD-T: targeted DLR on the 2nd..(targets+1)-th classes", "stochastic", 1,
               "apgd-t", _apgd, reads=_APGD_READS, iterations=100, random_start=True, loss="dlr-targeted",
               losses=("dlr-targeted",), selection="autoattack"),
    AttackKind("apgd-eot", "APGD with EOT and the stochastic selection rule (lowest share of correct "
               "purifications)", "stochastic", 10, "apgd", _apgd, reads=_APGD_READS, selection="lowest-correct"),
    AttackKind("autoattack-rand", "AutoAttack rand: APGD-CE then APGD-DLR, EOT 20, each point judged over 20 "
               "evaluations (the ICLR 2025 authors' fix)", "stochastic", 20, "autoattack-rand", _autoattack_rand,
               reads=("selection", "evaluations"), iterations=100, random_start=True, loss=None, losses=(),
               selection="autoattack"),
    AttackKind("diffattack", "DiffAttack: AutoAttack-rand on CE/DLR plus the deviated-reconstruction loss on the "
               "purifier's intermediate states (Kang et al. 2023), judged over 20 evaluations", "stochastic", 20,
               "autoattack-rand", _diffattack, reads=("selection", "evaluations", "deviation_weight"),
               iterations=100, random_start=True, loss=None, losses=(), selection="autoattack",
               gradients=("exact",)),
    AttackKind("autoattack-standard", "AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) through pyautoattack, "
               "on DW-box's replayed defence", "replay", 1, "autoattack-standard", _autoattack_standard,
               reads=("queries",), iterations=100, loss=None, losses=(), extra="autoattack",
               requires="pyautoattack", deterministic=True),
)}


def kind_names() -> tuple[str, ...]:
    return tuple(KINDS)


def attack_template(name: str) -> dict:
    """A new ``[[attacks]]`` entry of kind ``name`` (the console's "add attack"): the kind, the
    first norm, the kind's default iterations, its default EOT when it has one, then the kind's own
    ``template`` fields. Any registered kind has one, so a new kind needs no console change."""
    kind = KINDS[name]
    entry: dict = {"kind": name, "norm": NORMS[0], "iterations": kind.iterations}
    if kind.eot != 1:
        entry["eot"] = kind.eot
    return {**entry, **kind.template}


def build_attack(acfg, *, eval_seed: int, attack_seed: int, on_iteration=None):
    """The attack of one ``[[attacks]]`` entry: ``attack(model, x, y, uids) -> x_adv``."""
    kind = KINDS.get(acfg.kind)
    if kind is not None:
        return kind.build(acfg, eval_seed=eval_seed, attack_seed=attack_seed, on_iteration=on_iteration)
    from .plugin import PluginAttack  # the plugin contract: seeded noise, the context, checked outputs
    return PluginAttack(acfg, eval_seed=eval_seed, attack_seed=attack_seed, on_iteration=on_iteration)


def plugin_noise(kind: str) -> str | None:
    """What a plugin attack declares it knows of the defence's noise (its attribute ``noise``, one of
    NOISE_KNOWLEDGE; docs/plugins.md), or None when it declares nothing (stochastic)."""
    from ..plugins import resolve_import_path
    declared = getattr(resolve_import_path(kind), "noise", None)
    if declared is not None and declared not in NOISE_KNOWLEDGE:
        raise ValueError(f"plugin attack '{kind}' declares noise = {declared!r}; expected one of "
                         + ", ".join(repr(n) for n in NOISE_KNOWLEDGE))
    return declared


def undefended_config(acfg):
    """The ``[[attacks]]`` entry of the attack's "undefended" row — its undefended kind with the same
    settings, EOT 1, exact gradients, fresh noise (a bare classifier has none); for a plugin, the
    plugin itself with exact gradients (the bare classifier is its model) — or None."""
    kind = KINDS.get(acfg.kind)
    if kind is None:
        return acfg.model_copy(update={"gradient": "exact"})
    if kind.undefended is None:
        return None
    base = KINDS[kind.undefended]
    update = {"kind": base.name, "eot": 1, "gradient": "exact", "noise": base.noise, "deviation_weight": None}
    if base.name == "autoattack-rand":
        update["evaluations"] = 1  # a deterministic classifier: one evaluation is all of them
    return acfg.model_copy(update=update)
