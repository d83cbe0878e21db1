"""Every bad input ends cleanly: exit 2 (bad input) or 1 (a run that failed), one message that names
the file or field, no traceback, no orphan or half-written run folder, and a state that says what
happened. One test per class, each over several instances:

1. user code that exits or aborts (plugin classifier, dataset, stage, attack; also under torchrun);
2. run files of the wrong shape (the corpus tests/data/bad_runs/): runs, show, export, report and
   the console's state never crash and name the file and field;
3. inputs the parser cannot take (deep nesting in tests/data/bad_configs/85-88, non-UTF-8 --set);
4. checks that used to come too late (tests/data/bad_configs/89-102: dbp check refuses them, and
   dbp run leaves no folder for any bad config);
5. edited or copied run folders (checksums, links);
6. signals and a full disk at awkward moments.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbp_core import cli
from dbp_core.config import loads_config
from dbp_core.runner import run_study
from dbp_core.store import Run, RunStore
from tests.conftest import addt_toml, attack_study_toml, run_toml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
BAD_RUNS = sorted((DATA / "bad_runs").glob("*.json"))
BAD_CONFIGS = sorted((DATA / "bad_configs").glob("*.toml"))


def env(**extra) -> dict:
    e = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)
    e.pop("DBP_RUNS_DIR", None)
    return e


def dbp(*args: str, runs: Path, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dbp_core", "--runs-dir", str(runs), *args], cwd=ROOT,
                          capture_output=True, text=True, env=env(**kw), timeout=timeout)


def main(*argv, capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def folders(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def assert_no_orphans(runs: Path, allowed=("done", "failed", "interrupted")) -> None:
    """Every folder of the store is a run with a status in a final state (nothing half-made,
    nothing left 'running' or 'queued' by a process that is gone)."""
    for f in folders(runs):
        status = Run(f).read_status()
        assert status is not None, f"{f}: a folder without status.json (an orphan)"
        assert status.state in allowed, (f, status)
        if status.state != "done":
            assert not (f / "results.json").exists(), f"{f}: {status.state} beside a results.json"


def write(tmp_path: Path, text: str, name: str = "experiment") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


# =========================================================================== 1. user code that exits

EXITS = [  # (plugin role, config sections, DBP_TEST_EXIT, what the failed state must say)
    ("classifier", {"classifier": "tests.exit_plugins:exiting_classifier"}, "exit1",
     "SystemExit: the run's code called sys.exit('the classifier gave up on purpose') at exit_plugins.py"),
    ("classifier", {"classifier": "tests.exit_plugins:exiting_classifier"}, "exit0",
     "SystemExit: the run's code called sys.exit(0) at exit_plugins.py"),
    ("classifier", {"classifier": "tests.exit_plugins:exiting_classifier"}, "memory",
     "MemoryError: out of memory, at exit_plugins.py"),
    ("dataset", {"data": {"dataset": "tests.exit_plugins:exiting_dataset"}}, "exit1",
     "sys.exit('the dataset gave up on purpose')"),
    ("stage", {"stages": ["evaluate", "tests.exit_plugins:exiting_stage"]}, "exit0", "sys.exit(0)"),
    ("attack", {"attacks": [{"kind": "tests.exit_plugins:exiting_attack"}], "stages": ["attacks"]}, "exit1",
     "sys.exit('the attack gave up on purpose')"),
]


@pytest.mark.parametrize("role,sections,how,message", EXITS, ids=[f"{e[0]}-{e[2]}" for e in EXITS])
def test_user_code_that_exits_fails_the_run_with_its_message(tmp_path, capsys, monkeypatch, role, sections, how,
                                                             message):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("DBP_TEST_EXIT", how)
    monkeypatch.setenv("DBP_TEST_EXIT_AFTER", "2")
    sections = dict(sections)
    classifier = sections.pop("classifier", "tiny_classifier")
    cfg = write(tmp_path, run_toml(n=8, batch=2, classifier=classifier, **sections))
    runs = tmp_path / "runs"
    code, out, err = main("--runs-dir", runs, "run", cfg, "--no-progress", capsys=capsys)
    assert code == 1, err
    assert "Traceback" not in err and message in err, err
    [run] = RunStore(runs).list()
    status = run.read_status()
    assert status.state == "failed" and message in status.message
    assert not run.results_path.exists()
    assert "Traceback" in run.log_path.read_text()  # the traceback is in the log, not on the terminal
    assert_no_orphans(runs)


def test_an_abort_leaves_a_run_that_readers_report_failed(tmp_path):
    """os.abort() kills the process: faulthandler writes the traceback into log.txt, and every reader
    reports the run failed with that error (not 'running', nor 'interrupted' as after a SIGKILL)."""
    runs = tmp_path / "runs"
    cfg = write(tmp_path, run_toml(n=8, batch=2, classifier="tests.exit_plugins:exiting_classifier"))
    proc = dbp("run", str(cfg), "--no-progress", runs=runs, DBP_TEST_EXIT="abort", DBP_TEST_EXIT_AFTER="2")
    assert proc.returncode == -signal.SIGABRT, proc.stderr[-2000:]
    [run] = RunStore(runs).list()
    assert json.loads(run.status_path.read_text())["state"] == "running"  # as the dead process left it
    show = dbp("show", run.id, runs=runs)
    assert "state:      failed — process" in show.stdout and "Fatal Python error: Aborted" in show.stdout, show.stdout
    listing = dbp("runs", "--json", runs=runs)
    assert json.loads(listing.stdout)[0]["state"] == "failed"
    # resuming records the reason, then runs again (here: the plugin no longer aborts)
    resumed = dbp("resume", run.id, "--no-progress", runs=runs, DBP_TEST_EXIT_AFTER="1000000")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert run.read_status().state == "done" and run.results_path.exists()


@pytest.mark.parametrize("how,message", [("exit1", "rank 1 of 2 failed: SystemExit: the classifier gave up on purpose"),
                                         ("abort", "a peer process of the torchrun job died")])
def test_user_code_that_exits_on_one_torchrun_rank_fails_every_rank(tmp_path, how, message):
    from tests.test_dist import torchrun
    text = attack_study_toml(n=15, batch=7, classifier="tests.exit_plugins:exiting_classifier")
    proc, run = torchrun(tmp_path, text, timeout=240, env_extra={"DBP_TEST_EXIT": how, "DBP_TEST_EXIT_RANK": "1",
                                                                 "DBP_TEST_EXIT_AFTER": "4", "DBP_DIST_TIMEOUT": "200"})
    assert proc.returncode != 0
    status = run.read_status()
    assert not run.results_path.exists()
    dbp_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("dbp")]
    if how == "abort" and status.state == "interrupted":
        # a race: torchrun's agent may SIGTERM rank 0 before rank 0's collective sees the dead peer;
        # rank 0 cannot tell that SIGTERM from a user's, so the run stops resumable, saying a peer may have died
        assert "a peer process died" in status.message, status
        assert any("interrupted" in ln for ln in dbp_lines), proc.stderr[-3000:]
        return
    assert status.state == "failed" and message in status.message, status
    assert any("run failed" in ln for ln in dbp_lines), proc.stderr[-3000:]


# =========================================================================== 2. run files of the wrong shape

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished run with every file the readers read: results, metrics, analysis files."""
    tmp = tmp_path_factory.mktemp("finished")
    text = attack_study_toml(n=8, batch=4, stages=("attacks", "analysis"),
                             evaluation={"protocols": ["purified", "single", "fresh-noise"]},
                             analysis={"trajectory": True, "landscape": True, "examples": 2, "landscape_grid": 3})
    cfg = loads_config(text, base_dir=str(ROOT))
    run = RunStore(tmp / "runs").create(cfg)
    assert run_study(run, cfg) == "done", run.read_log_tail(30)
    assert (run.path / "analysis" / "landscape.json").exists() and (run.path / "analysis" / "trajectory.json").exists()
    return run.path


