"""purifier.memory_budget: micro-batched recomputation and kept step graphs give the unbudgeted
gradient (float64, every sampler and gradient mode), and the measured allocator peak stays under the
budget on the digits UNet (docs/science.md, "Memory budget")."""
from __future__ import annotations

import pytest
import torch

from dbp_core.purifier import memory, noise
from dbp_core.purifier.chain import row_chunks
from dbp_core.purifier.purifier import Purifier

from tests.test_samplers import F64, SAMPLERS, _images, _model_for

STEPS = 7


def _grads(name, mode, plan=None, replicas=2, states=(0, 3, STEPS)):
    """Output, states and the gradients wrt x and the weights of a random linear loss on them."""
    model = _model_for(name)
    x = _images(2, seed=3).requires_grad_()
    uids = torch.tensor([3, 8])
    pur = Purifier(model, t_star=0.1, steps=STEPS, noise=noise.replay(11), grad_mode=mode,
                   memory_budget=None if plan is None else 1.0, **SAMPLERS[name])
    if plan is not None:  # pin the plan: the planner's choice is tested below on a real network
        pur._memory_plan = lambda *a: memory.MemoryPlan(2**30, 2 * replicas, STEPS, *plan, 0, 0)
    out, st = pur(x, uids, replicas=replicas, states=list(states))
    gen = torch.Generator().manual_seed(5)
    loss = (out * torch.randn(out.shape, dtype=F64, generator=gen)).sum()
    for s in st:
        loss = loss + (s * torch.randn(s.shape, dtype=F64, generator=gen)).sum()
    loss.backward()
    return out.detach(), [s.detach() for s in st], x.grad, [p.grad for p in model.parameters()]


def _close(a, b):
    return torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_row_chunks_cover_the_batch_keeping_each_rows_address():
    assert [(r.lo, r.hi, r.uid_lo, r.uid_hi, r.replica, r.replicas) for r in row_chunks(3, 2, 2)] == \
        [(0, 2, 0, 2, 0, 1), (2, 3, 2, 3, 0, 1), (3, 5, 0, 2, 1, 1), (5, 6, 2, 3, 1, 1)]
    assert [(r.lo, r.hi, r.replica, r.replicas) for r in row_chunks(3, 5, 7)] == \
        [(0, 6, 0, 2), (6, 12, 2, 2), (12, 15, 4, 1)]


# (kept steps, forward micro-batch, backward micro-batch) of 4 rows (2 uids x 2 replicas)
PLANS = [(0, 1, 1), (3, 3, 2), (2, 4, 3), (STEPS, 4, 4), (STEPS, 2, 1)]


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_budgeted_gradients_equal_the_unbudgeted_in_every_mode(name):
    out_f, st_f, gx_f, gw_f = _grads(name, "full")
    for mode in ("full", "checkpoint", "segments"):
        for plan in PLANS:
            out, st, gx, gw = _grads(name, mode, plan)
            assert torch.allclose(out, out_f, rtol=0, atol=1e-14), (mode, plan)
            assert all(torch.allclose(a, b, rtol=0, atol=1e-14) for a, b in zip(st, st_f)), (mode, plan)
            assert _close(gx, gx_f), (mode, plan, (gx - gx_f).abs().max())
            assert all(_close(a, b) for a, b in zip(gw, gw_f)), (mode, plan)


@pytest.fixture(scope="module")
def digits_unet():
    from dbp_core.models import zoo
    net = zoo.default_diffusion("digits").double()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _attack_gradient(net, batch, replicas, mode, budget):
    """(allocator peak in bytes, input gradient, plan) of one purification gradient on the digits UNet."""
    pur = Purifier(net, steps=5, noise=noise.replay(3), grad_mode=mode, memory_budget=budget)
    x = torch.rand(batch, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(batch))
    uids = torch.arange(batch)
    plan = pur.memory_plan(x, uids, replicas=replicas) if budget else None  # probes before the measurement

    def gradient():
        xx = x.clone().requires_grad_()
        pur(xx, uids, replicas=replicas).square().sum().backward()
        return xx.grad
    peak, _, g = memory.measure(gradient, x.device)
    return peak, g, plan


