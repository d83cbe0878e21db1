"""openai's guided-diffusion UNet (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", Section 3;
Nichol & Dhariwal 2021 for the learned variance), written here so that its released state dicts
(``256x256_diffusion_uncond.pt``: ``input_blocks.N...``, ``middle_block``, ``out``) load with
``strict=True`` and give the reference's outputs (tests/test_guided_unet.py checks both against
guided-diffusion-sdk's ``UNetModel``).

The architecture is a :class:`GuidedUNetConfig` spelled with guided-diffusion's own flag names
(``script_util.create_model``): a preset for each released unconditional checkpoint
(:data:`PRESETS`) and any field overridden from the experiment's TOML
(``models.diffusion_config``). Class-conditional checkpoints are not supported: the eps-model
interface has no label.

Numerics follow the reference: the group norms and the attention softmax are computed in float32
and cast back (openai's ``GroupNorm32`` and ``QKVAttentionLegacy``; in a float64 network they
round to float32 too), the time embedding is computed in float32, and with ``use_fp16`` the convolutions of the three block lists run in
float16 while the embeddings, norms and the output head stay in float32 (openai's
``convert_to_fp16``).

:class:`GuidedDiffusionEps` wraps the network to ``eps_model(x_t, t)`` (docs/science.md,
"Diffusion networks"): t = original timesteps 0..999 (int64), output [eps, v] with 2C channels
when ``learn_sigma`` (``learned_variance = True``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .arch_checks import flag, fraction, from_preset, groups_divide, integer, integers, positive

__all__ = ["GuidedUNetConfig", "GuidedUNet", "GuidedDiffusionEps", "PRESETS", "guided_config"]


@dataclass(frozen=True)
class GuidedUNetConfig:
    """guided-diffusion's ``create_model`` flags (same names, same defaults as
    ``model_and_diffusion_defaults`` where they apply)."""
    image_size: int = 64
    num_channels: int = 128
    num_res_blocks: int = 2
    channel_mult: Any = ""  # "" = by image size (as create_model), "1,1,2" or a list
    learn_sigma: bool = False
    attention_resolutions: Any = "16,8"  # resolutions, "32,16,8" or a list of ints
    num_heads: int = 4
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    dropout: float = 0.0
    resblock_updown: bool = False
    use_fp16: bool = False
    use_new_attention_order: bool = False
    in_channels: int = 3
    class_cond: bool = False

    @property
    def mults(self) -> tuple[float, ...]:
        """The channel multipliers per level (``create_model``'s table for ``""``)."""
        cm = self.channel_mult
        if cm in ("", None):
            by_size = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
            if self.image_size not in by_size:
                raise ValueError(f"channel_mult '' picks the multipliers by image_size, which must be one of "
                                 f"{sorted(by_size)}; got {self.image_size} (give channel_mult)")
            return by_size[self.image_size]
        if isinstance(cm, str):
            try:
                return tuple(int(m) for m in cm.split(","))
            except ValueError:
                raise ValueError(f"channel_mult = {cm!r}: expected comma-separated integers such as '1,2,2' "
                                 "(or a list)") from None
        if not isinstance(cm, (list, tuple)) or not cm:
            raise ValueError(f"channel_mult = {cm!r}: expected '' (by image_size), '1,2,2' or a non-empty list")
        return tuple(positive(f"channel_mult[{i}]", m) for i, m in enumerate(cm))

    @property
    def attention_ds(self) -> tuple[int, ...]:
        """Downsampling rates at which attention runs (``image_size // resolution``)."""
        ar = self.attention_resolutions
        try:
            res = [int(r) for r in ar.split(",") if r.strip()] if isinstance(ar, str) else list(ar)
        except (ValueError, TypeError):
            res = None
        if res is None or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in res):
            raise ValueError(f"attention_resolutions = {ar!r}: expected resolutions >= 1, as '32,16,8' or a list "
                             "of integers")
        return tuple(self.image_size // r for r in res)

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels


# Flags of openai's released unconditional checkpoints (guided-diffusion README, "Model flags").
# The LSUN models share one architecture (dropout 0.1 acts in training only).
PRESETS: dict[str, dict] = {
    "256x256_diffusion_uncond": dict(
        image_size=256, num_channels=256, num_res_blocks=2, learn_sigma=True, attention_resolutions="32,16,8",
        num_head_channels=64, resblock_updown=True, use_scale_shift_norm=True),
    "lsun_256": dict(
        image_size=256, num_channels=256, num_res_blocks=2, learn_sigma=True, attention_resolutions="32,16,8",
        num_head_channels=64, resblock_updown=True, use_scale_shift_norm=True, dropout=0.1),
}


def guided_config(preset: str | None = None, overrides: dict | None = None) -> GuidedUNetConfig:
    """A config from a preset name (or the defaults) with ``overrides`` (guided-diffusion flag names);
    ValueError naming the unknown key or value."""
    cfg = from_preset(GuidedUNetConfig, PRESETS, preset, overrides, family="guided-diffusion", key="flag")
    if cfg.class_cond:
        raise ValueError("class_cond = true: class-conditional checkpoints need a label, which the eps-model "
                         "interface does not carry; use an unconditional checkpoint")
    _check_fields(cfg)
    return cfg


def _check_fields(cfg: GuidedUNetConfig) -> None:
    """ValueError naming the first flag that cannot build the network (``arch_checks``)."""
    integer("image_size", cfg.image_size)
    integer("num_channels", cfg.num_channels)
    integer("num_res_blocks", cfg.num_res_blocks)
    integer("in_channels", cfg.in_channels)
    integer("num_heads", cfg.num_heads)
    integer("num_head_channels", cfg.num_head_channels, or_minus_one=True)
    integer("num_heads_upsample", cfg.num_heads_upsample, or_minus_one=True)
    fraction("dropout", cfg.dropout)
    for name in ("learn_sigma", "use_scale_shift_norm", "resblock_updown", "use_fp16", "use_new_attention_order"):
        flag(name, getattr(cfg, name))
    widths = [int(m * cfg.num_channels) for m in cfg.mults]
    cfg.attention_ds  # noqa: B018 -- validates attention_resolutions
    if min(widths) < 1:
        raise ValueError(f"num_channels = {cfg.num_channels} x channel_mult {list(cfg.mults)}: a level of "
                         f"{min(widths)} channels; expected at least 1")
    groups_divide("num_channels", 32, widths, "every GroupNorm of guided-diffusion has 32 groups")
    attended = [w for level, w in enumerate(widths) if 2 ** level in cfg.attention_ds]  # the up and down paths
    if cfg.num_head_channels != -1:
        groups_divide("num_head_channels", cfg.num_head_channels, attended + widths[-1:],
                      "attention splits its channels into heads of num_head_channels")
        return
    up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
    groups_divide("num_heads", cfg.num_heads, attended + widths[-1:], "attention splits its channels into heads")
    groups_divide("num_heads_upsample", up, attended, "the up path's attention splits its channels into heads")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """guided-diffusion's sinusoidal embedding: frequencies exp(-ln(P) j / half), [cos, sin]
    (cosine first, divided by half), float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32, C) computed in float32 (input and affine parameters) and cast back to the
    input's dtype, as the reference computes it under fp16 and float32."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(),
                            self.eps).type(x.dtype)


class TimestepSequential(nn.Sequential):
    """Layers applied in order; residual blocks also receive the time embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Resample(nn.Module):
    """2x nearest upsampling or 2x average-pool downsampling, with an optional 3x3 conv
    (the key name of the conv, ``conv`` / ``op``, is the reference's)."""

    def __init__(self, channels: int, up: bool, with_conv: bool):
        super().__init__()
        self.up = up
        self.with_conv = with_conv
        if with_conv:
            conv = nn.Conv2d(channels, channels, 3, stride=1 if up else 2, padding=1)
            self.add_module("conv" if up else "op", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            return self.conv(x) if self.with_conv else x
        return self.op(x) if self.with_conv else F.avg_pool2d(x, 2, 2)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, time embedding as scale-shift of the second norm (FiLM) or a bias,
    SiLU-dropout-conv, plus the (1x1 conv) skip; up/down blocks resample between the first
    activation and conv, and the skip."""

    def __init__(self, cin: int, emb_dim: int, dropout: float, cout: int | None = None,
                 scale_shift: bool = True, up: bool = False, down: bool = False):
        super().__init__()
        cout = cout or cin
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(GroupNorm32(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.resample = Resample(cin, up=up, with_conv=False) if (up or down) else None
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * cout if scale_shift else cout))
        self.out_layers = nn.Sequential(GroupNorm32(cout), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(cout, cout, 3, padding=1))
        self.skip_connection = nn.Identity() if cout == cin else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.resample is not None:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self.resample(h))
            x = self.resample(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over positions, residual. q and k are each scaled by ch^(-1/4)
    before the product and the softmax runs in float32. The legacy head order (openai's
    ``QKVAttentionLegacy``) splits the qkv channels into heads first, each head holding its
    q, k, v contiguously; the new order splits q, k, v first."""

    def __init__(self, channels: int, num_heads: int, num_head_channels: int, new_order: bool):
        super().__init__()
        if num_head_channels == -1:
            self.heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"attention channels {channels} are not divisible by num_head_channels "
                                 f"{num_head_channels}")
            self.heads = channels // num_head_channels
        self.new_order = new_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        n = qkv.shape[-1]
        ch = c // self.heads
        if self.new_order:
            q, k, v = (z.reshape(b * self.heads, ch, n) for z in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b * self.heads, 3 * ch, n).split(ch, dim=1)
        scale = 1.0 / math.sqrt(math.sqrt(ch))
        w = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        w = torch.softmax(w.float(), dim=-1).type(w.dtype)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, n)
        return (x + self.proj_out(a)).reshape(b, c, *spatial)


