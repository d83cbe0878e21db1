"""The purifier: noise addressing, schedules and reverse steps, the Purifier (docs/design.md).

* ``noise``     — noise sources, stream addresses and :func:`~dbp_core.purifier.noise.derive_seed`
* ``diffusion`` — DDPM / DDIM coefficient functions (docs/science.md)
* ``vpsde``     — DiffPure's reverse VP-SDE and probability-flow ODE: time grids and Euler steps
* ``guidance``  — GDMP's guidance of the DDPM step toward the input
* ``chain``     — the reverse chain checkpointed as one autograd node
* ``purifier``  — :class:`Purifier`: diffuse to t*, denoise back
* ``registry``  — option names (samplers, gradient modes, variances), light
"""
from .._lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "Purifier": ".purifier", "derive_seed": ".noise", "stochastic": ".noise", "replay": ".noise",
    "NoiseSource": ".noise", "Guidance": ".guidance", "SAMPLERS": ".registry", "GRAD_MODES": ".registry",
    "VARIANCES": ".registry",
})
__all__ = __dir__()
