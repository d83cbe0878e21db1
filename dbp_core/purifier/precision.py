"""The arithmetic the noise-prediction network runs in (``[purifier] precision``; docs/science.md,
"Network precision").

* ``fp32`` — the network as it is (default: the exact gradient is the point of dbp-lab);
* ``bf16`` — the network under ``torch.autocast(dtype=torch.bfloat16)`` (CPU and GPU): matmuls and
  convolutions in bfloat16, its output cast back to the chain's dtype;
* ``tf32`` — the network with TF32 matmuls and convolutions (CUDA only: Ampere and later).

Only the network changes; the chain's steps (the fused ops), the noise and the classifier stay in
the chain's dtype. The backward's recomputation of a step runs under the same context, so
``checkpoint`` and ``segments`` give the gradient of the same function as ``full``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .registry import PRECISIONS

__all__ = ["PRECISIONS", "network_precision", "check_precision"]


def check_precision(precision: str, device_type: str | None = None) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "tf32" and device_type not in (None, "cuda"):
        raise ValueError(f"precision 'tf32' is a CUDA matmul mode; on {device_type!r} use 'bf16' or 'fp32'")


@contextlib.contextmanager
def network_precision(precision: str, device_type: str) -> Iterator[None]:
    """The context the network's forward runs in on ``device_type`` for ``precision``."""
    check_precision(precision, device_type)
    if precision == "bf16":
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            yield
    elif precision == "tf32":
        matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    else:
        yield
