"""What every screen of the console shares: the global keys, first in the footer (so that at
80 columns the footer keeps F1–F4 and quit whatever the screen adds)."""
from __future__ import annotations

from textual.binding import Binding
from textual.screen import Screen

# priority: they work (and stay in the footer) while a text field has focus; the footer lists
# priority keys first, so these come before each screen's own
GLOBAL_BINDINGS = [
    Binding("f1", "app.help", "Help", priority=True),
    Binding("f2", "app.switch_mode('experiments')", "Exp", priority=True),
    Binding("f3", "app.switch_mode('monitor')", "Mon", priority=True),
    Binding("f4", "app.switch_mode('runs')", "Runs", priority=True),
    Binding("ctrl+q", "app.quit", "Quit", priority=True),
    Binding("q", "app.quit", "Quit", show=False),
    Binding("question_mark", "app.help", "Help", show=False),
    Binding("1", "app.switch_mode('experiments')", "Experiments", show=False),
    Binding("2", "app.switch_mode('monitor')", "Monitor", show=False),
    Binding("3", "app.switch_mode('runs')", "Runs", show=False),
]


class ConsoleScreen(Screen):
    """A screen with the global keys (its own BINDINGS come after them in the footer)."""
    BINDINGS = GLOBAL_BINDINGS
