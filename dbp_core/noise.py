"""Moved to :mod:`dbp_core.purifier.noise`; ``dbp_core.noise`` stays the same module (docs/api.md)."""
import sys

from .purifier import noise as _moved

sys.modules[__name__] = _moved
