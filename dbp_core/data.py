"""Moved to :mod:`dbp_core.models.datasets`; ``dbp_core.data`` stays the same module (docs/api.md)."""
import sys

from .models import datasets as _moved

sys.modules[__name__] = _moved
