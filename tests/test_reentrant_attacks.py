"""Attacks keep no per-call state on themselves (docs/design.md, "Reading the code"): one attack
object that attacks two batches — one after the other, or at once from two threads whose model
calls alternate — returns the same examples and reports the same iterations as two fresh objects."""
from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from dbp_core.attacks import APGD, PGD, AutoAttackRand, DiffAttack, DWBox, NoisePlan
from dbp_core.models.defended import DefendedClassifier
from dbp_core.purifier.purifier import Purifier
from tests._tiny import TinyEps

CLASSES = 10


def defended() -> DefendedClassifier:
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, CLASSES))
    purifier = Purifier(TinyEps(), t_star=0.1, steps=3, grad_mode="full")
    return DefendedClassifier(clf.double().eval(), purifier).double()


def batches(model: DefendedClassifier, n: int = 4) -> dict:
    """Two batches of other images and uids, labelled by the classifier itself (APGD's AutoAttack
    selection attacks only the points the model gets right)."""
    out = {}
    for name, seed, first_uid in (("a", 1, 100), ("b", 2, 200)):
        x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        with torch.no_grad():
            out[name] = x, model.classify(x).argmax(1), torch.arange(first_uid, first_uid + n)
    return out


class Lockstep(nn.Module):
    """The model seen by two threads whose forward passes take turns: a thread's next call waits
    until the other thread has made one (or has finished). State an attack kept on itself between
    two of its own calls would be overwritten by the other thread's call in between."""

    def __init__(self, model: DefendedClassifier, first: str, second: str):
        super().__init__()
        self.model, self.purifier, self.classify = model, model.purifier, model.classify  # what wrappers read
        self.other = {first: second, second: first}
        self.turn, self.finished, self.cond = first, set(), threading.Condition()
        self.interleaved = 0  # calls made while the other thread was still attacking

    def forward(self, x, uids, **kwargs):
        me = threading.current_thread().name
        with self.cond:
            self.cond.wait_for(lambda: self.turn == me or self.other[me] in self.finished)
            self.interleaved += self.other[me] not in self.finished
        try:
            return self.model(x, uids, **kwargs)
        finally:
            with self.cond:
                self.turn = self.other[me]
                self.cond.notify_all()

    def finish(self) -> None:
        with self.cond:
            self.finished.add(threading.current_thread().name)
            self.cond.notify_all()


def in_threads(jobs: dict, at_once: bool) -> dict:
    """``{name: job()}``, each job in a thread of that name: all started together, or one after another."""
    out, errors = {}, []

    def work(name, job):
        try:
            out[name] = job()
        except BaseException as exc:  # noqa: BLE001 — re-raised in the test's thread
            errors.append(exc)
    threads = [threading.Thread(target=work, args=item, name=item[0]) for item in jobs.items()]
    for group in ([threads] if at_once else [[t] for t in threads]):
        for t in group:
            t.start()
        for t in group:
            t.join(timeout=600)  # a guard against a deadlock in the test itself
            assert not t.is_alive(), f"thread {t.name} did not finish"
    if errors:
        raise errors[0]
    return out


ATTACKS = {
    "pgd-targeted": lambda hook: PGD(eps=0.1, iterations=3, eot=2, loss="dlr-targeted", random_start=True,
                                     noise=NoisePlan("fresh", 5), on_iteration=hook),
    "dwbox": lambda hook: DWBox(eval_seed=7, eps=0.1, iterations=3, on_iteration=hook),
    "apgd-t": lambda hook: APGD(eps=0.1, iterations=3, loss="dlr-targeted", targets=2, eot=2,
                                noise=NoisePlan("fresh", 5), on_iteration=hook),
    "apgd-lowest-correct": lambda hook: APGD(eps=0.1, iterations=3, restarts=2, eot=2, selection="lowest-correct",
                                             noise=NoisePlan("fresh", 5), on_iteration=hook),
    "autoattack-rand": lambda hook: AutoAttackRand(eps=0.1, iterations=2, eot=2, evaluations=3,
                                                   noise=NoisePlan("fresh", 5), on_iteration=hook),
    "diffattack": lambda hook: DiffAttack(eps=0.1, iterations=2, eot=1, evaluations=2,
                                          noise=NoisePlan("fresh", 5), on_iteration=hook),
}


def attacked(make, model, data: dict, shared: bool, at_once: bool):
    """(x_adv per batch, the on_iteration reports of each batch's call)."""
    reports: dict[str, list] = {name: [] for name in data}

    def hook(i, loss, success):
        reports[threading.current_thread().name].append((i, loss, success))
    one = make(hook) if shared else None

    def job(name):
        attack = one if shared else make(hook)
        try:
            return attack(model, *data[name])
        finally:
            if isinstance(model, Lockstep):
                model.finish()
    return in_threads({name: (lambda name=name: job(name)) for name in data}, at_once), reports


@pytest.mark.parametrize("kind", list(ATTACKS))
def test_one_attack_object_attacks_two_batches_as_two_fresh_ones(kind):
    model = defended()
    data = batches(model)
    fresh, fresh_reports = attacked(ATTACKS[kind], model, data, shared=False, at_once=False)
    assert fresh_reports["a"] and fresh_reports["a"] != fresh_reports["b"]  # the batches differ
    assert all(not torch.equal(fresh[n], data[n][0]) for n in data)  # the attack moved them

    again, again_reports = attacked(ATTACKS[kind], model, data, shared=True, at_once=False)  # one after the other
    lockstep = Lockstep(model, *data)
    together, together_reports = attacked(ATTACKS[kind], lockstep, data, shared=True, at_once=True)
    assert lockstep.interleaved >= 2  # each thread called the model while the other was mid-attack
    for name in data:
        assert torch.equal(again[name], fresh[name]) and again_reports[name] == fresh_reports[name]
        assert torch.equal(together[name], fresh[name]), f"{kind}: batch {name} differs when attacked at once"
        assert together_reports[name] == fresh_reports[name], f"{kind}: on_iteration of batch {name} differs"
