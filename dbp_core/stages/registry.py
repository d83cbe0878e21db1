"""The stages a run can list, and the evaluation protocols they report (docs/design.md, "Stages and the runner").

Light on purpose — no torch — so that ``dbp_core.config`` validates ``stages`` and
``evaluation.protocols`` against these names. A built-in stage is named by the import path
of its function (imported when the stage runs); plugins add stages with :func:`register_stage`
or are named in ``stages`` by an import path ``package.module:function``.
"""
from __future__ import annotations

from typing import Callable

BUILTIN = {
    "evaluate": "dbp_core.stages.evaluate:run",
    "attacks": "dbp_core.stages.attacks:run",
    "analysis": "dbp_core.stages.analysis:run",
    "addt": "dbp_core.stages.addt:run",
    "audit": "dbp_core.stages.audit:run",
}
_REGISTERED: dict[str, Callable] = {}

# [evaluation].protocols: what is reported for each example (docs/results.md)
PROTOCOLS = ("clean", "purified", "undefended", "single", "repurify", "majority", "ensemble", "any-wrong",
             "fresh-noise", "worst-case")
DEFAULT_PROTOCOLS = ("clean", "purified", "undefended", "single", "repurify", "fresh-noise")
# need a diffusion model
PURIFYING_PROTOCOLS = ("purified", "repurify", "majority", "ensemble", "any-wrong", "fresh-noise")

# the attacks stage's rows per attack: (results protocol name, per-example outcome key, the config protocol
# that enables it); several rows may read one outcome ("any-wrong" is the complement view of the worst case)
ATTACK_ROWS = (("single", "single", "single"), ("fresh-noise", "fresh-noise", "fresh-noise"),
               ("repurify-avg", "repurify-avg", "repurify"), ("repurify-worst", "repurify-worst", "repurify"),
               ("majority", "majority", "majority"), ("ensemble", "ensemble", "ensemble"),
               ("any-wrong", "repurify-worst", "any-wrong"), ("undefended", "undefended", "undefended"),
               ("purified", "purified", "purified"), ("purified-avg", "purified-avg", "repurify"),
               ("purified-worst", "purified-worst", "repurify"),
               ("purified-majority", "purified-majority", "majority"),
               ("purified-ensemble", "purified-ensemble", "ensemble"),
               ("purified-any-wrong", "purified-worst", "any-wrong"), ("clean", "clean", "clean"))
# the outcomes of n_repurify purifications: of the adversarial examples, of the unattacked ones
N_PURIFICATION_OUTCOMES = ("repurify-avg", "repurify-worst", "majority", "ensemble")
N_PURIFICATION_BASELINES = ("purified-avg", "purified-worst", "purified-majority", "purified-ensemble")


def outcome_of(protocol: str) -> str:
    """The per-example outcome key an attacks-stage row of ``protocol`` reads (the row name itself
    for rows of other stages)."""
    return next((key for row, key, _ in ATTACK_ROWS if row == protocol), protocol)


def attack_outcomes(protocols, replays: bool) -> set[str]:
    """The per-example outcomes the attacks stage computes for one attack under ``evaluation.protocols``:
    only those a listed protocol reports (``fresh-noise`` only for an attacker who replays the noise:
    for a stochastic one it is ``single`` again)."""
    wanted = {key for _, key, enabled_by in ATTACK_ROWS if enabled_by in protocols}
    if not replays:
        wanted.discard("fresh-noise")
    return wanted


def register_stage(name: str) -> Callable[[Callable], Callable]:
    """Decorator: make ``fn(ctx) -> dict`` runnable as ``stages = ["<name>"]``."""
    def deco(fn: Callable) -> Callable:
        _REGISTERED[name] = fn
        return fn
    return deco


def stage_names() -> list[str]:
    return sorted({*BUILTIN, *_REGISTERED})


def resolve_stage(name: str) -> Callable:
    """The function of stage ``name``: registered, built-in, or an import path."""
    from ..plugins import resolve_import_path
    if name in _REGISTERED:
        return _REGISTERED[name]
    return resolve_import_path(BUILTIN.get(name, name))
