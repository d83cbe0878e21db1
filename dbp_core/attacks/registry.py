"""Attack kinds: the single list of what ``[[attacks]].kind`` accepts (docs/design.md, "Registries").

Each kind says what its attacker knows of the defence's noise, its default EOT, which
deterministic attack gives its "undefended" baseline row, and how to build it from an
``[[attacks]]`` entry. Light on purpose — no torch at import — so that ``dbp_core.config``
validates against it; a constructor imports its attack class when it is called. A kind that
is an import path ``package.module:callable`` is a plugin: ``attack(model, x, y, uids, cfg)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .names import LOSSES, NOISE_KNOWLEDGE, NORMS

__all__ = ["AttackKind", "KINDS", "kind_names", "build_attack", "attack_template", "NOISE_KNOWLEDGE", "NORMS",
           "LOSSES"]


@dataclass(frozen=True)
class AttackKind:
    name: str
    summary: str
    noise: str  # one of NOISE_KNOWLEDGE: fresh noise, every draw replayed (DW-box), or the forward draw
    eot: int  # default purifications per gradient
    undefended: str | None  # "pgd" / "apgd": the attack on the bare classifier with equal settings
    build: Callable[..., Any]  # (acfg, *, eval_seed, attack_seed, on_iteration) -> attack(model, x, y, uids)
    selection: bool = False  # has the stochastic selection rule (``selection_samples``)
    template: dict = field(default_factory=dict)  # extra fields of a new ``[[attacks]]`` entry (attack_template)


def _common(acfg, attack_seed: int, on_iteration) -> dict:
    return dict(norm=acfg.norm, eps=acfg.eps, iterations=acfg.iterations, eot_chunk=acfg.eot_chunk,
                start_seed=attack_seed, loss=acfg.loss, on_iteration=on_iteration)


def _pgd(acfg, *, eval_seed: int, attack_seed: int, on_iteration=None):
    from .base import NoisePlan
    from .pgd import PGD
    return PGD(step=acfg.step, random_start=acfg.random_start, eot=acfg.eot, noise=NoisePlan("fresh", attack_seed),
               **_common(acfg, attack_seed, on_iteration))


def _dwbox(forward_only: bool):
    def build(acfg, *, eval_seed: int, attack_seed: int, on_iteration=None):
        from .dwbox import DWBox
        return DWBox(eval_seed, forward_only=forward_only, step=acfg.step, random_start=acfg.random_start,
                     **_common(acfg, attack_seed, on_iteration))
    return build


def _bpda(acfg, *, eval_seed: int, attack_seed: int, on_iteration=None):
    from .base import NoisePlan
    from .bpda import BPDA
    return BPDA(step=acfg.step, random_start=acfg.random_start, eot=acfg.eot, noise=NoisePlan("fresh", attack_seed),
                **_common(acfg, attack_seed, on_iteration))


def _apgd(acfg, *, eval_seed: int, attack_seed: int, on_iteration=None):
    from .apgd import APGD
    from .base import NoisePlan
    return APGD(eot=acfg.eot, noise=NoisePlan("fresh", attack_seed), random_start=acfg.random_start,
                selection_samples=acfg.selection_samples, **_common(acfg, attack_seed, on_iteration))


KINDS: dict[str, AttackKind] = {k.name: k for k in (
    AttackKind("pgd", "PGD with one fresh purification per gradient", "stochastic", 1, "pgd", _pgd),
    AttackKind("pgd-eot", "PGD with EOT gradients over fresh purifications", "stochastic", 10, "pgd", _pgd),
    AttackKind("dwbox", "DW-box: PGD replaying every noise draw of the evaluation", "replay", 1, "pgd",
               _dwbox(False)),
    AttackKind("dwbox-forward", "DW-box replaying only the forward noise", "replay-forward", 1, "pgd",
               _dwbox(True)),
    AttackKind("bpda", "PGD with the purifier's backward replaced by the identity", "stochastic", 1, "pgd", _bpda),
    AttackKind("apgd-eot", "APGD-CE with EOT and the stochastic selection rule", "stochastic", 10, "apgd", _apgd,
               selection=True),
)}


def kind_names() -> tuple[str, ...]:
    return tuple(KINDS)


def attack_template(name: str) -> dict:
    """A new ``[[attacks]]`` entry of kind ``name`` (the console's "add attack"): the kind, the
    first norm, 20 iterations, the kind's default EOT when it has one, then the kind's own
    ``template`` fields. Any registered kind has one, so a new kind needs no console change."""
    kind = KINDS[name]
    entry: dict = {"kind": name, "norm": NORMS[0], "iterations": 20}
    if kind.eot != 1:
        entry["eot"] = kind.eot
    return {**entry, **kind.template}


def build_attack(acfg, *, eval_seed: int, attack_seed: int, on_iteration=None):
    """The attack of one ``[[attacks]]`` entry: ``attack(model, x, y, uids) -> x_adv``."""
    kind = KINDS.get(acfg.kind)
    if kind is not None:
        return kind.build(acfg, eval_seed=eval_seed, attack_seed=attack_seed, on_iteration=on_iteration)
    from ..plugins import resolve_import_path
    plugin = resolve_import_path(acfg.kind)
    return lambda model, x, y, uids: plugin(model, x, y, uids, acfg)
