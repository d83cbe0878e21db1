"""Plugins: user code named in a config by an import path ``package.module:attr.attr``
(docs/config.md, "Plugins"). Models, datasets, stages and attacks can be plugins.

The current working directory is importable (as with ``python -m``), so a plugin next to
where ``dbp`` runs needs no installation. A plugin's module is imported where SIGINT and SIGTERM
act (``interrupts.allowed``): a module that hangs while it is imported can be stopped.

What a plugin must return is checked where it is called (``dbp check`` calls each plugin once,
``dbp_core/smoke.py``; a run checks every output, ``attacks/plugin.py``, ``models/plugin.py``);
a violation is a :class:`PluginError`, which ends a run 'failed' with exit code 2 (bad input).
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import inspect
import os
import re
import sys
import threading
from typing import Any, Callable, Iterator

from .interrupts import allowed

__all__ = ["IMPORT_PATH", "PluginError", "ProcessExit", "is_import_path", "resolve_import_path", "plugin_source",
           "accepts_keyword", "exits_raise"]

IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class PluginError(ValueError):
    """User code named in a config broke its contract (docs/plugins.md): it raised, or returned
    something of the wrong kind, shape, dtype or range. The message names the field, the import
    path and what was measured."""


class ProcessExit(SystemExit):
    """``os._exit()`` called by user code inside :func:`exits_raise`, raised instead of ending the process."""


@contextlib.contextmanager
def exits_raise(on_thread_exit: Callable[[int], None] | None = None) -> Iterator[None]:
    """A block in which ``os._exit(n)`` from user code does not end the process silently with the code
    it chose: in the main thread it raises :class:`ProcessExit` (so the caller records what happened);
    in another thread ``on_thread_exit(n)`` is called, then the process ends with exit code 1. A forked
    child (a DataLoader or multiprocessing worker) exits as it asked."""
    real, pid = os._exit, os.getpid()

    def guarded(code: int = 0):
        if os.getpid() != pid:
            real(code)
        if threading.current_thread() is threading.main_thread():
            raise ProcessExit(code)
        if on_thread_exit is not None:
            on_thread_exit(code)
        real(1)

    os._exit = guarded
    try:
        yield
    finally:
        os._exit = real


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
        with allowed():  # the user's module runs here: a loop in it must stay stoppable
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
            names = [n for n in dir(obj) if not n.startswith("_")]
            hint = difflib.get_close_matches(attr, names, n=1)
            raise ValueError(f"module '{module_name}' has no attribute '{attr_path}'"
                             + (f" (did you mean '{hint[0]}'?)" if hint else "")) from None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 — a property / module __getattr__ that raises
            what = f"sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
            raise ValueError(f"looking up '{attr}' of '{value}' failed ({what}); expected an attribute "
                             "that can be read") from None
    if not callable(obj):
        raise ValueError(f"'{value}' is not callable (got {type(obj).__name__})")
    return obj


def plugin_source(value: str) -> dict[str, Any]:
    """The file that defines the plugin ``package.module:attr`` and its content's sha256:
    ``{"import": value, "file": path or None, "sha256": hex or None}`` (None: a module without a
    readable source file, e.g. a built-in or a compiled one). A run records these so that
    ``dbp resume`` can tell when a plugin's code changed (docs/plugins.md, "Reproducibility")."""
    module_name = value.partition(":")[0]
    module = sys.modules.get(module_name)
    if module is None:
        resolve_import_path(value)
        module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    digest = None
    if path:
        path = os.path.abspath(path)
        try:
            with open(path, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
        except OSError:
            digest = None
    return {"import": value, "file": path, "sha256": digest}


def accepts_keyword(fn: Any, name: str) -> bool:
    """Does calling ``fn`` with the keyword argument ``name`` bind (a parameter of that name, or
    ``**kwargs``)? A plugin written before a keyword existed is then called without it."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.kind is p.VAR_KEYWORD
               for p in params)