def _set(obj, dotted: str, value):
    *parents, last = dotted.split(".")
    for part in parents:
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    if isinstance(obj, list):
        obj[int(last)] = value
    else:
        obj[last] = value


def damage(run_dir: Path, case: dict, outside: Path) -> None:
    """Apply one corpus case to a copy of a finished run (tests/data/bad_runs/*.json)."""
    target = run_dir / case["file"]
    if "set" in case:
        obj = json.loads(target.read_text())
        for key, value in case["set"].items():
            if value == "@line":  # one value per alpha: a line where the other field is a grid
                value = [1.0] * len(obj["alphas"])
            _set(obj, key, value)
        target.write_text(json.dumps(obj))
    elif "text" in case:
        target.write_text(case["text"])
    elif "hex" in case:
        target.write_bytes(bytes.fromhex(case["hex"]))
    elif "deep" in case and case["file"] != "metrics.jsonl":
        target.write_text("[" * case["deep"] + "]" * case["deep"])
    elif case["file"] == "metrics.jsonl" and "kind" not in case:
        line = (json.dumps(case["line"]).encode() if "line" in case else bytes.fromhex(case["raw_hex"])
                if "raw_hex" in case else ("[" * case["deep"] + "]" * case["deep"]).encode())
        with open(target, "ab") as fh:
            fh.write(line + b"\n")
    elif case["kind"] == "symlink":
        target.unlink(missing_ok=True)
        target.symlink_to(outside)
    elif case["kind"] == "fifo":
        target.unlink()
        os.mkfifo(target)
    elif case["kind"] == "folder":
        target.unlink()
        target.mkdir()
    elif case["kind"] == "symlink_folder":
        shutil.move(str(target), str(outside.parent / "moved-checkpoints"))
        target.symlink_to(outside.parent / "moved-checkpoints", target_is_directory=True)
    else:
        raise AssertionError(f"unknown corpus case {case}")


