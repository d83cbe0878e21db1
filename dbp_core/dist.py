"""Scale-out on ``torch.distributed`` (docs/scale-out.md; docs/design.md, "Scale-out").

``dbp run FILE`` under ``torchrun --nproc-per-node N`` (one process per rank) shards the
``attacks`` evaluation by example and gathers per-example outcomes on every rank; rank 0
alone writes the run store. Because noise is addressed by uid, the numbers are identical
for any world size.

Every collective issued through this module is a **status-carrying exchange**: one
``all_gather_object`` of ``{"ok", "error", "data"}`` on a gloo group. A rank that fails
sends its error in its next (and last) exchange — :func:`report_failure` — and whatever
exchange its peers are in at that moment delivers it: every rank then raises the same
:class:`PeerFailed` at the same exchange and stops issuing collectives. So a failing rank
makes the whole run fail with one clear message, and nobody waits for a peer that is gone.
(Collectives you issue yourself — DDP's buffer broadcast in forward, its gradient all-reduce in
backward — are outside this protocol: run the work before each of them under :func:`guarded`.)

Without ``WORLD_SIZE > 1`` in the environment nothing here touches ``torch.distributed``:
every helper degrades to its single-process meaning (rank 0 of 1).
"""
from __future__ import annotations

import datetime
import os
import traceback
from typing import Any, Callable

__all__ = ["world", "is_distributed", "init_from_env", "shutdown", "shard", "shard_indices", "gather_objects",
           "broadcast_object", "guarded", "barrier", "report_failure", "wrap_ddp", "unwrap", "all_ranks",
           "PeerFailed", "settle", "ddp_loss_scale", "env_world_size", "is_main", "run_guarded",
           "merge_by_uid", "outcomes_by_uid"]

_GROUP = None  # the gloo group used for object exchanges (the default group may be NCCL)
_FAILED = False  # this rank already took part in an exchange that reported a failure


class PeerFailed(RuntimeError):
    """Some rank (maybe this one) reported a failure in an exchange; every rank raises this
    at the same exchange. ``failures`` maps rank -> (error message, traceback text)."""

    def __init__(self, failures: dict[int, tuple[str, str]], world_size: int):
        self.failures = failures
        lines = [f"rank {r} of {world_size} failed: {msg}" for r, (msg, _) in sorted(failures.items())]
        super().__init__("; ".join(lines))

    @property
    def tracebacks(self) -> str:
        return "\n".join(f"--- rank {r} ---\n{tb}" for r, (_, tb) in sorted(self.failures.items()) if tb)


# --------------------------------------------------------------------------- world

def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    try:
        import torch.distributed as tdist
    except ImportError:  # pragma: no cover
        return False
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when not distributed."""
    if not is_distributed():
        return 0, 1
    import torch.distributed as tdist
    return tdist.get_rank(), tdist.get_world_size()


def is_main() -> bool:
    return world()[0] == 0


def init_from_env(backend: str | None = None, timeout_s: float | None = None) -> tuple[int, int]:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT, LOCAL_RANK). A no-op returning (0, 1) when WORLD_SIZE <= 1.

    Backend: ``$DBP_DIST_BACKEND`` or ``backend`` or NCCL when CUDA is available, else gloo.
    Object exchanges always use a separate gloo group. Timeout: ``$DBP_DIST_TIMEOUT`` seconds
    (default 6 h: ranks > 0 wait at a collective while rank 0 runs a single-rank stage)."""
    global _GROUP, _FAILED
    if env_world_size() <= 1:
        return 0, 1
    import torch
    import torch.distributed as tdist
    if tdist.is_initialized():
        return world()
    backend = os.environ.get("DBP_DIST_BACKEND") or backend or ("nccl" if torch.cuda.is_available() else "gloo")
    timeout = datetime.timedelta(seconds=float(os.environ.get("DBP_DIST_TIMEOUT") or timeout_s or 6 * 3600))
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tdist.init_process_group(backend=backend, timeout=timeout)
    _GROUP = tdist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    _FAILED = False
    return world()


def shutdown() -> None:
    """Leave the process group (safe to call when not distributed)."""
    global _GROUP
    try:
        import torch.distributed as tdist
    except ImportError:  # pragma: no cover
        return
    if tdist.is_available() and tdist.is_initialized():
        try:
            tdist.destroy_process_group()
        finally:
            _GROUP = None


# --------------------------------------------------------------------------- sharding

def shard(n: int, rank: int | None = None, world_size: int | None = None):
    """The positions ``i < n`` this rank handles: ``slice(0, n)`` single-process, else the
    list ``[i for i in range(n) if i % world == rank]`` (strided, so shards differ by <= 1)."""
    r, w = world() if rank is None or world_size is None else (rank, world_size)
    if w <= 1:
        return slice(0, n)
    return list(range(r, n, w))


def shard_indices(lo: int, hi: int):
    """:func:`shard` of the positions ``lo..hi-1`` (a slice single-process, else a LongTensor)."""
    sel = shard(hi - lo)
    if isinstance(sel, slice):
        return slice(lo, hi)
    import torch
    return torch.tensor(sel, dtype=torch.long) + lo


# --------------------------------------------------------------------------- exchanges

