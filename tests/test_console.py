"""Console: its Textual-free state (console.state: aggregation, tolerant readers, form validation)
and pilot tests of the Textual app, including a real `dbp run` launched from the UI, watched live,
cancelled and resumed."""
from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from console.app import ConsoleApp
from console.launcher import Job, Launcher, run_command
from console.messages import ChangeParallel, WatchRun
from console.state.experiments import (ConfigForm, attack_kinds, default_save_name, experiment_name_for,
                                      field_help, grid_key, list_experiments, parse_value, set_path, toml_literal)
from console.state.format import fmt_diff, fmt_eta, fmt_pct, fmt_time
from console.state.monitor import RunMonitor, results_summary
from console.state.runs import (audit_of, compare_results, compare_runs, export_csv, filter_rows, run_rows,
                                sort_rows, trash_run)
from console.state.sweeps import sweep_snapshot
from dbp_core.results import EXPORT_COLUMNS, read_run, running_runs
from dbp_core.store import Run, RunLocked, RunStatus, read_metrics
from tests.conftest import console_toml
from tests.helpers.console import A1, B2, C3, D4, DATA, F6, REPO, SWEEP, screen_is, until

SIZE = (100, 30)


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


STATES = ["done", "interrupted", "interrupted", "failed", "done", "done", "done"]  # the no-status dir is skipped


def test_run_rows_sort_compare_and_export(tmp_path):
    rows = run_rows(DATA / "runs")
    assert [r["state"] for r in rows] == STATES
    assert rows[0]["headline"] == "single/dwbox-linf 20.8%" and rows[0]["progress"] == "attacks 48/48"
    assert isinstance(rows[0]["view"].status, RunStatus)
    assert [r["point"] for r in rows[-2:]] == ["purifier.t_star=0.1", "purifier.t_star=0.2"]
    assert rows[-1]["group"] == SWEEP and rows[4]["source"].endswith("attack-tiny.toml")
    by_acc = sort_rows(rows, "accuracy", reverse=True)
    assert by_acc[-1]["accuracy"] is None and by_acc[0]["accuracy"] >= by_acc[1]["accuracy"]  # missing values last
    assert [r["experiment"] for r in sort_rows(rows, "experiment")][-1] == "quickstart"
    header, table = compare_results(rows[:2])
    assert header[3:] == [rows[0]["id"], rows[1]["id"]]
    single_dw = next(t for t in table if t[1] == "single" and t[2] == "dwbox-linf")
    assert single_dw[3].startswith("20.8%") and single_dw[4] == "-"
    out = export_csv(rows, tmp_path / "x.csv")
    with open(out, newline="") as fh:
        reader = csv.DictReader(fh)
        got = list(reader)
    # dbp export's columns, then the run's settings: its source, the row's attack, the frozen config
    assert tuple(reader.fieldnames[:len(EXPORT_COLUMNS)]) == EXPORT_COLUMNS
    for col in ("source", "group", "attack.eps", "attack.iterations", "attack.eot", "config.purifier.t_star",
                "config.data.n_examples", "config.seed"):
        assert col in reader.fieldnames, col
    assert not any(c.startswith("config.attacks") for c in reader.fieldnames)  # per row: attack.*
    assert len(got) == 4 * 4 + 3 and {g["state"] for g in got} == {"done", "interrupted", "failed"}
    f6_pgd = next(g for g in got if g["run_id"] == F6 and g["attack"] == "pgd-eot-linf")
    assert f6_pgd["attack.eps"] == "0.2" and f6_pgd["attack.eot"] == "2" and f6_pgd["config.purifier.t_star"] == "0.2"
    assert f6_pgd["source"] == "tests/data/console_runs/experiments/attack-tiny.toml"
    assert next(g for g in got if g["run_id"] == rows[-1]["id"])["config.purifier.t_star"] == "0.2"
    # the same lines and columns as `dbp export` of that run
    from dbp_core import cli
    assert cli.main(["--runs-dir", str(DATA / "runs"), "export", F6, "--csv", str(tmp_path / "cli.csv")]) == 0
    with open(tmp_path / "cli.csv", newline="") as fh:
        mine = [{k: v for k, v in g.items() if v != ""} for g in got if g["run_id"] == F6]
        assert [{k: v for k, v in g.items() if v != ""} for g in csv.DictReader(fh)] == mine


def test_filter_rows_by_name_state_and_words():
    rows = run_rows(DATA / "runs")
    assert [r["id"] for r in filter_rows(rows, "name:quick")] == [D4]
    assert [r["state"] for r in filter_rows(rows, "state:interr")] == ["interrupted", "interrupted"]
    assert len(filter_rows(rows, "state:done state:failed")) == 5
    assert [r["id"] for r in filter_rows(rows, "t_star=0.2")] == ["20250107-100500-attack-tiny-h8h8h8"]
    assert [r["id"] for r in filter_rows(rows, "name:attack dwbox-linf 8.3%")] == [F6]  # every term must match
    assert filter_rows(rows, "") == rows and filter_rows(rows, "nothing-like-this") == []


