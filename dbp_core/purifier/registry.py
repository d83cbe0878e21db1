"""The purifier's option names, each spelled once (docs/design.md, "Registries").

Light on purpose — no torch — so that ``dbp_core.config`` validates ``[purifier]`` against
these lists without importing the purifier itself.
"""
SAMPLERS = ("ddpm", "ddim")
GRAD_MODES = ("none", "full", "checkpoint", "segments")
VARIANCES = ("fixed_large", "fixed_small")
