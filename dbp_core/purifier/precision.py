"""The arithmetic the noise-prediction network runs in (``[purifier] precision``; docs/science.md,
"Network precision").

* ``fp32`` — the network as it is (default: the exact gradient is the point of dbp-lab);
* ``bf16`` — the network under ``torch.autocast(dtype=torch.bfloat16)`` (CPU and GPU): matmuls and
  convolutions in bfloat16, its output cast back to the chain's dtype;
* ``tf32`` — the network with TF32 matmuls and convolutions (CUDA only: Ampere and later).

Only the network changes; the chain's steps (the fused ops), the noise and the classifier stay in
the chain's dtype. The backward's recomputation of a step runs under the same context, so
``checkpoint`` and ``segments`` give the gradient of the same function as ``full``.

``compiled_network`` is ``[purifier] compile``: the network through ``torch.compile`` (same
arithmetic, fused kernels; docs/performance.md, "Performance", for what it buys on the CPU).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .registry import PRECISIONS

__all__ = ["PRECISIONS", "network_precision", "check_precision", "compiled_network"]


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


def compiled_network(net):
    """``torch.compile`` of the noise network (inductor; dynamic batch sizes, since the chain's micro-batches
    and EOT change them). Errors in compilation surface at the first call, naming ``purifier.compile``."""
    try:
        compiled = torch.compile(net, dynamic=None)
    except Exception as exc:  # e.g. an unsupported Python version
        raise RuntimeError(f"purifier.compile = true: torch.compile is not available here ({exc}); "
                           "set purifier.compile = false") from exc
    return _Compiled(compiled)


class _Compiled:
    """Calls the compiled network; a failure to compile names the option that asked for it."""

    def __init__(self, compiled):
        self.compiled = compiled

    def __call__(self, x, t):
        try:
            return self.compiled(x, t)
        except Exception as exc:
            if type(exc).__module__.startswith("torch._dynamo") or type(exc).__module__.startswith("torch._inductor"):
                raise RuntimeError(f"purifier.compile = true: torch.compile failed on this machine "
                                   f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                   "set purifier.compile = false") from exc
            raise
