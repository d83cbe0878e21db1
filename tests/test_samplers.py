"""The samplers against the field's own code, and their exact gradients (docs/science.md, "DDPM reverse
step", "DDIM reverse step", "Reverse VP-SDE", "Probability-flow ODE", "GDMP guidance").

Oracles: openai's guided-diffusion (``guided-diffusion-sdk``: ``p_sample_loop`` / ``ddim_sample_loop`` of a
``SpacedDiffusion`` over our respaced timesteps, fed our addressed noise through ``torch.randn_like``),
``torchsde.sdeint(method="euler")`` with a Brownian motion whose increments are our addressed noise, and
``torchdiffeq.odeint(method="euler")``, each driving a transcription of DiffPure's ``RevVPSDE`` / ``VPODE``;
GDMP's update transcribed from its code. guided-diffusion gathers its float64 coefficients as float32
(``_extract_into_tensor``): the tests keep them float64 so that float64 runs agree to 1e-10.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchdiffeq
import torchsde
from guided_diffusion import gaussian_diffusion as gdd
from guided_diffusion import respace

from dbp_core import ops
from dbp_core.purifier import noise
from dbp_core.purifier.diffusion import linear_schedule, respaced_timesteps
from dbp_core.purifier.guidance import Guidance, gdmp_scale
from dbp_core.purifier.purifier import Purifier
from dbp_core.purifier.vpsde import BETA_MAX, BETA_MIN

from tests._tiny import ContinuousEps, LearnedEps, TinyEps

F64 = torch.float64
UIDS = torch.tensor([5, 2, 9])
SEED = 1234


def _images(b=3, size=4, seed=0):
    return torch.rand(b, 1, size, size, dtype=F64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def float64_guided(monkeypatch):
    """guided-diffusion with its coefficients kept in float64, and its noise draws replaced by a queue."""
    def extract64(arr, timesteps, broadcast_shape):
        res = torch.from_numpy(arr).to(device=timesteps.device)[timesteps]
        while res.dim() < len(broadcast_shape):
            res = res[..., None]
        return res.expand(broadcast_shape)

    monkeypatch.setattr(gdd, "_extract_into_tensor", extract64)
    queue: list[torch.Tensor] = []
    real = torch.randn_like
    monkeypatch.setattr(torch, "randn_like", lambda x, *a, **k: queue.pop(0) if queue else real(x, *a, **k))
    return queue


def _spaced(ts: list[int], var_type) -> respace.SpacedDiffusion:
    return respace.SpacedDiffusion(use_timesteps=set(ts), betas=gdd.get_named_beta_schedule("linear", 1000),
                                   model_mean_type=gdd.ModelMeanType.EPSILON, model_var_type=var_type,
                                   loss_type=gdd.LossType.MSE, rescale_timesteps=False)


def _reverse_noise(ts_exec: list[int], shape, seed=SEED, uids=UIDS) -> list[torch.Tensor]:
    """Our addressed reverse-step noise, in execution order (address step = the original timestep)."""
    return [ops.normal(shape, seed, noise.stream(noise.REVERSE), uids, t, dtype=F64) for t in ts_exec]


VAR_TYPES = {"fixed_large": gdd.ModelVarType.FIXED_LARGE, "fixed_small": gdd.ModelVarType.FIXED_SMALL,
             "learned": gdd.ModelVarType.LEARNED_RANGE}


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small", "learned"])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("n,steps", [(100, 10), (30, 30)])
def test_ddpm_equals_guided_diffusion_p_sample_loop(float64_guided, variance, clip, n, steps):
    model = LearnedEps() if variance == "learned" else TinyEps()
    pur = Purifier(model, t_star=n / 1000, steps=steps, variance=variance, clip_denoised=clip,
                   noise=noise.replay(SEED), grad_mode="none")
    x = _images()
    out, (x_T, last) = pur(x, UIDS, states=[0, len(pur.chain)])
    ts = respaced_timesteps(n, steps)
    float64_guided.extend(_reverse_noise(ts, x.shape))
    ref = _spaced(ts, VAR_TYPES[variance]).p_sample_loop(model, x.shape, noise=x_T, clip_denoised=clip)
    assert not float64_guided  # one draw per step, all consumed
    assert torch.allclose(last, ref, rtol=0, atol=1e-10), (last - ref).abs().max()
    assert torch.equal(out, (last + 1) / 2)
    if clip:  # the clip was active: without it the chain ends elsewhere
        plain = Purifier(model, t_star=n / 1000, steps=steps, variance=variance, noise=noise.replay(SEED),
                         grad_mode="none")(x, UIDS)
        assert (plain - out).abs().max() > 1e-6


def test_global_respacing_is_guided_diffusions_and_gdmp_imagenets_chain(float64_guided):
    """``respacing = "global"``: guided-diffusion's space_timesteps over all 1000 steps, cut below t*; GDMP on
    ImageNet (respacing 250, learned variance, clipping, 45 steps from spaced index 44 = timestep 177) is
    p_sample_loop over the last 45 spaced steps, from x_T noised to 177."""
    from dbp_core.purifier.diffusion import global_respaced_timesteps
    for count in (1, 2, 37, 100, 250, 999, 1000):
        assert sorted(global_respaced_timesteps(1000, count, 1000)) == sorted(respace.space_timesteps(1000, str(count)))
    model = LearnedEps()
    pur = Purifier(model, t_star=0.178, steps=250, respacing="global", variance="learned", clip_denoised=True,
                   noise=noise.replay(SEED), grad_mode="none")
    ts = [st.t for st in pur.chain]
    assert len(ts) == 45 and ts[0] == 177 and ts[-1] == 0
    x = _images()
    _, (x_T, last) = pur(x, UIDS, states=[0, 45])
    ab = linear_schedule().alpha_bar64
    z_f = ops.normal(x.shape, SEED, noise.stream(noise.FORWARD), UIDS, 177, dtype=F64)
    assert torch.allclose(x_T, math.sqrt(ab[177]) * (2 * x - 1) + math.sqrt(1 - ab[177]) * z_f, rtol=0, atol=1e-12)
    float64_guided.extend(_reverse_noise(ts, x.shape))
    spaced = _spaced(sorted(respace.space_timesteps(1000, "250")), gdd.ModelVarType.LEARNED_RANGE)
    # the sdk's skip_timesteps q_samples init_image to the first kept step with `noise`: GDMP's q_sample(x, 44)
    ref = spaced.p_sample_loop(model, x.shape, noise=z_f, clip_denoised=True, skip_timesteps=250 - 45,
                               init_image=2 * x - 1)
    assert not float64_guided
    assert torch.allclose(last, ref, rtol=0, atol=1e-10), (last - ref).abs().max()
    # the default ("t_star") spreads 45 steps over 0..177 instead: 19 of them differ by one
    assert sum(a != b for a, b in zip(ts, [st.t for st in Purifier(model, t_star=0.178, steps=45).chain])) == 19


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_equals_guided_diffusion_ddim_sample_loop(float64_guided, eta, clip):
    model = TinyEps()
    pur = Purifier(model, t_star=0.1, steps=10, sampler="ddim", eta=eta, clip_denoised=clip,
                   noise=noise.replay(SEED), grad_mode="none")
    x = _images()
    _, (x_T, last) = pur(x, UIDS, states=[0, 10])
    ts = respaced_timesteps(100, 10)
    float64_guided.extend(_reverse_noise(ts, x.shape))
    ref = _spaced(ts, gdd.ModelVarType.FIXED_LARGE).ddim_sample_loop(model, x.shape, noise=x_T,
                                                                     clip_denoised=clip, eta=eta)
    assert torch.allclose(last, ref, rtol=0, atol=1e-10), (last - ref).abs().max()


def test_ddim_eta0_keeps_the_previous_coefficients_and_eta1_is_the_posterior_sigma():
    s = linear_schedule()
    from dbp_core.purifier.diffusion import reverse_chain
    ddim, ddpm_small = reverse_chain(s, 100, 10, "ddim", eta=1.0), reverse_chain(s, 100, 10, "ddpm", "fixed_small")
    for a, b in zip(ddim, ddpm_small):  # DDIM eq. 16 at eta = 1 is DDPM's posterior variance
        assert a.sigma == pytest.approx(b.sigma, rel=1e-12, abs=0)
    ab = s.alpha_bar64
    for st, p in zip(reverse_chain(s, 100, 10, "ddim"), respaced_timesteps(100, 10)[1:] + [None]):
        ab_t, ab_p = float(ab[st.t]), (float(ab[p]) if p is not None else 1.0)
        c_x = math.sqrt(ab_p / ab_t)
        assert (st.c_x, st.c_eps, st.sigma) == (c_x, math.sqrt(1 - ab_t) - math.sqrt(1 - ab_p) / c_x, 0.0)


# --- DiffPure's reverse VP-SDE and probability-flow ODE ---

class _DiffPureVP(torch.nn.Module):
    """DiffPure's RevVPSDE (runners/diffpure_sde.py) / VPODE (runners/diffpure_ode.py) transcribed: the
    score of a discrete network at floor(1000 s) or of a continuous one at s, score = -eps / sigma(s);
    the time functions in float64 of the float32 times DiffPure's solvers hand them."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, model, shape):
        super().__init__()
        self.model, self.shape = model, shape

    def _beta_score(self, s32: torch.Tensor, y: torch.Tensor):
        s = s32.double()
        beta = BETA_MIN + s * (BETA_MAX - BETA_MIN)
        std = torch.sqrt(1.0 - torch.exp(-0.5 * (BETA_MAX - BETA_MIN) * s ** 2 - BETA_MIN * s))
        x = y.view(-1, *self.shape)
        b = x.shape[0]
        if getattr(self.model, "continuous_time", False):
            eps = self.model(x, s.expand(b))
        else:
            eps = self.model(x, (s32.float() * 1000).long().expand(b))
        eps = torch.split(eps, self.shape[0], dim=1)[0]  # a learn_sigma network: DiffPure keeps eps
        return beta, -eps.reshape(b, -1) / std

    def f(self, t, y):  # torchsde time t = 1 - s: -(drift - g^2 score) of the reverse SDE
        beta, score = self._beta_score(1 - t, y)
        return -(-0.5 * beta * y - beta * score)

    def g(self, t, y):
        beta, _ = self._beta_score(1 - t, y)
        return torch.sqrt(beta).expand_as(y)

    def forward(self, s, y):  # the ODE in forward time s: drift - 1/2 g^2 score
        beta, score = self._beta_score(s, y)
        return -0.5 * beta * y - 0.5 * beta * score


