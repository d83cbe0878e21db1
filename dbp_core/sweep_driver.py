"""``dbp sweep`` and ``dbp resume <sweep>``: one run per point of a grid, one after another
(docs/design.md, "The driver and the sweep driver"; the sweep folder: ``dbp_core/store/sweeps.py``).

* :class:`SweepPlan` — a new sweep before its folder exists: the base config frozen (paths
  absolute), every point checked as ``dbp run`` checks it (the schema, then preflight; its slow
  checks once per distinct value of what they read), then the sweep folder made;
* :class:`SweepDriver` — the points in order: a point without a run gets one (created and
  recorded in points.jsonl together), an interrupted or failed point is resumed
  (``driver.claim_for_resume``), a done point is skipped. It stops at the first point that does
  not finish (``dbp resume <sweep>`` continues from there). A damaged sweep folder
  (``results.read_sweep``'s problems) is refused before anything runs; a closed output pipe
  stops the sweep resumable.

Nothing here prints: what the CLI shows of a sweep goes through a :class:`SweepOutput`.
"""
from __future__ import annotations

import itertools
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

from .driver import Claim, UserError, claim_for_resume, create_run, leave_interrupted
from .interrupts import deferred
from .store import Run, RunNotFound, RunStore, RunStoreError, Sweep, SweepPoint

if TYPE_CHECKING:
    from .config import ExperimentConfig


def grid_problem(problem: dict, where: str) -> dict:
    """A point's config problem as the grid gave it: '(from --grid key=value)' where an override of
    the point set the field, else the point named."""
    message = problem["message"]
    if "(from --set" in message:
        message = message.replace("(from --set", "(from --grid")
    else:
        message += f" (at sweep {where})"
    return {**problem, "message": message}


@dataclass
class SweepPlan:
    """A sweep to be made: the experiment ``file``, the ``grid`` ((key, values) pairs, parsed by
    ``config.parse_grid``), the ``--set`` overrides of every point, and the base config (``cfg``,
    schema checked; ``base``, frozen; ``base_dir``, where a point's relative paths resolve, as
    ``dbp run`` resolves them)."""
    file: str
    grid: list[tuple[str, list]]
    overrides: list[str]
    cfg: ExperimentConfig
    base: str
    base_dir: str

    @classmethod
    def load(cls, file: str, grid: list[tuple[str, list]], overrides: list[str]) -> "SweepPlan":
        from .config import dumps_config, load_config
        with deferred():  # the base's schema only: the points are what runs, each preflighted
            cfg = load_config(file, overrides=overrides)
        return cls(file, grid, list(overrides), cfg, dumps_config(cfg, absolute_paths=True),
                   str(Path(file).resolve().parent))

    @property
    def total(self) -> int:
        return math.prod(len(v) for _, v in self.grid)

    def points(self) -> Iterator[SweepPoint]:
        """The grid's product, first key slowest (as ``Sweep.points`` numbers them)."""
        keys = [k for k, _ in self.grid]
        for i, combo in enumerate(itertools.product(*[v for _, v in self.grid])):
            yield SweepPoint(i, dict(zip(keys, combo)), None)

    def check_points(self, on_progress: Callable[[str, int, int | None], None] | None = None) -> None:
        """Every point checked as ``dbp run`` checks it; the first one that fails is a ConfigError
        naming the point (:func:`grid_problem`)."""
        from .config import ConfigError, loads_config
        from .preflight import preflight
        cache: dict = {}  # preflight's slow checks, once per distinct value of what they read
        for point in self.points():
            try:
                with deferred():
                    preflight(loads_config(self.base, file=self.file, base_dir=self.base_dir,
                                           overrides=point.overrides), self.file, cache=cache)
            except ConfigError as exc:
                where = f"point {point.index + 1}/{self.total}: {point.label}"
                raise ConfigError(exc.file, [grid_problem(e, where) for e in exc.errors]) from None
            if on_progress is not None:
                on_progress("checking points", point.index + 1, self.total)

    def create(self, store: RunStore) -> Sweep:
        """The sweep folder, in ``store``."""
        try:
            return store.create_sweep(self.cfg.name, self.base, self.grid, source=str(Path(self.file).resolve()),
                                      overrides=self.overrides, base_dir=self.base_dir)
        except RunStoreError as exc:
            raise UserError(str(exc)) from None


@dataclass
class PreparedPoint:
    """A point ready to run: its run (claimed for resume: ``claim``; else new) and checked config;
    ``cfg`` None when its run is already done. ``where`` names the point ('point 2/3: eps=0.1')."""
    point: SweepPoint
    where: str
    run: Run
    cfg: ExperimentConfig | None
    claim: Claim | None = None


