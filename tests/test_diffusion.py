"""Schedules, respacing, reverse-step algebra (DDPM eq. 7/11, DDIM eq. 12) and the training loss."""
import math

import pytest
import torch

from dbp_core import ops
from dbp_core.purifier import Purifier, diffusion as D, noise

from tests._tiny import OracleEps, TinyEps


def test_linear_schedule_values():
    s = D.linear_schedule()
    assert s.betas64.dtype == torch.float64 and s.betas.dtype == torch.float32
    assert s.num_steps == 1000
    assert s.betas64[0].item() == pytest.approx(1e-4) and s.betas64[-1].item() == pytest.approx(0.02)
    ab = s.alpha_bar64
    assert ab[99].item() == pytest.approx(math.prod(1 - (1e-4 + i * (0.02 - 1e-4) / 999) for i in range(100)), rel=1e-12)
    assert s.steps_for(0.1) == 100
    with pytest.raises(ValueError):
        s.steps_for(0.0)


def test_respaced_timesteps():
    assert D.respaced_timesteps(100, 100) == list(range(99, -1, -1))
    ts = D.respaced_timesteps(100, 10)
    assert len(ts) == 10 and ts[0] == 99 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    assert D.respaced_timesteps(1000, 1) == [999]
    with pytest.raises(ValueError, match="reverse steps"):
        D.respaced_timesteps(100, 101)


def test_respaced_betas_keep_alpha_bar():
    s = D.linear_schedule()
    ts = D.respaced_timesteps(100, 7)
    b = D.respaced_betas(s.alpha_bar64, ts)
    assert torch.allclose(torch.cumprod(1 - b, 0), s.alpha_bar64[sorted(ts)], rtol=1e-12)


def test_full_respacing_equals_plain_chain_coefficients():
    s = D.linear_schedule()
    beta, ab = s.betas64, s.alpha_bar64
    chain = D.reverse_chain(s, 1000, 1000, "ddpm")
    assert [st.t for st in chain] == list(range(999, -1, -1))
    for st in chain:
        t = st.t
        assert st.c_x == pytest.approx(1 / math.sqrt(1 - beta[t].item()), rel=1e-9)
        assert st.c_eps == pytest.approx(beta[t].item() / math.sqrt(1 - ab[t].item()), rel=1e-9)
        assert st.sigma == (0.0 if t == 0 else pytest.approx(math.sqrt(beta[t].item()), rel=1e-9))


def test_full_respacing_equals_plain_chain_run():
    """Purifier with 1000 respaced steps over the full range vs a hand-written DDPM Algorithm 2."""
    torch.manual_seed(0)
    model = TinyEps()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    uids = torch.tensor([3, 11])
    pur = Purifier(model, t_star=1.0, steps=1000, noise=noise.replay(5), grad_mode="none")
    got = pur(x, uids)
    s = D.linear_schedule()
    beta, ab = s.betas64, s.alpha_bar64
    xt = math.sqrt(ab[999]) * (2 * x - 1) + math.sqrt(1 - ab[999]) * ops.normal(
        x.shape, 5, noise.stream(noise.FORWARD), uids, 999, dtype=torch.float64)
    with torch.no_grad():
        for t in range(999, -1, -1):
            eps = model(xt, torch.full((2,), t))
            xt = (xt - beta[t] / (1 - ab[t]).sqrt() * eps) / (1 - beta[t]).sqrt()
            if t > 0:
                xt = xt + beta[t].sqrt() * ops.normal(x.shape, 5, noise.stream(noise.REVERSE), uids, t,
                                                     dtype=torch.float64)
    assert torch.allclose(got, (xt + 1) / 2, atol=1e-10)


