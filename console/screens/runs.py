"""Runs: the run store's history (filter, sort), compare (settings that differ, paired
differences), CSV export, delete to the trash, the frozen config, the report, the sweep view."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from rich.console import Group
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from dbp_core.store import RunLocked, RunNotFound

from ..messages import ResumeRun, WatchRun, WatchSweep
from ..state.format import fmt_time, state_glyph
from ..state.runs import SORT_KEYS, compare_runs, export_csv, filter_rows, run_rows, sort_rows, trash_run
from .base import GLOBAL_BINDINGS, ConsoleScreen
from .dialogs import ConfirmDialog

WIDE = 120  # from this width the table shows every column; below it the id (which holds the
# experiment and the creation time) comes right after the state, so nothing cuts it
COLUMNS_WIDE = (("sel", " "), ("state", "state"), ("experiment", "experiment"), ("created", "created (UTC)"),
                ("progress", "progress"), ("accuracy", "headline result"), ("id", "run id"))
COLUMNS_NARROW = (("sel", " "), ("state", "st"), ("id", "run id"), ("accuracy", "headline result"))


class RunsScreen(ConsoleScreen):
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("v", "compare", "Compare"),
        Binding("x", "export", "CSV"),
        Binding("d", "delete", "Delete"),
        Binding("f", "config", "Config"),
        Binding("g", "report", "Report"),
        Binding("w", "sweep", "Sweep", show=False),
        Binding("space", "toggle", "Select", show=False),
        Binding("s", "sort", "Sort", show=False),
        Binding("S", "sort_reverse", "Reverse", show=False),
        Binding("p", "path", "Path", show=False),
        Binding("enter", "watch", "Monitor", show=False),
        Binding("r", "resume", "Resume", show=False),
    ]

    def __init__(self):
        super().__init__()
        self.all_rows: list[dict] = []
        self.rows: list[dict] = []
        self.selected: set[str] = set()
        self.sort_key = "created"
        self.reverse = True
        self.filter_text = ""
        self.last_export: Path | None = None
        self._signature = None
        self._wide: bool | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter (/): words, name:<experiment>, state:<state> — Esc clears", id="runs-filter")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="run-detail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._columns()
        self.set_interval(2.0, self.reload)
        self.reload()
        self.query_one("#runs-table", DataTable).focus()

    def _columns(self) -> None:
        wide = self.size.width >= WIDE if self.size.width else self.app.size.width >= WIDE
        if wide == self._wide:
            return
        self._wide = wide
        table = self.query_one("#runs-table", DataTable)
        table.clear(columns=True)
        for key, label in (COLUMNS_WIDE if wide else COLUMNS_NARROW):
            table.add_column(label, key=key)
        self._show(self.all_rows, force=True)

    def on_resize(self) -> None:
        self._columns()

    def reload(self) -> None:
        self._load(self.app.runs_dir)

    @work(thread=True, exclusive=True, group="runs-load")
    def _load(self, root) -> None:
        rows = run_rows(root)
        self.app.call_from_thread(self._show, rows)

    def _show(self, rows: list[dict], force: bool = False) -> None:
        self.all_rows = rows
        rows = sort_rows(filter_rows(rows, self.filter_text), self.sort_key, self.reverse)
        signature = [(r["id"], r["state"], r["progress"], r["headline"], r["id"] in self.selected) for r in rows]
        if signature == self._signature and not force:
            return
        self._signature = signature
        table = self.query_one("#runs-table", DataTable)
        cursor_id = self._cursor_id()
        self.rows = rows
        table.clear()
        for r in rows:
            sel = "✓" if r["id"] in self.selected else " "
            experiment = r["experiment"] + (f" · {r['point']}" if r.get("point") else "")
            if self._wide:
                table.add_row(sel, Text.from_markup(f"{state_glyph(r['state'])} {r['state']}"), experiment,
                              fmt_time(r["created"]), r["progress"], r["headline"], r["id"], key=r["id"])
            else:
                table.add_row(sel, Text.from_markup(state_glyph(r["state"])), r["id"], r["headline"], key=r["id"])
        if cursor_id is not None:
            for i, r in enumerate(rows):
                if r["id"] == cursor_id:
                    table.move_cursor(row=i)
        arrow = "▼" if self.reverse else "▲"
        shown = f"{len(rows)} of {len(self.all_rows)}" if self.filter_text else f"{len(rows)}"
        self.sub_title = f"{shown} runs in {self.app.runs_dir} · sorted by {self.sort_key} {arrow}"
        self._detail()

    def _cursor_id(self) -> str | None:
        table = self.query_one("#runs-table", DataTable)
        if not self.rows or table.cursor_row is None or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row]["id"]

    def _cursor_row(self) -> dict | None:
        cid = self._cursor_id()
        return next((r for r in self.rows if r["id"] == cid), None)

    @on(DataTable.RowHighlighted, "#runs-table")
    def _detail(self, event=None) -> None:
        r = self._cursor_row()
        lines = []
        if r:
            lines.append(f"{escape(r['id'])}  {state_glyph(r['state'])} {r['state']} · {escape(r['progress'])} · "
                         f"{escape(r['headline'])} · selected {len(self.selected)}")
            lines.append(f"[dim]folder:[/dim] {escape(r['path'])}")
            if r.get("source"):
                lines.append(f"[dim]source:[/dim] {escape(r['source'])}")
            if r.get("group"):
                lines.append(f"[dim]sweep:[/dim] {escape(r['group'])} · {escape(r.get('point') or '')} "
                             "[dim](w: sweep view)[/dim]")
            lines += [f"[red]{escape(p)}[/red]" for p in r["problems"]]
        else:
            lines.append(f"no runs in {escape(str(self.app.runs_dir))}" if not self.all_rows else
                         "no run matches the filter")
        if self.last_export is not None:
            lines.append(f"[green]last export:[/green] {escape(str(self.last_export))}")
        self.query_one("#run-detail", Static).update("\n".join(lines))

    # ---- filter
    def action_filter(self) -> None:
        self.query_one("#runs-filter", Input).focus()

    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self._show(self.all_rows, force=True)

    @on(Input.Submitted, "#runs-filter")
    def _filter_done(self) -> None:
        self.query_one("#runs-table", DataTable).focus()

    def key_escape(self) -> None:
        inp = self.query_one("#runs-filter", Input)
        if inp.has_focus or self.filter_text:
            inp.value = ""
            self.query_one("#runs-table", DataTable).focus()

    # ---- sort
    @on(DataTable.HeaderSelected, "#runs-table")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        if key == "sel":
            return
        if key == self.sort_key:
            self.reverse = not self.reverse
        else:
            self.sort_key, self.reverse = key, False
        self._show(self.all_rows, force=True)

    def action_sort(self) -> None:
        self.sort_key = SORT_KEYS[(SORT_KEYS.index(self.sort_key) + 1) % len(SORT_KEYS)]
        self._show(self.all_rows, force=True)

    def action_sort_reverse(self) -> None:
        self.reverse = not self.reverse
        self._show(self.all_rows, force=True)

    def action_toggle(self) -> None:
        r = self._cursor_row()
        if r is None:
            return
        self.selected.symmetric_difference_update({r["id"]})
        table = self.query_one("#runs-table", DataTable)
        table.update_cell(r["id"], "sel", "✓" if r["id"] in self.selected else " ")
        self._detail()

    def _chosen(self) -> list[dict]:
        return [r for r in self.all_rows if r["id"] in self.selected]

    # ---- actions on runs
    def action_compare(self) -> None:
        rows = self._chosen() or ([self._cursor_row()] if self._cursor_row() else [])
        if not rows:
            return
        self.app.push_screen(CompareScreen(rows))

    def action_export(self) -> None:
        rows = self._chosen() or self.rows
        if not rows:
            self.notify("no runs to export", severity="warning")
            return
        target = (Path(self.app.runs_dir) / f"export-{time.strftime('%Y%m%d-%H%M%S')}.csv").resolve()
        try:
            export_csv(rows, target)
        except OSError as exc:
            self.notify(f"export failed: {exc}", severity="error")
            return
        self.last_export = target  # kept below the table (the toast goes)
        self.notify(f"exported {len(rows)} run(s) to {target}")
        self._detail()

    def action_delete(self) -> None:
        r = self._cursor_row()
        if r is None:
            return
        if r["state"] == "running":
            self.notify(f"{r['id']} is running; cancel it first (Monitor, c) — a running run is not deleted",
                        severity="error")
            return
        trash = Path(self.app.runs_dir) / ".trash"

        def answer(yes: bool | None) -> None:
            if yes:
                self._delete(r["id"])
        self.app.push_screen(ConfirmDialog(f"Move run [b]{escape(r['id'])}[/b] ({r['state']}) to "
                                           f"{escape(str(trash))}/?\nIt can be moved back by hand.",
                                           yes="Delete"), answer)

    def _delete(self, run_id: str) -> None:
        try:
            target = trash_run(self.app.runs_dir, run_id)
        except (RunLocked, RunNotFound, OSError) as exc:
            self.notify(f"not deleted: {exc}", severity="error")
            return
        self.selected.discard(run_id)
        self.notify(f"moved {run_id} to {target}")
        self.reload()

    def action_config(self) -> None:
        r = self._cursor_row()
        if r:
            self.app.push_screen(ConfigScreen(r))

    def action_report(self) -> None:
        rows = self._chosen() or ([self._cursor_row()] if self._cursor_row() else [])
        if rows:
            self.app.push_screen(ReportScreen([r["id"] for r in rows]))

    def action_sweep(self) -> None:
        r = self._cursor_row()
        if r is None or not r.get("group"):
            self.notify("the highlighted run is not a point of a sweep", severity="warning")
            return
        self.post_message(WatchSweep(r["group"]))

    def action_path(self) -> None:
        r = self._cursor_row()
        if r:
            self.app.copy_to_clipboard(r["path"])
            self.notify(f"{r['path']} (copied to the clipboard)")

    def action_watch(self) -> None:
        r = self._cursor_row()
        if r:
            self.post_message(WatchRun(r["id"]))

    @on(DataTable.RowSelected, "#runs-table")
    def _row_selected(self) -> None:
        self.action_watch()

    def action_resume(self) -> None:
        r = self._cursor_row()
        if r is None:
            return
        if r["state"] not in ("interrupted", "failed"):
            self.notify(f"{r['id']} is {r['state']}; only interrupted or failed runs resume", severity="warning")
            return
        self.post_message(ResumeRun(r["id"]))


class PushedScreen(Screen):
    """A screen pushed over the three main ones: Esc (or q) goes back; the global keys work."""
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")] + [b for b in GLOBAL_BINDINGS if b.key != "q"]


def _table(*columns: tuple[str, str], title: str | None = None) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", title=title,
                  title_justify="left", title_style="bold")
    for name, just in columns:
        table.add_column(name, justify=just, overflow="fold")
    return table


class CompareScreen(PushedScreen):
    """Selected runs side by side: the settings that differ, every accuracy with its interval,
    and each run's paired differences against the first on the examples they share."""

    def __init__(self, rows: list[dict]):
        super().__init__()
        self.rows = rows
        self.comparison = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="compare-scroll"):
            yield Static("", id="compare-runs")
            yield Static("", id="compare-body")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.comparison = c = compare_runs(self.rows)
        self.query_one("#compare-runs", Static).update(
            "\n".join(f"[b reverse] {i} [/] {escape(r['id'])}" + (f"  [dim]{escape(r['point'])}[/dim]"
                                                                   if r.get("point") else "")
                      for i, r in enumerate(self.rows, 1)))
        parts = []
        if len(self.rows) > 1:
            settings = _table(("setting", "left"), *[(f"run {i}", "left") for i in range(1, len(self.rows) + 1)],
                              title="settings that differ")
            for key, values in c.settings:
                settings.add_row(key, *values)
            parts.append(settings if c.settings else Text("settings that differ: none (the same frozen config)"))
        acc = _table(("row", "left"), *[(f"run {i}", "left") for i in range(1, len(self.rows) + 1)],
                     title="accuracy, 95% interval")
        for line in c.table:
            stage, protocol, attack = line[:3]
            what = (f"{attack} / " if attack != "-" else f"{stage}: ") + protocol
            acc.add_row(what, *[cell.replace(" n=", "  n=") for cell in line[3:]])
        parts.append(acc if c.table else Text("none of the selected runs has results.json yet"))
        for label, lines, why in c.paired:
            if why:
                parts.append(Text(f"paired differences, {label}: not computed — {why}"))
                continue
            diffs = _table(("row", "left"), ("a", "right"), ("b", "right"), ("a − b", "right"), ("95% CI", "left"),
                           ("n", "right"), title=f"paired differences, {label} (same examples)")
            for stage, protocol, attack, a, b, d, ci, n in lines:
                diffs.add_row((f"{attack} / " if attack != "-" else f"{stage}: ") + protocol, a, b, d, ci, n)
            parts.append(diffs)
        self.query_one("#compare-body", Static).update(Group(*[p for part in parts for p in (part, Text(""))]))
        self.sub_title = f"comparing {len(self.rows)} run(s)"


