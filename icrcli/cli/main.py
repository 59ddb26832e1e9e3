"""Console entry point: the commands registered on one app, and the mapping of errors to exit codes."""

from __future__ import annotations

import sys
import traceback

from icrcli.cli import cache_cmd, demo, extract, info, layers, memorization, plot, probe, score, sweep, timeline  # noqa: F401  registers the commands
from icrcli.cli.app import app


def main() -> None:
    """Console entry point: exit 0 on success, 2 for bad usage or input, 1 for anything unexpected.
    typer/click handle usage errors (exit 2), --help and --version themselves, by SystemExit."""
    from icrcli.errors import UserError

    debug = "--debug" in sys.argv
    try:
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
