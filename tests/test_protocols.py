"""The evaluation protocols on hand-computed small cases: majority vote, logit-averaged ensemble,
any of N wrong, and the per-example worst case over the attack suite, with their intervals and
paired differences; then the attacks stage reporting them end to end."""
from __future__ import annotations

import math

import pytest
import torch

from dbp_core.config import loads_config
from dbp_core.runner import run_study
from dbp_core.store import RunStore
from dbp_core.stages.attacks import n_purification_outcomes, summarize, vote
from dbp_core.stats import paired_difference, wilson_interval
from tests.conftest import DWBOX, PGD_EOT, attack_study_toml, tiny_toml


def test_n_purification_outcomes_by_hand():
    # 3 purifications of 2 examples, 3 classes; labels y = [0, 2]
    logits = torch.tensor([
        [[2.0, 1.0, 0.0], [0.0, 0.0, 1.0]],   # purification 0: predicts 0 (right), 2 (right)
        [[0.0, 3.0, 0.0], [0.0, 5.0, 0.0]],   # purification 1: predicts 1 (wrong), 1 (wrong)
        [[1.5, 1.0, 0.0], [0.0, 0.0, 3.0]],   # purification 2: predicts 0 (right), 2 (right)
    ])
    y = torch.tensor([0, 2])
    out = n_purification_outcomes(logits, y)
    assert out["avg"].tolist() == pytest.approx([2 / 3, 2 / 3])
    assert out["worst"].tolist() == [0.0, 0.0]  # any of N wrong: both broken
    assert out["majority"].tolist() == [1.0, 1.0]  # 2 of 3 votes right
    # ensemble: mean logits [1.17, 1.67, 0] -> class 1 (wrong); [0, 1.67, 1.33] -> class 1 (wrong)
    assert out["ensemble"].tolist() == [0.0, 0.0]


def test_majority_ties_go_to_the_lowest_class():
    preds = torch.tensor([[2, 1], [1, 1], [2, 0], [1, 0]])  # example 0: 2 votes for 1 and 2; example 1: 2 and 2
    assert vote(preds, 3).tolist() == [1, 0]


def study_cfg(protocols, seeds=1, attacks=None):
    attacks = attacks or [{"kind": "pgd-eot", "name": "a", "eps": 0.1}, {"kind": "pgd", "name": "b", "eps": 0.1},
                          {"kind": "dwbox", "name": "d", "eps": 0.1},
                          {"kind": "pgd", "name": "c", "norm": "l2", "eps": 0.5}]
    return loads_config(tiny_toml(stages=["attacks"], attacks=attacks,
                                  evaluation={"protocols": protocols, "seeds": seeds, "n_repurify": 3}))


def outcomes(seeds=1):
    """Hand-written per-example outcomes of 3 attacks on 5 examples."""
    base = {"a": {"single": [1, 1, 0, 1, 0], "majority": [1, 1, 1, 0, 0], "ensemble": [1, 0, 1, 1, 0],
                  "repurify-worst": [1, 0, 0, 0, 0], "repurify-avg": [1, 2 / 3, 1 / 3, 1 / 3, 0],
                  "purified": [1, 1, 1, 1, 0], "purified-worst": [1, 1, 0, 1, 0],
                  "purified-majority": [1, 1, 1, 1, 0], "purified-ensemble": [1, 1, 1, 1, 1]},
            "b": {"single": [1, 0, 1, 1, 0], "majority": [1, 0, 1, 1, 1], "ensemble": [1, 1, 0, 1, 0],
                  "repurify-worst": [0, 0, 1, 0, 0], "repurify-avg": [2 / 3, 1 / 3, 1, 1 / 3, 0],
                  "purified": [1, 1, 1, 1, 0], "purified-worst": [1, 1, 0, 1, 0],
                  "purified-majority": [1, 1, 1, 1, 0], "purified-ensemble": [1, 1, 1, 1, 1]},
            "c": {"single": [0, 0, 0, 0, 0], "majority": [0, 0, 0, 0, 0], "ensemble": [0, 0, 0, 0, 0],
                  "repurify-worst": [0, 0, 0, 0, 0], "repurify-avg": [0, 0, 0, 0, 0],
                  "purified": [1, 1, 1, 1, 0], "purified-worst": [1, 1, 0, 1, 0],
                  "purified-majority": [1, 1, 1, 1, 0], "purified-ensemble": [1, 1, 1, 1, 1]}}
    out = {}
    for s in range(seeds):
        for name, o in base.items():
            # seed 1 flips example 0 of attack a's single outcome
            out[f"{name}/{s}"] = {k: ([0] + v[1:] if (s == 1 and name == "a" and k == "single") else list(v))
                                  for k, v in o.items()}
    return out


