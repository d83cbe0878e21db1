"""A small DDPM UNet (Ho et al. 2020, Appendix B; PixelCNN++-style residual blocks), sized for
the embedded default (8x8x1 digits, about 0.6 M parameters).

``eps_model(x_t, t)``: x_t in [-1, 1], [B, C, H, W]; t = ORIGINAL timesteps, shape [B]
(float or int). Returns the predicted noise, same shape as x_t.

Layout (two resolutions): conv_in -> [res] @HxW -> downsample -> [res + attn] @H/2 ->
middle [res, attn, res] -> mirrored up path with skip connections -> GN, SiLU, conv_out.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .arch_checks import flag, fraction, groups_divide, integer, integers


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1
    base_channels: int = 48
    channel_mult: tuple[int, ...] = (1, 2)
    attention: bool = True  # self-attention at the lowest resolution
    dropout: float = 0.0
    groups: int = 8

    def __post_init__(self):
        """ValueError naming the first field that cannot build the network (``arch_checks``)."""
        integer("in_channels", self.in_channels)
        if integer("base_channels", self.base_channels, 2) % 2:  # the sinusoidal time embedding has an even width
            raise ValueError(f"base_channels = {self.base_channels}: expected an even integer (the width of the "
                             "sinusoidal time embedding)")
        mult = integers("channel_mult", self.channel_mult)
        object.__setattr__(self, "channel_mult", mult)
        flag("attention", self.attention)
        fraction("dropout", self.dropout)
        integer("groups", self.groups)
        groups_divide("groups", self.groups, [self.base_channels] + [self.base_channels * m for m in mult],
                      "every GroupNorm splits its channels (base_channels x channel_mult) into groups")

    def to_dict(self) -> dict:
        return {**asdict(self), "channel_mult": list(self.channel_mult)}

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown UNet config keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**d)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal embedding of (float) timesteps, as in DDPM (Appendix B)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over spatial positions, residual."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(a.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        c, g, dr = config.base_channels, config.groups, config.dropout
        chs = [c * m for m in config.channel_mult]
        emb = 4 * c
        self.time_mlp = nn.Sequential(nn.Linear(c, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = nn.Conv2d(config.in_channels, c, 3, padding=1)
        self.down = nn.ModuleList()
        skips, cur = [c], c
        for lvl, ch in enumerate(chs):
            last = lvl == len(chs) - 1
            self.down.append(nn.ModuleDict({
                "res": ResBlock(cur, ch, emb, dr, g),
                "attn": Attention(ch, g) if (last and config.attention) else nn.Identity(),
            }))
            cur = ch
            skips.append(cur)
            if not last:
                self.down.append(nn.ModuleDict({"down": nn.Conv2d(cur, cur, 3, stride=2, padding=1)}))
                skips.append(cur)
        self.mid1 = ResBlock(cur, cur, emb, dr, g)
        self.mid_attn = Attention(cur, g) if config.attention else nn.Identity()
        self.mid2 = ResBlock(cur, cur, emb, dr, g)
        self.up = nn.ModuleList()
        for lvl, ch in reversed(list(enumerate(chs))):
            first = lvl == len(chs) - 1
            for _ in range(2):
                self.up.append(nn.ModuleDict({
                    "res": ResBlock(cur + skips.pop(), ch, emb, dr, g),
                    "attn": Attention(ch, g) if (first and config.attention) else nn.Identity(),
                }))
                cur = ch
            if lvl > 0:
                self.up.append(nn.ModuleDict({"up": nn.Conv2d(cur, cur, 3, padding=1)}))
        assert not skips, "skip bookkeeping"
        self.norm_out = nn.GroupNorm(g, cur)
        self.conv_out = nn.Conv2d(cur, config.in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels).to(x.dtype))
        h = self.conv_in(x)
        hs = [h]
        for blk in self.down:
            if "down" in blk:
                h = blk["down"](h)
            else:
                h = blk["attn"](blk["res"](h, emb))
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for blk in self.up:
            if "up" in blk:
                h = blk["up"](F.interpolate(h, scale_factor=2, mode="nearest"))
            else:
                h = blk["attn"](blk["res"](torch.cat([h, hs.pop()], dim=1), emb))
        return self.conv_out(F.silu(self.norm_out(h)))
