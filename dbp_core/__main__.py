"""``python -m dbp_core`` = the ``dbp`` command (``entry`` is also the ``dbp`` script).

Ctrl-C or SIGTERM while the command is still starting (importing) ends it like later: one
line, exit 130, no traceback. A launcher may start ``dbp`` with SIGINT and SIGTERM blocked
(``pthread_sigmask``): they are unblocked here, once they can be handled, so a signal sent
while the interpreter itself starts is delivered then instead of interrupting Python's own
start-up (docs/design.md, "Stages and the runner")."""
import signal
import sys


def entry() -> None:
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # both end as KeyboardInterrupt
    try:
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        from .cli import main
        code = main()
    except KeyboardInterrupt:
        print("dbp: interrupted", file=sys.stderr)
        code = 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code)


if __name__ == "__main__":
    entry()
