"""Plugins that break the plugin contract (docs/plugins.md), for tests/test_plugin_contract.py.

``check_*`` plugins misbehave at once (``dbp check`` must refuse them); ``late_*`` ones behave on the
two examples ``dbp check`` calls them on (uids 0 and 1, or a batch of 2) and misbehave in the run, so
the run's own checks must catch them. A random-start FGSM draws from the global generators of torch,
numpy and Python: the run must be reproducible all the same.
"""
from __future__ import annotations

import os
import random
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F

from tests.plugins import QuadrantClassifier, TinyEps


def _late(uids) -> bool:
    return int(uids.min()) >= 2


def random_start_fgsm(model, x, y, uids, cfg):
    """FGSM from a random start drawn from the global generators (torch, numpy, Python)."""
    delta = (torch.rand(x.shape) * 2 - 1) * cfg.eps * 0.5
    delta = delta * float(np.random.uniform(0.5, 1.0)) * random.uniform(0.5, 1.0)
    x0 = (x + delta).clamp(0, 1).requires_grad_(True)
    loss = F.cross_entropy(model(x0, uids), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x0)
    return torch.min(torch.max(x0 + cfg.eps * grad.sign(), x - cfg.eps), x + cfg.eps).clamp(0, 1).detach()


def late_wrong_shape(model, x, y, uids, cfg):
    return x[:, :, :4] if _late(uids) else x


def late_nan(model, x, y, uids, cfg):
    return x * float("nan") if _late(uids) else x


def late_int64(model, x, y, uids, cfg):
    return (x * 255).long() if _late(uids) else x


def late_outside(model, x, y, uids, cfg):
    return x + 5 if _late(uids) else x


def late_outside_ball(model, x, y, uids, cfg):
    """In [0, 1] but 3 eps away: outside the threat model."""
    return (x + 3 * cfg.eps).clamp(0, 1) if _late(uids) else x


def late_none(model, x, y, uids, cfg):
    return None if _late(uids) else x


def late_os_exit(model, x, y, uids, cfg):
    if _late(uids):
        os._exit(0)
    return x


def late_os_exit_thread(model, x, y, uids, cfg):
    if _late(uids):
        t = threading.Thread(target=os._exit, args=(0,), name="plugin-thread")
        t.start()
        t.join()
    return x


class _Logits(QuadrantClassifier):
    """Right on a batch of 2 (dbp check), wrong on the run's larger batches."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how

    def forward(self, x):
        out = super().forward(x)
        if x.shape[0] <= 2:
            return out
        if self.how == "classes":
            return out[:, :3]
        if self.how == "rows":
            return out[:1]
        if self.how == "nan":
            return out * float("nan")
        return out.round().long()


def late_three_logits():
    return _Logits("classes")


def late_one_row():
    return _Logits("rows")


def late_nan_logits():
    return _Logits("nan")


def late_int_logits():
    return _Logits("int")


class _Raising(QuadrantClassifier):
    def forward(self, x):
        raise RuntimeError("the classifier plugin fails on its first batch")


def check_raising_classifier():
    return _Raising()


class _ThreeAlways(QuadrantClassifier):
    def forward(self, x):
        return super().forward(x)[:, :3]


def check_three_logits_always():
    return _ThreeAlways()


class _NaNAlways(QuadrantClassifier):
    def forward(self, x):
        return super().forward(x) * float("nan")


def check_nan_classifier():
    return _NaNAlways()


class _HalfEps(TinyEps):
    def forward(self, x_t, t):
        return super().forward(x_t, t)[:, :, :4]


def check_wrong_shape_eps():
    return _HalfEps()


def check_none_factory():
    return None


class _CountingEps(TinyEps):
    """The tiny eps model that counts its calls (class-wide: the run builds its own instance)."""

    calls = 0

    def forward(self, x_t, t):
        _CountingEps.calls += 1
        return super().forward(x_t, t)


def counting_eps():
    return _CountingEps()


class _Hanging(QuadrantClassifier):
    """Writes ``$DBP_TEST_HANG_MARK`` on its first call, then never returns (a plugin stuck in a loop)."""

    def forward(self, x):
        mark = os.environ.get("DBP_TEST_HANG_MARK")
        if mark:
            with open(mark, "w") as fh:
                fh.write("calling")
        while True:
            time.sleep(0.01)


def hanging_classifier():
    return _Hanging()
