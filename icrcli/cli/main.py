"""Console entry point: the commands registered on one app, and the mapping of errors to exit codes."""

from __future__ import annotations

import sys
import traceback

# Command name -> the module in icrcli.cli that registers it on the app (a new command: add it here).
COMMANDS = {"cache": "cache_cmd", "demo": "demo", "extract": "extract", "info": "info", "layers": "layers",
            "memorization": "memorization", "merge": "merge", "plot": "plot", "probe": "probe", "score": "score",
            "sweep": "sweep", "timeline": "timeline"}


def register(argv: list[str] | None = None) -> None:
    """Import the command modules, each of which registers its command: only the one named on the command line
    when it names one (typer builds the options of every registered command on every call, which costs start-up
    time), else all of them (--help, a typo, shell completion)."""
    import importlib
    import os
    name = argv[1] if argv and len(argv) > 1 else None
    names = [name] if name in COMMANDS and "_ICR_COMPLETE" not in os.environ else list(COMMANDS)
    for n in names:
        importlib.import_module(f"icrcli.cli.{COMMANDS[n]}")


def __getattr__(attr: str):
    """`from icrcli.cli.main import app`: the app with every command registered."""
    if attr == "app":
        register()
        from icrcli.cli.app import app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


EXIT_INTERRUPTED = 130   # Ctrl-C: 128 + SIGINT
EXIT_TERMINATED = 143    # SIGTERM: 128 + 15
_TERMINATED: list[int] = []   # set by the SIGTERM handler: typer turns any KeyboardInterrupt into exit 130


def _sigterm_as_interrupt():
    """SIGTERM (CI runners, `timeout`, `kill`) raises Terminated, a KeyboardInterrupt: every command keeps what
    it finished and says how to resume, as on Ctrl-C, and exits 143. Once: a second SIGTERM kills at once."""
    import signal

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _TERMINATED.append(signum)
        from icrcli.errors import Terminated
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:   # not the main thread (icr's main() called from a thread): leave it as it is
        return None


def main() -> None:
    """Console entry point: exit 0 on success, 2 for bad usage or input, 1 for anything unexpected.
    typer/click handle usage errors (exit 2), --help and --version themselves, by SystemExit."""
    from icrcli import threads
    # first: the OpenMP runtime reads it when torch loads (icrcli.threads says why); --help loads no torch, so it
    # does not sample the machine's load
    threads.configure(busy=False if {"--help", "-h", "--version"} & set(sys.argv[1:]) else None)
    from icrcli.dist import who
    from icrcli.errors import UserError

    debug = "--debug" in sys.argv
    before = _sigterm_as_interrupt()
    _TERMINATED.clear()
    try:
        register(sys.argv)
        from icrcli.cli.app import app
        try:
            app()
        except SystemExit as e:
            if e.code == EXIT_INTERRUPTED and _TERMINATED:   # typer's exit for an interruption that was a SIGTERM
                print("icr: terminated (SIGTERM)", file=sys.stderr)
                sys.exit(EXIT_TERMINATED)
            raise
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"icr: error{who()}: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        from icrcli.errors import Terminated
        term = isinstance(e, Terminated)
        print(f"icr: {'terminated (SIGTERM)' if term else 'interrupted'}{who()}", file=sys.stderr)
        sys.exit(EXIT_TERMINATED if term else EXIT_INTERRUPTED)
    except Exception as e:  # a bug or an environment problem we did not foresee
        if debug:
            traceback.print_exc()
        print(f"icr: unexpected error{who()}: {type(e).__name__}: {e}\n(re-run with --debug for the traceback, "
              "and please report it)", file=sys.stderr)
        sys.exit(1)
    finally:
        if before is not None:   # main() called in-process (tests, embedding): give the handler back
            import signal
            signal.signal(signal.SIGTERM, before)
