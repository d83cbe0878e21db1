"""The dbp CLI end to end: run / resume / runs / show / export, crash safety, exit codes.

Models and data come from tests/plugins.py through import paths, so these tests need no
trained weights; the purifier is the real one (dbp_core.purify) on a tiny eps model."""
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
from dbp_core.runs import Run, RunStore

ROOT = Path(__file__).resolve().parents[1]
HAVE_PURIFY = (ROOT / "dbp_core" / "purify.py").exists()

CONFIG = """
name = "{name}"
seed = 11
device = "cpu"
[data]
dataset = "tests.plugins:tiny_dataset"
n_examples = {n}
batch_size = {batch}
[models]
classifier = "{classifier}"
diffusion = "{diffusion}"
[purifier]
t_star = 0.3
steps = 3
"""


def write_config(tmp_path: Path, name="tiny", n=48, batch=4, classifier="tests.plugins:tiny_classifier",
                 diffusion="tests.plugins:tiny_eps" if HAVE_PURIFY else "none") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(CONFIG.format(name=name, n=n, batch=batch, classifier=classifier, diffusion=diffusion))
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
    cfg = write_config(tmp, n=80, batch=2, classifier="tests.plugins:slow_classifier")
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
    assert set(rows) == ({"clean", "purified"} if HAVE_PURIFY else {"clean"})
    for r in rows.values():
        assert r["n"] == 48 and r["accuracy"] == r["correct"] / 48
        assert 0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1 and r["ci_high"] - r["ci_low"] > 0.01
    assert res["headline"]["protocol"] == ("purified" if HAVE_PURIFY else "clean")
    assert run.read_status()["state"] == "done"
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
    if HAVE_PURIFY:  # the equality is not trivial: purification noise flips some predictions ...
        assert 0 < sum(per[0]["purified"]) < len(per[0]["purified"])
        runs = tmp_path / "runs-seed"  # ... and another seed draws other noise
        assert cli.main(["--runs-dir", str(runs), "run", str(write_config(tmp_path)), "--set", "seed=12",
                         "--no-progress"]) == 0
        other = only_run(runs).read_results()["stages"]["evaluate"]["per_example"]
        assert other["clean"] == per[0]["clean"] and other["purified"] != per[0]["purified"]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, reference):
    runs = tmp_path / "runs"
    cfg = write_config(tmp_path, n=80, batch=2, classifier="tests.plugins:slow_classifier")
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
    assert run.read_status()["state"] == "interrupted"
    assert run.read_results() is None and not run.results_path.exists()
    ckpt = run.load_checkpoint("evaluate.json")
    assert 1 <= ckpt["next_batch"] < 40 and len(ckpt["clean"]) == 2 * ckpt["next_batch"]
    assert cli.main(["--runs-dir", str(runs), "runs", "--json"]) == 0
    # resume (fast now) and compare with the uninterrupted run
    proc = dbp("resume", run.id, runs=runs, DBP_TEST_DELAY="0")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == str(run.path)
    assert run.read_status()["state"] == "done"
    assert comparable(run.read_results()) == comparable(reference)
    kinds = [e["kind"] for e in run.metrics().read()]
    assert kinds[0] == "start" and "resume" in kinds and kinds[-1] == "done"
    assert "resuming at batch" in run.log_path.read_text()
    assert not [p for p in run.path.rglob(".*.tmp-*")]


def test_sigint_marks_interrupted_and_exits_130(tmp_path):
    runs = tmp_path / "runs"
    cfg = write_config(tmp_path, n=200, batch=2, classifier="tests.plugins:slow_classifier")
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
    cfg = write_config(tmp_path, classifier="tests.plugins:failing_classifier", diffusion="none")
    assert cli.main(["--runs-dir", str(runs), "run", str(cfg), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "exploded on purpose" in err and "Traceback" not in err
    run = only_run(runs)
    status = run.read_status()
    assert status["state"] == "failed" and "exploded on purpose" in status["message"]
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
        pids.add(run.read_status()["pid"])
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
    assert lines[0].startswith("run_id,experiment,stage,protocol") and lines[1].startswith(run.id + ",tiny,evaluate,clean")
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
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2


@pytest.mark.parametrize("sub", ["", "run", "resume", "check", "runs", "show", "export", "backend", "train"])
def test_help_everywhere(sub, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(([sub] if sub else []) + ["--help"])
    assert info.value.code == 0
    assert "usage: dbp" in capsys.readouterr().out


def test_backend_and_module_entry():
    out = subprocess.run([sys.executable, "-m", "dbp_core", "backend"], capture_output=True, text=True, env=env(),
                         cwd=ROOT)
    assert out.returncode == 0 and ("extension" in out.stdout or "reference" in out.stdout)
