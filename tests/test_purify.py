"""The purifier: gradient modes agree, noise replay / stochastic, uid addressing, EOT replicas."""
import pytest
import torch

from dbp_core.purifier import Purifier, noise

from tests._tiny import TinyEps


def _grad(mode, steps, sampler="ddpm", t_star=0.1):
    torch.manual_seed(0)
    model = TinyEps()
    x = torch.rand(3, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    w = torch.randn(3, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    pur = Purifier(model, t_star=t_star, steps=steps, sampler=sampler, noise=noise.replay(42), grad_mode=mode)
    out = pur(x, torch.tensor([7, 1, 30]))
    (out * w).sum().backward()
    return out.detach(), x.grad, model.tw.grad


@pytest.mark.parametrize("steps,sampler", [(10, "ddpm"), (7, "ddim"), (30, "ddpm")])
def test_all_gradient_modes_agree(steps, sampler):
    out_f, gx_f, gw_f = _grad("full", steps, sampler)
    assert gx_f.abs().sum() > 0 and gw_f.abs().sum() > 0
    for mode in ("checkpoint", "segments"):
        out, gx, gw = _grad(mode, steps, sampler)
        assert torch.allclose(out, out_f, atol=1e-13), mode
        assert torch.allclose(gx, gx_f, rtol=1e-10, atol=1e-13), mode
        assert torch.allclose(gw, gw_f, rtol=1e-10, atol=1e-13), mode


def test_gradient_matches_finite_differences():
    model = TinyEps()
    pur = Purifier(model, t_star=0.05, steps=5, noise=noise.replay(3), grad_mode="segments")
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    uids = torch.tensor([9])
    assert torch.autograd.gradcheck(lambda v: pur(v, uids), (x,), eps=1e-6, atol=1e-6)


def test_none_mode_builds_no_graph_and_matches():
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    uids = torch.tensor([0, 1])
    a = Purifier(TinyEps(), steps=10, noise=noise.replay(1), grad_mode="none")(x, uids)
    b = Purifier(TinyEps(), steps=10, noise=noise.replay(1), grad_mode="full")(x, uids)
    assert not a.requires_grad and b.requires_grad
    assert torch.equal(a, b.detach())


def test_replay_identical_stochastic_differs():
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    uids = torch.tensor([5, 6])
    rep = Purifier(TinyEps(), steps=10, noise=noise.replay(2024), grad_mode="none")
    assert torch.equal(rep(x, uids), rep(x, uids))
    sto = Purifier(TinyEps(), steps=10, noise=noise.stochastic(), grad_mode="none")
    assert not torch.allclose(sto(x, uids), sto(x, uids))
    # a different replay seed is different noise; seed= overrides the source for one call
    other = Purifier(TinyEps(), steps=10, noise=noise.replay(2025), grad_mode="none")
    assert not torch.allclose(rep(x, uids), other(x, uids))
    assert torch.equal(sto(x, uids, seed=2024), rep(x, uids))


def test_uid_addressing_independent_of_batch_composition():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64, generator=g)
    uids = torch.tensor([10, 3, 77, 5])
    pur = Purifier(TinyEps(), steps=10, noise=noise.replay(8), grad_mode="none")
    full = pur(x, uids)
    perm = torch.tensor([2, 0, 3])
    part = pur(x[perm], uids[perm])
    assert torch.allclose(part, full[perm], atol=1e-13)
    single = pur(x[1:2], uids[1:2])
    assert torch.allclose(single, full[1:2], atol=1e-13)
    # the same image under another uid gets other noise
    assert not torch.allclose(pur(x[1:2], torch.tensor([4])), single)


def test_eot_replicas_in_one_batch():
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    uids = torch.tensor([1, 2])
    pur = Purifier(TinyEps(), steps=10, noise=noise.replay(5), grad_mode="none")
    many = pur(x, uids, replicas=3)
    assert many.shape == (6, 1, 4, 4)
    for k in range(3):
        assert torch.allclose(many[2 * k:2 * k + 2], pur(x, uids, replica=k), atol=1e-13)
    assert not torch.allclose(many[0:2], many[2:4])
    # replica offset: replicas 2..3 of a call starting at replica=2
    assert torch.allclose(pur(x, uids, replicas=2, replica=2)[:2], many[4:6], atol=1e-13)


def test_replica_gradients_modes_agree():
    grads = []
    for mode in ("full", "checkpoint", "segments"):
        x = torch.rand(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_()
        Purifier(TinyEps(), steps=9, noise=noise.replay(5), grad_mode=mode)(x, torch.tensor([1, 2]), replicas=3).sum().backward()
        grads.append(x.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-13) and torch.allclose(grads[0], grads[2], atol=1e-13)


def test_float32_and_input_checks():
    pur = Purifier(TinyEps(dtype=torch.float32), steps=4, noise=noise.replay(1))
    out = pur(torch.rand(2, 1, 4, 4), torch.tensor([0, 1]))
    assert out.dtype == torch.float32 and out.shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match="uid"):
        pur(torch.rand(2, 1, 4, 4), torch.tensor([0]))
    with pytest.raises(ValueError, match="int64"):
        pur(torch.rand(1, 1, 4, 4), torch.tensor([0], dtype=torch.int32))
    with pytest.raises(ValueError, match="grad_mode"):
        Purifier(TinyEps(), grad_mode="adjoint")


def test_noise_streams_and_sources():
    assert noise.stream(noise.FORWARD) != noise.stream(noise.REVERSE)
    assert noise.stream(noise.REVERSE, 1) != noise.stream(noise.REVERSE, 0)
    assert len({noise.stream(k, r) for k in range(noise.NUM_KINDS) for r in range(5)}) == noise.NUM_KINDS * 5
    with pytest.raises(ValueError):
        noise.stream(noise.FORWARD, -1)
    s = noise.stochastic()
    assert s.next_seed() != s.next_seed()
    assert noise.replay(7).next_seed() == noise.replay(7).next_seed() == 7
    assert "stochastic" in repr(s) and repr(noise.replay(7)) == "replay(7)"


class CountingEps(TinyEps):
    """TinyEps that counts its forward calls (recomputations included)."""

    calls = 0

    def forward(self, x, t):
        CountingEps.calls += 1
        return super().forward(x, t)


@pytest.mark.parametrize("mode,segments,expected", [
    ("full", None, lambda s: s),                     # stored activations, no recomputation
    ("checkpoint", None, lambda s: 2 * s),           # every step's network runs again in backward
    # segments: each segment's forward runs again, then each of its steps once more, but the
    # last step of a segment only once (non-reentrant recomputation stops when it has what it needs)
    ("segments", None, lambda s: 3 * s - 5),         # 5 segments of 5 (ceil(sqrt(25)))
    ("segments", 2, lambda s: 3 * s - 2),            # 2 segments of 13 and 12 steps
])
def test_checkpointing_really_recomputes(mode, segments, expected):
    """A silent fall-back to plain autograd would keep the gradient right but not the memory:
    the number of network calls over forward + backward tells the modes apart."""
    steps = 25
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    pur = Purifier(CountingEps(), steps=steps, noise=noise.replay(1), grad_mode=mode, segments=segments)
    CountingEps.calls = 0
    pur(x, torch.tensor([0, 1])).sum().backward()
    assert CountingEps.calls == expected(steps)


def test_segments_count_and_variance_reach_the_purifier():
    from dbp_core.config import loads_config
    from dbp_core.stages.context import Resources
    cfg = loads_config('name = "p"\n[models]\ndiffusion = "tests.plugins:tiny_eps"\n'
                       '[purifier]\nsteps = 10\ngrad_mode = "segments"\nsegments = 3\nvariance = "fixed_small"\n')
    pur = Resources(cfg).purifier(noise.replay(1))
    assert pur.segments == 3 and pur.variance == "fixed_small"
    small = Purifier(TinyEps(), steps=10, variance="fixed_small").chain
    assert [st.sigma for st in pur.chain] == [st.sigma for st in small]
    assert Purifier(TinyEps(), steps=25).segments == 5  # default ceil(sqrt(S))
    with pytest.raises(ValueError, match="segments"):
        Purifier(TinyEps(), steps=10, segments=0)


# --- the checkpointed chain (one autograd node): what it must keep of autograd's semantics ---

class DropoutEps(TinyEps):
    """TinyEps with dropout: in train mode every call draws from the global RNG."""

    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x, t):
        return self.drop(super().forward(x, t))


