"""Pure-PyTorch reference of every ``dbp`` op, bit-identical to the kernels.

It mirrors ``csrc/include/philox.h`` operation by operation: Philox4x32-10 on
uint32 words held in int64 tensors, then Box-Muller with the same float32
polynomials and constants, so a reference value equals the kernel's value
exactly (float32 noise; the arithmetic of q_sample/ddpm_step in the data's
dtype with the same two-rounding order). It is the oracle of the tests and
the fallback when the extension is not built.
"""
from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85

# float32 constants, spelled as in philox.h (hex literals)
_H = float.fromhex
_SQRT2 = _H("0x1.6a09e6p+0")
_LOG_POLY = [_H("0x1.555556p-1"), _H("0x1.99999ap-2"), _H("0x1.24924ap-2"), _H("0x1.c71c72p-3")]
_LN2 = _H("0x1.62e430p-1")
_HALF_PI = _H("0x1.921fb6p+0")
_SIN_POLY = [-_H("0x1.555556p-3"), _H("0x1.111112p-7"), -_H("0x1.a01a02p-13"), _H("0x1.71de3ap-19")]
_COS_POLY = [-0.5, _H("0x1.555556p-5"), -_H("0x1.6c16c2p-10"), _H("0x1.a01a02p-16"), -_H("0x1.27e4fcp-22")]
_TWO_M24 = 2.0**-24


def _f32(v: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32, device=like.device)


