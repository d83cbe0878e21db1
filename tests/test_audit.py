"""The evaluation audit: its flags fire on a deliberately masked defence (the shipped digits
purifier followed by a quantisation, whose gradient is zero) and stay quiet on the honest digits
defence; the flags reach results.json, RunView.audit and `dbp show`."""
from __future__ import annotations

import pytest
import torch

from dbp_core import cli
from dbp_core.analysis import audit as rules
from dbp_core.config import loads_config
from dbp_core.purifier.purifier import Purifier
from dbp_core.results import check_results, read_run
from dbp_core.runner import run_study
from dbp_core.store import RunFileError, RunStore
from tests.conftest import attack_study_toml, digits_toml

DIGITS_AUDIT = digits_toml(
    "audit-digits", n=24, stages=("attacks", "audit"), protocols=["purified", "single"],
    attacks=[{"kind": "pgd-eot", "eps": 0.2, "step": 0.05, "iterations": 10, "eot": 4}],
    audit={"examples": 24, "noise_samples": 5, "eot_ks": [1, 4, 16, 64]})


def audited(tmp_path, monkeypatch=None, quantise=False):
    if quantise:  # a purifier followed by a 16-level quantisation: round() has a zero gradient everywhere
        forward = Purifier.forward
        monkeypatch.setattr(Purifier, "forward", lambda self, *a, **k: torch.round(forward(self, *a, **k) * 16) / 16)
    cfg = loads_config(DIGITS_AUDIT, base_dir=str(tmp_path))
    r = RunStore(tmp_path / "runs").create(cfg)
    assert run_study(r, cfg) == "done", r.read_log_tail(40)
    res = r.read_results()
    return r, res, {f["name"]: f for f in res["audit"]["flags"]}


@pytest.mark.slow
def test_audit_flags_a_masked_defence(tmp_path, monkeypatch):
    _, res, flags = audited(tmp_path, monkeypatch, quantise=True)
    assert flags["large-eps"]["raised"], flags["large-eps"]["summary"]  # (1) even eps = 1 does not break it
    assert flags["large-eps"]["numbers"]["accuracy"] > 0.5
    assert flags["gradient-approximations"]["raised"], flags["gradient-approximations"]["summary"]  # (4)
    assert "bpda" in flags["gradient-approximations"]["numbers"]["stronger"]
    assert flags["zero-gradients"]["raised"] and flags["zero-gradients"]["numbers"]["share"] == 1.0
    assert flags["random-noise"]["raised"]  # the attack does not even beat random noise
    # the attack left every example where it was: robust accuracy = purified accuracy
    per = res["stages"]["attacks"]["per_example"]["pgd-eot-linf/0"]
    assert per["single"] == per["purified"]


@pytest.mark.slow
def test_audit_is_quiet_on_the_honest_digits_defence(tmp_path, capsys, monkeypatch):
    r, res, flags = audited(tmp_path)
    assert set(flags) == {"large-eps", "more-iterations", "more-eot", "gradient-approximations", "random-noise",
                          "transfer", "eot-convergence", "zero-gradients"}
    assert not any(f["raised"] for f in flags.values()), [f["summary"] for f in flags.values() if f["raised"]]
    assert flags["large-eps"]["numbers"]["accuracy"] <= 0.1
    cos = flags["eot-convergence"]["numbers"]["cosine"]
    assert cos == sorted(cos) and cos[-1] > cos[0]  # independent estimates agree more as K grows
    # the audit's attack outcomes are the attacks stage's (the same seeds), so the pairs are real
    assert res["stages"]["audit"]["per_example"]["attack"] == \
        [float(v) for v in res["stages"]["attacks"]["per_example"]["pgd-eot-linf/0"]["single"]]
    view = read_run(r.path)
    assert view.audit["attack"] == "pgd-eot-linf" and len(view.audit["flags"]) == 8
    monkeypatch.setenv("DBP_RUNS_DIR", str(tmp_path / "runs"))
    assert cli.main(["show", r.id]) == 0
    out = capsys.readouterr().out
    assert "audit of pgd-eot-linf: 0 of 8 flags raised" in out
    assert "ok     large-eps" in out and "eot-convergence" in out


