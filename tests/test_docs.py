"""Code comments cite the repository's docs by file and section: every cited file exists and
every cited section is a heading of it (docs/design.md, "Layers")."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a doc of ours and its sections: ``docs/<page>.md, "A" and "B"``, ``README, "A"`` (not another project's README)
CITE = re.compile(r"(docs/[\w-]+\.md|(?<![\w-] )(?<![\"'/])README(?:\.md)?(?![\"']))[,:]?\s*(?:\(?\s*)"
                  r"((?:\"[^\"\n]+\"(?:\s*(?:and|,)\s*)?)*)")


def headings(doc: Path) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#+\s+(.+)$", doc.read_text(encoding="utf-8"), re.M)}


def citing_files():
    """The code, the experiments and the docs: everything that may cite a doc and its section."""
    for folder in ("dbp_core", "console", "csrc", "benchmarks", "tests", "experiments", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".cpp", ".h", ".cu", ".tcss", ".toml", ".md") and path.name != "test_docs.py" \
                    and "data" not in path.relative_to(ROOT).parts[:2]:
                yield path
    yield ROOT / "README.md"


def test_cited_docs_and_sections_exist():
    bad = []
    for path in citing_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in CITE.finditer(text):
            doc = ROOT / (m.group(1) if m.group(1).startswith("docs/") else "README.md")
            if not doc.is_file():
                bad.append(f"{path.relative_to(ROOT)}: {m.group(1)} does not exist")
                continue
            for section in re.findall(r"\"([^\"\n]+)\"", m.group(2) or ""):
                if section not in headings(doc):
                    bad.append(f"{path.relative_to(ROOT)}: {m.group(1)} has no section \"{section}\"")
    assert not bad, "\n".join(bad)