def test_compare_shows_settings_that_differ_and_paired_differences():
    """a1 (eps 0.1) vs f6 (eps 0.2): the settings that differ, and f6 − a1 per accuracy row on the
    same 24 examples, equal to dbp_core.stats.paired_difference of their per-example outcomes."""
    from dbp_core.stats import paired_difference
    rows = {r["id"]: r for r in run_rows(DATA / "runs")}
    c = compare_runs([rows[A1], rows[F6]])
    settings = dict(c.settings)
    assert settings["attacks.0.eps"] == ["0.1", "0.2"] and settings["attacks.1.eps"] == ["0.1", "0.2"]
    assert "description" not in settings and "purifier.t_star" not in settings
    (label, lines, why), = c.paired
    assert why is None and label == "run 2 − run 1" and len(lines) == 4
    res = {i: json.loads((DATA / "runs" / i / "results.json").read_text()) for i in (A1, F6)}
    a = res[F6]["stages"]["attacks"]["per_example"]["pgd-eot-linf/0"]["single"]
    b = res[A1]["stages"]["attacks"]["per_example"]["pgd-eot-linf/0"]["single"]
    expected = paired_difference(a, b)
    pgd = next(line for line in lines if line[1] == "single" and line[2] == "pgd-eot-linf")
    assert pgd[3:6] == [fmt_pct(8 / 24), fmt_pct(12 / 24), fmt_diff(expected["diff"])]
    assert pgd[6] == f"[{fmt_diff(expected['ci_low'])}, {fmt_diff(expected['ci_high'])}]" and pgd[7] == "24"
    # no shared examples: a different data selection is said, not paired
    (_, lines, why), = compare_runs([rows[A1], rows[D4]]).paired
    assert lines == [] and "data.dataset differs" in why


def test_results_summary_of_a_finished_run():
    """The monitor's panel of a done run: headline, PGD-EOT vs DW-box, the audit flags (results.json
    'audit', the attacks issue's schema), every row with its interval and meaning, the differences."""
    view = read_run(DATA / "runs" / A1)
    assert audit_of(view)["attack"] == "pgd-eot-linf"
    s = results_summary(view)
    assert s.headline == "single/dwbox-linf 20.8% [2.8%, 37.8%]"
    assert s.versus == ["pgd-eot-linf 50.0% vs dwbox-linf 20.8%: " + s.differences[-1][1] + " "
                        + s.differences[-1][2]]
    assert s.audit == [(False, "gradient-masking", "loss rises over iterations; no plateau at step 0"),
                       (True, "eot-too-small", "robust accuracy still falls between EOT 1 and 2")]
    assert ("pgd-eot-linf / purified", "75.0%", "[57.0%, 92.0%]", "24",
            "purified, no attack (paired baseline of pgd-eot-linf)") in s.rows
    assert [d[3] for d in s.differences] == ["attack vs no attack", "attack vs no attack", "attack vs attack"]
    assert results_summary(read_run(DATA / "runs" / B2)) is None  # no results.json yet
    assert audit_of(read_run(DATA / "runs" / F6)) is None


def test_sweep_snapshot_plots_accuracy_against_the_swept_value():
    snap = sweep_snapshot(DATA / "runs" / SWEEP)
    assert snap.key == "purifier.t_star" and snap.numeric and snap.view.state == "done"
    assert snap.points_per_line == {"dwbox-linf": 2, "pgd-eot-linf": 2}
    pgd = next(s for s in snap.series if s.label == "pgd-eot-linf")
    assert pgd.xs == [0.1, 0.2] and pgd.ys == pytest.approx([100 * 15 / 24, 100 * 12 / 24])
    assert all(lo <= y <= hi for lo, y, hi in zip(pgd.lo, pgd.ys, pgd.hi))
    assert snap.columns == ["point", "state", "dwbox-linf", "pgd-eot-linf", "run"]
    assert snap.table[0][:2] == ["purifier.t_star=0.1", "done"] and snap.table[0][-1].endswith("g7g7g7")


def test_trash_moves_a_run_and_refuses_a_running_one(tmp_path):
    runs = copy_runs(tmp_path)
    moved = trash_run(runs, B2)
    assert moved == runs / ".trash" / B2 and (moved / "status.json").exists() and not (runs / B2).exists()
    assert B2 not in [r["id"] for r in run_rows(runs)]
    # a run whose lock is held (its process is running it) is refused, and stays
    holder = Run(runs / A1)
    holder.lock()
    with pytest.raises(RunLocked, match="running"):
        trash_run(runs, A1)
    holder.unlock()
    # a run that says 'running' with a live process of this host is refused too
    with live_process() as pid:
        fake_running(runs / F6, pid)
        with pytest.raises(RunLocked, match="cancel it"):
            trash_run(runs, F6)
    assert (runs / A1).is_dir() and (runs / F6).is_dir()
    assert trash_run(runs, A1) == runs / ".trash" / A1


def test_queue_counts_running_runs_of_the_store(tmp_path):
    """max-parallel counts the runs the store says are running, whoever started them (a shell, an
    earlier console): a job queued behind such a run starts only when it has ended."""
    runs = copy_runs(tmp_path)
    launcher = Launcher(runs, cwd=REPO, max_parallel=1)
    with live_process() as pid:
        fake_running(runs / F6, pid)
        assert running_runs(runs) == [F6]
        job = Job(label="x", cmd=[sys.executable, "-c", "pass"])
        launcher.jobs.append(job)
        launcher.tick()
        assert job.state == "queued" and launcher.busy() == 1
        launcher.max_parallel = 2
        launcher.tick()
        assert job.state == "running"  # one slot left beside the shell's run
        launcher.max_parallel = 1
        other = Job(label="y", cmd=[sys.executable, "-c", "pass"])
        launcher.jobs.append(other)
        launcher.tick()
        assert other.state == "queued"
    job.proc.wait()
    t0 = time.monotonic()
    while other.state == "queued":  # the shell's run has ended (its process is gone): the queue moves
        launcher.tick()
        assert time.monotonic() - t0 < 60, "the queued job never started"
        time.sleep(0.05)
    other.proc.wait()


