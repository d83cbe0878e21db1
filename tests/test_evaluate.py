"""The attacks stage end to end on tiny plugin models: protocol rows, intervals,
per-iteration metrics, and invariance to batch size and example order."""
import json

import pytest

from dbp_core.config import loads_config
from dbp_core.runner import run_study
from dbp_core.stats import paired_difference
from dbp_core.store import RunStore, read_metrics
from tests.conftest import attack_study_toml, digits_toml




def run(tmp_path, n=24, batch=8, first=0, seeds=1):
    cfg = loads_config(attack_study_toml(n=n, batch=batch, first=first, seeds=seeds), base_dir=str(tmp_path))
    r = RunStore(tmp_path / "runs").create(cfg)
    assert run_study(r, cfg) == "done", r.read_log_tail(40)
    return r, r.read_results()


def by_key(results):
    return {(row["attack"], row["protocol"]): row for row in results["accuracies"]}


def test_attack_stage_reports_every_protocol_with_intervals(tmp_path):
    r, res = run(tmp_path)
    rows = by_key(res)
    for attack in ("pgd-eot-linf", "dwbox-linf"):
        for protocol in ("single", "repurify-avg", "repurify-worst", "majority", "undefended", "purified"):
            row = rows[(attack, protocol)]
            assert row["n"] == 24 and row["ci_low"] <= row["accuracy"] <= row["ci_high"]
    assert ("dwbox-linf", "fresh-noise") in rows and ("pgd-eot-linf", "fresh-noise") not in rows
    # worst case over re-purifications can only be lower than the average
    assert rows[("pgd-eot-linf", "repurify-worst")]["accuracy"] <= rows[("pgd-eot-linf", "repurify-avg")]["accuracy"]
    whats = {c["what"] for c in res["comparisons"]}
    assert {"attack vs no attack", "replayed vs fresh noise", "attack vs attack"} <= whats
    # per-iteration attacker view streamed for live curves: 2 attacks x 3 batches x 3 iterations
    iters = [m for m in read_metrics(r.path / "metrics.jsonl")[0] if m["kind"] == "attack_iter"]
    assert len(iters) == 2 * 3 * 3
    assert {m["attack"] for m in iters} == {"pgd-eot-linf", "dwbox-linf"}
    assert all(0.0 <= m["success"] <= 1.0 and m["loss"] == m["loss"] for m in iters)


def test_results_do_not_depend_on_batch_size_or_order(tmp_path):
    _, a = run(tmp_path / "a", batch=8)
    _, b = run(tmp_path / "b", batch=32)
    _, c = run(tmp_path / "c", batch=7, first=4, n=20)
    strip = lambda res: json.dumps(res["stages"]["attacks"]["per_example"], sort_keys=True)  # noqa: E731
    assert strip(a) == strip(b)
    # uids 4..23 in other batches, with other neighbours: the same per-example outcomes
    per_c = c["stages"]["attacks"]["per_example"]
    per_a = a["stages"]["attacks"]["per_example"]
    for key, outcomes in per_a.items():
        for protocol, values in outcomes.items():
            assert per_c[key][protocol] == values[4:], (key, protocol)


def test_seeds_are_pooled_and_reported_per_seed(tmp_path):
    _, res = run(tmp_path, seeds=2, n=16)
    row = by_key(res)[("pgd-eot-linf", "single")]
    assert row["n"] == 32 and len(row["per_seed"]) == 2 and row["seeds"] == 2


def test_paired_difference_interval():
    # no discordant pair among 4 is weak evidence of equality, not certainty: the interval is not a point
    same = paired_difference([1, 0, 1, 1], [1, 0, 1, 1])
    assert same["diff"] == 0 and same["ci_low"] < 0 < same["ci_high"]
    # Agresti-Min by hand: 50 pairs (1, 0), 50 pairs (0, 0); add 1/2 to every cell
    d = paired_difference([1] * 50 + [0] * 50, [0] * 100)
    p10, p01 = 50.5 / 102, 0.5 / 102
    half = 1.959963984540054 * ((p10 + p01 - (p10 - p01) ** 2) / 102) ** 0.5
    assert d["diff"] == 0.5
    assert d["ci_low"] == pytest.approx(p10 - p01 - half) and d["ci_high"] == pytest.approx(p10 - p01 + half)
    with pytest.raises(ValueError):
        paired_difference([1], [1, 0])


def test_pooled_seeds_make_intervals_over_examples_not_pairs():
    """Repeating the same 50 examples under 4 seeds is not 200 independent draws."""
    from dbp_core.stats import accuracy_row, per_example_means
    outcome = [1] * 30 + [0] * 20  # each example behaves the same under every seed
    pooled = outcome * 4
    assert per_example_means(pooled, 4) == [float(v) for v in outcome]
    naive = accuracy_row("single", sum(pooled), 200, stage="attacks")
    row = accuracy_row("single", sum(pooled), 200, stage="attacks", seeds=4, pooled=pooled)
    fifty = accuracy_row("single", sum(outcome), 50, stage="attacks")
    assert row["accuracy"] == naive["accuracy"] == 0.6
    assert row["ci_high"] - row["ci_low"] >= fifty["ci_high"] - fifty["ci_low"] - 1e-12
    assert row["ci_high"] - row["ci_low"] > 1.5 * (naive["ci_high"] - naive["ci_low"])
    a, b = [1, 1, 0, 1] * 3, [0, 1, 0, 1] * 3  # 3 seeds of 4 examples
    d = paired_difference(a, b, seeds=3)
    assert d["examples"] == 4 and d["diff"] == pytest.approx(0.25)


