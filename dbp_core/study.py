"""The names ``dbp_core.study`` had before the stages and the runner got their own modules
(docs/api.md): ``run_study`` lives in :mod:`dbp_core.runner`, the stage context in
:mod:`dbp_core.stages.context`."""
from .models.loaders import load_model_file
from .models.normalized import Normalized
from .runner import Interrupted, run_study
from .stages.context import Resources, StageContext, Subset, derive_seed
from .stages.registry import register_stage, stage_names

__all__ = ["run_study", "Interrupted", "Resources", "StageContext", "Subset", "derive_seed", "register_stage",
           "stage_names", "Normalized", "load_model_file"]