def _mulhilo(a: int, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of a * c, without int64 overflow (16-bit split)."""
    t = a * (c & 0xFFFF)  # < 2^48
    u = a * (c >> 16)  # < 2^48
    p16 = u + (t >> 16)  # (a*c) >> 16, < 2^49
    return p16 >> 16, ((p16 & 0xFFFF) << 16) | (t & 0xFFFF)


def philox4x32_10(ctr: list[torch.Tensor], key: tuple[int, int]) -> list[torch.Tensor]:
    """Philox4x32-10 (Salmon et al. 2011) on int64 tensors holding uint32 words."""
    x, y, z, w = ctr
    k0, k1 = key
    for _ in range(10):
        hi0, lo0 = _mulhilo(_PHILOX_M0, x)
        hi1, lo1 = _mulhilo(_PHILOX_M1, z)
        x, y, z, w = hi1 ^ y ^ k0, lo1, hi0 ^ w ^ k1, lo0
        k0 = (k0 + _PHILOX_W0) & _M32
        k1 = (k1 + _PHILOX_W1) & _M32
    return [x, y, z, w]


def _horner(x: torch.Tensor, coefs: list[float]) -> torch.Tensor:
    """c0 + x (c1 + x (c2 + ...)) evaluated innermost first, as in philox.h."""
    acc = _f32(coefs[-1], x)
    for c in reversed(coefs[:-1]):
        acc = _f32(c, x) + x * acc
    return acc


def log_unit(u: torch.Tensor) -> torch.Tensor:
    """philox.h::log_unit: log on (0, 1] from exact operations."""
    b = u.view(torch.int32).to(torch.int64) & _M32
    e = (((b >> 23) & 0xFF) - 127).to(torch.float32)
    m = ((b & 0x007FFFFF) | 0x3F800000).to(torch.int32).view(torch.float32)
    big = m > _f32(_SQRT2, u)
    m = torch.where(big, m * _f32(0.5, u), m)
    e = torch.where(big, e + _f32(1.0, u), e)
    s = (m - _f32(1.0, u)) / (m + _f32(1.0, u))
    s2 = s * s
    p = _horner(s2, [2.0] + _LOG_POLY)
    return e * _f32(_LN2, u) + s * p


def sincos_2pi(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """philox.h::sincos_2pi: (sin, cos) of 2 pi v with exact quadrant reduction."""
    x = v * _f32(4.0, v)
    q = torch.floor(x + _f32(0.5, v))
    a = (x - q) * _f32(_HALF_PI, v)
    a2 = a * a
    s = a * _horner(a2, [1.0] + _SIN_POLY)
    c = _horner(a2, [1.0] + _COS_POLY)
    qi = q.to(torch.int64) & 3
    sv = torch.where(qi == 0, s, torch.where(qi == 1, c, torch.where(qi == 2, -s, -c)))
    cv = torch.where(qi == 0, c, torch.where(qi == 1, -s, torch.where(qi == 2, -c, s)))
    return sv, cv


def sqrt_rn(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float32 sqrt, like C's sqrtf and CUDA's sqrtf.

    torch.sqrt on the CPU may use SLEEF's 0.5001-ulp sqrt, one ulp off at
    times. Round a float64 sqrt to float32, then fix it against the exact
    midpoints to its neighbours (25-bit values: their squares are exact in float64).
    """
    y = torch.sqrt(x.double()).float()
    up = torch.nextafter(y, torch.full_like(y, float("inf")))
    down = torch.nextafter(y, torch.zeros_like(y))
    xd, yd = x.double(), y.double()
    y = torch.where(xd < ((yd + down.double()) * 0.5) ** 2, down, y)
    return torch.where(xd > ((yd + up.double()) * 0.5) ** 2, up, y)


def box_muller(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u1 = (16777216 - (a >> 8)).to(torch.float32) * _f32(_TWO_M24, a)
    v = (b >> 8).to(torch.float32) * _f32(_TWO_M24, a)
    r = sqrt_rn(_f32(-2.0, a) * log_unit(u1))
    s, c = sincos_2pi(v)
    return r * c, r * s


def normal_rows(n: int, seed: int, stream: int, uids: torch.Tensor, step: int) -> torch.Tensor:
    """[B, n] float32: elements 0..n-1 of each uid's addressed noise."""
    blocks = torch.arange((n + 3) // 4, dtype=torch.int64, device=uids.device)
    B = uids.numel()
    ctr = [
        blocks.expand(B, -1),
        (uids.to(torch.int64) & _M32).view(B, 1).expand(-1, blocks.numel()),
        torch.full((B, blocks.numel()), step & _M32, dtype=torch.int64, device=uids.device),
        torch.full((B, blocks.numel()), stream & _M32, dtype=torch.int64, device=uids.device),
    ]
    seed &= (1 << 64) - 1
    r = philox4x32_10(ctr, (seed & _M32, seed >> 32))
    z0, z1 = box_muller(r[0], r[1])
    z2, z3 = box_muller(r[2], r[3])
    return torch.stack([z0, z1, z2, z3], dim=-1).reshape(B, -1)[:, :n]


def _per_sample(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A coefficient (one value or one per sample) shaped to broadcast over x."""
    c = c.reshape(-1).to(device=x.device, dtype=x.dtype)
    return c.view(-1, *([1] * (x.dim() - 1)))


def normal(shape, seed, stream, uids, step, dtype=None):
    B = shape[0]
    n = 1
    for s in shape[1:]:
        n *= s
    return normal_rows(n, seed, stream, uids, step).to(dtype or torch.float32).view(*shape)


def q_sample(x0, sqrt_ab, sqrt_1mab, seed, stream, uids, step):
    """DDPM eq. (4): sqrt(ab) x0 + sqrt(1-ab) z."""
    x0 = x0.contiguous()  # outputs are contiguous, like the kernels' (and the fake kernels say so)
    z = normal_rows(x0[0].numel(), seed, stream, uids, step).to(x0.dtype).view_as(x0)
    return _per_sample(sqrt_ab, x0) * x0 + _per_sample(sqrt_1mab, x0) * z


def _noise_scale(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A noise scale: one value, one per sample, or one per element (the shape of x)."""
    if sigma.dim() > 1:
        return sigma.to(device=x.device, dtype=x.dtype)
    return _per_sample(sigma, x)


def ddpm_step(x_t, eps, c_x, c_eps, sigma, seed, stream, uids, step):
    """Fused reverse step: c_x (x_t - c_eps eps) + sigma z."""
    x_t, eps = x_t.contiguous(), eps.contiguous()
    z = normal_rows(x_t[0].numel(), seed, stream, uids, step).to(x_t.dtype).view_as(x_t)
    base = _per_sample(c_x, x_t) * (x_t - _per_sample(c_eps, x_t) * eps)
    return base + _noise_scale(sigma, x_t) * z


def clipped_step(x_t, eps, a, b, c0, c1, sigma, seed, stream, uids, step):
    """Reverse step with the predicted x_0 clipped: c0 clamp(a x_t - b eps, -1, 1) + c1 x_t + sigma z."""
    x_t, eps = x_t.contiguous(), eps.contiguous()
    z = normal_rows(x_t[0].numel(), seed, stream, uids, step).to(x_t.dtype).view_as(x_t)
    x0 = torch.clamp(_per_sample(a, x_t) * x_t - _per_sample(b, x_t) * eps, -1.0, 1.0)
    return _per_sample(c0, x_t) * x0 + _per_sample(c1, x_t) * x_t + _noise_scale(sigma, x_t) * z


def rbgm(g, seed, stream, uids, step):
    """Per row (image channel): sorted addressed Gaussian laid out in g's rank order."""
    g = g.contiguous()
    B = g.shape[0]
    L = g[0, 0].numel() if g.dim() >= 3 else g[0].numel()
    rows = g.reshape(B, -1, L)
    z = normal_rows(g[0].numel(), seed, stream, uids, step).view(B, -1, L)
    order = torch.sort(rows, dim=-1, stable=True).indices
    out = torch.empty_like(rows)
    out.scatter_(-1, order, torch.sort(z, dim=-1).values.to(g.dtype))
    return out.view_as(g)