def test_analysis_stage_writes_trajectory_and_landscape(tmp_path):
    text = attack_study_toml(n=4, batch=4, stages=["analysis"],
                             analysis={"trajectory": True, "landscape": True, "examples": 3, "landscape_grid": 5,
                                       "landscape_dims": 2})
    cfg = loads_config(text, base_dir=str(tmp_path))
    r = RunStore(tmp_path / "runs").create(cfg)
    assert run_study(r, cfg) == "done", r.read_log_tail(40)
    traj = json.loads((r.path / "analysis" / "trajectory.json").read_text())
    stoch, replayed = traj["stochastic"], traj["replayed"]
    assert len(stoch["loss"]) == 3 and len(replayed["loss"]) == 3
    # different purifications disagree somewhat; one replayed purification has no replica spread
    assert -1 <= stoch["cos_replicas"][0] < 1 and stoch["grad_rel_var"][0] > 0
    assert replayed["cos_replicas"][0] != replayed["cos_replicas"][0]  # nan: a single replica
    land = json.loads((r.path / "analysis" / "landscape.json").read_text())
    assert len(land["fixed"]) == 5 and len(land["fixed"][0]) == 5
    assert land["fixed"] != land["fresh"]
    # the centre of the fixed-noise grid is the loss at x itself with the fixed seed: finite
    assert land["fixed"][2][2] == land["fixed"][2][2]


def test_dwbox_is_judged_on_exactly_the_noise_it_attacked(tmp_path):
    """Rebuild the DW-box attack by hand from the run's seed derivation: its final point,
    purified with the evaluation seed it was handed, must give the judged `single` outcome, and
    the stage's `fresh-noise` outcome must come from other noise. Catches a judge or an attacker
    wired to the wrong seed, which the attack-level tests cannot see."""
    import torch

    from dbp_core.attacks import DWBox
    from dbp_core.models.defended import DefendedClassifier
    from dbp_core.purifier import noise
    from dbp_core.purifier.noise import derive_seed
    from dbp_core.stages.context import Resources
    r, res = run(tmp_path, n=16, batch=8)
    cfg = r.read_config()
    resources = Resources(cfg)
    data, clf = resources.data(), resources.classifier()
    defended = DefendedClassifier(clf, resources.purifier(noise.stochastic()), [0.0], [1.0])
    acfg = next(a for a in cfg.attacks if a.kind == "dwbox")
    eval_seed = derive_seed(cfg.seed, "attacks", "eval", acfg.name, 0)
    x_adv = DWBox(eval_seed, norm=acfg.norm, eps=acfg.eps, step=acfg.step, iterations=acfg.iterations,
                  start_seed=derive_seed(cfg.seed, "attacks", "attack", acfg.name, 0))(defended, data.x, data.y, data.uids)
    with torch.no_grad():
        replayed = (defended(x_adv, data.uids, seed=eval_seed).argmax(1) == data.y).int().tolist()
    outcome = res["stages"]["attacks"]["per_example"][f"{acfg.name}/0"]
    assert outcome["single"] == replayed
    assert outcome["fresh-noise"] != replayed  # fresh noise wins some examples back


def test_digits_default_dwbox_below_pgd_eot_below_clean(tmp_path):
    """The paper's first claim on the shipped digits models (a small slice, in the test budget):
    knowing the noise makes the attack stronger than averaging over it, and both hurt."""
    text = digits_toml("digits-claim", n=48, protocols=["clean", "purified", "single"], attacks=[
        {"kind": "pgd-eot", "eps": 0.2, "step": 0.05, "iterations": 8, "eot": 2},
        {"kind": "dwbox", "eps": 0.2, "step": 0.05, "iterations": 8}])
    cfg = loads_config(text, base_dir=str(tmp_path))
    r = RunStore(tmp_path / "runs").create(cfg)
    assert run_study(r, cfg) == "done", r.read_log_tail(40)
    rows = by_key(r.read_results())
    clean = rows[("pgd-eot-linf", "clean")]["accuracy"]
    pgd_eot = rows[("pgd-eot-linf", "single")]["accuracy"]
    dwbox = rows[("dwbox-linf", "single")]["accuracy"]
    assert dwbox < pgd_eot < clean, (dwbox, pgd_eot, clean)


def test_progress_moves_within_a_batch(tmp_path, monkeypatch):
    """A long attack batch still moves the progress bar (per attack iteration, throttled)."""
    from dbp_core.stages import attacks as evaluate
    monkeypatch.setattr(evaluate, "PROGRESS_EVERY_S", 0.0)
    cfg = loads_config(attack_study_toml(n=8, batch=8), base_dir=str(tmp_path))
    r = RunStore(tmp_path / "runs").create(cfg)
    seen = []
    assert run_study(r, cfg, on_progress=lambda stage, done, total: seen.append((done, total))) == "done"
    assert seen[-1] == (16, 16)
    assert {d for d, _ in seen} >= {2, 5, 8, 10, 13}  # 3 iterations of 8 examples, for 2 attacks
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
