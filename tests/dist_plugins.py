"""Plugins for the scale-out tests (tests/test_dist.py): models that misbehave on one rank."""
from __future__ import annotations

import os

from tests.plugins import QuadrantClassifier


class _FailOnRank(QuadrantClassifier):
    def __init__(self, rank: int, after: int):
        super().__init__()
        self.calls, self.after = 0, after
        self.active = os.environ.get("RANK") == str(rank)

    def forward(self, x):
        self.calls += 1
        if self.active and self.calls > self.after:
            raise RuntimeError(f"classifier on rank {os.environ.get('RANK')} exploded on purpose")
        return super().forward(x)


def rank1_failing_classifier():
    """Works everywhere except on rank 1, where it raises after DBP_TEST_FAIL_AFTER calls (default 6)."""
    return _FailOnRank(1, int(os.environ.get("DBP_TEST_FAIL_AFTER", "6")))


def rank1_broken_classifier():
    """Raises while being built, on rank 1 only (before any collective of the stage)."""
    if os.environ.get("RANK") == "1":
        raise RuntimeError("classifier on rank 1 could not be built")
    return QuadrantClassifier()


# --------------------------------------------------------------------------- in-process ranks (a test hook)

def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_entry(rank: int, world_size: int, port: int, fn, args, out_dir: str) -> None:
    import torch
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from dbp_core import dist
    dist.init_from_env(backend="gloo", timeout_s=120)
    try:
        torch.save(fn(*args), os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # every rank has its result before any rank tears the group down
    finally:
        dist.shutdown()
    # Leave without the interpreter's teardown: rank 0 hosts this harness's TCPStore server in
    # process, and destroying it while a peer's client thread is still attached occasionally
    # aborts with "terminate called without an active exception" (under torchrun the store
    # lives in the launcher). The result file is written and closed above.
    os._exit(0)


def run_ranks(world_size: int, fn, *args):
    """Run ``fn(*args)`` on ``world_size`` gloo CPU ranks (torch.multiprocessing.spawn) inside
    an initialised process group; returns every rank's return value (saved with torch.save).
    ``fn`` must be importable (a module-level function). For DDP-equality tests, e.g. ADDT:
    ``run_ranks(2, one_addt_step, ...)`` vs ``one_addt_step(...)`` in the test process."""
    import tempfile

    import torch
    import torch.multiprocessing as mp
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_rank_entry, args=(world_size, _free_port(), fn, args, out), nprocs=world_size, join=True)
        return [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=False) for r in range(world_size)]


def ddp_denoising_step(batch: int = 5, steps: int = 2):
    """``steps`` DDP steps of the ADDT-style denoising loss ``|eps_theta(x_t, t) - eps|^2`` on a float64
    tiny eps model: each rank takes its strided shard of the batch, noise addressed by uid,
    loss scaled by dist.ddp_loss_scale. Returns the parameters after the steps (every rank)."""
    import torch
    import torch.nn.functional as F

    from dbp_core import dist, ops
    from tests._tiny import TinyEps
    torch.manual_seed(0)
    model = dist.wrap_ddp(TinyEps(channels=1, hidden=4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(batch, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    uids = torch.arange(100, 100 + batch)
    t = torch.randint(0, 1000, (batch,), generator=g)
    ab = torch.linspace(0.999, 0.01, 1000, dtype=torch.float64)[t].view(-1, 1, 1, 1)
    sel = dist.shard(batch)
    for step in range(steps):
        x, u, tt, a = x0[sel], uids[sel], t[sel], ab[sel]
        eps = ops.normal(x.shape, 1234, 9, u, step, x.dtype)
        loss = F.mse_loss(model(a.sqrt() * x + (1 - a).sqrt() * eps, tt), eps)
        loss = loss * dist.ddp_loss_scale(int(u.numel()), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in dist.unwrap(model).state_dict().items()}


def addt_trainer_steps(steps: int = 2):
    """``steps`` real ADDTTrainer steps (CGPO + RBGM + DDP update + EMA) on float64 tiny models;
    each rank trains on its share of every global batch. Returns the parameters and EMA."""
    from types import SimpleNamespace

    import torch
    from torch import nn

    from dbp_core.addt import ADDTTrainer, CGPOSettings, TrainSettings
    from dbp_core.purifier.diffusion import linear_schedule
    from tests._tiny import TinyEps
    torch.manual_seed(0)
    eps_model = TinyEps(channels=1, hidden=4)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double()
    g = torch.Generator().manual_seed(3)
    data = SimpleNamespace(x=torch.rand(20, 1, 8, 8, generator=g, dtype=torch.float64),
                           y=torch.randint(0, 10, (20,), generator=g), uids=torch.arange(20))
    tr = ADDTTrainer(eps_model, clf, data, linear_schedule().alpha_bar64, CGPOSettings(multiplier=0.3, iterations=2),
                     TrainSettings(batch_size=7, lr=1e-2, warmup_steps=1), seed=11)
    for _ in range(steps):
        tr.train_step()
    return {"model": {k: v.detach().clone() for k, v in tr.model.state_dict().items()},
            "ema": {k: v.detach().clone() for k, v in tr.ema.state_dict().items()}}
