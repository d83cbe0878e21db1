"""The console's state, without Textual or torch: one module per screen or idea.

* :mod:`console.state.experiments` — the experiment files and the form over one of them;
* :mod:`console.state.monitor` — following a run folder live (status, curves, log);
* :mod:`console.state.runs` — the rows of the runs table, sorting, comparing, CSV export;
* :mod:`console.state.format` — how numbers and times are shown.

Everything about a run is read back from its folder through :mod:`dbp_core.results`, the one
read side of the run store (docs/results.md); the console never owns a run. The modules are
testable on their own and safe to call from worker threads.
"""
