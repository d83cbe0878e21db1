"""A run's frozen config as settings: ``{dotted key: value}`` (the ``--set`` spelling), values in
words, and the settings that differ between runs (``dbp report A B``, the console's compare)."""
from __future__ import annotations

from typing import Any

from ..store import toml_value
from .run_view import RunView

def _flatten(value: Any, prefix: str, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):  # [[attacks]]: attacks.0.eps, as --set spells it
            _flatten(v, f"{prefix}.{i}", out)
    else:
        out[prefix] = value


def flat_settings(config: dict | None) -> dict[str, Any]:
    """A config document as {dotted key: value} (``attacks.0.eps``, the ``--set`` spelling)."""
    out: dict[str, Any] = {}
    if config:
        _flatten(config, "", out)
    return out


_NOT_SETTINGS = ("description",)  # prose, not a setting


def setting_differences(views: list[RunView]) -> list[tuple[str, list[Any]]]:
    """The frozen-config settings that differ between runs: [(dotted key, [value per run])], a
    value None where a run does not set the key (or has no readable config.toml)."""
    flats = [flat_settings(v.config) for v in views]
    keys: list[str] = []
    for f in flats:
        keys += [k for k in f if k not in keys]
    out = []
    for k in keys:
        if k in _NOT_SETTINGS:
            continue
        values = [f.get(k) for f in flats]
        if any(v != values[0] for v in values[1:]):
            out.append((k, values))
    return out


def toml_value_or_dash(v: Any) -> str:
    return "-" if v is None else toml_value(v) if isinstance(v, (bool, int, float, str, list, dict)) else str(v)