def rows_of(result):
    return {(r["attack"], r["protocol"]): r for r in result["accuracies"]}


def comparison(result, a, b):
    return next(c for c in result["comparisons"] if c["a"] == a and c["b"] == b)


def test_worst_case_over_the_suite_by_hand():
    cfg = study_cfg(["single", "majority", "ensemble", "any-wrong", "repurify", "worst-case"])
    res = summarize(cfg, outcomes(), 5)
    rows = rows_of(res)
    # the suite groups a and b (linf 0.1); c (l2) and d (DW-box, who knows the noise) are alone: no
    # worst-case row for them
    suite = "suite-linf-0.1"
    assert {k for k in rows if k[1].startswith("worst-case")} == {
        (suite, "worst-case"), (suite, "worst-case-avg"), (suite, "worst-case-majority"), (suite, "worst-case-ensemble")}
    wc = rows[(suite, "worst-case")]  # min of a and b single: [1,0,0,1,0]
    assert (wc["correct"], wc["n"]) == (2, 5) and wc["accuracy"] == pytest.approx(0.4)
    assert (wc["ci_low"], wc["ci_high"]) == pytest.approx(wilson_interval(2, 5))
    assert wc["attacks"] == ["a", "b"]
    assert rows[(suite, "worst-case-majority")]["accuracy"] == pytest.approx(2 / 5)  # [1,0,1,0,0]
    assert rows[(suite, "worst-case-ensemble")]["accuracy"] == pytest.approx(2 / 5)  # [1,0,0,1,0]
    avg = rows[(suite, "worst-case-avg")]  # min of the shares: [2/3, 1/3, 1/3, 1/3, 0]
    assert avg["mean"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3 + 1 / 3) / 5)
    # paired differences: the suite against each attack on the same examples
    d = comparison(res, f"{suite}:worst-case", "a:single")
    ref = paired_difference([1, 0, 0, 1, 0], [1, 1, 0, 1, 0])
    assert d["what"] == "worst case over the suite vs one attack"
    assert (d["diff"], d["ci_low"], d["ci_high"]) == pytest.approx((ref["diff"], ref["ci_low"], ref["ci_high"]))
    assert d["diff"] == pytest.approx(-0.2)


def test_any_wrong_is_the_worst_of_n_and_each_protocol_is_paired_with_its_baseline():
    cfg = study_cfg(["single", "majority", "ensemble", "any-wrong"])
    res = summarize(cfg, outcomes(), 5)
    rows = rows_of(res)
    assert rows[("a", "any-wrong")]["correct"] == 1  # repurify-worst [1,0,0,0,0]
    assert rows[("a", "purified-any-wrong")]["correct"] == 3
    assert rows[("a", "ensemble")]["correct"] == 3 and rows[("a", "purified-ensemble")]["correct"] == 5
    assert rows[("a", "majority")]["correct"] == 3 and rows[("a", "purified-majority")]["correct"] == 4
    for attacked, baseline, what in [("majority", "purified-majority", "majority of N"),
                                     ("ensemble", "purified-ensemble", "ensemble of N"),
                                     ("any-wrong", "purified-any-wrong", "any of N wrong")]:
        c = comparison(res, f"a:{attacked}", f"a:{baseline}")
        assert c["what"] == f"attack vs no attack, {what}"
    c = comparison(res, "a:ensemble", "a:single")
    ref = paired_difference([1, 0, 1, 1, 0], [1, 1, 0, 1, 0])
    assert c["what"] == "ensemble of N vs single purification"
    assert (c["diff"], c["ci_low"], c["ci_high"]) == pytest.approx((ref["diff"], ref["ci_low"], ref["ci_high"]))
    assert "repurify-worst" not in {r["protocol"] for r in res["accuracies"]}  # only the protocols asked for
    assert not any(k[1].startswith("worst-case") for k in rows)


