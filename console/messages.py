"""What the screens ask the console to do. A screen posts one of these (``self.post_message``);
a message posted by a screen bubbles to the :class:`~console.app.ConsoleApp`, which owns the
launcher and the watch list and handles it (``on_launch_experiment``, ...). Screens read
app-wide settings (``runs_dir``, ``experiments_dir``) and the queue for display only."""
from __future__ import annotations

import os
from pathlib import Path

from textual.message import Message

__all__ = ["LaunchExperiment", "LaunchSweep", "WatchRun", "WatchSweep", "ResumeRun", "CancelRun", "ChangeParallel"]


class LaunchExperiment(Message):
    """Queue ``dbp run <path>`` and show its run in the monitor once its id is known."""

    def __init__(self, path: str | os.PathLike, name: str | None = None):
        super().__init__()
        self.path = Path(path)
        self.name = name or self.path.stem


class LaunchSweep(Message):
    """Queue ``dbp sweep <path> --grid ...`` and open its sweep view once its id is known."""

    def __init__(self, path: str | os.PathLike, grid: list[str], name: str | None = None):
        super().__init__()
        self.path = Path(path)
        self.grid = list(grid)
        self.name = name or self.path.stem


class WatchSweep(Message):
    """Open the sweep view of the sweep ``sweep_id``."""

    def __init__(self, sweep_id: str):
        super().__init__()
        self.sweep_id = sweep_id


class WatchRun(Message):
    """Show the run ``run_id`` in the monitor (ticked alone: the overlay is replaced) and switch
    to the monitor."""

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id


class ResumeRun(Message):
    """``dbp resume <run_id>`` as a new process (an interrupted or failed run); the monitor
    ticks the run."""

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id


class CancelRun(Message):
    """SIGINT to the run's process group: the run marks itself interrupted (resumable)."""

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id


class ChangeParallel(Message):
    """Raise (``delta`` > 0) or lower the queue's max-parallel (never below 1)."""

    def __init__(self, delta: int):
        super().__init__()
        self.delta = delta
