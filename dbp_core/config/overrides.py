"""``--set dotted.key=value`` overrides of a parsed TOML document, and what the schema cannot be
given safely (nesting deeper than :data:`MAX_DEPTH`, text that is not UTF-8), found before
pydantic sees the document."""
from __future__ import annotations

import sys
from typing import Any

from .errors import ConfigError, format_loc

if sys.version_info >= (3, 11):  # the package's TOML reader (grid.py and load.py take it from here)
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_DEPTH = 32  # tables and arrays nested deeper than this are refused (an experiment needs < 6)


def _parse_override_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        return _TooDeep()


class _TooDeep:
    """An override value nested too deeply for the TOML parser: reported by :func:`plain_problems`."""


def plain_problems(data: Any) -> list[dict[str, Any]]:
    """What the schema cannot be given safely, found without recursion: nesting deeper than
    MAX_DEPTH (a RecursionError later), and text that is not valid UTF-8 (a non-UTF-8 byte in a
    command-line argument becomes a lone surrogate, which no file can hold)."""
    problems: list[dict[str, Any]] = []
    stack: list[tuple[tuple, Any, int]] = [((), data, 0)]
    while stack and len(problems) < 5:
        loc, value, depth = stack.pop()
        where = format_loc(loc[:8]) + ("..." if len(loc) > 8 else "")
        if isinstance(value, _TooDeep) or depth > MAX_DEPTH:
            problems.append({"path": where, "value": None, "type": "depth",
                             "message": f"nested more than {MAX_DEPTH} levels deep; expected the tables and "
                             "values of an experiment (docs/config.md)"})
            continue
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            if isinstance(key, str) and not is_utf8(key):
                problems.append({"path": where, "value": None, "type": "encoding",
                                 "message": f"key {ascii(key)} is not valid UTF-8; expected UTF-8 text"})
                continue
            stack.append((loc + (key,), item, depth + 1))
        if isinstance(value, str) and not is_utf8(value):
            problems.append({"path": where, "value": None, "type": "encoding",
                             "message": f"got {ascii(value)[:80]}: not valid UTF-8 (a byte that is not UTF-8, e.g. "
                             "from --set in another encoding); expected UTF-8 text"})
    return problems


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def apply_overrides(data: dict, overrides: list[str], file: str | None = None) -> dict[str, str]:
    """Apply ``dotted.key=value`` overrides to ``data`` in place (``attacks.0.eps=0.1``).

    Values are parsed as TOML values (``0.1``, ``true``, ``[1, 2]``, ``"s"``), falling back to a
    plain string. Returns {formatted field path: override text} for error messages."""
    done: dict[str, str] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = key.split(".") if key else []
        if not sep or not parts or any(not p for p in parts):
            raise ConfigError(file, [{"path": key or "<override>", "value": item, "type": "override",
                                      "message": f"bad override {item!r}: expected dotted.key=value"}])
        loc: list[str | int] = []
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit():
                    raise ConfigError(file, [{"path": format_loc(tuple(loc)), "value": item, "type": "override",
                                              "message": f"bad override {item!r}: '{part}' must be a list index"}])
                idx = int(part)
                if idx > len(node):
                    raise ConfigError(file, [{"path": format_loc(tuple(loc + [idx])), "value": item,
                                              "type": "override",
                                              "message": f"bad override {item!r}: index {idx} out of range "
                                              f"(the list has {len(node)} entries; {len(node)} appends one)"}])
                if idx == len(node):
                    node.append({})
                loc.append(idx)
                if last:
                    node[idx] = _parse_override_value(text)
                else:
                    node = node[idx]
                continue
            if not isinstance(node, dict):
                raise ConfigError(file, [{"path": format_loc(tuple(loc)), "value": item, "type": "override",
                                          "message": f"bad override {item!r}: {format_loc(tuple(loc))} is not a table"}])
            loc.append(part)
            if last:
                node[part] = _parse_override_value(text)
            else:
                if part not in node:
                    node[part] = [] if part == "attacks" else {}
                node = node[part]
        done[format_loc(tuple(loc))] = item
    return done
