"""What a report reads of one run folder, through :mod:`dbp_core.results` (docs/reports.md):
``results.json``, ``metrics.jsonl`` (``attack_iter``, ``addt_step`` events) and the analysis files;
missing parts are None / empty, damaged ones named in ``problems``."""
from __future__ import annotations

from pathlib import Path

from ..results import MetricsView, read_analysis, read_run


class RunData:
    """Everything a report reads from one run folder, through :mod:`dbp_core.results`
    (missing parts are None / empty)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.view = read_run(self.path)
        self.metrics = MetricsView(self.path)
        self.metrics.poll()
        analysis, problems = read_analysis(self.path)  # shape checked: a damaged file is named, not drawn
        self.trajectory, self.landscape = analysis["trajectory"], analysis["landscape"]
        self.problems = list(self.view.problems) + problems + ([self.metrics.problem] if self.metrics.problem else [])

    @property
    def id(self) -> str:
        return self.view.id

    @property
    def label(self) -> str:
        return self.view.label

    @property
    def results(self) -> dict | None:
        return self.view.results

    @property
    def state(self) -> str:
        return self.view.state

    @property
    def rows(self) -> list[dict]:
        return self.view.rows

    @property
    def comparisons(self) -> list[dict]:
        return self.view.comparisons

    @property
    def bad_lines(self) -> int:
        return self.metrics.bad_lines

    def attack_curves(self) -> dict[str, dict[str, list[float]]]:
        return self.metrics.attack_curves()

    def addt_curves(self) -> dict[str, tuple[list[int], list[float]]]:
        return self.metrics.addt_curves()


def load_run(path: str | Path) -> RunData:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no run folder {path}")
    return RunData(path)
