"""The dbp CLI end to end: run / resume / runs / show / export, crash safety, exit codes.

Models and data come from tests/plugins.py through import paths, so these tests need no
trained weights; the purifier is the real one (dbp_core.purifier) on a tiny eps model."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbp_core import cli
from dbp_core.store import Run, RunStore, read_metrics
from tests.conftest import attack_study_toml, run_toml

ROOT = Path(__file__).resolve().parents[1]

def write_config(tmp_path: Path, name="tiny", n=48, batch=4, classifier="tiny_classifier",
                 diffusion="tiny_eps", **sections) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(run_toml(name=name, n=n, batch=batch, classifier=classifier, diffusion=diffusion, **sections))
    return path


def env(**extra) -> dict:
    e = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    e.pop("DBP_RUNS_DIR", None)
    return e


def dbp(*args, runs: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dbp_core", "--runs-dir", str(runs), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(**kw))


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout=60.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and path.read_text().count('"kind": "eval"') >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {n} eval lines")


def only_run(runs: Path) -> Run:
    [run] = RunStore(runs).list()
    return run


def comparable(results: dict) -> dict:
    return {"accuracies": results["accuracies"], "stages": results["stages"], "headline": results["headline"]}


@pytest.fixture()
def reference(tmp_path_factory):
    """An uninterrupted run of the crash-test config (in-process, no slow-down)."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = write_config(tmp, n=80, batch=2, classifier="slow_classifier")
    os.environ["DBP_TEST_DELAY"] = "0"
    try:
        assert cli.main(["--runs-dir", str(tmp / "runs"), "run", str(cfg), "--no-progress"]) == 0
    finally:
        del os.environ["DBP_TEST_DELAY"]
    return only_run(tmp / "runs").read_results()