def test_the_damaged_run_corpus_covers_every_run_file():
    cases = [json.loads(p.read_text()) for p in BAD_RUNS]
    files = {c["file"] for c in cases}
    assert {"status.json", "results.json", "metrics.jsonl", "log.txt", ".lock", "checkpoints",
            "analysis/trajectory.json", "analysis/landscape.json"} <= files
    assert len(cases) >= 40


@pytest.mark.parametrize("path", BAD_RUNS, ids=[p.stem for p in BAD_RUNS])
def test_readers_show_a_damaged_run_as_damaged(path, finished_run, tmp_path, capsys, monkeypatch):
    from console.state.monitor import RunMonitor
    from console.state.runs import compare_results, export_csv, run_rows
    monkeypatch.chdir(tmp_path)
    case = json.loads(path.read_text())
    runs = tmp_path / "runs"
    run_dir = runs / finished_run.name
    shutil.copytree(finished_run, run_dir)
    outside = tmp_path / "outside.txt"
    outside.write_text("not a run file\n")
    damage(run_dir, case, outside)
    expect = case["expect"]
    # status/results/links: what every listing shows; metrics and analysis: what the report reads
    listed = case["file"] in ("status.json", "results.json") or "kind" in case

    code, out, err = main("--runs-dir", runs, "runs", capsys=capsys)
    assert code == 0 and finished_run.name[:20] in out
    if listed:
        assert expect in err, err
    code, out, _ = main("--runs-dir", runs, "runs", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)[0]["id"] == run_dir.name

    code, out, err = main("--runs-dir", runs, "show", run_dir.name, capsys=capsys)
    assert code == (2 if listed else 0), err
    if listed:
        assert expect in err and err.count("\n") <= 3, err

    code, out, err = main("--runs-dir", runs, "export", run_dir.name, "--csv", capsys=capsys)
    assert code in (0, 2)
    if case["file"] == "results.json":
        assert code == 2 and expect in err, err

    code, out, err = main("--runs-dir", runs, "report", run_dir.name, capsys=capsys)
    assert code == (2 if expect else 0), err
    if expect:
        assert expect in err, err
        report = (run_dir / "report" / "report.md")
        assert case["file"] == "checkpoints" or expect in report.read_text()

    rows = run_rows(runs)  # the console's state: no Textual, same reader
    assert len(rows) == 1
    if listed:
        assert any(expect in p for p in rows[0]["problems"]), rows[0]["problems"]
    snap = RunMonitor(run_dir).poll()
    assert snap.run_id == run_dir.name
    compare_results(rows)
    export_csv(rows, tmp_path / "export.csv")
    assert outside.read_text() == "not a run file\n"  # a link's target is never written


