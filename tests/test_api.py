"""The public Python API of docs/api.md keeps working: every name imports, old import paths
are the same objects as the new ones."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_name_of_docs_api_imports():
    from dbp_core import ops, stats  # noqa: F401
    from dbp_core.addt import ADDTTrainer, CGPOSettings, TrainSettings, cgpo  # noqa: F401
    from dbp_core.attacks import APGD, BPDA, PGD, DWBox, NoisePlan  # noqa: F401
    from dbp_core.attacks.registry import KINDS, build_attack  # noqa: F401
    from dbp_core.config import load_config, loads_config  # noqa: F401
    from dbp_core.models import zoo  # noqa: F401
    from dbp_core.models.datasets import load_dataset  # noqa: F401
    from dbp_core.models.defended import DefendedClassifier  # noqa: F401
    from dbp_core.models import DMWideResNet, GuidedDiffusionEps, GuidedUNet, NCSNpp, ResNet, ScoreSDEEps  # noqa: F401
    from dbp_core.models.checkpoint_io import CheckpointError, inspect_tensor_file, load_tensor_file  # noqa: F401
    from dbp_core.models.loaders import check_model, load_checkpoint, load_model, load_model_file, model_spec  # noqa: F401
    from dbp_core.models.normalized import Normalized  # noqa: F401
    from dbp_core.ops import reference  # noqa: F401
    from dbp_core.purifier import Purifier, diffusion, noise, vpsde  # noqa: F401
    from dbp_core.purifier.guidance import Guidance  # noqa: F401
    from dbp_core.results import MetricsView, export_rows, list_runs, read_run  # noqa: F401
    from dbp_core.runner import run_study  # noqa: F401
    from dbp_core.store import RunStore  # noqa: F401
    from dbp_core.stages.context import Resources, StageContext  # noqa: F401
    from dbp_core.stages.registry import register_stage  # noqa: F401
    assert callable(noise.derive_seed) and callable(ops.backend)


def test_old_import_paths_are_the_same_objects():
    same = {
        ("dbp_core.noise", None): ("dbp_core.purifier.noise", None),
        ("dbp_core.diffusion", None): ("dbp_core.purifier.diffusion", None),
        ("dbp_core.purify", "Purifier"): ("dbp_core.purifier.purifier", "Purifier"),
        ("dbp_core.data", "load_dataset"): ("dbp_core.models.datasets", "load_dataset"),
        ("dbp_core.study", "run_study"): ("dbp_core.runner", "run_study"),
        ("dbp_core.study", "Normalized"): ("dbp_core.models.normalized", "Normalized"),
        ("dbp_core.study", "derive_seed"): ("dbp_core.purifier.noise", "derive_seed"),
        ("dbp_core.attacks", "derive_seed"): ("dbp_core.purifier.noise", "derive_seed"),
    }
    for (old, old_name), (new, new_name) in same.items():
        a, b = importlib.import_module(old), importlib.import_module(new)
        assert (getattr(a, old_name) if old_name else a) is (getattr(b, new_name) if new_name else b), old


def index_imports() -> list[str]:
    """The import statement of every row of docs/api.md's index table (its first code span)."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    return re.findall(r"^\| `((?:from \S+ )?import [^`]+)`", text, re.M)


def test_every_line_of_the_index_table_imports():
    lines = index_imports()
    assert len(lines) >= 26, lines
    for line in lines:
        exec(line, {})  # an ImportError names the line's missing module or name
