"""Monitor: live per-iteration curves of attacks (several runs overlaid, with a legend that matches
the run list's numbers), progress with units, ETA, log tail; the results of a finished run."""
from __future__ import annotations

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Header, Label, ProgressBar, SelectionList, Static
from textual.widgets.selection_list import Selection

from ..messages import CancelRun, ChangeParallel, ResumeRun
from ..state.format import fmt_eta, fmt_pct, state_glyph
from ..state.monitor import MonitorSnapshot, RunMonitor, results_summary
from ..state.runs import run_rows
from ..widgets.plots import CurvePlot
from .base import ConsoleScreen

PENDING = "__pending__"  # the run-list entry of a launch whose run does not exist yet


def results_renderable(snap: MonitorSnapshot, width: int = 120):
    """The headline, PGD-EOT vs DW-box, audit flags, accuracy table and paired differences of a
    finished run, as one Rich renderable (None before results.json exists). Below 100 columns
    each row takes two lines (numbers, then what the row measures) instead of five columns."""
    summary = results_summary(snap.view) if snap.view is not None else None
    if summary is None:
        return None
    parts: list = [Text.from_markup(f"[b]headline[/b] {escape(summary.headline)}  [dim](robust accuracy under "
                                    "the strongest attack)[/dim]")]
    for line in summary.versus:
        parts.append(Text.from_markup(f"[b]vs[/b] {escape(line)}"))
    if summary.audit:
        parts.append(Text.from_markup(f"[b]audit[/b] of {escape(str(summary.audit_attack or '?'))}:"))
        for raised, name, text in summary.audit:
            mark = "[red]⚑ raised[/red]" if raised else "[green]✓ clear[/green]"
            parts.append(Text.from_markup(f"  {mark} [b]{escape(name)}[/b] {escape(text)}"))
    if width < 100:
        for what, acc, ci, n, meaning in summary.rows:
            parts.append(Text.from_markup(f"{escape(what)}  [b]{acc}[/b] {ci} n={n}\n  [dim]{escape(meaning)}[/dim]"))
        if summary.differences:
            parts.append(Text.from_markup("[b]paired differences[/b] (same examples and seeds)"))
        for ab, d, ci, what in summary.differences:
            parts.append(Text.from_markup(f"{escape(ab)}  [b]{d}[/b] {ci}\n  [dim]{escape(what)}[/dim]"))
        return Group(*parts)
    table = Table(box=None, pad_edge=False, expand=False, show_edge=False, header_style="bold")
    for col, just in (("row", "left"), ("accuracy", "right"), ("95% CI", "left"), ("n", "right"),
                      ("measures", "left")):
        table.add_column(col, justify=just, overflow="fold")
    for row in summary.rows:
        table.add_row(*row)
    parts.append(table)
    if summary.differences:
        diffs = Table(box=None, pad_edge=False, show_edge=False, header_style="bold",
                      title="paired differences (same examples and seeds)", title_justify="left")
        for col, just in (("a − b", "left"), ("difference", "right"), ("95% CI", "left"), ("what", "left")):
            diffs.add_column(col, justify=just, overflow="fold")
        for d in summary.differences:
            diffs.add_row(*d)
        parts.append(diffs)
    return Group(*parts)


