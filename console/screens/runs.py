"""Runs: the run store's history (sortable), side-by-side comparison, folder path, CSV export."""
from __future__ import annotations

import time
from pathlib import Path

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from ..messages import ResumeRun, WatchRun
from ..state.format import fmt_time
from ..state.runs import SORT_KEYS, compare_results, export_csv, run_rows, sort_rows

STATE_STYLE = {"running": "yellow", "done": "green", "failed": "red", "interrupted": "magenta", "queued": "cyan"}
COLUMNS = (("sel", " "), ("state", "state"), ("experiment", "experiment"), ("created", "created (UTC)"),
           ("progress", "progress"), ("accuracy", "headline result"), ("id", "run id"))


class RunsScreen(Screen):
    BINDINGS = [
        Binding("space", "toggle", "Select"),
        Binding("s", "sort", "Sort"),
        Binding("S", "sort_reverse", "Reverse", show=False),
        Binding("v", "compare", "Compare"),
        Binding("x", "export", "Export CSV"),
        Binding("p", "path", "Path"),
        Binding("enter", "watch", "Monitor", show=False),
        Binding("r", "resume", "Resume"),
    ]

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []
        self.selected: set[str] = set()
        self.sort_key = "created"
        self.reverse = True
        self._signature = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="run-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.set_interval(2.0, self.reload)
        self.reload()

    def reload(self) -> None:
        self._load(self.app.runs_dir)

    @work(thread=True, exclusive=True, group="runs-load")
    def _load(self, root) -> None:
        rows = run_rows(root)
        self.app.call_from_thread(self._show, rows)

    def _show(self, rows: list[dict], force: bool = False) -> None:
        rows = sort_rows(rows, self.sort_key, self.reverse)
        signature = [(r["id"], r["state"], r["progress"], r["headline"]) for r in rows]
        if signature == self._signature and not force:
            return
        self._signature = signature
        self.rows = rows
        table = self.query_one("#runs-table", DataTable)
        cursor_id = self._cursor_id()
        table.clear()
        for r in rows:
            color = STATE_STYLE.get(r["state"], "white")
            table.add_row("✓" if r["id"] in self.selected else " ", f"[{color}]{r['state']}[/]", r["experiment"],
                          fmt_time(r["created"]), r["progress"], r["headline"], r["id"], key=r["id"])
        if cursor_id is not None:
            for i, r in enumerate(rows):
                if r["id"] == cursor_id:
                    table.move_cursor(row=i)
        arrow = "▼" if self.reverse else "▲"
        self.sub_title = f"{len(rows)} runs in {self.app.runs_dir} · sorted by {self.sort_key} {arrow}"
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
        text = (f"folder: {r['path']}\nselected: {len(self.selected)} · state {r['state']} · {r['headline']}"
                + "".join(f"\n{p}" for p in r["problems"]) if r else f"no runs in {self.app.runs_dir}")
        self.query_one("#run-detail", Static).update(escape(text))

    @on(DataTable.HeaderSelected, "#runs-table")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        if key == "sel":
            return
        if key == self.sort_key:
            self.reverse = not self.reverse
        else:
            self.sort_key, self.reverse = key, False
        self._show(self.rows, force=True)

    def action_sort(self) -> None:
        self.sort_key = SORT_KEYS[(SORT_KEYS.index(self.sort_key) + 1) % len(SORT_KEYS)]
        self._show(self.rows, force=True)

    def action_sort_reverse(self) -> None:
        self.reverse = not self.reverse
        self._show(self.rows, force=True)

    def action_toggle(self) -> None:
        r = self._cursor_row()
        if r is None:
            return
        self.selected.symmetric_difference_update({r["id"]})
        table = self.query_one("#runs-table", DataTable)
        table.update_cell(r["id"], "sel", "✓" if r["id"] in self.selected else " ")
        self._detail()

    def _chosen(self) -> list[dict]:
        return [r for r in self.rows if r["id"] in self.selected]

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
        target = Path(self.app.runs_dir) / f"export-{time.strftime('%Y%m%d-%H%M%S')}.csv"
        try:
            export_csv(rows, target)
        except OSError as exc:
            self.notify(f"export failed: {exc}", severity="error")
            return
        self.notify(f"exported {len(rows)} run(s) to {target}")
        self.last_export = target

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


class CompareScreen(Screen):
    """Selected runs' results.json side by side: one line per (stage, protocol, attack)."""
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, rows: list[dict]):
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(" · ".join(f"[b]{i}[/b] {r['id']}" for i, r in enumerate(self.rows, 1)), id="compare-runs")
        yield DataTable(id="compare-table", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        header, table_rows = compare_results(self.rows)
        table = self.query_one("#compare-table", DataTable)
        table.add_columns(*header[:3], *[f"run {i}" for i in range(1, len(header) - 2)])
        for line in table_rows:
            table.add_row(*line)
        if not table_rows:
            self.query_one("#compare-runs", Static).update("none of the selected runs has results.json yet")
        self.sub_title = f"comparing {len(self.rows)} run(s)"
