"""The Python face of the ``dbp`` custom ops (docs/design.md, "Layers").

``torch.ops.dbp.{normal, q_sample, ddpm_step, clipped_step, rbgm}`` come from the compiled
extension ``dbp_core._C`` (CPU kernels, plus CUDA kernels when built with
CUDA). Without it, the same schemas are defined here with the pure-PyTorch
reference (``dbp_core.ops.reference``) as their kernel, after one warning. Either
way this module registers the autograd formulas and fake kernels, so callers
never see the difference except in speed; ``backend()`` says which is live.

Addresses: every noise value is a function of (seed, stream, uid, step,
element) only — see ``csrc/include/philox.h``. ``uids`` names each sample of
the batch (its dataset index), never its position in the batch.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch

from . import reference as ref

SCHEMAS = {
    "normal": "(int[] shape, int seed, int stream, Tensor uids, int step, ScalarType? dtype=None) -> Tensor",
    "q_sample": "(Tensor x0, Tensor sqrt_ab, Tensor sqrt_1mab, int seed, int stream, Tensor uids, int step) -> Tensor",
    "ddpm_step": "(Tensor x_t, Tensor eps, Tensor c_x, Tensor c_eps, Tensor sigma, int seed, int stream, "
    "Tensor uids, int step) -> Tensor",
    "clipped_step": "(Tensor x_t, Tensor eps, Tensor a, Tensor b, Tensor c0, Tensor c1, Tensor sigma, int seed, "
    "int stream, Tensor uids, int step) -> Tensor",
    "rbgm": "(Tensor g, int seed, int stream, Tensor uids, int step) -> Tensor",
}

_EXTENSION_ERROR: str | None = None
try:
    from .. import _C  # noqa: F401  (loading the library registers the ops)
except ImportError as exc:  # not built: fall back to the reference
    _EXTENSION_ERROR = str(exc)


def backend() -> str:
    """Which implementation is live: 'extension (cpu)', 'extension (cpu, cuda)' or 'reference'."""
    if _EXTENSION_ERROR is not None:
        return "reference"
    has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("dbp::q_sample", "CUDA")
    return "extension (cpu, cuda)" if has_cuda else "extension (cpu)"


# --- argument checks of the fallback (the extension checks in csrc/include/checks.h) ---

def _fail(op: str, msg: str):
    raise ValueError(f"dbp.{op}: {msg}")


def _check_images(x: torch.Tensor, op: str, name: str):
    if x.dtype not in (torch.float32, torch.float64):
        _fail(op, f"argument '{name}' must be float32 or float64, got {x.dtype}")
    if x.dim() < 1 or x.shape[0] == 0 or x.numel() == 0:
        _fail(op, f"argument '{name}' must be a non-empty batch (first dimension = samples), got shape {list(x.shape)}")


def _check_uids(uids: torch.Tensor, batch: int, device: torch.device, op: str):
    if uids.dtype != torch.int64:
        _fail(op, f"argument 'uids' must be int64 sample ids, got {uids.dtype}")
    if uids.dim() != 1 or uids.numel() != batch:
        _fail(op, f"argument 'uids' must be 1-D with one id per sample ({batch}), got shape {list(uids.shape)}")
    if uids.device != device:
        _fail(op, f"argument 'uids' must be on {device} like the data, got {uids.device}")


def _check_address(stream: int, step: int, op: str):
    for name, v in (("stream", stream), ("step", step)):
        if not 0 <= v < 2**32:
            _fail(op, f"argument '{name}' must be in [0, 2^32), got {v}")


def _check_coefficient(c: torch.Tensor, x: torch.Tensor, op: str, name: str):
    if not c.is_floating_point():
        _fail(op, f"argument '{name}' must be a floating tensor, got {c.dtype}")
    if not (c.numel() == 1 or (c.dim() == 1 and c.numel() == x.shape[0])):
        _fail(op, f"argument '{name}' must hold one value or one per sample ({x.shape[0]}), got shape {list(c.shape)}")
    if not bool(torch.isfinite(c).all()):
        _fail(op, f"argument '{name}' must be finite, got {c.cpu()}")


def _check_noise_scale(c: torch.Tensor, x: torch.Tensor, op: str, name: str):
    """sigma: one value, one per sample, or one per element (checks.h, noise_scale)."""
    if c.dim() > 1:
        if c.shape != x.shape:
            _fail(op, f"argument '{name}' must hold one value, one per sample ({x.shape[0]}) or one per element "
                  f"(shape {list(x.shape)}), got shape {list(c.shape)}")
        if not c.is_floating_point():
            _fail(op, f"argument '{name}' must be a floating tensor, got {c.dtype}")
        if not bool(torch.isfinite(c).all()):
            _fail(op, f"argument '{name}' must be finite")
        if c.device != x.device:
            _fail(op, f"argument '{name}' must be on {x.device} like the data, got {c.device}")
        return
    _check_coefficient(c, x, op, name)


def _check_step_inputs(op: str, x_t: torch.Tensor, eps: torch.Tensor, uids: torch.Tensor, stream: int, step: int):
    _check_images(x_t, op, "x_t")
    if eps.shape != x_t.shape or eps.dtype != x_t.dtype or eps.device != x_t.device:
        _fail(op, f"argument 'eps' must match 'x_t' (shape {list(x_t.shape)}, {x_t.dtype}, "
              f"{x_t.device}), got shape {list(eps.shape)}, {eps.dtype}, {eps.device}")
    _check_uids(uids, x_t.shape[0], x_t.device, op)
    _check_address(stream, step, op)


def _define_reference_ops():
    """Define the dbp ops with the reference as kernel (extension not built)."""
    lib = torch.library.Library("dbp", "DEF")
    for name, schema in SCHEMAS.items():
        lib.define(name + schema)

    def normal_impl(shape, seed, stream, uids, step, dtype=None):
        if len(shape) == 0 or shape[0] != uids.numel():
            _fail("normal", f"argument 'shape' must start with the number of uids ({uids.numel()}), got {list(shape)}")
        if any(d <= 0 for d in shape):
            _fail("normal", f"argument 'shape' must have positive dimensions, got {list(shape)}")
        _check_uids(uids, shape[0], uids.device, "normal")
        _check_address(stream, step, "normal")
        if (dtype or torch.float32) not in (torch.float32, torch.float64) or 0 in shape:
            _fail("normal", f"argument 'shape/dtype' must be a non-empty float32/float64 batch, got {list(shape)}, {dtype}")
        return ref.normal(shape, seed, stream, uids, step, dtype)

    def q_sample_impl(x0, sqrt_ab, sqrt_1mab, seed, stream, uids, step):
        _check_images(x0, "q_sample", "x0")
        _check_uids(uids, x0.shape[0], x0.device, "q_sample")
        _check_address(stream, step, "q_sample")
        _check_coefficient(sqrt_ab, x0, "q_sample", "sqrt_ab")
        _check_coefficient(sqrt_1mab, x0, "q_sample", "sqrt_1mab")
        return ref.q_sample(x0, sqrt_ab, sqrt_1mab, seed, stream, uids, step)

    def ddpm_step_impl(x_t, eps, c_x, c_eps, sigma, seed, stream, uids, step):
        _check_step_inputs("ddpm_step", x_t, eps, uids, stream, step)
        for c, n in ((c_x, "c_x"), (c_eps, "c_eps")):
            _check_coefficient(c, x_t, "ddpm_step", n)
        _check_noise_scale(sigma, x_t, "ddpm_step", "sigma")
        return ref.ddpm_step(x_t, eps, c_x, c_eps, sigma, seed, stream, uids, step)

    def clipped_step_impl(x_t, eps, a, b, c0, c1, sigma, seed, stream, uids, step):
        _check_step_inputs("clipped_step", x_t, eps, uids, stream, step)
        for c, n in ((a, "a"), (b, "b"), (c0, "c0"), (c1, "c1")):
            _check_coefficient(c, x_t, "clipped_step", n)
        _check_noise_scale(sigma, x_t, "clipped_step", "sigma")
        return ref.clipped_step(x_t, eps, a, b, c0, c1, sigma, seed, stream, uids, step)

    def rbgm_impl(g, seed, stream, uids, step):
        _check_images(g, "rbgm", "g")
        _check_uids(uids, g.shape[0], g.device, "rbgm")
        _check_address(stream, step, "rbgm")
        if not bool(torch.isfinite(g).all()):
            _fail("rbgm", "argument 'g' must be finite (it is ranked)")
        return ref.rbgm(g, seed, stream, uids, step)

    for name, fn in (("normal", normal_impl), ("q_sample", q_sample_impl),
                     ("ddpm_step", ddpm_step_impl), ("clipped_step", clipped_step_impl), ("rbgm", rbgm_impl)):
        lib.impl(name, fn, "CompositeExplicitAutograd")
    return lib


if _EXTENSION_ERROR is not None:
    warnings.warn(
        f"dbp_core._C is not built ({_EXTENSION_ERROR}); using the pure-PyTorch reference ops, which are "
        "exact but slow. Build it with: pip install -e . --no-build-isolation",
        RuntimeWarning,
        stacklevel=2,
    )
    _REFERENCE_LIB = _define_reference_ops()


# --- fake kernels (shape propagation for torch.compile / meta tensors) ---

@torch.library.register_fake("dbp::normal")
def _normal_fake(shape, seed, stream, uids, step, dtype=None):
    return uids.new_empty(shape, dtype=dtype or torch.float32)


@torch.library.register_fake("dbp::q_sample")
def _q_sample_fake(x0, sqrt_ab, sqrt_1mab, seed, stream, uids, step):
    return torch.empty_like(x0, memory_format=torch.contiguous_format)


@torch.library.register_fake("dbp::ddpm_step")
def _ddpm_step_fake(x_t, eps, c_x, c_eps, sigma, seed, stream, uids, step):
    return torch.empty_like(x_t, memory_format=torch.contiguous_format)


@torch.library.register_fake("dbp::clipped_step")
def _clipped_step_fake(x_t, eps, a, b, c0, c1, sigma, seed, stream, uids, step):
    return torch.empty_like(x_t, memory_format=torch.contiguous_format)


@torch.library.register_fake("dbp::rbgm")
def _rbgm_fake(g, seed, stream, uids, step):
    return torch.empty_like(g, memory_format=torch.contiguous_format)


# --- autograd: backward passes are scalings; the noise is never saved ---

def _per_sample(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return c.reshape(-1).to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


def _constant_coefficients(op: str, inputs, names: dict[int, str]):
    """Coefficients are schedule constants: refuse one that asks for a gradient rather than drop it."""
    for i, name in names.items():
        if inputs[i].requires_grad:
            _fail(op, f"argument '{name}' requires grad, but coefficients are constants of the schedule "
                  "(no gradient flows to them); pass it detached")


def _q_sample_setup(ctx, inputs, output):
    _constant_coefficients("q_sample", inputs, {1: "sqrt_ab", 2: "sqrt_1mab"})
    ctx.save_for_backward(inputs[1])  # sqrt_ab: one scalar per sample


def _q_sample_backward(ctx, grad):
    (sqrt_ab,) = ctx.saved_tensors
    return grad * _per_sample(sqrt_ab, grad), None, None, None, None, None, None


def _save_noise_address(ctx, inputs, sigma_at: int):
    """A sigma that requires grad gets g z: keep the noise's address (never the noise) to regenerate it."""
    sigma = inputs[sigma_at]
    ctx.sigma_shape = sigma.shape if sigma.requires_grad else None
    if sigma.requires_grad:
        ctx.address = inputs[sigma_at + 1], inputs[sigma_at + 2], inputs[sigma_at + 4]  # seed, stream, step
        ctx.uids = inputs[sigma_at + 3]


