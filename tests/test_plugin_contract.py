"""The plugin contract (docs/plugins.md): seeded and noise-aware plugin attacks, `dbp check` calling
every plugin once, every output checked in a run, the plugin code recorded and checked on resume,
plugins that end the process or hang while imported."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dbp_core import cli
from dbp_core.attacks.plugin import PluginAttack, check_adversarial
from dbp_core.attacks.registry import build_attack
from dbp_core.config import AttackConfig, load_config, loads_config
from dbp_core.plugins import PluginError
from dbp_core.store import Run, RunStore
from tests.conftest import DWBOX, attack_study_toml, run_toml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"


def main(*argv, capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def env(**extra) -> dict:
    e = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)
    e.pop("DBP_RUNS_DIR", None)
    return e


def folders(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def doc_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture
def doc_plugins(tmp_path, monkeypatch):
    """docs/plugins.md's examples as written there: mydefence.py and the experiment, in a folder that
    is the working directory (so `mydefence` imports as the docs say)."""
    module = "\n".join(b for b in doc_blocks("python") if b.startswith("# mydefence.py"))
    (tmp_path / "mydefence.py").write_text(module, encoding="utf-8")
    [toml] = doc_blocks("toml")
    (tmp_path / "my.toml").write_text(toml, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("mydefence", None)
    yield tmp_path
    sys.modules.pop("mydefence", None)


def outcomes(run_path: Path) -> dict:
    results = json.loads((Path(run_path) / "results.json").read_text())
    return {"accuracies": results["accuracies"], "comparisons": results["comparisons"],
            "per_example": results["stages"]["attacks"]["per_example"]}


def _scramble_global_rngs(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    torch.rand(seed % 17 + 1)  # and advance them a different amount


# --------------------------------------------------------------------------- seeded, noise-aware attacks

def test_the_documented_plugins_give_identical_results_whatever_the_global_rngs(doc_plugins, capsys):
    runs = doc_plugins / "runs"
    paths = []
    for seed in (1, 2):
        _scramble_global_rngs(seed)
        code, out, err = main("--runs-dir", runs, "run", doc_plugins / "my.toml", "--no-progress", capsys=capsys)
        assert code == 0, err
        paths.append(out.strip().splitlines()[-1])
    a, b = outcomes(paths[0]), outcomes(paths[1])
    assert a == b
    names = {row["attack"] for row in a["accuracies"] if row.get("attack")}
    assert names == {"fgsm-linf", "fgsm_known_noise-linf"}
    # the noise-aware FGSM declared noise = "replay": its config says so and it is judged under fresh noise too
    cfg = load_config(doc_plugins / "my.toml")
    assert [x.noise for x in cfg.attacks] == ["stochastic", "replay"]
    assert {r["protocol"] for r in a["accuracies"] if r.get("attack") == "fgsm_known_noise-linf"} >= {"fresh-noise"}
    assert not any(r["protocol"] == "fresh-noise" for r in a["accuracies"] if r.get("attack") == "fgsm-linf")
    # the plugin's own report reached metrics.jsonl (the console's curves)
    lines = [json.loads(x) for x in (Path(paths[0]) / "metrics.jsonl").read_text().splitlines()]
    assert any(m["kind"] == "attack_iter" and m.get("attack") == "fgsm_known_noise-linf" for m in lines)


def test_a_plugin_drawing_from_the_global_rngs_is_reproducible(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    cfg = tmp_path / "rs.toml"
    cfg.write_text(attack_study_toml(n=12, batch=4, attacks=[{"kind": "tests.contract_plugins:random_start_fgsm",
                                                                   "eps": 0.1}],
                                     evaluation={"protocols": ["single", "purified"]}))
    paths = []
    for seed in (5, 6):
        _scramble_global_rngs(seed)
        code, out, err = main("--runs-dir", tmp_path / "runs", "run", cfg, "--no-progress", capsys=capsys)
        assert code == 0, err
        paths.append(out.strip().splitlines()[-1])
    assert outcomes(paths[0]) == outcomes(paths[1])


def test_a_plugin_attack_leaves_the_global_rngs_as_they_were():
    from tests.plugins import QuadrantClassifier
    from dbp_core.attacks.base import PlainModel
    acfg = AttackConfig(kind="tests.contract_plugins:random_start_fgsm", eps=0.1)
    attack = PluginAttack(acfg, eval_seed=1, attack_seed=2)
    x, y, uids = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), torch.arange(4)
    model = PlainModel(QuadrantClassifier())
    _scramble_global_rngs(9)
    expected = (torch.rand(3), np.random.rand(), random.random())
    _scramble_global_rngs(9)
    first = attack(model, x, y, uids)
    assert torch.equal(torch.rand(3), expected[0]) and np.random.rand() == expected[1] and random.random() == expected[2]
    _scramble_global_rngs(10)
    assert torch.equal(attack(model, x, y, uids), first)  # whatever they held


def test_the_noise_aware_example_equals_the_builtin_dwbox(doc_plugins):
    """docs/plugins.md: FGSM replaying the defence's noise is DW-box with iterations = 1, step = eps —
    the same adversarial examples on the same batch, bit for bit."""
    from dbp_core.attacks.gradients import attacker_view
    from dbp_core.models.defended import DefendedClassifier
    from dbp_core.purifier import noise
    from dbp_core.stages.context import Resources

    cfg = load_config(doc_plugins / "my.toml")
    res = Resources(cfg)
    data = res.data()
    x, y, uids = data.x[:10], data.y[:10], data.uids[:10]
    defended = DefendedClassifier(res.classifier(), res.purifier(noise.stochastic()))
    plugin = PluginAttack(cfg.attacks[1], eval_seed=1234, attack_seed=99)
    dwbox = build_attack(AttackConfig(kind="dwbox", eps=0.2, step=0.2, iterations=1), eval_seed=1234, attack_seed=99)
    a = plugin(attacker_view(defended, "exact"), x, y, uids)
    b = dwbox(defended, x, y, uids)
    assert torch.equal(a, b)
    assert not torch.equal(a, x)
    # under another evaluation seed the replayed noise, hence the examples, differ
    other = PluginAttack(cfg.attacks[1], eval_seed=4321, attack_seed=99)(defended, x, y, uids)
    assert not torch.equal(other, a)


def test_the_noise_aware_example_matches_dwbox_in_a_run(doc_plugins, capsys):
    """One run of the plugin and one of dwbox (iterations 1, step eps) under the same attack name:
    the same evaluation seed, so the same per-example outcomes."""
    base = loads_config((doc_plugins / "my.toml").read_text())
    runs = doc_plugins / "runs"
    per = []
    for attack in ('{kind = "mydefence:fgsm_known_noise", eps = 0.2, name = "fgsm1"}',
                   '{kind = "dwbox", eps = 0.2, step = 0.2, iterations = 1, name = "fgsm1"}'):
        code, out, err = main("--runs-dir", runs, "run", doc_plugins / "my.toml", "--set", f"attacks=[{attack}]",
                              "--no-progress", capsys=capsys)
        assert code == 0, err
        per.append(json.loads((Path(out.strip().splitlines()[-1]) / "results.json").read_text())
                   ["stages"]["attacks"]["per_example"])
    assert per[0] == per[1] and base.name == "my-fgsm"


def test_a_plugin_declaration_contradicted_by_the_config_is_an_error(doc_plugins):
    with pytest.raises(Exception) as info:
        loads_config((doc_plugins / "my.toml").read_text(), overrides=['attacks.1.noise="stochastic"'])
    assert "declares noise = 'replay'" in str(info.value) and "attacks[1].noise" in str(info.value)


def test_a_plugin_written_to_the_old_signature_gets_no_context(doc_plugins):
    cfg = load_config(doc_plugins / "my.toml")
    assert not PluginAttack(cfg.attacks[0], eval_seed=0, attack_seed=0).wants_context
    assert PluginAttack(cfg.attacks[1], eval_seed=0, attack_seed=0).wants_context


# --------------------------------------------------------------------------- only what was asked

def _eps_calls(tmp_path, capsys, protocols, n_repurify) -> tuple[int, dict]:
    from tests.contract_plugins import _CountingEps
    cfg = tmp_path / f"count-{n_repurify}-{len(protocols)}.toml"
    cfg.write_text(attack_study_toml(n=8, batch=4, models={"diffusion": "tests.contract_plugins:counting_eps"},
                                     attacks=[DWBOX], evaluation={"protocols": protocols, "n_repurify": n_repurify}))
    _CountingEps.calls = 0
    code, out, err = main("--runs-dir", tmp_path / "runs", "run", cfg, "--no-progress", capsys=capsys)
    assert code == 0, err
    return _CountingEps.calls, outcomes(out.strip().splitlines()[-1])


def test_protocols_not_listed_are_not_computed_nor_stored(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    asked = ["clean", "purified", "undefended", "single", "fresh-noise"]
    calls_10, out_10 = _eps_calls(tmp_path, capsys, asked, 10)
    calls_1, out_1 = _eps_calls(tmp_path, capsys, asked, 1)
    assert calls_10 == calls_1  # n_repurify costs nothing when no N-purification protocol is listed
    assert out_10 == out_1
    [stored] = out_10["per_example"].values()
    assert set(stored) == {"single", "purified", "fresh-noise", "undefended", "clean"}
    calls_rep, out_rep = _eps_calls(tmp_path, capsys, asked + ["repurify"], 10)
    assert calls_rep > calls_10  # asked for: computed
    [stored] = out_rep["per_example"].values()
    assert {"repurify-avg", "repurify-worst", "purified-avg", "purified-worst"} <= set(stored)
    assert not {"majority", "ensemble"} & set(stored)
    # the outcomes that both compute are the same numbers
    for k in ("single", "purified", "fresh-noise"):
        assert stored[k] == next(iter(out_10["per_example"].values()))[k]


def test_report_and_compare_pair_only_rows_both_runs_have(tmp_path, monkeypatch, capsys):
    from dbp_core.results import paired_between, read_run
    monkeypatch.chdir(ROOT)
    _, _ = _eps_calls(tmp_path, capsys, ["single", "purified", "repurify", "majority"], 3)
    _, _ = _eps_calls(tmp_path, capsys, ["single", "purified"], 3)
    views = [read_run(r.path) for r in RunStore(tmp_path / "runs").list()]
    [a] = [v for v in views if "majority" in v.config["evaluation"]["protocols"]]
    [b] = [v for v in views if "majority" not in v.config["evaluation"]["protocols"]]
    rows, why = paired_between(b, a)
    assert why is None
    assert {r["protocol"] for r in rows} == {"single", "purified"}
    rows, _ = paired_between(a, a)
    assert {"repurify-worst", "majority", "purified-majority"} <= {r["protocol"] for r in rows}


# --------------------------------------------------------------------------- dbp check calls the plugins

CHECK_CASES = [
    ("classifier raises", {"models": {"classifier": "tests.contract_plugins:check_raising_classifier"}},
     "models.classifier", "RuntimeError: the classifier plugin fails on its first batch"),
    ("classifier [B, 3]", {"models": {"classifier": "tests.contract_plugins:check_three_logits_always"}},
     "models.classifier", "returned logits of shape (2, 3) for a batch of 2; expected [2, 4]"),
    ("classifier NaN", {"models": {"classifier": "tests.contract_plugins:check_nan_classifier"}},
     "models.classifier", "NaN/inf"),
    ("classifier factory None", {"models": {"classifier": "tests.contract_plugins:check_none_factory"}},
     "models.classifier", "returned NoneType; expected a torch.nn.Module"),
    ("diffusion wrong shape", {"models": {"diffusion": "tests.contract_plugins:check_wrong_shape_eps"}},
     "models.diffusion", "returned shape (2, 1, 4, 8) for x_t of shape (2, 1, 8, 8)"),
    ("attack wrong shape", {"attacks": [{"kind": "tests.contract_plugins:late_wrong_shape"}],
                            "data": {"first": 4}}, "attacks[0].kind", "shape (2, 1, 4, 8)"),
]


@pytest.mark.parametrize("case,sections,field,words", CHECK_CASES, ids=[c[0] for c in CHECK_CASES])
def test_check_calls_each_plugin_and_run_leaves_no_folder(tmp_path, monkeypatch, capsys, case, sections, field,
                                                          words):
    monkeypatch.chdir(ROOT)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(attack_study_toml(n=8, batch=4, **sections))
    runs = tmp_path / "runs"
    for command in ("check", "run"):
        code, _, err = main("--runs-dir", runs, command, cfg, capsys=capsys)
        assert code == 2, (command, err)
        assert f"{field}:" in err and words in err, err
        assert "Traceback" not in err
    assert folders(runs) == []


def test_device_cuda_on_a_cpu_torch_is_a_clear_exit_2(tmp_path, monkeypatch, capsys):
    """With attacks, so the memory preflight (which asks the GPU for its free memory) runs too."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    cfg = tmp_path / "cuda.toml"
    cfg.write_text('name = "x"\ndevice = "cuda"\nstages = ["attacks"]\n[data]\nn_examples = 8\n'
                   '[[attacks]]\nkind = "pgd"\neps = 0.1\n')
    runs = tmp_path / "runs"
    for command in ("check", "run"):
        code, _, err = main("--runs-dir", runs, command, cfg, capsys=capsys)
        assert code == 2, err
        assert "device: got 'cuda'" in err and "built without CUDA" in err and "set device = 'cpu'" in err, err
        assert "Traceback" not in err
    assert folders(runs) == []


