"""Help: what each screen does and its key bindings."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# dbp console

Screens: **F2 / 1** Experiments · **F3 / 2** Monitor · **F4 / 3** Runs · **F1 / ?** this help ·
**Ctrl+P** command palette · **q** quit (runs keep going: they are separate processes).

## Experiments
Pick a TOML on the left; every field of the experiment is in the form, validated live by
`dbp_core.config` (errors appear under the field). Empty field = the default.
**Ctrl+S** save as a new file (type the name first) · **Ctrl+L** launch · **Ctrl+N** add an attack.

## Monitor
Attack success rate and loss per iteration (attacker's view, n-weighted over batches),
one line per attack; tick runs on the left to overlay them. Progress, ETA and log tail of the
highlighted run. **c** cancel (SIGINT: the run is marked interrupted, resumable) ·
**r** resume an interrupted/failed run · **+ / -** max parallel runs.

## Runs
History of the run store. **space** select · **s** sort by next column (or click a header) ·
**S** reverse · **enter** watch in monitor · **v** compare selected side by side ·
**x** export selected (or all) to CSV · **p** show the folder path · **r** resume.
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,f1,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
