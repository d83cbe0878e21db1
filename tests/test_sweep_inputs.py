"""Hostile input to sweeps (docs/design.md, "The run folder"): every bad grid, damaged sweep folder or closed
output pipe ends with exit 2 (a closed pipe: a resumable, non-zero exit), a message naming the grid
item, file or field, no traceback and no new or orphan run folder. One test per case:

1. table values in grids (TOML inline tables) where the field takes a table; dates and tables
   elsewhere are refused, naming the grid item;
2. the bad value of a grid is the one named;
3. values are deduplicated by their parsed value (``1,1.0`` is one point), with a note;
4. a cap on the number of points (``--max-points``), a progress line while the points are checked,
   sweep.json written once and the points' runs appended to points.jsonl;
5. ``dbp sweep ... | head -3``: the sweep stops resumable, non-zero, nothing left 'queued';
6. damaged sweep.json / points.jsonl: resume, report, show and export name the field;
7. a point whose run is another point's: named.

Then: every point is preflighted before the first runs, and property tests (Hypothesis) over grid
strings and sweep documents.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dbp_core import cli
from dbp_core.config import dumps_config, load_config
from dbp_core.results import read_sweep
from dbp_core.store import RunStore, toml_value
from tests.conftest import console_toml
from tests.test_bad_inputs import env, folders, main


ROOT = Path(__file__).resolve().parents[1]
T_STAR = "purifier.t_star"


@pytest.fixture()
def experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the tiny plugins are imported as tests.plugins
    path = tmp_path / "sweep-me.toml"
    path.write_text(console_toml(n=4))
    return path


def sweep_of(runs: Path):
    sweep, = RunStore(runs).list_sweeps()
    return sweep


def assert_no_orphan_runs(runs: Path) -> None:
    """Every run of the store ended (done, failed, interrupted): none left 'queued' or 'running'
    (tests.test_bad_inputs.assert_no_orphans, for a store that also holds sweep folders)."""
    for run in RunStore(runs).list():
        status = run.read_status()
        assert status is not None and status.final, (run.path, status)
        assert status.state == "done" or not run.results_path.exists(), run.path


def assert_refused(code: int, err: str, runs: Path, *words: str, before: list[Path] | None = None) -> None:
    """Exit 2, every word in the message, no traceback, and no folder beyond ``before``."""
    assert code == 2, err
    assert "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)
    assert folders(runs) == (before or []), folders(runs)


# =========================================================================== 1. tables (and dates)

def test_table_values_sweep_a_field_that_takes_a_table(tmp_path, experiment, capsys):
    runs = tmp_path / "runs"
    code, out, err = main("--runs-dir", runs, "sweep", experiment, "--no-progress", "--grid",
                          "models.diffusion_config={num_channels=64},{num_channels=128}", capsys=capsys)
    assert code == 0, err
    view = read_sweep(sweep_of(runs).path)
    assert [p.point.values for p in view.points] == [{"models.diffusion_config": {"num_channels": 64}},
                                                     {"models.diffusion_config": {"num_channels": 128}}]
    for p in view.points:
        assert p.state == "done" and p.view.config["models"]["diffusion_config"] == \
            p.point.values["models.diffusion_config"]
    assert "models.diffusion_config={num_channels = 64}" in out  # the point's label, a TOML inline table
    # a whole section as a table
    runs2 = tmp_path / "runs2"
    code, out, err = main("--runs-dir", runs2, "sweep", experiment, "--no-progress", "--grid",
                          'purifier={t_star=0.1, steps=2, grad_mode="full"},{t_star=0.2, steps=2, grad_mode="full"}',
                          capsys=capsys)
    assert code == 0, err
    view = read_sweep(sweep_of(runs2).path)
    assert [p.view.config["purifier"]["t_star"] for p in view.points] == [0.1, 0.2]


@pytest.mark.parametrize("grid,words", [
    (f"{T_STAR}={{a=1}},{{a=2}}", ["purifier.t_star", "{a = 1}", "expected"]),      # a table where a number goes
    (f"{T_STAR}=1979-05-27,1979-05-28", ["purifier.t_star", "1979-05-27", "date"]),  # TOML dates and times
    ("description=07:32:00,x", ["description", "07:32:00", "time"]),
    ("models.diffusion_config={num_channels=1979-05-27T07:32:00Z}", ["1979-05-27T07:32:00", "date"]),
])
def test_tables_and_dates_where_the_field_takes_none_name_the_grid_item(tmp_path, experiment, capsys, grid, words):
    runs = tmp_path / "runs"
    code, _, err = main("--runs-dir", runs, "sweep", experiment, "--grid", grid, capsys=capsys)
    assert_refused(code, err, runs, *words)


# =========================================================================== 2. the bad value named

@pytest.mark.parametrize("grid,bad,good", [
    (f"{T_STAR}=0.1,abc", "abc", "0.1"),
    (f"{T_STAR}=0.1,0.2x,0.3", "0.2x", "0.3"),
    (f"{T_STAR}=0.1,[1", "[1", "0.1"),
    (f"{T_STAR}=0.1,{{a=", "{a=", "0.1"),
    ('attacks.0.eps=0.1,"unclosed', '"unclosed', "0.1"),
])
def test_the_bad_value_of_a_grid_is_the_one_named(tmp_path, experiment, capsys, grid, bad, good):
    runs = tmp_path / "runs"
    code, _, err = main("--runs-dir", runs, "sweep", experiment, "--grid", grid, capsys=capsys)
    assert_refused(code, err, runs, bad, grid.partition("=")[0])
    assert f"'{good}'" not in err and f"={good})" not in err, err


# =========================================================================== 3. duplicates by value

def test_values_equal_once_parsed_are_one_point(tmp_path, experiment, capsys):
    runs = tmp_path / "runs"
    code, _, err = main("--runs-dir", runs, "sweep", experiment, "--no-progress", "--grid", "attacks.0.eot=1,1.0",
                        "--grid", f"{T_STAR}=0.1,1e-1,0.10", capsys=capsys)
    assert code == 0, err
    view = read_sweep(sweep_of(runs).path)
    assert [p.point.values for p in view.points] == [{"attacks.0.eot": 1, T_STAR: 0.1}]
    assert len(RunStore(runs).list()) == 1
    assert "1.0 is the same value as 1" in err and "1e-1 is the same value as 0.1" in err, err
    # a table is the same value whatever the order of its keys; true is not 1
    from dbp_core.config import parse_grid
    notes: list[str] = []
    [(_, values)] = parse_grid(["models.diffusion_config={a=1, b=2},{b=2, a=1},{a=1.0, b=2}"], notes=notes)
    assert values == [{"a": 1, "b": 2}] and len(notes) == 2
    assert parse_grid(["x=true,1,1.0"])[0][1] == [True, 1]


# =========================================================================== 4. cap, progress, appends

def test_a_grid_over_the_cap_is_refused_in_no_time_and_the_cap_can_be_lifted(tmp_path, experiment, capsys):
    runs = tmp_path / "runs"
    values = ",".join(str(round(0.01 + i * 0.0001, 4)) for i in range(100))
    code, _, err = main("--runs-dir", runs, "sweep", experiment, "--grid", f"{T_STAR}={values}",
                        "--grid", f"attacks.0.eps={values}", capsys=capsys)
    assert_refused(code, err, runs, "10000 points", "100 x 100", "--max-points 10000")
    code, _, err = main("--runs-dir", runs, "sweep", experiment, "--grid", f"{T_STAR}=0.1,0.2,0.3",
                        "--max-points", "2", capsys=capsys)
    assert_refused(code, err, runs, "3 points", "--max-points 3")
    # lifted: the points are checked with a progress line, sweep.json is written once, each point's
    # run is appended to points.jsonl
    code, _, err = main("--runs-dir", runs, "sweep", experiment, "--grid", f"{T_STAR}=0.1,0.2", "--max-points", "2",
                        "--no-progress", capsys=capsys)
    assert code == 0, err
    assert "checking points: 2/2" in err, err
    sweep = sweep_of(runs)
    manifest = json.loads(sweep.manifest_path.read_text())
    assert "points" not in manifest and manifest["schema"] == "dbp-lab.sweep/2"
    created = sweep.manifest_path.stat()
    lines = [json.loads(line) for line in (sweep.path / "points.jsonl").read_text().splitlines()]
    runs_of = {p.point.index: p.point.run for p in read_sweep(sweep.path).points}
    assert [(x["index"], x["run"]) for x in lines] == [(0, runs_of[0]), (1, runs_of[1])]
    assert lines[1]["values"] == {T_STAR: 0.2}
    assert sweep.manifest_path.stat().st_mtime_ns == created.st_mtime_ns  # never rewritten
    assert cli.main(["--runs-dir", str(runs), "resume", sweep.id]) == 0  # nothing left to run
    assert sweep.manifest_path.stat().st_mtime_ns == created.st_mtime_ns


# =========================================================================== 5. a closed output pipe

@pytest.mark.parametrize("merged", [False, True], ids=["stdout", "stdout+stderr"])
def test_a_closed_output_pipe_stops_the_sweep_resumable(tmp_path, experiment, merged):
    runs = tmp_path / "runs"
    experiment.write_text(console_toml(n=4, classifier="slow_classifier"))
    proc = subprocess.Popen([sys.executable, "-m", "dbp_core", "--runs-dir", str(runs), "sweep", str(experiment),
                             "--grid", f"{T_STAR}=0.1,0.2,0.3", "--no-progress"], cwd=ROOT,
                            env=env(DBP_TEST_DELAY="0.05"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merged else subprocess.PIPE, text=True)
    head = [proc.stdout.readline() for _ in range(3)]  # `| head -3`
    proc.stdout.close()
    err = "" if merged else proc.stderr.read()
    proc.wait(timeout=300)
    assert proc.returncode == cli.EXIT_INTERRUPTED, (head, err)
    assert "Traceback" not in err, err
    sweep = sweep_of(runs)
    if not merged:
        assert f"dbp resume {sweep.id}" in err, err
    states = [p.state for p in read_sweep(sweep.path).points]
    assert "running" not in states and "queued" not in states, states
    assert_no_orphan_runs(runs)
    assert cli.main(["--runs-dir", str(runs), "resume", sweep.id, "--no-progress"]) == 0
    assert [p.state for p in read_sweep(sweep.path).points] == ["done"] * 3
    assert len(RunStore(runs).list()) == 3  # one run per point: nothing made twice
    assert_no_orphan_runs(runs)


# =========================================================================== 6. damaged sweep files

SWEEP_ID = "sweep-20250101-000000-console-tiny-0a0a0a0a0a"


def v1_sweep(runs: Path, experiment: Path, damage=None, runs_of=None) -> Path:
    """A sweep folder as dbp wrote them before points.jsonl (schema 1: the points and their runs in
    sweep.json), damaged by ``damage(manifest)`` (it may return the new manifest)."""
    folder = runs / SWEEP_ID
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(dumps_config(load_config(experiment), absolute_paths=True))
    values = [0.1, 0.2]
    manifest = {"schema": "dbp-lab.sweep/1", "id": SWEEP_ID, "experiment": "console-tiny", "source": str(experiment),
                "created": 1.7e9, "overrides": [], "grid": [{"key": T_STAR, "values": values}],
                "points": [{"index": i, "values": {T_STAR: v}, "run": (runs_of or {}).get(i)}
                           for i, v in enumerate(values)]}
    if damage is not None:
        manifest = damage(manifest) or manifest
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (folder / "sweep.json").write_text(text)
    return folder


def _point(field, value):
    def damage(m):
        m["points"][0][field] = value
    return damage


def _value(value):
    def damage(m):
        m["points"][0]["values"][T_STAR] = value
    return damage


V1_DAMAGES = {  # name: (damage, the words the message must hold)
    "point-a-string": (lambda m: m["points"].__setitem__(0, "x"), ["points[0]", "string"]),
    "string-index": (_point("index", "0"), ["points[0].index"]),
    "index-out-of-range": (_point("index", 5), ["points[0].index", "5"]),
    "values-a-list": (_point("values", [0.1]), ["points[0].values", "list"]),
    "value-a-table": (_value({"a": 1}), ["points[0].values"]),
    "value-null": (_value(None), ["points[0].values"]),
    "run-a-path": (_point("run", "../../etc"), ["points[0].run", "../../etc"]),
    "grid-not-a-list": (lambda m: m.__setitem__("grid", {T_STAR: [0.1, 0.2]}), ["grid", "object"]),
    "grid-value-null": (lambda m: m["grid"][0]["values"].__setitem__(1, None), ["grid[0].values[1]", "null"]),
    "points-an-object": (lambda m: m.__setitem__("points", {"0": {}}), ["points"]),
    "not-json": (lambda m: "{", ["not valid JSON"]),
    "a-json-list": (lambda m: [m], ["JSON list"]),
    "unknown-schema": (lambda m: m.__setitem__("schema", "dbp-lab.sweep/9"), ["schema", "dbp-lab.sweep/9"]),
}


@pytest.mark.parametrize("name", list(V1_DAMAGES))
def test_a_damaged_sweep_json_is_named_by_every_command(tmp_path, experiment, capsys, name):
    damage, words = V1_DAMAGES[name]
    runs = tmp_path / "runs"
    folder = v1_sweep(runs, experiment, damage)
    before = folders(runs)
    for command in (["resume", SWEEP_ID, "--no-progress"], ["resume", SWEEP_ID, "--no-progress"],
                    ["report", SWEEP_ID], ["show", SWEEP_ID], ["export", SWEEP_ID, "--csv"]):
        code, _, err = main("--runs-dir", runs, *command, capsys=capsys)
        assert_refused(code, err, runs, "sweep.json", *words, before=before)
    assert not (folder / "report").exists() and not (folder / "points.jsonl").exists()


PJ_DAMAGES = {  # points.jsonl lines (after one valid line) and the words the message must hold
    "a-string": (['"x"'], ["points.jsonl", "line 2"]),
    "string-index": (['{"index": "1", "run": null}'], ["line 2", "index"]),
    "index-out-of-range": (['{"index": 7, "run": "20250101-000000-console-tiny-0b0b0b0b0b"}'], ["line 2", "7"]),
    "bool-index": (['{"index": true, "run": "20250101-000000-console-tiny-0b0b0b0b0b"}'], ["line 2", "index"]),
    "run-a-path": (['{"index": 1, "run": "../x"}'], ["line 2", "run", "../x"]),
    "values-of-another-point": (['{"index": 1, "values": {"purifier.t_star": 0.1}, '
                                 '"run": "20250101-000000-console-tiny-0b0b0b0b0b"}'], ["line 2", "values", "0.2"]),
    "not-json-mid-file": (["{nope", '{"index": 1, "run": "20250101-000000-console-tiny-0b0b0b0b0b"}'],
                          ["line 2", "JSON"]),
}


@pytest.mark.parametrize("name", list(PJ_DAMAGES))
def test_a_damaged_points_jsonl_is_named_by_every_command(tmp_path, experiment, capsys, name):
    lines, words = PJ_DAMAGES[name]
    runs = tmp_path / "runs"
    sweep = RunStore(runs).create_sweep("console-tiny", dumps_config(load_config(experiment), absolute_paths=True),
                                        [(T_STAR, [0.1, 0.2])], source=str(experiment))
    sweep.set_run(0, "20250101-000000-console-tiny-0a0a0a0a0a")
    with open(sweep.path / "points.jsonl", "a") as fh:
        fh.write("\n".join(lines) + "\n")
    before = folders(runs)
    for command in (["resume", sweep.id, "--no-progress"], ["report", sweep.id], ["show", sweep.id],
                    ["export", sweep.id, "--csv"]):
        code, _, err = main("--runs-dir", runs, *command, capsys=capsys)
        assert_refused(code, err, runs, *words, before=before)


def test_a_torn_last_line_of_points_jsonl_is_not_a_record(tmp_path, experiment, capsys):
    """A crash while a line was appended leaves it without its newline: not a record (the point runs
    again), and the next record starts on a line of its own."""
    runs = tmp_path / "runs"
    sweep = RunStore(runs).create_sweep("console-tiny", dumps_config(load_config(experiment), absolute_paths=True),
                                        [(T_STAR, [0.1, 0.2])], source=str(experiment))
    with open(sweep.path / "points.jsonl", "w") as fh:
        fh.write('{"index": 0, "run": "20250101-0000')
    assert [p.run for p in sweep.points()] == [None, None]
    sweep.set_run(1, "20250101-000000-console-tiny-0b0b0b0b0b")
    assert [p.run for p in sweep.points()] == [None, "20250101-000000-console-tiny-0b0b0b0b0b"]
    assert len((sweep.path / "points.jsonl").read_text().splitlines()) == 1


# =========================================================================== 7. another point's run

@pytest.fixture(scope="module")
def two_point_sweep(tmp_path_factory) -> tuple[Path, Path]:
    """A finished sweep over t* = 0.1, 0.2 (its store and its experiment file)."""
    tmp = tmp_path_factory.mktemp("two")
    experiment = tmp / "e.toml"
    experiment.write_text(console_toml(n=4))
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert cli.main(["--runs-dir", str(tmp / "runs"), "sweep", str(experiment), "--grid", f"{T_STAR}=0.1,0.2",
                         "--no-progress"]) == 0
    finally:
        os.chdir(cwd)
    return tmp / "runs", experiment


@pytest.mark.parametrize("layout", ["points.jsonl", "sweep.json (schema 1)"])
def test_a_point_whose_run_is_another_points_is_named(tmp_path, capsys, monkeypatch, two_point_sweep, layout):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    shutil.copytree(two_point_sweep[0], runs)
    sweep = sweep_of(runs)
    good = {p.point.index: p.point.run for p in read_sweep(sweep.path).points}
    if layout == "points.jsonl":
        with open(sweep.path / "points.jsonl", "a") as fh:  # the last record of a point is its run
            fh.write(json.dumps({"index": 0, "run": good[1]}) + "\n")
        ref = sweep.id
    else:
        shutil.rmtree(sweep.path)
        v1_sweep(runs, two_point_sweep[1], runs_of={0: good[1], 1: good[1]})
        ref = SWEEP_ID
    before = folders(runs)
    words = ["point 1 (purifier.t_star=0.1)", good[1], "0.2", "point 2"]
    for command in (["resume", ref, "--no-progress"], ["report", ref], ["show", ref], ["export", ref, "--csv"]):
        code, out, err = main("--runs-dir", runs, *command, capsys=capsys)
        assert_refused(code, err, runs, *words, before=before)
        if command[0] == "show":  # point 1 is damaged, without point 2's results
            line = next(x for x in out.splitlines() if x.startswith("  purifier.t_star=0.1 "))
            assert " damaged " in line and "%" not in line, line
    report = (runs / ref / "report" / "report.md")
    if report.exists():
        row = next(x for x in report.read_text().splitlines() if x.startswith("| purifier.t_star=0.1 "))
        assert good[1] not in row and "%" not in row, row


# =========================================================================== every point checked first

@pytest.mark.parametrize("grid,words", [
    # the schema passes; the chain of t* = 0.2 has 200 noising steps
    (["purifier.steps=2,500"], ["purifier.steps", "got 500", "at most", "point 2/2"]),
    # the second classifier raises on its first call (dbp check's plugin call)
    (["models.classifier=tests.plugins:tiny_classifier,tests.contract_plugins:check_raising_classifier"],
     ["models.classifier", "check_raising_classifier", "point 2/2"]),
])
def test_every_point_is_checked_as_dbp_run_would_before_the_first_runs(tmp_path, experiment, capsys, grid, words):
    runs = tmp_path / "runs"
    code, _, err = main("--runs-dir", runs, "sweep", experiment, *[a for g in grid for a in ("--grid", g)],
                        capsys=capsys)
    assert_refused(code, err, runs, *words)


def test_a_relative_path_in_a_grid_resolves_as_dbp_run_resolves_it(tmp_path, experiment, capsys):
    """``--grid data.root=a,b`` (folders beside the experiment file): checked and run against that
    folder (not the sweep folder), and each point's run matches its value."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    runs = tmp_path / "runs"
    code, _, err = main("--runs-dir", runs, "sweep", experiment, "--no-progress", "--grid", "data.root=a,b",
                        capsys=capsys)
    assert code == 0, err
    view = read_sweep(sweep_of(runs).path)
    assert [p.view.config["data"]["root"] for p in view.points] == [str(tmp_path / "a"), str(tmp_path / "b")]
    for command in (["report", view.id], ["show", view.id]):
        code, _, err = main("--runs-dir", runs, *command, capsys=capsys)
        assert code == 0, err


