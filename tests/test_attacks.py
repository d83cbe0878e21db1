"""Attacks validated against independent references: torchattacks' PGD, the
closed-form optimum on a linear model, the geometry of the eps-balls, and the
determinism that DW-box noise replay must give."""
import pytest
import torch
import torch.nn.functional as F
import torchattacks  # the README's test command installs it (pip install --no-deps torchattacks==3.5.1)
from torch import nn

from dbp_core.attacks import APGD, BPDA, PGD, DWBox, NoisePlan, PlainModel, StraightThrough
from dbp_core.models.defended import DefendedClassifier
from dbp_core.purifier import Purifier, noise

from ._tiny import TinyEps



def small_cnn(seed=0, classes=10):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, classes)).eval()


def batch(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g), torch.arange(100, 100 + n)


def tiny_defended(dtype=torch.float32, steps=3):
    eps_model = TinyEps(dtype=dtype)
    purifier = Purifier(eps_model, t_star=0.1, steps=steps, grad_mode="full")
    clf = small_cnn().to(dtype)
    return DefendedClassifier(clf, purifier, mean=[0.5], std=[0.5]).to(dtype)


@pytest.mark.parametrize("norm, eps, step", [("linf", 0.1, 0.02), ("l2", 0.8, 0.2)])
def test_pgd_matches_torchattacks(norm, eps, step):
    model = small_cnn()
    x, y, uids = batch()
    ours = PGD(norm=norm, eps=eps, step=step, iterations=10)(model, x, y, uids)
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    ref = cls(model, eps=eps, alpha=step, steps=10, random_start=False)(x, y)
    assert torch.allclose(ours, ref, atol=1e-6)
    acc = lambda xa: (model(xa).argmax(1) == y).float().mean()  # noqa: E731
    assert acc(ours) == acc(ref)
    assert acc(ours) < acc(x)  # the attack does something


def test_linear_model_optimal_linf_attack_found_exactly():
    # logit margin m(x) = w.x + b for class 1 vs 0; for y = 0 the CE-optimal
    # Linf perturbation is eps * sign(w) when the box does not bind.
    torch.manual_seed(3)
    w = torch.randn(64)
    lin = nn.Linear(64, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.zeros(64), w]))
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin)
    eps = 0.1
    x = 0.2 + 0.6 * torch.rand(5, 1, 8, 8)
    y = torch.zeros(5, dtype=torch.long)
    x_adv = PGD(norm="linf", eps=eps, step=eps, iterations=3)(model, x, y, torch.arange(5))
    assert torch.equal(x_adv, x + eps * w.sign().view(1, 1, 8, 8))
    # several steps smaller than eps: the iterates walk to the vertex and the clip holds them there
    x_small = PGD(norm="linf", eps=eps, step=eps / 4, iterations=8)(model, x, y, torch.arange(5))
    assert torch.allclose(x_small, x + eps * w.sign().view(1, 1, 8, 8), atol=1e-6)
    # L2: the optimum is eps * w / ||w||
    x_adv2 = PGD(norm="l2", eps=0.5, step=0.5, iterations=3)(model, x, y, torch.arange(5))
    assert torch.allclose(x_adv2 - x, (0.5 * w / w.norm()).view(1, 1, 8, 8).expand_as(x), atol=1e-6)


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.3)])
@pytest.mark.parametrize("make", [
    lambda n, e: PGD(norm=n, eps=e, step=e / 2, iterations=4, random_start=True, eot=2),
    lambda n, e: APGD(norm=n, eps=e, iterations=6, eot=2),
    lambda n, e: BPDA(norm=n, eps=e, step=e, iterations=3, random_start=True),
    lambda n, e: DWBox(eval_seed=5, norm=n, eps=e, step=e / 2, iterations=3),
])
def test_perturbations_respect_eps_and_box(norm, eps, make):
    model = tiny_defended()
    x, y, uids = batch(6)
    x = x.clamp(0.02, 0.98)
    x[0] = 0.0  # a saturated image: the box must bind
    x_adv = make(norm, eps)(model, x, y, uids)
    d = (x_adv - x).flatten(1)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if norm == "linf":
        assert d.abs().max() <= eps + 1e-6
    else:
        assert d.norm(dim=1).max() <= eps + 1e-5
    assert d.abs().max() > 0