@contextlib.contextmanager
def live_process():
    """A process of this host that lives until the block ends (the pid of a 'running' run)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def fake_running(run: Path, pid: int) -> None:
    """status.json of ``run`` says it is running in process ``pid`` of this host."""
    import socket
    from dbp_core.store.lock import proc_start as _proc_start
    status = json.loads((run / "status.json").read_text())
    status.update(state="running", pid=pid, host=socket.gethostname(), proc_start=_proc_start(pid))
    (run / "status.json").write_text(json.dumps(status))


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


def test_set_path_creates_tables_indexes_lists_and_removes():
    data = {"attacks": [{"kind": "pgd-eot", "eps": 0.1}], "data": 3}
    set_path(data, ("purifier", "t_star"), 0.3)  # a table created on the way
    set_path(data, ("attacks", 0, "eps"), 0.2)  # an integer indexes the list
    set_path(data, ("data", "n_examples"), 8)  # a value in the way is replaced by a table
    assert data == {"attacks": [{"kind": "pgd-eot", "eps": 0.2}], "data": {"n_examples": 8},
                    "purifier": {"t_star": 0.3}}
    set_path(data, ("attacks", 0, "eps"), None)
    set_path(data, ("audit", "examples"), None)  # removing what is not there creates nothing
    assert data == {"attacks": [{"kind": "pgd-eot"}], "data": {"n_examples": 8}, "purifier": {"t_star": 0.3}}


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


def test_save_as_keeps_comments_tables_and_order_and_sets_the_name(tmp_path):
    """tomlkit round trip: the saved file is the original with only the edited lines changed —
    comments kept, [[attacks]] still an array of tables, key order kept — and `name` follows the
    new file's name, so its runs are not all called after the original."""
    src = REPO / "experiments" / "quickstart.toml"
    shutil.copy(src, tmp_path / "quickstart.toml")
    form = ConfigForm(tmp_path / "quickstart.toml")
    fields = {f.path: f for _, fs in form.sections() for f in fs}
    form.set_text(fields["purifier.t_star"], "0.25")
    form.set_text(fields["attacks[1].iterations"], "")  # back to the default: the key goes
    saved = form.save_as(tmp_path / "my quickstart.toml")
    before, after = src.read_text().splitlines(), saved.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert changed[0] == ('name = "quickstart"', 'name = "my-quickstart"')
    assert changed[1][0].startswith("t_star = 0.2 ") and changed[1][1].startswith("t_star = 0.25 ")
    assert changed[1][1].endswith("# DiffPure's CIFAR-10 default is 0.1; 8x8 digits need a little more noise")
    assert len(after) == len(before) - 1 and after.count("[[attacks]]") == 2 and "attacks = [" not in saved.read_text()
    assert [line for line in before if line.startswith("#")] == [line for line in after if line.startswith("#")]
    assert ConfigForm(saved).validate()
    assert default_save_name(tmp_path / "quickstart.toml", tmp_path) == "quickstart-2.toml"
    (tmp_path / "quickstart-2.toml").write_text("")
    assert default_save_name(tmp_path / "quickstart-2.toml", tmp_path) == "quickstart-3.toml"
    assert experiment_name_for("a b/c.toml") == "c" and experiment_name_for("x y.toml") == "x-y"


def test_attacks_are_added_from_the_registry_templates_and_removed(tmp_path, monkeypatch):
    from dbp_core.attacks import registry
    form = ConfigForm(DATA / "experiments" / "attack-tiny.toml")
    kinds = [k for k, _ in attack_kinds()]
    assert kinds == list(registry.KINDS)
    for kind in kinds:  # every kind's template makes a valid entry
        i = form.add_attack(kind)
        form.set_value(("attacks", i, "name"), f"new-{kind}")
        assert form.validate(), (kind, form.errors, form.general_errors)
        assert form.data["attacks"][i]["kind"] == kind
    assert form.attack_count() == 2 + len(kinds)
    form.remove_attack(0)
    assert form.attack_count() == 1 + len(kinds) and form.data["attacks"][0]["kind"] == "dwbox"
    for _ in range(form.attack_count()):
        form.remove_attack(0)
    assert "attacks" not in form.data and "[[attacks]]" not in form.dumps()
    # a kind registered later appears with no console change
    extra = registry.AttackKind("pgd-new", "a new kind", "stochastic", 4, "pgd", registry.KINDS["pgd"].build,
                                template={"step": 0.01})
    monkeypatch.setitem(registry.KINDS, "pgd-new", extra)
    assert ("pgd-new", "a new kind") in attack_kinds()
    assert registry.attack_template("pgd-new") == {"kind": "pgd-new", "norm": "linf", "iterations": 20, "eot": 4,
                                                   "step": 0.01}


def test_field_help_comes_from_the_schema():
    from dbp_core.config import PurifierConfig
    form = ConfigForm(DATA / "experiments" / "attack-tiny.toml")
    f = next(f for _, fs in form.sections() for f in fs if f.path == "purifier.sampler")
    text = field_help(f, "bad value")
    assert text.splitlines()[0] == "purifier.sampler" and "one of: ddpm, ddim" in text
    assert PurifierConfig.model_fields["sampler"].description in text and text.endswith("✗ bad value")
    eps = next(f for _, fs in form.sections() for f in fs if f.path == "attacks[1].eps")
    assert field_help(eps).splitlines()[0] == "attacks.1.eps" == grid_key(eps.path)


def test_experiment_name_from_run_ids_of_any_token_length(tmp_path):
    """A run without a status names its experiment after its id (dbp_core.store.parse_run_id)."""
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