def _exchange(payload: dict) -> list[dict]:
    """All-gather ``payload`` from every rank; raise PeerFailed if any reported a failure."""
    global _FAILED
    if not is_distributed():
        if not payload["ok"]:
            raise PeerFailed({0: (payload["error"], payload.get("traceback", ""))}, 1)
        return [payload]
    if _FAILED:
        raise RuntimeError("a peer rank has already failed; no more collectives after a failure")
    import torch.distributed as tdist
    out: list[Any] = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, payload, group=_GROUP)
    failures = {r: (p["error"], p.get("traceback", "")) for r, p in enumerate(out) if not p["ok"]}
    if failures:
        _FAILED = True
        raise PeerFailed(failures, len(out))
    return out


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` single-process).
    Raises PeerFailed if a peer reported a failure instead."""
    return [p["data"] for p in _exchange({"ok": True, "error": None, "data": obj})]


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (others may pass None)."""
    return gather_objects(obj if is_main() else None)[0]


def barrier() -> None:
    """Wait for every rank (an exchange: raises PeerFailed if a peer failed)."""
    gather_objects(None)


def _failure(exc: BaseException) -> dict:
    """The exchange payload that tells every peer this rank failed, and why."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": tb, "data": None}


def report_failure(exc: BaseException) -> None:
    """Tell every peer this rank failed (its last collective). Does nothing single-process,
    or when the failure came from a peer (PeerFailed: everyone already knows)."""
    if not is_distributed() or isinstance(exc, PeerFailed) or _FAILED:
        return
    try:
        _exchange(_failure(exc))
    except Exception:  # noqa: BLE001 — PeerFailed (expected) or a dead process group: nothing more to do
        pass


def settle() -> None:
    """After a failure was exchanged (and rank 0 wrote the run's final status), one last plain
    barrier, so no rank exits — making torchrun SIGTERM the others — before rank 0 is done
    writing. A no-op when nothing failed or not distributed."""
    if not (_FAILED and is_distributed()):
        return
    import torch.distributed as tdist
    try:
        tdist.barrier(group=_GROUP)
    except Exception:  # noqa: BLE001 — a peer already gone: nothing to wait for
        pass


def _guarded_exchange(fn: Callable[[], Any], share: bool) -> tuple[Any, list[Any]]:
    try:
        result = fn()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 — sent to every rank, re-raised as PeerFailed
        _exchange(_failure(exc))
        raise AssertionError("unreachable") from exc  # pragma: no cover — _exchange raised PeerFailed
    return result, [p["data"] for p in _exchange({"ok": True, "error": None, "data": result if share else None})]


def run_guarded(fn: Callable[[], Any]) -> Any:
    """``fn()`` on this rank, then one exchange: every rank gets the list of results, or every
    rank raises PeerFailed if any rank's ``fn`` raised (single-process: ``[fn()]``)."""
    if not is_distributed():
        return [fn()]
    return _guarded_exchange(fn, share=True)[1]


def guarded(fn: Callable[[], Any]) -> Any:
    """``fn()`` on this rank, then a status exchange; returns this rank's own result. If any
    rank's ``fn`` raised, every rank raises the same PeerFailed (with that rank's message).
    Put it around work that precedes a collective you do not control (DDP's forward and
    backward), so no rank enters that collective while a peer has already failed."""
    if not is_distributed():
        return fn()
    return _guarded_exchange(fn, share=False)[0]


# --------------------------------------------------------------------------- stages and models

def all_ranks(fn: Callable) -> Callable:
    """Mark a stage function as distributed-aware: under torchrun it runs on **every** rank
    (and must shard its work and use the exchanges of this module); unmarked stages run on
    rank 0 only while the other ranks wait. Only rank 0's StageContext writes files."""
    fn.dbp_all_ranks = True
    return fn


def wrap_ddp(model, **kwargs):
    """``DistributedDataParallel(model)`` when distributed (gloo on CPU: no device_ids; NCCL:
    the local CUDA device), else ``model`` unchanged. ``unwrap(m)`` gives the module back."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    params = list(model.parameters())
    if params and params[0].is_cuda:
        kwargs.setdefault("device_ids", [params[0].device.index])
    return DDP(model, **kwargs)


def ddp_loss_scale(local_n: int, global_n: int) -> float:
    """Factor for a rank's *mean* loss over its ``local_n`` of ``global_n`` examples so that DDP's
    gradient averaging yields exactly the gradient of the global-batch mean (``world * local_n /
    global_n``; 1 single-process). Needed when shards are uneven (``shard`` of a batch not a
    multiple of the world size). A rank with 0 examples must still run forward/backward (× 0)."""
    r, w = world()
    return 1.0 if w <= 1 else w * local_n / global_n


def unwrap(model):
    return getattr(model, "module", model)


def outcomes_by_uid(uids, fn: Callable[[], dict[str, list]]) -> dict[str, list]:
    """Per-example outcomes of a sharded batch: ``fn()`` (a dict of lists over this rank's
    ``uids``) on every rank, merged in uid order (single-process: ``fn()`` itself). A rank
    without examples (more ranks than examples) contributes nothing and does not call ``fn``;
    a rank whose ``fn`` raises fails every rank (:func:`run_guarded`)."""
    def mine() -> dict[str, list]:
        return fn() if len(uids) else {}
    if not is_distributed():
        return mine()
    return merge_by_uid(run_guarded(lambda: (uids.tolist(), mine())))


def merge_by_uid(parts: list[tuple[list[int], dict[str, list]]]) -> dict[str, list]:
    """Merge per-rank ``(uids, {key: per-example list})`` into one dict of lists in uid order."""
    uids = [u for us, _ in parts for u in us]
    order = sorted(range(len(uids)), key=uids.__getitem__)
    keys = []
    for _, d in parts:
        keys += [k for k in d if k not in keys]
    merged = {}
    for k in keys:
        values = []
        for us, d in parts:
            v = d.get(k)
            if v is None and us:
                raise ValueError(f"rank outcome '{k}' missing on a rank with {len(us)} examples")
            values += list(v or [])
        merged[k] = [values[i] for i in order] if len(values) == len(uids) else values
    return merged
