"""``dbp report RUN [RUN ...]``: PNG figures and a ``report.md`` per run (docs/reports.md).

Reads only plain files of the run store — ``results.json`` (docs/results.md),
``metrics.jsonl`` (``attack_iter``, ``addt_step`` events), ``analysis/trajectory.json``
and ``analysis/landscape.json`` — so it works on finished, failed or still-running
runs; every figure whose data is absent is skipped (and said so in ``report.md``).

Per run, into ``<run>/report/``:

=======================  ==========================================================
``attack_success.png``   one panel per attack: attacker's success rate and loss per iteration
``accuracy.png``         accuracy grouped by norm and attack, protocols side by side (``single``
                         first), 95% interval error bars; one column of panels per model
``trajectory.png``       gradient cosine similarity across iterations / EOT replicas, loss
``landscape_1d.png``     loss along the attack direction, fixed vs fresh noise
``landscape_2d.png``     loss on the 2-D grid (attack x random direction), fixed vs fresh
``addt_loss.png``        ADDT training loss, CGPO loss before/after, mean lambda per step
``report.md``            the figures, the results table and the paired comparisons
=======================  ==========================================================

With several runs, a comparison (``compare_accuracy.png``, ``compare_attack_success.png``, a
side-by-side table, the settings that differ, paired differences on shared examples) with its
own ``report.md`` goes into ``<first run>/report/comparison/``, or into ``--out DIR``. A sweep
(``dbp report <sweep>``) gets ``sweep.png`` (robust accuracy against the swept value) and a
``report.md`` in ``<sweep>/report/``.

Where each part lives: :mod:`.data` (what a report reads of a run), :mod:`.figures` and
:mod:`.accuracy` (the figures), :mod:`.tables` (the markdown), :mod:`.run_report` (one run),
:mod:`.compare` (several runs), :mod:`.sweep` (a sweep).
"""
from .accuracy import PROTOCOL_ORDER, accuracy_figure, plot_accuracy
from .compare import comparison_lines, write_reports
from .data import RunData, load_run
from .run_report import FIGURES, write_report
from .sweep import write_sweep_report
from .tables import comparisons_table, results_table

__all__ = ["RunData", "load_run", "write_report", "write_reports", "write_sweep_report", "FIGURES",
           "PROTOCOL_ORDER", "accuracy_figure", "plot_accuracy", "comparison_lines", "results_table",
           "comparisons_table"]
