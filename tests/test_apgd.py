"""APGD against AutoAttack's own code (pyautoattack 0.2.0, the `test` extra): the same iterates,
best points and step sizes at every iteration, from the same start, on deterministic models
(the shipped digits classifier and the DW-box replayed defence of a tiny purifier)."""
from __future__ import annotations

import inspect
import sys

import pytest
import torch
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from torch import nn

from dbp_core.attacks import NoisePlan, PlainModel
from dbp_core.attacks.apgd import APGD, checkpoint_schedule
from dbp_core.models import zoo
from dbp_core.models.datasets import load_dataset
from dbp_core.models.defended import DefendedClassifier
from dbp_core.models.normalized import Normalized
from dbp_core.purifier import Purifier

from ._tiny import TinyEps

_SINGLE_RUN = APGDAttack.attack_single_run


def _loop_head_line() -> int:
    lines, first = inspect.getsourcelines(_SINGLE_RUN)
    return first + next(k for k, text in enumerate(lines) if "grad2 = x_adv - x_adv_old" in text)


def autoattack_states(call) -> tuple[object, list[list[dict]]]:
    """Run ``call()`` (an AutoAttack ``perturb``) and record, for every ``attack_single_run``, the
    state after each update: at the head of iteration i the state after update i - 1, and at the
    return the state after the last one (read from the frame's locals with ``sys.settrace``)."""
    head, runs = _loop_head_line(), []

    def snap(f):
        loc = f.f_locals
        return {"x_adv": loc["x_adv"].detach().clone(), "x_best": loc["x_best"].clone(),
                "x_best_adv": loc["x_best_adv"].clone(), "step": loc["step_size"].clone(),
                "loss_best": loc["loss_best"].clone()}

    def local(frame, event, arg):
        if (event == "line" and frame.f_lineno == head) or event == "return":
            runs[-1].append(snap(frame))
        return local

    def outer(frame, event, arg):
        if event == "call" and frame.f_code is _SINGLE_RUN.__code__:
            runs.append([])
            return local
        return None

    previous = sys.gettrace()
    sys.settrace(outer)
    try:
        out = call()
    finally:
        sys.settrace(previous)
    return out, [r[1:] for r in runs]  # r[0]: the head of iteration 0, before any update


def our_states(attack: APGD, model, x, y, uids) -> tuple[torch.Tensor, list[list[dict]]]:
    runs: dict[tuple, list[dict]] = {}
    attack.trace = lambda phase, i, state: runs.setdefault(phase, []).append(
        {k: v.detach().clone() for k, v in state.items()})
    out = attack(model, x, y, uids)
    return out, list(runs.values())


def assert_same_iterates(ours, theirs, iterations):
    assert len(ours) == len(theirs) and ours, (len(ours), len(theirs))
    for run_ours, run_theirs in zip(ours, theirs):
        assert len(run_ours) == len(run_theirs) == iterations
        for i, (a, b) in enumerate(zip(run_ours, run_theirs)):
            for key in ("x_adv", "x_best", "x_best_adv", "loss_best"):
                assert torch.equal(a[key], b[key]), (i, key, (a[key] - b[key]).abs().max())
            assert torch.equal(a["step"].flatten(), b["step"].flatten()), i
    # the comparison covers the checkpoints: some step sizes were halved
    assert any(not torch.equal(r[0]["step"], r[-1]["step"]) for r in ours)


def digits(n=48):
    data = load_dataset("digits", "test")
    torch.manual_seed(0)
    clf = Normalized(zoo.default_classifier("digits"), *zoo.default_normalisation("digits")).eval()
    for p in clf.parameters():
        p.requires_grad_(False)
    return clf, data.x[:n].float(), data.y[:n].long(), data.uids[:n].long()


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_matches_autoattack_step_for_step_on_the_digits_classifier(norm, eps, loss):
    clf, x, y, uids = digits()
    n = 30
    ref = APGDAttack(clf, n_iter=n, norm={"linf": "Linf", "l2": "L2"}[norm], n_restarts=2, eps=eps, seed=5, loss=loss,
                     device="cpu")
    theirs_out, theirs = autoattack_states(lambda: ref.perturb(x, y))
    ours_out, ours = our_states(APGD(norm=norm, eps=eps, iterations=n, restarts=2, loss=loss, start_rng="autoattack",
                                     start_seed=5), PlainModel(clf), x, y, uids)
    assert_same_iterates(ours, theirs, n)
    assert torch.equal(ours_out, theirs_out)
    fooled = (clf(ours_out).argmax(1) != y).float().mean()
    assert 0 < fooled < 1  # the comparison covers fooled and robust points


