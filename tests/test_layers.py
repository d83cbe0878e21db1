"""The layers of docs/design.md hold: every import of every module (at the top or inside a
function, parsed with ast) follows an arrow of the layer table written there, no two files
import each other in a cycle, and the schema imports neither torch nor scikit-learn."""
from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dbp_core", "console")


def module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that ``name`` imports anywhere in its file (a from-import of a submodule
    counts as an import of that submodule)."""
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known or mod + "." + a.name == "dbp_core._C"
                       else mod for a in node.names]
        else:
            continue
        for t in targets:
            if t.split(".")[0] in PACKAGES:
                found.add(t)
    found.discard(name)
    return found


def layer_table() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(group -> module prefixes, group -> allowed imports) from the table in docs/design.md."""
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    block = text.split("<!-- layers:begin -->")[1].split("<!-- layers:end -->")[0]
    members, allowed = {}, {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("group", "") or set(cells[0]) <= set("-: "):
            continue
        group = cells[0]
        members[group] = re.findall(r"`([^`]+)`", cells[1])
        allowed[group] = [c.strip("` ") for c in cells[2].split(",") if c.strip() not in ("", "—", "-")]
    return members, allowed


def group_of(module: str, members: dict[str, list[str]]) -> str | None:
    best, length = None, -1
    for group, prefixes in members.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > length:
                best, length = group, len(p)
    return best


def test_every_import_follows_an_arrow_of_the_layer_table():
    files = module_files()
    known = set(files) | {"dbp_core._C"}
    members, allowed = layer_table()
    assert {"console", "cli", "runner", "stages", "attacks", "purifier", "models", "ops", "store"} <= set(members)
    unplaced = sorted(m for m in known if group_of(m, members) is None)
    assert not unplaced, f"modules in no layer of docs/design.md: {unplaced}"
    bad = []
    for name, path in sorted(files.items()):
        g = group_of(name, members)
        for target in sorted(imports_of(name, path, known)):
            if target not in known:
                bad.append(f"{name} imports {target}, which does not exist")
                continue
            tg = group_of(target, members)
            ok = tg == g or any(tg == a or fnmatch.fnmatchcase(target, a) for a in allowed[g])
            if not ok:
                bad.append(f"{name} ({g}) imports {target} ({tg})")
    assert not bad, "imports against the layer table of docs/design.md:\n" + "\n".join(bad)


def test_no_import_cycle_between_files():
    files = module_files()
    known = set(files)
    graph = {n: imports_of(n, p, known) & known for n, p in files.items()}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10000)
    try:
        for v in graph:
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)  # other tests rely on the default (e.g. the TOML parser's depth)
    assert not cycles, f"import cycles between files: {cycles}"


def test_the_layer_test_sees_imports_inside_functions(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from .runner import run_study\n    import console.app\n")
    found = imports_of("dbp_core.m", src, {"dbp_core.runner", "console.app"})
    assert found == {"dbp_core.runner", "console.app"}


def test_the_schema_loads_neither_torch_nor_scikit_learn():
    code = ("import sys, dbp_core.config as c\n"
            "c.loads_config('name = \"x\"\\n[[attacks]]\\nkind = \"pgd-eot\"\\n')\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
