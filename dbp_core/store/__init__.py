"""The write side of the run store (docs/design.md, "The run folder"): one folder per run, plain
files, crash-safe. The read side is :mod:`dbp_core.results`.

``<root>/<run-id>/`` — a run (:mod:`.run`: :class:`Run`, :class:`RunWriter`, :class:`FollowerRun`)
  ``config.toml``     the resolved config, frozen at creation             :mod:`.run_store`
  ``status.json``     state, pid, host, progress, ETA — replaced atomically :mod:`.status`
  ``metrics.jsonl``   append-only events, one per line                    :mod:`.metrics`
  ``results.json``    the final table, only when the run is done          :mod:`.run`
  ``checkpoints/``    stage checkpoints — replaced atomically             :mod:`.run`
  ``log.txt``         human-readable log, tracebacks of failures          :mod:`.log`
  ``analysis/``, ``models/``, ``report/``  what stages and reports write   :mod:`.run`
  ``checksums.json``  SHA-256 of what dbp wrote, verified on resume       :mod:`.integrity`
  ``plugins.json``    the plugins' files and sha256                       :mod:`.integrity`
  ``.reserve``        64 KB held while the run runs, for its last words   :mod:`.reserve`
  ``.lock``           flock'ed by the one process running the run         :mod:`.lock`
``<root>/sweep-<...>/`` — a sweep: ``sweep.json``, ``points.jsonl``, ``config.toml``   :mod:`.sweeps`
``<root>/.trash/<run-id>/`` — runs moved away by :meth:`RunStore.trash`              :mod:`.run_store`

Under all of them: :mod:`.files` (atomic writes, files opened without following links, the
:class:`RunFileError` of a damaged file) and :mod:`.ids` (run and sweep ids). A run's status is
a :class:`RunStatus`, read and written by the store alone; a process running a run writes
through a :class:`RunWriter`.
"""
from .files import RunFileError, atomic_write, atomic_write_json, read_json_object
from .ids import SWEEP_PREFIX, RunId, parse_run_id
from .integrity import file_digest
from .lock import RunLocked, pid_alive
from .metrics import MetricsReader, read_metrics
from .run import FollowerRun, Run, RunWriter
from .run_store import TRASH, RunNotFound, RunStore, RunStoreError, default_runs_dir
from .status import FINAL_STATES, STATES, Progress, RunStatus
from .sweeps import Sweep, SweepPoint, toml_value

__all__ = ["RunStore", "Run", "FollowerRun", "RunWriter", "RunStatus", "Progress", "RunNotFound", "RunLocked",
           "RunFileError", "RunStoreError", "MetricsReader", "read_metrics", "atomic_write", "atomic_write_json",
           "read_json_object", "file_digest", "STATES", "FINAL_STATES", "pid_alive", "default_runs_dir",
           "parse_run_id", "RunId", "Sweep", "SweepPoint", "toml_value", "SWEEP_PREFIX", "TRASH"]