def text_of(widget, width: int = 160) -> str:
    """What a Static shows, as plain text (markup, Rich tables and groups rendered)."""
    import io

    from rich.console import Console
    from rich.text import Text
    console = Console(file=io.StringIO(), width=width, color_system=None)
    content = widget.content
    console.print(Text.from_markup(content) if isinstance(content, str) else content)
    return console.file.getvalue()


def test_navigate_screens_help_and_palette(tmp_path):
    async def go():
        app = make_app(tmp_path, copy_runs(tmp_path))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: screen_is(app, "ExperimentsScreen"), what="experiments")
            await pilot.press("f4")
            await until(pilot, lambda: screen_is(app, "RunsScreen") and len(app.screen.rows) == 7, what="runs table")
            runs = app.screen
            await pilot.press("s")  # next sort key
            assert runs.sort_key == "state"
            await pilot.press("space", "down", "space", "v")
            await until(pilot, lambda: screen_is(app, "CompareScreen"), what="compare")
            assert len(app.screen.rows) == 2
            await pilot.press("escape")
            await until(pilot, lambda: screen_is(app, "RunsScreen"), what="back")
            await pilot.press("x")
            await until(pilot, lambda: runs.last_export is not None, what="export")
            assert runs.last_export.is_absolute() and len(list(csv.DictReader(open(runs.last_export)))) >= 2
            # the absolute path stays on screen after the toast has gone
            app.clear_notifications()
            await until(pilot, lambda: str(runs.last_export) in text_of(runs.query_one("#run-detail")).replace("\n", ""),
                        what="export path kept")
            await pilot.press("f3")
            await until(pilot, lambda: screen_is(app, "MonitorScreen") and app.screen.polls > 0, what="monitor")
            await pilot.press("plus")  # the screen asks, the app changes its launcher
            await until(pilot, lambda: app.launcher.max_parallel == 2, what="+parallel")
            await until(pilot, lambda: "parallel ≤ 2" in text_of(app.screen.query_one("#queue")), what="queue")
            app.post_message(ChangeParallel(-5))
            await until(pilot, lambda: app.launcher.max_parallel == 1, what="never below 1")
            await pilot.press("f1")
            await until(pilot, lambda: screen_is(app, "HelpScreen"), what="help")
            await pilot.press("escape")
            await pilot.press("ctrl+p")
            await until(pilot, lambda: screen_is(app, "CommandPalette"), what="palette")
            await pilot.press(*"Runs", "enter")
            await until(pilot, lambda: screen_is(app, "RunsScreen"), what="palette → runs")
    asyncio.run(go())


def _exp_dir(tmp_path, *names: str) -> Path:
    exp = tmp_path / "exp"
    exp.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(DATA / "experiments" / "attack-tiny.toml", exp / name)
    return exp


def on_form(tmp_path, exp: Path, script, ready=lambda scr: scr.valid, what="valid form"):
    """Run ``await script(app, pilot, scr)`` on an app over the experiments folder ``exp`` (and an
    empty run store) once its experiments screen ``scr`` has loaded a form and ``ready(scr)``."""
    async def go():
        app = make_app(tmp_path, tmp_path / "runs", exp)
        async with app.run_test(size=SIZE) as pilot:
            scr = app.screen
            await until(pilot, lambda: scr.form is not None and ready(scr), what=what)
            await script(app, pilot, scr)
    asyncio.run(go())


def test_edit_field_to_invalid_value_shows_error_at_the_field(tmp_path):
    exp = _exp_dir(tmp_path, "attack-tiny.toml")

    async def script(app, pilot, scr):
        inp = scr.query_one("#f-purifier-t_star")
        inp.focus()
        inp.value = ""
        await pilot.press(*"5")
        row = scr.query_one("#f-purifier-t_star-row")
        await until(pilot, lambda: "invalid" in row.classes, what="error shown")
        assert "less than or equal to 1" in text_of(scr.query_one("#f-purifier-t_star-error"))
        assert not scr.valid
        await pilot.press("ctrl+l")  # launching an invalid experiment is refused, and says why
        await until(pilot, lambda: any("has errors" in n.message for n in app._notifications), what="refusal")
        assert app.launcher.jobs == []
        await pilot.press("backspace", *"0.3")
        await until(pilot, lambda: scr.valid and "invalid" not in row.classes, what="error cleared")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: screen_is(app, "SaveAsDialog"), what="save-as dialog")
        assert app.screen.query_one("#save-as-name").value == "attack-tiny-2.toml"  # from the file's name
        app.screen.query_one("#save-as-name").value = "edited.toml"
        await pilot.press("enter")
        await until(pilot, lambda: (exp / "edited.toml").exists(), what="saved")
        text = (exp / "edited.toml").read_text()
        assert "t_star = 0.3" in text and 'name = "edited"' in text
        await until(pilot, lambda: [f.path.name for f in scr.files] == ["attack-tiny.toml", "edited.toml"],
                    what="list refreshed")
    on_form(tmp_path, exp, script)


