"""Curve plots (textual-plotext): one line per (run, attack)."""
from __future__ import annotations

from textual_plotext import PlotextPlot


class CurvePlot(PlotextPlot):
    """A plot of per-iteration curves. ``set_series`` replaces all lines; ``points`` counts
    the points currently drawn (used by tests and the status line)."""

    def __init__(self, title: str, ylabel: str, *, ylim: tuple[float, float] | None = None, **kw):
        super().__init__(**kw)
        self.title = title
        self.ylabel = ylabel
        self.ylim = ylim
        self.series: list[tuple[str, list, list]] = []
        self.points = 0

    def on_mount(self) -> None:
        super().on_mount()
        self._draw()

    def set_series(self, series: list[tuple[str, list, list]]) -> None:
        if series == self.series:
            return
        self.series = [(label, list(xs), list(ys)) for label, xs, ys in series]
        self.points = sum(len(xs) for _, xs, _ in self.series)
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title)
        plt.xlabel("iteration")
        if self.ylim:
            plt.ylim(*self.ylim)
        drawn = False
        for label, xs, ys in self.series:
            if xs:
                plt.plot(xs, ys, label=label, marker="braille")
                drawn = True
        if not drawn:
            plt.text("waiting for metrics…", 0.5, 0.5 if not self.ylim else sum(self.ylim) / 2)
            plt.xlim(0, 1)
        self.refresh()


COLOURS = ("cyan", "orange", "green", "magenta", "blue", "red", "yellow", "white")


class SweepPlot(PlotextPlot):
    """Robust accuracy (%) against a swept value, one line per attack, each point's 95% interval
    drawn as a vertical segment in the line's colour. ``points`` counts the points drawn."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.key = "value"
        self.series: list = []
        self.ticks: list[str] = []
        self.numeric = True
        self.points = 0

    def on_mount(self) -> None:
        super().on_mount()
        self._draw()

    def set_sweep(self, key: str, series: list, numeric: bool, ticks: list[str]) -> None:
        """``series``: objects with ``label``, ``xs``, ``ys``, ``lo``, ``hi`` (console.state.sweeps)."""
        data = (key, [(s.label, s.xs, s.ys, s.lo, s.hi) for s in series], numeric, list(ticks))
        if data == (self.key, self.series, self.numeric, self.ticks):
            return
        self.key, self.series, self.numeric, self.ticks = data
        self.points = sum(len(s[1]) for s in self.series)
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(f"robust accuracy (%) vs {self.key}")
        plt.xlabel(self.key)
        plt.ylim(0, 100)
        drawn = False
        for n, (label, xs, ys, lo, hi) in enumerate(self.series):
            if not xs:
                continue
            colour = COLOURS[n % len(COLOURS)]
            plt.plot(xs, ys, label=label, marker="braille", color=colour)
            plt.scatter(xs, ys, marker="●", color=colour)
            for x, low, high in zip(xs, lo, hi):
                plt.plot([x, x], [low, high], marker="│", color=colour)
            drawn = True
        if not self.numeric and self.ticks:
            plt.xticks(list(range(len(self.ticks))), self.ticks)
        if not drawn:
            plt.text("waiting for the first point…", 0.5, 50)
            plt.xlim(0, 1)
        self.refresh()