def test_the_console_app_survives_the_damaged_run_corpus(finished_run, tmp_path):
    """The Textual console on a store of damaged copies: the runs table and the monitor open each."""
    import asyncio

    from console.app import ConsoleApp
    from tests.test_console import SIZE, until
    runs = tmp_path / "runs"
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    picked = [p for p in BAD_RUNS if p.stem.startswith(("status_", "results_", "metrics_", "trajectory", "log_"))]
    for i, path in enumerate(picked):
        run_dir = runs / f"20250101-0000{i:02d}-damaged-{i:010x}"
        shutil.copytree(finished_run, run_dir)
        damage(run_dir, json.loads(path.read_text()), outside)

    async def go():
        app = ConsoleApp(DATA / "console_runs" / "experiments", runs, cwd=ROOT, poll_interval=0.3)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f4")
            screen = app.screen
            await until(pilot, lambda: screen.__class__.__name__ == "RunsScreen" and len(screen.rows) == len(picked),
                        what="runs table")
            for _ in picked:
                await pilot.press("down")
            await pilot.press("f3")
            mon = app.screen
            await until(pilot, lambda: mon.__class__.__name__ == "MonitorScreen" and mon.polls > 0, what="monitor")
            sl = mon.query_one("#run-list")
            for run_id in list(mon.known_ids):
                sl.select(run_id)
            await until(pilot, lambda: len(mon.snapshots) >= len(picked), what="every run polled")
            await pilot.pause(0.5)
    asyncio.run(go())


# =========================================================================== 3 and 4. inputs refused before a run

@pytest.mark.parametrize("path", BAD_CONFIGS, ids=[p.stem for p in BAD_CONFIGS])
def test_a_bad_config_leaves_no_run_folder(path, tmp_path, capsys, monkeypatch):
    """`dbp run` refuses every config of the corpus (schema and preflight) before it makes a folder."""
    monkeypatch.chdir(ROOT)
    lines = path.read_text().splitlines()
    sets = [ln.removeprefix("# set: ") for ln in lines[1:3] if ln.startswith("# set: ")]
    runs = tmp_path / "runs"
    code, _, err = main("--runs-dir", runs, "run", path, *[a for s in sets for a in ("--set", s)], capsys=capsys)
    assert code == 2 and "Traceback" not in err and lines[0].removeprefix("# expect: ") + ":" in err, err
    assert folders(runs) == []


NON_UTF8 = [  # --set values with a byte that is not UTF-8 (argv gives it as a lone surrogate)
    (b"description=caf\xe9", "description"),
    (b"attacks.0.name=pgd\xff", "attacks.0.name"),
    (b"models.classifier=/tmp/\xff/model", "models.classifier"),
    (b"na\xffme=x", "<override>"),
]


@pytest.mark.parametrize("arg,field", NON_UTF8, ids=[f for _, f in NON_UTF8])
def test_a_non_utf8_override_is_refused_by_check_and_run(tmp_path, arg, field):
    runs = tmp_path / "runs"
    for command in ("check", "run"):
        proc = subprocess.run([sys.executable.encode(), b"-m", b"dbp_core", b"--runs-dir", str(runs).encode(),
                               command.encode(), str(ROOT / "experiments" / "quickstart.toml").encode(), b"--set", arg],
                              cwd=ROOT, capture_output=True, env=env(), timeout=180)
        err = proc.stderr.decode("utf-8", "backslashreplace")
        assert proc.returncode == 2 and "Traceback" not in err, err
        assert f"{field}: --set" in err and "not valid UTF-8" in err, err
    assert folders(runs) == []


def test_a_config_under_a_non_utf8_folder_cannot_be_frozen_and_leaves_no_folder(tmp_path):
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9"))
    folder.mkdir()
    shutil.copy(ROOT / "dbp_core" / "weights" / "digits_classifier.json", folder)
    shutil.copy(ROOT / "dbp_core" / "weights" / "digits_classifier.safetensors", folder)
    cfg = folder / "e.toml"
    cfg.write_text('name = "x"\ndevice = "cpu"\n[data]\nn_examples = 4\n[models]\nclassifier = "digits_classifier"\n')
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "dbp_core", "--runs-dir", str(runs), "run", os.fsencode(cfg)],
                          cwd=ROOT, capture_output=True, env=env(), timeout=180)
    err = proc.stderr.decode("utf-8", "backslashreplace")
    assert proc.returncode == 2 and "Traceback" not in err and "config.toml" in err and "not valid UTF-8" in err, err
    assert folders(runs) == []