# =========================================================================== properties

_SCALARS = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False),
                     st.text(max_size=6))
TOML_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=3), max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(TOML_VALUES)
def test_toml_value_is_read_back_as_the_same_value(value):
    from dbp_core.config import value_key
    assert value_key(tomllib.loads(f"v = {toml_value(value)}")["v"]) == value_key(value)


PIECES = ["0.1", "0.2", "0.05", "abc", "1", "1.0", "2", "{a=1}", "{num_channels=64}", "[1,2]", "1979-05-27", "true",
          '"s"', "", "[", "{", "'x'", "nan", "inf", "1e400", "-0.0", "07:32:00", '"a,b"', "{a={b=[1]}}", " ", "0.3 ", "\\"]
KEYS = [T_STAR, "attacks.0.eps", "attacks.0.eot", "models.diffusion_config", "purifier.steps", "description",
        "data.n_examples", "", "a..b", "attacks.9.eps", "attacks.x.eps", " "]
PLAUSIBLE = st.tuples(st.sampled_from(KEYS[:6]), st.lists(st.sampled_from(PIECES[:10]), min_size=1, max_size=3)
                      ).map(lambda kv: f"{kv[0]}={','.join(kv[1])}")  # often a sweep that reaches its points
ANY = st.tuples(st.sampled_from(KEYS), st.sampled_from(["=", "", "=="]),
                st.lists(st.sampled_from(PIECES), min_size=1, max_size=4).map(",".join) |
                st.text(alphabet='0.1a,={}[]"\'-: e', max_size=12)).map("".join)
