"""A plugin module that calls sys.exit() when imported (bad configs 80, 82)."""
import sys

sys.exit(3)


def net():  # pragma: no cover — never reached
    return None
