"""Scale-out (dbp_core/dist.py, docs/scale-out.md): `dbp run` under torchrun with 2 gloo CPU ranks gives
exactly the single-process results, and a rank that fails fails the whole run cleanly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dbp_core import dist
from dbp_core.config import loads_config
from dbp_core.runner import run_study
from dbp_core.store import RunStore
from tests.conftest import addt_toml, attack_study_toml

REPO = Path(__file__).resolve().parents[1]


def torchrun(tmp_path: Path, config_text: str, nproc: int = 2, timeout: float = 120, env_extra=None):
    """`python -m torch.distributed.run --standalone --nproc-per-node N -m dbp_core run cfg.toml`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(config_text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", **(env_extra or {})}
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "dbp_core", "run", str(cfg), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    runs = RunStore(tmp_path / "runs").list()
    assert len(runs) == 1, (proc.returncode, proc.stderr[-3000:])  # rank 0 alone created a run
    return proc, runs[0]


def single(tmp_path: Path, config_text: str):
    cfg = loads_config(config_text, base_dir=str(tmp_path))
    r = RunStore(tmp_path / "runs").create(cfg)
    assert run_study(r, cfg) == "done", r.read_log_tail(40)
    return r.read_results()


# --------------------------------------------------------------------------- helpers, single process

def test_helpers_degrade_to_single_process():
    assert not dist.is_distributed() and dist.world() == (0, 1) and dist.is_main()
    assert dist.shard(5) == slice(0, 5) and dist.shard_indices(3, 7) == slice(3, 7)
    assert dist.shard(5, rank=1, world_size=2) == [1, 3] and dist.shard(1, rank=1, world_size=2) == []
    assert dist.gather_objects({"a": 1}) == [{"a": 1}] and dist.broadcast_object(3) == 3
    assert dist.guarded(lambda: 5) == 5
    with pytest.raises(ZeroDivisionError):
        dist.guarded(lambda: 1 / 0)
    dist.barrier()
    model = object()
    assert dist.wrap_ddp(model) is model and dist.unwrap(model) is model
    assert dist.run_guarded(lambda: 7) == [7]
    assert dist.init_from_env() == (0, 1)  # WORLD_SIZE unset: no process group


def test_merge_by_uid_restores_uid_order():
    parts = [([0, 2, 4], {"single": [1, 0, 1], "avg": [0.5, 1.0, 0.0]}), ([1, 3], {"single": [0, 0], "avg": [1.0, 0.25]}),
             ([], {})]
    merged = dist.merge_by_uid(parts)
    assert merged == {"single": [1, 0, 0, 0, 1], "avg": [0.5, 1.0, 1.0, 0.25, 0.0]}


# --------------------------------------------------------------------------- 2 ranks

def test_torchrun_two_ranks_equal_single_process(tmp_path):
    # 15 examples in batches of 7: shards of 4/3, 4/3 and 1/0 (an empty shard on rank 1)
    text = attack_study_toml(n=15, batch=7, stages=["evaluate", "attacks"])
    proc, run = torchrun(tmp_path / "dist", text)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed run over 2 ranks" in proc.stderr
    multi = run.read_results()
    ref = single(tmp_path / "single", text)
    assert multi["environment"]["world_size"] == 2 and ref["environment"]["world_size"] == 1
    for stage in ("evaluate", "attacks"):  # both stages shard by uid
        a, b = multi["stages"][stage], ref["stages"][stage]
        assert json.dumps(a["per_example"], sort_keys=True) == json.dumps(b["per_example"], sort_keys=True)
    assert len(multi["stages"]["evaluate"]["per_example"]["purified"]) == 15
    assert multi["accuracies"] == ref["accuracies"]
    assert multi["comparisons"] == ref["comparisons"]
    assert run.read_status().state == "done"
    assert not list(tmp_path.glob("dist/runs/*/checkpoints/.*tmp*"))


def test_a_failing_rank_fails_the_whole_run_cleanly(tmp_path):
    text = attack_study_toml(n=15, batch=7, classifier="tests.dist_plugins:rank1_failing_classifier")
    proc, run = torchrun(tmp_path, text, env_extra={"DBP_TEST_FAIL_AFTER": "6"})
    assert proc.returncode != 0
    assert "rank 1 of 2 failed" in proc.stderr and "exploded on purpose" in proc.stderr
    status = run.read_status()
    assert status.state == "failed"
    assert "rank 1 of 2 failed: RuntimeError: classifier on rank 1 exploded on purpose" in status.message
    assert not run.results_path.exists()  # no results written half-way
    stages = run.load_checkpoint("stages.json") or {}
    assert "attacks" not in stages
    log = run.log_path.read_text()
    assert "--- rank 1 ---" in log and "exploded on purpose" in log  # the failing rank's traceback
    # rank 0's checkpoint is consistent: exactly the merged outcomes of the jobs it counts as done
    ckpt = run.load_checkpoint("attacks.json")
    if ckpt is not None:
        sizes = [7, 7, 1]
        jobs = [(a, b) for a in ("pgd-eot-linf", "dwbox-linf") for b in range(3)][:ckpt["next"]]
        for name in ("pgd-eot-linf", "dwbox-linf"):
            expected = sum(sizes[b] for a, b in jobs if a == name)
            assert len(ckpt["outcomes"].get(f"{name}/0", {}).get("single", [])) == expected


def test_ddp_training_step_equals_single_process():
    """DDP (gloo, 2 ranks, uneven shards 3/2) trains to the same weights as one process on the whole
    batch — the pattern ADDT uses (dist.wrap_ddp + dist.shard + dist.ddp_loss_scale)."""
    import torch

    from tests.dist_plugins import ddp_denoising_step, run_ranks
    ref = ddp_denoising_step()
    per_rank = run_ranks(2, ddp_denoising_step)
    for got in per_rank:
        assert got.keys() == ref.keys()
        for k in ref:  # float64: only the all-reduce's summation order differs
            torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-12)
    assert any(not torch.equal(ref[k], ddp_denoising_step(steps=0)[k]) for k in ref)  # it did train


