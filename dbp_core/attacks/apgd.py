"""APGD (Croce & Hein 2020, Algorithm 1) as AutoAttack runs it, with batched EOT replicas and
addressed noise, and the selection rule corrected for stochastic defences (docs/science.md, "APGD").

With ``selection = "autoattack"`` every step is AutoAttack's ``APGDAttack.attack_single_run``
and ``perturb`` (pyautoattack 0.2.0): on a deterministic model, from the same start, the iterates
are the same bit for bit (tests/test_apgd.py checks x_adv, x_best and the step sizes at every
iteration). ``selection = "lowest-correct"`` keeps the iterations and returns instead, per
example, the iterate with the lowest share of correct predictions over several purifications.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from .. import ops
from .base import IterationHook, NoisePlan, as_attack_model, derive_seed, logits_of, success_rate
from .eot import eot_gradient
from .losses import attack_loss, is_targeted, ranked_class
from .names import NORMS, SELECTIONS, with_defaults

START_RNGS = ("addressed", "autoattack")

# ---------------------------------------------------------------- AutoAttack's geometry
# Written as AutoAttack writes them (not as lp.py does) so that the floats are the same: its
# L2 projection is applied at every step, even inside the ball, and its norms add 1e-12.


def _rows(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def _normalize(t: torch.Tensor, norm: str) -> torch.Tensor:
    """t / (||t|| + 1e-12) per example, ||.|| the max-abs (Linf) or Euclidean (L2) norm."""
    flat = t.view(t.shape[0], -1)
    size = flat.abs().max(1)[0] if norm == "linf" else (flat ** 2).sum(-1).sqrt()
    return t / (_rows(size, t) + 1e-12)


def _l2(t: torch.Tensor) -> torch.Tensor:
    return _rows((t ** 2).view(t.shape[0], -1).sum(-1).sqrt(), t)


def _project(z: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """AutoAttack's projection onto the eps-ball around x intersected with [0, 1]."""
    if norm == "linf":
        return torch.clamp(torch.min(torch.max(z, x - eps), x + eps), 0.0, 1.0)
    d = z - x
    return torch.clamp(x + _normalize(d, norm) * torch.min(eps * torch.ones_like(x), _l2(d)), 0.0, 1.0)


def _direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    return torch.sign(grad) if norm == "linf" else _normalize(grad, norm)


def _start_noise(x: torch.Tensor, uids: torch.Tensor, norm: str, seed: int,
                 generator: torch.Generator | None) -> torch.Tensor:
    """The unnormalised random start direction: uniform on [-1, 1]^d (Linf) or standard normal
    (L2). ``generator``: drawn as AutoAttack draws it (torch's CPU generator, batch-dependent);
    else addressed by (seed, uid), so that an example's start does not depend on its batch."""
    if generator is not None:
        t = 2 * torch.rand(x.shape, generator=generator) - 1 if norm == "linf" else torch.randn(x.shape, generator=generator)
        return t.to(device=x.device, dtype=x.dtype)
    z = ops.normal(x.shape, seed, 0, uids, 0, x.dtype)
    return torch.erf(z / 2 ** 0.5) if norm == "linf" else z  # 2 Phi(z) - 1 is uniform on [-1, 1]


def autoattack_start(x: torch.Tensor, uids: torch.Tensor, norm: str, eps: float, seed: int) -> torch.Tensor:
    """AutoAttack's random start x + eps t / ||t|| clamped to [0, 1], t addressed by (seed, uid):
    a point at distance eps (before the clamp) in a uniform L2 direction, or with its largest
    Linf coordinate at eps."""
    t = _start_noise(x, uids, norm, seed, None)
    return (x + eps * torch.ones_like(x) * _normalize(t, norm)).clamp(0.0, 1.0)