def test_dwbox_replay_makes_the_purification_deterministic():
    model = tiny_defended(torch.float64)
    x, y, uids = batch(8)
    x, eval_seed = x.double(), 1234
    seen = []
    x_adv = DWBox(eval_seed=eval_seed, norm="linf", eps=0.1, step=0.02, iterations=4)(model, x, y, uids)
    DWBox(eval_seed=eval_seed, norm="linf", eps=0.1, step=0.02, iterations=5,
          on_iteration=lambda i, loss, s: seen.append(loss))(model, x, y, uids)
    final = lambda seed: float(F.cross_entropy(model(x_adv, uids, seed=seed), y, reduction="none").mean())  # noqa: E731
    # evaluating with the replayed seed reproduces the attacker's view of its final point exactly
    assert final(eval_seed) == seen[4]
    assert final(eval_seed) == final(eval_seed)
    # a fresh seed does not
    assert final(eval_seed + 1) != seen[4]


def test_dwbox_beats_eot_on_the_replayed_noise():
    # same budget; the attacker who knows the noise reaches a higher loss on that noise
    model = tiny_defended(torch.float64)
    x, y, uids = batch(8)
    x = x.double()
    kw = dict(norm="linf", eps=0.15, step=0.03, iterations=8)
    x_dw = DWBox(eval_seed=77, **kw)(model, x, y, uids)
    x_eot = PGD(eot=4, noise=NoisePlan("fresh", 3), **kw)(model, x, y, uids)
    loss = lambda xa: float(F.cross_entropy(model(xa, uids, seed=77), y))  # noqa: E731
    assert loss(x_dw) > loss(x_eot)


def test_eot_replicas_batched_equal_the_per_replica_loop():
    from dbp_core.attacks import eot_gradient

    model = tiny_defended(torch.float64)
    x, y, uids = batch(4)
    x = x.double()
    g_all, l_all, _ = eot_gradient(model, x, y, uids, eot=4, seed=9)
    g_chunk, l_chunk, _ = eot_gradient(model, x, y, uids, eot=4, chunk=1, seed=9)
    assert torch.allclose(g_all, g_chunk, atol=1e-12)
    assert torch.allclose(l_all, l_chunk, atol=1e-12)
    # replicas are distinct purifications
    assert l_all.view(4, -1).std(0).min() > 0


def test_bpda_gradient_is_the_classifier_gradient_at_the_purified_point():
    model = tiny_defended(torch.float64)
    x, y, uids = batch(4)
    x = x.double().requires_grad_()
    logits = StraightThrough(model)(x, uids, seed=3)
    g = torch.autograd.grad(F.cross_entropy(logits, y), x)[0]
    xp = model.purifier(x.detach(), uids, seed=3).requires_grad_()
    g_ref = torch.autograd.grad(F.cross_entropy(model.classify(xp), y), xp)[0]
    assert torch.allclose(g, g_ref)


def test_apgd_on_a_deterministic_model_is_at_least_as_strong_as_pgd():
    model = small_cnn(seed=4)
    x, y, uids = batch(32, seed=5)
    eps = 0.03
    acc = lambda xa: float((model(xa).argmax(1) == y).float().mean())  # noqa: E731
    pgd = PGD(norm="linf", eps=eps, step=eps / 4, iterations=20)(model, x, y, uids)
    apgd = APGD(norm="linf", eps=eps, iterations=20, eot=1, random_start=False)(model, x, y, uids)
    assert acc(apgd) <= acc(pgd) < acc(x)


def test_apgd_selection_keeps_the_iterate_with_fewest_correct_purifications():
    # once an example is misclassified by every replica it keeps that iterate
    model = small_cnn(seed=6)
    x, y, uids = batch(16, seed=7)
    x_adv = APGD(norm="linf", eps=0.05, iterations=15, eot=1, selection="lowest-correct")(PlainModel(model), x, y, uids)
    fooled = model(x_adv).argmax(1) != y
    assert fooled.float().mean() > 0.5


def test_dwbox_forward_only_replays_the_forward_noise_alone():
    model = tiny_defended(torch.float64)
    x, y, uids = batch(4)
    x = x.double()
    p = model.purifier
    same = p(x, uids, seed=5, reverse_seed=5)
    assert torch.equal(same, p(x, uids, seed=5))
    other_reverse = p(x, uids, seed=5, reverse_seed=6)
    other_forward = p(x, uids, seed=6, reverse_seed=5)
    assert not torch.equal(same, other_reverse) and not torch.equal(same, other_forward)
    seen = []
    DWBox(eval_seed=5, forward_only=True, norm="linf", eps=0.1, step=0.05, iterations=3,
          on_iteration=lambda i, loss, s: seen.append(loss))(model, x, y, uids)
    assert len(set(seen)) == 3


