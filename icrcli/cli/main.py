"""Console entry point: the commands registered on one app, and the mapping of errors to exit codes."""

from __future__ import annotations

import sys
import traceback

# Command name -> the module in icrcli.cli that registers it on the app (a new command: add it here).
COMMANDS = {"cache": "cache_cmd", "demo": "demo", "extract": "extract", "info": "info", "layers": "layers",
            "memorization": "memorization", "plot": "plot", "probe": "probe", "score": "score", "sweep": "sweep",
            "timeline": "timeline"}


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


def main() -> None:
    """Console entry point: exit 0 on success, 2 for bad usage or input, 1 for anything unexpected.
    typer/click handle usage errors (exit 2), --help and --version themselves, by SystemExit."""
    from icrcli.errors import UserError

    debug = "--debug" in sys.argv
    try:
        register(sys.argv)
        from icrcli.cli.app import app
        app()
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"icr: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("icr: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # a bug or an environment problem we did not foresee
        if debug:
            traceback.print_exc()
        print(f"icr: unexpected error: {type(e).__name__}: {e}\n(re-run with --debug for the traceback, "
              "and please report it)", file=sys.stderr)
        sys.exit(1)