def test_save_as_then_launch_runs_the_saved_file(tmp_path):
    """Save as used to switch the form to another file a moment later (the list was refilled and
    its index set before the new items were in it), so the next Ctrl+L ran an experiment the user
    did not mean to. Now the saved file stays the form's file and is the one launched, with its
    own name."""
    exp = _exp_dir(tmp_path, "a.toml", "z.toml")

    async def script(app, pilot, scr):
        scr.query_one("#f-purifier-t_star").value = "0.25"
        await until(pilot, lambda: scr.dirty and scr.valid, what="edited and valid")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: screen_is(app, "SaveAsDialog"), what="dialog")
        app.screen.query_one("#save-as-name").value = "m.toml"
        await pilot.press("enter")
        lv = scr.query_one("#exp-list")
        saved = exp / "m.toml"
        await until(pilot, lambda: screen_is(app, "ExperimentsScreen") and saved.exists()
                    and [f.path.name for f in scr.files] == ["a.toml", "m.toml", "z.toml"]
                    and lv.highlighted_child is not None and lv.highlighted_child.name == str(saved),
                    what="saved file listed and highlighted")
        for _ in range(5):  # events of the refilled list are handled: the form stays on the saved file
            await pilot.pause()
        assert scr.form.path == saved and not scr.dirty and scr.form.data["name"] == "m"
        await until(pilot, lambda: scr._checked, what="validation")
        await pilot.press("ctrl+l")
        await until(pilot, lambda: len(app.launcher.jobs) == 1, what="launch")
        job = app.launcher.jobs[0]
        assert Path(job.cmd[job.cmd.index("run") + 1]) == saved.resolve() and job.label == "m"
        await until(pilot, lambda: job.run_id is not None, what="run id", timeout=60)
        app.launcher.cancel_job(job)
        await until(pilot, lambda: job.state == "exited", what="cancelled", timeout=60)
        status = json.loads((tmp_path / "runs" / job.run_id / "status.json").read_text())
        assert status["source"] == str(saved.resolve()) and status["experiment"] == "m"
    on_form(tmp_path, exp, script, ready=lambda scr: scr.valid and scr.form.path.name == "a.toml", what="a.toml")


def test_error_summary_names_fields_f8_jumps_and_help_panel(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copy(DATA / "experiments" / "broken.toml", exp)

    async def script(app, pilot, scr):
        summary = text_of(scr.query_one("#exp-errors"))
        assert "1 error" in summary and "purifier.t_star" in summary and "F8" in summary
        await pilot.press("f8")
        await until(pilot, lambda: app.focused is not None and app.focused.id == "f-purifier-t_star",
                    what="F8 focuses the field")
        from dbp_core.config import PurifierConfig
        await until(pilot, lambda: PurifierConfig.model_fields["t_star"].description.split()[0]
                    in text_of(scr.query_one("#field-help")), what="help of the focused field")
        assert "purifier.t_star" in text_of(scr.query_one("#field-help"))
        scr.query_one("#f-data-batch_size").focus()
        await until(pilot, lambda: "data.batch_size" in text_of(scr.query_one("#field-help")), what="help follows")
    on_form(tmp_path, exp, script, ready=lambda scr: scr._checked, what="validated")


def test_attacks_added_from_the_registry_and_removed_in_the_form(tmp_path):
    exp = _exp_dir(tmp_path, "attack-tiny.toml")

    async def script(app, pilot, scr):
        await pilot.press("ctrl+n")
        await until(pilot, lambda: screen_is(app, "PickKindDialog"), what="kinds")
        kinds = app.screen.query_one("#kind-list")
        kinds.highlighted = [o.id for o in kinds.options].index("bpda")
        await pilot.press("enter")
        await until(pilot, lambda: scr.form.attack_count() == 3 and scr.query("#f-attacks-2-kind"), what="added")
        assert scr.query_one("#f-attacks-2-kind").value == '"bpda"'
        await until(pilot, lambda: scr._checked and scr.valid, what="still valid")
        scr.query_one("#remove-attack-0").press()
        await until(pilot, lambda: scr.form.attack_count() == 2 and not scr.query("#f-attacks-2-kind"),
                    what="removed")
        assert [a["kind"] for a in scr.form.data["attacks"]] == ["dwbox", "bpda"]
        scr.query_one("#f-attacks-1-eps").focus()
        await until(pilot, lambda: scr.focused_field == "attacks[1].eps", what="focused")
        await pilot.press("ctrl+d")
        await until(pilot, lambda: scr.form.attack_count() == 1, what="removed by key")
        assert [a["kind"] for a in scr.form.data["attacks"]] == ["dwbox"]
    on_form(tmp_path, exp, script)


def test_dialog_cancel_buttons_answer_as_escape_does(tmp_path):
    """Each dialog's cancel button (Cancel, or No) dismisses it with the dialog's cancel answer."""
    from console.screens.dialogs import ConfirmDialog, SaveAsDialog, SweepDialog

    async def go():
        app = make_app(tmp_path, tmp_path / "runs", _exp_dir(tmp_path, "attack-tiny.toml"))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: screen_is(app, "ExperimentsScreen"), what="experiments")
            answers = []
            for dialog, cancel in ((SaveAsDialog("a.toml", "exp"), "#save-cancel"),
                                   (SweepDialog("purifier.t_star", "0.2"), "#sweep-cancel"),
                                   (ConfirmDialog("Delete?"), "#confirm-no")):
                app.push_screen(dialog, answers.append)
                # mounted: its on_mount has focused one of its widgets
                await until(pilot, lambda: app.screen is dialog and app.focused is not None
                            and app.focused.screen is dialog, what=type(dialog).__name__)
                dialog.query_one(cancel).press()
                await until(pilot, lambda: app.screen is not dialog, what="dismissed")
            assert answers == [None, None, False]
            confirm = ConfirmDialog("Delete?")
            app.push_screen(confirm, answers.append)
            await until(pilot, lambda: app.screen is confirm and app.focused is not None
                        and app.focused.screen is confirm, what="confirm")
            confirm.query_one("#confirm-yes").press()
            await until(pilot, lambda: len(answers) == 4, what="confirmed")
            assert answers[-1] is True
    asyncio.run(go())


