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