class _AddressedBM:
    """A torchsde Brownian motion whose k-th increment is sqrt(h_k) z_k, z_k our addressed noise."""

    levy_area_approximation = "none"

    def __init__(self, z: list[torch.Tensor]):
        self.z, self.k = z, 0
        self.shape, self.dtype, self.device = tuple(z[0].shape), z[0].dtype, z[0].device

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        inc = torch.sqrt((tb - ta).double()) * self.z[self.k]
        self.k += 1
        return inc


@pytest.mark.parametrize("model_cls", [TinyEps, ContinuousEps, LearnedEps])
@pytest.mark.parametrize("t_star,steps", [(0.1, 100), (0.15, 150), (0.2, 9)])
def test_vpsde_equals_torchsde_euler(model_cls, t_star, steps):
    model = model_cls()
    pur = Purifier(model, t_star=t_star, steps=steps, sampler="vpsde", noise=noise.replay(SEED), grad_mode="none")
    x = _images()
    _, (x_T, last) = pur(x, UIDS, states=[0, len(pur.chain)])
    assert len(pur.chain) == steps
    z = [ops.normal((3, 16), SEED, noise.stream(noise.REVERSE), UIDS, k, dtype=F64) for k in range(len(pur.chain))]
    bm = _AddressedBM(z)
    ts = torch.linspace(1 - t_star, 1 - 1e-5, 2)  # DiffPure: float32 times, dt = 1e-3 at steps = 1000 t*
    ys = torchsde.sdeint(_DiffPureVP(model, (1, 4, 4)), x_T.reshape(3, -1), ts, method="euler", dt=t_star / steps,
                         bm=bm)
    assert bm.k == len(z)
    assert torch.allclose(last.reshape(3, -1), ys[-1], rtol=0, atol=1e-10), (last.reshape(3, -1) - ys[-1]).abs().max()