class ConfigScreen(PushedScreen):
    """A run's frozen ``config.toml`` (what it really ran: every default spelled out)."""

    def __init__(self, row: dict):
        super().__init__()
        self.row = row

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="config-scroll"):
            yield Static("", id="config-text")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        view = self.row["view"]
        text = view.config_text
        head = Text.from_markup(f"[b]{escape(view.id)}[/b]  frozen config "
                                f"[dim]{escape(str(view.path / 'config.toml'))}[/dim]"
                                + (f"\n[dim]source: {escape(view.source)}[/dim]" if view.source else ""))
        body = Syntax(text, "toml", theme="ansi_dark", word_wrap=True) if text is not None else \
            Text("no readable config.toml in this run folder")
        self.query_one("#config-text", Static).update(Group(head, Text(""), body))
        self.sub_title = "frozen config"


class ReportScreen(PushedScreen):
    """``dbp report`` of the runs (a subprocess, in a worker thread), then its figures: inline
    where the terminal shows images (textual-image), else their paths."""

    def __init__(self, run_ids: list[str]):
        super().__init__()
        self.run_ids = run_ids
        self.figures: list[Path] = []
        self.reports: list[Path] = []
        self.finished = False

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="report-scroll"):
            yield Static(f"writing the report of {len(self.run_ids)} run(s)…", id="report-status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = "report"
        self._run(Path(self.app.runs_dir), list(self.run_ids))

    @work(thread=True, exclusive=True, group="report")
    def _run(self, runs_dir: Path, run_ids: list[str]) -> None:
        cmd = [sys.executable, "-m", "dbp_core", "--runs-dir", str(runs_dir), "report", *run_ids]
        cwd = getattr(self.app.launcher, "cwd", None)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=self.app.launcher.env,
                                  stdin=subprocess.DEVNULL, timeout=900)
            out, err, rc = proc.stdout, proc.stderr, proc.returncode
        except (OSError, subprocess.TimeoutExpired) as exc:
            out, err, rc = "", str(exc), -1
        self.app.call_from_thread(self._show, out, err, rc)

    def _show(self, out: str, err: str, rc: int) -> None:
        status = self.query_one("#report-status", Static)
        self.finished = True
        if rc != 0:
            status.update(f"[red]dbp report failed (exit {rc})[/red]\n{escape(err.strip() or out.strip())}")
            return
        self.reports = [Path(line.split("  (", 1)[0]) for line in out.splitlines() if line.strip()]
        self.figures = [p for rep in self.reports for p in sorted(rep.parent.glob("*.png"))]
        lines = [f"[b]report.md[/b] {escape(str(r))}" for r in self.reports]
        inline = getattr(self.app, "inline_images", None)
        lines.append("" if inline else "[dim]figures (this terminal shows no images: open the files):[/dim]")
        lines += [f"  {escape(str(p))}" for p in self.figures]
        status.update("\n".join(lines))
        if inline:
            from ..widgets.images import image_widget
            scroll = self.query_one("#report-scroll", VerticalScroll)
            for p in self.figures:
                scroll.mount(Static(f"[b]{escape(p.name)}[/b]"))
                scroll.mount(image_widget(p, classes="report-image"))