def _tiny_exp(tmp_path, n=16, classifier="tiny_classifier") -> Path:
    exp = tmp_path / "exp"
    exp.mkdir(exist_ok=True)
    (exp / "console-tiny.toml").write_text(console_toml(n=n, classifier=classifier))
    return exp


def test_launch_real_run_and_watch_plot_grow(tmp_path):
    """A real run launched from the form: the monitor shows its first points while it is still
    running (the run waits at a gate until the test has seen them: no timing), then all of them."""
    exp = _tiny_exp(tmp_path, n=16, classifier="gated_classifier")
    runs = tmp_path / "runs"
    gate = tmp_path / "gate"
    gate.touch()
    import os
    env = {**os.environ, "DBP_TEST_GATE": str(gate), "DBP_TEST_GATE_RUNS": str(runs)}

    async def go():
        app = ConsoleApp(exp, runs, cwd=REPO, poll_interval=0.2, env=env)
        async with app.run_test(size=SIZE) as pilot:
            scr = app.screen
            await until(pilot, lambda: scr.valid, what="valid form")
            await pilot.press("ctrl+l")
            await until(pilot, lambda: screen_is(app, "MonitorScreen"), what="monitor")
            mon = app.screen
            plot = mon.query_one("#plot-success")
            snap = lambda: mon.snapshots.get(mon.current)  # noqa: E731
            await until(pilot, lambda: plot.points > 0 and snap() is not None and snap().state == "running",
                        timeout=60, what="first points of the running run")
            first = plot.points
            gate.unlink()
            await until(pilot, lambda: snap().state == "done" and plot.points == 6, timeout=60, what="run done")
            assert 0 < first < 6
            assert len(mon.query_one("#plot-loss").series) == 2  # one line per attack
            job = app.launcher.jobs[0]
            assert job.run_id == mon.current and job.cmd[:3] == [job.cmd[0], "-m", "dbp_core"]
            events = read_metrics(runs / job.run_id / "metrics.jsonl")[0]
            assert sum(e["kind"] == "attack_iter" for e in events) == 2 * 2 * 3
            await until(pilot, lambda: job.state == "exited", what="process exit")
            assert job.returncode == 0
            # the finished run's results: headline, PGD-EOT vs DW-box, the rows with what they measure
            await until(pilot, lambda: "headline" in text_of(mon.query_one("#mon-results")), what="results")
            shown = text_of(mon.query_one("#mon-results"))
            assert "pgd-eot-linf" in shown and " vs dwbox-linf" in shown and "attacked, one purification" in shown
    asyncio.run(go())


def test_launch_shows_the_new_run_at_once_and_alone(tmp_path):
    """After a launch the monitor shows the launch (not the previous run) until its run exists,
    then that run alone: earlier runs are no longer ticked."""
    exp = _tiny_exp(tmp_path, n=8)
    runs = copy_runs(tmp_path)

    async def go():
        app = make_app(tmp_path, runs, exp)
        async with app.run_test(size=SIZE) as pilot:
            app.post_message(WatchRun(A1))
            await until(pilot, lambda: screen_is(app, "MonitorScreen") and app.screen.query_one("#plot-success").points
                        == 10, what="a1 shown")
            mon = app.screen
            await pilot.press("f2")
            scr = app.screen
            await until(pilot, lambda: screen_is(app, "ExperimentsScreen") and scr.valid, what="form")
            await pilot.press("ctrl+l")
            seen = []

            def new_run_shown():
                if not screen_is(app, "MonitorScreen"):
                    return False
                status = text_of(mon.query_one("#mon-status"))
                seen.append((status, mon.query_one("#plot-success").points))
                job = app.launcher.jobs[0] if app.launcher.jobs else None
                return job is not None and job.run_id is not None and mon.current == job.run_id
            await until(pilot, new_run_shown, timeout=60, what="the new run")
            starting = [s for s in seen if "starting" in s[0] or "queued" in s[0]]
            assert starting and seen[0] == starting[0], seen[:3]  # the first frame is the launch
            assert all("a1a1a1" not in status and points == 0 for status, points in starting)
            assert not any("a1a1a1" in status for status, _ in seen)
            assert list(mon.query_one("#run-list").selected) == [app.launcher.jobs[0].run_id]
            app.launcher.cancel_job(app.launcher.jobs[0])
            await until(pilot, lambda: app.launcher.jobs[0].state == "exited", timeout=60, what="cancelled")
    asyncio.run(go())


def test_finished_run_turns_green_in_the_list(tmp_path):
    """A run's state mark follows its status: running (▶, yellow) becomes done (✓, green)."""
    runs = copy_runs(tmp_path)

    def prompt(mon, run_id):
        from rich.text import Text
        return Text.from_markup(str(mon.query_one("#run-list").get_option(run_id).prompt)).plain

    async def go(pid):
        app = make_app(tmp_path, runs)
        async with app.run_test(size=SIZE) as pilot:
            app.post_message(WatchRun(F6))
            await until(pilot, lambda: screen_is(app, "MonitorScreen") and F6 in app.screen.known_ids, what="list")
            mon = app.screen
            await until(pilot, lambda: prompt(mon, F6).startswith("▶"), what="running mark")
            status = json.loads((runs / F6 / "status.json").read_text())
            status["state"] = "done"
            (runs / F6 / "status.json").write_text(json.dumps(status))
            await until(pilot, lambda: prompt(mon, F6).startswith("✓"), what="done mark")
            assert "done" in text_of(mon.query_one("#mon-status"))
    with live_process() as pid:
        fake_running(runs / F6, pid)
        asyncio.run(go(pid))


