"""Errors of a configuration: :class:`ConfigError` (what ``dbp`` prints, exit code 2), the
:class:`FieldError` a section's validator raises to name one of its fields, and the translation
of pydantic's errors into messages that name the dotted field (``attacks[0].eps``), the value
given and what was expected, with "did you mean" for an unknown key or name.

A problem is a dict ``{"path", "value", "type", "message"}``; ``dbp_core.preflight`` builds
its problems the same way.
"""
from __future__ import annotations

import difflib
import os
from typing import Any, Iterable, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A configuration is invalid. ``errors`` holds one dict per problem:
    ``{"path": "attacks[0].eps", "message": ..., "value": ...}``; ``file`` the source."""

    def __init__(self, file: str | os.PathLike | None, errors: list[dict[str, Any]]):
        self.file = str(file) if file is not None else None
        self.errors = errors
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.file or "<config>"
        if len(self.errors) == 1:
            e = self.errors[0]
            return f"{where}: {e['path'] or '<top level>'}: {e['message']}"
        lines = [f"{where}: {len(self.errors)} errors"]
        lines += [f"  {e['path'] or '<top level>'}: {e['message']}" for e in self.errors]
        return "\n".join(lines)


def _fmt_value(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def format_loc(loc: tuple) -> str:
    """('attacks', 0, 'eps') → 'attacks[0].eps'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to ``word``, or ``""`` when none is close."""
    hint = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{hint[0]}'?)" if hint else ""


class FieldError(ValueError):
    """Raised inside model validators to point at a sub-field (relative loc) instead of the model."""

    def __init__(self, loc: str | tuple, value: Any, expected: str):
        self.loc = (loc,) if isinstance(loc, str) else tuple(loc)
        self.value = value
        self.expected = expected
        super().__init__(expected)


# --------------------------------------------------------------------------- error translation

def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class under ``root`` that owns the key at the end of ``loc`` (for "did you mean")."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = _unwrap(model.model_fields[part].annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    origin = get_origin(tp)
    if origin in (list, Union) or (origin is not None and str(origin) == "types.UnionType"):
        for arg in get_args(tp):
            inner = _unwrap(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return tp


def translate(exc: ValidationError, root: type[BaseModel], overridden: dict[str, str]) -> list[dict[str, Any]]:
    """The problems of ``exc``, raised validating a ``root`` document; a field set by ``--set``
    (``overridden``: {field path: override}) says so."""
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        value = err.get("input")
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, FieldError):
            loc = loc + ctx_err.loc
            value = ctx_err.value
            expected = ctx_err.expected
        elif err["type"] == "extra_forbidden":
            key = loc[-1]
            owner = _model_at(root, loc[:-1])
            fields = list(owner.model_fields) if owner else []
            hint = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.5)
            suggestion = f"did you mean '{hint[0]}'? " if hint else ""
            section = format_loc(loc[:-1]) or "the top level"
            expected = (f"unknown key; {suggestion}valid keys in {section}: {', '.join(fields)}")
        elif err["type"] == "missing":
            expected = "required field is missing"
            value = None
        else:
            expected = err["msg"].removeprefix("Value error, ")
            if expected.startswith("Input should be "):
                rest = expected.removeprefix("Input should be ")
                if err["type"] == "model_type":
                    rest = "a table (section)"
                if rest.startswith(("greater", "less")):
                    rest = "a value " + rest
                expected = "expected " + rest
        path = format_loc(loc)
        given = err["type"] not in ("missing", "extra_forbidden") and not (value is None and ctx_err is not None)
        message = f"got {_fmt_value(value)}: {expected}" if given else expected
        if path in overridden:
            message += f" (from --set {overridden[path]})"
        out.append({"path": path, "message": message, "value": value, "type": err["type"]})
    return out