@pytest.mark.parametrize("model_cls", [TinyEps, ContinuousEps])
@pytest.mark.parametrize("t_star,steps", [(0.1, 100), (0.2, 9)])
def test_vpode_equals_torchdiffeq_euler(model_cls, t_star, steps):
    model = model_cls()
    pur = Purifier(model, t_star=t_star, steps=steps, sampler="vpode", noise=noise.replay(SEED), grad_mode="none")
    x = _images()
    _, (x_T, last) = pur(x, UIDS, states=[0, len(pur.chain)])
    ts = torch.linspace(t_star, 1e-5, 2)
    ys = torchdiffeq.odeint(_DiffPureVP(model, (1, 4, 4)), x_T.reshape(3, -1), ts, method="euler",
                            options=dict(step_size=t_star / steps))
    assert torch.allclose(last.reshape(3, -1), ys[-1], rtol=0, atol=1e-10), (last.reshape(3, -1) - ys[-1]).abs().max()
    # the reverse chain is deterministic: another reverse seed changes nothing, another forward seed does
    assert torch.equal(pur(x, UIDS, reverse_seed=99), pur(x, UIDS))
    assert not torch.allclose(pur(x, UIDS, seed=SEED + 1), pur(x, UIDS))


def test_vp_time_grids_and_timesteps_are_diffpures():
    """DiffPure's CIFAR-10 and ImageNet settings: 100 / 150 steps of 1e-3; guided timesteps floor(1000 s) in
    float32 run 149, 148, 148, 147, ... at t* = 0.15 (150 never, 148 twice) and 100, 99, ..., 1 at t* = 0.1."""
    p10 = Purifier(TinyEps(), t_star=0.1, steps=100, sampler="vpsde")
    assert [st.t for st in p10.chain] == list(range(100, 0, -1))
    p15 = Purifier(TinyEps(), t_star=0.15, steps=150, sampler="vpsde")
    assert [st.t for st in p15.chain[:4]] == [149, 148, 148, 147] and p15.chain[-1].t == 1
    assert 0.1 / 100 == 1e-3 and 0.15 / 150 == 1e-3  # dt = t*/steps is DiffPure's step
    assert [st.address for st in p10.chain] == list(range(100))
    ode = Purifier(TinyEps(), t_star=0.1, steps=100, sampler="vpode").chain
    assert len(ode) == 100 and all(st.sigma == 0.0 for st in ode)
    assert ode[0].time == pytest.approx(0.1, rel=1e-6) and ode[-1].time == pytest.approx(1e-3, rel=1e-4)


