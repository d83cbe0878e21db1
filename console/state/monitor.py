"""The monitor screen's state: one run folder followed live (docs/console.md, "Monitor").

A :class:`RunMonitor` reads the folder through :mod:`dbp_core.results`: the status and the
log with :func:`~dbp_core.results.read_run`, ``metrics.jsonl`` incrementally with a
:class:`~dbp_core.results.MetricsView` — so the curves are the ones ``dbp report`` draws, and
a batch that a resumed run repeats (the one it was killed in) counts once.

No Textual, no torch: :meth:`RunMonitor.poll` is safe in a worker thread.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from dbp_core.results import MetricsView, RunStatus, RunView, headline_text, read_run, row_meaning
from dbp_core.store import Progress
from dbp_core.stages.registry import ORIGINAL, SINGLE

from .format import fmt_diff, fmt_pct, progress_text
from .runs import audit_of

__all__ = ["RunMonitor", "MonitorSnapshot", "Curve", "ResultsSummary", "results_summary"]

# one attack's curves: success (iterations, values), loss (iterations, values)
Curve = tuple[list[int], list[float], list[int], list[float]]


class _FromStatus:
    """A read-only attribute of a snapshot taken from its run's status (``default()`` while the
    run has none: no ``status.json`` yet, or a damaged one)."""

    def __init__(self, default=lambda: None):
        self.default = default

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, snapshot, owner=None):
        if snapshot is None:
            return self
        status = snapshot.status
        return getattr(status, self.name) if status is not None else self.default()


@dataclass
class MonitorSnapshot:
    """What the monitor shows of one run at one poll.

    ``curves``: per attack, the attacker's view per iteration (n-weighted over every batch
    seen), as (success iterations, success, loss iterations, loss), points without a finite
    value left out. ``train_loss``: per ADDT variant ('' for events without one), the training
    loss per step."""
    run_id: str
    path: Path
    state: str
    experiment: str
    status: RunStatus | None
    problems: list[str]
    log_tail: list[str]
    events: int
    bad_lines: int
    curves: dict[str, Curve]
    train_loss: dict[str, tuple[list[int], list[float]]]
    robust: dict[str, float]
    evals: dict[str, float]
    view: RunView | None = None

    @property
    def source(self) -> str | None:
        return self.view.source if self.view is not None else None

    # not annotated: dataclass fields they are not
    progress = _FromStatus(Progress)  # Progress
    eta = _FromStatus()  # float | None, seconds
    pid = _FromStatus()  # int | None

    @property
    def message(self) -> str:
        """The status message, else what is wrong with a damaged run file."""
        if self.status is not None and self.status.message:
            return self.status.message
        return "; ".join(self.problems)

    @property
    def progress_text(self) -> str:
        """'attacks 24/48 examples × attacks × seeds (50%)' ('?' for an unknown total)."""
        p = self.progress
        return progress_text(p.stage, p.done, p.total)

    @property
    def points(self) -> int:
        return sum(len(c[0]) for c in self.curves.values()) + sum(len(xs) for xs, _ in self.train_loss.values())

    @property
    def fraction(self) -> float | None:
        p = self.progress
        if not p.total:
            return None
        return max(0.0, min(1.0, float(p.done) / float(p.total)))


def _finite_points(xs: list[int], ys: list[float]) -> tuple[list[int], list[float]]:
    keep = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
    return [x for x, _ in keep], [y for _, y in keep]


class RunMonitor:
    """Follows one run folder. :meth:`poll` reads only what was appended to ``metrics.jsonl``
    since the last call (a half-written last line waits for its newline) and survives a missing
    or damaged ``status.json``, an empty or missing metrics file and a run whose process died
    (reported 'interrupted' by the run store)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.metrics = MetricsView(self.path)

    @property
    def id(self) -> str:
        return self.path.name

    def poll(self, log_lines: int = 8) -> MonitorSnapshot:
        self.metrics.poll()
        view = read_run(self.path)
        curves = {}
        for attack, c in self.metrics.attack_curves().items():
            curves[attack] = (*_finite_points(c["iteration"], c["success"]),
                              *_finite_points(c["iteration"], c["loss"]))
        train_loss = {}
        for key, (xs, ys) in self.metrics.addt_curves().items():
            name, _, variant = key.partition("/")
            if name == "loss":
                train_loss[variant] = (list(xs), list(ys))
        return MonitorSnapshot(
            run_id=view.id, path=view.path, state=view.state, experiment=view.experiment, status=view.status,
            problems=list(view.problems), log_tail=view.log_tail(log_lines), events=self.metrics.events,
            bad_lines=self.metrics.bad_lines, curves=curves, train_loss=train_loss,
            robust=dict(self.metrics.robust), evals=dict(self.metrics.evals), view=view)


@dataclass
class ResultsSummary:
    """What the monitor shows of a finished run (``results.json``): the headline, the accuracy
    rows with intervals and what each measures, the paired differences, the audit flags."""
    headline: str
    rows: list[tuple[str, str, str, str, str]]          # what, accuracy, interval, n, meaning
    differences: list[tuple[str, str, str, str]]       # a − b, difference, interval, what
    versus: list[str]                                   # attack vs attack lines (e.g. PGD-EOT vs DW-box)
    audit_attack: str | None
    audit: list[tuple[bool, str, str]]                  # raised, name, summary


def _model_attack(label: str) -> tuple[str, str]:
    """A comparison label '[model:]attack:protocol' (docs/results.md) → (model, attack)."""
    parts = str(label).split(":")
    return (parts[0], parts[1]) if len(parts) >= 3 else (ORIGINAL, parts[0])


def results_summary(view: RunView) -> ResultsSummary | None:
    """The :class:`ResultsSummary` of a run with ``results.json``, else None."""
    if not view.results:
        return None
    rows = []
    for r in view.rows:
        model = f"{r['model']}: " if r.get("model") not in (None, ORIGINAL) else ""
        what = model + (f"{r['attack']} / " if r.get("attack") else "") + str(r["protocol"])
        rows.append((what, fmt_pct(r.get("accuracy")), f"[{fmt_pct(r.get('ci_low'))}, {fmt_pct(r.get('ci_high'))}]",
                     str(r.get("n", "")), row_meaning(r)))
    diffs, versus = [], []
    acc = {(r.get("model") or ORIGINAL, r.get("attack"), r["protocol"]): r for r in view.rows}
    for c in view.comparisons:
        diffs.append((f"{c['a']} − {c['b']}", fmt_diff(c.get("diff")),
                      f"[{fmt_diff(c.get('ci_low'))}, {fmt_diff(c.get('ci_high'))}]", str(c.get("what", ""))))
        if c.get("what") == "attack vs attack":
            (ma, a), (mb, b) = _model_attack(c["a"]), _model_attack(c["b"])
            ra, rb = acc.get((ma, a, SINGLE)), acc.get((mb, b, SINGLE))
            prefix = f"{ma}: " if ma != ORIGINAL else ""
            versus.append(f"{prefix}{a} {fmt_pct(ra and ra['accuracy'])} vs {b} {fmt_pct(rb and rb['accuracy'])}: "
                          f"{fmt_diff(c.get('diff'))} [{fmt_diff(c.get('ci_low'))}, {fmt_diff(c.get('ci_high'))}]")
    audit = audit_of(view)
    flags = [(bool(f.get("raised")), str(f.get("name", "?")), str(f.get("summary", "")))
             for f in (audit or {}).get("flags", []) if isinstance(f, dict)]
    return ResultsSummary(headline_text(view.headline), rows, diffs, versus,
                          (audit or {}).get("attack") if audit else None, flags)