def test_the_console_lists_experiments_it_cannot_parse(tmp_path):
    from console.state.experiments import ConfigForm, list_experiments
    for path in BAD_CONFIGS:
        if path.stem in ("85_deep_tables", "86_deep_arrays", "87_deep_inline_tables", "62_not_toml"):
            shutil.copy(path, tmp_path)
    listed = list_experiments(tmp_path)
    assert len(listed) == 4
    assert sum(e.error is not None for e in listed) >= 3  # too deep for the parser: an error, not a crash
    for e in listed:  # the form opens each and says why it cannot be used
        form = ConfigForm(e.path)
        form.sections()
        assert not form.validate() and form.general_errors


# =========================================================================== 5. edited or copied run folders

def _interrupted_run(tmp_path: Path, capsys, text: str, after: str) -> tuple[Path, Run]:
    """A run that a Ctrl-C (raised by its classifier) interrupted with checkpoints on disk."""
    runs = tmp_path / "runs"
    os.environ.update(DBP_TEST_EXIT="interrupt", DBP_TEST_EXIT_AFTER=after)
    try:
        code, _, err = main("--runs-dir", runs, "run", write(tmp_path, text), "--no-progress", capsys=capsys)
    finally:
        del os.environ["DBP_TEST_EXIT"], os.environ["DBP_TEST_EXIT_AFTER"]
    assert code == 130, err
    [run] = RunStore(runs).list()
    assert run.read_status().state == "interrupted"
    return runs, run