# --------------------------------------------------------------------------- every output checked in a run

RUN_CASES = [  # (case, config sections, words of the failure)
    ("attack wrong shape", {"attacks": [{"kind": "tests.contract_plugins:late_wrong_shape"}]},
     "returned a tensor of shape (4, 1, 4, 8); expected shape (4, 1, 8, 8)"),
    ("attack NaN", {"attacks": [{"kind": "tests.contract_plugins:late_nan"}]}, "NaN/inf value(s)"),
    ("attack int64", {"attacks": [{"kind": "tests.contract_plugins:late_int64"}]},
     "dtype torch.int64; expected dtype torch.float32"),
    ("attack x + 5", {"attacks": [{"kind": "tests.contract_plugins:late_outside"}]}, "values outside [0, 1]"),
    ("attack outside the eps-ball", {"attacks": [{"kind": "tests.contract_plugins:late_outside_ball", "eps": 0.05}]},
     "above eps = 0.05"),
    ("attack returns None", {"attacks": [{"kind": "tests.contract_plugins:late_none"}]}, "returned NoneType"),
    ("classifier [B, 3]", {"models": {"classifier": "tests.contract_plugins:late_three_logits"}},
     "expected [4, 4] (4 classes in the dataset)"),
    ("classifier one row", {"models": {"classifier": "tests.contract_plugins:late_one_row"}},
     "returned logits of shape (1, 4) for a batch of 4"),
    ("classifier NaN", {"models": {"classifier": "tests.contract_plugins:late_nan_logits"}}, "NaN/inf"),
    ("classifier int64", {"models": {"classifier": "tests.contract_plugins:late_int_logits"}},
     "logits of dtype torch.int64"),
]


