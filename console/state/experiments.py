"""The experiments screen's state: the TOML files of the experiments folder, and the form over
one of them — every field of ``dbp_core.config.ExperimentConfig`` (docs/config.md), edited as
TOML literals and validated by ``dbp_core.config`` itself (docs/console.md, "Experiments").

The document is edited with tomlkit, so a file saved from the form keeps its comments, its
tables (``[[attacks]]`` stays an array of tables) and its key order; only the edited values
change. New ``[[attacks]]`` entries come from the attack registry's templates
(``dbp_core.attacks.registry.attack_template``): a newly registered kind appears without a
console change.

No Textual, no torch: :meth:`ConfigForm.check` is safe in a worker thread.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Union, get_args, get_origin

import tomlkit
from pydantic import BaseModel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ExperimentFile", "list_experiments", "FormField", "form_fields", "toml_literal", "parse_value",
           "get_path", "set_path", "ConfigForm", "field_help", "grid_key", "experiment_name_for", "default_save_name",
           "attack_kinds"]


@dataclass
class ExperimentFile:
    path: Path
    name: str
    description: str
    error: str | None = None


def list_experiments(folder: str | os.PathLike) -> list[ExperimentFile]:
    """TOML files under ``folder`` (sorted), with the name/description read without validation."""
    folder = Path(folder)
    out = []
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            out.append(ExperimentFile(path, str(data.get("name", path.stem)), str(data.get("description", ""))))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            out.append(ExperimentFile(path, path.stem, "", error=f"{type(exc).__name__}: {exc}"))
        except RecursionError:  # tables or arrays nested too deeply for the parser
            out.append(ExperimentFile(path, path.stem, "", error="tables or arrays nested too deeply to read"))
    return out


# --------------------------------------------------------------------------- form fields

@dataclass
class FormField:
    key: tuple            # ("attacks", 0, "eps")
    path: str             # "attacks[0].eps" — the same spelling as ConfigError paths
    label: str
    description: str
    kind: str             # "str", "int", "float", "bool", "choice", "list", "dict", "any"
    choices: tuple = ()
    default: Any = None
    required: bool = False


def _fmt_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _kind_of(tp: Any) -> tuple[str, tuple]:
    origin = get_origin(tp)
    if origin is Union or (origin is not None and str(origin) == "types.UnionType"):
        args = [a for a in get_args(tp) if a is not type(None)]
        return _kind_of(args[0]) if len(args) == 1 else ("any", ())
    if origin is Literal:  # words are picked from a list; numbers (landscape_dims: 1 | 2) are typed
        args = tuple(get_args(tp))
        return ("choice" if all(isinstance(a, str) for a in args) else "any"), args
    if origin in (list, tuple):
        return "list", ()
    if origin is dict or tp is dict:
        return "dict", ()
    if tp is bool:
        return "bool", ()
    if tp is int:
        return "int", ()
    if tp is float:
        return "float", ()
    if tp is str:
        return "str", ()
    return "any", ()


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _fields_of(model: type[BaseModel], prefix: tuple) -> list[FormField]:
    out = []
    for name, info in model.model_fields.items():
        kind, choices = _kind_of(info.annotation)
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = None
        out.append(FormField(prefix + (name,), _fmt_loc(prefix + (name,)), name, info.description or "",
                             kind, choices, default, info.is_required()))
    return out


def form_fields(data: dict) -> list[tuple[str, list[FormField]]]:
    """Sections of the experiment form: every field of every section of ``ExperimentConfig``,
    and one section per ``[[attacks]]`` entry present in ``data``."""
    from dbp_core.config import AttackConfig, ExperimentConfig
    top, sections = [], []
    for name, info in ExperimentConfig.model_fields.items():
        ann = info.annotation
        if _is_model(ann):
            sections.append((f"[{name}]", _fields_of(ann, (name,))))
        elif name == "attacks":
            continue
        else:
            top.extend(_fields_of_single(ExperimentConfig, name))
    attacks = data.get("attacks") if isinstance(data.get("attacks"), list) else []
    attack_sections = [(f"[[attacks]] {i}", _fields_of(AttackConfig, ("attacks", i))) for i in range(len(attacks))]
    # order: top level, data, models, purifier, attacks, then the rest
    ordered = [("experiment", top)]
    for title, fields in sections:
        ordered.append((title, fields))
        if title == "[purifier]":
            ordered.extend(attack_sections)
    return ordered


def _fields_of_single(model: type[BaseModel], name: str) -> list[FormField]:
    return [f for f in _fields_of(model, ()) if f.label == name]


def field_help(f: FormField, error: str | None = None) -> str:
    """What the help panel says about a field: its path (as ``--set`` / ``--grid`` spell it), type,
    default or 'required', the allowed choices, the schema's description, and its error."""
    lines = [f"{grid_key(f.path)}", f"type: {f.kind}" + ("  (required)" if f.required else "")]
    if not f.required:
        lines.append(f"default: {toml_literal(f.default) or '(none: derived or unset)'}")
    if f.choices:
        lines.append("one of: " + ", ".join(map(str, f.choices)))
    lines += ["", f.description or "(no description)"]
    if error:
        lines += ["", f"✗ {error}"]
    return "\n".join(lines)


