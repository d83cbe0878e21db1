"""Plugin networks: a classifier or a diffusion model named by an import path (docs/plugins.md).

The factory is called with no arguments and must return an ``nn.Module``. Every output of the
module is then checked by a forward hook (the module itself is left as it is: ADDT fine-tunes
and saves a plugin diffusion model as its own class):

* a classifier ``f(x01) -> logits``: a floating tensor [B, classes] for a batch of B images,
  ``classes`` the dataset's, finite;
* a diffusion model ``eps_model(x_t, t)``: a floating tensor of x_t's shape (or with twice its
  channels: [eps, v] for a learned variance), finite.

A dataset plugin's return value is checked once (:func:`check_dataset`).

A violation is a :class:`~dbp_core.plugins.PluginError` naming the field, the import path and
what was measured.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..plugins import PluginError, resolve_import_path

__all__ = ["build_plugin_model", "check_logits", "check_eps", "check_dataset", "watch_outputs"]


def _what(role: str, ref: str) -> str:
    return f"models.{role} = '{ref}'"


def build_plugin_model(ref: str, role: str) -> nn.Module:
    """The module the factory ``ref`` returns (called with no arguments); PluginError if it raises
    or returns something else than an ``nn.Module``."""
    factory = resolve_import_path(ref)
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 — the user's factory: say whose it is
        raise PluginError(f"{_what(role, ref)}: calling it raised {type(exc).__name__}: {exc}; expected a factory "
                          "that returns a torch.nn.Module") from exc
    if not isinstance(model, nn.Module):
        raise PluginError(f"{_what(role, ref)} returned {type(model).__name__}; expected a torch.nn.Module")
    return model


def _finite(out: torch.Tensor, what: str, produced: str) -> None:
    bad = int((~torch.isfinite(out.detach())).sum())
    if bad:
        raise PluginError(f"{what} returned {bad} NaN/inf value(s) of {out.numel()} {produced}; expected finite values")


def check_logits(x: torch.Tensor, out: Any, classes: int, what: str) -> None:
    """PluginError unless ``out`` is finite floating logits [x.shape[0], classes]."""
    if not isinstance(out, torch.Tensor):
        raise PluginError(f"{what} returned {type(out).__name__}; expected logits, a tensor [B, {classes}]")
    if not out.is_floating_point():
        raise PluginError(f"{what} returned logits of dtype {out.dtype}; expected floating-point logits")
    if out.dim() != 2 or out.shape[0] != x.shape[0] or out.shape[1] != classes:
        raise PluginError(f"{what} returned logits of shape {tuple(out.shape)} for a batch of {x.shape[0]}; "
                          f"expected [{x.shape[0]}, {classes}] ({classes} classes in the dataset)")
    _finite(out, what, "logits")


def check_eps(x_t: torch.Tensor, out: Any, what: str) -> None:
    """PluginError unless ``out`` is finite floating-point of x_t's shape (or with twice its channels)."""
    if not isinstance(out, torch.Tensor):
        raise PluginError(f"{what} returned {type(out).__name__}; expected a tensor of x_t's shape {tuple(x_t.shape)}")
    if not out.is_floating_point():
        raise PluginError(f"{what} returned dtype {out.dtype}; expected a floating-point tensor")
    ok = out.dim() == x_t.dim() and out.shape[0] == x_t.shape[0] and out.shape[2:] == x_t.shape[2:] \
        and out.shape[1] in (x_t.shape[1], 2 * x_t.shape[1])
    if not ok:
        raise PluginError(f"{what} returned shape {tuple(out.shape)} for x_t of shape {tuple(x_t.shape)}; expected "
                          f"{tuple(x_t.shape)} (eps), or twice the channels for a learned variance ([eps, v])")
    _finite(out, what, "outputs")


def watch_outputs(model: nn.Module, check: Callable[[torch.Tensor, Any], None]) -> nn.Module:
    """``model`` with a forward hook that calls ``check(first input, output)`` on every call."""
    model.register_forward_hook(lambda _module, args, out: check(args[0], out) if args else None)
    return model


def check_dataset(data: Any, what: str) -> Any:
    """``data`` if it is what a dataset plugin must return: ``x`` float [N, C, H, W] in [0, 1], ``y``
    integer class indices [N] in [0, num_classes), ``uids`` integers [N] without repeats, ``num_classes``
    a positive integer; else PluginError naming what is wrong."""
    missing = [a for a in ("x", "y", "uids", "num_classes") if not hasattr(data, a)]
    if missing:
        raise PluginError(f"{what} returned {type(data).__name__} without {', '.join(missing)}; expected an object "
                          "with x [N, C, H, W] in [0, 1], y [N], uids [N] and num_classes")
    x, y, uids, classes = data.x, data.y, data.uids, data.num_classes
    for name, v in (("x", x), ("y", y), ("uids", uids)):
        if not isinstance(v, torch.Tensor):
            raise PluginError(f"{what}: `{name}` is {type(v).__name__}; expected a torch tensor")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise PluginError(f"{what}: num_classes = {classes!r}; expected a positive integer")
    n = x.shape[0] if x.dim() else -1
    if x.dim() != 4 or not x.is_floating_point():
        raise PluginError(f"{what}: x has shape {tuple(x.shape)} and dtype {x.dtype}; expected floating images "
                          "[N, C, H, W]")
    for name, v in (("y", y), ("uids", uids)):
        if v.dim() != 1 or v.shape[0] != n or v.is_floating_point() or v.dtype == torch.bool:
            raise PluginError(f"{what}: `{name}` has shape {tuple(v.shape)} and dtype {v.dtype}; expected {n} "
                              "integers (one per image)")
    if n and (not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1):
        raise PluginError(f"{what}: x has values outside [0, 1] (min {float(x.min()):.4g}, max {float(x.max()):.4g}); "
                          "expected images scaled to [0, 1]")
    if n and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise PluginError(f"{what}: y has labels in [{int(y.min())}, {int(y.max())}]; expected [0, {classes - 1}] "
                          f"(num_classes = {classes})")
    if n and int(torch.unique(uids).numel()) != n:
        raise PluginError(f"{what}: uids repeat; expected one distinct uid per image (the noise is addressed by uid)")
    return data
