"""Hostile input, round 3: memory budgets, gradient modes and image folders. Each input below is
refused by `dbp check` and by `dbp run` with exit 2, before any run folder exists, with a message
naming the field or file and what was expected, and no traceback:

8.  ``purifier.memory_budget`` out of range (1e308) or too small to hold one row's step (the plan is
    measured on the real network in the preflight; docs/science.md, "Memory budget");
9.  ``purifier.grad_mode = "none"`` with an attack (or analysis, audit) that differentiates the chain;
14. image folders with link loops, links out of the root, one file listed twice, odd files — and the
    walk ends on any of them, and SIGINT stops `dbp check` while it walks;
15. ``data.n_examples`` / ``data.first`` beyond the folder's images;
16. a class-index value that is not ``[wnid, name]``, and ``data.root`` naming a file.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.checkpoint_files import WNIDS, jpeg, tiny_imagenet
from tests.conftest import DWBOX, PGD_EOT, attack_study_toml, tiny_toml
from tests.test_bad_inputs import ROOT, env, folders, main, write

QUICKSTART = ROOT / "experiments" / "quickstart.toml"
MEMORY_LIMIT = 3 << 30  # bytes of address space for a child that could grow without bound (a walk in a loop)


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def refused(cfg: Path, *sets: str, words: list[str], runs: Path, capsys=None) -> None:
    """`dbp check` and `dbp run` both exit 2 naming every one of ``words``, with no traceback and no
    run folder. Without ``capsys`` in a child process (bounded in time and memory: an input that
    hangs the command fails the test instead of the machine)."""
    args = [a for s in sets for a in ("--set", s)]
    for command in ("check", "run"):
        argv = ["--runs-dir", str(runs), command, str(cfg), *args, *(["--no-progress"] if command == "run" else [])]
        if capsys is not None:
            code, _, err = main(*argv, capsys=capsys)
        else:
            try:
                proc = subprocess.run([sys.executable, "-m", "dbp_core", *argv], cwd=ROOT, capture_output=True,
                                      text=True, env=env(), timeout=120, preexec_fn=_limited)
            except subprocess.TimeoutExpired:
                pytest.fail(f"dbp {command} did not end")
            code, err = proc.returncode, proc.stderr
        assert code == 2 and "Traceback" not in err, (command, code, err)
        missing = [w for w in words if w not in err]
        assert not missing, (command, missing, err)
        assert folders(runs) == [], command


# =========================================================================== 8. memory budget

MEMORY = [  # (purifier overrides, the words of the refusal)
    (["purifier.memory_budget=1e308"], ["purifier.memory_budget", "got 1e+308", "at most 1048576 GB"]),
    (["purifier.memory_budget=inf"], ["purifier.memory_budget", "got inf", "finite"]),
    (["purifier.memory_budget=1e-12"], ["purifier.memory_budget = 1e-12 GB", "need at least", "attack 'pgd-eot-linf'"]),
    (["purifier.memory_budget=0.001", "purifier.sampler=\"vpsde\"", "purifier.clip_denoised=false"],
     ["purifier.memory_budget = 0.001 GB", "need at least", "attack 'pgd-eot-linf'"]),
    (["purifier.memory_budget=0.001", "purifier.grad_mode=\"segments\""],
     ["purifier.memory_budget = 0.001 GB", "need at least", "100 rows x 5 steps"]),
    (["purifier.memory_budget=1e-6", "purifier.grad_mode=\"checkpoint\""],
     ["purifier.memory_budget = 1e-06 GB", "need at least", "attack 'dwbox-linf'"]),
]


@pytest.mark.parametrize("sets,words", MEMORY, ids=["1e308", "inf", "1e-12", "0.001-vpsde", "0.001-segments",
                                                     "1e-6-checkpoint"])
def test_a_memory_budget_out_of_range_or_too_small_is_refused_before_the_run(tmp_path, capsys, monkeypatch, sets,
                                                                             words):
    """The quickstart (digits UNet, 50 examples x EOT 2 per gradient call): a budget it cannot plan
    is refused with what it needs; one it can is accepted."""
    monkeypatch.chdir(ROOT)
    refused(QUICKSTART, *sets, words=words, runs=tmp_path / "runs", capsys=capsys)
    fits = [s for s in sets if not s.startswith("purifier.memory_budget")] + ["purifier.memory_budget=1"]
    code, out, err = main("check", QUICKSTART, *[a for s in fits for a in ("--set", s)], capsys=capsys)
    assert code == 0 and out.startswith("ok:"), err


# =========================================================================== 9. grad_mode = "none"

NO_GRADIENT = [  # (config sections, the words of the refusal)
    ({"attacks": [PGD_EOT, DWBOX]}, ["attack 'pgd-eot-linf'", "attack 'dwbox-linf'", "gradient = 'exact'",
                                          "'bpda' or 'blind' or 'forward-only'"]),
    ({"attacks": [{"kind": "apgd", "iterations": 2}]}, ["attack 'apgd-linf'"]),
    ({"attacks": [{"kind": "diffattack", "iterations": 2, "eot": 2, "evaluations": 2}]}, ["attack 'diffattack-linf'"]),
    ({"attacks": [{"kind": "autoattack-standard", "iterations": 2}]}, ["attack 'autoattack-standard-linf'"]),
    ({"attacks": [{"kind": "bpda", "iterations": 2}], "stages": ["attacks", "analysis"],
      "analysis": {"trajectory": True, "examples": 2}}, ["analysis.trajectory"]),
    ({"attacks": [{"kind": "bpda", "iterations": 2}], "stages": ["attacks", "audit"], "audit": {"examples": 2}},
     ["audit.checks", "gradient-approximations"]),
]
CHAIN_FREE = [  # attacks whose gradient does not pass through the reverse chain: they run with grad_mode "none"
    {"kind": "bpda", "iterations": 2},
    {"kind": "pgd", "iterations": 2, "gradient": "blind"},
    {"kind": "pgd-eot", "iterations": 2, "eot": 2, "gradient": "forward-only"},
    {"kind": "apgd", "iterations": 2, "gradient": "bpda"},
]


def _no_gradient_study(tmp_path: Path, **sections) -> Path:
    sections = {"purifier": {"t_star": 0.2, "steps": 3, "grad_mode": "none"}, "evaluation": {"protocols": ["single"]},
                **sections}
    return write(tmp_path, attack_study_toml(n=4, batch=4, **sections))


@pytest.mark.parametrize("sections,words", NO_GRADIENT, ids=["pgd-eot+dwbox", "apgd", "diffattack",
                                                             "autoattack-standard", "analysis", "audit"])
def test_grad_mode_none_is_refused_for_what_differentiates_the_chain(tmp_path, capsys, monkeypatch, sections, words):
    monkeypatch.chdir(ROOT)
    cfg = _no_gradient_study(tmp_path, **sections)
    refused(cfg, words=["purifier.grad_mode", "'full' or 'checkpoint' or 'segments'", *words], runs=tmp_path / "runs",
            capsys=capsys)


@pytest.mark.parametrize("attack", CHAIN_FREE, ids=[f"{a['kind']}-{a.get('gradient', 'bpda')}" for a in CHAIN_FREE])
def test_grad_mode_none_runs_attacks_that_need_no_gradient_through_the_chain(tmp_path, capsys, monkeypatch, attack):
    monkeypatch.chdir(ROOT)
    cfg, runs = _no_gradient_study(tmp_path, attacks=[attack]), tmp_path / "runs"
    code, _, err = main("--runs-dir", runs, "run", cfg, "--no-progress", capsys=capsys)
    assert code == 0, err
    [run] = folders(runs)
    assert json.loads((run / "results.json").read_text())["stages"]["attacks"]


# =========================================================================== 14-16. image folders

def imagenet_config(tmp_path: Path, root: Path, **data) -> Path:
    """The evaluate stage on an image folder of the four classes WNIDS (their index, in that order, in
    wnids.txt beside the config), 8x8 crops, the tiny test classifier, no purification."""
    index = tmp_path / "wnids.txt"
    if not index.exists():
        index.write_text("\n".join(WNIDS) + "\n")
    text = tiny_toml(data={"dataset": "imagenet", "root": str(root), "class_index": str(index), "image_size": 8,
                           "batch_size": 4, **data},
                     models={"classifier": "tests.plugins:tiny_classifier", "diffusion": "none"})
    return write(tmp_path, text)


def _folder(base: Path, case: str) -> Path:
    """An image folder (2 images in each of 4 classes) with the hazard ``case``; returns data.root."""
    root = tiny_imagenet(base / "data", per_class=2, index=None)
    first = root / WNIDS[0]
    if case == "one-self-link":
        (first / "again").symlink_to(".")
    elif case == "two-self-links":  # os.walk(followlinks=True) lists 2^40 paths
        (first / "a").symlink_to(".")
        (first / "b").symlink_to(".")
    elif case == "link-to-the-root":
        (first / "up").symlink_to("..")
    elif case == "link-to-another-class":
        (first / "more").symlink_to(f"../{WNIDS[1]}")
    elif case == "folder-link-out-of-the-root":
        jpeg(base / "elsewhere" / "x.JPEG", 20, 20, seed=1)
        (first / "out").symlink_to(base / "elsewhere")
    elif case == "file-link-out-of-the-root":
        jpeg(base / "elsewhere" / "x.JPEG", 20, 20, seed=1)
        (first / "x.JPEG").symlink_to(base / "elsewhere" / "x.JPEG")
    elif case == "class-folder-link-out-of-the-root":
        jpeg(base / "elsewhere" / WNIDS[3] / "x.JPEG", 20, 20, seed=1)
        for f in (root / WNIDS[3]).iterdir():
            f.unlink()
        (root / WNIDS[3]).rmdir()
        (root / WNIDS[3]).symlink_to(base / "elsewhere" / WNIDS[3])
    elif case == "hard-link":
        os.link(first / "ILSVRC2012_val_00000000.JPEG", root / WNIDS[2] / "copy.JPEG")
    elif case == "file-link":
        (root / WNIDS[2] / "copy.JPEG").symlink_to(first / "ILSVRC2012_val_00000001.JPEG")
    elif case == "broken-link":
        (first / "gone.JPEG").symlink_to("missing.JPEG")
    elif case == "fifo":
        os.mkfifo(first / "pipe.JPEG")
    elif case == "linked-folder-inside-the-root":  # listed once, through the link: accepted
        jpeg(base / "data" / "store" / "y.JPEG", 20, 20, seed=2)
        root = base / "data"
        (root / "val").mkdir()
        for w in WNIDS:
            (root / w).rename(root / "val" / w)
        (root / "val" / WNIDS[0] / "store").symlink_to("../../store")
    elif case != "plain":
        raise ValueError(case)
    return root


FOLDERS = [  # (case, the words of the refusal; None: accepted, with this many images)
    ("plain", 8),
    ("linked-folder-inside-the-root", 9),
    ("one-self-link", ["again", "already walked"]),
    ("two-self-links", ["already walked"]),
    ("link-to-the-root", ["up", "already walked"]),
    ("link-to-another-class", ["more", "already walked"]),
    ("folder-link-out-of-the-root", ["out", "outside data.root"]),
    ("file-link-out-of-the-root", 9),  # a subset made of links into a full copy: accepted, listed once
    ("class-folder-link-out-of-the-root", [WNIDS[3], "outside data.root"]),
    ("hard-link", ["copy.JPEG", "ILSVRC2012_val_00000000.JPEG", "the same file", "uids 0 and 6"]),
    ("file-link", ["copy.JPEG", "ILSVRC2012_val_00000001.JPEG", "the same file", "uids 1 and 6"]),
    ("broken-link", ["gone.JPEG", "does not exist"]),
    ("fifo", ["pipe.JPEG", "not a regular file"]),
]

WALK = """
import json, sys
from dbp_core.models.datasets import DatasetError, load_dataset
out = {}
for case, root in json.loads(sys.argv[1]).items():
    try:
        out[case] = len(load_dataset("imagenet", "test", root=root, class_index=sys.argv[2], image_size=8))
    except DatasetError as exc:
        out[case] = str(exc)
