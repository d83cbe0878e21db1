"""The sweep view: robust accuracy against the swept value, one line per attack with 95%
intervals (the curve ``dbp report <sweep>`` draws), and one line per point, followed live."""
from __future__ import annotations

from rich.markup import escape
from rich.table import Table
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Footer, Header, Static

from ..messages import WatchRun
from ..state.format import state_glyph
from ..state.sweeps import SweepSnapshot, sweep_snapshot
from ..widgets.plots import SweepPlot
from .runs import PushedScreen, ReportScreen


class SweepScreen(PushedScreen):
    BINDINGS = [Binding("g", "report", "Report"), Binding("enter", "watch", "Monitor", show=False)]

    def __init__(self, sweep_id: str):
        super().__init__()
        self.sweep_id = sweep_id
        self.snapshot: SweepSnapshot | None = None
        self.polls = 0

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="sweep-main"):
            yield Static("", id="sweep-head")
            yield SweepPlot(id="sweep-plot")
            with VerticalScroll(id="sweep-detail"):
                yield Static("", id="sweep-table")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = f"sweep {self.sweep_id}"
        self.set_interval(getattr(self.app, "poll_interval", 0.5) * 2, self.poll)
        self.poll()

    def poll(self) -> None:
        self._poll(self.app.runs_dir / self.sweep_id)

    @work(thread=True, exclusive=True, group="sweep-poll")
    def _poll(self, path) -> None:
        snap = sweep_snapshot(path)
        self.app.call_from_thread(self._apply, snap)

    def _apply(self, snap: SweepSnapshot) -> None:
        self.polls += 1
        self.snapshot = snap
        v = snap.view
        head = f"{state_glyph(v.state)} [b]{escape(v.id)}[/b] {v.state} · {v.progress_text} · swept: " \
               f"{escape(', '.join(v.keys) or '?')}"
        if v.source:
            head += f"\n[dim]source: {escape(v.source)}[/dim]"
        if v.problem:
            head += f"\n[red]{escape(v.problem)}[/red]"
        self.query_one("#sweep-head", Static).update(head)
        self.query_one("#sweep-plot", SweepPlot).set_sweep(snap.key, snap.series, snap.numeric, snap.ticks)
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold",
                      title="robust accuracy (single), 95% interval, per point — same examples and seeds",
                      title_justify="left")
        for c in snap.columns:
            table.add_column(c, overflow="fold")
        for line in snap.table:
            table.add_row(*[escape(x) for x in line])
        self.query_one("#sweep-table", Static).update(table)

    def action_report(self) -> None:
        self.app.push_screen(ReportScreen([self.sweep_id]))

    def action_watch(self) -> None:
        """Watch the sweep's latest started point in the monitor."""
        if self.snapshot is None:
            return
        started = [p.view.id for p in self.snapshot.view.points if p.view is not None]
        if started:
            self.app.pop_screen()
            self.app.post_message(WatchRun(started[-1]))