EDITS = [  # (file, edit, expected words in the refusal)
    ("checkpoints/evaluate.json", lambda t: t.replace('"next_batch": ', '"next_batch": 1 + '), "does not match the checksum"),
    ("checkpoints/stages.json", lambda t: t.replace("{}", '{"evaluate": {}}') if t.strip() == "{}" else t + " ",
     "does not match the checksum"),
    ("config.toml", lambda t: t.replace("seed = 11", "seed = 12"), "does not match the checksum"),
    ("checkpoints/evaluate.json", lambda t: t[: len(t) // 2], "does not match the checksum"),
    ("checkpoints/attacks.json", lambda t: '{"next": 5, "outcomes": {}}', "has no checksum"),
    ("checksums.json", None, "checksums.json: is missing"),
]


@pytest.mark.parametrize("target,edit,words", EDITS, ids=["next-moved", "stages", "seed", "truncated", "copied-in",
                                                         "no-checksums"])
def test_resume_refuses_an_edited_run_folder_naming_the_file(tmp_path, capsys, monkeypatch, target, edit, words):
    monkeypatch.chdir(ROOT)
    text = run_toml(n=12, batch=2, classifier="tests.exit_plugins:exiting_classifier")
    runs, run = _interrupted_run(tmp_path, capsys, text, after="6")
    if not (run.path / "checkpoints" / "stages.json").exists():
        run.save_checkpoint("stages.json", {})
    path = run.path / target
    before = path.read_bytes() if path.exists() else None
    if edit is None:
        path.unlink()
    else:
        path.write_text(edit(path.read_text() if before is not None else ""))
    code, _, err = main("--runs-dir", runs, "resume", run.id, "--no-progress", capsys=capsys)
    assert code == 2 and "Traceback" not in err, err
    assert f"{path}: " in err and words in err, err
    assert run.read_status().state == "interrupted"  # untouched by the refusal
    if before is not None and target != "checkpoints/attacks.json":  # put it back: the run resumes as before
        path.write_bytes(before)
    elif target == "checkpoints/attacks.json":
        path.unlink()
    if edit is not None:
        code, _, err = main("--runs-dir", runs, "resume", run.id, "--no-progress", capsys=capsys)
        assert code == 0, err
        assert run.read_status().state == "done"


def test_resume_refuses_an_edited_addt_model_and_a_copied_run_resumes_its_own(tmp_path, capsys, monkeypatch):
    """The models ADDT saved are checksummed like checkpoints, and recorded relative to the run
    folder: a copy of the run folder resumes from its own models, to the same results."""
    monkeypatch.chdir(ROOT)
    text = addt_toml(stages=["addt", "tests.exit_plugins:exiting_stage", "attacks"], addt={"control": False})
    runs = tmp_path / "runs"
    monkeypatch.setenv("DBP_TEST_EXIT", "interrupt")
    code, _, err = main("--runs-dir", runs, "run", write(tmp_path, text), "--no-progress", capsys=capsys)
    assert code == 130, err
    monkeypatch.delenv("DBP_TEST_EXIT")
    [run] = RunStore(runs).list()
    copy = tmp_path / "elsewhere" / run.id
    shutil.copytree(run.path, copy)
    weights = run.path / "models" / "addt" / "eps_model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-4] + bytes(4))
    code, _, err = main("--runs-dir", runs, "resume", run.id, "--no-progress", capsys=capsys)
    assert code == 2 and f"{run.path / 'models' / 'addt'}: does not match the checksum" in err, err
    weights.write_bytes(original)
    shutil.rmtree(run.path)  # the copy must not need the original
    code, _, err = main("--runs-dir", tmp_path / "elsewhere", "resume", run.id, "--no-progress", capsys=capsys)
    assert code == 0, err
    res = Run(copy).read_results()
    assert {r["model"] for r in res["accuracies"]} == {"original", "addt"}


@pytest.mark.parametrize("name", [".lock", "log.txt", "metrics.jsonl", "status.json"])
def test_a_symlinked_run_file_is_left_untouched_and_resume_refuses(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(ROOT)
    runs, run = _interrupted_run(tmp_path, capsys, run_toml(n=12, batch=2,
                                                           classifier="tests.exit_plugins:exiting_classifier"), "6")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n" * 100)
    stat_before = victim.stat()
    target = run.path / name
    target.unlink(missing_ok=True)
    target.symlink_to(victim)
    code, _, err = main("--runs-dir", runs, "resume", run.id, capsys=capsys)
    assert code == 2 and "Traceback" not in err and f"{target}: is a symbolic link" in err, err
    assert victim.read_text() == "precious\n" * 100 and victim.stat().st_mtime_ns == stat_before.st_mtime_ns
    assert target.is_symlink()


# =========================================================================== 6. signals and a full disk

def _slow_run(tmp_path: Path, runs: Path, delay: str = "0.05", **kw) -> subprocess.Popen:
    cfg = write(tmp_path, run_toml(n=40, batch=2, classifier="slow_classifier"))
    return subprocess.Popen([sys.executable, "-m", "dbp_core", "--runs-dir", str(runs), "run", str(cfg), "--no-progress"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(DBP_TEST_DELAY=delay), **kw)


def _wait_for_events(runs: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = list(runs.glob("*/metrics.jsonl"))
        if found and found[0].read_text().count('"kind": "eval"') >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("the run never got going")


@pytest.mark.parametrize("trial", range(4))
def test_two_sigterms_1ms_apart_end_the_run_interrupted_cleanly(tmp_path, trial):
    runs = tmp_path / "runs"
    proc = _slow_run(tmp_path, runs)
    _wait_for_events(runs, 2 + trial, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "interrupted by SIGTERM" in err or "dbp: interrupted" in err
    [run] = RunStore(runs).list()
    assert run.read_status().state == "interrupted" and not run.results_path.exists()
    assert_no_orphans(runs)


def test_sigint_in_the_first_50ms_of_start_up_ends_cleanly(tmp_path):
    """SIGINT at 0-50 ms after start. The command is started as a launcher should start it, with
    SIGINT and SIGTERM blocked until dbp can handle them (dbp_core/__main__.py): a signal sent
    while the interpreter itself starts waits until then, and never prints a traceback."""
    runs = tmp_path / "runs"
    block = lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})  # noqa: E731
    for delay_ms in range(0, 51, 5):
        proc = _slow_run(tmp_path, runs, preexec_fn=block)
        time.sleep(delay_ms / 1000)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and "Traceback" not in err and "Fatal Python error" not in err, (delay_ms, err)
        assert err.strip().splitlines()[-1].startswith(("dbp: interrupted", "/")), err
    assert_no_orphans(runs, allowed=("interrupted",))


@pytest.mark.parametrize("moment", ["before results", "after results.json", "after done"])
def test_sigterm_around_results_json_gives_done_with_results_or_interrupted_without(tmp_path, monkeypatch, moment):
    """A SIGTERM right before, between or after the final writes: the run is 'done' with its
    results.json, or 'interrupted' without one — never both."""
    from dbp_core import runner
    monkeypatch.chdir(ROOT)
    cfg = loads_config(run_toml(n=4, batch=2), base_dir=str(ROOT))
    run = RunStore(tmp_path / "runs").create(cfg)
    if moment == "before results":
        real = runner._results

        def results_then_signal(*a, **kw):
            out = real(*a, **kw)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs on the next bytecode: here, if nothing holds it
            return out
        monkeypatch.setattr(runner, "_results", results_then_signal)
    else:
        real_write = Run.write_results if moment == "after results.json" else Run.write_status

        def write_then_signal(self, *a, **kw):
            out = real_write(self, *a, **kw)
            if moment == "after results.json" or kw.get("state") == "done":
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
            return out
        monkeypatch.setattr(Run, "write_results" if moment == "after results.json" else "write_status",
                            write_then_signal)
    state = run_study(run, cfg)
    status = run.read_status()
    assert status.state == state
    if moment == "before results":
        assert state == "interrupted" and not run.results_path.exists()
    else:
        assert state == "done" and run.results_path.exists()


def _mount_small_disk(mount: Path, size_kb: int) -> bool:
    mount.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mount)],
                          capture_output=True).returncode == 0


def _full_disk_runner(tmp_path: Path) -> str | None:
    """How this machine can give a run a small filesystem: 'mount' (root), 'unshare' (a user and
    mount namespace), or None."""
    probe = tmp_path / "probe"
    if os.geteuid() == 0 and _mount_small_disk(probe, 64):
        subprocess.run(["umount", str(probe)], check=True)
        return "mount"
    if shutil.which("unshare") and subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
             f"mkdir -p {probe} && mount -t tmpfs -o size=64k tmpfs {probe}"], capture_output=True).returncode == 0:
        return "unshare"
    return None


