"""Experiments: pick a TOML, edit it in a form validated live by dbp_core.config, save as new, launch."""
from __future__ import annotations

import copy
import time
from pathlib import Path

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, ListItem, ListView, Static

from ..messages import LaunchExperiment
from ..state.experiments import ConfigForm, list_experiments
from ..widgets.form import ExperimentForm, FieldRow


class ExperimentsScreen(Screen):
    BINDINGS = [
        Binding("ctrl+s", "save", "Save as new"),
        Binding("ctrl+l", "launch", "Launch"),
        Binding("ctrl+n", "add_attack", "Add attack"),
        Binding("ctrl+r", "reload", "Reload", show=False),
    ]

    def __init__(self):
        super().__init__()
        self.form: ConfigForm | None = None
        self.files = []
        self.valid = False
        self.errors: dict[str, str] = {}
        self.general: list[str] = []
        self.dirty = False
        self._generation = 0
        self._checked = False  # the current document's validation has finished
        self._launch_requested = False  # launch as soon as it has (and is valid)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="exp-side"):
                yield Label("experiments", classes="pane-title")
                yield ListView(id="exp-list")
            with Vertical(id="exp-main"):
                yield Static("", id="exp-file")
                yield Vertical(id="form-holder")
                yield Static("", id="exp-errors")
                with Horizontal(id="exp-actions"):
                    yield Input(placeholder="save as: new-name.toml", id="save-name")
                    yield Button("Save", id="save", variant="primary")
                    yield Button("Launch", id="launch", variant="success")
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        lv = self.query_one("#exp-list", ListView)
        lv.clear()
        self.files = [f for f in list_experiments(self.app.experiments_dir) if not f.path.name.startswith(".")]
        for f in self.files:
            desc = f.error or f.description or ""
            lv.append(ListItem(Static(f"[b]{escape(f.path.name)}[/b]\n[dim]{escape(desc)}[/dim]", markup=True), name=str(f.path)))
        if not self.files:
            self.query_one("#exp-file", Static).update(f"no *.toml in {self.app.experiments_dir}")
        else:  # start on the quickstart, the experiment a new user runs first
            first = next((i for i, f in enumerate(self.files) if f.path.name == "quickstart.toml"), 0)
            lv.index = first
            self.load(self.files[first].path)

    @on(ListView.Selected, "#exp-list")
    @on(ListView.Highlighted, "#exp-list")
    def _picked(self, event) -> None:
        if event.item is not None and event.item.name and (self.form is None or str(self.form.path) != event.item.name):
            self.load(Path(event.item.name))

    def load(self, path: Path) -> None:
        self.form = ConfigForm(path)
        self.dirty = False
        holder = self.query_one("#form-holder", Vertical)
        holder.remove_children()
        holder.mount(ExperimentForm(self.form))
        self.query_one("#exp-file", Static).update(f"[b]{escape(path.name)}[/b]  [dim]{escape(str(path))}[/dim]")
        self.query_one("#save-name", Input).value = ""
        self.validate()

    def form_widget(self) -> ExperimentForm:
        """The form of the current document (an old one may still be being removed)."""
        return next(f for f in reversed(list(self.query(ExperimentForm))) if f.form is self.form)

    # ---- live validation (in a thread: import-path checks may import torch)
    def validate(self) -> None:
        if self.form is None:
            return
        self._generation += 1
        self.valid, self._checked = False, False
        self.query_one("#exp-errors", Static).update("[dim]validating…[/dim]")
        self._validate(self.form, copy.deepcopy(self.form.data), self._generation)

    @work(thread=True, exclusive=True, group="validate")
    def _validate(self, form: ConfigForm, data: dict, generation: int) -> None:
        result = form.check(data)
        self.app.call_from_thread(self._show_validation, form, generation, *result)

    def _show_validation(self, form, generation, valid, errors, general) -> None:
        if form is not self.form or generation != self._generation:
            return  # a newer edit is being validated
        self.valid, self.errors, self.general, self._checked = valid, errors, general, True
        if self._launch_requested:
            self._launch_requested = False
            self.call_later(self.action_launch)
        try:
            self.form_widget().show_errors(errors)
        except Exception:  # the form is being rebuilt
            return
        if valid:
            text = "[green]✓ valid[/green]" + (" [dim](modified — save as a new file, or launch)[/dim]" if self.dirty else "")
        else:
            n = len(errors) + len(general)
            text = f"[red]✗ {n} error{'s' if n != 1 else ''}[/red]" + ("\n" + escape("\n".join(general)) if general else "")
        self.query_one("#exp-errors", Static).update(text)

    @on(Input.Changed, ".field-input")
    def _edited(self, event: Input.Changed) -> None:
        row = next((a for a in event.input.ancestors if isinstance(a, FieldRow)), None)
        if row is None or self.form is None:
            return
        if self.form.text_of(row.form_field) == event.value:
            return
        self.form.set_text(row.form_field, event.value)
        self.dirty = True
        self.validate()

    # ---- actions
    def action_add_attack(self) -> None:
        if self.form is None:
            return
        self.form.add_attack()
        holder = self.query_one("#form-holder", Vertical)
        holder.remove_children()
        holder.mount(ExperimentForm(self.form))
        self.dirty = True
        self.validate()

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        if self.form is None:
            return
        name = self.query_one("#save-name", Input).value.strip()
        if not name:
            self.notify("type a new file name in 'save as' first", severity="warning")
            self.query_one("#save-name", Input).focus()
            return
        if "/" in name or name.startswith("."):
            self.notify("a plain file name, saved in the experiments folder", severity="error")
            return
        try:
            target = self.form.save_as(Path(self.app.experiments_dir) / name)
        except (ValueError, FileExistsError, OSError) as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify(f"saved {target}")
        self.action_reload()
        for i, f in enumerate(self.files):
            if f.path.resolve() == target.resolve():
                self.query_one("#exp-list", ListView).index = i
                self.load(f.path)

    @on(Button.Pressed, "#launch")
    def action_launch(self) -> None:
        if self.form is None:
            return
        if not self._checked:  # a launch pressed right after a pick or an edit: wait for its validation
            self._launch_requested = True
            self.notify("validating… it launches when the check has passed")
            return
        if not self.valid:
            self.notify("the experiment has errors; fix them before launching", severity="error")
            return
        path = self.form.path
        if self.dirty:  # launch the edited document: a hidden copy next to the original (same relative paths)
            path = path.with_name(f".{path.stem}.launch-{time.strftime('%Y%m%d-%H%M%S')}.toml")
            path.write_text(self.form.dumps(), encoding="utf-8")
        self.post_message(LaunchExperiment(path, str(self.form.data.get("name", path.stem))))
