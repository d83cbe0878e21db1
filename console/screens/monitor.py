"""Monitor: live per-iteration curves of attacks (several runs overlaid), progress, ETA, log tail."""
from __future__ import annotations

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, ProgressBar, SelectionList, Static

from ..messages import CancelRun, ChangeParallel, ResumeRun
from ..state.format import fmt_eta, fmt_pct
from ..state.monitor import MonitorSnapshot, RunMonitor
from ..state.runs import run_rows
from ..widgets.plots import CurvePlot

STATE_STYLE = {"running": "yellow", "done": "green", "failed": "red", "interrupted": "magenta", "queued": "cyan"}


class MonitorScreen(Screen):
    BINDINGS = [
        Binding("c", "cancel", "Cancel run"),
        Binding("r", "resume", "Resume"),
        Binding("plus", "parallel(1)", "+parallel"),
        Binding("minus", "parallel(-1)", "-parallel", show=False),
    ]
    POLL_S = 0.5

    def __init__(self):
        super().__init__()
        self.monitors: dict[str, RunMonitor] = {}
        self.snapshots: dict[str, MonitorSnapshot] = {}
        self.known: list[str] = []
        self.current: str | None = None
        self.polls = 0
        self._warned: set[str] = set()

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="mon-side"):
                yield Label("runs (tick to overlay)", classes="pane-title")
                yield SelectionList[str](id="run-list")
                yield Static("", id="queue")
            with Vertical(id="mon-main"):
                with Horizontal(id="plots"):
                    yield CurvePlot("attack success rate", "success", ylim=(0.0, 1.0), id="plot-success")
                    yield CurvePlot("attack loss", "loss", id="plot-loss")
                yield Static("no run selected", id="mon-status")
                yield ProgressBar(id="mon-progress", show_eta=False)
                yield Static("", id="mon-log")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(getattr(self.app, "poll_interval", self.POLL_S), self.poll)
        self.poll()

    # ---- polling: file reads happen in a worker thread, widgets are updated on the UI thread
    def poll(self) -> None:
        selected = list(self.query_one("#run-list", SelectionList).selected)
        wanted = list(dict.fromkeys(selected + ([self.current] if self.current else [])))
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

    def _apply(self, rows: list[dict], snaps: dict[str, MonitorSnapshot]) -> None:
        self.polls += 1
        self.snapshots.update(snaps)
        runs = {r["id"]: r for r in rows}
        sl = self.query_one("#run-list", SelectionList)
        ids = [r["id"] for r in reversed(rows)]  # newest first
        auto = self.app.take_watch_requests(ids)
        if ids != self.known:
            previous = set(sl.selected)
            if not self.known and not auto and not previous:  # first look: the running runs, else the newest
                previous = {i for i in ids if runs[i]["state"] == "running"} or set(ids[:1])
            sl.clear_options()
            for i in ids:
                r = runs[i]
                color = STATE_STYLE.get(r["state"], "white")
                sl.add_option((f"[{color}]●[/] {r['experiment']} [dim]{i[9:15]}[/]", i, i in previous))
            self.known = ids
        for i in auto:
            sl.select(i)
        if auto:
            self.current = auto[-1]
        if self.current is None or self.current not in runs:
            sel = list(sl.selected)
            self.current = sel[0] if sel else (ids[0] if ids else None)
        self._draw(runs)

    @on(SelectionList.SelectionHighlighted, "#run-list")
    def _highlighted(self, event) -> None:
        self.current = event.selection.value
        if self.current in self.snapshots:
            self._draw({})
        self.poll()

    @on(SelectionList.SelectedChanged, "#run-list")
    def _selected(self) -> None:
        self.poll()

    def _draw(self, runs: dict) -> None:
        sl = self.query_one("#run-list", SelectionList)
        overlaid = [i for i in sl.selected if i in self.snapshots]
        multi = len(overlaid) > 1
        success, loss = [], []
        for n, run_id in enumerate(overlaid, 1):
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
        # the highlighted run: state, progress, ETA, log
        snap = self.snapshots.get(self.current) if self.current else None
        status = self.query_one("#mon-status", Static)
        bar = self.query_one("#mon-progress", ProgressBar)
        if snap is None:
            status.update("no run selected — launch one from Experiments (F2) or tick a run on the left")
            bar.update(total=None, progress=0)
            self.query_one("#mon-log", Static).update("")
        else:
            color = STATE_STYLE.get(snap.state, "white")
            p = snap.progress
            extra = ""
            if snap.robust:
                extra = "  robust: " + ", ".join(f"{a} {fmt_pct(v)}" for a, v in sorted(snap.robust.items()))
            hint = ""
            if snap.state in ("interrupted", "failed"):
                hint = "  [b]press r to resume[/b]"
                if snap.run_id not in self._warned and snap.state == "interrupted":
                    self._warned.add(snap.run_id)
                    self.notify(f"{snap.run_id} is interrupted — press r to resume", severity="warning")
            elif snap.state == "running":
                hint = "  [dim]c to cancel[/dim]"
            bad = f"  [red]{snap.bad_lines} bad lines[/red]" if snap.bad_lines else ""
            status.update(f"[b]{snap.run_id}[/b]  [{color}]{snap.state}[/]  {snap.progress_text}  ETA {fmt_eta(snap.eta) if snap.state == 'running' else '-'}"
                          f"{extra}{bad}{hint}" + (f"\n[dim]{escape(snap.message)}[/dim]" if snap.message else ""))
            if p.total:
                bar.update(total=p.total, progress=p.done)
            else:
                bar.update(total=None, progress=0)
            self.query_one("#mon-log", Static).update(escape("\n".join(snap.log_tail[-6:])) or "[dim](no log yet)[/dim]")
        launcher = self.app.launcher
        q = launcher.queued()
        self.query_one("#queue", Static).update(
            f"parallel ≤ {launcher.max_parallel} · running {len(launcher.running())} · queued {len(q)}"
            + "".join(f"\n  ⏳ {j.label}" for j in q[:4]))

    # ---- actions
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
