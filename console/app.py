"""The dbp console: ``dbp console`` / ``python -m console``.

Three screens (Textual modes): Experiments, Monitor, Runs; pushed on top of them: the sweep
view, the compare view, a run's frozen config and report, dialogs; a help screen; the command
palette (Ctrl+P). The console never owns a run: runs are ``dbp run`` processes in their own
session (see :mod:`console.launcher`); the console reads their folders back through
:mod:`dbp_core.results` (its state, without Textual, is :mod:`console.state`). The screens ask
for actions with the messages of :mod:`console.messages`; this app owns the launcher and the
watch list and handles them.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Iterable

from textual.app import App, SystemCommand
from textual.screen import Screen

from dbp_core.results import read_run

from .launcher import Job, Launcher
from .messages import (CancelRun, ChangeParallel, LaunchExperiment, LaunchSweep, ResumeRun, WatchRun,
                       WatchSweep)
from .screens import ExperimentsScreen, HelpScreen, MonitorScreen, RunsScreen, SweepScreen


class ConsoleApp(App):
    CSS_PATH = "console.tcss"
    TITLE = "dbp console"
    MODES = {"experiments": ExperimentsScreen, "monitor": MonitorScreen, "runs": RunsScreen}
    DEFAULT_MODE = "experiments"
    # the global keys are the screens' (console.screens.base), first in every footer
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]  # console.tcss lays out both

    def __init__(self, experiments_dir: str | os.PathLike = "experiments", runs_dir: str | os.PathLike | None = None,
                 *, cwd: str | os.PathLike | None = None, max_parallel: int = 1, env: dict | None = None,
                 poll_interval: float | None = None, inline_images: str | None = None):
        super().__init__()
        self.inline_images = inline_images  # 'sixel' / 'tgp' when report figures show inline
        from dbp_core.store import default_runs_dir
        self.experiments_dir = Path(experiments_dir)
        self.runs_dir = default_runs_dir(runs_dir)
        self.poll_interval = poll_interval or MonitorScreen.POLL_S  # the monitor's file polls
        self.launcher = Launcher(self.runs_dir, cwd=cwd or os.getcwd(), max_parallel=max_parallel, env=env)
        self._watch_requests: list[str] = []
        self._watch_jobs: list[Job] = []
        self.pending_job: Job | None = None  # the launch the monitor shows until its run exists
        self._sweep_jobs: list[Job] = []

    def on_mount(self) -> None:
        self.sub_title = f"experiments: {self.experiments_dir} · runs: {self.runs_dir}"
        self.set_interval(min(1.0, self.poll_interval), self.tick)

    def tick(self) -> None:
        """The launcher's tick, then what the new output of jobs says (a sweep's id)."""
        self.launcher.tick()
        for job in list(self._sweep_jobs):
            if job.sweep_id:
                self._sweep_jobs.remove(job)
                self.open_sweep(job.sweep_id)
            elif job.state in ("exited", "cancelled"):
                self._sweep_jobs.remove(job)
                self._report_failed(job)

    # ---- what the screens ask for (console.messages)
    def on_launch_experiment(self, message: LaunchExperiment) -> None:
        job = self.launcher.submit(message.path, label=message.name)
        state = "started" if job.state == "running" else "queued"
        self.notify(f"{state}: {message.name} (job {job.id})")
        self._watch_jobs.append(job)  # its run is shown in the monitor once its id is known
        self.pending_job = job  # until then the monitor shows the launch, not the previous run
        self.switch_mode("monitor")

    def on_launch_sweep(self, message: LaunchSweep) -> None:
        job = self.launcher.submit_sweep(message.path, message.grid, label=f"sweep {message.name}")
        state = "started" if job.state == "running" else "queued"
        self.notify(f"{state}: sweep of {message.name} over {'; '.join(message.grid)} (job {job.id})")
        self._sweep_jobs.append(job)  # its sweep view opens once its id is known
        self.tick()

    def on_watch_sweep(self, message: WatchSweep) -> None:
        self.open_sweep(message.sweep_id)

    def open_sweep(self, sweep_id: str) -> None:
        if isinstance(self.screen, SweepScreen) and self.screen.sweep_id == sweep_id:
            return
        self.push_screen(SweepScreen(sweep_id))

    def on_watch_run(self, message: WatchRun) -> None:
        self._watch_requests.append(message.run_id)
        self.pending_job = None
        self.switch_mode("monitor")

    def on_resume_run(self, message: ResumeRun) -> None:
        self.launcher.resume(message.run_id)
        self._watch_requests.append(message.run_id)
        self.notify(f"resuming {message.run_id}")

    def on_cancel_run(self, message: CancelRun) -> None:
        status = read_run(self.runs_dir / message.run_id).status  # fresh: pid and liveness now
        if self.launcher.cancel_run(message.run_id, status):
            self.notify(f"cancelling {message.run_id} (SIGINT) — it will be marked interrupted")
        else:
            self.notify(f"could not signal {message.run_id}", severity="error")

    def on_change_parallel(self, message: ChangeParallel) -> None:
        self.launcher.max_parallel = max(1, self.launcher.max_parallel + message.delta)
        self.notify(f"max parallel runs: {self.launcher.max_parallel}")
        self.launcher.tick()  # a raised limit starts queued jobs now

    def _report_failed(self, job: Job) -> None:
        if job.returncode:
            self.notify(f"{job.label} exited with code {job.returncode}: {self.launcher.output(job)[-300:]}",
                        severity="error", timeout=10)

    def take_watch_requests(self, known_ids: Iterable[str]) -> list[str]:
        """The runs to show in the monitor that are now in the store (the monitor asks at each
        poll); a watched job that exited with an error before it made a run is reported."""
        known = set(known_ids)
        for job in list(self._watch_jobs):
            if job.run_id:
                self._watch_requests.append(job.run_id)
                self._watch_jobs.remove(job)
            elif job.state in ("exited", "cancelled"):
                self._watch_jobs.remove(job)
                if self.pending_job is job:
                    self.pending_job = None
                self._report_failed(job)
        ready = [r for r in self._watch_requests if r in known]
        self._watch_requests = [r for r in self._watch_requests if r not in known]
        if self.pending_job is not None and self.pending_job.run_id in ready:
            self.pending_job = None
        return ready

    # ---- help and command palette
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def deliver_screenshot(self, filename: str | None = None, path: str | None = None,
                           time_format: str | None = None) -> str | None:
        """Screenshots (palette: Screenshot) go to ``<runs dir>/screenshots/``: Textual's default,
        the user's Downloads folder, does not exist on a headless server."""
        if path is None:
            folder = Path(self.runs_dir) / "screenshots"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                path = str(folder)
            except OSError as exc:
                self.notify(f"cannot create {folder}: {exc}", severity="error")
                return None
        return super().deliver_screenshot(filename, path, time_format)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Experiments", "Edit, save and launch experiment TOMLs",
                            lambda: self.switch_mode("experiments"))
        yield SystemCommand("Monitor", "Live curves, progress and logs of runs", lambda: self.switch_mode("monitor"))
        yield SystemCommand("Runs", "Run history, filter, compare, export, delete, report",
                            lambda: self.switch_mode("runs"))
        yield SystemCommand("Help", "Key bindings and what each screen does", self.action_help)
        yield SystemCommand("More parallel runs", "Raise the queue's max-parallel by one",
                            lambda: self.post_message(ChangeParallel(1)))
        yield SystemCommand("Fewer parallel runs", "Lower the queue's max-parallel by one",
                            lambda: self.post_message(ChangeParallel(-1)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dbp console", description="Textual console: configure, launch, watch runs")
    p.add_argument("--experiments", metavar="DIR", default="experiments", help="experiment TOMLs (default: ./experiments)")
    p.add_argument("--runs-dir", metavar="DIR", default=None, help="run store (default: $DBP_RUNS_DIR or ./runs)")
    p.add_argument("--max-parallel", type=int, default=1, help="runs executing at once (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .widgets.images import probe_inline_images
    inline = probe_inline_images()  # asks the terminal now: it cannot once Textual owns it
    ConsoleApp(args.experiments, args.runs_dir, max_parallel=args.max_parallel, inline_images=inline).run()
    return 0