@pytest.mark.parametrize("case,sections,words", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_a_plugin_that_misbehaves_in_the_run_fails_it_with_exit_2(tmp_path, monkeypatch, capsys, case, sections,
                                                                    words):
    monkeypatch.chdir(ROOT)
    sections = {"attacks": [{"kind": "tests.plugins:identity_attack"}], **sections}
    cfg = tmp_path / "late.toml"
    cfg.write_text(attack_study_toml(n=8, batch=4, **sections))
    runs = tmp_path / "runs"
    code, _, err = main("--runs-dir", runs, "check", cfg, capsys=capsys)
    assert code == 0, err  # fine on the two examples dbp check calls it on
    code, _, err = main("--runs-dir", runs, "run", cfg, "--no-progress", capsys=capsys)
    assert code == 2, err
    assert words in err and "Traceback" not in err, err
    [run] = RunStore(runs).list()
    status = run.read_status()
    assert status.state == "failed" and words in status.message
    if case.startswith("attack"):
        assert "plugin attack 'tests.contract_plugins:" in status.message and "batch 2 of 2: examples 4..7" in status.message
    else:
        assert "models.classifier = 'tests.contract_plugins:" in status.message
    assert not run.results_path.exists()


@pytest.mark.parametrize("plugin", ["late_os_exit", "late_os_exit_thread"])
def test_os_exit_in_a_plugin_leaves_the_run_failed_not_running(tmp_path, plugin):
    cfg = tmp_path / "exit.toml"
    cfg.write_text(attack_study_toml(n=8, batch=4, attacks=[{"kind": f"tests.contract_plugins:{plugin}"}]))
    runs = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "dbp_core", "--runs-dir", str(runs), "run", str(cfg), "--no-progress"],
                       cwd=ROOT, capture_output=True, text=True, env=env(), timeout=300)
    assert r.returncode == 1, (r.stdout, r.stderr)
    [run] = RunStore(runs).list()
    status = run.read_status(check_alive=False)  # as written on disk, not as a reader infers it
    assert status.state == "failed", status
    assert "os._exit(0)" in status.message and "a plugin must raise an exception" in status.message
    if plugin == "late_os_exit":
        assert "contract_plugins.py" in status.message and "os._exit(0)" in r.stderr