def grid_key(path: str) -> str:
    """'attacks[0].eps' (a form / ConfigError path) → 'attacks.0.eps' (the ``--set`` / ``--grid`` key)."""
    return re.sub(r"\[(\d+)\]", r".\1", path)


def experiment_name_for(filename: str) -> str:
    """An experiment ``name`` for a file name: its stem with characters a run id cannot hold
    replaced (``my exp.toml`` → ``my-exp``)."""
    stem = Path(filename).stem if filename.endswith(".toml") else Path(filename).name
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "experiment"
    return name[:64]


def default_save_name(path: Path | None, folder: str | os.PathLike) -> str:
    """The name 'save as' proposes: ``<stem>-2.toml`` (the first ``-N`` not taken in ``folder``)."""
    stem = re.sub(r"-\d+$", "", path.stem) if path is not None else "experiment"
    n = 2
    while (Path(folder) / f"{stem}-{n}.toml").exists():
        n += 1
    return f"{stem}-{n}.toml"


def attack_kinds() -> list[tuple[str, str]]:
    """(kind, summary) of every registered attack kind (dbp_core/attacks/registry.py)."""
    from dbp_core.attacks.registry import KINDS
    return [(k.name, k.summary) for k in KINDS.values()]


# --------------------------------------------------------------------------- values

