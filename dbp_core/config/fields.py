"""What every section of the schema shares: the :class:`Section` base (strict, no unknown key,
finite numbers) and the validators that several sections use (a built-in name or a plugin's
import path, a path relative to the TOML's folder, a model named by keyword, path or import path,
a list without repeats, TOML arrays as tuples)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from pydantic import BaseModel, ConfigDict, ValidationInfo

from ..plugins import is_import_path, resolve_import_path
from .errors import did_you_mean


class Section(BaseModel):
    # strict: no lax coercion (true -> 1, "100" -> 100, 1 -> true); an int is still accepted where a
    # float is expected, and tuple fields take a TOML array (see tuple_from_list)
    # every number must be finite: nan / inf (valid TOML) would pass every bound and give 0% or a crash
    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True, allow_inf_nan=False)


def config_path(value: str, info: ValidationInfo) -> Path:
    """A path of the config: ``~`` expanded, a relative one taken from the config file's folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else _base_dir(info) / path


def listed_once(values: list[str], what: str) -> list[str]:
    """``values`` if no entry repeats; else ValueError naming the repeated ones."""
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise ValueError(f"{what} listed twice: {', '.join(dup)}")
    return values


def _base_dir(info: ValidationInfo) -> Path:
    ctx = info.context or {}
    return Path(ctx.get("base_dir") or os.getcwd())


def built_in_or_plugin(names: Sequence[str], what: str) -> Callable[[str], str]:
    """The validator of a field that takes one of the built-in ``names`` or an import path that
    resolves (``package.module:callable``, imported at validation); anything else is a ValueError
    listing both ways (``what``: the field's thing, "dataset")."""
    def check(value: str) -> str:
        if value in names:
            return value
        if is_import_path(value):
            resolve_import_path(value)
            return value
        raise ValueError(f"unknown {what}; expected one of {', '.join(names)} or an import path "
                         "'package.module:callable'" + did_you_mean(value, names))
    return check


def existing_path(*, folder: bool, what: str,
                  expected: str) -> Callable[[Optional[str], ValidationInfo], Optional[str]]:
    """The validator of an optional path field that names an existing folder (``folder``) or file,
    relative to the TOML's folder; the errors name ``what`` ("dataset folder") and what was
    ``expected`` instead of a file where a folder is wanted (or the reverse)."""
    def check(value: Optional[str], info: ValidationInfo) -> Optional[str]:
        if value is None:
            return value
        path = config_path(value, info)
        if path.exists() and path.is_dir() != folder:
            raise ValueError(f"'{path}' is a {'file, not a folder' if folder else 'folder, not a file'}; "
                             f"expected {expected}")
        if not (path.is_dir() if folder else path.is_file()):
            raise ValueError(f"{what} '{path}' does not exist (relative to the config file's folder)")
        return value
    return check


def check_model_ref(value: str, info: ValidationInfo, *, keywords: tuple[str, ...],
                    what: str, allow_dir: bool) -> str:
    """A model reference: a keyword, an import path, or a path (relative to the TOML folder)."""
    if value in keywords:
        return value
    if is_import_path(value):
        resolve_import_path(value)
        return value
    if not value.strip():
        raise ValueError(f"expected {' / '.join(repr(k) for k in keywords)}, a {what} path "
                         "or an import path 'package.module:callable'")
    path = config_path(value, info)
    if not (path.exists() or path.with_suffix(".json").is_file()):  # dbp checkpoints may be named by stem
        raise ValueError(f"{what} '{path}' does not exist (relative paths are resolved against "
                         f"the config file's folder; expected {' / '.join(repr(k) for k in keywords)}, "
                         "an existing path or 'package.module:callable')")
    if path.is_dir() and not allow_dir:
        raise ValueError(f"{what} '{path}' is a folder, expected a checkpoint file")
    return value


def tuple_from_list(v: Any) -> Any:
    """TOML has arrays, not tuples: a list becomes a tuple (its items are still validated strictly)."""
    return tuple(v) if isinstance(v, list) else v


def no_bool(v: Any) -> Any:
    """Literal[1, 2] would accept True/False as 1/0 (bool is an int subclass) even in strict mode."""
    if isinstance(v, bool):
        raise ValueError("expected an integer, not a boolean")
    return v
