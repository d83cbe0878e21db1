"""The attack losses against hand-written formulas, the rand version's selection rule (the ICLR 2025
authors' fix), the gradient approximations and the model-output face that extra objectives use."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

from dbp_core.attacks import NoisePlan, PlainModel
from dbp_core.attacks.autoattack_rand import AutoAttackRand
from dbp_core.attacks.base import ModelOutput
from dbp_core.attacks.eot import eot_gradient
from dbp_core.attacks.gradients import attacker_view
from dbp_core.attacks.losses import (LOSSES, best_other_class, check_classes, dlr_loss, dlr_targeted_loss,
                                     margin_loss, ranked_class)
from dbp_core.models.defended import DefendedClassifier
from dbp_core.purifier import Purifier

from ._tiny import TinyEps


def logits_batch(n=40, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    z[::4, :] = z[::4, :].sort(dim=1).values  # some rows where the label is the top class
    y[::4] = classes - 1
    return z, y


def by_hand(z, y, loss, target=None):
    out = []
    for i in range(z.shape[0]):
        row = [float(v) for v in z[i]]
        zy = row[int(y[i])]
        best_other = max(v for j, v in enumerate(row) if j != int(y[i]))
        s = sorted(row, reverse=True)  # z_(1) >= z_(2) >= ...
        if loss == "margin":
            out.append(best_other - zy)
        elif loss == "dlr":
            out.append(-(zy - best_other) / (s[0] - s[2] + 1e-12))
        else:
            out.append(-(zy - row[int(target[i])]) / (s[0] - 0.5 * (s[2] + s[3]) + 1e-12))
    return torch.tensor(out, dtype=torch.float64)


def test_margin_dlr_and_targeted_dlr_equal_their_formulas():
    z, y = logits_batch()
    target = (y + 3) % 10
    assert torch.allclose(margin_loss(z, y), by_hand(z, y, "margin"), rtol=0, atol=1e-12)
    assert torch.allclose(dlr_loss(z, y), by_hand(z, y, "dlr"), rtol=0, atol=1e-12)
    assert torch.allclose(dlr_targeted_loss(z, y, target), by_hand(z, y, "dlr-targeted", target), rtol=0, atol=1e-12)
    assert torch.allclose(LOSSES["ce"](z, y), -torch.log_softmax(z, 1)[torch.arange(len(y)), y], atol=1e-12)


def test_dlr_losses_are_autoattacks_bit_for_bit():
    z, y = logits_batch(seed=3)
    z = z.float()
    ref = APGDAttack(lambda v: v, eps=0.1)
    assert torch.equal(dlr_loss(z, y), ref.dlr_loss(z, y))
    t = ranked_class(z, 2)
    reft = APGDAttack_targeted(lambda v: v, eps=0.1)
    reft.y_target = t
    assert torch.equal(dlr_targeted_loss(z, y, t), reft.dlr_loss_targeted(z, y))


def test_margin_is_positive_exactly_when_misclassified_and_dlr_is_scale_and_shift_invariant():
    z, y = logits_batch(seed=5)
    assert torch.equal(margin_loss(z, y) > 0, z.argmax(1) != y)
    assert torch.allclose(dlr_loss(3.0 * z + 7.0, y), dlr_loss(z, y), atol=1e-12)


def test_targets_and_class_counts():
    z = torch.tensor([[0.0, 5.0, 1.0, 3.0], [4.0, 2.0, 9.0, 1.0]])
    y = torch.tensor([1, 2])
    assert ranked_class(z, 2).tolist() == [3, 0]  # AutoAttack: the 2nd largest logit
    assert best_other_class(z, y).tolist() == [3, 0]
    check_classes("dlr-targeted", 4)
    with pytest.raises(ValueError, match="at least 4 classes"):
        check_classes("dlr-targeted", 3)
    with pytest.raises(ValueError, match="at least 3 classes"):
        check_classes("dlr", 2)


def test_an_extra_objective_of_the_model_is_added_to_the_loss():
    """The face a DiffAttack-style term plugs into: a model returning ModelOutput(logits, extra)."""
    w = torch.randn(10, 4, dtype=torch.float64)

    def model(x, uids, replicas=1, replica=0, **noise):
        flat = x.flatten(1).repeat(replicas, 1)
        return ModelOutput(flat @ w.T, extra=(flat ** 2).sum(1))

    x = torch.rand(3, 1, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    grad, loss, logits = eot_gradient(model, x, y, torch.arange(3), 2, loss="ce", seed=0)
    xr = x.detach().requires_grad_()
    ref = F.cross_entropy(xr.flatten(1) @ w.T, y, reduction="none") + (xr.flatten(1) ** 2).sum(1)
    assert torch.allclose(loss, ref.detach().repeat(2))
    assert torch.allclose(grad, 2 * torch.autograd.grad(ref.sum(), xr)[0])
    assert logits.shape == (6, 10)


class ScriptedModel(torch.nn.Module):
    """A 'stochastic' model whose correctness per evaluation is scripted: for example b the share of
    evaluations that classify it correctly is ``share(b, x)``, from the image's mean brightness."""

    def __init__(self, shares):
        super().__init__()
        self.shares = shares  # function (x [B,...]) -> [B] share correct

    def forward(self, x, uids, replicas=1, replica=0, seed=None, **noise):
        share = self.shares(x.detach())
        k = torch.arange(replica, replica + replicas, dtype=torch.float64)[:, None]
        correct = ((k + 0.5) / 20 < share[None, :]).reshape(-1)  # a deterministic fraction of 20
        z = torch.zeros(replicas * x.shape[0], 3, dtype=x.dtype)
        z[:, 0] = torch.where(correct, 1.0, -1.0)
        return z + 0 * x.flatten(1).sum(1, keepdim=True).repeat(replicas, 1)


