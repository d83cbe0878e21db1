"""Docs that match the code: every file path and every ``dbp_core`` module cited in the README, the
docs and the comments and docstrings of the code exists (a module's cited attribute too), so that a
moved or renamed file cannot leave its readers a stale pointer."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = ("dbp_core", "console", "csrc", "docs", "tests", "benchmarks", "experiments", ".ci")
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./{},*<>-]*[\w/}>*])" % "|".join(re.escape(t) for t in TOP))
# a path inside a package, as the code's comments cite them (`stages/registry.py`, `screens/runs.py`)
INNER = re.compile(r"(?<![\w./-])((?:[a-z_]+/)+[a-z_]\w*\.(?:py|md|toml|h|cpp|cu))\b")
INNER_BASES = ("", "dbp_core", "console", "csrc", "tests", "benchmarks")
OUR_PACKAGES = {p.name for base in ("dbp_core", "console", "csrc", "tests") for p in (ROOT / base).iterdir()
                if p.is_dir() and not p.name.startswith((".", "_"))}
MODULE = re.compile(r"(?<![\w./-])(dbp_core(?:\.[A-Za-z_]\w*)+)")
C_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
GENERATED = {  # files the docs name as what a command writes, committed when it has run
    "benchmarks/RESULTS-gpu.md": "benchmarks/gpu_check.py writes it on a machine with a GPU",
}
OTHERS = {  # files of other projects cited by a path that looks like one of ours
    "models/utils.py": "score_sde's (get_score_fn)",
    "include/cuda_runtime.h": "the CUDA toolkit's",
}


def _python_prose(text: str) -> str:
    """The comments and docstrings of a Python source."""
    parts = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                parts.append(tok.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return "\n".join(parts)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                parts.append(doc)
    return "\n".join(parts)


def prose_of(path: Path) -> str:
    """What a reader reads of ``path`` as prose: a Markdown file whole; comments and docstrings of code."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".py":
        return _python_prose(text)
    if path.suffix in (".h", ".cpp", ".cu"):
        return "\n".join(C_COMMENT.findall(text))
    return text


def _expand(cited: str) -> list[str]:
    """``x/{y,z}.py`` → ``[x/y.py, x/z.py]``."""
    m = re.search(r"\{([^{}]*)\}", cited)
    if m:
        return [x for alt in m.group(1).split(",") for x in _expand(cited[:m.start()] + alt + cited[m.end():])]
    return [cited]


def _module_exists(dotted: str) -> bool:
    """``dbp_core.<module>[.<attr>]``: the longest prefix that is a module or package exists, and what follows
    it (if anything) starts with a name that module defines or imports."""
    parts = dotted.split(".")
    if parts[-1].startswith("_C") and len(parts) == 2:  # the compiled extension, built from csrc/ in place
        return any(ROOT.joinpath(parts[0]).glob("_C*")) or (ROOT / "csrc").is_dir()
    for n in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:n])
        for module in (base.with_suffix(".py"), base / "__init__.py"):
            if module.is_file():
                if n == len(parts):
                    return True
                name = parts[n]
                source = module.read_text(encoding="utf-8")
                return bool(re.search(rf"(^|\n)\s*(def|class)\s+{name}\b|(^|\n){name}\s*[:=]|\bimport\b[^\n]*\b{name}\b"
                                      rf"|[\"']{name}[\"']", source)) or (base / f"{name}.py").is_file() \
                    or (base / name).is_dir()
    return False


def stale_citations(files: list[Path]) -> list[str]:
    """``file: cited`` for each path or module cited in ``files`` that does not exist."""
    bad = []
    for f in files:
        prose = prose_of(f)
        for cited in sorted(set(PATH.findall(prose))):
            if any(c in cited for c in "*<>") or re.search(r"/\d+-\d+$", cited) or cited in GENERATED:
                continue  # a pattern, a placeholder (runs/<id>/), a range of numbered files, a command's output
            for one in _expand(cited.rstrip(".,;:")):
                if not (ROOT / one).exists():
                    bad.append(f"{f.relative_to(ROOT)}: {one}")
        for cited in sorted(set(INNER.findall(prose)) - set(PATH.findall(prose))):
            if cited.split("/")[0] not in OUR_PACKAGES or cited in GENERATED or cited in OTHERS:
                continue  # a top-level path (above), or a file of another project's tree (DiffPure's runners/...)
            if not any((ROOT / base / cited).exists() for base in INNER_BASES) and not (f.parent / cited).exists():
                bad.append(f"{f.relative_to(ROOT)}: {cited}")
        for dotted in sorted(set(MODULE.findall(prose))):
            if not _module_exists(dotted.rstrip(".")):
                bad.append(f"{f.relative_to(ROOT)}: {dotted}")
    return bad


def tracked_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for top in ("dbp_core", "console", "csrc", "benchmarks", "tests"):
        files += [p for p in sorted((ROOT / top).rglob("*")) if p.suffix in (".py", ".h", ".cpp", ".cu")
                  and "__pycache__" not in p.parts and "data" not in p.relative_to(ROOT).parts[:2]]
    return files


def test_every_cited_path_and_module_exists():
    bad = stale_citations(tracked_files())
    assert not bad, "stale citations (a file moved or renamed?):\n" + "\n".join(bad)


def test_the_check_finds_a_planted_stale_path(tmp_path, monkeypatch):
    planted = ROOT / "tests" / "_planted_citation_check.py"
    missing = "docs/" + "missing.md"  # spelled in two parts: the doc-citation check of test_docs.py reads this file
    planted.write_text('"""See dbp_core/no_such_module.py, dbp_core.runner.no_such_function and\n'
                       'docs/design.md; dbp_core.runner.run_study exists, stages/registry.py too,\n'
                       f'stages/gone.py not."""\n# and {missing}\n')
    try:
        bad = stale_citations([planted])
    finally:
        planted.unlink()
    assert bad == ["tests/_planted_citation_check.py: dbp_core/no_such_module.py",
                   f"tests/_planted_citation_check.py: {missing}",
                   "tests/_planted_citation_check.py: stages/gone.py",
                   "tests/_planted_citation_check.py: dbp_core.runner.no_such_function"]
