"""The dbp ops: extension vs reference, addressing, statistics, autograd, checks.

Exactness: every op of the extension equals the pure-PyTorch reference bit
for bit (torch.equal), in float32 and float64: the noise is float32 from the
same IEEE-exact operations, and the arithmetic rounds in the same order.
"""
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
import torch

from dbp_core.ops import reference as ref
from dbp_core import ops

needs_extension = pytest.mark.skipif(ops.backend() == "reference", reason="extension not built")


def _uids(n, gen):
    return torch.randperm(10_000, generator=gen)[:n].to(torch.int64)


RANDOM_SHAPES = [(1, 1), (3, 5), (2, 3, 7, 7), (5, 1, 8, 8), (2, 3, 32, 32), (4, 1029)]


def test_backend_is_the_extension():
    # CI builds the extension; a silent fallback would hide a broken build.
    assert ops.backend().startswith("extension")


@needs_extension
@pytest.mark.parametrize("shape", RANDOM_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extension_equals_reference(shape, dtype):
    gen = torch.Generator().manual_seed(sum(shape))
    uids = _uids(shape[0], gen)
    seed, stream, step = 2**63 + 12345, 7, 2**32 - 1
    x = torch.randn(shape, generator=gen, dtype=dtype)
    eps = torch.randn(shape, generator=gen, dtype=dtype)
    per_sample = torch.rand(shape[0], generator=gen, dtype=dtype)
    one = torch.tensor(0.37, dtype=dtype)
    s = ops._signed64(seed)

    assert torch.equal(ops.normal(shape, seed, stream, uids, step, dtype),
                       ref.normal(shape, s, stream, uids, step, dtype))
    assert torch.equal(ops.q_sample(x, per_sample, one, seed, stream, uids, step),
                       ref.q_sample(x, per_sample, one, s, stream, uids, step))
    per_element = torch.rand(shape, generator=gen, dtype=dtype)
    for sigma in (per_sample, torch.tensor(0.0, dtype=dtype), per_element):
        assert torch.equal(ops.ddpm_step(x, eps, per_sample, one, sigma, seed, stream, uids, step),
                           ref.ddpm_step(x, eps, per_sample, one, sigma, s, stream, uids, step))
        # a, b chosen so that a x - b eps crosses the clip at +-1 in about half the elements
        a, b = 1.0 + per_sample, torch.tensor(0.6, dtype=dtype)
        assert torch.equal(ops.clipped_step(x, eps, a, b, one, per_sample, sigma, seed, stream, uids, step),
                           ref.clipped_step(x, eps, a, b, one, per_sample, sigma, s, stream, uids, step))
    assert torch.equal(ops.rbgm(x, seed, stream, uids, step), ref.rbgm(x, s, stream, uids, step))


def test_noise_is_addressed_by_uid_not_batch_slot():
    gen = torch.Generator().manual_seed(0)
    for trial in range(5):
        uids = _uids(12, gen)
        full = ops.normal((12, 3, 5, 5), 99, 2, uids, trial)
        perm = torch.randperm(12, generator=gen)
        assert torch.equal(ops.normal((12, 3, 5, 5), 99, 2, uids[perm], trial), full[perm])
        # split into two batches of other sizes
        a, b = perm[:5], perm[5:]
        assert torch.equal(ops.normal((5, 3, 5, 5), 99, 2, uids[a], trial), full[a])
        assert torch.equal(ops.normal((7, 3, 5, 5), 99, 2, uids[b], trial), full[b])
        # the fused ops see the same noise per uid
        x = torch.randn(12, 3, 5, 5, generator=gen)
        out = ops.q_sample(x, 0.0, 1.0, 99, 2, uids, trial)
        assert torch.equal(out, full)
        assert torch.equal(ops.q_sample(x[a], 0.0, 1.0, 99, 2, uids[a], trial), full[a])


def test_element_prefix_is_shape_independent():
    # element e of a sample is the same value whatever the sample's shape
    uids = torch.tensor([3, 4])
    flat = ops.normal((2, 100), 5, 1, uids, 0)
    assert torch.equal(ops.normal((2, 4, 25), 5, 1, uids, 0).reshape(2, 100), flat)
    assert torch.equal(ops.normal((2, 37), 5, 1, uids, 0), flat[:, :37])


@pytest.mark.parametrize("field", ["seed", "stream", "uid", "step", "element"])
def test_every_address_field_changes_the_value(field):
    base = dict(seed=1, stream=2, uid=3, step=4)
    z0 = ops.normal((1, 64), base["seed"], base["stream"], torch.tensor([base["uid"]]), base["step"])
    if field == "element":
        # elements are not a shifted copy of each other
        assert not torch.equal(z0[0, :32], z0[0, 32:])
        return
    changed = dict(base, **{field: base[field] + 1})
    z1 = ops.normal((1, 64), changed["seed"], changed["stream"], torch.tensor([changed["uid"]]), changed["step"])
    assert (z0 != z1).float().mean() > 0.99


def test_distribution_matches_standard_normal():
    z = ops.normal((1000, 1200), 2024, 0, torch.arange(1000), 0).flatten().double().numpy()
    n = z.size
    assert n >= 1_000_000
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert scipy.stats.kstest(z, "norm").pvalue > 1e-3
    for lag in (1, 2, 3, 4, 5, 8):  # within a Philox block (1-3) and across blocks
        r = np.corrcoef(z[:-lag], z[lag:])[0, 1]
        assert abs(r) < 5 / np.sqrt(n), (lag, r)
    # higher moments: no visible skew, normal kurtosis
    assert abs(scipy.stats.skew(z)) < 0.01
    assert abs(scipy.stats.kurtosis(z)) < 0.02


def test_uniform_words_and_streams_are_uncorrelated():
    # neighbouring uids / streams / seeds must not give correlated noise
    u = torch.arange(2000)
    a = ops.normal((2000, 500), 7, 0, u, 0).flatten().numpy()
    for other in (ops.normal((2000, 500), 7, 1, u, 0), ops.normal((2000, 500), 8, 0, u, 0),
                  ops.normal((2000, 500), 7, 0, u + 1, 0), ops.normal((2000, 500), 7, 0, u, 1)):
        r = np.corrcoef(a, other.flatten().numpy())[0, 1]
        assert abs(r) < 5 / np.sqrt(a.size)


def test_opcheck_every_op():
    gen = torch.Generator().manual_seed(1)
    uids = torch.tensor([4, 1, 9])
    x = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    e = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    c = torch.rand(3, generator=gen, dtype=torch.float64)
    s = torch.tensor(0.3, dtype=torch.float64)
    # a learned variance: sigma per element (or per sample) with a gradient
    sg = torch.rand(3, 2, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    cs = c.clone().requires_grad_()
    a = torch.tensor(1.7, dtype=torch.float64)
    cases = [
        (torch.ops.dbp.normal.default, ([3, 2, 4, 4], 1, 2, uids, 3, torch.float64)),
        (torch.ops.dbp.q_sample.default, (x, c, s, 1, 2, uids, 3)),
        (torch.ops.dbp.ddpm_step.default, (x, e, c, s, c, 1, 2, uids, 3)),
        (torch.ops.dbp.ddpm_step.default, (x, e, c, s, sg, 1, 2, uids, 3)),
        (torch.ops.dbp.ddpm_step.default, (x, e, c, s, cs, 1, 2, uids, 3)),
        (torch.ops.dbp.clipped_step.default, (x, e, a, s, c, s, c, 1, 2, uids, 3)),
        (torch.ops.dbp.clipped_step.default, (x, e, a, c, s, c, sg, 1, 2, uids, 3)),
        (torch.ops.dbp.rbgm.default, (x.detach(), 1, 2, uids, 3)),
    ]
    # non-contiguous inputs (a transposed view): outputs are still contiguous, as the fake kernels say
    xt, et = x.detach().transpose(2, 3).requires_grad_(), e.detach().transpose(2, 3).requires_grad_()
    cases += [
        (torch.ops.dbp.q_sample.default, (xt, c, s, 1, 2, uids, 3)),
        (torch.ops.dbp.ddpm_step.default, (xt, et, c, s, c, 1, 2, uids, 3)),
        (torch.ops.dbp.clipped_step.default, (xt, et, a, s, c, s, sg.detach().transpose(2, 3).requires_grad_(),
                                              1, 2, uids, 3)),
        (torch.ops.dbp.rbgm.default, (xt.detach(), 1, 2, uids, 3)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_gradcheck_q_sample_and_ddpm_step():
    gen = torch.Generator().manual_seed(2)
    uids = torch.tensor([0, 5])
    x = torch.randn(2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    e = torch.randn(2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    c = torch.tensor([0.9, 0.7], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: ops.q_sample(x, c, 0.4, 3, 0, uids, 1), (x,))
    assert torch.autograd.gradcheck(lambda x, e: ops.ddpm_step(x, e, c, 0.2, c, 3, 0, uids, 1), (x, e))
    assert torch.autograd.gradgradcheck(lambda x, e: ops.ddpm_step(x, e, c, 0.2, c, 3, 0, uids, 1), (x, e))


def test_gradcheck_clipped_step_and_a_learned_sigma():
    """The clip passes the gradient only where a x - b eps lies in [-1, 1]; a sigma that requires grad
    (per element, per sample or one value) gets g z with z regenerated from its address."""
    gen = torch.Generator().manual_seed(4)
    uids = torch.tensor([3, 8])
    x = (1.5 * torch.randn(2, 3, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    e = torch.randn(2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    c = torch.tensor([0.9, 0.7], dtype=torch.float64)
    u = 1.3 * x.detach() - 0.4 * e.detach()
    assert ((u.abs() > 1).sum() > 3) and ((u.abs() < 1).sum() > 3)  # both sides of the clip are exercised
    for sigma in (torch.rand(2, 3, 3, generator=gen, dtype=torch.float64), torch.rand(2, dtype=torch.float64),
                  torch.tensor(0.3, dtype=torch.float64)):
        sigma.requires_grad_()
        assert torch.autograd.gradcheck(lambda x, e, s: ops.clipped_step(x, e, 1.3, 0.4, c, 0.5, s, 3, 0, uids, 1),
                                        (x, e, sigma))
        assert torch.autograd.gradcheck(lambda x, e, s: ops.ddpm_step(x, e, c, 0.2, s, 3, 0, uids, 1), (x, e, sigma))
    assert torch.autograd.gradgradcheck(lambda x, e: ops.clipped_step(x, e, 1.3, 0.4, c, 0.5, c, 3, 0, uids, 1), (x, e))
    # the closed form of the backward: c1 g + a c0 g 1[|a x - b eps| <= 1]; the noise gradient is the noise
    sg = torch.full((2, 3, 3), 0.2, dtype=torch.float64, requires_grad=True)
    out = ops.clipped_step(x, e, 1.3, 0.4, 0.8, 0.5, sg, 3, 0, uids, 1)
    gx, ge, gs = torch.autograd.grad(out.sum(), (x, e, sg))
    inside = (u >= -1) & (u <= 1)
    assert torch.allclose(gx, 0.5 + 1.3 * 0.8 * inside.double(), rtol=0, atol=1e-15)
    assert torch.allclose(ge, -0.4 * 0.8 * inside.double(), rtol=0, atol=1e-15)
    assert torch.equal(gs, ops.normal((2, 3, 3), 3, 0, uids, 1, dtype=torch.float64))


def test_backward_saves_no_noise():
    # the autograd graph holds only the coefficients, never a noise tensor
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = ops.ddpm_step(x, x * 2, 0.9, 0.1, 0.5, 1, 0, torch.arange(4), 0)
        y = ops.q_sample(y, 0.8, 0.6, 1, 0, torch.arange(4), 0)
    assert saved and max(saved) == 1
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 0.8 * 0.9 * (1 - 0.1 * 2)))


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (3, 1, 5, 7), (4, 50)])
def test_rbgm_is_a_sorted_gaussian_in_gradient_rank_order(shape):
    gen = torch.Generator().manual_seed(3)
    g = torch.randn(shape, generator=gen)
    g.view(-1)[:6] = 0.25  # ties are broken by position
    uids = torch.arange(shape[0]) * 7
    out = ops.rbgm(g, 11, 4, uids, 2)
    L = g[0, 0].numel() if g.dim() >= 3 else g[0].numel()
    rows_g, rows_o = g.reshape(-1, L), out.reshape(-1, L)
    z = ops.normal(shape, 11, 4, uids, 2).reshape(-1, L)
    for rg, ro, rz in zip(rows_g, rows_o, z):
        # values: exactly the row's addressed Gaussian sample, sorted
        assert torch.equal(torch.sort(ro).values, torch.sort(rz).values)
        # order: the ranks of the output equal the ranks of g
        assert torch.equal(torch.sort(ro, stable=True).indices, torch.sort(rg, stable=True).indices)


def test_rbgm_has_no_gradient():
    g = torch.randn(2, 1, 4, 4, requires_grad=True)
    out = ops.rbgm(g, 1, 0, torch.arange(2), 0)
    (out * g).sum().backward()
    assert torch.equal(g.grad, out.detach())  # only the direct product term


def _bad_calls():
    x = torch.randn(3, 4)
    u = torch.arange(3)
    return [
        ("uids", lambda: ops.q_sample(x, 0.5, 0.5, 0, 0, torch.arange(2), 0)),
        ("uids", lambda: ops.q_sample(x, 0.5, 0.5, 0, 0, u.int(), 0)),
        ("uids", lambda: ops.normal((3, 4), 0, 0, u.view(3, 1), 0)),
        ("x0", lambda: ops.q_sample(x.half(), 0.5, 0.5, 0, 0, u, 0)),
        ("x0", lambda: ops.q_sample(torch.empty(0, 4), 0.5, 0.5, 0, 0, torch.arange(0), 0)),
        ("sqrt_ab", lambda: ops.q_sample(x, float("nan"), 0.5, 0, 0, u, 0)),
        ("sqrt_1mab", lambda: ops.q_sample(x, 0.5, torch.ones(2), 0, 0, u, 0)),
        ("sigma", lambda: ops.ddpm_step(x, x, 1.0, 0.1, float("inf"), 0, 0, u, 0)),
        ("c_x", lambda: ops.ddpm_step(x, x, torch.ones(3, dtype=torch.int64), 0.1, 0.0, 0, 0, u, 0)),
        ("eps", lambda: ops.ddpm_step(x, x[:2], 1.0, 0.1, 0.0, 0, 0, u, 0)),
        ("eps", lambda: ops.ddpm_step(x, x.double(), 1.0, 0.1, 0.0, 0, 0, u, 0)),
        ("stream", lambda: ops.normal((3, 4), 0, -1, u, 0)),
        ("step", lambda: ops.normal((3, 4), 0, 0, u, 2**32)),
        ("shape", lambda: ops.normal((2, 4), 0, 0, u, 0)),
        ("g", lambda: ops.rbgm(torch.full((3, 4), float("nan")), 0, 0, u, 0)),
        ("seed", lambda: ops.normal((3, 4), 2**64, 0, u, 0)),
        ("shape", lambda: ops.normal((3, -1), 0, 0, u, 0)),
        ("shape", lambda: ops.normal((3, 0, 2), 0, 0, u, 0)),
        ("c_eps", lambda: ops.ddpm_step(x, x, 1.0, torch.tensor(0.1, requires_grad=True), 0.0, 0, 0, u, 0)),
        ("sigma", lambda: ops.ddpm_step(x, x, 1.0, 0.1, torch.ones(3, 5), 0, 0, u, 0)),
        ("sigma", lambda: ops.clipped_step(x, x, 1.0, 0.1, 0.5, 0.5, torch.full((3, 4), float("nan")), 0, 0, u, 0)),
        ("c0", lambda: ops.clipped_step(x, x, 1.0, 0.1, torch.ones(2), 0.5, 0.0, 0, 0, u, 0)),
        ("b", lambda: ops.clipped_step(x, x, 1.0, torch.tensor(0.1, requires_grad=True), 0.5, 0.5, 0.0, 0, 0, u, 0)),
        ("eps", lambda: ops.clipped_step(x, x[:1], 1.0, 0.1, 0.5, 0.5, 0.0, 0, 0, u, 0)),
        ("sqrt_ab", lambda: ops.q_sample(x, torch.full((3,), 0.5, requires_grad=True), 0.5, 0, 0, u, 0)),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_input_raises_a_clear_error(case):
    name, call = _bad_calls()[case]
    with pytest.raises(ValueError, match=f"'?{name}'?"):
        call()


def test_schemas_match_the_python_fallback():
    for name, schema in ops.SCHEMAS.items():
        live = str(getattr(torch.ops.dbp, name).default._schema)
        assert live == f"dbp::{name}{schema}"


_FALLBACK_SCRIPT = r"""
import sys, warnings
sys.modules["dbp_core._C"] = None  # as if the extension were not built
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    from dbp_core import ops
assert ops.backend() == "reference", ops.backend()
assert sum("not built" in str(x.message) for x in w) == 1, [str(x.message) for x in w]
import torch
x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
u = torch.tensor([3, 1])
torch.save({
    "normal": ops.normal((2, 3, 4, 4), 5, 1, u, 2),
    "step": ops.ddpm_step(x, x, 0.9, 0.2, 0.1, 5, 1, u, 2).detach(),
    "clipped": ops.clipped_step(x, x, 1.9, 0.2, 0.5, 0.4, x.detach().abs(), 5, 1, u, 2).detach(),
    "rbgm": ops.rbgm(x.detach(), 5, 1, u, 2),
    "x": x.detach(),
}, sys.argv[1])
assert torch.autograd.gradcheck(lambda x: ops.q_sample(x, 0.9, 0.2, 5, 1, u, 2), (x,))
xt = x.detach().transpose(2, 3).requires_grad_()  # non-contiguous: fake and real kernels agree on strides
torch.library.opcheck(torch.ops.dbp.ddpm_step.default, (xt, xt, torch.tensor(0.9, dtype=torch.float64),
                      torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.1, dtype=torch.float64), 5, 1, u, 2))
torch.library.opcheck(torch.ops.dbp.clipped_step.default, (xt, xt, torch.tensor(1.9, dtype=torch.float64),
                      torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64),
                      torch.tensor([0.4, 0.3], dtype=torch.float64), xt.detach().abs().requires_grad_(), 5, 1, u, 2))
torch.library.opcheck(torch.ops.dbp.q_sample.default, (xt, torch.tensor([0.9, 0.8], dtype=torch.float64),
                      torch.tensor(0.2, dtype=torch.float64), 5, 1, u, 2))
try:
    ops.q_sample(x, 0.5, 0.5, 0, 0, torch.arange(3), 0)
except ValueError as e:
    assert "uids" in str(e)
else:
    raise AssertionError("fallback accepted bad uids")
"""


def test_fallback_without_extension_gives_the_same_values(tmp_path):
    out = tmp_path / "fallback.pt"
    subprocess.run([sys.executable, "-c", _FALLBACK_SCRIPT, str(out)], check=True)
    got = torch.load(out)
    u = torch.tensor([3, 1])
    x = got["x"]
    assert torch.equal(got["normal"], ops.normal((2, 3, 4, 4), 5, 1, u, 2))
    assert torch.equal(got["step"], ops.ddpm_step(x, x, 0.9, 0.2, 0.1, 5, 1, u, 2))
    assert torch.equal(got["clipped"], ops.clipped_step(x, x, 1.9, 0.2, 0.5, 0.4, x.abs(), 5, 1, u, 2))
    assert torch.equal(got["rbgm"], ops.rbgm(x, 5, 1, u, 2))


# --- the vectorised noise path (AVX2 Philox, eight blocks per instruction) ---

@needs_extension
def test_noise_tails_chunks_and_wide_addresses_equal_reference():
    """Every remainder of the eight-block SIMD groups and of the 1024-element chunks, and address
    words that only fit in 64 bits (taken modulo 2^32), give the reference's floats."""
    gen = torch.Generator().manual_seed(11)
    uids = torch.tensor([0, 2**32 - 1, 2**40 + 5, -3])
    for n in [*range(1, 41), 1023, 1024, 1025, 1056, 2047, 4096 + 36]:
        for seed in (0, 2**64 - 1, 0x0123456789ABCDEF):
            step = int(torch.randint(0, 2**32, (1,), generator=gen))
            s = ops._signed64(seed)
            assert torch.equal(ops.normal((4, n), seed, 2**32 - 1, uids, step),
                               ref.normal((4, n), s, 2**32 - 1, uids, step)), (n, seed)
    x = torch.randn(4, 3, 33, 31, generator=gen)
    assert torch.equal(ops.ddpm_step(x, x, 0.9, 0.2, 0.1, 7, 3, uids, 9),
                       ref.ddpm_step(x, x, torch.tensor(0.9), torch.tensor(0.2), torch.tensor(0.1), 7, 3, uids, 9))
    sg = torch.rand(x.shape, generator=gen)
    assert torch.equal(ops.clipped_step(x, x.flip(0), 1.5, 0.4, 0.6, 0.3, sg, 7, 3, uids, 9),
                       ref.clipped_step(x, x.flip(0), torch.tensor(1.5), torch.tensor(0.4), torch.tensor(0.6),
                                        torch.tensor(0.3), sg, 7, 3, uids, 9))


_PORTABLE_SCRIPT = r"""
import sys, torch
from dbp_core import ops
u = torch.tensor([5, 2**33 + 1, 17])
x = torch.randn(3, 2, 45, 23, generator=torch.Generator().manual_seed(0))
torch.save({"normal": ops.normal((3, 5000), 2**64 - 7, 4, u, 123),
            "step": ops.ddpm_step(x, x, 0.9, 0.2, 0.1, 99, 1, u, 7),
            "q": ops.q_sample(x, 0.8, 0.6, 3, 2, u, 1),
            "rbgm": ops.rbgm(x, 5, 1, u, 2)}, sys.argv[1])
"""


@needs_extension
def test_portable_and_avx2_noise_paths_agree(tmp_path):
    """DBP_DISABLE_AVX2=1 selects the portable Philox: both paths give the same bits."""
    import os

    out = {}
    for flag in ("1", "0"):
        path = tmp_path / f"noise{flag}.pt"
        subprocess.run([sys.executable, "-c", _PORTABLE_SCRIPT, str(path)], check=True,
                       env=dict(os.environ, DBP_DISABLE_AVX2=flag))
        out[flag] = torch.load(path)
    for k in out["1"]:
        assert torch.equal(out["1"][k], out["0"][k]), k
    u = torch.tensor([5, 2**33 + 1, 17])
    assert torch.equal(out["1"]["normal"], ref.normal((3, 5000), ops._signed64(2**64 - 7), 4, u, 123))


# --- on a machine with a GPU (CI here has none: this runs where a device exists) ---

@pytest.mark.skipif(not (torch.cuda.is_available() and ops.backend() == "extension (cpu, cuda)"),
                    reason="needs a CUDA device and the CUDA build")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_kernels_equal_the_cpu_kernels(dtype):
    """The GPU runs the same __host__ __device__ math: every op gives the CPU's bits."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, 17, 19, generator=gen, dtype=dtype)
    uids = _uids(5, gen)
    per = torch.rand(5, generator=gen, dtype=dtype)
    cpu = {"normal": ops.normal((5, 3, 17, 19), 2**63 + 1, 4, uids, 9, dtype),
           "q": ops.q_sample(x, per, 1 - per, 5, 1, uids, 2),
           "step": ops.ddpm_step(x, x.flip(0), per, 0.3, per / 4, 7, 2, uids, 3),
           "step_elem": ops.ddpm_step(x, x.flip(0), per, 0.3, x.abs(), 7, 2, uids, 3),
           "clipped": ops.clipped_step(x, x.flip(0), 1 + per, 0.4, per, 0.3, x.abs(), 7, 2, uids, 3),
           "rbgm": ops.rbgm(x, 5, 1, uids, 2)}
    d = torch.device("cuda")
    gpu = {"normal": ops.normal((5, 3, 17, 19), 2**63 + 1, 4, uids.to(d), 9, dtype),
           "q": ops.q_sample(x.to(d), per.to(d), (1 - per).to(d), 5, 1, uids.to(d), 2),
           "step": ops.ddpm_step(x.to(d), x.flip(0).to(d), per.to(d), 0.3, (per / 4).to(d), 7, 2, uids.to(d), 3),
           "step_elem": ops.ddpm_step(x.to(d), x.flip(0).to(d), per.to(d), 0.3, x.abs().to(d), 7, 2, uids.to(d), 3),
           "clipped": ops.clipped_step(x.to(d), x.flip(0).to(d), (1 + per).to(d), 0.4, per.to(d), 0.3, x.abs().to(d),
                                       7, 2, uids.to(d), 3),
           "rbgm": ops.rbgm(x.to(d), 5, 1, uids.to(d), 2)}
    for k in cpu:
        assert gpu[k].device.type == "cuda" and torch.equal(cpu[k], gpu[k].cpu()), k