def test_overlay_numbers_match_the_legend_and_clear(tmp_path):
    runs = copy_runs(tmp_path)

    async def go():
        app = make_app(tmp_path, runs)
        async with app.run_test(size=SIZE) as pilot:
            app.post_message(WatchRun(B2))
            app.post_message(WatchRun(A1))
            await until(pilot, lambda: screen_is(app, "MonitorScreen") and app.screen.current == A1, what="a1")
            mon = app.screen
            sl = mon.query_one("#run-list")
            await until(pilot, lambda: list(sl.selected) == [A1], what="a watch replaces the overlay")
            sl.select(B2)
            sl.select(F6)
            plot = mon.query_one("#plot-success")
            await until(pilot, lambda: plot.points == 30, what="three runs overlaid")
            overlay = mon.overlay()
            assert sorted(overlay) == sorted([A1, B2, F6])
            legend = text_of(mon.query_one("#legend"))
            labels = {label.split(":")[0] for label, _, _ in plot.series}
            assert labels == {"1", "2", "3"}
            for n, run_id in enumerate(overlay, 1):  # number n: in the list, in the legend, in the plot
                assert f"[b reverse] {n} [/]" in str(sl.get_option(run_id).prompt)
                assert f" {n}  attack-tiny {run_id.rsplit('-', 1)[1][:6]}" in legend
                assert sorted(lab for lab, _, _ in plot.series if lab.startswith(f"{n}:")) == \
                    [f"{n}:dwbox-linf", f"{n}:pgd-eot-linf"]
            await pilot.press("x")
            await until(pilot, lambda: list(sl.selected) == [mon.current] and plot.points == 10, what="cleared")
            assert text_of(mon.query_one("#legend")).strip() == ""
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
            if expect_jobs:
                await until(pilot, lambda: len(app.launcher.jobs) == 1, what="launched after validation")
            else:
                await until(pilot, lambda: any("has errors" in n.message for n in app._notifications),
                            what="refused after validation")
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
            await until(pilot, lambda: screen_is(app, "MonitorScreen"), what="monitor")
            mon = app.screen
            snap = lambda: mon.snapshots.get(mon.current) if mon.current else None  # noqa: E731
            await until(pilot, lambda: snap() is not None and snap().state == "running" and snap().points > 0,
                        timeout=60, what="running with points")
            job = app.launcher.jobs[0]
            await pilot.press("c")
            await until(pilot, lambda: snap().state == "interrupted", timeout=60, what="interrupted")
            status = json.loads((runs / job.run_id / "status.json").read_text())
            assert status["state"] == "interrupted"  # written by the run itself on SIGINT
            await until(pilot, lambda: job.state == "exited", what="exit")
            assert job.returncode == 130
            await until(pilot, lambda: "resume" in text_of(mon.query_one("#mon-status")), what="resume hint")
            app.launcher.env = {**os.environ, "DBP_TEST_DELAY": "0"}
            await pilot.press("r")
            await until(pilot, lambda: snap().state == "done", timeout=60, what="resumed run done")
            assert app.launcher.jobs[-1].cmd[-3:-1] == ["resume", job.run_id]
    asyncio.run(go())


def test_monitor_app_survives_broken_run_dirs(tmp_path):
    runs = copy_runs(tmp_path)
    (runs / C3 / "status.json").write_text("")  # empty status too

    async def go():
        app = make_app(tmp_path, runs)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f3")
            mon = app.screen
            await until(pilot, lambda: screen_is(app, "MonitorScreen") and mon.polls > 0, what="monitor")
            sl = mon.query_one("#run-list")
            for run_id in list(mon.known_ids):
                sl.select(run_id)
            # a1, b2, f6 and the sweep's two points: five iterations, two attacks each
            await until(pilot, lambda: mon.query_one("#plot-success").points == 50, what="all runs drawn")
            assert len(mon.snapshots) >= 7
            await pilot.press("f4")  # the runs table names the damaged file
            runs_screen = app.screen
            await until(pilot, lambda: screen_is(app, "RunsScreen") and len(runs_screen.rows) == 7, what="runs table")
            assert runs_screen.rows[-1]["state"] == "damaged"  # no creation time: last
            runs_screen.query_one("#runs-table").move_cursor(row=6)
            await until(pilot, lambda: "is empty" in text_of(runs_screen.query_one("#run-detail")), what="problem shown")
    asyncio.run(go())