def _sigma_grad(ctx, grad):
    """d/d sigma of sigma z: g z, summed to sigma's shape (one value, one per sample or per element)."""
    if ctx.sigma_shape is None or not ctx.needs_input_grad[-5]:
        return None
    seed, stream, step = ctx.address
    z = torch.ops.dbp.normal(list(grad.shape), seed, stream, ctx.uids, step, grad.dtype)
    gz = grad * z
    if len(ctx.sigma_shape) > 1:
        return gz
    per = gz.reshape(gz.shape[0], -1).sum(1)
    return per if ctx.sigma_shape.numel() > 1 else per.sum().reshape(ctx.sigma_shape)


def _ddpm_step_setup(ctx, inputs, output):
    _constant_coefficients("ddpm_step", inputs, {2: "c_x", 3: "c_eps"})
    ctx.save_for_backward(inputs[2], inputs[3])  # c_x, c_eps
    _save_noise_address(ctx, inputs, 4)


def _ddpm_step_backward(ctx, grad):
    c_x, c_eps = ctx.saved_tensors
    g_x = grad * _per_sample(c_x, grad)
    return g_x, -(g_x * _per_sample(c_eps, grad)), None, None, _sigma_grad(ctx, grad), None, None, None, None


def _clipped_step_setup(ctx, inputs, output):
    _constant_coefficients("clipped_step", inputs, {2: "a", 3: "b", 4: "c0", 5: "c1"})
    ctx.save_for_backward(*inputs[:6])  # x_t, eps (already alive: the network's input and output), a, b, c0, c1
    _save_noise_address(ctx, inputs, 6)


