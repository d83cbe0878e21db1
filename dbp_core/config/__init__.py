"""Experiment configuration: a TOML file → a typed, validated ``ExperimentConfig``.

Validation is pydantic v2 (``extra="forbid"`` everywhere); this package only adds what pydantic
does not do: paths resolved against the TOML's folder, import paths (``package.module:callable``)
resolved and checked at validation time, cross-field rules (eps ≤ 1 for Linf, DW-box has EOT 1,
…), ``--set`` overrides and ``--grid`` sweeps, and one error type, :class:`ConfigError`, whose
message names the file, the dotted field path (``attacks[0].eps``), the value given and what was
expected — with a "did you mean" suggestion for unknown keys.

Defaults follow DiffPure / the paper (docs/science.md) for CIFAR-10: t* = 0.1; the attacks' are
those of ``attacks/names.py``; ADDT's those of the authors' script (``stages.py`` here). Field
descriptions and bounds are kept in the models (``json_schema()`` /
``ExperimentConfig.model_fields``) for the console's form.

The package is the schema only: option names come from the light registries
(``attacks/registry.py``, ``purifier/registry.py``, ``models/registry.py``,
``stages/registry.py``), and it imports neither torch nor the runner, so the console validates a
TOML without loading either. Checks that need torch or the files a config names (a CUDA device,
checkpoint contents) are made by ``dbp_core.preflight`` before a run.

Its modules (``from dbp_core.config import X`` is the way in for every public name):

* ``errors.py`` — :class:`ConfigError`, ``FieldError``, pydantic's errors translated, "did you mean";
* ``fields.py`` — the sections' base and the validators several sections share;
* ``inputs.py`` — ``[data]``, ``[models]``; ``purifier.py`` — ``[purifier]``;
  ``attacks.py`` — ``[[attacks]]``; ``stages.py`` — ``[evaluation]``, ``[addt]``, ``[analysis]``,
  ``[audit]``; ``experiment.py`` — the top level, ``[output]``, the rules across sections;
* ``overrides.py`` — ``--set`` and what no section may be given (too deep, not UTF-8);
  ``grid.py`` — ``--grid``: values, their identity (``value_key``), bounds;
* ``load.py`` — TOML in (``load_config``, ``loads_config``, ``validate_config``) and out
  (``dumps_config``, ``save_config``).
"""
from __future__ import annotations

from ..plugins import is_import_path, resolve_import_path
from ..stages.registry import PROTOCOLS
from .attacks import ATTACK_KINDS, AttackConfig
from .errors import ConfigError
from .experiment import ExperimentConfig, OutputConfig, json_schema
from .grid import MAX_GRID_POINTS, UNSWEEPABLE, grid_value_problem, parse_grid, value_key
from .inputs import DataConfig, ModelsConfig, subset_problem
from .load import dumps_config, load_config, loads_config, save_config, validate_config
from .overrides import MAX_DEPTH, apply_overrides, plain_problems
from .purifier import PurifierConfig
from .stages import ADDTConfig, AnalysisConfig, AuditConfig, EvaluationConfig

__all__ = [
    "ConfigError", "ExperimentConfig", "DataConfig", "ModelsConfig", "PurifierConfig",
    "AttackConfig", "EvaluationConfig", "ADDTConfig", "AnalysisConfig", "AuditConfig", "OutputConfig",
    "load_config", "loads_config", "validate_config", "save_config", "dumps_config",
    "apply_overrides", "parse_grid", "MAX_GRID_POINTS", "UNSWEEPABLE", "value_key", "grid_value_problem",
    "json_schema", "is_import_path", "resolve_import_path", "plain_problems", "subset_problem", "MAX_DEPTH",
    "ATTACK_KINDS", "PROTOCOLS",
]
