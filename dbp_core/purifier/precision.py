"""The noise network's arithmetic (``purifier.precision``) and its compilation (``purifier.compile``);
docs/science.md, "Mixed precision".

* ``fp32`` — the network in its own dtype (the default: the exact gradient is the point).
* ``bf16`` — the network under ``torch.autocast(dtype=torch.bfloat16)`` on the CPU or a GPU; its output
  is cast back to the state's dtype, so the sampler's step arithmetic stays in float32/float64.
* ``tf32`` — CUDA only: matmuls and convolutions with TF32 tensor cores (``allow_tf32``), restored after
  the call.

Autocast sits inside each reverse step, so the checkpointed chain replays exactly the computation of
the forward (an autocast region around the whole purifier would force the slower per-step
``torch.utils.checkpoint`` path).
"""
from __future__ import annotations

import contextlib

import torch

from .registry import PRECISIONS

__all__ = ["PRECISIONS", "network_precision", "compiled_network"]


@contextlib.contextmanager
def _tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def network_precision(precision: str, device: torch.device):
    """The context a network call runs in for ``precision`` on ``device``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "tf32":
        if device.type != "cuda":
            raise ValueError(f"purifier.precision = 'tf32' is a CUDA tensor-core mode; on {device.type} use "
                             "'fp32' or 'bf16'")
        return _tf32()
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


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