def _clipped_step_backward(ctx, grad):
    """x0 = clamp(a x - b eps, -1, 1) passes the gradient where -1 <= a x - b eps <= 1 (as torch.clamp)."""
    x, eps, a, b, c0, c1 = ctx.saved_tensors
    a, b, c0, c1 = (_per_sample(c, grad) for c in (a, b, c0, c1))
    u = a * x - b * eps  # the kernel's rounding: the mask is the forward's
    g0 = torch.where((u >= -1.0) & (u <= 1.0), grad * c0, torch.zeros_like(grad))
    g_x = grad * c1 + g0 * a if ctx.needs_input_grad[0] else None
    g_eps = -(g0 * b) if ctx.needs_input_grad[1] else None
    return g_x, g_eps, None, None, None, None, _sigma_grad(ctx, grad), None, None, None, None


def _rbgm_backward(ctx, grad):
    # CGPO treats RBGM as a projection: no gradient flows through the ranking.
    return None, None, None, None, None


torch.library.register_autograd("dbp::q_sample", _q_sample_backward, setup_context=_q_sample_setup)
torch.library.register_autograd("dbp::ddpm_step", _ddpm_step_backward, setup_context=_ddpm_step_setup)
torch.library.register_autograd("dbp::clipped_step", _clipped_step_backward, setup_context=_clipped_step_setup)
torch.library.register_autograd("dbp::rbgm", _rbgm_backward, setup_context=lambda ctx, inputs, output: None)


