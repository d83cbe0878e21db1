"""Stages of a run, one module per stage (docs/design.md, "Stages and the runner").

A **stage** is a function ``run(ctx: StageContext) -> dict``:

* it reads models and data through ``ctx.resources`` (built once per run);
* it derives every seed with ``ctx.seed("purpose", ...)``, so a resumed run draws the same noise;
* it checkpoints with ``ctx.save_checkpoint(state)`` / ``ctx.load_checkpoint()`` and continues
  from the loaded state on resume;
* it reports with ``ctx.metric(kind, step, **values)`` and ``ctx.progress(done, total)``;
* it writes files only through ``ctx.write_json(relative, obj)`` / ``ctx.artifact_path(relative)``
  (and records a file it must find unchanged on resume, a saved model, with ``ctx.record_artifact``);
* it returns a JSON-able dict; rows under ``"accuracies"`` (``dbp_core.stats.accuracy_row``)
  are gathered into ``results.json``.

Modules: ``registry`` (names, light), ``context`` (StageContext, Resources), ``evaluate``,
``attacks``, ``analysis``, ``addt``, ``audit``.
"""
from .._lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "StageContext": ".context", "Resources": ".context", "Subset": ".context", "derive_seed": "..purifier.noise",
    "register_stage": ".registry", "stage_names": ".registry", "PROTOCOLS": ".registry",
})
__all__ = __dir__()
