"""Light package namespaces: a package's public names are imported on first use.

``dbp_core.config`` reads option names from light registry modules inside the packages
(``attacks/registry.py``, ``purifier/registry.py``, ...). Importing such a module runs its
package's ``__init__``, so those ``__init__`` files must not import torch: they export their
public names through :func:`exports`, which imports the defining module when a name is
first looked up (PEP 562 module ``__getattr__``).
"""
from __future__ import annotations

import importlib
from typing import Callable


def exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public ``names`` map to the submodule
    (relative, e.g. ``".pgd"``) that defines each."""
    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(names[name], package), name)

    def __dir__() -> list[str]:
        return sorted(names)
    return __getattr__, __dir__