HANGS = {"import": {"attacks": [{"kind": "tests.hang_plugin:attack"}]},  # the module never finishes importing
         "call": {"models": {"classifier": "tests.contract_plugins:hanging_classifier"}}}  # dbp check's call loops


@pytest.mark.parametrize("where,command,sig", [("import", "check", signal.SIGINT), ("import", "run", signal.SIGINT),
                                               ("import", "run", signal.SIGTERM), ("call", "check", signal.SIGINT),
                                               ("call", "run", signal.SIGTERM)])
def test_a_plugin_that_hangs_in_dbp_check_stops_on_a_signal(tmp_path, where, command, sig):
    cfg = tmp_path / "hang.toml"
    cfg.write_text(attack_study_toml(n=8, batch=4, **HANGS[where]))
    mark, runs = tmp_path / "importing", tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "dbp_core", "--runs-dir", str(runs), command, str(cfg)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(DBP_TEST_HANG_MARK=str(mark)))
    try:
        deadline = time.monotonic() + 120
        while not mark.exists():  # the plugin's import or call has started (and will never end)
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the plugin module was never imported"
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert folders(runs) == []


# --------------------------------------------------------------------------- the plugin code belongs to the run

def test_resume_refuses_a_run_whose_plugin_changed_unless_allowed(tmp_path, monkeypatch, capsys):
    source = (ROOT / "tests" / "plugins.py").read_text()
    (tmp_path / "myplugins.py").write_text(source.replace("from tests.", "from tests."), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("myplugins", None)
    runs = tmp_path / "runs"
    cfg = loads_config(run_toml(n=8, batch=4, classifier="myplugins:tiny_classifier", diffusion="myplugins:tiny_eps",
                                data={"dataset": "myplugins:tiny_dataset"}), base_dir=str(tmp_path))
    run = RunStore(runs).create(cfg)  # queued: not started, resumable
    recorded = json.loads((run.path / "plugins.json").read_text())["plugins"]
    assert set(recorded) == {"data.dataset", "models.classifier", "models.diffusion"}
    assert recorded["models.classifier"]["file"] == str(tmp_path / "myplugins.py")
    before = recorded["models.classifier"]["sha256"]
    (tmp_path / "myplugins.py").write_text(source + "\n# edited\n", encoding="utf-8")
    code, _, err = main("--runs-dir", runs, "resume", run.id, capsys=capsys)
    assert code == 2, err
    assert "plugin code changed" in err and str(tmp_path / "myplugins.py") in err and before[:12] in err, err
    assert Run(run.path).read_status().state == "queued"  # the refusal left the run as it was
    code, _, err = main("--runs-dir", runs, "resume", run.id, "--allow-changed-code", "--no-progress", capsys=capsys)
    assert code == 0, err
    assert "resumed with changed plugin code" in run.log_path.read_text()
    data = json.loads((run.path / "plugins.json").read_text())
    assert data["plugins"]["models.classifier"]["sha256"] != before and data["accepted_changes"]
    sys.modules.pop("myplugins", None)


# --------------------------------------------------------------------------- the output check itself

def test_check_adversarial_measures_each_violation():
    x = torch.full((2, 1, 4, 4), 0.5)
    assert torch.equal(check_adversarial(x, x + 0.1, "linf", 0.1, "a"), x + 0.1)
    l2 = x.clone()
    l2[0, 0, 0, 0] += 0.3
    check_adversarial(x, l2, "l2", 0.3, "a")
    with pytest.raises(PluginError, match="moved an example 0.3 from x in l2, above eps = 0.2"):
        check_adversarial(x, l2, "l2", 0.2, "a")
    with pytest.raises(PluginError, match="above eps = 0.05"):
        check_adversarial(x, x + 0.1, "linf", 0.05, "a")
    with pytest.raises(PluginError, match="device"):
        check_adversarial(x, x.to("meta"), "linf", 0.1, "a")
