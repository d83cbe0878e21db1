"""What every screen of the console shares: the global keys, first in the footer (so that at
80 columns the footer keeps F1–F4 and q whatever the screen adds), and a compact footer."""
from __future__ import annotations

from textual.binding import Binding
from textual.screen import Screen

GLOBAL_BINDINGS = [
    Binding("f1,question_mark", "app.help", "Help"),
    Binding("f2", "app.switch_mode('experiments')", "Exp"),
    Binding("f3", "app.switch_mode('monitor')", "Mon"),
    Binding("f4", "app.switch_mode('runs')", "Runs"),
    Binding("1", "app.switch_mode('experiments')", "Experiments", show=False),
    Binding("2", "app.switch_mode('monitor')", "Monitor", show=False),
    Binding("3", "app.switch_mode('runs')", "Runs", show=False),
    Binding("q,ctrl+q", "app.quit", "Quit"),  # ctrl+q while a text field takes the q
]


class ConsoleScreen(Screen):
    """A screen with the global keys (its own BINDINGS come after them in the footer)."""
    BINDINGS = GLOBAL_BINDINGS
