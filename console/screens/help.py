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
Pushed views (compare, config, report, sweep) go back with **Esc**.

## Experiments
Pick a TOML on the left; every field of the experiment is in the form, validated live by
`dbp_core.config` (errors under the field, and listed below the form). The panel beside the
form explains the focused field (its default, its choices). Empty field = the default.
**Ctrl+S** save as a new file (asks its name; `name` inside follows it; comments kept) ·
**Ctrl+L** launch · **Ctrl+W** sweep the focused field over a list of values ·
**Ctrl+N** add an attack (pick its kind) · **Ctrl+D** or "✕ remove" remove the attack of the
focused field · **F8** go to the next field with an error.

## Monitor
Attack success rate and loss per iteration (attacker's view, n-weighted over batches),
one line per attack; tick runs on the left (**space**) to overlay them: each ticked run gets a
number, shown in the list, in the legend and in the plot labels (`1:pgd-eot-linf`).
**x** clear the overlay · **c** cancel (SIGINT: the run is marked interrupted, resumable) ·
**r** resume an interrupted/failed run · **+ / -** max parallel runs (running runs of the store
count, whoever started them). A finished run shows its accuracy table with intervals, the
paired differences, the headline and the audit flags.

## Runs
History of the run store. **/** filter (`name:quick state:done words`) · **space** select ·
**s** / **S** sort / reverse (or click a header) · **enter** watch in the monitor ·
**v** compare the selected runs (settings that differ, paired differences) ·
**x** export the selected (or all) to CSV (with their settings; the path stays below) ·
**d** delete (moved to `.trash/`; never a running run) · **f** frozen config ·
**g** report (`dbp report`, figures) · **w** sweep view of a point's sweep · **p** folder path ·
**r** resume.

## Sweeps
One run per value of a field (`dbp sweep FILE --grid key=v1,v2`), same seeds so that every
point attacks the same examples. The sweep view plots robust accuracy against the value,
one line per attack with its 95% interval; **g** writes its report (`sweep.png`).
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,f1,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
