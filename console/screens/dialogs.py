"""Small modal dialogs: save as (asks the new file name), pick an attack kind, sweep a field,
confirm. Each is dismissed with its answer (None when cancelled with Esc)."""
from __future__ import annotations

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option


class Dialog(ModalScreen):
    """Esc, or the button that :meth:`buttons` marks as the cancel one, runs ``action_cancel``."""
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)

    @staticmethod
    def buttons(ok: str, ok_id: str, variant: str, cancel_id: str, cancel: str = "Cancel") -> Horizontal:
        """The button row: the one that answers, then the one that cancels."""
        return Horizontal(Button(ok, id=ok_id, variant=variant, compact=True),
                          Button(cancel, id=cancel_id, classes="cancel", compact=True), classes="dialog-buttons")

    @on(Button.Pressed, ".cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def focus_at_end(self, selector: str) -> None:
        """Focus a text field with the cursor after its proposed value (to extend it)."""
        field = self.query_one(selector, Input)
        field.focus()
        field.cursor_position = len(field.value)


class SaveAsDialog(Dialog):
    """Asks for the new file's name (proposed from the current file's); the experiment ``name``
    inside becomes the file name's stem."""

    def __init__(self, default: str, folder: str):
        super().__init__()
        self.default = default
        self.folder = folder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="save-dialog"):
            yield Label("Save as a new file", classes="dialog-title")
            yield Static(f"in {escape(self.folder)} — the experiment's `name` becomes the file name", classes="dim")
            yield Input(self.default, id="save-as-name")
            yield self.buttons("Save", "save-ok", "primary", "save-cancel")

    def on_mount(self) -> None:
        self.focus_at_end("#save-as-name")

    @on(Input.Submitted, "#save-as-name")
    @on(Button.Pressed, "#save-ok")
    def _ok(self) -> None:
        name = self.query_one("#save-as-name", Input).value.strip()
        if name:
            self.dismiss(name)


class PickKindDialog(Dialog):
    """The attack kinds of the registry (with what each attacker knows): the one picked is added."""

    def __init__(self, kinds: list[tuple[str, str]]):
        super().__init__()
        self.kinds = kinds

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="kind-dialog"):
            yield Label("Add an [[attacks]] entry: pick its kind", classes="dialog-title")
            yield OptionList(*[Option(f"{escape(k)} — {escape(s)}", id=k) for k, s in self.kinds], id="kind-list")

    def on_mount(self) -> None:
        self.query_one("#kind-list", OptionList).focus()

    @on(OptionList.OptionSelected, "#kind-list")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class SweepDialog(Dialog):
    """A sweep: the field (its ``--grid`` key, from the focused field) and its values."""

    def __init__(self, key: str, values: str, error: str | None = None):
        super().__init__()
        self.key = key
        self.values = values
        self.error = error

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="sweep-dialog"):
            yield Label("Sweep: one run per value (same seeds, same examples)", classes="dialog-title")
            with Horizontal(classes="dialog-line"):
                yield Label("field", classes="dialog-label")
                yield Input(self.key, id="sweep-key", placeholder="e.g. attacks.0.eps")
            with Horizontal(classes="dialog-line"):
                yield Label("values", classes="dialog-label")
                yield Input(self.values, id="sweep-values", placeholder="comma separated, e.g. 0.05, 0.1, 0.2")
            yield Static(f"[red]{escape(self.error)}[/red]" if self.error else "", id="sweep-error")
            yield self.buttons("Launch sweep", "sweep-ok", "success", "sweep-cancel")

    def on_mount(self) -> None:
        self.focus_at_end("#sweep-values")

    @on(Input.Submitted)
    @on(Button.Pressed, "#sweep-ok")
    def _ok(self) -> None:
        key = self.query_one("#sweep-key", Input).value.strip()
        values = self.query_one("#sweep-values", Input).value.strip()
        if key and values:
            self.dismiss((key, values))


class ConfirmDialog(Dialog):
    """A yes/no question; y or Enter on Yes confirms."""
    BINDINGS = [Binding("escape,n", "cancel", "No"), Binding("y", "confirm", "Yes")]

    def __init__(self, question: str, yes: str = "Yes"):
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="confirm-dialog"):
            yield Static(self.question, id="confirm-question")
            yield self.buttons(f"{self.yes} (y)", "confirm-yes", "error", "confirm-no", cancel="No (n)")

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#confirm-yes")
    def _yes(self) -> None:
        self.dismiss(True)
