"""`dbp sweep` (one run per grid point, a group resumable point by point, the same seeds so the
points share their examples), `dbp report <sweep>`, and what `dbp run` / `dbp show` print: the
results table with what each row measures, the source file."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbp_core import cli
from dbp_core.results import read_run, read_sweep
from dbp_core.runs import RunStore
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
    capsys.readouterr()
    assert cli.main(["--runs-dir", str(runs), "runs"]) == 0  # the sweep is listed under the runs
    listed = capsys.readouterr().out
    assert sweep.id in listed and "4/4 points" in listed


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
    import tomli_w
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
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
