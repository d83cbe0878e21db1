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

# the defended models the attacks stage attacks (docs/results.md, "Accuracy rows": `model`): the
# configured defence, and the diffusion models an ``addt`` stage fine-tunes (ADDT and its control run)
ORIGINAL = "original"
ADDT_MODEL, CONTROL_MODEL = "addt", "control"

# [evaluation].protocols: what is reported for each example (docs/results.md)
CLEAN, PURIFIED, UNDEFENDED, SINGLE = "clean", "purified", "undefended", "single"
REPURIFY, MAJORITY, ENSEMBLE, ANY_WRONG = "repurify", "majority", "ensemble", "any-wrong"
FRESH_NOISE, WORST_CASE = "fresh-noise", "worst-case"
PROTOCOLS = (CLEAN, PURIFIED, UNDEFENDED, SINGLE, REPURIFY, MAJORITY, ENSEMBLE, ANY_WRONG, FRESH_NOISE, WORST_CASE)
DEFAULT_PROTOCOLS = (CLEAN, PURIFIED, UNDEFENDED, SINGLE, REPURIFY, FRESH_NOISE)
# need a diffusion model
PURIFYING_PROTOCOLS = (PURIFIED, REPURIFY, MAJORITY, ENSEMBLE, ANY_WRONG, FRESH_NOISE)

# the outcomes of n_repurify purifications: of the adversarial examples, of the unattacked ones
# (in the order of stages.attacks.n_purification_outcomes: average, worst, majority, ensemble)
N_PURIFICATION_OUTCOMES = ("repurify-avg", "repurify-worst", MAJORITY, ENSEMBLE)
N_PURIFICATION_BASELINES = ("purified-avg", "purified-worst", "purified-majority", "purified-ensemble")
REPURIFY_AVG, REPURIFY_WORST = N_PURIFICATION_OUTCOMES[:2]
PURIFIED_AVG, PURIFIED_WORST = N_PURIFICATION_BASELINES[:2]

# the attacks stage's rows per attack: (results protocol name, per-example outcome key, the config protocol
# that enables it); several rows may read one outcome ("any-wrong" is the complement view of the worst case)
ATTACK_ROWS = ((SINGLE, SINGLE, SINGLE), (FRESH_NOISE, FRESH_NOISE, FRESH_NOISE),
               (REPURIFY_AVG, REPURIFY_AVG, REPURIFY), (REPURIFY_WORST, REPURIFY_WORST, REPURIFY),
               (MAJORITY, MAJORITY, MAJORITY), (ENSEMBLE, ENSEMBLE, ENSEMBLE),
               (ANY_WRONG, REPURIFY_WORST, ANY_WRONG), (UNDEFENDED, UNDEFENDED, UNDEFENDED),
               (PURIFIED, PURIFIED, PURIFIED), (PURIFIED_AVG, PURIFIED_AVG, REPURIFY),
               (PURIFIED_WORST, PURIFIED_WORST, REPURIFY),
               ("purified-majority", "purified-majority", MAJORITY),
               ("purified-ensemble", "purified-ensemble", ENSEMBLE),
               ("purified-any-wrong", PURIFIED_WORST, ANY_WRONG), (CLEAN, CLEAN, CLEAN))


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