@pytest.mark.parametrize("batch,replicas", [(8, 1), (8, 8)])  # batch x EOT 8 and 64
def test_measured_peak_stays_under_the_budget_on_the_digits_unet(digits_unet, batch, replicas):
    peak_ck, g_ck, _ = _attack_gradient(digits_unet, batch, replicas, "checkpoint", None)
    peak_full, g_full, _ = _attack_gradient(digits_unet, batch, replicas, "full", None)
    # a tight budget (micro-batched recomputation) and a generous one (kept graphs)
    for mode, budget, check in (("checkpoint", 0.5 * peak_ck, lambda p: p.backward_batch < p.rows),
                                ("segments", 0.6 * peak_ck, lambda p: p.backward_batch < p.rows),
                                ("full", 0.5 * (peak_ck + peak_full), lambda p: 0 < p.kept < p.steps),
                                ("checkpoint", 1.5 * peak_full, lambda p: p.is_full)):
        peak, g, plan = _attack_gradient(digits_unet, batch, replicas, mode, budget / memory.GB)
        assert check(plan), (mode, plan)
        assert peak <= budget, (mode, plan.describe(), peak, budget)
        assert _close(g, g_ck), (mode, plan)


def test_a_budget_below_one_rows_step_says_what_it_needs(digits_unet):
    pur = Purifier(digits_unet, steps=5, noise=noise.replay(3), memory_budget=1e-5)
    with pytest.raises(memory.MemoryBudgetError, match=r"memory_budget = 1e-05 GB .* need at least"):
        pur.memory_plan(torch.rand(4, 1, 8, 8, dtype=F64), torch.arange(4), replicas=2)
    with pytest.raises(ValueError, match="memory_budget"):
        Purifier(digits_unet, memory_budget=-1)


def test_a_budgeted_attack_study_logs_its_plan_and_peak_and_keeps_the_outcomes(tmp_path):
    from dbp_core.config import loads_config
    from dbp_core.runner import run_study
    from dbp_core.store import RunStore
    from tests.conftest import attack_study_toml
    per_example = {}
    for budget in (None, 0.002):  # 2 MB: micro-batched recomputation of the tiny network
        purifier = {"t_star": 0.2, "steps": 3, "grad_mode": "checkpoint"}
        if budget is not None:
            purifier["memory_budget"] = budget
        cfg = loads_config(attack_study_toml(n=8, batch=8, purifier=purifier), base_dir=str(tmp_path))
        r = RunStore(tmp_path / f"runs{budget}").create(cfg)
        assert run_study(r, cfg) == "done", r.read_log_tail(40)
        per_example[budget] = r.read_results()["stages"]["attacks"]["per_example"]
        log = "\n".join(r.read_log_tail(200))
        if budget is None:
            assert "memory plan" not in log
        else:
            assert "memory plan: budget 0.00 GB" in log and "backward micro-batch" in log, log
            assert "measured peak memory:" in log and "peak RSS" in log, log
    assert per_example[None] == per_example[0.002]


def test_the_plan_reports_the_micro_batch_the_chain_runs():
    # a micro-batch of at least one replica holds whole replicas, so the plan rounds down to them
    assert (memory.whole_replicas(7, 4), memory.whole_replicas(3, 4), memory.whole_replicas(65, 16)) == (4, 3, 64)
    for batch, replicas, size in ((4, 8, 7), (4, 8, 3), (16, 8, 65), (40, 8, 298), (5, 3, 11)):
        chunks = row_chunks(batch, replicas, size)
        assert max(r.hi - r.lo for r in chunks) == memory.whole_replicas(size, batch)
        assert sum(r.hi - r.lo for r in chunks) == batch * replicas
