"""`dbp sweep` (one run per grid point, a group resumable point by point, the same seeds so the
points share their examples), what it, `dbp show SWEEP`, `dbp export SWEEP` and `dbp report
<sweep>` say of the swept attack, and what `dbp run` / `dbp show` print: the results table with
what each row measures, the source file."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import tomli_w

from dbp_core import cli
from dbp_core.results import SweepView, headline_text, read_run, read_sweep
from dbp_core.store import RunStore
from tests.conftest import console_toml


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    path = tmp_path / "sweep-me.toml"
    path.write_text(console_toml(n=8))
    return path


def test_sweep_runs_one_point_per_value_with_the_same_examples(tmp_path, experiment, capsys):
    runs = tmp_path / "runs"
    rc = cli.main(["--runs-dir", str(runs), "sweep", str(experiment), "--grid", "purifier.t_star=0.1,0.2",
                   "--grid", "attacks.0.eot=1,2", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr()
    sweep, = RunStore(runs).list_sweeps()
    assert sweep.id.startswith("sweep-") and sweep.id in out.err
    view = read_sweep(sweep.path)
    assert view.state == "done" and view.keys == ["purifier.t_star", "attacks.0.eot"]
    assert [p.point.values for p in view.points] == [
        {"purifier.t_star": 0.1, "attacks.0.eot": 1}, {"purifier.t_star": 0.1, "attacks.0.eot": 2},
        {"purifier.t_star": 0.2, "attacks.0.eot": 1}, {"purifier.t_star": 0.2, "attacks.0.eot": 2}]
    for p in view.points:
        config = p.view.config
        assert config["purifier"]["t_star"] == p.point.values["purifier.t_star"]
        assert config["attacks"][0]["eot"] == p.point.values["attacks.0.eot"]
        assert config["seed"] == 3 and p.view.group == sweep.id and p.view.source == str(experiment.resolve())
    # the same seeds: eot does not change the DW-box attack, so its outcomes repeat at equal t*
    per = [p.view.results["stages"]["attacks"]["per_example"]["dwbox-linf/0"] for p in view.points]
    assert per[0] == per[1] and per[2] == per[3]
    lines = view.curves("purifier.t_star")
    assert sorted(lines) == ["dwbox-linf (attacks.0.eot=1)", "dwbox-linf (attacks.0.eot=2)",
                             "pgd-eot-linf (attacks.0.eot=1)", "pgd-eot-linf (attacks.0.eot=2)"]
    assert [pt["x"] for pt in lines["pgd-eot-linf (attacks.0.eot=2)"]] == [0.1, 0.2]
    assert out.out.strip().splitlines()[-1] == str(sweep.path)
    # t* is seen by every attack: the summary gives every attack's robust accuracy per point
    assert "of every attack, per point:" in out.out
    for p in view.points:
        line = point_line(out.out, p.point.label)
        assert " done " in line and f" {p.point.run} " in line
        for row in p.view.rows:
            assert headline_text(row) in line
    # a sweep that is done resumes to nothing new
    finished = [p.view.results["finished"] for p in view.points]
    assert cli.main(["--runs-dir", str(runs), "resume", sweep.id[:20]]) == 0
    assert [p.view.results["finished"] for p in read_sweep(sweep.path).points] == finished
    # dbp report <sweep>: the accuracy-vs-value curve as a PNG and a table per point
    assert cli.main(["--runs-dir", str(runs), "report", sweep.id]) == 0
    png = sweep.path / "report" / "sweep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (sweep.path / "report" / "report.md").read_text()
    assert md.count("| purifier.t_star=") == 4 and "![sweep](sweep.png)" in md
    assert "per point: every attack" in md and "swept attack" not in md
    capsys.readouterr()
    assert cli.main(["--runs-dir", str(runs), "runs"]) == 0  # the sweep is listed under the runs
    listed = capsys.readouterr().out
    assert sweep.id in listed and "4/4 points" in listed


def point_line(text: str, label: str) -> str:
    """The line of a point in a sweep's table (``dbp sweep``'s summary, ``dbp show SWEEP``)."""
    return next(line for line in text.splitlines() if line.startswith(f"  {label}  "))


def test_a_sweep_of_one_attack_reports_that_attack_everywhere(tmp_path, experiment, capsys):
    """Attack 0 is swept and attack 1 is the strongest (the runs' headline): the summary, `dbp
    show SWEEP`, `dbp export SWEEP` and the report give attack 0's robust accuracy per point."""
    data = tomllib.loads(console_toml(n=8))
    data["attacks"][0].update(eps=0.01, iterations=1)  # weak: it never is the headline
    data["attacks"][1].update(eps=0.3)
    experiment.write_text(tomli_w.dumps(data))
    runs = tmp_path / "runs"
    base = ["--runs-dir", str(runs)]
    assert cli.main(base + ["sweep", str(experiment), "--grid", "attacks.0.eps=0.01,0.02", "--no-progress"]) == 0
    out = capsys.readouterr()
    sweep, = RunStore(runs).list_sweeps()
    view = read_sweep(sweep.path)
    assert re.search(r"^attacks: 16/16 \(100%, [0-9.e+]+/s\)$", out.err, re.M)  # the plain progress line's rate
    swept = {}
    for p in view.points:
        assert p.view.headline["attack"] == "dwbox-linf"  # the strongest is not the swept attack
        row, = [r for r in p.view.rows if r["attack"] == "pgd-eot-linf" and r["protocol"] == "single"]
        assert row["eps"] == p.point.values["attacks.0.eps"]
        swept[p.point.label] = (p.point.run, row)
    assert "of the swept attack (attacks.0), per point:" in out.out
    for label, (run_id, row) in swept.items():
        line = point_line(out.out, label)  # '... single/pgd-eot-linf 37.5% [13.7%, 69.4%]'
        assert f" {run_id} " in line and headline_text(row) in line and "dwbox" not in line

    # dbp show of the id that dbp sweep printed, and of a unique prefix
    for ref in (sweep.id, sweep.id[:len("sweep-") + 8]):
        assert cli.main(base + ["show", ref]) == 0
        shown = capsys.readouterr().out
        assert f"sweep:      {sweep.id}" in shown and f"source:     {experiment.resolve()}" in shown
        assert "grid:       attacks.0.eps = 0.01, 0.02" in shown
        for label, (run_id, row) in swept.items():
            line = point_line(shown, label)
            assert " done " in line and f" {run_id} " in line and headline_text(row) in line
            assert "dwbox" not in line
        assert shown.index("per point:") < shown.index("progress:   2/2 points")

    # dbp export --csv: every point's rows, led by the point and its swept value
    for ref, target in ((sweep.id, tmp_path / "sweep.csv"), (sweep.id[:len("sweep-") + 8], None)):
        assert cli.main(base + ["export", ref, "--csv"] + ([str(target)] if target else [])) == 0
        text = target.read_text() if target else capsys.readouterr().out
        rows = list(csv.DictReader(io.StringIO(text)))
        assert list(rows[0])[:3] == ["point", "attacks.0.eps", "swept_attack"]
        assert {(r["point"], r["attacks.0.eps"], r["run_id"]) for r in rows} == {
            (str(p.point.index + 1), str(p.point.values["attacks.0.eps"]), p.point.run) for p in view.points}
        for r in rows:
            assert (r["swept_attack"] == "True") == (r["attack"] == "pgd-eot-linf")
            if r["swept_attack"] == "True":
                assert float(r["attack.eps"]) == float(r["attacks.0.eps"])

    # dbp report SWEEP agrees: the swept attack's column, then the other attack's
    assert cli.main(base + ["report", sweep.id]) == 0
    md = (sweep.path / "report" / "report.md").read_text()
    assert "| swept attack (attacks.0) | dwbox-linf |" in md
    for run_id, row in swept.values():
        line = next(x for x in md.splitlines() if run_id in x)
        assert f"pgd-eot-linf: {100 * row['accuracy']:.1f}% [{100 * row['ci_low']:.1f}%, " in line

    # a point not started yet is skipped by export, with a note; a sweep with none exits 2
    grid = [("attacks.0.eps", [0.01, 0.02, 0.03])]
    later = RunStore(runs).create_sweep("console-tiny", (sweep.path / "config.toml").read_text(), grid)
    for p in view.points:
        later.set_run(p.point.index, p.point.run)
    capsys.readouterr()
    assert cli.main(base + ["export", later.id, "--csv"]) == 0
    captured = capsys.readouterr()
    assert {r["point"] for r in csv.DictReader(io.StringIO(captured.out))} == {"1", "2"}
    assert "point 3/3 (attacks.0.eps=0.03): no results yet (state: pending); skipped" in captured.err
    assert cli.main(base + ["show", later.id]) == 0
    assert point_line(capsys.readouterr().out, "attacks.0.eps=0.03").split()[1:] == ["pending", "-", "-"]
    empty = RunStore(runs).create_sweep("console-tiny", (sweep.path / "config.toml").read_text(), grid)
    assert cli.main(base + ["export", empty.id, "--csv", str(tmp_path / "none.csv")]) == 2
    assert f"sweep {empty.id} has no point with results" in capsys.readouterr().err
    assert not (tmp_path / "none.csv").exists()
    # an id that names neither a run nor a sweep
    for command in (["show", "sweep-nope"], ["export", "sweep-nope", "--csv"]):
        assert cli.main(base + command) == 2
        err = capsys.readouterr().err
        assert "no run 'sweep-nope'" in err and "no sweep" in err and "Traceback" not in err


@pytest.mark.parametrize("keys,slots,measured", [
    (["attacks.1.eps"], [1], "the swept attack (attacks.1)"),
    (["attacks[1].eps", "attacks.1.eot"], [1], "the swept attack (attacks.1)"),   # either spelling, one attack
    (["attacks.0.eps", "attacks.2.eot"], [0, 2], "the swept attacks (attacks.0, attacks.2)"),
    (["purifier.t_star"], None, "every attack"),
    (["purifier.t_star", "attacks.0.eot"], None, "every attack"),  # t* changes what every attack sees
    (["attacks_x.0.eps"], None, "every attack"),
])
def test_whose_accuracy_a_sweep_reports_follows_its_grid_keys(keys, slots, measured):
    view = SweepView(Path("sweep-x"), {"grid": [{"key": k, "values": [1, 2]} for k in keys]}, [])
    assert view.swept_attacks == slots and view.measured_text == measured


def test_show_and_export_of_a_damaged_sweep_name_its_manifest(tmp_path, capsys):
    sweep = RunStore(tmp_path).create_sweep("e", 'name = "e"\n', [("purifier.t_star", [0.1, 0.2])])
    sweep.manifest_path.write_text("{")
    assert cli.main(["--runs-dir", str(tmp_path), "show", sweep.id]) == 2
    assert f"dbp: error: {sweep.manifest_path}" in capsys.readouterr().err
    assert cli.main(["--runs-dir", str(tmp_path), "export", sweep.id, "--csv"]) == 2
    err = capsys.readouterr().err
    assert f"sweep {sweep.id} cannot be exported" in err and str(sweep.manifest_path) in err


def test_sweep_errors_name_the_grid_value_and_create_nothing(tmp_path, experiment, capsys):
    runs = tmp_path / "runs"
    base = ["--runs-dir", str(runs), "sweep", str(experiment)]
    assert cli.main(base + ["--grid", "purifier.t_star=0.1,3.0"]) == 2
    assert "(from --grid purifier.t_star=3.0)" in capsys.readouterr().err
    assert cli.main(base + ["--grid", "purifier.t_star"]) == 2
    assert "expected key=value1,value2" in capsys.readouterr().err
    assert cli.main(base + ["--grid", "purifier.t_stra=0.1"]) == 2
    assert "did you mean 't_star'" in capsys.readouterr().err
    assert cli.main(base) == 2
    assert not runs.exists() or not list(runs.iterdir())


def test_interrupted_sweep_resumes_point_by_point(tmp_path, experiment):
    """SIGINT during the second point: the first point stays done (not run again), the second is
    interrupted; `dbp resume <sweep>` finishes it, to the numbers of an uninterrupted point."""
    runs = tmp_path / "runs"
    experiment.write_text(console_toml(n=16, classifier="slow_classifier"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), DBP_TEST_DELAY="0.05")
    proc = subprocess.Popen([sys.executable, "-m", "dbp_core", "--runs-dir", str(runs), "sweep", str(experiment),
                             "--grid", "purifier.t_star=0.1,0.2", "--no-progress"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while True:  # wait until the second point has written attack points
        sweeps = RunStore(runs).list_sweeps() if runs.exists() else []
        points = sweeps[0].points() if sweeps else []
        if len(points) == 2 and points[1].run and (runs / points[1].run / "metrics.jsonl").exists() and \
                '"attack_iter"' in (runs / points[1].run / "metrics.jsonl").read_text():
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < 120, "the second point never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and f"dbp resume {sweeps[0].id}" in err
    view = read_sweep(sweeps[0].path)
    assert [p.state for p in view.points] == ["done", "interrupted"] and view.state == "interrupted"
    first_finished = view.points[0].view.results["finished"]
    os.environ["DBP_TEST_DELAY"] = "0"
    try:
        assert cli.main(["--runs-dir", str(runs), "resume", sweeps[0].id]) == 0
        resumed = read_sweep(sweeps[0].path)
        assert [p.state for p in resumed.points] == ["done", "done"]
        assert resumed.points[0].view.results["finished"] == first_finished  # not run again
        # the interrupted point's numbers are those of the same point run in one go
        assert cli.main(["--runs-dir", str(tmp_path / "ref"), "run", str(experiment), "--set",
                         "purifier.t_star=0.2", "--no-progress"]) == 0
    finally:
        del os.environ["DBP_TEST_DELAY"]
    ref = read_run(next((tmp_path / "ref").iterdir()))
    assert resumed.points[1].view.rows == ref.rows


def test_run_ends_with_the_table_of_show_whose_rows_say_what_they_measure(tmp_path, experiment, capsys):
    data = tomllib.loads(console_toml(n=8))
    data["evaluation"]["protocols"] = ["purified", "single"]
    experiment.write_text(tomli_w.dumps(data))
    runs = tmp_path / "runs"
    assert cli.main(["--runs-dir", str(runs), "run", str(experiment), "--no-progress"]) == 0
    ran = capsys.readouterr().out
    run, = RunStore(runs).list()
    assert cli.main(["--runs-dir", str(runs), "show", run.id]) == 0
    shown = capsys.readouterr().out
    table = shown[shown.index("\naccuracies:"):shown.index("\nlog:")]
    assert table.strip() and table.strip() in ran  # dbp run ends with dbp show's table
    assert "purified, no attack (paired baseline of pgd-eot-linf)" in table
    assert "purified, no attack (paired baseline of dwbox-linf)" in table
    assert table.count("attacked, one purification") == 2
    assert "(robust accuracy under the strongest attack)" in table
    assert f"source:     {experiment.resolve()}" in shown
    assert json.loads(run.status_path.read_text())["source"] == str(experiment.resolve())
