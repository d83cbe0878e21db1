"""``python -m tests.slow_walk ARGS`` is ``dbp ARGS`` on a filesystem where listing the folder named
``$DBP_TEST_SLOW_DIR`` never ends (a hung network mount; tests/test_hostile_round3.py): the listing
writes the file ``$DBP_TEST_HANG_MARK`` when it starts, so a test knows when to send a signal, then
waits for ever."""
import os
import runpy
import sys
import time

_scandir = os.scandir


def _hung_scandir(path="."):
    if os.path.basename(os.fspath(path)) == os.environ["DBP_TEST_SLOW_DIR"]:
        with open(os.environ["DBP_TEST_HANG_MARK"], "w") as fh:
            fh.write(str(os.getpid()))
        while True:
            time.sleep(0.01)
    return _scandir(path)


if __name__ == "__main__":
    os.scandir = _hung_scandir
    sys.argv = ["dbp", *sys.argv[1:]]
    runpy.run_module("dbp_core", run_name="__main__", alter_sys=True)