# --- GDMP guidance ---

def _gdmp_transcription(model, x_in, x_T, ts, variance, clip, target, scale, eps, seed=SEED, uids=UIDS):
    """GDMP's guided reverse loop, batch size 1 (purification/diff_purify.py; purify_imagenet.py's cond_fn with
    guided-diffusion's p_mean_variance): mean += variance * s_t * grad_x(-mse_loss(x, target)), then noise."""
    diffusion = _spaced(ts, VAR_TYPES[variance])
    x = x_T
    ab = linear_schedule().alpha_bar64
    for k in reversed(range(len(ts))):  # spaced index k is the k-th smallest kept timestep
        t = sorted(ts)[k]
        tk = torch.full((x.shape[0],), k)
        out = diffusion.p_mean_variance(model, x, tk, clip_denoised=clip)
        if target == "noised":
            zt = ops.normal(x.shape, seed, noise.stream(noise.GUIDANCE), uids, t, dtype=F64)
            ref = math.sqrt(ab[t]) * x_in + math.sqrt(1 - ab[t]) * zt
        else:
            ref = x_in
        xg = x.detach().requires_grad_()
        with torch.enable_grad():
            grad = torch.autograd.grad(-F.mse_loss(xg, ref), xg)[0]
        m = (eps * 2) / 3 / scale  # GDMP: m = (ptb * 2/255) / 3 / guide_scale
        s_t = math.sqrt(1 - ab[t]) / (m * math.sqrt(ab[t]))
        mean = out["mean"] + out["variance"] * grad * s_t
        z = ops.normal(x.shape, seed, noise.stream(noise.REVERSE), uids, t, dtype=F64)
        x = mean + (k != 0) * torch.exp(0.5 * out["log_variance"]) * z
    return x


