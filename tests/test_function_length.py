"""Orchestration reads as named steps (docs/design.md, "Reading the code"): no function of dbp_core/
or console/ is longer than MAX_LINES, bar the declarative tables of ALLOWED."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dbp_core", "console")
MAX_LINES = 60  # from the ``def`` line to the last line of the body, docstring included
# (file, qualified name): declarative tables, one entry a line
ALLOWED = {("dbp_core/cli.py", "build_parser")}  # the argument parser: one add_argument per option


def function_lengths(source: str) -> dict[str, int]:
    """``{qualified name: lines}`` of every function and method of a module, nested ones too
    (``Class.method``, ``outer.inner``)."""
    out: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                out[name] = child.end_lineno - child.lineno + 1
                walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)
    walk(ast.parse(source), "")
    return out


def too_long(root: Path = ROOT, allowed=frozenset(ALLOWED)) -> list[str]:
    found = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            for name, lines in function_lengths(path.read_text(encoding="utf-8")).items():
                if lines > MAX_LINES and (rel, name) not in allowed:
                    found.append(f"{rel}: {name} has {lines} lines")
    return found


def test_no_function_is_longer_than_the_limit():
    assert not too_long(), (f"functions over {MAX_LINES} lines (split them into named steps, or list a "
                            "declarative table in ALLOWED):\n" + "\n".join(too_long()))


def test_the_allowed_tables_exist_and_are_still_long():
    """An entry of ALLOWED that was shortened or removed is taken off the list."""
    for rel, name in ALLOWED:
        lengths = function_lengths((ROOT / rel).read_text(encoding="utf-8"))
        assert lengths.get(name, 0) > MAX_LINES, f"{rel}: {name} is no longer over {MAX_LINES} lines: unlist it"


def test_the_check_finds_a_long_method_and_a_long_nested_function(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    (tmp_path / "dbp_core").mkdir()
    (tmp_path / "console").mkdir()
    (tmp_path / "dbp_core" / "m.py").write_text("class A:\n    def long(self):\n" + body.replace("    ", "        ")
                                                + "    def short(self):\n        pass\n")
    (tmp_path / "console" / "n.py").write_text("def outer():\n    def inner():\n" + body.replace("    ", "        ")
                                               + "    return inner\n")
    assert too_long(tmp_path) == [f"dbp_core/m.py: A.long has {MAX_LINES + 1} lines",
                                  f"console/n.py: outer has {MAX_LINES + 3} lines",
                                  f"console/n.py: outer.inner has {MAX_LINES + 1} lines"]
    assert too_long(tmp_path, allowed={("console/n.py", "outer"), ("console/n.py", "outer.inner")}) == \
        [f"dbp_core/m.py: A.long has {MAX_LINES + 1} lines"]