def test_worst_case_pools_seeds_per_example():
    cfg = study_cfg(["single", "worst-case"], seeds=2)
    res = summarize(cfg, outcomes(seeds=2), 5)
    wc = rows_of(res)[("suite-linf-0.1", "worst-case")]
    # seed 0: [1,0,0,1,0]; seed 1: a's example 0 is wrong -> [0,0,0,1,0]
    assert wc["n"] == 10 and wc["correct"] == 3 and wc["per_seed"] == pytest.approx([0.4, 0.2])
    assert wc["seeds"] == 2 and wc["ci_low"] <= 0.3 <= wc["ci_high"]


def test_new_protocols_end_to_end(tmp_path):
    attacks = [PGD_EOT, {**PGD_EOT, "kind": "pgd", "eot": 1}, DWBOX]
    text = attack_study_toml(n=12, batch=6, attacks=attacks,
                             evaluation={"protocols": ["purified", "single", "majority", "ensemble", "any-wrong",
                                                       "repurify", "worst-case"], "n_repurify": 3})
    cfg = loads_config(text, base_dir=str(tmp_path))
    r = RunStore(tmp_path / "runs").create(cfg)
    assert run_study(r, cfg) == "done", r.read_log_tail(40)
    res = r.read_results()
    rows = rows_of(res)
    per = res["stages"]["attacks"]["per_example"]
    for name in ("pgd-eot-linf", "dwbox-linf"):
        assert rows[(name, "any-wrong")]["correct"] == sum(per[f"{name}/0"]["repurify-worst"])
        assert rows[(name, "ensemble")]["correct"] == sum(per[f"{name}/0"]["ensemble"])
        assert rows[(name, "any-wrong")]["accuracy"] <= rows[(name, "majority")]["accuracy"]
    wc = rows[("suite-linf-0.1", "worst-case")]
    singles = [per[f"{a}/0"]["single"] for a in ("pgd-eot-linf", "pgd-linf")]
    assert wc["correct"] == sum(min(v) for v in zip(*singles))
    assert wc["accuracy"] <= min(rows[(a, "single")]["accuracy"] for a in ("pgd-eot-linf", "pgd-linf"))
    assert not any(k[0].startswith("suite") and k[0] != "suite-linf-0.1" for k in rows)  # DW-box is alone
    assert not math.isnan(wc["ci_low"])


def test_every_new_kind_runs_in_the_attacks_stage(tmp_path):
    """apgd (margin), apgd-t, apgd-eot, autoattack-rand (BPDA gradient), autoattack-standard
    (the replayed defence) and diffattack through the stage: rows, undefended baselines and AutoAttack's flags."""
    attacks = [{"kind": "apgd", "eps": 0.1, "iterations": 4, "loss": "margin", "eot": 2},
               {"kind": "apgd-t", "eps": 0.1, "iterations": 3, "targets": 2},
               {"kind": "apgd-eot", "eps": 0.1, "iterations": 3, "eot": 2, "selection_samples": 3},
               {"kind": "autoattack-rand", "eps": 0.1, "iterations": 3, "eot": 2, "evaluations": 3, "gradient": "bpda"},
               {"kind": "autoattack-standard", "eps": 0.1, "iterations": 3, "queries": 20},
               {"kind": "diffattack", "eps": 0.1, "iterations": 3, "eot": 2, "evaluations": 3}]
    text = attack_study_toml(n=6, batch=6, attacks=attacks, evaluation={"protocols": ["purified", "undefended",
                                                                                      "single", "worst-case"]})
    cfg = loads_config(text, base_dir=str(tmp_path))
    r = RunStore(tmp_path / "runs").create(cfg)
    assert run_study(r, cfg) == "done", r.read_log_tail(60)
    rows = rows_of(r.read_results())
    for a in cfg.attacks:
        assert rows[(a.name, "single")]["n"] == 6 and (a.name, "undefended") in rows
        assert rows[(a.name, "single")]["accuracy"] <= rows[(a.name, "purified")]["accuracy"] + 0.5
    assert ("suite-linf-0.1", "worst-case") in rows and ("suite-linf-0.1-replay", "worst-case") not in rows