@pytest.mark.parametrize("variance,clip,target", [("fixed_large", False, "noised"), ("learned", True, "clean"),
                                                  ("fixed_small", True, "noised")])
def test_gdmp_guidance_equals_gdmp_update_at_batch_size_one(float64_guided, variance, clip, target):
    model = LearnedEps() if variance == "learned" else TinyEps()
    guidance = Guidance(scale=100.0, eps=8 / 255, target=target)
    pur = Purifier(model, t_star=0.1, steps=10, variance=variance, clip_denoised=clip, guidance=guidance,
                   noise=noise.replay(SEED), grad_mode="none")
    x = _images()
    out, (x_T, last) = pur(x, UIDS, states=[0, 10])
    ts = respaced_timesteps(100, 10)
    for b in range(3):  # GDMP's batch mean equals our per-image mean at batch size 1
        ref = _gdmp_transcription(model, 2 * x[b:b + 1] - 1, x_T[b:b + 1], ts, variance, clip, target,
                                  guidance.scale, guidance.eps, uids=UIDS[b:b + 1])
        assert torch.allclose(last[b:b + 1], ref, rtol=0, atol=1e-10), (last[b:b + 1] - ref).abs().max()
    unguided = Purifier(model, t_star=0.1, steps=10, variance=variance, clip_denoised=clip,
                        noise=noise.replay(SEED), grad_mode="none")(x, UIDS)
    assert (unguided - out).abs().max() > 1e-3  # the guidance moved the chain
    assert gdmp_scale(0.5, 60000.0, 8 / 255) == pytest.approx(1 / ((16 / 255) / 3 / 60000), rel=1e-12)


def test_guidance_does_not_depend_on_the_batch():
    pur = Purifier(TinyEps(), t_star=0.1, steps=6, guidance=Guidance(100.0), noise=noise.replay(3), grad_mode="none")
    x = _images(4)
    uids = torch.tensor([1, 2, 3, 4])
    whole = pur(x, uids)
    for b in range(4):
        assert torch.allclose(pur(x[b:b + 1], uids[b:b + 1]), whole[b:b + 1], rtol=0, atol=1e-13)


# --- exact gradients of every sampler in every gradient mode ---

SAMPLERS = {
    "ddpm": dict(sampler="ddpm"),
    "ddpm-small-clip": dict(sampler="ddpm", variance="fixed_small", clip_denoised=True),
    "ddpm-learned": dict(sampler="ddpm", variance="learned"),
    "ddpm-learned-clip": dict(sampler="ddpm", variance="learned", clip_denoised=True),
    "ddim": dict(sampler="ddim"),
    "ddim-eta-clip": dict(sampler="ddim", eta=0.5, clip_denoised=True),
    "vpsde": dict(sampler="vpsde"),
    "vpode": dict(sampler="vpode"),
    "gdmp": dict(sampler="ddpm", guidance=Guidance(100.0)),
    "gdmp-learned-clean-clip": dict(sampler="ddpm", variance="learned", clip_denoised=True,
                                    guidance=Guidance(50.0, 4 / 255, "clean")),
    "ddpm-clamp": dict(sampler="ddpm", clamp_output=True),
}


def _model_for(name, **kw):
    if "learned" in name:
        return LearnedEps(**kw)
    return (ContinuousEps if name.startswith("vp") else TinyEps)(**kw)


