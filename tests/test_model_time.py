"""What a diffusion plugin's ``forward(x_t, t)`` is given, as docs/config.md, "Plugins" says:
a recording eps model under each sampler, discrete and continuous, asserts the dtype, shape,
values and range of ``t`` (and of ``x_t``) that the page documents."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dbp_core.purifier import Purifier, noise


class Recorder(nn.Module):
    """An eps model that predicts zero noise and keeps every (x_t, t) it is called with."""

    def __init__(self, continuous_time: bool):
        super().__init__()
        self.continuous_time = continuous_time
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x_t, t):
        self.calls.append((x_t.detach().clone(), t.detach().clone()))
        return torch.zeros_like(x_t)


def recorded(sampler: str, continuous: bool, steps: int, *, t_star: float = 0.1, dtype=torch.float32,
             batch: int = 3, replicas: int = 1) -> Recorder:
    model = Recorder(continuous)
    purifier = Purifier(model, t_star=t_star, steps=steps, sampler=sampler, noise=noise.replay(0), grad_mode="none")
    x = torch.rand(batch, 1, 4, 4, dtype=dtype, generator=torch.Generator().manual_seed(0))
    purifier(x, torch.arange(batch) + 40, replicas=replicas)
    assert len(model.calls) == len(purifier.chain)  # one call per reverse step
    return model


def times(model: Recorder) -> list:
    """The value of t of each call, after checking it is one value for every row."""
    out = []
    for _, t in model.calls:
        assert t.dim() == 1 and bool((t == t[0]).all())
        out.append(t[0].item())
    return out


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "vpsde", "vpode"])
@pytest.mark.parametrize("continuous", [False, True])
def test_x_t_and_t_shapes_dtypes_and_devices(sampler, continuous):
    for dtype in (torch.float32, torch.float64):
        model = recorded(sampler, continuous, 4, dtype=dtype, batch=3, replicas=2)
        for x_t, t in model.calls:
            assert x_t.shape == (6, 1, 4, 4) and x_t.dtype == dtype  # R = batch x replicas rows
            assert t.shape == (6,) and t.device == x_t.device
            assert t.dtype == (dtype if continuous else torch.int64)
        x_first = model.calls[0][0]
        assert x_first.min() < 0  # the chain's [-1, 1] space, not [0, 1] images
        assert x_first.abs().max() < 3


def test_ddpm_and_ddim_give_the_original_timesteps_or_them_over_999():
    for sampler in ("ddpm", "ddim"):
        assert times(recorded(sampler, False, 10)) == [99, 88, 77, 66, 55, 44, 33, 22, 11, 0]
        assert times(recorded(sampler, False, 100)) == list(range(99, -1, -1))  # n - 1 down to 0
        continuous = times(recorded(sampler, True, 10))
        assert continuous == pytest.approx([k / 999 for k in (99, 88, 77, 66, 55, 44, 33, 22, 11, 0)], abs=1e-7)
        assert 0.0 <= min(continuous) and max(continuous) <= 99 / 999 + 1e-7


def test_vp_chains_give_floor_1000_s_or_s():
    sde, ode = times(recorded("vpsde", False, 100)), times(recorded("vpode", False, 100))
    assert sde == list(range(100, 0, -1))  # 100, 99, ..., 1: the first is n, one above DDPM's first
    assert ode[0] == 100 and ode[-2:] == [1, 0]
    for sampler, t_star, steps in (("vpsde", 0.1, 100), ("vpode", 0.1, 100), ("vpsde", 0.15, 7)):
        discrete, continuous = times(recorded(sampler, False, steps, t_star=t_star)), \
            times(recorded(sampler, True, steps, t_star=t_star))
        assert all(1e-5 < s <= t_star + 1e-6 for s in continuous)  # (1e-5, t*] up to float32 rounding
        assert continuous[0] == pytest.approx(t_star, abs=1e-6)
        assert all(0 <= k <= math.floor(1000 * t_star) for k in discrete)
        # DiffPure's mapping of the same float32 time
        assert discrete == [int(torch.floor(torch.tensor(s, dtype=torch.float32) * 1000)) for s in continuous]


def test_addt_gives_per_row_int64_timesteps_whatever_continuous_time_says():
    from dbp_core.addt import CGPOSettings, cgpo
    from dbp_core.purifier.diffusion import linear_schedule

    model = Recorder(continuous_time=True)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    x0 = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t = torch.tensor([3, 500, 17, 999])
    ab = linear_schedule().alpha_bar[t]
    cgpo(model, classifier, x0, torch.zeros(4, dtype=torch.long), t, torch.arange(4), ab, 0, CGPOSettings(iterations=1))
    (_, seen), = model.calls
    assert seen.dtype == torch.int64 and seen.tolist() == [3, 500, 17, 999]
