"""Attack kinds: the single list of what ``[[attacks]].kind`` accepts (docs/design.md, "Registries").

Each kind says what its attacker knows of the defence's noise, its default EOT, which attack gives
its "undefended" baseline row (the same settings on the bare classifier, EOT 1), its defaults, the
fields it reads, any optional extra it needs, and how to build it from an ``[[attacks]]`` entry.
Light on purpose — no torch at import — so that ``dbp_core.config`` validates against it; a
constructor imports its attack class when it is called. A kind that is an import path
``package.module:callable`` is a plugin: ``attack(model, x, y, uids, cfg[, context=])`` under the
contract of ``attacks/plugin.py`` (docs/plugins.md).

The built-in kinds' defaults are written once, in names.py (``KIND_DEFAULTS``, ``EPS``,
``STEP_DIVISOR``): each AttackKind here holds its kind's, and the attack classes read theirs there
(they cannot import this module, which builds them). ``defaults(kind, norm, eps)`` resolves those
of one kind and norm — ``AttackConfig`` (config/attacks.py) fills an ``[[attacks]]`` entry from it —
and ``default_text`` words them for config/attacks.py's field descriptions and docs/config.md
(tests/test_attack_defaults.py checks that all of them agree).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .names import (EPS, GRADIENTS, KIND_DEFAULTS, LOSSES, NOISE_KNOWLEDGE, NORMS, SELECTIONS, SHARED_DEFAULTS,
                    STEP_DIVISOR, budget_defaults, default_step)

__all__ = ["AttackKind", "KINDS", "PLUGIN", "kind_names", "build_attack", "attack_template", "undefended_config",
           "defaults", "default_text", "plugin_noise", "value_text", "number_text", "EPS", "STEP_DIVISOR",
           "SHARED_DEFAULTS",
           "NOISE_KNOWLEDGE", "NORMS", "LOSSES", "GRADIENTS", "SELECTIONS", "OPTIONAL_FIELDS"]

# fields of [[attacks]] that only some kinds read; a kind lists those it reads in `reads`
OPTIONAL_FIELDS = ("step", "restarts", "targets", "selection", "selection_samples", "evaluations", "queries",
                   "deviation_weight")


@dataclass(frozen=True)
class AttackKind:
    """One attack kind. A built-in kind's defaults are names.KIND_DEFAULTS[name] (``_builtin``); a
    kind registered otherwise gives its own or takes names.SHARED_DEFAULTS. An optional field's
    default (restarts, targets, ...) applies to the kinds that read it."""
    name: str
    summary: str
    noise: str  # one of NOISE_KNOWLEDGE: fresh noise, every draw replayed (DW-box), or the forward draw
    eot: int  # default purifications per gradient
    undefended: str | None  # the kind whose attack, EOT 1, on the bare classifier is the "undefended" row
    # (acfg, *, eval_seed, attack_seed, on_iteration) -> attack(model, x, y, uids); None: PLUGIN
    build: Callable[..., Any] | None
    reads: tuple[str, ...] = ("step",)  # which of OPTIONAL_FIELDS it uses
    iterations: int = SHARED_DEFAULTS["iterations"]  # default iterations
    random_start: bool = SHARED_DEFAULTS["random_start"]  # default
    loss: str | None = SHARED_DEFAULTS["loss"]  # default loss; None: the kind runs its own losses (AutoAttack)
    losses: tuple[str, ...] = LOSSES  # the losses it accepts
    gradient: str = SHARED_DEFAULTS["gradient"]  # default gradient approximation (gradients.py)
    selection: str | None = SHARED_DEFAULTS["selection"]  # default APGD selection rule (names.SELECTIONS)
    # the defaults of optional fields, for the kinds that read them
    restarts: int = SHARED_DEFAULTS["restarts"]
    targets: int | None = SHARED_DEFAULTS["targets"]
    evaluations: int | None = SHARED_DEFAULTS["evaluations"]
    queries: int | None = SHARED_DEFAULTS["queries"]
    deviation_weight: float | None = SHARED_DEFAULTS["deviation_weight"]
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
                restarts=acfg.restarts, loss=acfg.loss, targets=acfg.targets, selection=acfg.selection,
                selection_samples=acfg.selection_samples, **_common(acfg, attack_seed, on_iteration))


def _autoattack_rand(acfg, *, eval_seed: int, attack_seed: int, on_iteration=None):
    from .autoattack_rand import AutoAttackRand
    return AutoAttackRand(eot=acfg.eot, evaluations=acfg.evaluations, noise=_plan(acfg, eval_seed, attack_seed),
                          random_start=acfg.random_start, selection=acfg.selection,
                          **_common(acfg, attack_seed, on_iteration))


def _diffattack(acfg, *, eval_seed: int, attack_seed: int, on_iteration=None):
    from .diffattack import DiffAttack
    return DiffAttack(deviation_weight=acfg.deviation_weight, eot=acfg.eot, evaluations=acfg.evaluations,
                      noise=_plan(acfg, eval_seed, attack_seed), random_start=acfg.random_start,
                      selection=acfg.selection, **_common(acfg, attack_seed, on_iteration))


def _autoattack_standard(acfg, *, eval_seed: int, attack_seed: int, on_iteration=None):
    from .autoattack_standard import AutoAttackStandard
    return AutoAttackStandard(norm=acfg.norm, eps=acfg.eps, iterations=acfg.iterations,
                              noise=_plan(acfg, eval_seed, attack_seed), start_seed=attack_seed,
                              queries=acfg.queries)


_APGD_READS = ("restarts", "targets", "selection", "selection_samples")


def _builtin(name: str, summary: str, undefended: str | None, build, **properties) -> AttackKind:
    """A built-in kind; its defaults are names.KIND_DEFAULTS[name] (no second value here)."""
    return AttackKind(name, summary, undefended=undefended, build=build, **KIND_DEFAULTS[name], **properties)


KINDS: dict[str, AttackKind] = {k.name: k for k in (
    _builtin("pgd", "PGD with one fresh purification per gradient", "pgd", _pgd),
    _builtin("pgd-eot", "PGD with EOT gradients over fresh purifications", "pgd", _pgd),
    _builtin("dwbox", "DW-box: PGD replaying every noise draw of the evaluation", "pgd", _pgd, deterministic=True),
    _builtin("dwbox-forward", "DW-box replaying only the forward noise", "pgd", _pgd),
    _builtin("bpda", "PGD with the purifier's backward replaced by the identity", "pgd", _pgd),
    _builtin("apgd", "AutoAttack's APGD (CE, Margin or DLR), its selection rule; EOT as AutoAttack averages it",
             "apgd", _apgd, reads=_APGD_READS),
    _builtin("apgd-t", "AutoAttack's APGD-T: targeted DLR on the 2nd..(targets+1)-th classes", "apgd-t", _apgd,
             reads=_APGD_READS, losses=("dlr-targeted",)),
    _builtin("apgd-eot", "APGD with EOT and the stochastic selection rule (lowest share of correct "
             "purifications)", "apgd", _apgd, reads=_APGD_READS),
    _builtin("autoattack-rand", "AutoAttack rand: APGD-CE then APGD-DLR, EOT 20, each point judged over 20 "
             "evaluations (the ICLR 2025 authors' fix)", "autoattack-rand", _autoattack_rand,
             reads=("selection", "evaluations"), losses=()),
    _builtin("diffattack", "DiffAttack: AutoAttack-rand on CE/DLR plus the deviated-reconstruction loss on the "
             "purifier's intermediate states (Kang et al. 2023), judged over 20 evaluations", "autoattack-rand",
             _diffattack, reads=("selection", "evaluations", "deviation_weight"), losses=(), gradients=("exact",)),
    _builtin("autoattack-standard", "AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) through pyautoattack, "
             "on DW-box's replayed defence", "autoattack-standard", _autoattack_standard, reads=("queries",),
             losses=(), extra="autoattack", requires="pyautoattack", deterministic=True),
)}


# a plugin attack (kind = an import path): it may read every optional field, and its cfg gets the
# defaults every kind shares, a step and the targets of a targeted loss (the other optional
# fields stay unset); build_attack calls it
PLUGIN = AttackKind("plugin", "an import path 'package.module:callable'", SHARED_DEFAULTS["noise"],
                    SHARED_DEFAULTS["eot"], None, None, reads=OPTIONAL_FIELDS, evaluations=None, queries=None,
                    deviation_weight=None)

# the fields whose defaults depend on the kind only (eps and step depend on the norm)
_KIND_FIELDS = ("iterations", "eot", "random_start", "noise", "loss", "gradient")
_READ_FIELDS = ("restarts", "targets", "selection", "evaluations", "queries", "deviation_weight")
_NORM_TEXT = {"linf": "Linf", "l2": "L2"}


def kind_names() -> tuple[str, ...]:
    return tuple(KINDS)


def defaults(kind: str, norm: str, eps: float | None = None) -> dict:
    """The defaults of attack ``kind`` (a name of KINDS; anything else is a plugin: PLUGIN's)
    under ``norm``: eps, then iterations, eot, random_start, noise, loss (None: the kind runs its
    own), gradient, and of the optional fields those the kind reads: step (eps / STEP_DIVISOR, at
    ``eps`` when given), restarts, targets (applied to a dlr-targeted loss), selection,
    evaluations, queries, deviation_weight (None: no default; selection_samples never has one).
    ``defaults("pgd", "l2") == {"eps": 0.5, ..., "step": 0.1}``."""
    k = KINDS.get(kind, PLUGIN)
    budget = budget_defaults(norm, eps)
    out = {"eps": budget["eps"], **{f: getattr(k, f) for f in _KIND_FIELDS}}
    if "step" in k.reads:
        out["step"] = budget["step"]
    out.update({f: getattr(k, f) for f in _READ_FIELDS if f in k.reads})
    return out


def number_text(x: float) -> str:
    """A default as the docs write it: 8/255 for a multiple of 1/255 that has no short decimal, else %g."""
    if float(f"{x:.4g}") != x and abs(x * 255 - round(x * 255)) < 1e-9:
        return f"{round(x * 255)}/255"
    return f"{x:g}"


def value_text(value) -> str:
    """One default value in words: on / off, their own (no default loss), a number, a name."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:  # the kinds without a default loss run their own (AutoAttack's)
        return "their own"
    return number_text(value) if isinstance(value, float) else str(value)


def default_text(field: str) -> str:
    """The defaults of an ``[[attacks]]`` field over the kinds, in words — what config/attacks.py's field
    descriptions and docs/config.md's ``[[attacks]]`` row quote: per norm for eps and step
    ("8/255 Linf, 0.5 L2"); else the value of each group of kinds (among those that read the field),
    the largest group last as "otherwise" ("10 for pgd-eot, apgd-eot; 1 otherwise")."""
    if field == "eps":
        return ", ".join(f"{number_text(EPS[n])} {_NORM_TEXT[n]}" for n in NORMS)
    if field == "step":
        return ", ".join(f"eps/{STEP_DIVISOR[n]} {_NORM_TEXT[n]} = {number_text(default_step(EPS[n], n))}"
                         for n in NORMS)
    groups: dict = {}
    for kind in KINDS.values():
        if field in _KIND_FIELDS or field in kind.reads:
            groups.setdefault(getattr(kind, field), []).append(kind.name)
    if not groups:
        raise KeyError(f"no attack kind has a default for {field!r}")
    common = max(groups, key=lambda v: len(groups[v]))
    if len(groups) == 1:
        return value_text(common)
    named = [f"{value_text(v)} for {', '.join(names)}" for v, names in groups.items() if v != common]
    return "; ".join(named + [f"{value_text(common)} otherwise"])


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