def _grads(name, mode, states=(), replicas=1, dropout=False, callable_model=False):
    """Output, gradients wrt x and the weights of <w, out> + sum_k <w_k, state_k>, and the states."""
    torch.manual_seed(0)
    model = _model_for(name)
    if dropout:
        model = _DropoutWrap(model).train()
    x = _images(2, seed=3).requires_grad_()
    uids = torch.tensor([3, 8])
    net = _Callable(model) if callable_model else model
    pur = Purifier(net, t_star=0.1, steps=7, noise=noise.replay(11), grad_mode=mode, **SAMPLERS[name])
    res = pur(x, uids, replicas=replicas, states=list(states)) if states else pur(x, uids, replicas=replicas)
    out, st = (res if states else (res, []))
    gen = torch.Generator().manual_seed(5)
    loss = (out * torch.randn(out.shape, dtype=F64, generator=gen)).sum()
    for s in st:
        loss = loss + (s * torch.randn(s.shape, dtype=F64, generator=gen)).sum()
    loss.backward()
    return out.detach(), x.grad, [p.grad for p in model.parameters()], [s.detach() for s in st]


class _DropoutWrap(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.drop = inner, torch.nn.Dropout(0.2)
        self.learned_variance = getattr(inner, "learned_variance", False)
        self.continuous_time = getattr(inner, "continuous_time", False)

    def forward(self, x, t):
        return self.drop(self.inner(x, t))


class _Callable:
    """A plain callable eps_model (not an nn.Module): the torch.utils.checkpoint path."""

    def __init__(self, model):
        self.model = model
        self.learned_variance = getattr(model, "learned_variance", False)
        self.continuous_time = getattr(model, "continuous_time", False)

    def __call__(self, x, t):
        return self.model(x, t)


def _close(a, b):
    return torch.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_gradient_modes_agree(name):
    out_f, gx_f, gw_f, _ = _grads(name, "full")
    assert gx_f.abs().sum() > 0 and all(g is not None and g.abs().sum() > 0 for g in gw_f)
    for mode in ("checkpoint", "segments"):
        out, gx, gw, _ = _grads(name, mode)
        assert torch.equal(out, out_f), mode  # the attacker's forward is the judge's, bit for bit
        assert _close(gx, gx_f), (mode, (gx - gx_f).abs().max())
        assert all(_close(a, b) for a, b in zip(gw, gw_f)), mode


@pytest.mark.parametrize("name", ["ddpm-learned-clip", "vpsde", "gdmp", "ddim-eta-clip"])
def test_replicas_dropout_and_plain_callables_agree(name):
    ref = _grads(name, "full", replicas=2, dropout=True)
    for mode in ("checkpoint", "segments"):
        got = _grads(name, mode, replicas=2, dropout=True)
        assert torch.equal(got[0], ref[0]) and _close(got[1], ref[1]), mode
        assert all(_close(a, b) for a, b in zip(got[2], ref[2])), mode
    plain = _grads(name, "full", replicas=2, callable_model=True, states=(0, 3, 7))
    for mode in ("checkpoint", "segments"):  # torch.utils.checkpoint per step / per segment
        got = _grads(name, mode, replicas=2, callable_model=True, states=(0, 3, 7))
        assert torch.equal(got[0], plain[0]) and _close(got[1], plain[1]), mode
        assert all(torch.equal(a, b) for a, b in zip(got[3], plain[3])), mode


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_gradient_matches_finite_differences(name):
    model = _model_for(name)
    pur = Purifier(model, t_star=0.1, steps=5, noise=noise.replay(7), grad_mode="checkpoint", **SAMPLERS[name])
    x = (0.2 + 0.6 * _images(1, seed=4)).requires_grad_()
    uids = torch.tensor([9])
    assert torch.autograd.gradcheck(lambda v: pur(v, uids), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["ddpm", "ddpm-learned-clip", "ddim-eta-clip", "vpsde", "vpode",
                                  "gdmp-learned-clean-clip"])
def test_intermediate_state_gradients_in_every_mode(name):
    states = (0, 2, 5, 7)
    out_f, gx_f, gw_f, st_f = _grads(name, "full", states=states)
    for mode in ("checkpoint", "segments"):
        out, gx, gw, st = _grads(name, mode, states=states)
        assert all(torch.equal(a, b) for a, b in zip(st, st_f)), mode
        assert _close(gx, gx_f), (mode, (gx - gx_f).abs().max())
        assert all(_close(a, b) for a, b in zip(gw, gw_f)), mode
    # state 7 is the last state; state 0 the diffused input; a loss on a state alone has its own gradient
    assert torch.equal(out_f, (st_f[-1] + 1) / 2) or name.endswith("clamp")
    model = _model_for(name)
    pur = Purifier(model, t_star=0.1, steps=7, noise=noise.replay(11), grad_mode="segments", **SAMPLERS[name])
    x = _images(1, seed=6).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: pur(v, torch.tensor([2]), states=[3])[1][0], (x,), eps=1e-6, atol=1e-6)


