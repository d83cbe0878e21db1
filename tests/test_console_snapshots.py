"""Snapshot tests (pytest-textual-snapshot) of every console screen, at 80x24 and at 160x45, on
the fixed fake run store tests/data/console_runs (fixed timestamps, fake host, relative paths).
Update the baselines with ``pytest tests/test_console_snapshots.py --snapshot-update`` after an
intended UI change, and look at them (the SVGs open in a browser)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from console.app import ConsoleApp
from console.messages import WatchRun, WatchSweep

REPO = Path(__file__).resolve().parents[1]
EXP = "tests/data/console_runs/experiments"
RUNS = "tests/data/console_runs/runs"
A1, B2, F6 = ("20250101-120000-attack-tiny-a1a1a1", "20250102-093000-attack-tiny-b2b2b2",
              "20250106-090000-attack-tiny-f6f6f6")
SWEEP = "sweep-20250107-100000-attack-tiny-7a7a7a"
SIZES = pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the fixture paths are shown relative to the repository


async def until(pilot, cond, timeout=30.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        await pilot.pause(0.05)
    await pilot.pause(0.3)
    pilot.app.clear_notifications()
    from textual.widgets import Input
    for field in pilot.app.screen.query(Input):  # a blinking cursor would make the picture depend on timing
        field.cursor_blink = False
    await pilot.pause(0.1)


def app() -> ConsoleApp:
    return ConsoleApp(EXP, RUNS, cwd=REPO)


def is_screen(pilot, name: str) -> bool:
    return pilot.app.screen.__class__.__name__ == name


async def form_ready(pilot):
    await until(pilot, lambda: is_screen(pilot, "ExperimentsScreen") and pilot.app.screen.form is not None
                and pilot.app.screen._checked)


async def runs_table(pilot):
    await pilot.press("f4")
    await until(pilot, lambda: is_screen(pilot, "RunsScreen") and len(pilot.app.screen.rows) == 7)


@SIZES
def test_snapshot_experiments_with_error(snap_compare, size):
    async def before(pilot):
        await form_ready(pilot)
        scr = pilot.app.screen
        await pilot.press("down")  # broken.toml: purifier.t_star = 3.0
        await until(pilot, lambda: scr.form.path.name == "broken.toml" and scr._checked and scr.errors)
        await pilot.press("f8")  # to the field, its help beside (or below) the form
        await until(pilot, lambda: scr.focused_field == "purifier.t_star")
    assert snap_compare(app(), terminal_size=size, run_before=before)


@SIZES
def test_snapshot_save_as_dialog(snap_compare, size):
    async def before(pilot):
        await form_ready(pilot)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: is_screen(pilot, "SaveAsDialog"))
    assert snap_compare(app(), terminal_size=size, run_before=before)


@SIZES
def test_snapshot_monitor_overlay(snap_compare, size):
    async def before(pilot):
        a = pilot.app
        a.post_message(WatchRun(A1))  # as the runs screen's enter does
        await until(pilot, lambda: is_screen(pilot, "MonitorScreen") and a.screen.current == A1)
        a.screen.query_one("#run-list").select(B2)
        await until(pilot, lambda: a.screen.query_one("#plot-success").points == 20)
    assert snap_compare(app(), terminal_size=size, run_before=before)


@SIZES
def test_snapshot_monitor_finished_run(snap_compare, size):
    async def before(pilot):
        a = pilot.app
        a.post_message(WatchRun(A1))
        await until(pilot, lambda: is_screen(pilot, "MonitorScreen") and a.screen.query_one("#plot-success").points == 10
                    and a.screen.query_one("#mon-results").content)
    assert snap_compare(app(), terminal_size=size, run_before=before)


@SIZES
def test_snapshot_runs_table(snap_compare, size):
    async def before(pilot):
        await runs_table(pilot)
    assert snap_compare(app(), terminal_size=size, run_before=before)


@SIZES
def test_snapshot_compare(snap_compare, size):
    async def before(pilot):
        await runs_table(pilot)
        scr = pilot.app.screen
        scr.selected.update({A1, F6})
        scr.action_compare()
        await until(pilot, lambda: is_screen(pilot, "CompareScreen"))
    assert snap_compare(app(), terminal_size=size, run_before=before)


@SIZES
def test_snapshot_config(snap_compare, size):
    async def before(pilot):
        await runs_table(pilot)
        scr = pilot.app.screen
        scr.query_one("#runs-table").move_cursor(row=[r["id"] for r in scr.rows].index(F6))
        await until(pilot, lambda: scr._cursor_id() == F6)
        await pilot.press("f")
        await until(pilot, lambda: is_screen(pilot, "ConfigScreen"))
    assert snap_compare(app(), terminal_size=size, run_before=before)


@SIZES
def test_snapshot_sweep(snap_compare, size):
    async def before(pilot):
        await form_ready(pilot)
        pilot.app.post_message(WatchSweep(SWEEP))
        await until(pilot, lambda: is_screen(pilot, "SweepScreen") and pilot.app.screen.query_one("#sweep-plot").points == 4)
    assert snap_compare(app(), terminal_size=size, run_before=before)


@SIZES
def test_snapshot_help(snap_compare, size):
    async def before(pilot):
        await form_ready(pilot)
        await pilot.press("f1")
        await until(pilot, lambda: is_screen(pilot, "HelpScreen"))
    assert snap_compare(app(), terminal_size=size, run_before=before)
