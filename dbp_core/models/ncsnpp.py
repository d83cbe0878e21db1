"""DDPM++ (Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential
Equations", Appendix H), the network of score_sde_pytorch's ``vp/cifar10_ddpmpp_deep_continuous``
checkpoint that DiffPure purifies CIFAR-10 with, written here so that its state dicts
(``all_modules.N...`` and the ``sigmas`` buffer) load with ``strict=True`` and give the authors'
outputs (tests/test_ncsnpp.py checks both against a fixture made from the authors' code,
tests/fixtures/make_ncsnpp_fixture.py).

Scope: the DDPM++ family of score_sde's ``NCSNpp`` class — sinusoidal ("positional") time
embedding, BigGAN-style residual blocks whose up/down sampling is nearest-neighbour / 2x2 mean
(``fir = False``), single-head attention at ``attn_resolutions``, no progressive growing, skip
connections rescaled by 1/sqrt(2), GroupNorm(min(C/4, 32), eps 1e-6) and SiLU throughout. Every
submodule sits in one ``all_modules`` list, in the authors' order, so the keys match.

:class:`ScoreSDEEps` wraps the network to the continuous-time ``eps_model(x_t, t)``
(docs/science.md, "Diffusion networks").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .arch_checks import flag, fraction, from_preset, integer, integers, positive

__all__ = ["NCSNppConfig", "NCSNpp", "ScoreSDEEps", "PRESETS", "ncsnpp_config"]


@dataclass(frozen=True)
class NCSNppConfig:
    """score_sde's ``config.model`` / ``config.data`` fields that shape DDPM++ (same names)."""
    image_size: int = 32
    num_channels: int = 3
    nf: int = 128
    ch_mult: Any = (1, 2, 2, 2)
    num_res_blocks: int = 8
    attn_resolutions: Any = (16,)
    dropout: float = 0.1
    skip_rescale: bool = True
    centered: bool = True  # data.centered: inputs already in [-1, 1]
    sigma_min: float = 0.01  # the (unused by DDPM++) `sigmas` buffer: geometric sigma_max .. sigma_min
    sigma_max: float = 50.0
    num_scales: int = 1000


# score_sde_pytorch configs/vp/*.py (with default_cifar10_configs.py) of the released VP checkpoints.
PRESETS: dict[str, dict] = {
    "cifar10_ddpmpp_deep_continuous": dict(nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=8, attn_resolutions=(16,)),
    "cifar10_ddpmpp_continuous": dict(nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4, attn_resolutions=(16,)),
}


def ncsnpp_config(preset: str | None = None, overrides: dict | None = None) -> NCSNppConfig:
    """A config from a preset name (or the defaults) with ``overrides`` (score_sde's field names)."""
    cfg = from_preset(NCSNppConfig, PRESETS, preset, overrides, family="score-sde", key="field")
    cfg = replace(cfg, ch_mult=integers("ch_mult", cfg.ch_mult),
                  attn_resolutions=integers("attn_resolutions", cfg.attn_resolutions, empty=True))
    for name in ("image_size", "num_channels", "nf", "num_res_blocks", "num_scales"):
        integer(name, getattr(cfg, name))
    fraction("dropout", cfg.dropout)
    flag("skip_rescale", cfg.skip_rescale)
    flag("centered", cfg.centered)
    positive("sigma_min", cfg.sigma_min)
    positive("sigma_max", cfg.sigma_max)
    for ch in {cfg.nf * m for m in cfg.ch_mult} | {cfg.nf}:
        if ch % 4 or ch % min(ch // 4, 32):
            raise ValueError(f"nf = {cfg.nf} with ch_mult {list(cfg.ch_mult)}: a level of {ch} channels cannot be "
                             "split into GroupNorm's min(C/4, 32) groups; expected nf x each ch_mult a multiple of 4 "
                             "(and of 32 from 128 channels up)")
    return cfg


def timestep_embedding(t: torch.Tensor, dim: int, max_positions: float = 10000.0) -> torch.Tensor:
    """score_sde's sinusoidal embedding: frequencies exp(-ln(P) j / (half - 1)), [sin, cos]
    (sine first, divided by half - 1), float32."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -(math.log(max_positions) / (half - 1)))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(channels // 4, 32), channels, eps=1e-6)


class NIN(nn.Module):
    """A 1x1 "network in network" layer with score_sde's parameter layout: ``W`` [in, out], ``b``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(cin, cout))
        self.b = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,co->bohw", x, self.W) + self.b[None, :, None, None]


def upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def downsample_mean(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))


