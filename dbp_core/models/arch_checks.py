"""Checks of the fields that shape a network, shared by the networks' configs (``unet.py``,
``guided_unet.py``, ``ncsnpp.py``, ``classifiers.py``).

A field that cannot build a working network — a negative width, zero groups, an empty list of
levels, a string where a number belongs — is a ``ValueError`` that starts with the field's name
and says what was expected, raised before any layer is built, so that ``dbp check`` names it
(docs/config.md, "Checkpoints") instead of a layer failing deep inside the constructor or the
first forward pass. :func:`from_preset` is the one way a config is made from a released
checkpoint's preset and the experiment's overrides (``models.diffusion_config``).
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Iterable, Mapping, TypeVar

__all__ = ["from_preset", "integer", "integers", "fraction", "flag", "positive", "groups_divide"]

Config = TypeVar("Config")


def from_preset(cls: type[Config], presets: Mapping[str, dict], preset: str | None, overrides: dict | None,
                *, family: str, key: str) -> Config:
    """``cls()`` with the fields of ``presets[preset]`` (when a preset is named), then ``overrides``
    on top; ValueError naming an unknown preset or an unknown key (``family`` and ``key`` word the
    message: "unknown score-sde field(s) ...")."""
    if preset is not None and preset not in presets:
        raise ValueError(f"unknown {family} preset {preset!r}; expected one of {sorted(presets)}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides or {}) - known)
    if unknown:
        raise ValueError(f"unknown {family} {key}(s) {unknown}; expected some of {sorted(known)}")
    return replace(cls(), **{**presets.get(preset, {}), **(overrides or {})})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(name: str, value: Any, low: int = 1, *, or_minus_one: bool = False) -> int:
    """``value`` if it is an integer >= ``low`` (or -1, "unset", where ``or_minus_one``)."""
    if _is_int(value) and (value >= low or (or_minus_one and value == -1)):
        return value
    also = " (or -1: unset)" if or_minus_one else ""
    raise ValueError(f"{name} = {value!r}: expected an integer >= {low}{also}")


def integers(name: str, value: Any, low: int = 1, *, empty: bool = False) -> tuple[int, ...]:
    """``value`` as a tuple if it is a list of integers >= ``low`` (non-empty unless ``empty``)."""
    if isinstance(value, (list, tuple)) and (value or empty) and all(_is_int(v) and v >= low for v in value):
        return tuple(value)
    what = "a list" if empty else "a non-empty list"
    raise ValueError(f"{name} = {value!r}: expected {what} of integers >= {low}")


def positive(name: str, value: Any) -> float:
    """``value`` if it is a number > 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and value != float("inf"):
        return value
    raise ValueError(f"{name} = {value!r}: expected a finite number > 0")


def fraction(name: str, value: Any) -> float:
    """``value`` if it is a probability in [0, 1) (a dropout rate)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1:
        return value
    raise ValueError(f"{name} = {value!r}: expected a number in [0, 1)")


def flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"{name} = {value!r}: expected true or false")


def groups_divide(name: str, groups: int, channels: Iterable[int], why: str) -> None:
    """GroupNorm(groups, C) needs C to be a multiple of ``groups`` for every C of ``channels``."""
    bad = sorted({c for c in channels if c % groups})
    if bad:
        raise ValueError(f"{name}: {why}, and {', '.join(map(str, bad))} channels are not a multiple of {groups}")
