"""Console: its Textual-free state (console.state: aggregation, tolerant readers, form validation)
and pilot tests of the Textual app, including a real `dbp run` launched from the UI, watched live,
cancelled and resumed."""
from __future__ import annotations

import asyncio
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from console.app import ConsoleApp
from console.launcher import run_command
from console.messages import ChangeParallel
from console.state.experiments import ConfigForm, list_experiments, parse_value, toml_literal
from console.state.format import fmt_eta, fmt_pct, fmt_time
from console.state.monitor import RunMonitor
from console.state.runs import compare_results, export_csv, run_rows, sort_rows
from dbp_core.results import EXPORT_COLUMNS
from dbp_core.runs import RunStatus, read_metrics
from tests.conftest import console_toml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "console_runs"
SIZE = (100, 30)

async def until(pilot, cond, timeout=30.0, what="condition"):
    """Let the app run until ``cond()`` is true."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.1)


def copy_runs(tmp_path) -> Path:
    dst = tmp_path / "runs"
    shutil.copytree(DATA / "runs", dst)
    return dst


# =========================================================================== console.state

def test_monitor_aggregates_n_weighted_curves_per_attack():
    mon = RunMonitor(DATA / "runs" / "20250101-120000-attack-tiny-a1a1a1")
    snap = mon.poll()
    assert snap.state == "done" and snap.bad_lines == 0
    xs, ys, lx, ly = snap.curves["pgd-eot-linf"]
    assert xs == [0, 1, 2, 3, 4]
    # batches 0..2 add 0, .02, .04 to the success: the mean over batches adds .02
    assert ys[0] == pytest.approx(0.22) and ys[4] == pytest.approx(0.42)
    assert snap.curves["dwbox-linf"][1][1] == pytest.approx(0.41)
    assert snap.points == 10 and snap.fraction == 1.0
    assert mon.poll().points == 10  # nothing new: nothing counted twice


def test_monitor_reads_incrementally_and_waits_for_a_partial_line(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    mon = RunMonitor(run)
    snap = mon.poll()  # no status.json, no metrics file, no log
    assert snap.state == "unknown" and snap.points == 0 and snap.log_tail == []
    metrics = run / "metrics.jsonl"
    metrics.write_text("")  # empty file
    assert mon.poll().points == 0
    ev = {"kind": "attack_iter", "step": 0, "attack": "a", "n": 4, "loss": 1.0, "success": 0.5}
    with open(metrics, "a") as fh:
        fh.write(json.dumps(ev) + "\n" + json.dumps({**ev, "step": 1})[:20])  # second line half-written
    snap = mon.poll()
    assert snap.curves["a"][0] == [0]
    with open(metrics, "a") as fh:
        fh.write(json.dumps({**ev, "step": 1})[20:] + "\n" + "{not json\n")
    snap = mon.poll()
    assert snap.curves["a"][0] == [0, 1] and snap.bad_lines == 1
    (run / "status.json").write_text("{corrupt")  # not written by the run store: still no crash
    snap = mon.poll()
    assert snap.state == "damaged" and snap.status is None and "status.json" in snap.message


def test_monitor_survives_the_fixture_edge_cases():
    trunc = RunMonitor(DATA / "runs" / "20250102-093000-attack-tiny-b2b2b2").poll()
    assert trunc.state == "interrupted" and trunc.points == 10 and trunc.bad_lines == 0  # partial line left unread
    empty = RunMonitor(DATA / "runs" / "20250103-080000-attack-tiny-c3c3c3").poll()
    assert empty.state == "interrupted" and empty.points == 0  # 'running' on a silent remote host
    missing = RunMonitor(DATA / "runs" / "20250105-000000-attack-tiny-e5e5e5").poll()
    assert missing.state == "unknown" and missing.points == 6 and missing.experiment == "attack-tiny"


def test_monitor_counts_a_batch_rerun_after_a_resume_once(tmp_path):
    """A run killed in the middle of a batch runs that batch again when resumed, so its
    attack_iter events are in metrics.jsonl twice; the console draws the same curve as from the
    file without the repeat (read in one go, or live: the part before the kill, then the rest)."""
    lines = (DATA / "runs" / "20250101-120000-attack-tiny-a1a1a1" / "metrics.jsonl").read_text().splitlines(True)
    events = [json.loads(line) for line in lines]
    is_b2 = [e["kind"] == "attack_iter" and e["attack"] == "pgd-eot-linf" and e["batch"] == 2 for e in events]
    first = is_b2.index(True)
    killed = lines[:first + 4]  # batch 2's iterations 0..3 were written, then the process was killed
    resumed = [json.dumps({"time": 1735733000.0, "kind": "start", "step": None}) + "\n"] + lines[first:]
    assert sum(is_b2) == 5 and len(killed + resumed) == len(lines) + 5

    def curves_of(name: str, *parts: list[str]) -> dict:
        run = tmp_path / name
        run.mkdir()
        mon = RunMonitor(run)
        for part in parts:
            with open(run / "metrics.jsonl", "a") as fh:
                fh.writelines(part)
            snap = mon.poll()
        return snap.curves

    plain = curves_of("plain", lines)
    assert curves_of("repeated", killed + resumed) == plain
    assert curves_of("live", killed, resumed) == plain
    # the repeat matters: counted twice, batch 2 (the most successful) would pull iteration 0 up
    twice = [e for e in map(json.loads, killed + resumed) if e["kind"] == "attack_iter"
             and e["attack"] == "pgd-eot-linf" and e["step"] == 0]
    assert len(twice) == 4 and sum(e["success"] for e in twice) / 4 != pytest.approx(plain["pgd-eot-linf"][1][0])
    assert plain["pgd-eot-linf"][1][0] == pytest.approx(0.22)


def test_monitor_draws_the_addt_training_loss_per_variant(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    with open(run / "metrics.jsonl", "w") as fh:
        for variant in ("mult1", "mult2"):
            for step in (1, 2, 2):  # step 2 again: re-run after a resume, counted once
                fh.write(json.dumps({"kind": "addt_step", "step": step, "variant": variant,
                                     "loss": step / 10, "lambda_mean": 0.5}) + "\n")
    snap = RunMonitor(run).poll()
    assert snap.train_loss == {"mult1": ([1, 2], [0.1, 0.2]), "mult2": ([1, 2], [0.1, 0.2])}
    assert snap.points == 4 and snap.curves == {}


def test_run_rows_sort_compare_and_export(tmp_path):
    rows = run_rows(DATA / "runs")
    assert [r["state"] for r in rows] == ["done", "interrupted", "interrupted", "failed"]  # no-status dir skipped
    assert rows[0]["headline"] == "single/dwbox-linf 20.8%" and rows[0]["progress"] == "attacks 48/48"
    assert isinstance(rows[0]["view"].status, RunStatus)
    by_acc = sort_rows(rows, "accuracy", reverse=True)
    assert by_acc[0]["id"].endswith("a1a1a1")  # only run with results first; missing values last
    assert [r["experiment"] for r in sort_rows(rows, "experiment")][-1] == "quickstart"
    header, table = compare_results(rows[:2])
    assert header[3:] == [rows[0]["id"], rows[1]["id"]]
    single_dw = next(t for t in table if t[1] == "single" and t[2] == "dwbox-linf")
    assert single_dw[3].startswith("20.8%") and single_dw[4] == "-"
    out = export_csv(rows, tmp_path / "x.csv")
    with open(out, newline="") as fh:
        reader = csv.DictReader(fh)
        got = list(reader)
    assert tuple(reader.fieldnames) == EXPORT_COLUMNS
    assert len(got) == 4 + 3 and {g["state"] for g in got} == {"done", "interrupted", "failed"}
    # the same lines as `dbp export` of that run
    from dbp_core import cli
    assert cli.main(["--runs-dir", str(DATA / "runs"), "export", rows[0]["id"], "--csv", str(tmp_path / "cli.csv")]) == 0
    with open(tmp_path / "cli.csv", newline="") as fh:
        assert list(csv.DictReader(fh)) == [g for g in got if g["run_id"] == rows[0]["id"]]


def test_run_rows_name_a_damaged_status(tmp_path):
    runs = copy_runs(tmp_path)
    (runs / "20250103-080000-attack-tiny-c3c3c3" / "status.json").write_text("[1, 2]")
    row = next(r for r in run_rows(runs) if r["id"].endswith("c3c3c3"))
    assert row["state"] == "damaged" and row["experiment"] == "attack-tiny" and row["created"] is None
    assert any("status.json" in p for p in row["problems"])


def test_formats():
    assert fmt_pct(0.2083) == "20.8%" and fmt_pct(float("nan")) == "-" and fmt_pct(None) == "-"
    assert fmt_eta(3725) == "1h02m" and fmt_eta(187) == "3m07s" and fmt_eta(42) == "42s"
    assert fmt_eta(None) == fmt_eta(-1) == fmt_eta(float("inf")) == "-"
    assert fmt_time(1735732800.0) == "2025-01-01 12:00" and fmt_time(None) == "-"


def test_console_state_imports_neither_textual_nor_torch():
    code = ("import sys; import console.state.experiments, console.state.monitor, console.state.runs, "
            "console.state.format; print(sorted(m for m in ('textual', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_form_values_roundtrip_and_validation(tmp_path):
    assert parse_value("pgd", "str") == "pgd" and parse_value('"x"', "str") == "x"
    assert parse_value("0.5", "float") == 0.5 and parse_value("[1, 2]", "list") == [1, 2]
    assert parse_value("", "int") is None and parse_value("abc", "int") == "abc"
    for v in ("a\"b", 3, 0.25, True, ["x", 1], {"k": 1}):
        assert parse_value(toml_literal(v), "any") == v
    exps = list_experiments(DATA / "experiments")
    assert [e.name for e in exps] == ["attack-tiny", "broken"]
    form = ConfigForm(DATA / "experiments" / "attack-tiny.toml")
    assert form.validate(), form.general_errors
    fields = {f.path: f for _, fs in form.sections() for f in fs}
    assert "attacks[1].eot" in fields and "addt.lambda_clamp" in fields  # every field of every section
    form.set_text(fields["attacks[1].eot"], "4")
    assert not form.validate() and "EOT must be 1" in form.errors["attacks[1].eot"]
    form.set_text(fields["attacks[1].eot"], "")  # back to the default
    assert form.validate()
    with pytest.raises(FileExistsError):
        form.save_as(DATA / "experiments" / "broken.toml")
    saved = form.save_as(tmp_path / "copy")
    assert saved.name == "copy.toml" and ConfigForm(saved).validate()
    # a numeric choice is typed as a number (the strict config rejects the string "2")
    form.set_text(fields["analysis.landscape_dims"], "2")
    assert form.validate(), form.errors
    form.set_text(fields["analysis.landscape_dims"], "3")
    assert not form.validate() and "analysis.landscape_dims" in form.errors


def test_experiment_name_from_run_ids_of_any_token_length(tmp_path):
    """A run without a status names its experiment after its id (dbp_core.runs.parse_run_id)."""
    for run_id, experiment in (("20250101-120000-attack-tiny-a1a1a1", "attack-tiny"),
                               ("20261126-123139-dwbox_digits-1c83091f2e", "dwbox_digits"),
                               ("not-a-run-id", "?")):
        (tmp_path / run_id).mkdir()
        assert RunMonitor(tmp_path / run_id).poll().experiment == experiment


def test_launch_command_is_an_argument_list_without_shell():
    cmd = run_command(Path("/r"), Path("/e/x; rm -rf ~.toml"), ["name=$(reboot)"])
    assert cmd[1:4] == ["-m", "dbp_core", "--runs-dir"] and "/e/x; rm -rf ~.toml" in cmd
    assert cmd[-2:] == ["--set", "name=$(reboot)"]


def test_console_help_from_python_m_and_dbp():
    out = subprocess.run([sys.executable, "-m", "console", "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "--runs-dir" in out.stdout and "--max-parallel" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "dbp_core", "console", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--experiments" in out.stdout and "--max-parallel" in out.stdout, out.stderr


# =========================================================================== pilot

def make_app(tmp_path, runs_dir, exp_dir=None, **kw):
    return ConsoleApp(exp_dir or DATA / "experiments", runs_dir, cwd=REPO, poll_interval=0.3, **kw)


def test_navigate_screens_help_and_palette(tmp_path):
    async def go():
        app = make_app(tmp_path, copy_runs(tmp_path))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.screen.__class__.__name__ == "ExperimentsScreen", what="experiments")
            await pilot.press("f4")
            await until(pilot, lambda: app.screen.__class__.__name__ == "RunsScreen" and len(app.screen.rows) == 4,
                        what="runs table")
            runs = app.screen
            await pilot.press("s")  # next sort key
            assert runs.sort_key == "state"
            await pilot.press("space", "down", "space", "v")
            await until(pilot, lambda: app.screen.__class__.__name__ == "CompareScreen", what="compare")
            assert len(app.screen.rows) == 2
            await pilot.press("escape")
            await pilot.press("x")
            await until(pilot, lambda: hasattr(runs, "last_export"), what="export")
            assert len(list(csv.DictReader(open(runs.last_export)))) >= 2
            await pilot.press("f3")
            await until(pilot, lambda: app.screen.__class__.__name__ == "MonitorScreen" and app.screen.polls > 0,
                        what="monitor")
            await pilot.press("plus")  # the screen asks, the app changes its launcher
            await until(pilot, lambda: app.launcher.max_parallel == 2, what="+parallel")
            await until(pilot, lambda: "parallel ≤ 2" in str(app.screen.query_one("#queue").render()), what="queue")
            app.post_message(ChangeParallel(-5))
            await until(pilot, lambda: app.launcher.max_parallel == 1, what="never below 1")
            await pilot.press("f1")
            await until(pilot, lambda: app.screen.__class__.__name__ == "HelpScreen", what="help")
            await pilot.press("escape")
            await pilot.press("ctrl+p")
            await until(pilot, lambda: app.screen.__class__.__name__ == "CommandPalette", what="palette")
            await pilot.press(*"Runs", "enter")
            await until(pilot, lambda: app.screen.__class__.__name__ == "RunsScreen", what="palette → runs")
    asyncio.run(go())


def test_edit_field_to_invalid_value_shows_error_at_the_field(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copy(DATA / "experiments" / "attack-tiny.toml", exp)

    async def go():
        app = make_app(tmp_path, tmp_path / "runs", exp)
        async with app.run_test(size=SIZE) as pilot:
            scr = app.screen
            await until(pilot, lambda: scr.form is not None and scr.valid, what="valid form")
            inp = scr.query_one("#f-purifier-t_star")
            inp.focus()
            inp.value = ""
            await pilot.press(*"5")
            row = scr.query_one("#f-purifier-t_star-row")
            await until(pilot, lambda: "invalid" in row.classes, what="error shown")
            assert "less than or equal to 1" in str(scr.query_one("#f-purifier-t_star-error").render())
            assert not scr.valid
            await pilot.press("ctrl+l")  # launching an invalid experiment is refused
            await pilot.pause(0.2)
            assert app.launcher.jobs == []
            await pilot.press("backspace", *"0.3")
            await until(pilot, lambda: scr.valid and "invalid" not in row.classes, what="error cleared")
            scr.query_one("#save-name").value = "edited"
            await pilot.press("ctrl+s")
            await until(pilot, lambda: (exp / "edited.toml").exists(), what="saved")
            assert "t_star = 0.3" in (exp / "edited.toml").read_text()
            await until(pilot, lambda: [f.path.name for f in scr.files] == ["attack-tiny.toml", "edited.toml"],
                        what="list refreshed")
    asyncio.run(go())


def _tiny_exp(tmp_path, n=16, classifier="tiny_classifier") -> Path:
    exp = tmp_path / "exp"
    exp.mkdir(exist_ok=True)
    (exp / "console-tiny.toml").write_text(console_toml(n=n, classifier=classifier))
    return exp


def test_launch_real_run_and_watch_plot_grow(tmp_path):
    exp = _tiny_exp(tmp_path, n=16, classifier="slow_classifier")
    runs = tmp_path / "runs"
    import os
    env = {**os.environ, "DBP_TEST_DELAY": "0.01"}

    async def go():
        app = ConsoleApp(exp, runs, cwd=REPO, poll_interval=0.2, env=env)
        async with app.run_test(size=SIZE) as pilot:
            scr = app.screen
            await until(pilot, lambda: scr.valid, what="valid form")
            await pilot.press("ctrl+l")
            await until(pilot, lambda: app.screen.__class__.__name__ == "MonitorScreen", what="monitor")
            mon = app.screen
            plot = mon.query_one("#plot-success")
            seen = []
            def watch():
                if plot.points and (not seen or seen[-1] != plot.points):
                    seen.append(plot.points)
                snap = mon.snapshots.get(mon.current) if mon.current else None
                return snap is not None and snap.state == "done" and plot.points == 6
            await until(pilot, watch, timeout=45, what="run done with 6 points")
            assert len(seen) >= 2 and seen == sorted(seen), seen  # points arrived while the run went on
            assert len(mon.query_one("#plot-loss").series) == 2  # one line per attack
            job = app.launcher.jobs[0]
            assert job.run_id == mon.current and job.cmd[:3] == [job.cmd[0], "-m", "dbp_core"]
            events = read_metrics(runs / job.run_id / "metrics.jsonl")[0]
            assert sum(e["kind"] == "attack_iter" for e in events) == 2 * 2 * 3
            await until(pilot, lambda: job.state == "exited", what="process exit")
            assert job.returncode == 0
    asyncio.run(go())


def test_launch_pressed_before_validation_finishes_waits_for_it(tmp_path):
    """Ctrl+L right after the app opens (validation still running in its worker) launches once
    the check has passed; the same on an invalid experiment launches nothing."""
    good = _tiny_exp(tmp_path, n=8)
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(DATA / "experiments" / "broken.toml", bad)

    async def go(exp, expect_jobs):
        app = make_app(tmp_path, tmp_path / "runs", exp)
        async with app.run_test(size=SIZE) as pilot:
            scr = app.screen
            await until(pilot, lambda: scr.form is not None, what="form")
            await pilot.press("ctrl+l")
            await until(pilot, lambda: scr._checked, what="validation")
            await pilot.pause(0.5)
            assert len(app.launcher.jobs) == expect_jobs
            for job in app.launcher.jobs:
                app.launcher.cancel_job(job)
    asyncio.run(go(good, 1))
    asyncio.run(go(bad, 0))


def test_cancel_marks_interrupted_then_resume(tmp_path):
    exp = _tiny_exp(tmp_path, n=32, classifier="slow_classifier")
    runs = tmp_path / "runs"
    import os
    env = {**os.environ, "DBP_TEST_DELAY": "0.15"}

    async def go():
        app = ConsoleApp(exp, runs, cwd=REPO, poll_interval=0.2, env=env)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.screen.valid, what="valid form")
            await pilot.press("ctrl+l")
            await until(pilot, lambda: app.screen.__class__.__name__ == "MonitorScreen", what="monitor")
            mon = app.screen
            snap = lambda: mon.snapshots.get(mon.current) if mon.current else None  # noqa: E731
            await until(pilot, lambda: snap() is not None and snap().state == "running" and snap().points > 0,
                        timeout=30, what="running with points")
            job = app.launcher.jobs[0]
            await pilot.press("c")
            await until(pilot, lambda: snap().state == "interrupted", timeout=30, what="interrupted")
            status = json.loads((runs / job.run_id / "status.json").read_text())
            assert status["state"] == "interrupted"  # written by the run itself on SIGINT
            await until(pilot, lambda: job.state == "exited", what="exit")
            assert job.returncode == 130
            assert "resume" in str(mon.query_one("#mon-status").render())
            app.launcher.env = {**os.environ, "DBP_TEST_DELAY": "0"}
            await pilot.press("r")
            await until(pilot, lambda: snap().state == "done", timeout=40, what="resumed run done")
            assert app.launcher.jobs[-1].cmd[-3:-1] == ["resume", job.run_id]
    asyncio.run(go())


def test_monitor_app_survives_broken_run_dirs(tmp_path):
    runs = copy_runs(tmp_path)
    (runs / "20250103-080000-attack-tiny-c3c3c3" / "status.json").write_text("")  # empty status too

    async def go():
        app = make_app(tmp_path, runs)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f3")
            mon = app.screen
            await until(pilot, lambda: mon.__class__.__name__ == "MonitorScreen" and mon.polls > 0, what="monitor")
            sl = mon.query_one("#run-list")
            for run_id in list(mon.known):
                sl.select(run_id)
            await until(pilot, lambda: len(mon.snapshots) >= 3, what="all runs polled")
            await pilot.pause(0.5)
            assert mon.query_one("#plot-success").points == 20  # a1 and b2, five iterations, two attacks each
            await pilot.press("f4")  # the runs table names the damaged file
            runs_screen = app.screen
            await until(pilot, lambda: runs_screen.__class__.__name__ == "RunsScreen" and len(runs_screen.rows) == 4,
                        what="runs table")
            assert runs_screen.rows[-1]["state"] == "damaged"  # no creation time: last
            await pilot.press("down", "down", "down")
            await until(pilot, lambda: "is empty" in str(runs_screen.query_one("#run-detail").render()),
                        what="problem shown")
    asyncio.run(go())


def test_screenshot_lands_in_the_run_store(tmp_path):
    """The palette's Screenshot saves an SVG under <runs>/screenshots/ (a headless server has no
    Downloads folder, Textual's default)."""
    async def go():
        app = make_app(tmp_path, tmp_path / "runs")
        async with app.run_test(size=SIZE) as pilot:
            app.deliver_screenshot()
            await until(pilot, lambda: list((tmp_path / "runs" / "screenshots").glob("*.svg")), what="screenshot")
    asyncio.run(go())
    svg = next((tmp_path / "runs" / "screenshots").glob("*.svg")).read_text()
    assert svg.startswith("<svg") and "dbp console" in svg.replace("&#160;", " ")