class ResBlockBigGAN(nn.Module):
    """SiLU(GN) -> [resample] -> conv -> + Dense(SiLU(temb)) -> SiLU(GN) -> dropout -> conv; the skip
    is resampled and 1x1-convolved (``Conv_2``) when the shape changes; (x + h) / sqrt(2)."""

    def __init__(self, cin: int, cout: int | None, temb_dim: int, dropout: float, skip_rescale: bool,
                 up: bool = False, down: bool = False):
        super().__init__()
        cout = cout or cin
        self.up, self.down, self.skip_rescale = up, down, skip_rescale
        self.GroupNorm_0 = group_norm(cin)
        self.Conv_0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.Dense_0 = nn.Linear(temb_dim, cout)
        self.GroupNorm_1 = group_norm(cout)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = nn.Conv2d(cout, cout, 3, padding=1)
        self.Conv_2 = nn.Conv2d(cin, cout, 1) if (cin != cout or up or down) else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.GroupNorm_0(x))
        if self.up:
            h, x = upsample_nearest(h), upsample_nearest(x)
        elif self.down:
            h, x = downsample_mean(h), downsample_mean(x)
        h = self.Conv_0(h) + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if self.Conv_2 is not None:
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class AttnBlockpp(nn.Module):
    """Single-head self-attention over positions with 1x1 NIN projections, weights softmax(q k / sqrt(C));
    (x + out) / sqrt(2)."""

    def __init__(self, channels: int, skip_rescale: bool):
        super().__init__()
        self.skip_rescale = skip_rescale
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0, self.NIN_1, self.NIN_2, self.NIN_3 = (NIN(channels, channels) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = self.NIN_0(h), self.NIN_1(h), self.NIN_2(h)
        w = torch.einsum("bchw,bcij->bhwij", q, k) * (int(c) ** -0.5)
        w = torch.softmax(w.reshape(b, hh, ww, hh * ww), dim=-1).reshape(b, hh, ww, hh, ww)
        h = self.NIN_3(torch.einsum("bhwij,bcij->bchw", w, v))
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class NCSNpp(nn.Module):
    """``NCSNpp(config)(x, labels) -> [B, C, H, W]``: the network's output for the noise label
    ``labels`` (score_sde's ``time_cond``; 999 t for continuous VP models)."""

    def __init__(self, config: NCSNppConfig = NCSNppConfig()):
        super().__init__()
        self.config = cfg = config
        # score_sde's get_sigmas (numpy float64), kept for its key: DDPM++ never reads it
        sigmas = np.exp(np.linspace(np.log(cfg.sigma_max), np.log(cfg.sigma_min), cfg.num_scales))
        self.register_buffer("sigmas", torch.tensor(sigmas))
        nf, temb_dim = cfg.nf, 4 * cfg.nf
        levels = len(cfg.ch_mult)
        resolutions = [cfg.image_size // 2 ** i for i in range(levels)]

        def res(cin, cout=None, **kw):
            return ResBlockBigGAN(cin, cout, temb_dim, cfg.dropout, cfg.skip_rescale, **kw)

        mods: list[nn.Module] = [nn.Linear(nf, temb_dim), nn.Linear(temb_dim, temb_dim),
                                 nn.Conv2d(cfg.num_channels, nf, 3, padding=1)]
        skips, ch = [nf], nf
        for level in range(levels):
            for _ in range(cfg.num_res_blocks):
                mods.append(res(ch, nf * cfg.ch_mult[level]))
                ch = nf * cfg.ch_mult[level]
                if resolutions[level] in cfg.attn_resolutions:
                    mods.append(AttnBlockpp(ch, cfg.skip_rescale))
                skips.append(ch)
            if level != levels - 1:
                mods.append(res(ch, down=True))
                skips.append(ch)
        mods += [res(ch), AttnBlockpp(ch, cfg.skip_rescale), res(ch)]
        for level in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                mods.append(res(ch + skips.pop(), nf * cfg.ch_mult[level]))
                ch = nf * cfg.ch_mult[level]
            if resolutions[level] in cfg.attn_resolutions:
                mods.append(AttnBlockpp(ch, cfg.skip_rescale))
            if level != 0:
                mods.append(res(ch, up=True))
        mods += [group_norm(ch), nn.Conv2d(ch, cfg.num_channels, 3, padding=1)]
        self.all_modules = nn.ModuleList(mods)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cfg, m = self.config, iter(self.all_modules)
        emb = timestep_embedding(labels, cfg.nf)
        temb = next(m)(emb.to(x.dtype))
        temb = next(m)(F.silu(temb))
        if not cfg.centered:
            x = 2 * x - 1.0
        hs = [next(m)(x)]
        levels = len(cfg.ch_mult)
        for level in range(levels):
            for _ in range(cfg.num_res_blocks):
                h = next(m)(hs[-1], temb)
                if h.shape[-1] in cfg.attn_resolutions:
                    h = next(m)(h)
                hs.append(h)
            if level != levels - 1:
                hs.append(next(m)(hs[-1], temb))
        h = next(m)(hs[-1], temb)
        h = next(m)(h)
        h = next(m)(h, temb)
        for level in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                h = next(m)(torch.cat([h, hs.pop()], dim=1), temb)
            if h.shape[-1] in cfg.attn_resolutions:
                h = next(m)(h)
            if level != 0:
                h = next(m)(h, temb)
        h = F.silu(next(m)(h))
        return next(m)(h)


class ScoreSDEEps(nn.Module):
    """Continuous-time ``eps_model(x_t, t)`` over :class:`NCSNpp` (docs/science.md, "Diffusion networks").

    ``t``: float times in [0, 1] [B]. The network gets score_sde's continuous VP label 999 t
    (``models/utils.py::get_score_fn``), whose score is -output / sigma(t): the output is the
    noise prediction itself, eps = -sigma(t) score."""

    continuous_time = True
    learned_variance = False

    def __init__(self, net: NCSNpp):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if not t.is_floating_point():  # integer timesteps would be read as times 0, 1, 2, ...: refuse
            raise TypeError(f"ScoreSDEEps is a continuous-time model (continuous_time = True): t must be float "
                            f"times in [0, 1], got {t.dtype} (a discrete timestep k is the time k / 999)")
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        return self.net(x, t * 999)
