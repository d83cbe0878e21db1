"""One run folder as readers see it (docs/design.md, "The read side"): :func:`read_run` — a
:class:`RunView` of its typed status, its ``results.json`` (shape checked) and the problems of
damaged files, named; it never raises on a damaged run — :func:`list_runs`, :func:`running_runs`."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..store import Run, RunFileError, RunStatus, RunStore, parse_run_id, read_json_object
from .shape import check_results

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class RunView:
    """What a run folder says, read once. ``problems`` names each damaged file (and field);
    ``status`` is None when ``status.json`` is missing or damaged."""
    path: Path
    status: RunStatus | None
    results: dict | None
    problems: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def run(self) -> Run:
        return Run(self.path)

    @property
    def state(self) -> str:
        """The run's state; 'damaged' when status.json cannot be read, 'unknown' when absent."""
        if self.status is not None:
            return self.status.state
        return "damaged" if self.status_problem else "unknown"

    @property
    def status_problem(self) -> str | None:
        return next((p for p in self.problems if "status.json" in p), None)

    @property
    def experiment(self) -> str:
        if self.status is not None and self.status.experiment:
            return self.status.experiment
        if self.results and isinstance(self.results.get("experiment"), str):
            return self.results["experiment"]
        parsed = parse_run_id(self.id)
        return parsed.experiment if parsed else "?"

    @property
    def label(self) -> str:
        """'<experiment> (<token>)': short and unique within a store."""
        parsed = parse_run_id(self.id)
        return f"{self.experiment} ({parsed.token})" if parsed else self.id

    @property
    def rows(self) -> list[dict]:
        return list((self.results or {}).get("accuracies") or [])

    @property
    def comparisons(self) -> list[dict]:
        return list((self.results or {}).get("comparisons") or [])

    @property
    def headline(self) -> dict | None:
        return (self.results or {}).get("headline")

    @property
    def audit(self) -> dict | None:
        """The evaluation audit, ``{"attack", "flags": [{"name", "raised", "summary", "numbers"}]}``
        (docs/results.md, "The audit"); None when the run has none."""
        return (self.results or {}).get("audit")

    def progress_text(self) -> str:
        p = self.status.progress if self.status is not None else None
        if p is None or not p.total:
            return "-"
        return f"{p.stage or ''} {p.done:g}/{p.total:g}".strip()

    def log_tail(self, lines: int = 20) -> list[str]:
        try:
            return self.run.read_log_tail(lines)
        except (OSError, RunFileError):  # a link in place of log.txt is named in `problems`
            return []

    @property
    def source(self) -> str | None:
        """The experiment file the run was started from (``dbp run FILE``), when recorded."""
        return self.status.source if self.status is not None else None

    @property
    def group(self) -> str | None:
        """The sweep this run is a point of, if any."""
        return self.status.group if self.status is not None else None

    @property
    def config_text(self) -> str | None:
        """``config.toml``, the frozen config, as written (None when absent or unreadable)."""
        try:
            return self.run.config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    @property
    def config(self) -> dict | None:
        """The frozen config as a plain TOML document (not validated: no torch, no imports);
        None when absent or not TOML."""
        if "_config" not in self.__dict__:
            text = self.config_text
            try:
                self.__dict__["_config"] = tomllib.loads(text) if text is not None else None
            except tomllib.TOMLDecodeError:
                self.__dict__["_config"] = None
        return self.__dict__["_config"]


def read_run(path: str | os.PathLike, *, check_alive: bool = True) -> RunView:
    """A :class:`RunView` of the run folder ``path``; damaged files become ``problems``."""
    run = Run(Path(path))
    problems = run.file_problems()  # a link or a non-file in place of a run file
    try:
        status = run.read_status(check_alive=check_alive)
    except RunFileError as exc:
        status = None
        problems.append(str(exc))
    except OSError as exc:
        status = None
        problems.append(f"{run.status_path}: cannot be read ({exc.strerror or exc})")
    try:
        data = read_json_object(run.results_path)
        results = check_results(data, run.results_path) if data is not None else None
    except RunFileError as exc:
        results = None
        problems.append(str(exc))
    return RunView(run.path, status, results, list(dict.fromkeys(problems)))


def list_runs(root: str | os.PathLike) -> list[RunView]:
    """Every run of the store at ``root``, oldest first; never raises on a damaged run."""
    return [read_run(r.path) for r in RunStore(root).list()]


def running_runs(root: str | os.PathLike) -> list[str]:
    """Ids of the runs of the store whose process is alive and says 'running' — whoever started
    them (a shell, this console, another one). Reads ``status.json`` only."""
    out = []
    for run in RunStore(root).list():
        try:
            status = run.read_status()
        except RunFileError:
            continue
        if status is not None and status.state == "running":
            out.append(run.id)
    return out
