"""Tiny models and data for tests, loaded through import paths (``tests.plugins:...``).

They need no trained weights and no dataset module: a test config names them with
``models.classifier = "tests.plugins:tiny_classifier"`` etc.
"""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

import torch
from torch import nn


def tiny_dataset(split: str = "test", root: str | None = None, n: int = 240):
    """A deterministic 1x8x8 image set with 4 classes (brightness quadrant = label)."""
    g = torch.Generator().manual_seed(1234 if split == "test" else 4321)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    for i in range(n):
        r, c = divmod(int(y[i]), 2)
        x[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 0.12
    return SimpleNamespace(x=x.clamp(0, 1), y=y, uids=torch.arange(n, dtype=torch.int64), num_classes=4,
                           name="tiny")


class QuadrantClassifier(nn.Module):
    """Scores each class by the mean brightness of its quadrant, plus a fixed random layer."""

    def __init__(self, delay: float = 0.0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.mix = nn.Linear(4, 4)
        with torch.no_grad():
            self.mix.weight.copy_(torch.eye(4) * 8 + 0.5 * torch.randn(4, 4, generator=g))
            self.mix.bias.zero_()
        self.delay = delay

    def forward(self, x):
        if self.delay:
            time.sleep(self.delay)
        q = nn.functional.avg_pool2d(x.mean(1, keepdim=True), 4).flatten(1)  # [N, 4] quadrants
        return self.mix(q)


def tiny_classifier():
    return QuadrantClassifier()


def slow_classifier():
    """Sleeps per call (DBP_TEST_DELAY seconds, default 0.05) so a run can be killed mid-way."""
    return QuadrantClassifier(delay=float(os.environ.get("DBP_TEST_DELAY", "0.05")))


class TinyEps(nn.Module):
    """A tiny eps model eps(x_t, t) with fixed random weights."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.mul_(0.1)

    def forward(self, x_t, t):
        return self.conv(x_t)


def tiny_eps():
    return TinyEps()


def identity_attack(model, x, y, uids, cfg=None):
    return x


NOT_CALLABLE = 42


class _Failing(QuadrantClassifier):
    def __init__(self, after: int):
        super().__init__()
        self.calls, self.after = 0, after

    def forward(self, x):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("plugin classifier exploded on purpose")
        return super().forward(x)


def failing_classifier():
    """Works for 3 calls, then raises: a run that fails mid-way."""
    return _Failing(after=3)


def tiny_unet():
    """Our UNet at its smallest: ADDT can fine-tune it and save it back in our format."""
    from dbp_core.models.unet import UNet, UNetConfig
    torch.manual_seed(0)
    return UNet(UNetConfig(in_channels=1, base_channels=8, channel_mult=(1,), attention=False, groups=4)).eval()


class _Gated(QuadrantClassifier):
    """Runs freely until a run of the store ``$DBP_TEST_GATE_RUNS`` has written its first attack
    point, then waits while the file ``$DBP_TEST_GATE`` exists (at most 5 minutes): a test sees the
    first points of a live run, then lets it finish — with no timing in the test."""

    def forward(self, x):
        gate, runs = os.environ.get("DBP_TEST_GATE"), os.environ.get("DBP_TEST_GATE_RUNS")
        if gate and runs:
            from pathlib import Path
            deadline = time.monotonic() + 300
            while os.path.exists(gate) and time.monotonic() < deadline and any(
                    '"attack_iter"' in p.read_text() for p in Path(runs).glob("*/metrics.jsonl")):
                time.sleep(0.02)
        return super().forward(x)


def gated_classifier():
    return _Gated()