def test_run_in_process_writes_results(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    assert cli.main(["--runs-dir", str(runs), "run", str(write_config(tmp_path)), "--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    run = only_run(runs)
    assert out[-1] == str(run.path)  # prints the run dir at the end
    res = run.read_results()
    assert res["schema"] == "dbp-lab.results/1" and res["experiment"] == "tiny" and res["run_id"] == run.id
    rows = {r["protocol"]: r for r in res["accuracies"]}
    assert set(rows) == {"clean", "purified"}
    for r in rows.values():
        assert r["n"] == 48 and r["accuracy"] == r["correct"] / 48
        assert 0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1 and r["ci_high"] - r["ci_low"] > 0.01
    assert res["headline"]["protocol"] == "purified"
    assert run.read_status().state == "done"
    events = run.metrics().read()
    assert [e["kind"] for e in events][0] == "start" and events[-1]["kind"] == "done"
    assert [e["step"] for e in events if e["kind"] == "eval"] == list(range(12))
    frozen = run.config_path.read_text()
    assert 'dataset = "tests.plugins:tiny_dataset"' in frozen and "n_examples = 48" in frozen


def test_results_do_not_depend_on_batch_size(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    per = []
    for batch in (3, 16):
        runs = tmp_path / f"runs{batch}"
        assert cli.main(["--runs-dir", str(runs), "run", str(write_config(tmp_path, batch=batch)),
                         "--no-progress"]) == 0
        per.append(only_run(runs).read_results()["stages"]["evaluate"]["per_example"])
    assert per[0] == per[1]
    # the equality is not trivial: purification noise flips some predictions ...
    assert 0 < sum(per[0]["purified"]) < len(per[0]["purified"])
    runs = tmp_path / "runs-seed"  # ... and another seed draws other noise
    assert cli.main(["--runs-dir", str(runs), "run", str(write_config(tmp_path)), "--set", "seed=12",
                     "--no-progress"]) == 0
    other = only_run(runs).read_results()["stages"]["evaluate"]["per_example"]
    assert other["clean"] == per[0]["clean"] and other["purified"] != per[0]["purified"]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, reference):
    runs = tmp_path / "runs"
    cfg = write_config(tmp_path, n=80, batch=2, classifier="slow_classifier")
    proc = dbp("run", str(cfg), runs=runs, DBP_TEST_DELAY="0.06")
    run_dir = None
    t0 = time.time()
    while run_dir is None and time.time() - t0 < 30:
        found = list(runs.glob("*/metrics.jsonl")) if runs.exists() else []
        run_dir = found[0].parent if found else None
        time.sleep(0.02)
    wait_for_lines(run_dir / "metrics.jsonl", 4, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    run = Run(run_dir)
    # every file is whole: JSON parses, results absent, checkpoint consistent with what was done
    raw = json.loads(run.status_path.read_text())
    assert raw["state"] == "running"
    assert run.read_status().state == "interrupted"
    assert run.read_results() is None and not run.results_path.exists()
    ckpt = run.load_checkpoint("evaluate.json")
    assert 1 <= ckpt["next_batch"] < 40 and len(ckpt["clean"]) == 2 * ckpt["next_batch"]
    assert cli.main(["--runs-dir", str(runs), "runs", "--json"]) == 0
    # resume (fast now) and compare with the uninterrupted run
    proc = dbp("resume", run.id, runs=runs, DBP_TEST_DELAY="0")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == str(run.path)
    assert run.read_status().state == "done"
    assert comparable(run.read_results()) == comparable(reference)
    kinds = [e["kind"] for e in run.metrics().read()]
    assert kinds[0] == "start" and "resume" in kinds and kinds[-1] == "done"
    assert "resuming at batch" in run.log_path.read_text()
    assert not [p for p in run.path.rglob(".*.tmp-*")]


def test_sigint_marks_interrupted_and_exits_130(tmp_path):
    runs = tmp_path / "runs"
    cfg = write_config(tmp_path, n=200, batch=2, classifier="slow_classifier")
    proc = dbp("run", str(cfg), runs=runs, DBP_TEST_DELAY="0.05")
    t0 = time.time()
    while not list(runs.glob("*/metrics.jsonl")) and time.time() - t0 < 30:
        time.sleep(0.02)
    run = Run(list(runs.glob("*/metrics.jsonl"))[0].parent)
    wait_for_lines(run.metrics_path, 2, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "dbp resume" in err and "Traceback" not in err
    status = json.loads(run.status_path.read_text())
    assert status["state"] == "interrupted" and "SIGINT" in status["message"]
    assert run.read_results() is None


def test_failure_records_traceback_and_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    cfg = write_config(tmp_path, classifier="failing_classifier", diffusion="none")
    assert cli.main(["--runs-dir", str(runs), "run", str(cfg), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "exploded on purpose" in err and "Traceback" not in err
    run = only_run(runs)
    status = run.read_status()
    assert status.state == "failed" and "exploded on purpose" in status.message
    assert "Traceback" in run.log_path.read_text()
    assert not run.results_path.exists()
    assert run.load_checkpoint("evaluate.json")["next_batch"] == 3


def test_two_concurrent_runs_stay_apart(tmp_path):
    runs = tmp_path / "runs"
    cfg = write_config(tmp_path, n=24, batch=4)
    procs = [dbp("run", str(cfg), runs=runs) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    dirs = [o[0].strip().splitlines()[-1] for o in outs]
    assert len(set(dirs)) == 2
    store = RunStore(runs)
    assert sorted(str(r.path) for r in store.list()) == sorted(dirs)
    pids = set()
    for run in store.list():
        events = run.metrics().read()
        assert [e["step"] for e in events if e["kind"] == "eval"] == list(range(6))  # one run's events only
        pids.add(run.read_status().pid)
    assert pids == {p.pid for p in procs}


def test_runs_show_export(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    monkeypatch.setenv("DBP_RUNS_DIR", str(runs))  # the env var picks the store
    assert cli.main(["run", str(write_config(tmp_path, diffusion="none")), "--no-progress"]) == 0
    run = only_run(runs)
    capsys.readouterr()
    assert cli.main(["runs"]) == 0
    table = capsys.readouterr().out
    assert run.id in table and "done" in table and "clean" in table
    assert cli.main(["show", run.id[:15]]) == 0
    shown = capsys.readouterr().out
    assert "state:      done" in shown and "clean" in shown
    csv_path = tmp_path / "out.csv"
    assert cli.main(["export", run.id, "--csv", str(csv_path)]) == 0
    lines = csv_path.read_text().splitlines()
    from dbp_core.results import EXPORT_COLUMNS  # the one column set of dbp export and the console
    assert lines[0].startswith(",".join(EXPORT_COLUMNS) + ",source,group,")  # then the run's settings
    assert lines[1].startswith(run.id + ",tiny,done,evaluate,,clean")
    assert cli.main(["export", run.id, "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("run_id,")
    assert cli.main(["resume", run.id]) == 0
    assert "already done" in capsys.readouterr().out


def test_user_errors_exit_2(tmp_path, capsys):
    runs = ["--runs-dir", str(tmp_path)]
    assert cli.main(runs + ["show", "nope"]) == 2
    assert cli.main(runs + ["resume", "nope"]) == 2
    assert cli.main(runs + ["export", "nope", "--csv"]) == 2
    assert cli.main(runs + ["run", str(tmp_path / "missing.toml")]) == 2
    assert cli.main(runs + ["run", str(write_config(tmp_path)), "--set", "purifier.steps=0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "purifier.steps" in err and "no run 'nope'" in err
    assert not list(tmp_path.glob("2*"))  # nothing created for invalid input
    assert cli.main(["frobnicate"]) == 2  # argparse's usage error, returned as the exit code
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("sub", ["", "run", "resume", "check", "runs", "show", "export", "backend", "train"])
def test_help_everywhere(sub, capsys):
    assert cli.main(([sub] if sub else []) + ["--help"]) == 0
    assert "usage: dbp" in capsys.readouterr().out


def test_backend_and_module_entry():
    out = subprocess.run([sys.executable, "-m", "dbp_core", "backend"], capture_output=True, text=True, env=env(),
                         cwd=ROOT)
    assert out.returncode == 0 and ("extension" in out.stdout or "reference" in out.stdout)


# --------------------------------------------------------------------------- bad input never gives a traceback

def test_export_to_a_folder_or_unwritable_file_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    assert cli.main(["--runs-dir", str(runs), "run", str(write_config(tmp_path, n=8, diffusion="none")),
                     "--no-progress"]) == 0
    run = only_run(runs)
    capsys.readouterr()
    for target in (tmp_path, Path("/proc/version"), tmp_path / "no" / "such" / "dir" / "x.csv"):
        assert cli.main(["--runs-dir", str(runs), "export", run.id, "--csv", str(target)]) == 2, target
        err = capsys.readouterr().err
        assert err.startswith("dbp: error: ") and str(target) in err and "expected a" in err, err
        assert "Traceback" not in err
    assert cli.main(["--runs-dir", str(runs), "export", run.id, "--csv", str(tmp_path / "ok.csv")]) == 0
    assert (tmp_path / "ok.csv").read_text().startswith("run_id,")


def test_runs_dir_that_is_a_file_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    cfg = write_config(tmp_path, n=8, diffusion="none")
    for argv in (["run", str(cfg), "--no-progress"], ["runs"], ["show", "x"], ["resume", "x"]):
        for root in (afile, afile / "sub"):
            code = cli.main(["--runs-dir", str(root), *argv])
            err = capsys.readouterr().err
            assert code == 2 and err.startswith("dbp: error: ") and str(afile) in err, (argv, root, err)
            assert "Traceback" not in err
    assert afile.read_text() == "not a folder"


@pytest.mark.parametrize("damage", ["", "{\"state\": \"do", "null"])
def test_damaged_status_is_listed_as_unknown_not_a_crash(tmp_path, capsys, monkeypatch, damage):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    for name in ("intact", "damaged"):  # names no hex run token can contain
        assert cli.main(["--runs-dir", str(runs), "run", str(write_config(tmp_path, name=name, n=8, diffusion="none")),
                         "--no-progress"]) == 0
    store = RunStore(runs)
    bad = store.open("damaged")
    good = store.open("intact")
    bad.status_path.write_text(damage)
    capsys.readouterr()
    assert cli.main(["--runs-dir", str(runs), "runs", "--json"]) == 0
    captured = capsys.readouterr()
    rows = {r["id"]: r for r in json.loads(captured.out)}
    assert rows[bad.id]["state"] == "damaged" and rows[bad.id]["experiment"] == "damaged"
    assert rows[good.id]["state"] == "done"
    assert str(bad.status_path) in captured.err and "Traceback" not in captured.err
    assert cli.main(["--runs-dir", str(runs), "runs"]) == 0
    table = capsys.readouterr().out
    assert bad.id in table and good.id in table
    # show: what can be shown, state 'damaged', and an error naming the file (exit 2)
    assert cli.main(["--runs-dir", str(runs), "show", bad.id]) == 2
    captured = capsys.readouterr()
    assert "state:      damaged" in captured.out and "clean" in captured.out
    assert f"dbp: error: {bad.status_path}" in captured.err and "expected a JSON object" in captured.err
    assert cli.main(["--runs-dir", str(runs), "resume", bad.id]) == 2
    err = capsys.readouterr().err
    assert "cannot be resumed" in err and str(bad.status_path) in err and "Traceback" not in err
    assert bad.status_path.read_text() == damage  # untouched
    # a damaged results.json: listed, and export names it
    good.results_path.write_text("{")
    assert cli.main(["--runs-dir", str(runs), "runs", "--json"]) == 0
    captured = capsys.readouterr()
    assert {r["id"]: r for r in json.loads(captured.out)}[good.id]["state"] == "done"
    assert str(good.results_path) in captured.err
    assert cli.main(["--runs-dir", str(runs), "export", good.id, "--csv"]) == 2
    assert str(good.results_path) in capsys.readouterr().err


def test_plain_progress_lines_have_a_rate_and_an_eta():
    """Without a terminal: 'stage: done/total (percent, rate, eta)', the rate counted from the
    stage's first line, at most one line per 2 s (a stage's first and last lines always)."""
    stream, now = io.StringIO(), [100.0]
    display = cli.ProgressDisplay(stream, enabled=False, clock=lambda: now[0])

    def at(t, stage, done, total):
        now[0] = t
        display(stage, done, total)
    at(100.0, "attacks", 10, 210)   # the first line: no rate yet
    at(101.0, "attacks", 20, 210)   # within 2 s of the last line: not printed
    at(116.0, "attacks", 60, 210)   # 50 items in 16 s: 3.1/s, 150 left: 48 s
    at(120.0, "attacks", 210, 210)  # done: no eta
    at(121.0, "evaluate", 4, None)  # a new stage counts from its own first line
    at(125.0, "evaluate", 64, None)
    assert stream.getvalue().splitlines() == [
        "attacks: 10/210 (5%)", "attacks: 60/210 (29%, 3.1/s, eta 48 s)", "attacks: 210/210 (100%, 10/s)",
        "evaluate: 4/?", "evaluate: 64/? (15/s)"]


def test_show_hides_eta_unless_running(tmp_path, capsys):
    run = RunStore(tmp_path).create(experiment="e")
    run.write_status(state="interrupted", progress={"stage": "evaluate", "done": 4, "total": 10}, eta=321.0)
    assert cli.main(["--runs-dir", str(tmp_path), "show", run.id]) == 0
    out = capsys.readouterr().out
    assert "evaluate 4/10" in out and ", eta" not in out
    run.mark_running()  # this (live) process
    run.write_status(eta=321.0)
    assert cli.main(["--runs-dir", str(tmp_path), "show", run.id]) == 0
    assert "eta 321 s" in capsys.readouterr().out
    run.write_status(state="running", pid=999999999, eta=321.0)  # its process is gone: interrupted, no eta
    assert cli.main(["--runs-dir", str(tmp_path), "show", run.id]) == 0
    out = capsys.readouterr().out
    assert "state:      interrupted" in out and ", eta" not in out


# --------------------------------------------------------------------------- one process per run

def _interrupted_run(tmp_path, n=80) -> tuple[Path, Run]:
    """A run of the slow config, interrupted after its first batches (SIGKILL)."""
    runs = tmp_path / "runs"
    cfg = write_config(tmp_path, n=n, batch=2, classifier="slow_classifier")
    proc = dbp("run", str(cfg), runs=runs, DBP_TEST_DELAY="0.05")
    t0 = time.time()
    while not (list(runs.glob("*/metrics.jsonl")) if runs.exists() else []) and time.time() - t0 < 30:
        time.sleep(0.02)
    run = Run(list(runs.glob("*/metrics.jsonl"))[0].parent)
    wait_for_lines(run.metrics_path, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert run.read_status().state == "interrupted"
    return runs, run


def test_two_resumes_at_once_one_runs_the_other_exits_2(tmp_path):
    runs, run = _interrupted_run(tmp_path, n=120)  # the winner holds the lock for several seconds
    procs = [dbp("resume", run.id, runs=runs, DBP_TEST_DELAY="0.05") for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    winner = next(p for p in procs if p.returncode == 0)
    loser_err = next(o[1] for p, o in zip(procs, outs) if p.returncode == 2)
    assert f"dbp: error: run {run.id} is already running (pid {winner.pid})" in loser_err, loser_err
    assert "Traceback" not in loser_err
    status = run.read_status()
    assert status.state == "done" and status.pid == winner.pid
    kinds = [e["kind"] for e in run.metrics().read()]
    assert kinds.count("resume") == 1 and kinds[-1] == "done"  # the loser wrote nothing
    evals = [e["step"] for e in run.metrics().read() if e["kind"] == "eval"]
    assert sorted(set(evals)) == list(range(60))


def test_resume_while_the_run_is_running_exits_2(tmp_path):
    runs = tmp_path / "runs"
    cfg = write_config(tmp_path, n=200, batch=2, classifier="slow_classifier")
    proc = dbp("run", str(cfg), runs=runs, DBP_TEST_DELAY="0.05")
    try:
        t0 = time.time()
        while not (list(runs.glob("*/metrics.jsonl")) if runs.exists() else []) and time.time() - t0 < 30:
            time.sleep(0.02)
        run = Run(list(runs.glob("*/metrics.jsonl"))[0].parent)
        second = dbp("resume", run.id, runs=runs)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 2, err
        assert f"run {run.id} is already running (pid {proc.pid})" in err and "Traceback" not in err
        assert proc.poll() is None and run.read_status().pid == proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


def test_resume_marks_the_run_running_right_after_locking(tmp_path, monkeypatch):
    import argparse
    run = RunStore(tmp_path).create(loads_config_tiny(tmp_path))
    run.write_status(state="interrupted", pid=None)
    seen = {}

    def read_config(self):  # the state when the (slow) config load begins
        seen.update(self.read_status(check_alive=False).to_dict())
        return original(self)
    original = Run.read_config
    monkeypatch.setattr(Run, "read_config", read_config)
    monkeypatch.chdir(ROOT)
    args = argparse.Namespace(run=run.id, runs_dir=str(tmp_path))
    prepared_run, _ = cli._prepare_resume(args)
    try:
        assert prepared_run.locked
        assert seen["state"] == "running" and seen["pid"] == os.getpid()
        assert prepared_run.claimed_from.state == "interrupted"
    finally:
        prepared_run.unlock()


def test_resume_with_an_invalid_frozen_config_restores_the_state(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    run = RunStore(tmp_path).create(loads_config_tiny(tmp_path))
    run.write_status(state="interrupted", pid=None, message="killed")
    run.config_path.write_text(run.config_path.read_text().replace("seed = 11", "seed = true"))
    assert cli.main(["--runs-dir", str(tmp_path), "resume", run.id]) == 2
    err = capsys.readouterr().err  # an edited config is refused by its checksum first
    assert "checksum" in err and str(run.config_path) in err
    from dbp_core.store import file_digest
    run.record_checksum("config.toml", file_digest(run.config_path))  # as if dbp had written it so
    assert cli.main(["--runs-dir", str(tmp_path), "resume", run.id]) == 2
    err = capsys.readouterr().err
    assert "dbp: invalid config" in err and "seed" in err and str(run.config_path) in err
    status = Run(run.path).read_status()
    assert status.state == "interrupted" and status.message == "killed" and status.pid is None
    assert Run(run.path).lock() is True  # released


def loads_config_tiny(tmp_path):
    from dbp_core.config import load_config
    return load_config(write_config(tmp_path, n=8, diffusion="none"))


# --------------------------------------------------------------------------- threads

def test_threads_applied_before_the_stages_and_recorded(tmp_path, monkeypatch):
    import torch
    monkeypatch.chdir(tmp_path)  # the probe stage module is importable from here
    (tmp_path / "threads_probe_zq.py").write_text(
        "def stage(ctx):\n    import torch\n    return {'threads': torch.get_num_threads()}\n")
    before = torch.get_num_threads()
    cfg = write_config(tmp_path, n=8, diffusion="none", threads=1, stages=["threads_probe_zq:stage", "evaluate"])
    torch.set_num_threads(2)
    try:
        assert cli.main(["--runs-dir", str(tmp_path / "runs"), "run", str(cfg), "--no-progress"]) == 0
        res = only_run(tmp_path / "runs").read_results()
        assert res["stages"]["threads_probe_zq:stage"]["threads"] == 1
        assert res["environment"]["threads"] == 1
        assert torch.get_num_threads() == 2  # restored for an in-process caller
        assert "intra-op threads: 1" in only_run(tmp_path / "runs").log_path.read_text()
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- SIGKILL mid-attack, then resume

# the attacks-stage config of test_evaluate, with a classifier slow enough to be killed mid-stage
ATTACK_CONFIG = attack_study_toml(n=24, batch=8, classifier="slow_classifier")


def attack_comparable(results: dict) -> dict:
    return {"accuracies": results["accuracies"], "comparisons": results["comparisons"],
            "per_example": results["stages"]["attacks"]["per_example"], "headline": results["headline"]}


def read_side(path: Path, capsys) -> dict:
    """What every reader of the run store sees of a finished run, all through dbp_core.results:
    the curves of the report, the console and MetricsView; the rows of `dbp show` and `dbp export`."""
    from console.state.monitor import RunMonitor
    from dbp_core.report import load_run
    from dbp_core.results import MetricsView, read_run
    metrics = MetricsView(path)
    metrics.poll()
    snap = RunMonitor(path).poll()
    capsys.readouterr()
    assert cli.main(["show", str(path)]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if "%" in line and "pts" not in line]
    assert cli.main(["export", str(path), "--csv"]) == 0
    exported = [{k: v for k, v in row.items() if k not in ("run_id", "path")}
                for row in csv.DictReader(io.StringIO(capsys.readouterr().out))]
    curves = metrics.attack_curves()
    return {"curves": curves, "report_curves": load_run(path).attack_curves(),
            "console_curves": {a: (c[0], c[1]) for a, c in snap.curves.items()},
            "rows": read_run(path).rows, "show": shown, "export": exported}


def test_sigkill_in_attacks_then_resume_matches_uninterrupted(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "attack.toml"
    cfg.write_text(ATTACK_CONFIG)
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("DBP_TEST_DELAY", "0")
    assert cli.main(["--runs-dir", str(tmp_path / "ref"), "run", str(cfg), "--no-progress"]) == 0
    reference = only_run(tmp_path / "ref").read_results()
    assert len(reference["stages"]["attacks"]["per_example"]) == 2 and reference["comparisons"]

    runs = tmp_path / "runs"
    proc = dbp("run", str(cfg), runs=runs, DBP_TEST_DELAY="0.03")
    t0, ckpt = time.time(), None
    while time.time() - t0 < 120:  # kill once a checkpointed job is followed by events of the next job
        found = list(runs.glob("*/checkpoints/attacks.json")) if runs.exists() else []
        if found:
            job = json.loads(found[0].read_text())["next"]  # 2 attacks x 3 batches: job = attack * 3 + batch
            events = read_metrics(found[0].parent.parent / "metrics.jsonl")[0]
            if any(e["kind"] == "attack_iter" and e["batch"] == job % 3 and e["attack"] == ("pgd-eot-linf", "dwbox-linf")[job // 3]
                   for e in events if job < 6):
                ckpt = found[0]
                break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    assert ckpt is not None, "no attack batch was interrupted after a checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    run = Run(ckpt.parent.parent)
    assert json.loads(run.status_path.read_text())["state"] == "running"
    assert run.read_status().state == "interrupted"
    assert run.read_results() is None and not run.results_path.exists()
    state = run.load_checkpoint("attacks.json")  # whole: parses, and mid-way through the 6 jobs
    assert 1 <= state["next"] < 6
    proc = dbp("resume", run.id, runs=runs, DBP_TEST_DELAY="0")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert run.read_status().state == "done"
    assert attack_comparable(run.read_results()) == attack_comparable(reference)
    kinds = [e["kind"] for e in run.metrics().read()]
    assert kinds[0] == "start" and "resume" in kinds and kinds[-1] == "done"
    assert not [p for p in run.path.rglob(".*.tmp-*")]
    # the batch that was killed ran again: its iterations are in metrics.jsonl twice ...
    iters = [(e["attack"], e["seed"], e["batch"], e["step"]) for e in run.metrics().read() if e["kind"] == "attack_iter"]
    assert len(iters) > len(set(iters))
    # ... yet every reader sees what the uninterrupted run's readers see
    resumed, uninterrupted = read_side(run.path, capsys), read_side(only_run(tmp_path / "ref").path, capsys)
    assert resumed["curves"] and resumed["rows"] and resumed["show"] and resumed["export"]
    for what in ("curves", "report_curves", "rows", "show", "export"):
        assert resumed[what] == uninterrupted[what], what
    assert resumed["report_curves"] == resumed["curves"]
    for attack, c in resumed["curves"].items():  # the console plots the same points
        assert resumed["console_curves"][attack] == (c["iteration"], c["success"])
