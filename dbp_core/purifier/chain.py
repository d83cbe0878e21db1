"""The reverse chain checkpointed as one autograd node (the ``checkpoint`` and ``segments``
gradient modes of :class:`~dbp_core.purifier.purifier.Purifier`; docs/design.md, "Gradients").

The forward runs every step without a graph and keeps the input of every ``per_segment``-th
step; the backward recovers each segment's step inputs (no graph) and re-runs one step at a
time with a graph (its network, then the step's own arithmetic without its noise draw when
nothing differentiates through the noise) and backpropagates through it. The purifier supplies
the steps (``ChainPlan.step``); this module owns the bookkeeping: kept inputs, the RNG states
that make dropout replay, the requested intermediate states (their gradients join the sweep at
their steps), the guidance input's gradient summed over the steps, and which gradients the
running backward asks for.

With a memory plan (``purifier.memory_budget``, ``purifier/memory.py``) the last ``plan.memory.kept``
steps build their graphs in the forward and are backpropagated without recomputation, and every
step's network runs in micro-batches of rows (``row_chunks``); a micro-batch is a set of whole
replicas or a slice of one replica's uids, so each row keeps its noise address. Micro-batches
assume a network whose rows are independent (eval mode, no batch statistics).
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from dataclasses import dataclass


@dataclass(frozen=True)
class Rows:
    """Rows ``lo:hi`` of a replica-major batch of ``batch`` uids: replicas ``replica .. replica + replicas - 1``
    (relative) of the uids ``uid_lo:uid_hi``."""
    lo: int
    hi: int
    uid_lo: int
    uid_hi: int
    replica: int
    replicas: int


def row_chunks(batch: int, replicas: int, size: int) -> list[Rows]:
    """Micro-batches of at most ``size`` rows: whole replicas when ``size >= batch``, else slices of one
    replica's uids."""
    if size >= batch:
        per = min(replicas, size // batch)
        return [Rows(k * batch, min(k + per, replicas) * batch, 0, batch, k, min(per, replicas - k))
                for k in range(0, replicas, per)]
    return [Rows(k * batch + a, k * batch + min(a + size, batch), a, min(a + size, batch), k, 1)
            for k in range(replicas) for a in range(0, batch, size)]


class ChainPlan:
    """What a checkpointed chain needs besides its tensors (passed through Function.apply).
    ``keep``: the sorted state indices k (state k = the input of step k; k = len(chain) the
    output) the forward returns besides the output."""

    def __init__(self, purifier, seed: int, uids: torch.Tensor, replica: int, replicas: int,
                 per_segment: int, keep: tuple[int, ...] = (), memory=None):
        self.purifier, self.seed, self.uids = purifier, seed, uids
        self.replica, self.replicas, self.per_segment = replica, replicas, per_segment
        self.keep = keep
        self.memory = memory  # a memory.MemoryPlan, or None: every step at full batch, none kept

    def step(self, x: torch.Tensor, cond: torch.Tensor | None, i: int, draw: bool = True,
             rows: Rows | None = None) -> torch.Tensor:
        """Step ``i`` of the whole batch, or of the micro-batch ``rows`` (``x`` then holds those rows only)."""
        if rows is None:
            return self.purifier._step(x, cond, i, self.seed, self.uids, self.replica, self.replicas, draw=draw)
        c = None if cond is None else cond[rows.uid_lo:rows.uid_hi]
        return self.purifier._step(x, c, i, self.seed, self.uids[rows.uid_lo:rows.uid_hi], self.replica + rows.replica,
                                   rows.replicas, draw=draw)

    def chunks(self, size: int | None) -> list[Rows] | None:
        """The micro-batches of ``size`` rows (None: the whole batch at once)."""
        b = self.uids.shape[0]
        if size is None or size >= b * self.replicas:
            return None
        return row_chunks(b, self.replicas, size)

    def step_rows(self, x: torch.Tensor, cond: torch.Tensor | None, i: int, size: int | None) -> torch.Tensor:
        """Step ``i`` (no graph) in micro-batches of ``size`` rows."""
        chunks = self.chunks(size)
        if chunks is None:
            return self.step(x, cond, i)
        return torch.cat([self.step(x[r.lo:r.hi], cond, i, rows=r) for r in chunks])


def _rng_state(device: torch.device):
    """The global RNG states a network's random ops (dropout) draw from on ``device``."""
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_state(device: torch.device, state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class _RngStates:
    """The RNG states at the kept steps. A network that draws no random numbers leaves the state
    unchanged from step to step: consecutive equal states are stored once (a CPU state is 5 KB,
    more than a small image)."""

    def __init__(self, count: int, device: torch.device):
        self.device = device
        self.unique: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.index = [0] * count

    def capture(self, k: int) -> None:
        cpu, dev = _rng_state(self.device)
        if self.unique:
            last_cpu, last_dev = self.unique[-1]
            if torch.equal(cpu, last_cpu) and (dev is None or torch.equal(dev, last_dev)):
                self.index[k] = len(self.unique) - 1
                return
        self.unique.append((cpu, dev))
        self.index[k] = len(self.unique) - 1

    def get(self, k: int):
        return self.unique[self.index[k]]


def _engine_needs(t: torch.Tensor) -> bool:
    """Will the running backward use a gradient for ``t``? (``torch.autograd.grad(loss, x)`` does
    not want the weights' gradients even when they require grad.)"""
    try:
        return bool(torch._C._will_engine_execute_node(torch.autograd.graph.get_gradient_edge(t).node))
    except (RuntimeError, AttributeError):  # not inside a backward / API not available: compute it
        return True


def step_vjp(plan: ChainPlan, i: int, x: torch.Tensor, cond: torch.Tensor | None, g: torch.Tensor,
             params: list[torch.Tensor], need_x: bool, need_cond: bool, rows: Rows | None = None):
    """Backward of reverse step ``i`` at input ``x`` for the output gradient ``g``: re-run the step
    with a graph (without its noise draw unless a learned sigma needs it: the noise term adds no
    gradient to x) and backpropagate. Returns (grad wrt x or None, grad wrt cond or None, grads
    wrt params). With ``rows``, x and g are that micro-batch's rows."""
    x = x.detach().requires_grad_(need_x)
    c = None if cond is None else cond.detach().requires_grad_(need_cond)
    with torch.enable_grad():
        y = plan.step(x, c, i, draw=False, rows=rows)
    return graph_vjp(x, c, y, g, params, need_x, need_cond)


def graph_vjp(x: torch.Tensor, c: torch.Tensor | None, y: torch.Tensor, g: torch.Tensor,
              params: list[torch.Tensor], need_x: bool, need_cond: bool):
    """Backpropagate ``g`` through a step's graph from ``x`` (and ``c``) to ``y``."""
    inputs = ([x] if need_x else []) + ([c] if need_cond else []) + params
    grads = list(torch.autograd.grad(y, inputs, g, allow_unused=True)) if y.requires_grad else [None] * len(inputs)
    g_x = grads.pop(0) if need_x else None
    g_c = grads.pop(0) if need_cond else None
    if need_x and g_x is None:
        g_x = torch.zeros_like(x)
    return g_x, g_c, grads


def _add(acc: list, grads: list) -> None:
    for j, gp in enumerate(grads):  # out of place: autograd may hand out aliased grads
        if gp is not None:
            acc[j] = gp if acc[j] is None else acc[j] + gp


def chunked_vjp(plan: ChainPlan, i: int, pieces, cond: torch.Tensor | None, g: torch.Tensor,
                params: list[torch.Tensor], need_x: bool, need_cond: bool, size: int | None):
    """``step_vjp`` of step ``i`` in micro-batches of ``size`` rows, or (``pieces`` a list of
    (rows, x, c, y) kept from the forward) through the kept graphs: (grad wrt x, grad wrt cond, grads)."""
    if not isinstance(pieces, list) and plan.chunks(size) is None:
        return step_vjp(plan, i, pieces, cond, g, params, need_x, need_cond)
    if not isinstance(pieces, list):
        x = pieces
        pieces = [(r, x[r.lo:r.hi], None, None) for r in plan.chunks(size)]
    g_x = torch.empty_like(g) if need_x else None
    g_cond = None if not need_cond else torch.zeros_like(cond)
    acc: list = [None] * len(params)
    for k in range(len(pieces)):
        r, x, c, y = pieces[k]
        pieces[k] = None  # a kept graph is freed as soon as it is used
        gr = g if r is None else g[r.lo:r.hi]
        if y is None:
            gx, gc, grads = step_vjp(plan, i, x, cond, gr, params, need_x, need_cond, rows=r)
        else:
            gx, gc, grads = graph_vjp(x, c, y, gr, params, need_x, need_cond)
        del x, c, y
        if need_x:
            if r is None:
                g_x = gx
            else:
                g_x[r.lo:r.hi] = gx
        if gc is not None:  # the whole cond's gradient (a micro-batch slices cond inside the step)
            g_cond = g_cond + gc
        _add(acc, grads)
    return g_x, g_cond, acc


def kept_graph(plan: ChainPlan, i: int, x: torch.Tensor, cond: torch.Tensor | None, need_cond: bool,
               size: int | None):
    """Step ``i`` run with a graph in micro-batches (the forward of a kept step): (output, pieces), the
    pieces (rows, x, c, y) for ``chunked_vjp``. The weights join the graph when they require grad."""
    chunks = plan.chunks(size) or [None]
    pieces, outs = [], []
    with torch.enable_grad():
        for r in chunks:
            xr = (x if r is None else x[r.lo:r.hi]).detach().requires_grad_()
            c = None if cond is None else cond.detach().requires_grad_(need_cond)
            y = plan.step(xr, c, i, rows=r)
            pieces.append((r, xr, c, y))
            outs.append(y.detach())
    return (outs[0] if len(outs) == 1 else torch.cat(outs)), pieces


class ChainCheckpoint(torch.autograd.Function):
    """The reverse chain with its step inputs kept every ``per_segment`` steps (1: per-step
    checkpointing; ~sqrt(S): segments). Forward: all steps without a graph; returns the output
    and the requested states. Backward: per segment, last first, recover the step inputs (no
    graph) from the kept one, then step by step re-run the step with a graph and backpropagate
    (``step_vjp``), adding each requested state's gradient when the sweep reaches it."""

    @staticmethod
    def forward(ctx, plan: ChainPlan, x: torch.Tensor, cond: torch.Tensor | None, *params: torch.Tensor):
        n = len(plan.purifier.chain)
        mem = plan.memory
        first_kept = n - (mem.kept if mem is not None else 0)  # steps first_kept.. keep their graphs
        fwd_batch = mem.forward_batch if mem is not None else None
        bwd_batch = mem.backward_batch if mem is not None else None
        # the kept inputs packed in one allocation: many small blocks pinned between the
        # network's large, short-lived ones fragment the heap (peak RSS would creep up with S)
        store = x.new_empty((len(range(0, first_kept, plan.per_segment)),) + tuple(x.shape))
        states = _RngStates(store.shape[0], x.device)
        kept, graphs = [], {}
        need_cond = cond is not None and ctx.needs_input_grad[2]
        for i in range(n):
            if i in plan.keep:
                kept.append(x.clone())
            if i >= first_kept:
                x, graphs[i] = kept_graph(plan, i, x, cond, need_cond, bwd_batch)
                continue
            if i % plan.per_segment == 0:
                store[i // plan.per_segment].copy_(x)
                states.capture(i // plan.per_segment)
            x = plan.step_rows(x, cond, i, fwd_batch)
        if n in plan.keep:
            kept.append(x.clone())
        # saved through autograd: freed after the backward (unless retain_graph), packed by any
        # saved-tensor hooks in force (e.g. torch.autograd.graph.save_on_cpu)
        ctx.save_for_backward(store, *([] if cond is None else [cond]))
        ctx.plan, ctx.states, ctx.params, ctx.graphs = plan, states, params, graphs
        return (x, *kept)

    @staticmethod
    @once_differentiable  # the recomputed steps are differentiated once: double backward raises
    def backward(ctx, g: torch.Tensor, *g_kept: torch.Tensor):
        plan, saved, states = ctx.plan, ctx.saved_tensors, ctx.states
        store, cond = saved[0], (saved[1] if len(saved) > 1 else None)
        n, seg = len(plan.purifier.chain), plan.per_segment
        mem = plan.memory
        first_kept = n - (mem.kept if mem is not None else 0)
        fwd_batch = mem.forward_batch if mem is not None else None
        bwd_batch = mem.backward_batch if mem is not None else None
        if any(v is None for v in ctx.graphs.values()):
            raise RuntimeError("the chain's kept step graphs (purifier.memory_budget) are used by the first backward; "
                               "backpropagate through a budgeted purification once")
        g_state = dict(zip(plan.keep, g_kept))
        use = [w and _engine_needs(p) for p, w in zip(ctx.params, ctx.needs_input_grad[3:])]
        params = [p for p, u in zip(ctx.params, use) if u]
        need_x0, need_cond = ctx.needs_input_grad[1], cond is not None and ctx.needs_input_grad[2]
        acc: list[torch.Tensor | None] = [None] * len(params)
        g_cond = None
        device = g.device
        outer = _rng_state(device)
        if g_state.get(n) is not None:
            g = g + g_state[n]

        def backprop(i, pieces):
            nonlocal g, g_cond
            g, g_c, grads = chunked_vjp(plan, i, pieces, cond, g, params, i > 0 or need_x0, need_cond, bwd_batch)
            if g_c is not None:
                g_cond = g_c if g_cond is None else g_cond + g_c
            if g is not None and g_state.get(i) is not None:
                g = g + g_state[i]
            _add(acc, grads)

        try:
            for i in reversed(range(first_kept, n)):  # the kept graphs: no recomputation
                pieces, ctx.graphs[i] = ctx.graphs[i], None
                backprop(i, pieces)
                del pieces
            for lo in reversed(range(0, first_kept, seg)):
                hi = min(lo + seg, first_kept)
                x, state = store[lo // seg], states.get(lo // seg)
                inputs = [(x, state)]
                if hi - lo > 1:  # recover the segment's step inputs (the last step's output is not needed)
                    _set_rng_state(device, state)
                    with torch.no_grad():
                        for i in range(lo, hi - 1):
                            x = plan.step_rows(x, cond, i, fwd_batch)
                            inputs.append((x, _rng_state(device)))
                for i in reversed(range(lo, hi)):
                    need_x = i > 0 or need_x0
                    if not (need_x or params or need_cond):
                        break
                    x, state = inputs.pop()
                    _set_rng_state(device, state)
                    backprop(i, x)
        finally:
            _set_rng_state(device, outer)
        it = iter(acc)
        return (None, g if need_x0 else None, g_cond, *(next(it) if u else None for u in use))