print(json.dumps(out))
"""


def test_the_folder_walk_ends_and_lists_each_image_once(tmp_path):
    """Every folder of FOLDERS is walked to its end in a child process bounded in memory and time
    (two self-links used to make the walk list 2^40 paths): each is listed with its images counted
    once or refused naming the link or file."""
    roots = {case: str(_folder(tmp_path / case, case)) for case, _ in FOLDERS}
    (tmp_path / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    try:
        proc = subprocess.run([sys.executable, "-c", WALK, json.dumps(roots), str(tmp_path / "wnids.txt")], cwd=ROOT,
                              capture_output=True, text=True, env=env(), timeout=120, preexec_fn=_limited)
    except subprocess.TimeoutExpired:
        pytest.fail("the folder walk did not end")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    for case, want in FOLDERS:
        if isinstance(want, int):
            assert got[case] == want, (case, got[case])
        else:
            assert isinstance(got[case], str) and all(w in got[case] for w in want), (case, got[case])


@pytest.mark.parametrize("case", ["two-self-links", "one-self-link", "folder-link-out-of-the-root", "hard-link",
                                  "fifo"])
def test_a_hostile_image_folder_is_refused_by_check_and_run(tmp_path, case):
    words = dict(FOLDERS)[case]
    root = _folder(tmp_path, case)
    refused(imagenet_config(tmp_path, root), words=["data.root", *words], runs=tmp_path / "runs")


def test_sigint_stops_dbp_check_while_it_walks_an_image_folder(tmp_path):
    """A folder whose listing never ends (tests/slow_walk.py: a hung network mount): once the walk is
    in it, SIGINT ends `dbp check` with exit 130 and no traceback."""
    root = _folder(tmp_path, "plain")
    cfg, mark = imagenet_config(tmp_path, root), tmp_path / "walking"
    proc = subprocess.Popen([sys.executable, "-m", "tests.slow_walk", "check", str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(DBP_TEST_SLOW_DIR=WNIDS[2], DBP_TEST_HANG_MARK=str(mark)))
    try:
        deadline = time.monotonic() + 120
        while not mark.exists():  # the walk has reached the folder (and will never leave it)
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the walk never reached the folder"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("dbp check did not stop on SIGINT")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err


def test_a_valid_image_folder_passes_check_and_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    cfg = imagenet_config(tmp_path, _folder(tmp_path, "linked-folder-inside-the-root"), n_examples=9)
    code, _, err = main("--runs-dir", runs, "run", cfg, "--no-progress", capsys=capsys)
    assert code == 0, err
    [run] = folders(runs)
    assert len(json.loads((run / "results.json").read_text())["stages"]["evaluate"]["per_example"]["clean"]) == 9


COUNTS = [  # (data fields, the words of the refusal): the folder has 8 images
    ({"n_examples": 9}, ["data.n_examples", "got 9", "n_examples <= 8", "has 8 images"]),
    ({"n_examples": 5, "first": 4}, ["data.n_examples", "got 5", "n_examples <= 4", "data.first = 4"]),
    ({"first": 8}, ["data.first", "got 8", "an index below 8"]),
    ({"n_examples": 20, "order": "random"}, ["data.n_examples", "got 20", "at most 8"]),
    ({"n_examples": 9, "order": "diffpure"}, ["data.n_examples", "got 9", "at most 8"]),
]


@pytest.mark.parametrize("data,words", COUNTS, ids=["n_examples", "first+n_examples", "first", "random", "diffpure"])
def test_more_examples_than_the_folder_has_are_refused_at_check_time(tmp_path, capsys, monkeypatch, data, words):
    monkeypatch.chdir(ROOT)
    cfg = imagenet_config(tmp_path, _folder(tmp_path, "plain"), **data)
    refused(cfg, words=[*words, str(tmp_path / "data")], runs=tmp_path / "runs", capsys=capsys)


CLASS_INDEXES = [  # (imagenet_class_index.json's text, the words of the refusal)
    ('{"0": "n01440364"}', ['key "0"', "'n01440364'", '["n01440364", "tench"]']),
    ('{"0": ["n01440364"]}', ['key "0"', "['n01440364']"]),
    ('{"0": [1440364, "tench"]}', ['key "0"']),
    ('{"0": ["", "tench"]}', ['key "0"']),
    ('["n01440364", "tench"]', ["a JSON object"]),
    ('{"1": ["n01440364", "tench"]}', ['key "0"', "keys 0..N-1"]),
]


@pytest.mark.parametrize("text,words", CLASS_INDEXES, ids=["string", "one-item", "number", "empty", "list", "keys"])
def test_a_class_index_of_the_wrong_layout_is_refused_naming_the_file_and_key(tmp_path, capsys, monkeypatch, text,
                                                                              words):
    monkeypatch.chdir(ROOT)
    root = _folder(tmp_path, "plain")
    index = tmp_path / "imagenet_class_index.json"
    index.write_text(text)
    cfg = imagenet_config(tmp_path, root, class_index=str(index))
    refused(cfg, words=["data.class_index", str(index), *words], runs=tmp_path / "runs", capsys=capsys)


def test_data_root_naming_a_file_says_it_is_a_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    (tmp_path / "images.tar").write_bytes(b"not a folder")
    cfg = imagenet_config(tmp_path, tmp_path / "images.tar")
    refused(cfg, words=["data.root", f"'{tmp_path / 'images.tar'}' is a file, not a folder"], runs=tmp_path / "runs",
            capsys=capsys)
    cfg = imagenet_config(tmp_path, _folder(tmp_path, "plain"), class_index=str(tmp_path))
    refused(cfg, words=["data.class_index", f"'{tmp_path}' is a folder, not a file"], runs=tmp_path / "runs",
            capsys=capsys)
