"""The ``evaluate`` stage: clean accuracy and purified accuracy without attack."""
from __future__ import annotations

from .. import dist
from ..purifier import noise
from ..stats import accuracy_row
from .context import StageContext
from .registry import CLEAN, PURIFIED


def outcomes(classifier, purifier, protocols: list[str], x, y, uids) -> dict[str, list[int]]:
    """Per example of one batch: correct without purification (``clean``) and after one (``purified``)."""
    import torch
    out = {}
    with torch.no_grad():
        if CLEAN in protocols:
            out[CLEAN] = (classifier(x).argmax(1) == y).int().tolist()
        if purifier is not None:
            out[PURIFIED] = (classifier(purifier(x, uids)).argmax(1) == y).int().tolist()
    return out


@dist.all_ranks  # under torchrun every rank evaluates its shard of each batch
def run(ctx: StageContext) -> dict:
    """Clean accuracy and purified clean accuracy (one stochastic purification per example).

    The purification noise is replayed from ``ctx.seed("purified")``: addressed by uid, so the
    numbers do not depend on batching, on the number of processes (each rank takes a strided
    shard of every batch, merged back in uid order) or on an interruption and resume.
    Checkpoint: ``{"next_batch", "clean": [0/1 per example so far], "purified": [...]}``."""
    cfg, res = ctx.cfg, ctx.resources
    data = res.data()
    classifier = res.classifier()
    protocols = [p for p in (CLEAN, PURIFIED) if p in cfg.evaluation.protocols]
    purifier = None
    if PURIFIED in protocols:
        if res.eps_model() is None:
            protocols.remove(PURIFIED)
        else:  # "purified": the seed's purpose (a constant of the run's numbers), not the protocol's name
            purifier = res.purifier(noise.replay(ctx.seed("purified")))
    batches = data.batches(cfg.data.batch_size)
    state = ctx.load_checkpoint() or {"next_batch": 0, **{p: [] for p in protocols}}
    if state["next_batch"]:
        ctx.log(f"resuming at batch {state['next_batch']} of {len(batches)}")
    device = res.device
    for b in range(state["next_batch"], len(batches)):
        lo, hi = batches[b]
        sel = dist.shard_indices(lo, hi)  # slice(lo, hi) single-process; this rank's share under torchrun
        x, y, uids = data.x[sel].to(device), data.y[sel].to(device), data.uids[sel].to(device)
        # every rank's share, in uid order
        out = dist.outcomes_by_uid(uids, lambda: outcomes(classifier, purifier, protocols, x, y, uids))
        for p in protocols:
            state[p] += out.get(p, [])
        state["next_batch"] = b + 1
        if (b + 1) % cfg.output.checkpoint_every == 0 or b + 1 == len(batches):
            ctx.save_checkpoint(state)
        ctx.metric("eval", b, done=hi, **{f"{p}_acc": sum(state[p]) / len(state[p]) for p in protocols})
        ctx.progress(hi, len(data))
    conf = cfg.evaluation.confidence
    rows = [accuracy_row(p, sum(state[p]), len(state[p]), stage=ctx.name, confidence=conf) for p in protocols]
    return {"accuracies": rows, "n": len(data),
            "uids": {"first": int(data.uids[0]), "last": int(data.uids[-1])} if len(data) else None,
            "per_example": {p: state[p] for p in protocols}}