def _mode_grads(model_fn, mode, steps=9, seed_rng=5, **kwargs):
    torch.manual_seed(seed_rng)
    model = model_fn()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).requires_grad_()
    pur = Purifier(model, steps=steps, noise=noise.replay(11), grad_mode=mode, **kwargs)
    out = pur(x, torch.tensor([3, 8]))
    out.sum().backward()
    params = model.parameters() if isinstance(model, torch.nn.Module) else []
    return out.detach(), x.grad, [p.grad for p in params], torch.get_rng_state()


@pytest.mark.parametrize("mode", ["checkpoint", "segments"])
def test_checkpointing_replays_the_rng_of_a_dropout_network(mode):
    """Dropout masks drawn in the forward are drawn again in the recomputation, and the global RNG
    ends where plain autograd leaves it."""
    make = lambda: DropoutEps().train()  # noqa: E731
    out_f, gx_f, gw_f, rng_f = _mode_grads(make, "full")
    out, gx, gw, rng = _mode_grads(make, mode)
    assert torch.equal(out, out_f)
    assert torch.allclose(gx, gx_f, rtol=1e-10, atol=1e-13)
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-13) for a, b in zip(gw, gw_f))
    assert torch.equal(rng, rng_f)


@pytest.mark.parametrize("mode", ["checkpoint", "segments"])
def test_plain_callable_eps_model_uses_torch_checkpoint_and_agrees(mode):
    net = TinyEps()
    make = lambda: (lambda x, t: net(x, t))  # noqa: E731  (not an nn.Module: parameters unseen)
    _, gx_f, _, _ = _mode_grads(make, "full")
    _, gx, _, _ = _mode_grads(make, mode)
    assert torch.allclose(gx, gx_f, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("mode", ["checkpoint", "segments"])
def test_gradient_wrt_input_only_leaves_weights_alone(mode):
    """torch.autograd.grad(out, x) must not compute (or accumulate) the weights' gradients."""
    grads = {}
    for m in ("full", mode):
        model = TinyEps()
        x = torch.rand(3, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
        out = Purifier(model, steps=12, noise=noise.replay(2), grad_mode=m)(x, torch.tensor([0, 1, 2]))
        grads[m] = torch.autograd.grad(out.pow(2).sum(), x)[0]
        assert all(p.grad is None for p in model.parameters())
    assert torch.allclose(grads[mode], grads["full"], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("mode", ["checkpoint", "segments"])
def test_weights_only_and_repeated_backward(mode):
    """Gradients to the weights when the input needs none; retain_graph lets a second backward
    see the same kept inputs."""
    res = {}
    for m in ("full", mode):
        model = TinyEps()
        x = torch.rand(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
        out = Purifier(model, steps=10, noise=noise.replay(9), grad_mode=m)(x, torch.tensor([4, 5]))
        out.sum().backward(retain_graph=True)
        first = [p.grad.clone() for p in model.parameters()]
        out.sum().backward()
        res[m] = first, [p.grad for p in model.parameters()]
    for a, b in zip(res["full"][0] + res["full"][1], res[mode][0] + res[mode][1]):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13)
    for a, b in zip(*res[mode]):
        assert torch.allclose(b, 2 * a, rtol=1e-12, atol=1e-14)


def test_no_gradient_needed_builds_no_graph():
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    model = TinyEps().requires_grad_(False)
    out = Purifier(model, steps=6, noise=noise.replay(1), grad_mode="checkpoint")(x, torch.tensor([0, 1]))
    assert not out.requires_grad
    ref = Purifier(model, steps=6, noise=noise.replay(1), grad_mode="none")(x, torch.tensor([0, 1]))
    assert torch.equal(out, ref)
