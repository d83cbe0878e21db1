"""Moved to :mod:`dbp_core.purifier.purifier`; ``dbp_core.purify`` stays the same module (docs/api.md)."""
import sys

from .purifier import purifier as _moved

sys.modules[__name__] = _moved