def checkpoint_schedule(n: int) -> tuple[int, int, int]:
    """(first interval, its decrement, its minimum) in iterations for ``n`` iterations:
    0.22 n, 0.03 n and 0.06 n rounded down, at least 1 (Croce & Hein 2020, sec. 3.2)."""
    return max(int(0.22 * n), 1), max(int(0.03 * n), 1), max(int(0.06 * n), 1)


@dataclass
class RunResult:
    """One APGD run on a batch (AutoAttack's ``attack_single_run`` returns the first four)."""
    x_best: torch.Tensor  # highest-loss iterate
    acc: torch.Tensor  # bool [B]: never misclassified (last EOT draw) at any iterate
    loss_best: torch.Tensor
    x_best_adv: torch.Tensor  # last misclassified iterate, else the start
    x_sel: torch.Tensor  # lowest-correct: the iterate with the lowest share of correct predictions
    sel_frac: torch.Tensor
    sel_loss: torch.Tensor


class APGD:
    r"""APGD: Auto-PGD with momentum, step-size halving at checkpoints and restarts.

    Paper: Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020 (Algorithm 1; DLR eq. 6; APGD-T sec. 4.3). Reference code:
    AutoAttack's ``APGDAttack`` / ``APGDAttack_targeted`` (pyautoattack 0.2.0).

    The arguments left None take kind ``apgd``'s defaults (names.py,
    ``KIND_DEFAULTS``), the same as an ``[[attacks]]`` entry ``kind = "apgd"`` with that
    norm; kind apgd-t is APGD with ``loss = "dlr-targeted"``, apgd-eot with its EOT, selection,
    iterations and random start.

    Arguments:
        norm (str): 'linf' or 'l2'. (Default: 'linf')
        eps (float): budget in [0, 1] pixel units. (Default: 8/255 Linf, 0.5 L2)
        iterations (int): updates; ``iterations + 1`` gradients per run, AutoAttack's ``n_iter``. (Default: 100)
        restarts (int): runs per target, each from a new random start on the points not yet
            fooled (autoattack) or not yet always fooled (lowest-correct). (Default: 1)
        eot (int): purifications per gradient; the gradient is their mean. (Default: 1)
        eot_chunk (int): replicas per forward pass. (Default: all at once)
        noise (NoisePlan): the attacker's purification noise per iteration. (Default: fresh, base 0)
        random_start (bool): start at x + eps * t / ||t|| (AutoAttack's start). (Default: True)
        start_rng (str): 'addressed' — t addressed by (start_seed, restart, uid), batch-independent;
            'autoattack' — t from a CPU ``torch.Generator`` seeded once with ``start_seed``, drawn
            for the points still attacked, as AutoAttack does (for step-for-step comparisons).
            (Default: 'addressed')
        start_seed (int): seed of the random starts. (Default: 0)
        loss (str): 'ce', 'margin', 'dlr' or 'dlr-targeted' (APGD-T). (Default: 'ce')
        targets (int): APGD-T's target classes, the 2nd..(targets+1)-th largest clean logits. (Default: 9)
        rho (float): a checkpoint halves the step if the loss rose in at most rho of the interval's
            steps. (Default: 0.75)
        momentum (float): 0.75 in AutoAttack. (Default: 0.75)
        selection (str): 'autoattack' — per example the last iterate that the last EOT draw
            misclassified; the clean input if none did or if the clean input was already
            misclassified (AutoAttack's rule). 'lowest-correct' — the iterate, start included, with
            the lowest share of correct predictions over ``selection_samples`` fresh purifications
            (else its EOT replicas); ties to the higher loss; the loss is the replicas' mean.
            (Default: 'autoattack')
        selection_samples (int): lowest-correct only. (Default: the EOT replicas)
        on_iteration (callable): ``(i, mean loss, attacker-view success)`` at every gradient.
        trace (callable): ``(phase, i, state)`` after update ``i`` of each run, state = dict of
            x_adv, x_best, x_best_adv, step, loss_best (for comparisons with the reference).

    Shape:
        - model: ``model(x, uids, replicas=K, replica=r, **noise) -> [K*B, classes]`` (or a plain classifier).
        - x: [B, C, H, W] in [0, 1]. y: [B] labels. uids: [B] int64 dataset ids.
        - output: [B, C, H, W] adversarial examples.

    Examples::
        >>> attack = APGD(norm="linf", eps=8/255, iterations=100, eot=20, loss="dlr")
        >>> x_adv = attack(defended, x, y, uids)
    """

    kind = "apgd"  # the registry kind whose defaults fill the arguments left None

    def __init__(self, norm: str = NORMS[0], eps: float | None = None, iterations: int | None = None,
                 restarts: int | None = None, eot: int | None = None, eot_chunk: int | None = None,
                 noise: NoisePlan | None = None, random_start: bool | None = None, start_rng: str = "addressed",
                 start_seed: int = 0, loss: str | None = None, targets: int | None = None, rho: float = 0.75,
                 momentum: float = 0.75, selection: str | None = None, selection_samples: int | None = None,
                 on_iteration: IterationHook | None = None, trace: Callable[[tuple, int, dict], None] | None = None):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        a = with_defaults(self.kind, norm, eps=eps, iterations=iterations, restarts=restarts, eot=eot,
                          random_start=random_start, loss=loss, targets=targets, selection=selection)
        eps, iterations, restarts, eot, targets = a["eps"], a["iterations"], a["restarts"], a["eot"], a["targets"]
        random_start, loss, selection = a["random_start"], a["loss"], a["selection"]
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        if start_rng not in START_RNGS:
            raise ValueError(f"start_rng must be one of {START_RNGS}, got {start_rng!r}")
        if eps <= 0 or iterations < 0 or eot < 1 or restarts < 1 or targets < 1:
            raise ValueError(f"need eps > 0, iterations >= 0, eot >= 1, restarts >= 1, targets >= 1; got {eps}, "
                             f"{iterations}, {eot}, {restarts}, {targets}")
        if selection_samples is not None and selection != "lowest-correct":
            raise ValueError("selection_samples are the fresh purifications of selection = 'lowest-correct'")
        attack_loss(loss)
        self.norm, self.eps, self.iterations, self.restarts = norm, float(eps), int(iterations), int(restarts)
        self.eot, self.eot_chunk = int(eot), eot_chunk
        self.noise = noise or NoisePlan("fresh", 0)
        self.random_start, self.start_rng, self.start_seed = random_start, start_rng, start_seed
        self.loss, self.targets, self.rho, self.momentum = loss, int(targets), rho, momentum
        self.selection, self.selection_samples = selection, selection_samples
        self.on_iteration, self.trace = on_iteration, trace

    # ------------------------------------------------------------ phases

    def phases(self) -> list[tuple]:
        """(target rank or None, restart) of each run, in AutoAttack's order (targets outer)."""
        ranks = range(2, self.targets + 2) if is_targeted(self.loss) else [None]
        return [(rank, r) for rank in ranks for r in range(self.restarts)]

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, uids: torch.Tensor) -> torch.Tensor:
        # what one call changes (the start generator, the gradient count) is passed through it, not
        # kept on the instance: one attack object may attack several batches at once
        model = as_attack_model(model)
        x = x.detach()
        generator = torch.Generator().manual_seed(int(self.start_seed)) if self.start_rng == "autoattack" else None
        calls = itertools.count()  # gradients so far in this call (the iteration axis of on_iteration)
        if self.selection == "autoattack":
            return self._autoattack(model, x, y, uids, generator, calls)
        return self._lowest_correct(model, x, y, uids, generator, calls)

    def _run_phase(self, model, x, y, uids, idx, phase, generator, calls: Iterator[int]) -> RunResult:
        rank, restart = phase
        scope = ("restart", restart) if rank is None else ("target", rank, "restart", restart)
        plan = self.noise.scoped(*scope)
        xs, ys, us = x[idx], y[idx], uids[idx]
        target = None
        if rank is not None:  # a fresh clean forward on the points attacked (AutoAttack's APGD-T)
            with torch.no_grad():
                target = ranked_class(logits_of(model(xs, us, **plan.kwargs("target"))), rank)
        t = _start_noise(xs, us, self.norm, derive_seed(self.start_seed, *scope), generator) \
            if self.random_start else None
        return self.run(model, xs, ys, us, target=target, plan=plan, start=t, phase=phase, calls=calls)

    def _autoattack(self, model, x, y, uids, generator, calls: Iterator[int]) -> torch.Tensor:
        """AutoAttack's ``perturb``: only points the clean forward classifies correctly are attacked,
        restarts only on points not yet fooled; a fooled point gets its run's ``x_best_adv``."""
        with torch.no_grad():
            robust = logits_of(model(x, uids, **self.noise.kwargs("clean"))).argmax(1) == y
        x_out = x.clone()
        for phase in self.phases():
            idx = robust.nonzero().view(-1)
            if idx.numel() == 0:
                continue
            res = self._run_phase(model, x, y, uids, idx, phase, generator, calls)
            fooled = ~res.acc
            robust[idx[fooled]] = False
            x_out[idx[fooled]] = res.x_best_adv[fooled]
        return x_out

    def _lowest_correct(self, model, x, y, uids, generator, calls: Iterator[int]) -> torch.Tensor:
        """Every point is attacked until one of its iterates is never classified correctly; per
        point the iterate with the lowest share of correct predictions over all runs is kept."""
        frac = torch.full((x.shape[0],), float("inf"), device=x.device)
        loss = torch.full((x.shape[0],), float("-inf"), dtype=x.dtype, device=x.device)
        x_out = x.clone()
        for phase in self.phases():
            idx = (frac > 0).nonzero().view(-1)
            if idx.numel() == 0:
                continue
            res = self._run_phase(model, x, y, uids, idx, phase, generator, calls)
            better = (res.sel_frac < frac[idx]) | ((res.sel_frac == frac[idx]) & (res.sel_loss > loss[idx]))
            keep = idx[better]
            frac[keep], loss[keep], x_out[keep] = res.sel_frac[better], res.sel_loss[better], res.x_sel[better]
        return x_out

    # ------------------------------------------------------------ one run

    def _evaluate(self, model, x_adv, y, uids, target, plan: NoisePlan, i: int, calls: Iterator[int]):
        """(gradient, loss, prediction correct, share correct) at x_adv: the mean EOT gradient;
        loss and prediction of the last EOT draw (AutoAttack) or the replicas' mean loss and the
        share of correct predictions (lowest-correct)."""
        grad, losses, logits = eot_gradient(model, x_adv, y, uids, self.eot, self.eot_chunk, self.loss, target,
                                            **plan.kwargs(i))
        grad = grad / float(self.eot)
        B = y.shape[0]
        evaluation = next(calls)
        if self.on_iteration is not None:
            self.on_iteration(evaluation, float(losses.mean()), success_rate(logits, y))
        correct = (logits.argmax(1) == y.repeat(self.eot)).view(self.eot, B)
        if self.selection == "autoattack":
            return grad, losses.view(self.eot, B)[-1], correct[-1], None
        if self.selection_samples:  # fresh purifications, independent of the gradient's
            with torch.no_grad():
                sel = logits_of(model(x_adv, uids, replicas=self.selection_samples,
                                      seed=derive_seed(plan.base, *plan.scope, "selection", i)))
            correct = (sel.argmax(1) == y.repeat(self.selection_samples)).view(-1, B)
        return grad, losses.view(self.eot, B).mean(0), correct[-1], correct.float().mean(0)

    def run(self, model, x: torch.Tensor, y: torch.Tensor, uids: torch.Tensor, *, target=None,
            plan: NoisePlan | None = None, start: torch.Tensor | None = None, phase: tuple = (None, 0),
            calls: Iterator[int] | None = None) -> RunResult:
        """One APGD run from ``x + eps * start / ||start||`` (from x when ``start`` is None):
        AutoAttack's ``attack_single_run``, ``iterations`` updates after the gradient at the start.
        ``calls`` counts the gradients of the whole attack (on_iteration's axis; default: from 0)."""
        model, plan, calls = as_attack_model(model), plan or self.noise, itertools.count() if calls is None else calls
        n, norm, eps = self.iterations, self.norm, self.eps
        interval, decrement, min_interval = checkpoint_schedule(n)
        x_adv = x + eps * torch.ones_like(x) * _normalize(start, norm) if start is not None else x.clone()
        x_adv = x_adv.clamp(0.0, 1.0)
        x_best, x_best_adv = x_adv.clone(), x_adv.clone()
        B = x.shape[0]
        loss_steps = torch.zeros(n, B, dtype=x.dtype, device=x.device)

        grad, loss, pred, frac = self._evaluate(model, x_adv, y, uids, target, plan, 0, calls)
        grad_best, loss_best, acc = grad.clone(), loss.clone(), pred.clone()
        x_sel, sel_frac, sel_loss = x_adv.clone(), frac, loss.clone()
        step = 2.0 * eps * torch.ones([B, *([1] * (x.dim() - 1))], dtype=x.dtype, device=x.device)
        x_old = x_adv.clone()
        k, counter = interval, 0
        best_at_check, reduced_at_check = loss_best.clone(), torch.ones(B, dtype=torch.bool, device=x.device)
        for i in range(n):
            with torch.no_grad():
                grad2 = x_adv - x_old
                x_old = x_adv.clone()
                a = self.momentum if i > 0 else 1.0
                z = _project(x_adv + step * _direction(grad, norm), x, norm, eps)
                # evaluated as written even at i = 0 (a = 1): x + (z - x) is not always z in floats
                x_adv = _project(x_adv + (z - x_adv) * a + grad2 * (1 - a), x, norm, eps)
            grad, loss, pred, frac = self._evaluate(model, x_adv, y, uids, target, plan, i + 1, calls)
            with torch.no_grad():
                acc = acc & pred
                x_best_adv = torch.where(_rows(~pred, x), x_adv, x_best_adv)
                if frac is not None:
                    better = (frac < sel_frac) | ((frac == sel_frac) & (loss > sel_loss))
                    sel_frac, sel_loss = torch.where(better, frac, sel_frac), torch.where(better, loss, sel_loss)
                    x_sel = torch.where(_rows(better, x), x_adv, x_sel)
                loss_steps[i] = loss
                improved = loss > loss_best  # strict, as AutoAttack
                x_best = torch.where(_rows(improved, x), x_adv, x_best)
                grad_best = torch.where(_rows(improved, x), grad, grad_best)
                loss_best = torch.where(improved, loss, loss_best)
                counter += 1
                if counter == k:
                    # loss increases over the interval; at the first checkpoint the last term reads
                    # row -1 of the zero-initialised buffer, as AutoAttack's indexing does
                    rises = sum((loss_steps[i - c] > loss_steps[i - c - 1]).to(x.dtype) for c in range(k))
                    halve = (rises <= k * self.rho) | (~reduced_at_check & (best_at_check >= loss_best))
                    reduced_at_check, best_at_check = halve, loss_best.clone()
                    step = torch.where(_rows(halve, x), step / 2.0, step)
                    x_adv = torch.where(_rows(halve, x), x_best, x_adv)
                    grad = torch.where(_rows(halve, x), grad_best, grad)
                    k, counter = max(k - decrement, min_interval), 0
            if self.trace is not None:
                self.trace(phase, i, {"x_adv": x_adv, "x_best": x_best, "x_best_adv": x_best_adv, "step": step,
                                      "loss_best": loss_best})
        return RunResult(x_best, acc, loss_best, x_best_adv, x_sel,
                         sel_frac if sel_frac is not None else acc.float(), sel_loss)