def test_rand_version_keeps_per_point_the_example_with_the_lowest_mean_correctness(monkeypatch):
    """AutoAttackRand scores the clean input and each attack's example over 20 evaluations and keeps
    per point the lowest share, strictly (ties keep the earlier); points at 0 are not attacked again."""
    # images whose brightness encodes their share of correct evaluations: the clean ones in [0, 1),
    # the ones APGD-CE and APGD-DLR return per point at 1 + share
    clean = torch.tensor([0.8, 0.4, 0.0, 0.6])
    x = clean.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    y = torch.zeros(4, dtype=torch.long)
    returned = {"ce": torch.tensor([0.5, 0.2, 0.0, 0.6]), "dlr": torch.tensor([0.3, 0.2, 0.1, 0.9])}
    calls = []

    def fake_apgd(self, loss, offset=0):
        def attack(model, xs, ys, us):
            calls.append((loss, us.tolist()))
            return returned[loss][us].view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone() + 1
        return attack

    monkeypatch.setattr(AutoAttackRand, "_apgd", fake_apgd)
    share = lambda img: img.flatten(1)[:, 0] % 1.0  # noqa: E731
    atk = AutoAttackRand(eps=0.1, evaluations=20, noise=NoisePlan("fresh", 0))
    out = atk(ScriptedModel(share), x, y, torch.arange(4))
    assert calls == [("ce", [0, 1, 3]), ("dlr", [0, 1, 3])]  # point 2 starts at 0: never attacked
    # point 0: 0.8 -> 0.5 (ce) -> 0.3 (dlr); point 1: 0.4 -> 0.2 -> 0.2 (tie: keeps ce's);
    # point 2: clean 0.0; point 3: 0.6 -> 0.6 (tie: keeps the clean input) -> 0.9 (higher: keeps it)
    assert atk.scores.tolist() == pytest.approx([0.3, 0.2, 0.0, 0.6])
    assert out[:, 0, 0, 0].tolist() == pytest.approx([1.3, 1.2, 0.0, 0.6])


def test_rand_version_end_to_end_on_a_tiny_defence():
    torch.manual_seed(0)
    defended = DefendedClassifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).double(),
                                  Purifier(TinyEps(), t_star=0.1, steps=2, grad_mode="full"))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = defended(x, torch.arange(6), seed=1).argmax(1)
    atk = AutoAttackRand(eps=0.3, iterations=4, eot=2, evaluations=5, noise=NoisePlan("fresh", 2))
    x_adv = atk(defended, x, y, torch.arange(6))
    assert (x_adv - x).abs().max() <= 0.3 + 1e-9
    clean = atk.score(defended, x, y, torch.arange(6), "clean")  # the same seeds as inside: the same shares
    assert (atk.scores <= clean).all() and atk.scores.sum() < clean.sum()
    # scores only fall, strictly: a point whose score is still its clean one kept its clean input
    # (the reverse need not hold: a clean input that APGD returns unfooled is scored again, afresh)
    unchanged = atk.scores == clean
    assert (x_adv[unchanged] == x[unchanged]).all()
    assert not (x_adv == x).flatten(1).all(1).all()


@pytest.mark.parametrize("gradient", ["bpda", "blind", "forward-only"])
def test_gradient_approximations_differentiate_what_they_say(gradient):
    torch.manual_seed(0)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).double()
    purifier = Purifier(TinyEps(), t_star=0.1, steps=3, grad_mode="full")
    defended = DefendedClassifier(clf, purifier)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    y, uids, seed = torch.tensor([1, 2, 3]), torch.arange(3), 7
    view = attacker_view(defended, gradient)
    g = eot_gradient(view, x, y, uids, 2, loss="ce", seed=seed)[0]
    xr = x.detach().requires_grad_()
    if gradient == "bpda":  # the classifier's gradient at the purified points, summed over replicas
        xp = purifier(x, uids, replicas=2, seed=seed).detach().requires_grad_()
        ref = torch.autograd.grad(F.cross_entropy(clf(xp), y.repeat(2), reduction="sum"), xp)[0]
        ref = ref.view(2, 3, 1, 8, 8).sum(0)
        forward = defended(x, uids, replicas=2, seed=seed)
    elif gradient == "blind":  # the classifier alone
        ref = 2 * torch.autograd.grad(F.cross_entropy(clf(xr), y, reduction="sum"), xr)[0]
        forward = clf(x).repeat(2, 1)
    else:  # forward diffusion with the purifier's own noise, then the classifier
        from dbp_core.purifier import noise as nm
        from dbp_core.purifier.diffusion import q_sample
        t = purifier.chain[0].t
        xt = torch.cat([q_sample(purifier.schedule, 2 * xr - 1, t, seed, nm.stream(nm.FORWARD, k), uids)
                        for k in range(2)])
        ref = torch.autograd.grad(F.cross_entropy(clf((xt + 1) / 2), y.repeat(2), reduction="sum"), xr)[0]
        forward = clf(((xt + 1) / 2).detach())
        # the same forward draw as the purification's first step
        assert torch.equal(q_sample(purifier.schedule, 2 * x - 1, t, seed, nm.stream(nm.FORWARD, 0), uids),
                           q_sample(purifier.schedule, 2 * x - 1, t, seed, 0, uids))
    assert torch.allclose(g, ref, atol=1e-10)
    with torch.no_grad():
        assert torch.allclose(view(x, uids, replicas=2, seed=seed), forward, atol=1e-10)


def test_exact_view_is_the_model_and_approximations_need_a_defence():
    clf = torch.nn.Linear(4, 2)
    assert attacker_view(clf, "exact") is clf
    with pytest.raises(TypeError, match="defended classifier"):
        attacker_view(PlainModel(clf), "bpda")
