"""User code that ends badly, for the guard tests (tests/test_bad_inputs.py): plugins that call
``sys.exit()``, raise ``SystemExit(0)``, an empty ``MemoryError``, or ``os.abort()`` after some
calls. ``DBP_TEST_EXIT`` picks how (``exit1`` / ``exit0`` / ``memory`` / ``abort`` / ``interrupt``; unset: never),
``DBP_TEST_EXIT_AFTER`` after how many calls, ``DBP_TEST_EXIT_RANK`` on which torchrun rank
(default: every rank)."""
from __future__ import annotations

import os
import sys

from tests.plugins import QuadrantClassifier, identity_attack, tiny_dataset


def _end_badly(where: str) -> None:
    rank = os.environ.get("DBP_TEST_EXIT_RANK")
    if rank is not None and os.environ.get("RANK", "0") != rank:
        return
    how = os.environ.get("DBP_TEST_EXIT")
    if not how:  # unset: the plugin behaves (a resumed run completes)
        return
    if how == "exit1":
        sys.exit(f"{where} gave up on purpose")
    if how == "exit0":
        raise SystemExit(0)
    if how == "memory":
        raise MemoryError()
    if how == "abort":
        os.abort()
    if how == "interrupt":  # as Ctrl-C would: the run stops, resumable
        raise KeyboardInterrupt
    raise AssertionError(f"unknown DBP_TEST_EXIT {how!r}")


class _Exiting(QuadrantClassifier):
    def __init__(self):
        super().__init__()
        self.calls, self.after = 0, int(os.environ.get("DBP_TEST_EXIT_AFTER", "2"))

    def forward(self, x):
        self.calls += 1
        if self.calls > self.after:
            _end_badly("the classifier")
        return super().forward(x)


def exiting_classifier():
    return _Exiting()


_dataset_calls = [0]


def exiting_dataset(split: str = "test", root: str | None = None):
    """Ends badly on its second call in a process: the run's (the check before the run calls it first)."""
    _dataset_calls[0] += 1
    if _dataset_calls[0] > 1:
        _end_badly("the dataset")
    return tiny_dataset(split, root)


def exiting_stage(ctx):
    _end_badly("the stage")
    return {}


def exiting_attack(model, x, y, uids, cfg=None):
    """Ends badly past the first two examples (the check before the run calls it on those)."""
    if int(uids.min()) >= 2:
        _end_badly("the attack")
    return identity_attack(model, x, y, uids, cfg)
