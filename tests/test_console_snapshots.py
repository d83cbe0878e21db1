"""Snapshot tests (pytest-textual-snapshot) of every console screen on fixed fake run dirs
(tests/data/console_runs: fixed timestamps, fake host, relative paths). Update the baselines
with ``pytest tests/test_console_snapshots.py --snapshot-update`` after an intended UI change."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from console.app import ConsoleApp
from console.messages import WatchRun

REPO = Path(__file__).resolve().parents[1]
EXP = "tests/data/console_runs/experiments"
RUNS = "tests/data/console_runs/runs"
SIZE = (100, 30)


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the fixture paths are shown relative to the repository


async def until(pilot, cond, timeout=20.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        await pilot.pause(0.05)
    await pilot.pause(0.3)


def app() -> ConsoleApp:
    return ConsoleApp(EXP, RUNS, cwd=REPO)


def test_snapshot_experiments_with_error(snap_compare):
    async def before(pilot):
        scr = pilot.app.screen
        await until(pilot, lambda: scr.form is not None and scr.valid)
        await pilot.press("down")  # broken.toml: purifier.t_star = 3.0
        await until(pilot, lambda: scr.form.path.name == "broken.toml" and scr.errors)
        scr.form_widget().scroll_to_widget(scr.query_one("#f-purifier-t_star-row"), animate=False)
        await pilot.pause(0.2)
    assert snap_compare(app(), terminal_size=SIZE, run_before=before)


def test_snapshot_monitor_overlay(snap_compare):
    async def before(pilot):
        a = pilot.app
        a.post_message(WatchRun("20250102-093000-attack-tiny-b2b2b2"))  # as the runs screen's enter does
        a.post_message(WatchRun("20250101-120000-attack-tiny-a1a1a1"))
        await until(pilot, lambda: a.screen.__class__.__name__ == "MonitorScreen"
                    and a.screen.query_one("#plot-success").points == 20)
        a.clear_notifications()
        await pilot.pause(0.2)
    assert snap_compare(app(), terminal_size=SIZE, run_before=before)


def test_snapshot_runs_table(snap_compare):
    async def before(pilot):
        await pilot.press("f4")
        await until(pilot, lambda: pilot.app.screen.__class__.__name__ == "RunsScreen" and len(pilot.app.screen.rows) == 4)
    assert snap_compare(app(), terminal_size=SIZE, run_before=before)


def test_snapshot_compare(snap_compare):
    async def before(pilot):
        await pilot.press("f4")
        await until(pilot, lambda: pilot.app.screen.__class__.__name__ == "RunsScreen" and len(pilot.app.screen.rows) == 4)
        await pilot.press("space", "down", "down", "down", "space", "v")
        await until(pilot, lambda: pilot.app.screen.__class__.__name__ == "CompareScreen")
    assert snap_compare(app(), terminal_size=SIZE, run_before=before)


def test_snapshot_help_80x24(snap_compare):
    async def before(pilot):
        await until(pilot, lambda: pilot.app.screen.form is not None and pilot.app.screen.valid)
        await pilot.press("f1")
        await until(pilot, lambda: pilot.app.screen.__class__.__name__ == "HelpScreen")
    assert snap_compare(app(), terminal_size=(80, 24), run_before=before)


def test_snapshot_monitor_80x24(snap_compare):
    async def before(pilot):
        a = pilot.app
        a.post_message(WatchRun("20250101-120000-attack-tiny-a1a1a1"))
        await until(pilot, lambda: a.screen.__class__.__name__ == "MonitorScreen"
                    and a.screen.query_one("#plot-success").points == 10)
    assert snap_compare(app(), terminal_size=(80, 24), run_before=before)
