"""DiffAttack (Kang et al. 2023): the deviated-reconstruction loss, its exact gradient on every
sampler (finite differences, float64), the forward reference, the attack end to end and its
configuration (docs/science.md, "DiffAttack")."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dbp_core.attacks import APGD, AutoAttackRand, DiffAttack, NoisePlan
from dbp_core.attacks.base import ModelOutput
from dbp_core.attacks.diffattack import DeviationObjective, deviated_reconstruction, deviation_states
from dbp_core.attacks.losses import objective
from dbp_core.config import ConfigError, loads_config
from dbp_core.models.defended import DefendedClassifier
from dbp_core.purifier import Purifier, noise
from dbp_core.purifier.guidance import Guidance
from tests._tiny import ContinuousEps, LearnedEps, TinyEps

F64 = torch.float64

SAMPLERS = {
    "ddpm": dict(sampler="ddpm"),
    "ddpm-learned-clip": dict(sampler="ddpm", variance="learned", clip_denoised=True),
    "ddim-eta": dict(sampler="ddim", eta=0.5),
    "vpsde": dict(sampler="vpsde"),
    "vpode": dict(sampler="vpode"),
    "gdmp": dict(sampler="ddpm", guidance=Guidance(100.0)),
}


def _eps_model(name):
    if "learned" in name:
        return LearnedEps()
    return ContinuousEps() if name.startswith("vp") else TinyEps()


def _classifier(seed=0, dtype=F64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).to(dtype).eval()


def _defended(name, steps=6, grad_mode="checkpoint", dtype=F64):
    pur = Purifier(_eps_model(name), t_star=0.1, steps=steps, noise=noise.replay(3), grad_mode=grad_mode,
                   **SAMPLERS[name])
    return DefendedClassifier(_classifier(dtype=dtype), pur).to(dtype)


def _images(b=2, seed=0):
    return 0.2 + 0.6 * torch.rand(b, 1, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(seed))


def test_deviation_states_are_uniform_and_skip_the_forward_draw():
    assert deviation_states(100) == list(range(10, 100, 10))
    assert deviation_states(5) == [1, 2, 3, 4]
    assert deviation_states(1) == []


def test_diffused_reference_is_the_forward_draw_of_the_purification():
    """State 0 of a discrete chain is the forward draw itself: the reference at state 0 equals it
    bit for bit (same seed, stream and address), for every replica."""
    d = _defended("ddpm", grad_mode="none")
    x, uids = _images(3), torch.tensor([4, 1, 7])
    _, states = d.purifier(x, uids, replicas=2, replica=1, seed=9, states=[0])
    ref = d.purifier.diffused(x, uids, [0], seed=9, replicas=2, replica=1)
    assert torch.equal(states[0], ref[0])
    # a later state's reference: the same draw z at that state's alpha_bar (DDPM eq. 4)
    k = 3
    ab0, abk = d.purifier.state_alpha_bar(0), d.purifier.state_alpha_bar(k)
    z = (ref[0] - math.sqrt(ab0) * (2 * x.repeat(2, 1, 1, 1) - 1)) / math.sqrt(1 - ab0)
    want = math.sqrt(abk) * (2 * x.repeat(2, 1, 1, 1) - 1) + math.sqrt(1 - abk) * z
    assert torch.allclose(d.purifier.diffused(x, uids, [k], seed=9, replicas=2, replica=1)[0], want, atol=1e-12)
    assert d.purifier.state_alpha_bar(len(d.purifier.chain)) == 1.0


def test_continuous_state_alpha_bar_is_the_vp_kernel():
    d = _defended("vpsde", grad_mode="none")
    from dbp_core.purifier.vpsde import vp_sigma
    for k in (0, 2, 5):
        s = d.purifier.chain[k].time
        assert d.purifier.state_alpha_bar(k) == pytest.approx(1 - vp_sigma(s) ** 2, rel=1e-15)
    assert d.purifier.state_alpha_bar(0) < d.purifier.state_alpha_bar(5) < 1.0


def test_deviated_reconstruction_is_the_mean_squared_difference():
    a = [torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)]
    b = [torch.zeros(2, 1, 2, 2), 2 * torch.ones(2, 1, 2, 2)]
    assert torch.equal(deviated_reconstruction(a, b), torch.tensor([2.5, 2.5]))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_diffattack_objective_gradient_matches_finite_differences(name):
    """d/dx [CE + lambda L_dev] through the checkpointed chain equals finite differences (float64)."""
    d = _defended(name)
    obj = DeviationObjective(d, weight=0.7, states=[1, 3, 5])
    x, y, uids = _images(2, seed=1), torch.tensor([2, 5]), torch.tensor([3, 8])

    def f(v):
        value, _ = objective(obj(v, uids, replicas=2, seed=11), y.repeat(2), "ce")
        return value

    assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(),), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["ddpm", "vpsde"])
def test_deviation_term_changes_the_gradient_and_modes_agree(name):
    x, y, uids = _images(2, seed=2), torch.tensor([1, 6]), torch.tensor([0, 5])
    grads = {}
    for mode in ("full", "checkpoint", "segments"):
        d = _defended(name, grad_mode=mode)
        for w in (0.0, 1.0):
            v = x.clone().requires_grad_()
            value, logits = objective(DeviationObjective(d, weight=w)(v, uids, seed=4), y, "ce")
            grads[mode, w] = torch.autograd.grad(value.sum(), v)[0]
    for w in (0.0, 1.0):
        assert torch.allclose(grads["checkpoint", w], grads["full", w], rtol=1e-10, atol=1e-12)
        assert torch.allclose(grads["segments", w], grads["full", w], rtol=1e-10, atol=1e-12)
    assert (grads["full", 1.0] - grads["full", 0.0]).abs().max() > 1e-6
    # weight 0: the objective is the classification loss alone (the logits are the defence's own)
    d = _defended(name)
    out = DeviationObjective(d, weight=0.0)(x, uids, seed=4)
    assert isinstance(out, ModelOutput) and torch.equal(out.logits, d(x, uids, seed=4))
    assert torch.equal(out.extra, torch.zeros(2, dtype=F64))


def test_diffattack_with_zero_weight_is_autoattack_rand():
    """Same seeds, lambda = 0: DiffAttack's iterates are AutoAttack-rand's, bit for bit."""
    d = _defended("ddpm", steps=4, grad_mode="full", dtype=torch.float32)
    x, uids = _images(4, seed=3).float(), torch.arange(4)
    y = d.classify(x).argmax(1)  # labels the defence mostly gets right: there is something to attack
    kw = dict(norm="linf", eps=0.1, iterations=4, eot=2, evaluations=3, noise=NoisePlan("fresh", 5), start_seed=1)
    rand = AutoAttackRand(**kw)
    b = rand(d, x, y, uids)
    assert rand.scores.max() > 0 and (b - x).abs().max() > 0
    assert torch.equal(DiffAttack(deviation_weight=0.0, **kw)(d, x, y, uids), b)
    c = DiffAttack(deviation_weight=1.0, **kw)(d, x, y, uids)
    assert (c - x).abs().max() <= 0.1 + 1e-6 and c.min() >= 0 and c.max() <= 1
    # APGD on the DiffAttack objective: lambda 0 gives APGD-CE's iterates, lambda 1 moves them
    apgd = dict(norm="linf", eps=0.1, iterations=4, eot=2, noise=NoisePlan("fresh", 5), start_seed=1, loss="ce")
    plain = APGD(**apgd)(d, x, y, uids)
    assert torch.equal(APGD(**apgd)(DeviationObjective(d, 0.0), x, y, uids), plain)
    assert (APGD(**apgd)(DeviationObjective(d, 1.0), x, y, uids) - plain).abs().max() > 1e-3


def test_diffattack_needs_a_purifier():
    with pytest.raises(TypeError, match="purifier"):
        DiffAttack(iterations=2, eot=1, evaluations=1)(_classifier(dtype=torch.float32), torch.rand(2, 1, 4, 4),
                                                        torch.tensor([0, 1]), torch.arange(2))
    with pytest.raises(ValueError, match="deviation_weight"):
        DiffAttack(deviation_weight=-1.0)


BASE = """
name = "x"
[[attacks]]
kind = "diffattack"
eps = 0.1
"""


def test_config_defaults_and_field_named_errors():
    a = loads_config(BASE).attacks[0]
    assert (a.deviation_weight, a.eot, a.iterations, a.evaluations, a.random_start) == (1.0, 20, 100, 20, True)
    cases = {
        'deviation_weight = -1.0': "deviation_weight",
        'gradient = "bpda"': "gradient",
        'loss = "ce"': "loss",
        'step = 0.01': "step",
        'noise = "replay"': "noise",
    }
    for extra, field in cases.items():
        with pytest.raises(ConfigError) as e:
            loads_config(BASE + extra + "\n")
        assert f"attacks[0].{field}" in str(e.value), (extra, str(e.value))
    with pytest.raises(ConfigError, match=r"attacks\[0\]\.deviation_weight"):
        loads_config(BASE.replace("diffattack", "autoattack-rand") + "deviation_weight = 1.0\n")
    with pytest.raises(ConfigError, match=r"attacks\[0\]\.kind"):
        loads_config(BASE + '[models]\ndiffusion = "none"\n')
