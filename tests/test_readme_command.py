"""The README's test command runs the whole suite: every package a test module imports is installed
by it (the test extra, its dependencies, or the packages it installs with --no-deps), CI runs the
same installs, and collecting the suite skips no module."""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
OURS = {"dbp_core", "console", "tests"}


def readme_test_command() -> str:
    """The README's one-line test command (the line that ends by running pytest)."""
    lines = [line.strip() for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()]
    found = [line for line in lines if line.startswith("pip install") and line.endswith("python -m pytest -q")]
    assert len(found) == 1, f"expected one test command in the README, found {found}"
    return found[0]


def installed_by(command: str) -> tuple[list[str], set[str]]:
    """(extras of the editable install, names installed with --no-deps) of a README command."""
    extras = re.search(r'-e "\.\[([a-z,-]+)\]"', command)
    assert extras, f"the test command does not install the project with extras: {command}"
    no_deps = set()
    for part in command.split("&&"):
        words = part.split()
        if "--no-deps" in words:
            no_deps |= {canonicalize_name(Requirement(w).name) for w in words[words.index("--no-deps") + 1:]}
    return extras.group(1).split(","), no_deps


def requirement_closure(extras: list[str]) -> set[str]:
    """Distributions that ``pip install -e .[extras]`` installs: dbp-lab's requirements with those
    extras, then theirs, recursively (as installed here)."""
    env = {"extra": ""}
    todo = [(r, set(extras)) for r in (md.requires("dbp-lab") or [])]
    seen: set[str] = set()
    while todo:
        text, active = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({**env, "extra": e}) for e in (active or {""})):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [(r, set(req.extras)) for r in (md.requires(req.name) or [])]
        except md.PackageNotFoundError:
            pass
    return seen


def imported_distributions() -> dict[str, set[str]]:
    """{distribution: test files importing it} of every non-standard, non-project import of the test
    modules (tests/*.py; the fixture generators under tests/fixtures/ ran once, from the
    references' own code). The fallback of ``try: import a / except ImportError: import b`` is
    not required."""
    dists = md.packages_distributions()
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / "tests").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        fallbacks = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)
                     for h in t.handlers for n in ast.walk(h)}
        for node in ast.walk(tree):
            if id(node) in fallbacks:
                continue
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top in OURS or top in sys.stdlib_module_names:
                    continue
                for dist in dists.get(top, [top]):
                    out.setdefault(canonicalize_name(dist), set()).add(path.name)
    return out


def test_every_package_a_test_imports_is_installed_by_the_readme_command():
    extras, no_deps = installed_by(readme_test_command())
    assert "test" in extras
    installed = requirement_closure(extras) | no_deps
    missing = {d: sorted(files) for d, files in imported_distributions().items() if d not in installed}
    assert not missing, f"tests import packages the README's test command does not install: {missing}"


def test_ci_runs_the_readme_test_command():
    command = readme_test_command()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for part in command.split("&&"):
        words = [w for w in part.split() if w != "-q"]
        line = next((ln for ln in ci.splitlines() if [w for w in ln.split() if w != "-q"] == words), None)
        assert line is not None, f"CI does not run the README's step: {part.strip()}"


def test_collecting_the_suite_skips_no_module():
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "tests")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "skipped" not in tail and "error" not in tail, tail
    modules = {line.split("::")[0] for line in proc.stdout.splitlines() if "::" in line}
    on_disk = {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py")}
    assert on_disk <= modules, f"modules without collected tests: {sorted(on_disk - modules)}"
