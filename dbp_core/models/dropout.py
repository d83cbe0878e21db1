"""Dropout with addressed masks (docs/science.md, "Addressed dropout").

``nn.Dropout`` draws its masks from torch's global generator in batch order, so a mask depends
on which examples share the batch, on the number of processes and on what ran before. Inside
:func:`dropout_addresses`, an :class:`AddressedDropout` keeps element ``e`` of example ``uid``
when the addressed normal ``z(seed, stream, uid, layer, e)`` is at least ``Phi^-1(p)`` — an
event of probability ``1 - p`` — and scales the kept values by ``1 / (1 - p)``, as
``nn.Dropout`` does. ``layer`` counts the dropout calls of one forward pass in order, so every
layer draws its own mask. Outside the context (or in eval mode, or at ``p = 0``) it is a plain
``nn.Dropout``.

:func:`set_dropout` gives every dropout layer of a network the probability ``p`` and makes it
addressed: the authors' ADDT script sets every ``nn.Dropout`` of the UNet to 0.1 for training.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Iterator

import torch
from torch import nn

from .. import ops

__all__ = ["AddressedDropout", "dropout_addresses", "set_dropout"]


@dataclass
class _Addresses:
    seed: int
    stream: int
    uids: torch.Tensor
    calls: int = field(default=0)


_CURRENT: contextvars.ContextVar[_Addresses | None] = contextvars.ContextVar("dbp_dropout", default=None)


@contextlib.contextmanager
def dropout_addresses(seed: int, stream: int, uids: torch.Tensor) -> Iterator[None]:
    """Addressed dropout masks for one forward pass over a batch with dataset ids ``uids``.
    Use a distinct ``seed`` per forward pass (e.g. ``derive_seed(run_seed, step, pass)``)."""
    token = _CURRENT.set(_Addresses(int(seed), int(stream), uids))
    try:
        yield
    finally:
        _CURRENT.reset(token)


class AddressedDropout(nn.Dropout):
    """``nn.Dropout`` whose masks are addressed by example uid inside :func:`dropout_addresses`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        where = _CURRENT.get()
        if not self.training or self.p == 0.0 or where is None:
            return super().forward(x)
        if self.p >= 1.0:
            return torch.zeros_like(x)
        if where.uids.numel() != x.shape[0]:
            raise ValueError(f"addressed dropout: the batch has {x.shape[0]} rows but {where.uids.numel()} uids")
        layer = where.calls
        where.calls += 1
        z = ops.normal(tuple(x.shape), where.seed, where.stream, where.uids.to(x.device), layer, torch.float32)
        keep = z >= NormalDist().inv_cdf(self.p)  # P(z >= Phi^-1(p)) = 1 - p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


def set_dropout(model: nn.Module, p: float) -> int:
    """Replace every ``nn.Dropout`` of ``model`` by an :class:`AddressedDropout` of probability
    ``p``; returns how many layers there were (0: the network has no dropout to set)."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout):
                setattr(parent, name, AddressedDropout(p, inplace=False))
                count += 1
    return count
