"""Tiny deterministic eps models for the diffusion / purifier tests."""
import torch
from torch import nn


class TinyEps(nn.Module):
    """A small time-conditioned conv net (float64 by default), per-sample computation."""

    def __init__(self, channels=1, hidden=4, dtype=torch.float64, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(channels, hidden, 3, padding=1).to(dtype)
        self.c2 = nn.Conv2d(hidden, channels, 3, padding=1).to(dtype)
        self.tw = nn.Parameter(torch.randn(hidden, generator=g, dtype=dtype))
        with torch.no_grad():
            for p in (*self.c1.parameters(), *self.c2.parameters()):
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=dtype))

    def forward(self, x, t):
        h = self.c1(x) + (t.to(x.dtype) / 1000.0)[:, None, None, None] * self.tw[None, :, None, None]
        return self.c2(torch.tanh(h))


class OracleEps(nn.Module):
    """The exact noise predictor for a single known clean image x0 (in [-1, 1])."""

    def __init__(self, x0, alpha_bar):
        super().__init__()
        self.x0, self.ab = x0, alpha_bar

    def forward(self, x, t):
        ab = self.ab.to(x.dtype)[t].view(-1, *([1] * (x.dim() - 1)))
        return (x - ab.sqrt() * self.x0) / (1 - ab).sqrt()


class LearnedEps(TinyEps):
    """A guided-diffusion style network (``learn_sigma``): outputs [eps, v], v in (-1, 1)."""

    learned_variance = True

    def __init__(self, channels=1, hidden=4, dtype=torch.float64, seed=0):
        super().__init__(channels, hidden, dtype, seed)
        g = torch.Generator().manual_seed(seed + 1)
        self.cv = nn.Conv2d(hidden, channels, 3, padding=1).to(dtype)
        with torch.no_grad():
            for p in self.cv.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=dtype))

    def forward(self, x, t):
        h = torch.tanh(self.c1(x) + (t.to(x.dtype) / 1000.0)[:, None, None, None] * self.tw[None, :, None, None])
        return torch.cat([self.c2(h), torch.tanh(self.cv(h))], dim=1)


class ContinuousEps(TinyEps):
    """A score_sde style network: conditioned on continuous time t in [0, 1] (its label 999 t)."""

    continuous_time = True

    def forward(self, x, t):
        assert t.is_floating_point(), "a continuous-time network gets float times"
        return super().forward(x, 999.0 * t)
