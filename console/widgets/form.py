"""The experiment form: one row per config field (label, input, error under it); each
``[[attacks]]`` section has a remove button."""
from __future__ import annotations

import re

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Static

from ..state.experiments import ConfigForm, FormField

ATTACK_SECTION = re.compile(r"\[\[attacks\]\] (\d+)")


def field_id(path: str) -> str:
    """'attacks[0].eps' → 'f-attacks-0-eps' (a valid widget id)."""
    return "f-" + re.sub(r"[^A-Za-z0-9_-]+", "-", path).strip("-")


class FieldRow(Vertical):
    """Label + input on one line, the validation error (if any) on the next."""

    def __init__(self, form_field: FormField, value: str):
        super().__init__(classes="field", id=field_id(form_field.path) + "-row")
        self.form_field = form_field
        self.value = value

    def compose(self) -> ComposeResult:
        f = self.form_field
        placeholder = f"default: {f.default!r}" if not f.required and f.default not in (None, [], {}) else (
            "required" if f.required else "unset")
        if f.choices:
            placeholder += "  (" + " | ".join(map(str, f.choices)) + ")"
        with Horizontal(classes="field-line"):
            yield Label(f.label, classes="field-label")
            yield Input(self.value, placeholder=placeholder, id=field_id(f.path), classes="field-input")
        yield Static("", classes="field-error", id=field_id(f.path) + "-error")

    def show_error(self, message: str | None) -> None:
        err = self.query_one(".field-error", Static)
        err.update(f"✗ {message}" if message else "")
        self.set_class(bool(message), "invalid")


class ExperimentForm(VerticalScroll):
    """All fields of one experiment; ``rows`` maps field path → FieldRow."""

    def __init__(self, form: ConfigForm, **kw):
        super().__init__(**kw)
        self.form = form
        self.rows: dict[str, FieldRow] = {}

    def compose(self) -> ComposeResult:
        for title, fields in self.form.sections():
            m = ATTACK_SECTION.fullmatch(title)
            if m:
                index = int(m.group(1))
                kind = self.form.data["attacks"][index].get("kind", "?") if index < self.form.attack_count() else "?"
                with Horizontal(classes="section-line"):
                    yield Label(f"[[attacks]] {index}  ({kind})", classes="section-title", markup=False)
                    yield Button("✕ remove", id=f"remove-attack-{index}", classes="remove-attack", compact=True)
            else:
                yield Label(title, classes="section-title", markup=False)
            for f in fields:
                row = FieldRow(f, self.form.text_of(f))
                self.rows[f.path] = row
                yield row

    def show_errors(self, errors: dict[str, str]) -> None:
        for path, row in self.rows.items():
            row.show_error(errors.get(path))