def test_audit_alone_computes_the_attack_with_the_attacks_stage_seeds(tmp_path):
    """Without the attacks stage before it, the audit runs the audited attack itself — with the
    attacks stage's seeds, so its outcomes are the same."""
    audit = {"attack": "dwbox-linf", "examples": 8, "checks": ["more-iterations", "more-eot", "eot-convergence"]}
    text = attack_study_toml(n=8, batch=8, stages=("attacks", "audit"), audit=audit)
    cfg = loads_config(text, base_dir=str(tmp_path))
    r = RunStore(tmp_path / "a").create(cfg)
    assert run_study(r, cfg) == "done", r.read_log_tail(40)
    both = r.read_results()
    cfg2 = loads_config(attack_study_toml(n=8, batch=8, stages=("audit",), audit=audit), base_dir=str(tmp_path))
    r2 = RunStore(tmp_path / "b").create(cfg2)
    assert run_study(r2, cfg2) == "done", r2.read_log_tail(40)
    alone = r2.read_results()
    assert alone["stages"]["audit"]["per_example"] == both["stages"]["audit"]["per_example"]
    flags = {f["name"]: f for f in alone["audit"]["flags"]}
    # DW-box replays the noise: EOT does not apply, and one gradient is exact
    assert not flags["more-eot"]["raised"] and "deterministic" in flags["more-eot"]["summary"]
    assert flags["eot-convergence"]["numbers"]["ks"] == [1] and flags["eot-convergence"]["numbers"]["cosine"] == [1.0]
    assert "accuracies" not in alone["stages"]["audit"]  # no rows: the headline stays the attack's


def test_flag_rules_on_hand_made_outcomes():
    base = [1.0] * 10 + [0.0] * 30
    worse = [0.0] * 40
    f = rules.paired_flag("more-iterations", "x", base, worse, 0.95)
    assert f["raised"] and "not converged" in f["summary"] and f["numbers"]["diff"] == pytest.approx(-0.25)
    assert not rules.paired_flag("more-iterations", "x", base, list(base), 0.95)["raised"]
    assert rules.paired_flag("more-eot", "x", worse, base, 0.95)["raised"]  # higher beyond the interval too
    assert rules.large_eps_flag([0.0] * 19 + [1.0], 0.1, 1.0, 0.1, 0.95)["raised"] is False
    assert rules.large_eps_flag([0.0] * 17 + [1.0] * 3, 0.1, 1.0, 0.1, 0.95)["raised"] is True
    a = rules.approximation_flag(base, {"bpda": worse, "blind": base}, 0.95)
    assert a["raised"] and a["numbers"]["stronger"] == ["bpda"]
    assert rules.random_noise_flag(worse, [1.0] * 40, 10, 0.95)["raised"] is False
    assert rules.random_noise_flag(base, base, 10, 0.95)["raised"] is True  # not weaker than the attack
    assert rules.transfer_flag(base, worse, 0.95)["raised"] and not rules.transfer_flag(worse, base, 0.95)["raised"]
    # 1/K law: cos_K = 1 / (1 + r / K) with r = 10 reaches 0.9 at K = 90
    conv = {"ks": [1, 2, 4, 8], "cosine": [1 / (1 + 10 / k) for k in (1, 2, 4, 8)], "zero_share": 0.0}
    e = rules.eot_convergence_flag(conv, 0.9, 8, 1000, False)
    assert not e["raised"] and e["numbers"]["k_extrapolated"] == pytest.approx(90)
    assert rules.eot_convergence_flag(conv, 0.9, 8, 50, False)["raised"]
    flat = {"ks": [1, 4, 16], "cosine": [0.05, 0.04, 0.05], "zero_share": 0.0}
    assert rules.eot_convergence_flag(flat, 0.9, 8, 10 ** 9, False)["raised"]
    assert rules.zero_gradient_flag(0.25, 4)["raised"] and not rules.zero_gradient_flag(0.0, 4)["raised"]


def test_results_audit_shape_is_checked():
    good = {"audit": {"attack": "a", "flags": [{"name": "x", "raised": False, "summary": "s", "numbers": {}}]}}
    assert check_results(good) is good
    for bad, field in [({"audit": {"flags": []}}, "audit.attack"),
                       ({"audit": {"attack": "a", "flags": [{"name": "x", "raised": 1, "summary": "s", "numbers": {}}]}},
                        "audit.flags[0].raised"),
                       ({"audit": {"attack": "a", "flags": [{"name": "x", "raised": True, "summary": "a\nb",
                                                             "numbers": {}}]}}, "audit.flags[0].summary"),
                       ({"audit": {"attack": "a", "flags": [{"name": "x", "raised": True, "summary": "s"}]}},
                        "audit.flags[0].numbers")]:
        with pytest.raises(RunFileError, match=field.replace("[", r"\[").replace("]", r"\]")):
            check_results(bad)
