"""The public Python API of docs/api.md keeps working: every name imports, a name exported by two
modules is one object."""
from __future__ import annotations

import ast
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


def test_a_name_exported_twice_is_one_object():
    same = {
        ("dbp_core.purifier", "Purifier"): ("dbp_core.purifier.purifier", "Purifier"),
        ("dbp_core.attacks", "derive_seed"): ("dbp_core.purifier.noise", "derive_seed"),
        ("dbp_core.stages.context", "derive_seed"): ("dbp_core.purifier.noise", "derive_seed"),
    }
    for (a, a_name), (b, b_name) in same.items():
        assert getattr(importlib.import_module(a), a_name) is getattr(importlib.import_module(b), b_name), a


def missing_imports(root: Path, folders=("dbp_core", "console", "tests", "benchmarks")) -> list[str]:
    """Imports of ``dbp_core`` modules that the tree at ``root`` does not have (``file: module``): a
    module file or package that is not there, or ``from package import name`` where ``name`` is
    neither a submodule nor a name of the package's ``__init__``. Read from the files, not imported:
    an installed copy of another tree would answer an import that this tree cannot."""
    def module_file(module: str) -> Path | None:
        base = root.joinpath(*module.split("."))
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return candidate
        return None

    def exists(module: str, name: str | None) -> bool:
        where = module_file(module)
        if where is None or name is None or where.name != "__init__.py" or module_file(f"{module}.{name}"):
            return where is not None
        return re.search(rf"\b{name}\b", where.read_text(encoding="utf-8")) is not None

    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    wanted = [(a.name, None) for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    wanted = [(node.module, a.name) for a in node.names]
                else:
                    continue
                for module, name in wanted:
                    if module.split(".")[0] == "dbp_core" and module != "dbp_core._C" and not exists(module, name):
                        missing = f"{module}.{name}" if module_file(module) else module
                        found.append(f"{path.relative_to(root)}: {missing}")
    return found


def test_code_imports_only_modules_of_this_tree():
    """The old aliases (the modules noise, diffusion, purify, data and study directly under dbp_core) are gone;
    nothing imports them."""
    assert not missing_imports(ROOT)


def test_the_import_check_finds_a_removed_module(tmp_path):
    (tmp_path / "dbp_core" / "purifier").mkdir(parents=True)
    (tmp_path / "dbp_core" / "__init__.py").write_text("")
    (tmp_path / "dbp_core" / "purifier" / "__init__.py").write_text("from .noise import derive_seed\n")
    (tmp_path / "dbp_core" / "purifier" / "noise.py").write_text("")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "from dbp_core.purifier import derive_seed, noise\nfrom dbp_core import noise\nimport dbp_core.study\n")
    assert missing_imports(tmp_path, ("tests",)) == ["tests/test_x.py: dbp_core.noise",
                                                     "tests/test_x.py: dbp_core.study"]


def index_imports() -> list[str]:
    """The import statement of every row of docs/api.md's index table (its first code span)."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    return re.findall(r"^\| `((?:from \S+ )?import [^`]+)`", text, re.M)


def test_every_line_of_the_index_table_imports():
    lines = index_imports()
    assert len(lines) >= 26, lines
    for line in lines:
        exec(line, {})  # an ImportError names the line's missing module or name
