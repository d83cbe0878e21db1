"""The examples of the docs run: every ```python block of docs/api.md (and of docs/config.md)
is executed as a script of its own — a fresh namespace, an empty temporary working folder, one
torch thread — and a block that raises fails with the file and line it starts at. The blocks
assert their own results (an accuracy, a shape, an equality), so a wrong example fails too."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("api.md", "config.md")  # pages of docs/
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(line of the block's first code line, code) of every ```python block of the page ``path``."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def run_block(path: Path, line: int, code: str) -> None:
    """Execute one block as a script; AssertionError naming the page and line if it raises."""
    # padded with empty lines so that a traceback's line numbers are the page's own
    compiled = compile("\n" * (line - 1) + code, str(path), "exec")
    try:
        exec(compiled, {"__name__": "__doc_example__"})
    except Exception as exc:
        raise AssertionError(f"{path}: the example at line {line} raised {type(exc).__name__}: {exc}") from exc


BLOCKS = [(doc, line, code) for doc in DOCS for line, code in python_blocks(ROOT / "docs" / doc)]


def test_the_api_page_has_examples():
    lines = [line for doc, line, _ in BLOCKS if doc == "api.md"]
    assert len(lines) >= 20, lines


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def stage_registry():
    """A block may register a stage: the registry is restored afterwards, as a fresh process would have it."""
    from dbp_core.stages import registry
    saved = dict(registry._REGISTERED)
    yield
    registry._REGISTERED.clear()
    registry._REGISTERED.update(saved)


@pytest.mark.parametrize("doc, line, code", BLOCKS, ids=[f"docs/{doc}:{line}" for doc, line, _ in BLOCKS])
def test_doc_example_runs(doc, line, code, tmp_path, monkeypatch, one_thread, stage_registry):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DBP_RUNS_DIR", str(tmp_path / "runs"))
    run_block(ROOT / "docs" / doc, line, code)


def test_a_failing_block_is_reported_with_its_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# page\n\n```python\nassert 1 == 1\n```\n\ntext\n\n```python\nx = 1\nassert x == 2\n```\n")
    blocks = python_blocks(page)
    assert [line for line, _ in blocks] == [4, 10]
    run_block(page, *blocks[0])
    with pytest.raises(AssertionError, match=r"page.md: the example at line 10 raised AssertionError") as info:
        run_block(page, *blocks[1])
    tb = info.value.__cause__.__traceback__
    while tb.tb_next:
        tb = tb.tb_next
    assert tb.tb_lineno == 11 and tb.tb_frame.f_code.co_filename == str(page)  # the page's own line