class SweepOutput(Protocol):
    """What the CLI shows while a sweep runs."""

    def run_gone(self, where: str, run_id: str) -> None:
        """The run a point names is gone (deleted?): the point is run again."""

    def claimed(self, claim: Claim) -> None:
        """A point's run was claimed for resume (or is done)."""

    def starting(self, prepared: PreparedPoint) -> None:
        """A point's run is about to run."""

    def stopped(self, where: str) -> None:
        """The point did not finish: the sweep stops there."""

    def finished(self) -> None:
        """Every point is done."""


@dataclass(frozen=True)
class SweepEnd:
    """How :meth:`SweepDriver.run` ended: ``code``, what ``execute`` returned for the point that did
    not finish (0: every point is done); ``closed_at``, the point at which the output was closed
    (its run, if it had not ended, recorded interrupted)."""
    code: int = 0
    closed_at: str | None = None


class SweepDriver:
    """Runs the points of ``sweep`` (see the module docstring) with ``execute(run, cfg)`` (0 when
    the point's run is done), telling ``output`` how it goes."""

    def __init__(self, store: RunStore, sweep: Sweep, execute: Callable[[Run, ExperimentConfig], int],
                 output: SweepOutput, allow_changed_code: bool = False):
        self.store, self.sweep, self.execute, self.output = store, sweep, execute, output
        self.allow_changed_code = allow_changed_code
        self.manifest: dict = {}
        self.base_text = ""

    def run(self) -> SweepEnd:
        self.sweep.lock()  # RunLocked (exit 2) when another process runs this sweep
        run, where = None, "its start"
        try:
            points = self._points()
            for p in points:
                where = f"point {p.index + 1}/{len(points)}: {p.label}"
                run = None
                prepared = self._prepare(p, where)
                if prepared.claim is not None:
                    self.output.claimed(prepared.claim)
                if prepared.cfg is None:
                    continue  # done
                run = prepared.run
                self.output.starting(prepared)
                code = self.execute(run, prepared.cfg)
                if code != 0:
                    self.output.stopped(where)
                    return SweepEnd(code)
            run = None
            self.output.finished()
        except BrokenPipeError:
            if run is not None:  # not ended: resumable, never left 'queued'
                leave_interrupted(run)
                run.unlock()
            return SweepEnd(closed_at=where)
        finally:
            self.sweep.unlock()
        return SweepEnd()

    def _points(self) -> list[SweepPoint]:
        """The points with their runs, each run checked against its point (``results.read_sweep``),
        and the frozen base config; UserError naming what is damaged."""
        from .results import read_sweep
        view = read_sweep(self.sweep.path)
        if view.problems:
            raise UserError(f"sweep {self.sweep.id} cannot be resumed: " + "; ".join(view.problems))
        self.manifest = view.manifest
        try:
            self.base_text = self.sweep.config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"sweep {self.sweep.id} cannot be resumed: {self.sweep.config_path} cannot be read "
                            f"({exc}); expected the base config dbp sweep froze") from None
        return [pv.point for pv in view.points]

    def _prepare(self, p: SweepPoint, where: str) -> PreparedPoint:
        """Point ``p`` ready to run: its run claimed for resume, or a new run (its run is gone, or
        it has none yet)."""
        if p.run:
            try:
                claim = claim_for_resume(self.store.open(p.run), self.allow_changed_code)
            except RunNotFound:
                self.output.run_gone(where, p.run)
            else:
                return PreparedPoint(p, where, claim.run, claim.cfg, claim)
        return PreparedPoint(p, where, *self._new_run(p, where))

    def _new_run(self, p: SweepPoint, where: str) -> tuple[Run, ExperimentConfig]:
        """A new run of point ``p``, checked as ``dbp run`` checks a config, recorded in points.jsonl."""
        from .config import ConfigError, loads_config
        from .preflight import preflight
        try:
            with deferred():
                cfg = preflight(loads_config(self.base_text, file=str(self.sweep.config_path),
                                             base_dir=str(self.sweep.base_dir(self.manifest)), overrides=p.overrides),
                                str(self.sweep.config_path))
        except ConfigError as exc:
            raise ConfigError(exc.file, [grid_problem(e, where) for e in exc.errors]) from None
        with deferred():  # the run and its record in points.jsonl together: no run of no point
            run = create_run(self.store, cfg, self.manifest.get("source"), group=self.sweep.id)
            try:
                self.sweep.set_run(p.index, run.id)
            except BaseException:  # not recorded (a full disk): the new, untouched folder goes
                run.unlock()
                shutil.rmtree(run.path, ignore_errors=True)
                raise
        return run, cfg
