"""``python -m dbp_core`` = the ``dbp`` command (``entry`` is also the ``dbp`` script).

Ctrl-C or SIGTERM while the command is still starting (importing) ends it like later: one
line, exit 130, no traceback. A launcher may start ``dbp`` with SIGINT and SIGTERM blocked
(``pthread_sigmask``): they are unblocked here, once they can be handled, so a signal sent
while the interpreter itself starts is delivered then instead of interrupting Python's own
start-up (docs/design.md, "Stages and the runner")."""
import signal
import sys


def entry() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # both end as KeyboardInterrupt
    try:
        if hasattr(signal, "pthread_sigmask"):
            # Rust extensions (pydantic-core, safetensors) panic if a KeyboardInterrupt lands in their
            # module initialisation: import them with the signals held, then let the signals through
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            # (and the command line's own modules: an interrupt raised inside an import's lock
            # callback is printed and dropped by Python, and the command would go on)
            for name in ("datetime", "pydantic_core", "safetensors"):
                try:
                    __import__(name)
                except ImportError:
                    pass
            from .cli import main
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
