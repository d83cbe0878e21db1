"""Experiments: pick a TOML, edit it in a form validated live by dbp_core.config (help for the
focused field beside it, errors listed with a key to jump to them), save as a new file, add and
remove attacks, launch a run or a sweep."""
from __future__ import annotations

import copy
import time
from pathlib import Path

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Footer, Header, Input, Label, ListItem, ListView, Static

from ..messages import LaunchExperiment, LaunchSweep
from ..state.experiments import (ConfigForm, attack_kinds, default_save_name, field_help, grid_key,
                                 list_experiments)
from ..widgets.form import ExperimentForm, FieldRow, field_id
from .base import ConsoleScreen
from .dialogs import PickKindDialog, SaveAsDialog, SweepDialog


class ExperimentsScreen(ConsoleScreen):
    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch"),
        Binding("ctrl+s", "save", "Save"),
        Binding("f8", "next_error", "Error"),
        # priority: these win over the text field's own ctrl+w / ctrl+d (delete word / character)
        Binding("ctrl+w", "sweep", "Sweep", priority=True),
        Binding("ctrl+n", "add_attack", "Attack+"),
        Binding("ctrl+d", "remove_attack", "Attack-", show=False, priority=True),
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
        self.focused_field: str | None = None
        self._generation = 0
        self._checked = False  # the current document's validation has finished
        self._launch_requested = False  # launch as soon as it has (and is valid)
        self._error_cursor = -1

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="exp-side"):
                yield Label("experiments", classes="pane-title")
                yield ListView(id="exp-list")
            with Vertical(id="exp-main"):
                yield Static("", id="exp-file")
                with Horizontal(id="exp-body"):
                    yield Vertical(id="form-holder")
                    yield Static("", id="field-help")
                yield Static("", id="exp-errors")
                with Horizontal(id="exp-actions"):
                    yield Button("Save as…", id="save", variant="primary", compact=True)
                    yield Button("Launch", id="launch", variant="success", compact=True)
                    yield Button("Sweep…", id="sweep", compact=True)
                    yield Button("+ attack", id="add-attack", compact=True)
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        await self.rebuild_list()

    async def action_reload(self) -> None:
        await self.rebuild_list(self.form.path if self.form is not None else None)

    async def rebuild_list(self, select: Path | None = None) -> None:
        """Refill the file list and load ``select`` (default: quickstart.toml, the experiment a new
        user runs first, else the first file). The list is emptied and filled before its index is
        set, and the form is loaded first, so no highlight of another file can load that file."""
        lv = self.query_one("#exp-list", ListView)
        self.files = [f for f in list_experiments(self.app.experiments_dir) if not f.path.name.startswith(".")]
        await lv.clear()
        await lv.extend([ListItem(Static(f"[b]{escape(f.path.name)}[/b]\n[dim]{escape(f.error or f.description or '')}"
                                         "[/dim]", markup=True), name=str(f.path)) for f in self.files])
        if not self.files:
            self.query_one("#exp-file", Static).update(f"no *.toml in {self.app.experiments_dir}")
            return
        index = None
        if select is not None:
            index = next((i for i, f in enumerate(self.files) if f.path.resolve() == Path(select).resolve()), None)
        if index is None:
            index = next((i for i, f in enumerate(self.files) if f.path.name == "quickstart.toml"), 0)
        if self.form is None or self.form.path is None or self.form.path.resolve() != self.files[index].path.resolve():
            self.load(self.files[index].path)
        lv.index = index

    @on(ListView.Selected, "#exp-list")
    @on(ListView.Highlighted, "#exp-list")
    def _picked(self, event) -> None:
        item = event.item
        lv = self.query_one("#exp-list", ListView)
        if item is None or not item.name or item not in lv.children or lv.highlighted_child is not item:
            return  # a stale event of a list being refilled
        if self.form is None or self.form.path is None or self.form.path.resolve() != Path(item.name).resolve():
            self.load(Path(item.name))

    def load(self, path: Path) -> None:
        self.form = ConfigForm(path)
        self.dirty = False
        self._mount_form()
        self._show_file()
        self.validate()

    def _show_file(self) -> None:
        if self.form is None or self.form.path is None:
            return
        name = self.form.data.get("name", "?")
        edited = "  [yellow](edited, unsaved)[/yellow]" if self.dirty else ""
        self.query_one("#exp-file", Static).update(
            f"[b]{escape(self.form.path.name)}[/b]  name = {escape(str(name))}{edited}  "
            f"[dim]{escape(str(self.form.path))}[/dim]")

    def _mount_form(self, focus: str | None = None) -> None:
        holder = self.query_one("#form-holder", Vertical)
        holder.remove_children()
        widget = ExperimentForm(self.form)
        holder.mount(widget)
        if focus:
            self.call_after_refresh(self._focus_field, focus)

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
        self._error_cursor = -1
        if self._launch_requested:
            self._launch_requested = False
            self.call_later(self.action_launch)
        try:
            self.form_widget().show_errors(errors)
        except Exception:  # the form is being rebuilt
            return
        self.query_one("#exp-errors", Static).update(self.error_summary())
        self._show_help()

    def error_summary(self) -> str:
        """'✓ valid', or '✗ 2 errors (F8: go to the first)' and one line per error naming its field."""
        if self.valid:
            return "[green]✓ valid[/green]" + (" [dim](edited — save as a new file, or launch)[/dim]"
                                               if self.dirty else "")
        n = len(self.errors) + len(self.general)
        jump = "  [b]F8[/b]: go to the first" if self.errors else ""
        lines = [f"[red]✗ {n} error{'s' if n != 1 else ''}[/red]{jump}"]
        lines += [f"  [b]{escape(grid_key(p))}[/b]: {escape(m)}" for p, m in self.errors.items()]
        lines += [f"  {escape(g)}" for g in self.general]
        return "\n".join(lines)

    @on(Input.Changed, ".field-input")
    def _edited(self, event: Input.Changed) -> None:
        row = next((a for a in event.input.ancestors if isinstance(a, FieldRow)), None)
        if row is None or self.form is None:
            return
        if self.form.text_of(row.form_field) == event.value:
            return
        self.form.set_text(row.form_field, event.value)
        self.dirty = True
        self._show_file()
        self.validate()

    # ---- field help: the focused field's schema description, in a side panel
    def on_descendant_focus(self, event) -> None:
        row = next((a for a in event.widget.ancestors_with_self if isinstance(a, FieldRow)), None)
        if row is not None:
            self.focused_field = row.form_field.path
            self._show_help()

    def _show_help(self) -> None:
        panel = self.query_one("#field-help", Static)
        if self.form is None or self.focused_field is None:
            panel.update("[dim]Field help: focus a field (Tab, or click) to see what it means, its default and "
                         "its allowed values.[/dim]")
            return
        f = next((f for _, fs in self.form.sections() for f in fs if f.path == self.focused_field), None)
        if f is None:
            return
        text = field_help(f, self.errors.get(f.path))
        head, _, rest = text.partition("\n")
        panel.update(f"[b]{escape(head)}[/b]\n{escape(rest)}")

    def _focus_field(self, path: str) -> bool:
        try:
            widget = self.query_one(f"#{field_id(path)}", Input)
        except Exception:
            return False
        widget.focus()
        self.form_widget().scroll_to_widget(widget, animate=False, top=False)
        return True

    def action_next_error(self) -> None:
        """Focus the next field with an error (the first one after a new validation)."""
        paths = list(self.errors)
        if not paths:
            self.notify("no field errors" + (f": {self.general[0]}" if self.general else ""),
                        severity="warning" if self.general else "information")
            return
        self._error_cursor = (self._error_cursor + 1) % len(paths)
        self._focus_field(paths[self._error_cursor])

    # ---- attacks
    def action_add_attack(self) -> None:
        if self.form is None:
            return

        def added(kind: str | None) -> None:
            if not kind:
                return
            index = self.form.add_attack(kind)
            self.dirty = True
            self._mount_form(focus=f"attacks[{index}].eps")
            self._show_file()
            self.validate()
        self.app.push_screen(PickKindDialog(attack_kinds()), added)

    @on(Button.Pressed, "#add-attack")
    def _add_attack_button(self) -> None:
        self.action_add_attack()

    def remove_attack(self, index: int) -> None:
        if self.form is None or not 0 <= index < self.form.attack_count():
            return
        self.form.remove_attack(index)
        self.dirty = True
        self.focused_field = None
        self._mount_form()
        self._show_file()
        self._show_help()
        self.validate()
        self.notify(f"removed [[attacks]] {index}")

    @on(Button.Pressed, ".remove-attack")
    def _remove_button(self, event: Button.Pressed) -> None:
        self.remove_attack(int(str(event.button.id).rsplit("-", 1)[1]))

    def action_remove_attack(self) -> None:
        """Remove the ``[[attacks]]`` entry of the focused field."""
        path = self.focused_field or ""
        if not path.startswith("attacks["):
            self.notify("focus a field of an [[attacks]] entry to remove it", severity="warning")
            return
        self.remove_attack(int(path[len("attacks["):path.index("]")]))

    # ---- save as
    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        if self.form is None:
            return
        folder = Path(self.app.experiments_dir)
        self.app.push_screen(SaveAsDialog(default_save_name(self.form.path, folder), str(folder)), self._save_as)

    async def _save_as(self, name: str | None) -> None:
        if not name or self.form is None:
            return
        if "/" in name or name.startswith("."):
            self.notify("a plain file name, saved in the experiments folder", severity="error")
            return
        try:
            target = self.form.save_as(Path(self.app.experiments_dir) / name)
        except (ValueError, FileExistsError, OSError) as exc:
            self.notify(str(exc), severity="error")
            return
        self.load(target)  # the saved file is the one edited (and launched) from now on
        await self.rebuild_list(select=target)
        self.notify(f"saved {target} (name = {self.form.data.get('name')})")

    # ---- launch
    def _launch_path(self) -> Path:
        """The file to run: the form's file, or — edited and unsaved — a hidden copy next to it
        (so relative paths resolve as in the original)."""
        path = self.form.path
        if self.dirty:
            path = path.with_name(f".{path.stem}.launch-{time.strftime('%Y%m%d-%H%M%S')}.toml")
            path.write_text(self.form.dumps(), encoding="utf-8")
        return path

    @on(Button.Pressed, "#launch")
    def action_launch(self) -> None:
        if self.form is None:
            return
        if not self._checked:  # a launch pressed right after a pick or an edit: wait for its validation
            self._launch_requested = True
            self.notify("validating… it launches when the check has passed")
            return
        if not self.valid:
            self.notify("the experiment has errors; fix them before launching (F8 goes to the first)",
                        severity="error")
            return
        path = self._launch_path()
        self.post_message(LaunchExperiment(path, str(self.form.data.get("name", path.stem))))

    # ---- sweep
    @on(Button.Pressed, "#sweep")
    def action_sweep(self) -> None:
        if self.form is None:
            return
        key = grid_key(self.focused_field) if self.focused_field else ""
        value = ""
        if self.focused_field:
            f = next((f for _, fs in self.form.sections() for f in fs if f.path == self.focused_field), None)
            value = self.form.text_of(f) if f is not None else ""
        self.app.push_screen(SweepDialog(key, value), self._sweep_values)

    def _sweep_values(self, answer: tuple[str, str] | None) -> None:
        if not answer or self.form is None:
            return
        key, values = answer
        self._check_sweep(self.form, copy.deepcopy(self.form.data), key, values)

    @work(thread=True, exclusive=True, group="sweep-check")
    def _check_sweep(self, form: ConfigForm, data: dict, key: str, values: str) -> None:
        """Every point must validate before the sweep is launched (as `dbp sweep` checks)."""
        from dbp_core.config import ConfigError, parse_grid
        from dbp_core.store import toml_value
        item = f"{key}={values}"
        try:
            (key, grid_values), = parse_grid([item], str(form.path))
        except ConfigError as exc:
            self.app.call_from_thread(self._sweep_refused, key, values, str(exc.errors[0]["message"]))
            return
        for v in grid_values:
            ok, errors, general = form.check(data, [f"{key}={toml_value(v)}"])
            if not ok:
                why = "; ".join([f"{p}: {m}" for p, m in errors.items()] + general)
                self.app.call_from_thread(self._sweep_refused, key, values, f"{key} = {toml_value(v)}: {why}")
                return
        self.app.call_from_thread(self._sweep_ok, form, item)

    def _sweep_refused(self, key: str, values: str, why: str) -> None:
        self.app.push_screen(SweepDialog(key, values, error=why), self._sweep_values)

    def _sweep_ok(self, form: ConfigForm, item: str) -> None:
        if form is not self.form:
            return
        if not self.valid and self._checked:
            self.notify("the experiment has errors; fix them before a sweep", severity="error")
            return
        path = self._launch_path()
        self.post_message(LaunchSweep(path, [item], str(form.data.get("name", path.stem))))