def toml_literal(value: Any) -> str:
    """A value as an inline TOML literal (what the form shows and parses back)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{k if re.fullmatch(r'[A-Za-z0-9_-]+', str(k)) else json.dumps(str(k))} = {toml_literal(v)}"
                          for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    return json.dumps(str(value))


def parse_value(text: str, kind: str) -> Any:
    """Form text → value. Empty = unset (the default). String fields take the text as is
    (quotes optional); other fields parse it as a TOML value, falling back to the plain text
    (so the validator, not the form, says what is wrong with it)."""
    text = text.strip()
    if text == "":
        return None
    if kind in ("str", "choice") and not (len(text) >= 2 and text[0] == text[-1] == '"'):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return text


def get_path(data: dict, key: tuple) -> Any:
    node: Any = data
    for part in key:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def set_path(data: dict, key: tuple, value: Any, *, table: Callable[[], dict] = dict,
             item: Callable[[Any], Any] = lambda v: v) -> None:
    """Set (or with ``value=None`` remove) ``data[key...]``, creating tables (``table()``) on the way;
    the value stored is ``item(value)``. Integers in ``key`` index lists (``attacks.0.eps``)."""
    node: Any = data
    for part in key[:-1]:
        if isinstance(node, list):
            node = node[part]
            continue
        if part not in node or not isinstance(node[part], (dict, list)):
            if value is None:
                return
            node[part] = table()
        node = node[part]
    last = key[-1]
    if value is None:
        if isinstance(node, dict) and last in node:
            del node[last]
    else:
        node[last] = item(value)


def _toml_item(value: Any) -> Any:
    """A value as a tomlkit item that stays inline (a dict as an inline table, not a new section)."""
    if isinstance(value, dict):
        table = tomlkit.inline_table()
        for k, v in value.items():
            table[k] = _toml_item(v)
        return table
    if isinstance(value, list):
        arr = tomlkit.array()
        for v in value:
            arr.append(_toml_item(v))
        return arr
    return value


class ConfigForm:
    """The state behind the experiment form: the TOML document being edited (tomlkit, so comments,
    tables and key order survive a save) and the result of validating it with ``dbp_core.config``
    (errors keyed by dotted field path). ``data`` is the document as plain values."""

    def __init__(self, path: Path | None, text: str | None = None):
        self.path = Path(path) if path is not None else None
        self.base_dir = str(self.path.resolve().parent) if self.path else os.getcwd()
        self.parse_error: str | None = None
        try:
            self.doc = tomlkit.parse(text if text is not None else self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomlkit.exceptions.TOMLKitError) as exc:
            self.doc = tomlkit.document()
            self.parse_error = f"cannot read {self.path}: {exc}"
        except RecursionError:
            self.doc = tomlkit.document()
            self.parse_error = f"cannot read {self.path}: tables or arrays nested too deeply"
        from dbp_core.config import plain_problems
        try:
            too_deep = [e for e in plain_problems(self.data) if e["type"] == "depth"]
        except RecursionError:
            too_deep = [{"path": "(document)", "message": "tables or arrays nested too deeply"}]
        if too_deep:  # the form (and copies of it) could not hold it: shown as a parse error
            self.doc = tomlkit.document()
            self.parse_error = f"cannot read {self.path}: {too_deep[0]['path']}: {too_deep[0]['message']}"
        self.errors: dict[str, str] = {}
        self.general_errors: list[str] = []
        self.valid = False
        self.cfg = None

    @property
    def data(self) -> dict:
        return self.doc.unwrap()

    def sections(self) -> list[tuple[str, list[FormField]]]:
        return form_fields(self.data)

    def text_of(self, f: FormField) -> str:
        return toml_literal(get_path(self.data, f.key))

    def set_text(self, f: FormField, text: str) -> None:
        self.set_value(f.key, parse_value(text, f.kind))

    def set_value(self, key: tuple, value: Any) -> None:
        """Set (``value=None``: remove) ``doc[key...]`` in place, creating tables on the way; the rest
        of the document — comments, layout — is left as it was."""
        set_path(self.doc, key, value, table=tomlkit.table, item=_toml_item)

    def attack_count(self) -> int:
        attacks = self.data.get("attacks")
        return len(attacks) if isinstance(attacks, list) else 0

    def add_attack(self, kind: str = "pgd-eot") -> int:
        """Append an ``[[attacks]]`` entry from the registry's template of ``kind``; its index."""
        from dbp_core.attacks.registry import attack_template
        template = attack_template(kind)
        if "attacks" not in self.doc:
            self.doc.append("attacks", tomlkit.aot())
        attacks = self.doc["attacks"]
        if isinstance(attacks, tomlkit.items.AoT):
            table = tomlkit.table()
            for k, v in template.items():
                table[k] = _toml_item(v)
            table.add(tomlkit.nl())
            attacks.append(table)
        else:  # an inline array of tables
            attacks.append(_toml_item(template))
        return len(attacks) - 1

    def remove_attack(self, index: int) -> None:
        """Remove the ``[[attacks]]`` entry ``index`` (the key goes when it was the last)."""
        attacks = self.doc["attacks"]
        del attacks[index]
        if len(attacks) == 0:
            del self.doc["attacks"]

    def check(self, data: dict, overrides: list[str] = ()) -> tuple[bool, dict[str, str], list[str]]:
        """Validate ``data`` (a copy of the document; safe in a worker thread) with ``overrides``
        (``key=value``) → (valid, {field path: message}, [messages not tied to a form field])."""
        from dbp_core.config import ConfigError, validate_config
        if self.parse_error:
            return False, {}, [self.parse_error]
        errors: dict[str, str] = {}
        general: list[str] = []
        try:
            validate_config(data, file=str(self.path) if self.path else None, base_dir=self.base_dir,
                            overrides=list(overrides))
            return True, errors, general
        except ConfigError as exc:
            known = {f.path for _, fs in form_fields(data) for f in fs}
            for e in exc.errors:
                path = e.get("path") or ""
                if path in known and path not in errors:
                    errors[path] = e["message"]
                else:
                    general.append(f"{path or '<top level>'}: {e['message']}")
            return False, errors, general

    def validate(self) -> bool:
        """Validate the current document; fills ``errors`` (by field path) and ``general_errors``."""
        self.valid, self.errors, self.general_errors = self.check(self.data)
        return self.valid

    def dumps(self) -> str:
        return tomlkit.dumps(self.doc)

    def save_as(self, target: Path, overwrite: bool = False, name: str | None = None) -> Path:
        """Write the (valid) document to ``target`` as a new file (never over an existing one
        unless ``overwrite``), with ``name`` set to ``name`` (default: from the file name), so runs
        of the new file are told apart from runs of the old one."""
        target = Path(target)
        if target.suffix != ".toml":
            target = target.with_suffix(".toml")
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; choose a new name")
        old_name = self.doc.get("name")
        self.set_value(("name",), name or experiment_name_for(target.name))
        if not self.validate():
            self.set_value(("name",), old_name if old_name is None else str(old_name))
            raise ValueError("the experiment has errors; fix them before saving: "
                             + "; ".join([f"{k}: {v}" for k, v in self.errors.items()] + self.general_errors))
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "x" if not overwrite else "w", encoding="utf-8") as fh:
            fh.write(self.dumps())
        return target