def test_states_are_the_chain_prefix_and_bad_indices_fail():
    pur = Purifier(TinyEps(), t_star=0.1, steps=8, noise=noise.replay(4), grad_mode="none")
    x = _images()
    out, states = pur(x, UIDS, states=[8, 0, 3, 3])
    assert torch.equal((states[0] + 1.0) * 0.5, out) and states[2] is states[3]
    short = Purifier(TinyEps(), t_star=0.1, steps=8, noise=noise.replay(4), grad_mode="none")
    short.chain = short.chain[:3]  # the first three steps alone end in state 3
    assert torch.equal(short(x, UIDS, states=[3])[1][0], states[2])
    with pytest.raises(ValueError, match="states"):
        pur(x, UIDS, states=[9])


# --- DW-box replay and fresh noise, for every sampler ---

@pytest.mark.parametrize("name", list(SAMPLERS))
def test_replay_is_exact_and_fresh_noise_differs(name):
    model = _model_for(name)
    x = _images()
    att = Purifier(model, t_star=0.1, steps=6, noise=noise.replay(77), grad_mode="checkpoint", **SAMPLERS[name])
    judge = Purifier(model, t_star=0.1, steps=6, noise=noise.replay(77), grad_mode="none", **SAMPLERS[name])
    v = x.clone().requires_grad_()
    assert torch.equal(att(v, UIDS).detach(), judge(x, UIDS))  # the attacker's noise is the judge's
    fresh = Purifier(model, t_star=0.1, steps=6, noise=noise.stochastic(), grad_mode="none", **SAMPLERS[name])
    assert not torch.allclose(fresh(x, UIDS), judge(x, UIDS))
    deterministic_reverse = SAMPLERS[name]["sampler"] == "vpode" or (
        SAMPLERS[name]["sampler"] == "ddim" and SAMPLERS[name].get("eta", 0.0) == 0.0)
    other_reverse = judge(x, UIDS, reverse_seed=78)
    assert torch.equal(other_reverse, judge(x, UIDS)) == deterministic_reverse


def test_option_rules_name_the_option():
    for kw, match in [(dict(sampler="ddpm", eta=0.5), "eta"), (dict(sampler="ddim", eta=1.5), "eta"),
                      (dict(sampler="vpsde", clip_denoised=True), "clip_denoised"),
                      (dict(sampler="ddim", guidance=Guidance(1.0)), "guidance"),
                      (dict(sampler="vpode", variance="fixed_small"), "variance"),
                      (dict(sampler="ddpm", variance="learned"), "learned"),
                      (dict(sampler="vpsde", respacing="global"), "respacing"),
                      (dict(sampler="euler"), "sampler")]:
        with pytest.raises(ValueError, match=match):
            Purifier(TinyEps(), **kw)
    with pytest.raises(ValueError, match="target"):
        Guidance(1.0, target="noisy")


def test_output_clamp_and_its_gradient():
    x = _images()
    plain = Purifier(TinyEps(), t_star=0.3, steps=4, noise=noise.replay(2), grad_mode="full")
    clamped = Purifier(TinyEps(), t_star=0.3, steps=4, noise=noise.replay(2), grad_mode="checkpoint",
                       clamp_output=True)
    a, b = plain(x, UIDS), clamped(x, UIDS)
    assert torch.equal(b, a.clamp(0, 1)) and ((a < 0) | (a > 1)).any()
    v = x.clone().requires_grad_()
    clamped(v, UIDS).sum().backward()
    w = x.clone().requires_grad_()
    plain(w, UIDS).clamp(0, 1).sum().backward()
    assert _close(v.grad, w.grad)


