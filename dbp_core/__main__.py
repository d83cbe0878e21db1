"""``python -m dbp_core`` = the ``dbp`` command (``entry`` is also the ``dbp`` script).

Ctrl-C or SIGTERM while the command is still starting (importing) ends it like later: one
line, exit 130, no traceback. A launcher may start ``dbp`` with SIGINT and SIGTERM blocked
(``pthread_sigmask``): they are unblocked here, once they can be handled, so a signal sent
while the interpreter itself starts is delivered then instead of interrupting Python's own
start-up (docs/design.md, "Stages and the runner")."""
import signal
import sys

from .interrupts import deferred


def entry() -> None:
    # both end as KeyboardInterrupt; SIGINT too when the parent ignored it (a shell's background job
    # inherits SIG_IGN, which Python keeps): dbp is stopped by the signals it is sent, like a run is
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with deferred():  # the imports: a signal is recorded and taken once they are done
            if hasattr(signal, "pthread_sigmask"):  # a launcher may start dbp with the signals blocked
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            from .cli import main
        code = main()
    except KeyboardInterrupt:
        print("dbp: interrupted", file=sys.stderr)
        code = 130
    # the command is over (a run's state is recorded): a late second signal changes nothing
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    entry()