@pytest.mark.parametrize("steps", [1, 5, 100])
def test_ddpm_mean_is_posterior_mean_with_oracle_eps(steps):
    """DDPM eq. 11 with the true eps equals the posterior mean of eq. 7 (respaced betas)."""
    s = D.linear_schedule()
    ab = s.alpha_bar64
    chain = D.reverse_chain(s, 100, steps, "ddpm")
    x0 = torch.rand(1, 1, 4, 4, dtype=torch.float64) * 2 - 1
    xt = torch.randn_like(x0)
    for i, st in enumerate(chain):
        ab_t = ab[st.t]
        ab_prev = ab[chain[i + 1].t] if i + 1 < len(chain) else torch.tensor(1.0, dtype=torch.float64)
        alpha = ab_t / ab_prev
        eps = (xt - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
        mean = st.c_x * (xt - st.c_eps * eps)
        post = ab_prev.sqrt() * (1 - alpha) / (1 - ab_t) * x0 + alpha.sqrt() * (1 - ab_prev) / (1 - ab_t) * xt
        assert torch.allclose(mean, post, atol=1e-10)


def test_ddim_eta0_matches_eq12_and_recovers_x0_with_oracle():
    s = D.linear_schedule()
    x0 = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 2 - 1
    uids = torch.tensor([0, 1])
    chain = D.reverse_chain(s, 100, 10, "ddim")
    assert all(st.sigma == 0.0 for st in chain)
    oracle = OracleEps(x0, s.alpha_bar64)
    x = D.q_sample(s, x0, chain[0].t, 7, 0, uids)
    for st in chain:
        x = D.reverse_step(x, oracle(x, torch.full((2,), st.t)), st, 7, 1, uids)
    assert torch.allclose(x, x0, atol=1e-9)


def test_ddim_deterministic_given_forward_noise():
    """Only the forward noise is random: changing the reverse stream's seed changes nothing,
    changing the forward noise changes the result."""
    s = D.linear_schedule()
    model = TinyEps()
    x0 = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    uids = torch.tensor([4, 2])
    chain = D.reverse_chain(s, 100, 20, "ddim")

    def run(fwd_seed, rev_seed):
        x = D.q_sample(s, 2 * x0 - 1, chain[0].t, fwd_seed, noise.stream(noise.FORWARD), uids)
        with torch.no_grad():
            for st in chain:
                x = D.reverse_step(x, model(x, torch.full((2,), st.t)), st, rev_seed, noise.stream(noise.REVERSE), uids)
        return x

    assert torch.equal(run(1, 2), run(1, 99))
    assert not torch.allclose(run(1, 2), run(3, 2))
    pur = Purifier(model, t_star=0.1, steps=20, sampler="ddim", noise=noise.replay(1), grad_mode="none")
    assert torch.allclose(pur(x0, uids), (run(1, 12345) + 1) / 2, atol=1e-12)


def test_eps_prediction_loss_target_is_the_q_sample_noise():
    s = D.linear_schedule()
    x0 = torch.rand(8, 1, 4, 4, dtype=torch.float64) * 2 - 1
    uids = torch.arange(8)
    t = torch.randint(0, 1000, (8,))
    oracle = OracleEps(x0, s.alpha_bar64)
    # the oracle is exact only if x_t was built with the same noise the loss uses as target
    assert D.eps_prediction_loss(oracle, s, x0, t, 3, noise.stream(noise.TRAIN), uids, 0).item() < 1e-12
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    assert D.eps_prediction_loss(zero, s, x0, t, 3, noise.stream(noise.TRAIN), uids, 0).item() == pytest.approx(1.0, abs=0.35)


def test_bad_sampler_and_too_many_steps():
    s = D.linear_schedule()
    with pytest.raises(ValueError, match="sampler"):
        D.reverse_chain(s, 100, 10, "euler")
    with pytest.raises(ValueError, match="discrete chain"):
        D.reverse_chain(s, 100, 10, "vpsde")
    with pytest.raises(ValueError):
        Purifier(TinyEps(), t_star=0.1, steps=200)


@pytest.mark.parametrize("variance,diffusers_name", [("fixed_large", "fixed_large"), ("fixed_small", "fixed_small")])
def test_reverse_variances_match_diffusers_scheduler(variance, diffusers_name):
    """sigma of every respaced step vs diffusers' DDPMScheduler (an independent implementation)."""
    diffusers = pytest.importorskip("diffusers")
    s = D.linear_schedule()
    chain = D.reverse_chain(s, 100, 10, "ddpm", variance)
    sch = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                  variance_type=diffusers_name, clip_sample=False)
    sch.set_timesteps(timesteps=[st.t for st in chain])
    for st in chain[:-1]:
        want = float(sch._get_variance(st.t)) ** 0.5  # float32 alpha_bar inside diffusers
        assert st.sigma == pytest.approx(want, rel=1e-4), (variance, st.t)
    assert chain[-1].sigma == 0.0
    if variance == "fixed_small":  # the posterior variance is strictly below beta_t
        large = D.reverse_chain(s, 100, 10, "ddpm", "fixed_large")
        assert all(a.sigma < b.sigma for a, b in zip(chain[:-1], large[:-1]))
    with pytest.raises(ValueError, match="variance"):
        D.reverse_chain(s, 100, 10, "ddpm", "fixed_huge")