def test_learned_variance_network_under_fixed_variance_uses_eps_only():
    """DiffPure's VP-SDE keeps the eps channels of a learn_sigma network; ddpm with a fixed variance likewise."""
    model = LearnedEps()
    eps_only = lambda x, t: model(x, t)[:, :1]  # noqa: E731
    for sampler in ("ddpm", "ddim", "vpsde"):
        a = Purifier(model, t_star=0.1, steps=5, sampler=sampler, noise=noise.replay(1), grad_mode="none")
        b = Purifier(eps_only, t_star=0.1, steps=5, sampler=sampler, noise=noise.replay(1), grad_mode="none")
        assert torch.equal(a(_images(), UIDS), b(_images(), UIDS)), sampler


def test_discrete_chain_gives_a_continuous_network_t_over_999():
    seen = []

    class Spy(ContinuousEps):
        def forward(self, x, t):
            seen.append(t.clone())
            return super().forward(x, t)

    Purifier(Spy(), t_star=0.1, steps=4, noise=noise.replay(1), grad_mode="none")(_images(), UIDS)
    ts = respaced_timesteps(100, 4)
    assert [float(s[0]) for s in seen] == [t / 999 for t in ts] and all(s.dtype == F64 for s in seen)
    assert np.allclose([999 * float(s[0]) for s in seen], ts, rtol=0, atol=1e-12)


# --- the [purifier] section reaches the purifier, and surrogate chains keep what their sampler takes ---

def test_config_options_reach_the_purifier_and_the_surrogate():
    from types import SimpleNamespace

    from dbp_core.config import loads_config
    from dbp_core.stages.attacks import attacker_model
    from dbp_core.stages.context import Resources
    base = 'name = "p"\n[models]\nclassifier = "tests.plugins:tiny_classifier"\ndiffusion = "tests.plugins:tiny_eps"\n'
    cfg = loads_config(base + '[purifier]\nsteps = 5\nclip_denoised = true\nclamp_output = true\n'
                       'variance = "fixed_small"\nguidance_scale = 100.0\nguidance_target = "clean"\n'
                       'guidance_eps = 0.015625\n')
    res = Resources(cfg)
    pur = res.purifier(noise.replay(1))
    assert (pur.sampler, pur.variance, pur.clip_denoised, pur.clamp_output) == ("ddpm", "fixed_small", True, True)
    assert pur.guidance == Guidance(100.0, 0.015625, "clean")
    from dbp_core.models.defended import DefendedClassifier
    defended = DefendedClassifier(res.classifier(), pur)
    sur = attacker_model(res, SimpleNamespace(surrogate_steps=3, surrogate_sampler="ddim"), defended).purifier
    assert (sur.sampler, sur.steps, sur.clip_denoised, sur.clamp_output, sur.guidance, sur.variance) == \
        ("ddim", 3, True, True, None, "fixed_large")
    sur = attacker_model(res, SimpleNamespace(surrogate_steps=None, surrogate_sampler="vpsde"), defended).purifier
    assert (sur.sampler, sur.clip_denoised, sur.guidance) == ("vpsde", False, None)
    ddim = Resources(loads_config(base + '[purifier]\nsteps = 5\nsampler = "ddim"\neta = 0.5\n')).purifier(None)
    assert ddim.eta == 0.5 and ddim.chain[0].sigma > 0
    vp = Resources(loads_config(base + '[purifier]\nsteps = 5\nsampler = "vpode"\n')).purifier(None)
    assert vp.sampler == "vpode" and len(vp.chain) == 5


def test_defended_classifier_returns_states_with_the_logits():
    from dbp_core.models.defended import DefendedClassifier
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3).double())
    pur = Purifier(TinyEps(), t_star=0.1, steps=4, noise=noise.replay(1), grad_mode="checkpoint")
    logits, states = DefendedClassifier(clf, pur)(_images(), UIDS, states=[2])
    assert logits.shape == (3, 3) and states[0].shape == (3, 1, 4, 4)
