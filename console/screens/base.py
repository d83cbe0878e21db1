"""What every screen of the console shares: the global keys, first in the footer (so that at
80 columns the footer keeps F1–F4 and quit whatever the screen adds)."""
from __future__ import annotations

from textual.binding import Binding
from textual.screen import Screen

# The three modes, each on an F-key (in the footer, by its short label) and a digit (hidden).
MODE_KEYS = (("experiments", "f2", "1", "Exp", "Experiments"), ("monitor", "f3", "2", "Mon", "Monitor"),
         ("runs", "f4", "3", "Runs", "Runs"))

# priority: they work (and stay in the footer) while a text field has focus; the footer lists
# priority keys first, so these come before each screen's own
GLOBAL_BINDINGS = [
    Binding("f1", "app.help", "Help", priority=True),
    *(Binding(fkey, f"app.switch_mode('{mode}')", short, priority=True) for mode, fkey, _, short, _ in MODE_KEYS),
    Binding("ctrl+q", "app.quit", "Quit", priority=True),
    Binding("q", "app.quit", "Quit", show=False),
    Binding("question_mark", "app.help", "Help", show=False),
    *(Binding(digit, f"app.switch_mode('{mode}')", name, show=False) for mode, _, digit, _, name in MODE_KEYS),
]

class ConsoleScreen(Screen):
    """A screen with the global keys (its own BINDINGS come after them in the footer)."""
    BINDINGS = GLOBAL_BINDINGS
