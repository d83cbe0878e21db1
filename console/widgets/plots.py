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