class MonitorScreen(ConsoleScreen):
    BINDINGS = [
        Binding("c", "cancel", "Cancel"),
        Binding("r", "resume", "Resume"),
        Binding("x", "clear_overlay", "Clear overlay"),
        Binding("plus", "parallel(1)", "+par", show=False),
        Binding("minus", "parallel(-1)", "-par", show=False),
    ]
    POLL_S = 0.5

    def __init__(self):
        super().__init__()
        self.monitors: dict[str, RunMonitor] = {}
        self.snapshots: dict[str, MonitorSnapshot] = {}
        self.known: list[tuple[str, str]] = []  # (id, state) of the listed runs
        self.rows: dict[str, dict] = {}
        self.current: str | None = None
        self.polls = 0
        self._warned: set[str] = set()
        self._labels: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="mon-side"):
                yield Label("runs (space: overlay)", classes="pane-title")
                yield SelectionList[str](id="run-list")
                yield Static("", id="queue")
            with Vertical(id="mon-main"):
                with Horizontal(id="plots"):
                    yield CurvePlot("attack success rate", "success", ylim=(0.0, 1.0), id="plot-success")
                    yield CurvePlot("attack loss", "loss", id="plot-loss")
                yield Static("", id="legend")
                yield Static("no run selected", id="mon-status")
                yield ProgressBar(id="mon-progress", show_eta=False)
                with VerticalScroll(id="mon-detail"):
                    yield Static("", id="mon-results")
                    yield Static("", id="mon-log")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.set_interval(getattr(self.app, "poll_interval", self.POLL_S), self.poll)
        self.poll()

    def on_screen_resume(self) -> None:
        if self.pending_job() is not None:  # a launch switched here: show it now, not the previous run
            self.current = PENDING
        self._draw()
        self.poll()

    # ---- polling: file reads happen in a worker thread, widgets are updated on the UI thread
    def poll(self) -> None:
        selected = list(self.query_one("#run-list", SelectionList).selected)
        wanted = [i for i in dict.fromkeys(selected + ([self.current] if self.current else [])) if i != PENDING]
        self._poll(wanted, self.app.runs_dir)

    @work(thread=True, exclusive=True, group="monitor-poll")
    def _poll(self, wanted: list[str], runs_dir) -> None:
        rows = run_rows(runs_dir)
        snaps = {}
        for run_id in wanted:
            mon = self.monitors.get(run_id)
            if mon is None:
                mon = self.monitors[run_id] = RunMonitor(runs_dir / run_id if (runs_dir / run_id).is_dir() else run_id)
            snaps[run_id] = mon.poll()
        self.app.call_from_thread(self._apply, rows, snaps)

    def pending_job(self):
        """The launch not yet in the store (the app clears it once the monitor has its run)."""
        return getattr(self.app, "pending_job", None)

    def _apply(self, rows: list[dict], snaps: dict[str, MonitorSnapshot]) -> None:
        self.polls += 1
        self.snapshots.update(snaps)
        self.rows = {r["id"]: r for r in rows}
        self.app.launcher.store_running = [r["id"] for r in rows if r["state"] == "running"]  # for the queue line
        ids = [r["id"] for r in reversed(rows)]  # newest first
        auto = self.app.take_watch_requests(ids)[-1:]  # the latest watch or launch, alone
        sl = self.query_one("#run-list", SelectionList)
        if auto:  # a launch or a watch: that run alone (the overlay is replaced)
            sl.deselect_all()
        first_look = not self.known and not auto and not sl.selected
        self._refresh_list(ids, auto, first_look)
        if auto:
            self.current = auto[-1]
            index = self._index_of(self.current)
            if index is not None:
                sl.highlighted = index
        if self.current is None or (self.current not in self.rows and self.current != PENDING) or \
                (self.current == PENDING and self.pending_job() is None):
            sel = [i for i in sl.selected if i != PENDING]
            self.current = sel[0] if sel else (ids[0] if ids else None)
        self._draw()

    def _index_of(self, value: str) -> int | None:
        sl = self.query_one("#run-list", SelectionList)
        for i in range(sl.option_count):
            if sl.get_option_at_index(i).value == value:
                return i
        return None

    def _refresh_list(self, ids: list[str], auto: list[str], first_look: bool) -> None:
        """Rebuild the run list when its runs or their states change (so a finished run's dot turns
        green); relabel it when the overlay numbers change."""
        sl = self.query_one("#run-list", SelectionList)
        pending = self.pending_job()
        signature = ([(PENDING, "starting")] if pending else []) + [(i, self.rows[i]["state"]) for i in ids]
        selected = set(sl.selected) - {PENDING}
        if first_look:  # the running runs, else the newest
            selected = {i for i in ids if self.rows[i]["state"] == "running"} or set(ids[:1])
        selected |= set(auto)
        if signature != self.known:
            sl.clear_options()
            options = []
            if pending:
                options.append(Selection(f"[cyan]…[/] [b]{escape(pending.label)}[/] [dim]starting[/]", PENDING,
                                         False, id=PENDING))
            options += [Selection(self._label(i, None), i, i in selected, id=i) for i in ids]
            sl.add_options(options)
            self.known = signature
            self._labels = {}
            index = self._index_of(self.current) if self.current else None
            if index is not None:  # the highlight stays on the run shown
                sl.highlighted = index
        else:
            for i in selected - set(sl.selected):
                sl.select(i)
        self._relabel()

    @property
    def known_ids(self) -> list[str]:
        """The runs of the list, newest first (not the entry of a launch still starting)."""
        return [v for v, _ in self.known if v != PENDING]

    def overlay(self) -> list[str]:
        """The ticked runs, in list order: their 1-based position is their number in the plots."""
        sl = self.query_one("#run-list", SelectionList)
        chosen = set(sl.selected)
        return [v for v, _ in self.known if v in chosen and v != PENDING]

    def _label(self, run_id: str, number: int | None) -> str:
        r = self.rows.get(run_id, {})
        token = run_id.rsplit("-", 1)[-1][:6]
        tag = f"[b reverse] {number} [/] " if number is not None else ""
        point = f" [dim]{escape(r['point'])}[/]" if r.get("point") else ""
        return f"{state_glyph(r.get('state', 'unknown'))} {tag}{escape(str(r.get('experiment', '?')))} " \
               f"[dim]{token}[/]{point}"

    def _relabel(self) -> None:
        sl = self.query_one("#run-list", SelectionList)
        overlay = self.overlay()
        numbers = {v: n for n, v in enumerate(overlay, 1)} if len(overlay) > 1 else {}
        for run_id, _ in self.known:
            if run_id == PENDING:
                continue
            label = self._label(run_id, numbers.get(run_id))
            if self._labels.get(run_id) != label:
                sl.replace_option_prompt(run_id, label)
                self._labels[run_id] = label

    @on(SelectionList.SelectionHighlighted, "#run-list")
    def _highlighted(self, event) -> None:
        if event.selection_index != self.query_one("#run-list", SelectionList).highlighted:
            return  # a stale event of a list being refilled: not the user's choice
        self.current = event.selection.value
        self._draw()
        self.poll()

    @on(SelectionList.SelectedChanged, "#run-list")
    def _selected(self) -> None:
        self._relabel()
        self._draw()
        self.poll()

    def _draw(self) -> None:
        overlay = [i for i in self.overlay() if i in self.snapshots]
        multi = len(overlay) > 1
        pending = self.pending_job()
        showing_pending = pending is not None and self.current in (None, PENDING)
        success, loss = [], []
        for n, run_id in enumerate(overlay, 1):
            if showing_pending:
                break  # a launch is starting: its plot is empty, not the previous run's
            snap = self.snapshots[run_id]
            for attack, (xs, ys, lx, ly) in sorted(snap.curves.items()):
                label = f"{n}:{attack}" if multi else attack
                success.append((label, xs, ys))
                loss.append((label, lx, ly))
            variants = sorted(snap.train_loss)
            for variant in variants:  # ADDT: the training loss of each fine-tuned variant
                name = "addt" if len(variants) == 1 else f"addt {variant}"
                label = f"{n}:{name}" if multi else (f"{name} train loss" if len(variants) == 1 else name)
                loss.append((label, *snap.train_loss[variant]))
        self.query_one("#plot-success", CurvePlot).set_series(success)
        self.query_one("#plot-loss", CurvePlot).set_series(loss)
        legend = self.query_one("#legend", Static)
        if multi and not showing_pending:
            legend.update("  ".join(f"[b reverse] {n} [/] {escape(self.rows.get(i, {}).get('experiment', '?'))} "
                                    f"{i.rsplit('-', 1)[-1][:6]}" for n, i in enumerate(overlay, 1))
                          + "   [dim](x: clear overlay)[/dim]")
        else:
            legend.update("")
        self._draw_status(pending if showing_pending else None)
        launcher = self.app.launcher
        q = launcher.queued()
        others = len(set(launcher.store_running) - {j.current_run for j in launcher.running()})
        self.query_one("#queue", Static).update(
            f"parallel ≤ {launcher.max_parallel} · running {len(launcher.running())}"
            + (f" (+{others} elsewhere)" if others else "") + f" · queued {len(q)}"
            + "".join(f"\n  ⏳ {escape(j.label)}" for j in q[:4]))

    def _draw_status(self, pending) -> None:
        status = self.query_one("#mon-status", Static)
        bar = self.query_one("#mon-progress", ProgressBar)
        log = self.query_one("#mon-log", Static)
        results = self.query_one("#mon-results", Static)
        if pending is not None:
            where = "queued (max parallel reached)" if pending.state == "queued" else \
                "starting: checking the config, loading models…"
            status.update(f"[b]{escape(pending.label)}[/b]  [cyan]{where}[/cyan]  [dim]job {pending.id}[/dim]")
            bar.update(total=None, progress=0)
            results.update("")
            log.update("")
            return
        snap = self.snapshots.get(self.current) if self.current else None
        if snap is None:
            status.update("no run selected — launch one from Experiments (F2) or tick a run on the left")
            bar.update(total=None, progress=0)
            results.update("")
            log.update("")
            return
        p = snap.progress
        extra = ""
        if snap.robust and snap.state == "running":
            extra = "  robust so far: " + ", ".join(f"{a} {fmt_pct(v)}" for a, v in sorted(snap.robust.items()))
        hint = ""
        if snap.state in ("interrupted", "failed"):
            hint = "  [b]press r to resume[/b]"
            if snap.run_id not in self._warned and snap.state == "interrupted":
                self._warned.add(snap.run_id)
                self.notify(f"{snap.run_id} is interrupted — press r to resume", severity="warning")
        elif snap.state == "running":
            hint = "  [dim]c to cancel[/dim]"
        bad = f"  [red]{snap.bad_lines} bad lines[/red]" if snap.bad_lines else ""
        eta = f"  ETA {fmt_eta(snap.eta)}" if snap.state == "running" else ""
        source = f"\n[dim]source: {escape(snap.source)}[/dim]" if snap.source else ""
        status.update(f"{state_glyph(snap.state)} [b]{escape(snap.run_id)}[/b] {snap.state}  "
                      f"{escape(snap.progress_text)}{eta}{extra}{bad}{hint}"
                      + (f"\n[dim]{escape(snap.message)}[/dim]" if snap.message else "") + source)
        if p.total:
            bar.update(total=p.total, progress=p.done)
        else:
            bar.update(total=None, progress=0)
        width = self.query_one("#mon-detail").size.width or self.size.width
        rendered = results_renderable(snap, width) if snap.state == "done" else None
        results.update(rendered if rendered is not None else "")
        tail = escape("\n".join(snap.log_tail[-6:])) or "[dim](no log yet)[/dim]"
        log.update(("[b]log[/b]\n" if rendered is not None else "") + tail)

    # ---- actions
    def action_clear_overlay(self) -> None:
        """Untick every run but the highlighted one."""
        sl = self.query_one("#run-list", SelectionList)
        sl.deselect_all()
        if self.current and self.current != PENDING:
            sl.select(self.current)

    def action_cancel(self) -> None:
        snap = self.snapshots.get(self.current) if self.current else None
        if snap is None:
            return
        if snap.state != "running":
            self.notify(f"{snap.run_id} is not running ({snap.state})", severity="warning")
            return
        self.post_message(CancelRun(snap.run_id))

    def action_resume(self) -> None:
        snap = self.snapshots.get(self.current) if self.current else None
        if snap is None:
            return
        if snap.state not in ("interrupted", "failed"):
            self.notify(f"{snap.run_id} is {snap.state}; only interrupted or failed runs resume", severity="warning")
            return
        self.post_message(ResumeRun(snap.run_id))

    def action_parallel(self, delta: int) -> None:
        self.post_message(ChangeParallel(delta))
