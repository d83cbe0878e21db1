"""What ``metrics.jsonl`` of a run says (docs/results.md): :class:`MetricsView`, read
incrementally — per-iteration attack curves, robust accuracy so far, evaluation accuracies, ADDT
curves. An event that a resumed run repeats (the batch it was killed in is run again) counts
once: the last one wins."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..store import MetricsReader, RunFileError
from .rows import finite
from .shape import is_int, show

class MetricsView:
    """What ``metrics.jsonl`` of a run says, read incrementally (:meth:`poll` reads what was
    appended since the last call). Events a resumed run repeats count once: per attack
    iteration the key is (attack, stage, seed, batch, step), per ADDT step (variant, step), and
    the last event of a key wins — a re-run batch is deterministic, so it repeats the values."""

    def __init__(self, path: str | os.PathLike):
        self.reader = MetricsReader(Path(path) / "metrics.jsonl")
        self.events = 0
        self.problem: str | None = None  # the first thing wrong with metrics.jsonl (a link, an event's shape)
        self._bad_events = 0
        self._iters: dict[tuple, tuple[float, Any, Any]] = {}
        self._addt: dict[tuple, dict] = {}
        self.robust: dict[str, float] = {}  # attack -> robust accuracy so far (attacker's batches)
        self.evals: dict[str, float] = {}  # clean_acc / purified_acc so far

    @property
    def bad_lines(self) -> int:
        """Lines skipped: not JSON objects, or events of a known kind whose fields have the wrong type."""
        return self.reader.bad_lines + self._bad_events

    def poll(self) -> int:
        """Read the new events; returns how many."""
        try:
            events = self.reader.read()
        except (OSError, RunFileError) as exc:
            self.problem = self.problem or str(exc)
            events = []
        for e in events:
            problem = event_problem(e)
            if problem:
                self._bad_events += 1
                self.problem = self.problem or f"{self.reader.path}: {problem}"
                continue
            self.ingest(e)
        self.events += len(events)
        return len(events)

    def ingest(self, e: dict) -> None:
        kind, step = e.get("kind"), e.get("step")
        if kind == "attack_iter" and isinstance(step, int) and not isinstance(step, bool) and e.get("attack"):
            n = e.get("n") if finite(e.get("n")) and e.get("n") > 0 else 1
            key = (str(e["attack"]), e.get("stage"), e.get("seed"), e.get("batch"), step)
            self._iters[key] = (float(n), e.get("success"), e.get("loss"))
        elif kind == "attack_batch" and finite(e.get("robust_acc")):
            self.robust[str(e.get("attack", "?"))] = float(e["robust_acc"])
        elif kind == "eval":
            for k in ("clean_acc", "purified_acc"):
                if finite(e.get(k)):
                    self.evals[k] = float(e[k])
        elif kind == "addt_step" and isinstance(step, int) and not isinstance(step, bool):
            self._addt[(e.get("variant"), step)] = e

    def attack_curves(self) -> dict[str, dict[str, list]]:
        """Per attack: ``{"iteration", "success", "loss"}``, each iteration's values averaged over
        seeds and batches weighted by batch size (NaN where no finite value was reported)."""
        acc: dict[str, dict[int, list[float]]] = {}
        for (attack, _, _, _, step), (n, success, loss) in self._iters.items():
            s = acc.setdefault(attack, {}).setdefault(step, [0.0, 0.0, 0.0, 0.0])
            if finite(success):
                s[0] += n * float(success)
                s[1] += n
            if finite(loss):
                s[2] += n * float(loss)
                s[3] += n
        curves = {}
        for attack, steps in acc.items():
            it = sorted(steps)
            curves[attack] = {"iteration": it,
                              "success": [steps[i][0] / steps[i][1] if steps[i][1] else math.nan for i in it],
                              "loss": [steps[i][2] / steps[i][3] if steps[i][3] else math.nan for i in it]}
        return curves

    def addt_curves(self) -> dict[str, tuple[list[int], list[float]]]:
        """``addt_step`` fields per step: ``loss``, ``cgpo_loss_init``, ``cgpo_loss_final``,
        ``lambda_mean``, keyed ``field`` or ``field/variant``."""
        curves: dict[str, tuple[list[int], list[float]]] = {}
        for (variant, step), e in sorted(self._addt.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            for name in ("loss", "cgpo_loss_init", "cgpo_loss_final", "lambda_mean"):
                if finite(e.get(name)):
                    key = name if variant is None else f"{name}/{variant}"
                    xs, ys = curves.setdefault(key, ([], []))
                    xs.append(step)
                    ys.append(float(e[name]))
        return curves


_KEY_FIELDS = ("attack", "stage", "seed", "batch", "variant", "model", "noise")  # make up the keys events are merged by


def event_problem(e: dict) -> str | None:
    """What is wrong with the shape of one ``metrics.jsonl`` event (docs/results.md), or None: the
    fields that key and order events must be scalars, ``step`` an integer or null."""
    step = e.get("step")
    if step is not None and not is_int(step):
        return f"an event's field 'step' holds {show(step)}; expected an integer or null"
    for name in _KEY_FIELDS:
        v = e.get(name)
        if v is not None and not isinstance(v, (str, int, float)):
            return f"an event's field '{name}' holds {show(v)}; expected a string or a number"
    if not isinstance(e.get("kind"), str):
        return f"an event's field 'kind' holds {show(e.get('kind'))}; expected a string"
    return None
