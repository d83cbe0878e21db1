"""SIGINT and SIGTERM, in the process itself (dbp_core/interrupts.py; docs/design.md, "Signals"):
deferred, allowed, ignored, and the runner's gate. The CLI's and the runner's use of them, in
real processes, is tested in tests/test_bad_inputs.py and tests/test_cli.py."""
from __future__ import annotations

import signal
import threading

import pytest

from dbp_core.interrupts import Gate, Interrupted, allowed, deferred, ignored, install, restore


@pytest.fixture
def recorded():
    """SIGINT and SIGTERM recorded in a list while the test runs (the handlers put back after)."""
    seen: list[int] = []
    previous = install(lambda signum, frame: seen.append(signum))
    try:
        yield seen
    finally:
        restore(previous)


def test_deferred_delivers_a_signal_when_the_block_ends(recorded):
    inside = []
    with deferred():
        signal.raise_signal(signal.SIGTERM)
        inside.append(list(recorded))  # not handled yet
    assert inside == [[]]
    assert recorded == [signal.SIGTERM]


def test_allowed_lets_a_signal_act_inside_deferred():
    previous = install(signal.default_int_handler)
    reached = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with deferred():
                with allowed():
                    signal.raise_signal(signal.SIGINT)
                    reached.append("after the signal")
    finally:
        restore(previous)
    assert reached == []


def test_ignored_drops_signals_and_restores_the_handlers(recorded):
    with ignored():
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
    assert recorded == []
    signal.raise_signal(signal.SIGTERM)
    assert recorded == [signal.SIGTERM]


def test_the_gate_holds_a_signal_over_a_block_then_raises_once():
    gate = Gate()
    previous = gate.install()
    reached = []
    try:
        with pytest.raises(Interrupted) as caught:
            with gate.held():
                signal.raise_signal(signal.SIGTERM)
                reached.append("the block ran to its end")
        assert caught.value.signum == signal.SIGTERM
        signal.raise_signal(signal.SIGINT)  # the run is already stopping: later signals are ignored
    finally:
        restore(previous)
    assert reached == ["the block ran to its end"]


def test_the_gate_drops_a_held_signal_when_told_not_to_deliver_it():
    gate = Gate()
    previous = gate.install()
    try:
        with gate.held(deliver=False):
            signal.raise_signal(signal.SIGINT)
    finally:
        restore(previous)
    assert not gate.raised


def test_off_the_main_thread_the_handlers_are_left_alone():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen = []

    def worker():
        with ignored(), deferred(), allowed():
            seen.append({s: signal.getsignal(s) for s in before})
        seen.append(Gate().install())
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before, {}]