def test_runs_filter_delete_config_and_report(tmp_path):
    """Filter the history, delete a run (to .trash/, after a confirmation; never a running run),
    read a run's frozen config, and write and show its report (`dbp report`)."""
    runs = copy_runs(tmp_path)

    async def go():
        app = make_app(tmp_path, runs)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f4")
            scr = app.screen
            await until(pilot, lambda: screen_is(app, "RunsScreen") and len(scr.rows) == 7, what="runs")
            await pilot.press("slash", *"state:done")  # f6 is running here: a1 and the sweep's points
            await until(pilot, lambda: len(scr.rows) == 3 and {r["state"] for r in scr.rows} == {"done"}, what="filter")
            await pilot.press("escape")
            await until(pilot, lambda: len(scr.rows) == 7, what="filter cleared")
            table = scr.query_one("#runs-table")
            table.focus()

            def cursor_to(run_id):
                table.move_cursor(row=[r["id"] for r in scr.rows].index(run_id))
            # a running run is not deleted (no dialog, an error)
            cursor_to(F6)
            await until(pilot, lambda: scr._cursor_id() == F6 and scr._cursor_row()["state"] == "running",
                        what="f6 running")
            await pilot.press("d")
            await until(pilot, lambda: any("is running" in n.message for n in app._notifications), what="refused")
            assert (runs / F6).is_dir() and screen_is(app, "RunsScreen")
            # a finished one: after "y" in the confirmation
            cursor_to(B2)
            await until(pilot, lambda: scr._cursor_id() == B2, what="b2")
            await pilot.press("d")
            await until(pilot, lambda: screen_is(app, "ConfirmDialog"), what="confirmation")
            await pilot.press("n")
            await until(pilot, lambda: screen_is(app, "RunsScreen"), what="kept")
            assert (runs / B2).is_dir()
            await pilot.press("d")
            await until(pilot, lambda: screen_is(app, "ConfirmDialog"), what="confirmation")
            await pilot.press("y")
            await until(pilot, lambda: (runs / ".trash" / B2).is_dir() and len(scr.rows) == 6, what="moved to .trash")
            # the frozen config
            cursor_to(A1)
            await until(pilot, lambda: scr._cursor_id() == A1, what="a1")
            await pilot.press("f")
            await until(pilot, lambda: screen_is(app, "ConfigScreen"), what="config")
            shown = text_of(app.screen.query_one("#config-text"))
            assert "frozen config" in shown and "t_star = 0.2" in shown
            await pilot.press("escape")
            await until(pilot, lambda: screen_is(app, "RunsScreen"), what="back")
            await pilot.press("g")
            await until(pilot, lambda: screen_is(app, "ReportScreen"), what="report")
            rep = app.screen
            await until(pilot, lambda: rep.finished, timeout=120, what="dbp report done")
            assert {p.name for p in rep.figures} == {"accuracy.png", "attack_success.png"}
            assert all(p.exists() for p in rep.figures) and rep.reports == [runs / A1 / "report" / "report.md"]
            assert str(runs / A1 / "report" / "accuracy.png") in text_of(rep.query_one("#report-status"))
    with live_process() as pid:
        fake_running(runs / F6, pid)
        asyncio.run(go())


def test_sweep_launched_from_the_console_completes(tmp_path):
    """Ctrl+W on a field: one run per value, the sweep view opens and ends with two points per
    attack — the curve `dbp report <sweep>` draws."""
    exp = _tiny_exp(tmp_path, n=8)
    runs = tmp_path / "runs"

    async def go():
        app = make_app(tmp_path, runs, exp)
        async with app.run_test(size=SIZE) as pilot:
            scr = app.screen
            await until(pilot, lambda: scr.form is not None and scr.valid, what="valid form")
            scr.query_one("#f-purifier-t_star").focus()
            await until(pilot, lambda: scr.focused_field == "purifier.t_star", what="focused")
            await pilot.press("ctrl+w")
            await until(pilot, lambda: screen_is(app, "SweepDialog"), what="sweep dialog")
            dialog = app.screen
            assert dialog.query_one("#sweep-key").value == "purifier.t_star"
            assert dialog.query_one("#sweep-values").value == "0.2"  # the current value, to extend
            dialog.query_one("#sweep-values").value = "3.0"  # an invalid point is refused before anything runs
            await pilot.press("enter")
            await until(pilot, lambda: screen_is(app, "SweepDialog") and "purifier.t_star = 3.0"
                        in text_of(app.screen.query_one("#sweep-error")), what="refused point")
            assert app.launcher.jobs == []
            app.screen.query_one("#sweep-values").value = "0.1, 0.2"
            await pilot.press("enter")
            await until(pilot, lambda: screen_is(app, "SweepScreen"), timeout=60, what="sweep view")
            view = app.screen
            await until(pilot, lambda: view.snapshot is not None and view.snapshot.view.state == "done"
                        and view.snapshot.points_per_line == {"dwbox-linf": 2, "pgd-eot-linf": 2},
                        timeout=120, what="two points per attack")
            assert view.query_one("#sweep-plot").points == 4
            sweep = view.snapshot.view
            assert [p.point.values for p in sweep.points] == [{"purifier.t_star": 0.1}, {"purifier.t_star": 0.2}]
            assert {p.view.group for p in sweep.points} == {sweep.id}
            job = app.launcher.jobs[0]
            assert job.cmd[job.cmd.index("sweep") + 1:][-2:] == ["--grid", "purifier.t_star=0.1, 0.2"]
            await until(pilot, lambda: job.state == "exited", what="sweep process exit")
            assert job.returncode == 0
    asyncio.run(go())


def test_80x24_keeps_the_footer_keys_and_whole_ids(tmp_path):
    """At 80x24 every screen's footer shows F1-F4 and quit (^q: q types into a focused field), and
    the runs table shows whole run ids."""
    from textual.widgets._footer import FooterKey

    async def go():
        app = make_app(tmp_path, copy_runs(tmp_path))
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.screen.form is not None, what="form")
            for key in ("f2", "f3", "f4"):
                await pilot.press(key)
                await until(pilot, lambda: len(list(app.screen.query(FooterKey))) > 0, what="footer")
                await pilot.pause()
                keys = {k.key: k for k in app.screen.query(FooterKey)}
                for wanted in ("f1", "f2", "f3", "f4", "ctrl+q"):
                    assert wanted in keys, (key, wanted)
                    region = keys[wanted].region
                    assert region.width > 0 and region.right <= 80, (key, wanted, region)
            scr = app.screen
            await until(pilot, lambda: screen_is(app, "RunsScreen") and len(scr.rows) == 7, what="runs")
            table = scr.query_one("#runs-table")
            right = 0
            for column in table.ordered_columns:
                right += column.get_render_width(table)
                if column.key.value == "id":
                    break
            assert right <= 80 and all(table.columns[table.ordered_columns[2].key].content_width >= len(r["id"])
                                       for r in scr.rows)
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