@pytest.mark.parametrize("norm, eps", [("linf", 0.08), ("l2", 0.8)])
def test_apgd_t_matches_autoattack_targeted(norm, eps):
    clf, x, y, uids = digits(32)
    n = 12
    ref = APGDAttack_targeted(clf, n_iter=n, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, seed=3,
                              n_target_classes=4, device="cpu")
    theirs_out, theirs = autoattack_states(lambda: ref.perturb(x, y))
    ours_out, ours = our_states(APGD(norm=norm, eps=eps, iterations=n, loss="dlr-targeted", targets=4,
                                     start_rng="autoattack", start_seed=3), PlainModel(clf), x, y, uids)
    assert_same_iterates(ours, theirs, n)
    assert torch.equal(ours_out, theirs_out)


@pytest.mark.parametrize("norm, eps, loss", [("linf", 0.1, "ce"), ("l2", 0.8, "dlr")])
def test_apgd_matches_autoattack_on_the_dwbox_replayed_defence(norm, eps, loss):
    """The DW-box defence, its noise replayed, is a deterministic function of the image: APGD's
    iterates through a 3-step purifier equal AutoAttack's (the points all start correct, so
    AutoAttack attacks the whole batch and the wrapped model knows the uids)."""
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(6 * 64, 10)).eval()
    defended = DefendedClassifier(clf, Purifier(TinyEps(dtype=torch.float32), t_star=0.1, steps=3, grad_mode="full"))
    defended.requires_grad_(False)
    g = torch.Generator().manual_seed(2)
    x, uids, seed = torch.rand(12, 1, 8, 8, generator=g), torch.arange(40, 52), 99
    as_defence = lambda z: defended(z, uids, seed=seed)  # noqa: E731
    with torch.no_grad():
        y = as_defence(x).argmax(1)
    n = 15
    ref = APGDAttack(as_defence, n_iter=n, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, seed=1, loss=loss,
                     device="cpu")
    theirs_out, theirs = autoattack_states(lambda: ref.perturb(x, y))
    ours_out, ours = our_states(APGD(norm=norm, eps=eps, iterations=n, loss=loss, noise=NoisePlan("replay", seed),
                                     start_rng="autoattack", start_seed=1), defended, x, y, uids)
    assert_same_iterates(ours, theirs, n)
    assert torch.equal(ours_out, theirs_out)


def test_n_iterations_make_n_updates_and_n_plus_one_gradients():
    clf, x, y, uids = digits(8)
    calls = []
    model = PlainModel(lambda z: (calls.append(z.requires_grad), clf(z))[1])
    updates = []
    APGD(eps=0.05, iterations=10, trace=lambda phase, i, s: updates.append(i))(model, x, y, uids)
    assert updates == list(range(10))
    assert calls.count(True) == 11 and calls.count(False) == 1  # + AutoAttack's clean check


@pytest.mark.parametrize("n, expected", [(100, [21, 40, 56, 69, 79, 86, 92, 98]), (50, [10, 20, 29, 37, 44])])
def test_checkpoints_fall_where_autoattack_puts_them(n, expected):
    """The research notes' checkpoint list for n = 100 and 50 (loop index of each checkpoint)."""
    first, dec, low = checkpoint_schedule(n)
    at, k, counter = [], first, 0
    for i in range(n):
        counter += 1
        if counter == k:
            at.append(i)
            k, counter = max(k - dec, low), 0
    assert at[:len(expected)] == expected


def test_addressed_starts_do_not_depend_on_the_batch():
    clf, x, y, uids = digits(16)
    atk = APGD(eps=0.1, iterations=5, restarts=2)
    a = atk(PlainModel(clf), x, y, uids)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    b = atk(PlainModel(clf), x[perm], y[perm], uids[perm])
    assert torch.allclose(a[perm], b, atol=1e-6)
    c = atk(PlainModel(clf), x[:5], y[:5], uids[:5])
    assert torch.allclose(a[:5], c, atol=1e-6)


@pytest.fixture
def one_thread():
    """AutoAttack makes thousands of tiny calls: on a shared machine, torch's thread pool spinning
    for each costs 30x (the shipped experiments set threads = 1 for the same reason)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_autoattack_standard_is_autoattack_run_one_example_at_a_time(one_thread):
    """kind autoattack-standard: AutoAttack's own standard version, per example with a seed derived
    from its uid; on a plain classifier that is exactly pyautoattack's run on that example."""
    from pyautoattack import AutoAttack

    from dbp_core.attacks.autoattack_standard import AutoAttackStandard
    from dbp_core.purifier.noise import derive_seed
    clf, x, y, uids = digits(6)
    ours = AutoAttackStandard(eps=0.1, start_seed=4)(PlainModel(clf), x, y, uids)
    for b in range(6):
        ref, _ = AutoAttack(clf, eps=0.1, seed=derive_seed(4, int(uids[b])), version="standard").run_standard_evaluation(
            x[b:b + 1], y[b:b + 1], batch_size=1)
        assert torch.equal(ours[b], ref[0])
    assert (clf(ours).argmax(1) != y).any() and (ours - x).abs().max() <= 0.1 + 1e-6
