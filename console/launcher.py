"""Starting, queueing and cancelling ``dbp run`` processes.

A run is a separate process: ``sys.executable -m dbp_core --runs-dir R run FILE --no-progress``,
started from an argument list (no shell, so no config value can inject a command), in a new
session (``start_new_session=True``: closing the console or pressing Ctrl+C in it does not
reach the run), with stdin from /dev/null and stdout/stderr into a file (never a pipe, which
would break once the console is gone). The console only reads the run folder back.

The queue's limit counts every run of the store that is running — started from this console, a
shell, or an earlier console — plus the jobs of this console whose run is not known yet, each once.
A sweep (``dbp sweep``) is one job that runs its points one after another.
"""
from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dbp_core.results import running_runs
from dbp_core.store import RunStatus, pid_alive

__all__ = ["Job", "Launcher", "run_command", "resume_command", "sweep_command", "cancel_pid"]

_RUN_LINE = re.compile(r"^(?:run|resuming run) (\S+)", re.M)
_SWEEP_LINE = re.compile(r"^sweep (\S+) in ", re.M)


def run_command(runs_dir: Path, toml: Path, overrides: list[str] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "dbp_core", "--runs-dir", str(runs_dir), "run", str(toml), "--no-progress"]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def sweep_command(runs_dir: Path, toml: Path, grid: list[str], overrides: list[str] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "dbp_core", "--runs-dir", str(runs_dir), "sweep", str(toml), "--no-progress"]
    for g in grid:
        cmd += ["--grid", g]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def resume_command(runs_dir: Path, run_id: str) -> list[str]:
    return [sys.executable, "-m", "dbp_core", "--runs-dir", str(runs_dir), "resume", run_id, "--no-progress"]


def cancel_pid(pid: int) -> bool:
    """SIGINT to a run's process group (it is a session leader), else to the pid itself.
    The run turns it into 'interrupted' (resumable) on its own."""
    try:
        os.killpg(pid, signal.SIGINT)
        return True
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGINT)
            return True
        except (ProcessLookupError, PermissionError):
            return False


_ids = itertools.count(1)


@dataclass
class Job:
    label: str
    cmd: list[str]
    state: str = "queued"     # queued -> running -> exited | cancelled
    proc: subprocess.Popen | None = None
    run_id: str | None = None  # the (first) run it made; a sweep: see runs, sweep_id
    out_path: Path | None = None
    sweep_id: str | None = None
    runs: list[str] = field(default_factory=list)  # every run it has started, in order
    returncode: int | None = None
    id: int = field(default_factory=lambda: next(_ids))
    submitted: float = field(default_factory=time.time)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def current_run(self) -> str | None:
        """The run it is running now (a sweep's latest point)."""
        return self.runs[-1] if self.runs else self.run_id


class Launcher:
    """A queue of runs with at most ``max_parallel`` running at once. Call :meth:`tick`
    periodically (the console does so from a timer): it reaps finished processes, starts
    queued jobs and learns each job's run id from the first line the CLI prints."""

    def __init__(self, runs_dir: str | os.PathLike, cwd: str | os.PathLike | None = None, max_parallel: int = 1,
                 env: dict | None = None):
        self.runs_dir = Path(runs_dir).resolve()
        self.cwd = Path(cwd or os.getcwd())
        self.max_parallel = max(1, int(max_parallel))
        self.env = env
        self.jobs: list[Job] = []
        self.store_running: list[str] = []  # running runs of the store at the last count

    # ---- queue
    def submit(self, toml: str | os.PathLike, overrides: list[str] = (), label: str | None = None) -> Job:
        toml = Path(toml).resolve()
        job = Job(label=label or toml.stem, cmd=run_command(self.runs_dir, toml, list(overrides)))
        self.jobs.append(job)
        self.tick()
        return job

    def submit_sweep(self, toml: str | os.PathLike, grid: list[str], label: str | None = None) -> Job:
        """Queue ``dbp sweep toml --grid ...`` (one job: its points run one after another)."""
        toml = Path(toml).resolve()
        job = Job(label=label or f"sweep {toml.stem}", cmd=sweep_command(self.runs_dir, toml, list(grid)))
        self.jobs.append(job)
        self.tick()
        return job

    def resume(self, run_id: str) -> Job:
        job = Job(label=f"resume {run_id}", cmd=resume_command(self.runs_dir, run_id), run_id=run_id)
        self.jobs.append(job)
        self.tick()
        return job

    def running(self) -> list[Job]:
        return [j for j in self.jobs if j.state == "running"]

    def queued(self) -> list[Job]:
        return [j for j in self.jobs if j.state == "queued"]

    def busy(self, store_running: list[str] | None = None) -> int:
        """How many runs count against max-parallel: the store's running runs (``store_running``,
        default: read now) and this console's running jobs whose current run is not among them
        (just started, or a sweep between two points), each once."""
        if store_running is None:
            store_running = running_runs(self.runs_dir)
        busy = set(store_running)
        for job in self.running():
            busy.add(job.current_run if job.current_run in busy else f"job-{job.id}")
        return len(busy)

    def tick(self) -> None:
        for job in self.running():
            self._learn_run_id(job)
            rc = job.proc.poll()
            if rc is not None:
                job.returncode = rc
                job.state = "exited"
                self._learn_run_id(job)
        queued = self.queued()
        if not queued:
            return
        self.store_running = running_runs(self.runs_dir)  # read only while something waits
        free = self.max_parallel - self.busy(self.store_running)
        for job in queued[:max(0, free)]:
            self._start(job)

    def _start(self, job: Job) -> None:
        logs = self.runs_dir / ".console"
        logs.mkdir(parents=True, exist_ok=True)
        job.out_path = logs / f"job-{os.getpid()}-{job.id}-{int(time.time())}.out"
        with open(job.out_path, "wb") as out:
            job.proc = subprocess.Popen(job.cmd, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True, env=self.env,
                                        close_fds=True)
        job.state = "running"

    def _learn_run_id(self, job: Job) -> None:
        """The run ids (and a sweep's id) from what the CLI printed so far."""
        if job.out_path is None or (job.run_id and job.state != "running" and job.sweep_id is None):
            return
        try:
            text = job.out_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        ids = list(dict.fromkeys(_RUN_LINE.findall(text)))
        if ids:
            job.runs = ids
            job.run_id = job.run_id or ids[0]
        m = _SWEEP_LINE.search(text)
        if m:
            job.sweep_id = m.group(1)

    def output(self, job: Job) -> str:
        try:
            return job.out_path.read_text(encoding="utf-8", errors="replace") if job.out_path else ""
        except OSError:
            return ""

    # ---- cancel
    def cancel_job(self, job: Job) -> bool:
        if job.state == "queued":
            job.state = "cancelled"
            return True
        if job.state == "running" and job.proc is not None:
            return cancel_pid(job.proc.pid)
        return False

    def job_for_run(self, run_id: str) -> Job | None:
        for job in reversed(self.jobs):
            if job.state == "running" and (job.run_id == run_id or job.current_run == run_id):
                return job
        return None

    def cancel_run(self, run_id: str, status: RunStatus | None = None) -> bool:
        """Cancel a run started here, or one started elsewhere on this host (the pid of its
        ``status``, if that process is still the run's)."""
        job = self.job_for_run(run_id)
        if job is not None:
            return self.cancel_job(job)
        if status is not None and status.state == "running" and status.pid is not None:
            if pid_alive(status.pid, status.proc_start):
                return cancel_pid(status.pid)
        return False
