"""Moved to :mod:`dbp_core.purifier.diffusion`; ``dbp_core.diffusion`` stays the same module (docs/api.md)."""
import sys

from .purifier import diffusion as _moved

sys.modules[__name__] = _moved
