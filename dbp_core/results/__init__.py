"""The read side of the run store: one reader of run folders for ``dbp runs/show/export``,
``dbp report`` and the console (docs/design.md, "The read side"; docs/results.md). The write
side is :mod:`dbp_core.store`.

* :mod:`.run_view` — :func:`read_run`, a :class:`RunView` of one folder: its typed status, its
  ``results.json`` (shape checked), and the problems of damaged files, named — it never raises on
  a damaged run; :func:`list_runs`, the views of every run of a store, oldest first;
  :func:`running_runs`, the runs whose process is alive;
* :mod:`.shape` — the shape of ``results.json`` and ``analysis/*.json`` (:func:`check_results`,
  :func:`read_analysis`);
* :mod:`.rows` — :func:`headline`, the number a run is summed up by; :func:`row_meaning`, what an
  accuracy row measures, in words (``dbp show``, the console); percentages;
* :mod:`.metrics` — :class:`MetricsView`, what ``metrics.jsonl`` says, read incrementally:
  per-iteration attack curves, robust accuracy so far, evaluation accuracies, ADDT curves. An
  event that a resumed run repeats (the batch it was killed in is run again) counts once: the
  last one wins;
* :mod:`.export` — :func:`export_rows` / :data:`EXPORT_COLUMNS`, the CSV rows of ``dbp export``
  and the console, with the run's settings as columns (``attack.*`` for the row's attack,
  ``config.*`` the rest);
* :mod:`.settings`, :mod:`.compare` — :func:`setting_differences`, what differs between runs'
  frozen configs; :func:`paired_between`, paired differences between runs on the examples they
  share (per-example outcomes);
* :mod:`.sweeps` — :func:`read_sweep` / :class:`SweepView`, :func:`list_sweeps`: a sweep's points,
  the robust accuracy of the attack(s) it sweeps per point (:meth:`SweepView.point_rows`), its
  accuracy-vs-value curves, and its CSV rows (:func:`sweep_export_rows`);
* :func:`parse_run_id` — the parts of a run id (format owned by :mod:`dbp_core.store.ids`).

Nothing here imports torch.
"""
from ..store import RunId, RunStatus, parse_run_id
from .compare import paired_between, per_example_outcomes, same_examples
from .export import EXPORT_COLUMNS, config_columns, export_fieldnames, export_rows, write_csv
from .metrics import MetricsView, event_problem
from .rows import PROTOCOL_MEANINGS, RESULTS_SCHEMA, fmt_pct, headline, headline_text, row_meaning
from .run_view import RunView, list_runs, read_run, running_runs
from .settings import flat_settings, setting_differences
from .shape import check_landscape, check_results, check_trajectory, read_analysis
from .sweeps import (SweepExport, SweepPointView, SweepView, list_sweeps, point_run_mismatch, read_sweep,
                     swept_attack_index, sweep_export_rows)

__all__ = ["RESULTS_SCHEMA", "headline", "check_results", "check_trajectory", "check_landscape", "read_analysis",
           "RunView", "read_run", "list_runs", "MetricsView", "event_problem",
           "EXPORT_COLUMNS", "export_rows", "write_csv", "parse_run_id", "RunId", "RunStatus", "fmt_pct",
           "headline_text", "row_meaning", "PROTOCOL_MEANINGS", "flat_settings", "setting_differences",
           "same_examples", "paired_between", "per_example_outcomes", "SweepView", "read_sweep", "list_sweeps",
           "running_runs", "config_columns", "export_fieldnames", "SweepPointView", "swept_attack_index",
           "point_run_mismatch", "SweepExport", "sweep_export_rows"]
