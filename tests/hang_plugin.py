"""A plugin module that never finishes importing (tests/test_plugin_contract.py): it writes the file
``$DBP_TEST_HANG_MARK`` when its import starts, so a test knows when to send a signal, then loops."""
import os
import time

_mark = os.environ.get("DBP_TEST_HANG_MARK")
if _mark:
    with open(_mark, "w") as fh:
        fh.write(str(os.getpid()))
while True:
    time.sleep(0.01)


def attack(model, x, y, uids, cfg):  # pragma: no cover — never reached
    return x