def test_attack_outcomes_follow_uids_not_batch_positions():
    """Noise is addressed by uid: permuting the batch permutes the adversarial examples."""
    model = tiny_defended(torch.float64)
    x, y, uids = batch(8)
    x = x.double()
    perm = torch.tensor([5, 2, 7, 0, 1, 6, 3, 4])
    for attack in (PGD(norm="linf", eps=0.1, step=0.03, iterations=3, eot=2, noise=NoisePlan("fresh", 4)),
                   DWBox(eval_seed=9, norm="l2", eps=0.5, step=0.2, iterations=3)):
        a = attack(model, x, y, uids)
        b = attack(model, x[perm], y[perm], uids[perm])
        assert torch.allclose(a[perm], b, rtol=0, atol=1e-12)
        c = attack(model, x[:3], y[:3], uids[:3])  # another batch composition
        assert torch.allclose(a[:3], c, rtol=0, atol=1e-12)


class _CountingDefended(torch.nn.Module):
    """Records the (replicas, grad enabled) of every call to a defended model."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, uids, replicas=1, replica=0, **noise):
        self.calls.append((replicas, torch.is_grad_enabled(), noise.get("seed")))
        return self.inner(x, uids, replicas=replicas, replica=replica, **noise)


def test_apgd_selection_uses_its_own_fresh_purifications_when_asked():
    x, y, uids = batch(4)
    x = x.double()
    model = _CountingDefended(tiny_defended(torch.float64))
    APGD(norm="linf", eps=0.05, iterations=5, eot=2, noise=NoisePlan("fresh", 1), selection="lowest-correct",
         selection_samples=6)(model, x, y, uids)
    grads = [c for c in model.calls if c[1]]
    selects = [c for c in model.calls if not c[1]]
    assert len(grads) == len(selects) == 6  # one gradient and one selection per iterate, start included
    assert all(r == 2 for r, _, _ in grads) and all(r == 6 for r, _, _ in selects)
    assert not {s for _, _, s in grads} & {s for _, _, s in selects}  # independent noise


def test_apgd_selection_prefers_fewer_correct_then_higher_loss():
    """A deterministic model: the kept iterate is misclassified when any iterate was, and among
    misclassified iterates it is the one with the highest loss (the tie-break)."""
    model = small_cnn(seed=6)
    x, y, uids = batch(16, seed=7)
    seen = {}

    class Recorder(nn.Module):
        def forward(self, xa, uids, replicas=1, replica=0, **noise):
            logits = model(xa)
            for k in range(xa.shape[0]):
                seen.setdefault(k, []).append((xa[k].detach().clone(), float(F.cross_entropy(logits[k:k + 1], y[k:k + 1])),
                                               bool(logits[k].argmax() == y[k])))
            return logits.repeat(replicas, 1)

    x_adv = APGD(norm="linf", eps=0.05, iterations=12, eot=1, random_start=False, selection="lowest-correct")(
        Recorder(), x, y, uids)
    for k, iterates in seen.items():
        wrong = [(loss, xa) for xa, loss, correct in iterates if not correct]
        if wrong:
            best = max(wrong, key=lambda t: t[0])
            assert torch.equal(x_adv[k], best[1]), k
            assert model(x_adv[k:k + 1]).argmax(1) != y[k]


def test_surrogate_chain_is_what_the_attacker_differentiates():
    from types import SimpleNamespace

    from dbp_core.config import AttackConfig, PurifierConfig
    from dbp_core.stages.attacks import attacker_model
    defended = tiny_defended(torch.float64, steps=3)
    res = SimpleNamespace(cfg=SimpleNamespace(purifier=PurifierConfig(t_star=0.1, steps=3, grad_mode="full")))
    same = attacker_model(res, AttackConfig(kind="pgd-eot"), defended)
    assert same is defended
    sur = attacker_model(res, AttackConfig(kind="pgd-eot", surrogate_steps=2, surrogate_sampler="ddim"), defended)
    assert sur.purifier.steps == 2 and sur.purifier.sampler == "ddim" and defended.purifier.steps == 3
    assert sur.purifier.eps_model is defended.purifier.eps_model and sur.classifier is defended.classifier
