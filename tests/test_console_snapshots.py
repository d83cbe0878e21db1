"""Snapshot tests (pytest-textual-snapshot) of every console screen, at 80x24 and at 160x45, on
the fixed fake run store tests/data/console_runs (fixed timestamps, fake host, relative paths).
Update the baselines with ``pytest tests/test_console_snapshots.py --snapshot-update`` after an
intended UI change, and look at them (the SVGs open in a browser)."""
from __future__ import annotations

import pytest

from console.app import ConsoleApp
from console.messages import WatchRun, WatchSweep
from tests.helpers.console import A1, B2, F6, REPO, SWEEP, screen_is
from tests.helpers.console import until as wait_until

EXP = "tests/data/console_runs/experiments"
RUNS = "tests/data/console_runs/runs"
SIZES = pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the fixture paths are shown relative to the repository


async def until(pilot, cond):
    """Wait for ``cond()``, then let the screen settle: no toast, no blinking cursor (the picture
    would depend on timing)."""
    await wait_until(pilot, cond, poll=0.05)
    await pilot.pause(0.3)
    pilot.app.clear_notifications()
    from textual.widgets import Input
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause(0.1)


def shot(snap_compare, size, *steps) -> bool:
    """``snap_compare`` of the console on the fixture store after ``steps`` (each an async function
    of the pilot), run in order."""
    async def before(pilot):
        for step in steps:
            await step(pilot)
    return snap_compare(ConsoleApp(EXP, RUNS, cwd=REPO), terminal_size=size, run_before=before)


def press(*keys):
    async def step(pilot):
        await pilot.press(*keys)
    return step


def wait(cond, screen: str | None = None):
    """Until ``screen`` (a class name) is up and ``cond(the current screen)`` holds."""
    async def step(pilot):
        await until(pilot, lambda: (screen is None or screen_is(pilot.app, screen)) and cond(pilot.app.screen))
    return step


def up(screen: str):
    return wait(lambda scr: True, screen)


def post(message):
    async def step(pilot):
        pilot.app.post_message(message)
    return step


form_ready = wait(lambda scr: scr.form is not None and scr._checked, "ExperimentsScreen")
runs_table = (press("f4"), wait(lambda scr: len(scr.rows) == 7, "RunsScreen"))


def points(plot: str, n: int):
    return lambda scr: scr.query_one(plot).points == n


@SIZES
def test_snapshot_experiments_with_error(snap_compare, size):
    assert shot(snap_compare, size, form_ready,
                press("down"),  # broken.toml: purifier.t_star = 3.0
                wait(lambda scr: scr.form.path.name == "broken.toml" and scr._checked and scr.errors),
                press("f8"),  # to the field, its help beside (or below) the form
                wait(lambda scr: scr.focused_field == "purifier.t_star"))


@SIZES
def test_snapshot_save_as_dialog(snap_compare, size):
    assert shot(snap_compare, size, form_ready, press("ctrl+s"), up("SaveAsDialog"))


@SIZES
def test_snapshot_monitor_overlay(snap_compare, size):
    async def overlay_b2(pilot):
        pilot.app.screen.query_one("#run-list").select(B2)

    assert shot(snap_compare, size, post(WatchRun(A1)),  # as the runs screen's enter does
                wait(lambda scr: scr.current == A1, "MonitorScreen"), overlay_b2, wait(points("#plot-success", 20)))


@SIZES
def test_snapshot_monitor_finished_run(snap_compare, size):
    assert shot(snap_compare, size, post(WatchRun(A1)),
                wait(lambda scr: points("#plot-success", 10)(scr) and scr.query_one("#mon-results").content,
                     "MonitorScreen"))


@SIZES
def test_snapshot_runs_table(snap_compare, size):
    assert shot(snap_compare, size, *runs_table)


@SIZES
def test_snapshot_compare(snap_compare, size):
    async def compare_a1_f6(pilot):
        pilot.app.screen.selected.update({A1, F6})
        pilot.app.screen.action_compare()

    assert shot(snap_compare, size, *runs_table, compare_a1_f6, up("CompareScreen"))


@SIZES
def test_snapshot_config(snap_compare, size):
    async def cursor_to_f6(pilot):
        scr = pilot.app.screen
        scr.query_one("#runs-table").move_cursor(row=[r["id"] for r in scr.rows].index(F6))

    assert shot(snap_compare, size, *runs_table, cursor_to_f6, wait(lambda scr: scr._cursor_id() == F6),
                press("f"), up("ConfigScreen"))


@SIZES
def test_snapshot_sweep(snap_compare, size):
    assert shot(snap_compare, size, form_ready, post(WatchSweep(SWEEP)), wait(points("#sweep-plot", 4), "SweepScreen"))


@SIZES
def test_snapshot_help(snap_compare, size):
    assert shot(snap_compare, size, form_ready, press("f1"), up("HelpScreen"))