def test_addt_training_steps_under_ddp_equal_one_process():
    import torch

    import tests._tiny as tiny
    from tests.dist_plugins import addt_trainer_steps, run_ranks

    single = addt_trainer_steps()
    ranks = run_ranks(2, addt_trainer_steps)
    for part in ("model", "ema"):
        for k, v in single[part].items():
            for r in ranks:  # the same on every rank, and equal to one process up to summation order
                assert torch.allclose(r[part][k], v, rtol=0, atol=1e-12), (part, k)
    # and the steps changed the weights at all
    torch.manual_seed(0)
    fresh = tiny.TinyEps(channels=1, hidden=4).state_dict()
    assert any(not torch.equal(fresh[k], single["model"][k]) for k in fresh)


# ADDT alone, on the whole tiny dataset, with a classifier that fails on rank 1
ADDT_ONLY = addt_toml(name="addt-dist", stages=["addt"], classifier="tests.dist_plugins:rank1_failing_classifier",
                      data={"n_examples": None, "batch_size": None}, purifier={"grad_mode": None},
                      addt={"control": None}, attacks=None, evaluation=None)


@pytest.mark.parametrize("fail_after", [0, 2, 4])  # CGPO calls the classifier twice a step: fails at step 0, 1, 2
def test_a_rank_failing_inside_ddp_training_fails_the_run_with_its_message(tmp_path, fail_after):
    """Rank 1's CGPO raises while rank 0 heads into DDP's forward/backward collectives: nobody may
    hang there, and the run must fail with rank 1's own error, not a generic one."""
    proc, run = torchrun(tmp_path, ADDT_ONLY, timeout=180, env_extra={"DBP_TEST_FAIL_AFTER": str(fail_after),
                                                                    "DBP_DIST_TIMEOUT": "150"})
    assert proc.returncode != 0
    status = run.read_status()
    assert status.state == "failed"
    assert "rank 1 of 2 failed: RuntimeError: classifier on rank 1 exploded on purpose" in status.message
    assert "exploded on purpose" in run.log_path.read_text()
    assert not run.results_path.exists()
    done = [m["step"] for m in run.metrics().read() if m["kind"] == "addt_step"]
    assert done == list(range(fail_after // 2))  # every step before the failing one, and none after
