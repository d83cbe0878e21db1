"""Run store: atomic files, unique ids, liveness, incremental metrics reading."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from dbp_core.config import loads_config
from dbp_core.store import MetricsReader, Run, RunNotFound, RunStore, atomic_write, read_metrics


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "status.json"
    atomic_write(target, '{"v": 1}')

    def explode(fh):
        fh.write(b'{"v": 2, "half')
        raise RuntimeError("killed mid-write")
    with pytest.raises(OSError, match="status.json"):  # a writer's RuntimeError (torch.save's) names the file
        atomic_write(target, explode)
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # temp file removed


def test_create_writes_frozen_config_and_queued_status(tmp_path):
    cfg = loads_config('name = "exp"\nseed = 5\n')
    run = RunStore(tmp_path).create(cfg)
    assert run.id.split("-")[2] == "exp" and run.path.parent == tmp_path
    assert run.read_config().model_dump() == cfg.model_dump()
    status = run.read_status()
    assert status.state == "queued" and status.experiment == "exp"
    assert run.checkpoints_dir.is_dir() and run.log_path.exists()
    with pytest.raises(ValueError):
        run.write_status(state="bogus")


def _create_many(root, n, q):
    ids = [RunStore(root).create(experiment="race").id for _ in range(n)]
    q.put(ids)


def test_concurrent_creation_gives_distinct_dirs(tmp_path):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_create_many, args=(tmp_path, 10, q)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = [i for _ in procs for i in q.get(timeout=30)]
    for p in procs:
        p.join()
    assert len(ids) == 40 == len(set(ids)) == len(list(tmp_path.iterdir()))


def test_new_ids_are_unique_even_in_the_same_second(tmp_path):
    store = RunStore(tmp_path)
    assert len({store.new_id("e") for _ in range(1000)}) == 1000


def test_dead_pid_reported_interrupted_and_persisted(tmp_path):
    run = RunStore(tmp_path).create(experiment="e")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    run.write_status(state="running", pid=child.pid, host=socket.gethostname(), proc_start=None)
    assert run.read_status(check_alive=False).state == "running"
    assert run.read_status().state == "interrupted"
    assert json.loads(run.status_path.read_text())["state"] == "running"  # not persisted by default
    Run(run.path).read_status(persist=True)
    assert json.loads(run.status_path.read_text())["state"] == "interrupted"


def test_live_pid_is_running_and_reused_pid_is_not(tmp_path):
    run = RunStore(tmp_path).create(experiment="e")
    run.mark_running()
    assert run.read_status().state == "running"
    run.write_status(proc_start="1")  # same pid, different process start: pid was reused
    assert run.read_status().state == "interrupted"


def test_remote_host_judged_by_heartbeat(tmp_path):
    run = RunStore(tmp_path).create(experiment="e")
    run.write_status(state="running", pid=1, host="elsewhere")
    assert run.read_status().state == "running"
    status = json.loads(run.status_path.read_text())
    status["updated"] = time.time() - 3600
    run.status_path.write_text(json.dumps(status))
    assert Run(run.path).read_status().state == "interrupted"


def test_a_crash_before_the_last_start_is_not_the_runs(tmp_path):
    """log.txt keeps the fatal error of an earlier start; readers look back only as far as the line
    the runner logs when the run starts or resumes (dbp_core/store/log.py writes and finds it)."""
    from dbp_core.runner import _mark_running
    run = RunStore(tmp_path).create(experiment="e")
    with open(run.log_path, "a") as fh:  # faulthandler writes its report without a time
        fh.write("Fatal Python error: Aborted\n\nCurrent thread 0x1 (most recent call first):\n")
    assert run.crash_report() == "Fatal Python error: Aborted"
    _mark_running(run)  # what run_study logs when the run (re)starts
    assert run.crash_report() is None
    with open(run.log_path, "a") as fh:
        fh.write("Fatal Python error: Segmentation fault\n")
    assert run.crash_report() == "Fatal Python error: Segmentation fault"
    run.close()


def test_metrics_reader_waits_for_partial_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "a", "step": 0}\n{"kind": "b", "st')
    reader = MetricsReader(path)
    assert [e["kind"] for e in reader.read()] == ["a"]
    assert reader.read() == []  # the partial line is not consumed
    with open(path, "a") as fh:
        fh.write('ep": 1}\nnot json\n{"kind": "c", "step": 2}\n')
    assert [e["kind"] for e in reader.read()] == ["b", "c"]
    assert reader.bad_lines == 1
    assert read_metrics(tmp_path / "missing.jsonl") == ([], 0, 0)


def test_metrics_reader_on_growing_file(tmp_path):
    run = RunStore(tmp_path).create(experiment="e")
    n = 3000

    def writer():
        for i in range(n):
            run.append_metric("it", i, loss=i / 7, payload="x" * (i % 50))
        run.close()
    t = threading.Thread(target=writer)
    reader = run.metrics()
    seen = []
    t.start()
    while t.is_alive():
        seen += reader.read()
    t.join()
    seen += reader.read()
    assert [e["step"] for e in seen] == list(range(n))
    assert all(e["kind"] == "it" and "time" in e for e in seen)
    assert reader.bad_lines == 0


def test_metrics_reader_on_growing_file_with_split_writes(tmp_path):
    """A writer that emits lines in pieces (worst case): whole events only, each once."""
    path = tmp_path / "m.jsonl"
    path.touch()
    lines = [json.dumps({"kind": "k", "step": i, "v": "y" * i}) + "\n" for i in range(300)]

    def writer():
        with open(path, "a") as fh:
            for ln in lines:
                for j in range(0, len(ln), 7):
                    fh.write(ln[j:j + 7])
                    fh.flush()
    reader, seen = MetricsReader(path), []
    t = threading.Thread(target=writer)
    t.start()
    while t.is_alive():
        seen += reader.read()
    t.join()
    seen += reader.read()
    assert [e["step"] for e in seen] == list(range(300)) and reader.bad_lines == 0


def test_checkpoints_json_and_torch(tmp_path):
    import torch
    run = RunStore(tmp_path).create(experiment="e")
    assert run.load_checkpoint("s.json") is None
    run.save_checkpoint("s.json", {"next": 3, "ok": [1, 0]})
    run.save_checkpoint("w.pt", {"w": torch.arange(4.0), "step": 2})
    assert run.load_checkpoint("s.json") == {"next": 3, "ok": [1, 0]}
    loaded = run.load_checkpoint("w.pt")
    assert torch.equal(loaded["w"], torch.arange(4.0)) and loaded["step"] == 2
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == ["s.json", "w.pt"]


def test_open_by_id_prefix_path(tmp_path):
    store = RunStore(tmp_path)
    a = store.create(experiment="alpha")
    b = store.create(experiment="beta")
    assert store.open(a.id).path == a.path
    assert store.open("alpha").path == a.path  # substring
    assert store.open(str(b.path)).path == b.path
    assert [r.id for r in store.list()] == sorted([a.id, b.id])
    with pytest.raises(RunNotFound):
        store.open("gamma")
    with pytest.raises(RunNotFound, match="matches 2"):
        store.open(a.id[:9])
    assert RunStore(tmp_path / "none").list() == []


def test_results_written_atomically(tmp_path):
    run = RunStore(tmp_path).create(experiment="e")
    assert run.read_results() is None
    run.write_results({"headline": None, "accuracies": []})
    assert run.read_results() == {"headline": None, "accuracies": []}
    assert not [p for p in run.path.iterdir() if ".tmp-" in p.name]


def test_wilson_interval_known_values():
    from dbp_core.stats import accuracy_row, wilson_interval
    lo, hi = wilson_interval(81, 100)  # textbook value: (0.7222, 0.8749)
    assert lo == pytest.approx(0.7222, abs=1e-4) and hi == pytest.approx(0.8749, abs=1e-4)
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == 1.0
    assert 0 < wilson_interval(0, 50)[1] < 0.1
    row = accuracy_row("clean", 3, 4, stage="evaluate")
    assert row["accuracy"] == 0.75 and row["ci_low"] < 0.75 < row["ci_high"]
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


# --------------------------------------------------------------------------- ids: enough randomness, clash and retry

def test_run_id_token_has_at_least_32_random_bits(tmp_path):
    """3 random bytes made 1,000 ids in one second clash ~3% of the time; 5 bytes ~1e-6."""
    token = RunStore(tmp_path).new_id("e").rsplit("-", 1)[1]
    assert len(token) >= 8 and int(token, 16) >= 0


def test_create_retries_on_an_id_clash(tmp_path, monkeypatch):
    from dbp_core.store import ids  # where run ids are drawn
    tokens = iter(["aaaaaaaaaa", "aaaaaaaaaa", "bbbbbbbbbb"])
    calls = []

    def token():
        calls.append(1)
        return next(tokens)
    monkeypatch.setattr(ids, "_id_stamp", lambda: "20000101-000000")
    monkeypatch.setattr(ids, "_id_token", token)
    store = RunStore(tmp_path)
    first = store.create(experiment="e")
    second = store.create(experiment="e")  # draws the same token once, then a fresh one
    assert first.id == "20000101-000000-e-aaaaaaaaaa" and second.id == "20000101-000000-e-bbbbbbbbbb"
    assert len(calls) == 3
    assert first.read_status().state == second.read_status().state == "queued"
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.id, second.id]
    monkeypatch.setattr(ids, "_id_token", lambda: "aaaaaaaaaa")  # every draw clashes: a clear error
    from dbp_core.store import RunStoreError
    with pytest.raises(RunStoreError, match="unique run folder"):
        store.create(experiment="e")


# --------------------------------------------------------------------------- damaged files, store root

@pytest.mark.parametrize("content", ["", "{\"state\": \"runn", "[1, 2]", "\xff\xfe"])
def test_damaged_status_and_results_raise_a_named_error(tmp_path, content):
    from dbp_core.store import RunFileError
    run = RunStore(tmp_path).create(experiment="e")
    run.status_path.write_bytes(content.encode("latin-1"))
    run.results_path.write_bytes(content.encode("latin-1"))
    for read in (lambda: Run(run.path).read_status(), lambda: Run(run.path).read_results()):
        with pytest.raises(RunFileError) as info:
            read()
        assert isinstance(info.value, ValueError)  # what a JSONDecodeError was: console readers catch it
        assert str(run.path) in str(info.value) and "expected a JSON object" in str(info.value)


def test_status_with_non_numeric_pid_is_refused_and_reads_as_damaged(tmp_path):
    from dbp_core.store import RunFileError
    run = RunStore(tmp_path).create(experiment="e")
    with pytest.raises(ValueError, match="field 'pid'"):
        run.write_status(state="running", pid="x", host=socket.gethostname())
    status = json.loads(run.status_path.read_text())
    run.status_path.write_text(json.dumps({**status, "state": "running", "pid": "x"}))
    with pytest.raises(RunFileError, match="field 'pid' holds \"x\"; expected an integer"):
        Run(run.path).read_status()


def test_store_root_that_is_a_file(tmp_path):
    from dbp_core.store import RunStoreError
    (tmp_path / "f").write_text("x")
    for root in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(RunStoreError) as info:
            RunStore(root).create(experiment="e")
        assert str(root) in str(info.value) and "folder" in str(info.value)


# --------------------------------------------------------------------------- the per-run lock

HOLD_LOCK = """
import sys, time
from dbp_core.store import Run
run = Run(sys.argv[1])
run.lock()
run.mark_running()
print("locked", flush=True)
time.sleep(60)
"""


def test_run_lock_excludes_a_second_process_and_dies_with_its_holder(tmp_path):
    from dbp_core.store import RunLocked
    run = RunStore(tmp_path).create(experiment="e")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run.path)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__))))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked) as info:
            Run(run.path).lock()
        assert info.value.pid == holder.pid
        assert f"run {run.id} is already running (pid {holder.pid})" in str(info.value)
        from dbp_core.runner import run_study  # the runner takes the lock too: it refuses, writing nothing
        before = run.status_path.read_bytes()
        with pytest.raises(RunLocked):
            run_study(Run(run.path), loads_config('name = "e"'))
        assert run.status_path.read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    again = Run(run.path)  # SIGKILL released the lock: no stale lock file to clean up
    assert again.lock() is True and again.locked
    assert again.lock() is False  # re-entrant for the same object
    with pytest.raises(RunLocked):
        Run(run.path).lock()  # another open file description, same process: excluded as well
    again.unlock()
    assert Run(run.path).lock() is True


def test_mark_running_keeps_temp_files_of_live_writers(tmp_path):
    run = RunStore(tmp_path).create(experiment="e")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.checkpoints_dir.mkdir(exist_ok=True)
        live_tmp = run.checkpoints_dir / f".evaluate.json.tmp-{live.pid}-0123abcd"
        own_tmp = run.path / f".status.json.tmp-{os.getpid()}-0123abcd"
        dead_tmp = run.path / f".results.json.tmp-{dead.pid}-0123abcd"
        odd_tmp = run.path / ".x.tmp-notapid"
        for p in (live_tmp, own_tmp, dead_tmp, odd_tmp):
            p.write_text("partial")
        Run(run.path).mark_running()
        assert live_tmp.exists() and own_tmp.exists()  # a live writer's file is being written
        assert not dead_tmp.exists() and not odd_tmp.exists()  # a killed writer's leftovers go
    finally:
        live.kill()
        live.wait()
