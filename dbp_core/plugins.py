"""Plugins: user code named in a config by an import path ``package.module:attr.attr``
(docs/config.md, "Plugins"). Models, datasets, stages and attacks can be plugins.

The current working directory is importable (as with ``python -m``), so a plugin next to
where ``dbp`` runs needs no installation.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

__all__ = ["IMPORT_PATH", "is_import_path", "resolve_import_path"]

IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_import_path(value: str) -> bool:
    return bool(IMPORT_PATH.match(value))


def resolve_import_path(value: str) -> Any:
    """``package.module:attr.attr`` → the object; raises ValueError saying what failed.

    The current working directory is importable (as with ``python -m``), so a
    plugin next to where ``dbp`` is run needs no installation."""
    module_name, _, attr_path = value.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        obj = importlib.import_module(module_name)
    except SystemExit as exc:  # a module that calls sys.exit() on import must not end `dbp check`
        raise ValueError(f"cannot import module '{module_name}' (it called sys.exit({exc.code!r}) while "
                         "being imported); expected a module that defines the callable") from None
    except Exception as exc:  # noqa: BLE001 — any import failure is a config error
        raise ValueError(f"cannot import module '{module_name}' ({type(exc).__name__}: {exc})") from None
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise ValueError(f"module '{module_name}' has no attribute '{attr_path}'") from None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 — a property / module __getattr__ that raises
            what = f"sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
            raise ValueError(f"looking up '{attr}' of '{value}' failed ({what}); expected an attribute "
                             "that can be read") from None
    if not callable(obj):
        raise ValueError(f"'{value}' is not callable (got {type(obj).__name__})")
    return obj
