"""What the console's tests share: the fixed fake run store (tests/data/console_runs: fixed
timestamps, a fake host), its run ids, and waiting on a condition while the app runs."""
from __future__ import annotations

import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "console_runs"  # experiments/ and runs/
A1, B2, C3, D4, F6 = ("20250101-120000-attack-tiny-a1a1a1", "20250102-093000-attack-tiny-b2b2b2",
                      "20250103-080000-attack-tiny-c3c3c3", "20250104-070000-quickstart-d4d4d4",
                      "20250106-090000-attack-tiny-f6f6f6")
SWEEP = "sweep-20250107-100000-attack-tiny-7a7a7a"


async def until(pilot, cond, timeout=30.0, what="condition", poll=0.1):
    """Let the app run until ``cond()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(poll)


def screen_is(app, name: str) -> bool:
    """Whether the app's current screen is of the class ``name``."""
    return app.screen.__class__.__name__ == name