FREE_KB = [4, 8, 12, 24, 40, 96, 160, 260]


def test_a_full_disk_at_every_size_ends_cleanly_and_names_the_file(tmp_path):
    """The run store on a tmpfs of 512 KB, filled so that only FREE_KB are left: whatever the
    moment the disk fills (creating the run, appending metrics, a checkpoint, results.json), the
    command exits 2 (the run could not be created: no folder) or 1 (the run failed, state
    'failed' naming the file with [Errno 28]), or 0 (it fitted) — never a traceback or an orphan."""
    how = _full_disk_runner(tmp_path)
    if how is None:
        pytest.skip("cannot mount a small filesystem here (neither root nor unshare)")
    cfg = write(tmp_path, attack_study_toml(n=16, batch=4, stages=("evaluate", "attacks")))
    results = {}
    for free in FREE_KB:
        mount = tmp_path / f"disk{free}"
        script = (f"mkdir -p {mount} && mount -t tmpfs -o size=512k tmpfs {mount} && "
                  f"head -c $(( (512 - {free}) * 1024 )) /dev/zero > {mount}/filler 2>/dev/null; "
                  f"{sys.executable} -m dbp_core --runs-dir {mount}/runs run {cfg} --no-progress; rc=$?; "
                  f"{sys.executable} -m dbp_core --runs-dir {mount}/runs runs --json > {tmp_path}/list{free}.json; "
                  f"for d in {mount}/runs/*/; do [ -d \"$d\" ] || continue; [ -f \"$d/status.json\" ] && cp \"$d/status.json\" "
                  f"{tmp_path}/status{free}.json || echo ORPHAN $d; done; "
                  f"umount {mount}; exit $rc")
        argv = ["sh", "-c", script] if how == "mount" else \
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script]
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env(), timeout=300)
        err, out = proc.stderr, proc.stdout
        results[free] = proc.returncode
        assert proc.returncode in (0, 1, 2), (free, proc.returncode, err[-2000:])
        assert "Traceback" not in err and "ORPHAN" not in out, (free, err[-2000:], out)
        listed = json.loads((tmp_path / f"list{free}.json").read_text())
        if proc.returncode == 2:
            assert listed == [], (free, listed)
            assert "No space left on device" in err and "[Errno 28]" in err and "/runs/" in err, (free, err)
        elif proc.returncode == 1:
            status = json.loads((tmp_path / f"status{free}.json").read_text())
            assert status["state"] == "failed" and "[Errno 28]" in status["message"], status
            assert f"{mount}/runs/" in status["message"], status  # names the file
        else:
            assert listed[0]["state"] == "done"
    assert 2 in results.values() and 1 in results.values(), results  # both ends were reached
