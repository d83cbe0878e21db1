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
from dbp_core.runs import MetricsReader, Run, RunNotFound, RunStore, atomic_write, read_metrics


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "status.json"
    atomic_write(target, '{"v": 1}')

    def explode(fh):
        fh.write(b'{"v": 2, "half')
        raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError):
        atomic_write(target, explode)
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # temp file removed


def test_create_writes_frozen_config_and_queued_status(tmp_path):
    cfg = loads_config('name = "exp"\nseed = 5\n')
    run = RunStore(tmp_path).create(cfg)
    assert run.id.split("-")[2] == "exp" and run.path.parent == tmp_path
    assert run.read_config().model_dump() == cfg.model_dump()
    status = run.read_status()
    assert status["state"] == "queued" and status["experiment"] == "exp"
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
    assert run.read_status(check_alive=False)["state"] == "running"
    assert run.read_status()["state"] == "interrupted"
    assert json.loads(run.status_path.read_text())["state"] == "running"  # not persisted by default
    Run(run.path).read_status(persist=True)
    assert json.loads(run.status_path.read_text())["state"] == "interrupted"


def test_live_pid_is_running_and_reused_pid_is_not(tmp_path):
    run = RunStore(tmp_path).create(experiment="e")
    run.mark_running()
    assert run.read_status()["state"] == "running"
    run.write_status(proc_start="1")  # same pid, different process start: pid was reused
    assert run.read_status()["state"] == "interrupted"


def test_remote_host_judged_by_heartbeat(tmp_path):
    run = RunStore(tmp_path).create(experiment="e")
    run.write_status(state="running", pid=1, host="elsewhere")
    assert run.read_status()["state"] == "running"
    status = json.loads(run.status_path.read_text())
    status["updated"] = time.time() - 3600
    run.status_path.write_text(json.dumps(status))
    assert Run(run.path).read_status()["state"] == "interrupted"


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