GRID_ITEMS = st.lists(PLAUSIBLE | ANY, min_size=1, max_size=2)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def no_run_execute(run, cfg, args):
    """``cli._execute`` without the run: the property tests check what comes before and after."""
    run.unlock()
    return cli.EXIT_OK


@settings(FAST, max_examples=60)
@given(items=GRID_ITEMS)
def test_sweep_of_any_grid_exits_0_or_2(items, experiment, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_execute", no_run_execute)
    runs = Path(tempfile.mkdtemp(dir=experiment.parent)) / "runs"
    args = [a for item in items for a in ("--grid", item)]
    code, _, err = main("--runs-dir", runs, "sweep", experiment, *args, "--max-points", "4", "--no-progress",
                        capsys=capsys)
    assert code in (0, 2) and "Traceback" not in err, (items, code, err)
    if code == 2:
        assert folders(runs) == [], (items, err)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6)
TARGETS = [("schema",), ("id",), ("experiment",), ("source",), ("base_dir",), ("created",), ("overrides",), ("grid",),
           ("grid", 0), ("grid", 0, "key"), ("grid", 0, "values"), ("grid", 0, "values", 0), ("points",),
           ("points", 0), ("points", 0, "index"), ("points", 0, "values"), ("points", 0, "run")]


def _edit(doc, target, value):
    """``doc`` with ``value`` at ``target`` (a missing parent: unchanged; value ``...``: the key removed)."""
    doc = copy.deepcopy(doc)
    node = doc
    for part in target[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return doc
    try:
        if value is ...:
            del node[target[-1]]
        else:
            node[target[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass
    return doc


DOCS = st.one_of(
    st.tuples(st.just("edit"), st.sampled_from(TARGETS), JSON | st.just(...)),
    st.tuples(st.just("lines"), st.lists(JSON.map(json.dumps) | st.text(max_size=8), min_size=1, max_size=3)),
    st.tuples(st.just("bytes"), st.binary(max_size=20)))


@FAST
@given(doc=DOCS, schema=st.sampled_from([1, 2]))
@example(doc=("edit", ("points",), [1]), schema=2)  # a key schema 2 does not have
@example(doc=("edit", ("grid", 0, "values"), []), schema=2)
@example(doc=("edit", ("grid", 0, "values", 0), {"a": [None]}), schema=1)
@example(doc=("lines", ['{"index": 0, "run": "x"}', '{"index": 0, "run": ".."}']), schema=1)
@example(doc=("bytes", b"\xff\xfe"), schema=2)
def test_resume_report_show_export_of_any_sweep_document_exit_0_or_2(doc, schema, experiment, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_execute", no_run_execute)
    runs = Path(tempfile.mkdtemp(dir=experiment.parent)) / "runs"
    if schema == 1:
        folder = v1_sweep(runs, experiment)
    else:
        folder = RunStore(runs).create_sweep("console-tiny", dumps_config(load_config(experiment), absolute_paths=True),
                                             [(T_STAR, [0.1, 0.2])], source=str(experiment)).path
    manifest = json.loads((folder / "sweep.json").read_text())
    if doc[0] == "edit":
        (folder / "sweep.json").write_text(json.dumps(_edit(manifest, doc[1], doc[2])))
    elif doc[0] == "lines":
        (folder / "points.jsonl").write_text("\n".join(doc[1]) + "\n")
    else:
        (folder / "sweep.json").write_bytes(doc[1])
    for command in (["report", folder.name], ["show", folder.name], ["export", folder.name, "--csv"],
                    ["resume", folder.name, "--no-progress"]):
        before = folders(runs)
        code, _, err = main("--runs-dir", runs, *command, capsys=capsys)
        assert code in (0, 2) and "Traceback" not in err, (doc, command, code, err)
        if code == 2:
            assert folders(runs) == before, (doc, command, err)