class GuidedUNet(nn.Module):
    """``GuidedUNet(config)(x, timesteps) -> [B, out_channels, H, W]`` (openai's ``UNetModel`` layout)."""

    def __init__(self, config: GuidedUNetConfig = GuidedUNetConfig()):
        super().__init__()
        self.config = cfg = config
        mc, dr, ss = cfg.num_channels, cfg.dropout, cfg.use_scale_shift_norm
        emb_dim = 4 * mc
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        mults, attn_ds = cfg.mults, cfg.attention_ds

        def attention(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, cfg.num_head_channels, cfg.use_new_attention_order)

        def res(cin: int, cout: int | None = None, **kw) -> ResBlock:
            return ResBlock(cin, emb_dim, dr, cout, ss, **kw)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        ch = first = int(mults[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, mult in enumerate(mults):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * mc))]
                ch = int(mult * mc)
                if ds in attn_ds:
                    layers.append(attention(ch, cfg.num_heads))
                self.input_blocks.append(TimestepSequential(*layers))
                skips.append(ch)
            if level != len(mults) - 1:
                down = res(ch, ch, down=True) if cfg.resblock_updown else Resample(ch, up=False, with_conv=True)
                self.input_blocks.append(TimestepSequential(down))
                skips.append(ch)
                ds *= 2
        self.middle_block = TimestepSequential(res(ch), attention(ch, cfg.num_heads), res(ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skips.pop(), int(mc * mult))]
                ch = int(mc * mult)
                if ds in attn_ds:
                    layers.append(attention(ch, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if cfg.resblock_updown else Resample(ch, up=True, with_conv=True))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(first, cfg.out_channels, 3, padding=1))
        if cfg.use_fp16:
            self.convert_to_fp16()

    def convert_to_fp16(self) -> None:
        """Half-precision convolutions in the three block lists (openai's ``convert_to_fp16``)."""
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            for m in part.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    m.half()

    @property
    def torso_dtype(self) -> torch.dtype:
        """The dtype the block lists run in: that of their convolutions."""
        return self.input_blocks[0][0].weight.dtype

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        emb_in = timestep_embedding(timesteps, self.config.num_channels)
        emb = self.time_embed(emb_in.to(self.time_embed[0].weight.dtype))
        h = x.type(self.torso_dtype)
        hs = []
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))


class GuidedDiffusionEps(nn.Module):
    """``eps_model(x_t, t)`` over a :class:`GuidedUNet` (docs/science.md, "Diffusion networks").

    ``t``: int64 original timesteps 0..999. The network is called with them as guided-diffusion's
    ``_WrappedModel`` does for the full 1000-step model: the timestep map is the identity and
    ``rescale_timesteps`` multiplies by 1000/1000 (DiffPure's config sets it; GDMP's does not;
    the embedding is the same), so a respaced chain passes the original timestep of each step.
    Output: eps, or [eps, v] (2C channels, unsplit) when ``learned_variance``."""

    continuous_time = False

    def __init__(self, unet: GuidedUNet):
        super().__init__()
        self.unet = unet
        self.learned_variance = bool(unet.config.learn_sigma)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        return self.unet(x, t)