# --- the functions callers use ---

def _signed64(seed: int) -> int:
    """Seeds are 64-bit words; the schema's int is signed, so wrap [2^63, 2^64)."""
    seed = int(seed)
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"dbp: seed must fit in 64 bits, got {seed}")
    return seed - 2**64 if seed >= 2**63 else seed


def _coef(c, like: torch.Tensor) -> torch.Tensor:
    if isinstance(c, torch.Tensor):
        return c
    return torch.tensor(float(c), dtype=like.dtype, device=like.device)


def normal(shape: Sequence[int], seed: int, stream: int, uids: torch.Tensor, step: int,
           dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard-normal noise of ``shape`` (shape[0] = len(uids)) on the uids' device."""
    return torch.ops.dbp.normal(list(shape), _signed64(seed), int(stream), uids, int(step), dtype)


def q_sample(x0: torch.Tensor, sqrt_ab, sqrt_1mab, seed: int, stream: int, uids: torch.Tensor,
             step: int) -> torch.Tensor:
    """Forward diffusion ``sqrt_ab * x0 + sqrt_1mab * z`` with addressed z (DDPM eq. 4).

    Coefficients: a float, or a tensor with one value or one per sample.
    Differentiable in x0.
    """
    return torch.ops.dbp.q_sample(x0, _coef(sqrt_ab, x0), _coef(sqrt_1mab, x0), _signed64(seed),
                                  int(stream), uids, int(step))


def ddpm_step(x_t: torch.Tensor, eps: torch.Tensor, c_x, c_eps, sigma, seed: int, stream: int,
              uids: torch.Tensor, step: int) -> torch.Tensor:
    """Fused reverse step ``c_x * (x_t - c_eps * eps) + sigma * z`` with addressed z.

    ``sigma``: one value, one per sample, or one per element (a learned variance); ``sigma = 0``
    draws no noise (DDIM, eta = 0). Differentiable in x_t and eps, and in sigma when it requires
    grad (the gradient g z regenerates the noise from its address).
    """
    return torch.ops.dbp.ddpm_step(x_t, eps, _coef(c_x, x_t), _coef(c_eps, x_t), _coef(sigma, x_t),
                                   _signed64(seed), int(stream), uids, int(step))


def clipped_step(x_t: torch.Tensor, eps: torch.Tensor, a, b, c0, c1, sigma, seed: int, stream: int,
                 uids: torch.Tensor, step: int) -> torch.Tensor:
    """Fused reverse step with the predicted x_0 clipped: ``c0 * clamp(a * x_t - b * eps, -1, 1)
    + c1 * x_t + sigma * z`` with addressed z (docs/science.md, "Clipping the predicted x_0").

    ``sigma``: as in :func:`ddpm_step`. Differentiable in x_t, eps (and sigma)."""
    return torch.ops.dbp.clipped_step(x_t, eps, _coef(a, x_t), _coef(b, x_t), _coef(c0, x_t), _coef(c1, x_t),
                                      _coef(sigma, x_t), _signed64(seed), int(stream), uids, int(step))


def rbgm(g: torch.Tensor, seed: int, stream: int, uids: torch.Tensor, step: int) -> torch.Tensor:
    """Rank-based Gaussian mapping (docs/science.md, RBGM): per image channel of g
    ([B, C, ...]; [B, N] is one row per sample) an addressed Gaussian sample,
    sorted, placed in the rank order of g. No gradient."""
    return torch.ops.dbp.rbgm(g, _signed64(seed), int(stream), uids, int(step))
