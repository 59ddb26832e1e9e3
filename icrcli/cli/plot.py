"""`icr plot`: redraw a saved sweep or timeline result, without recomputing anything."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icrcli.cli.app import app
from icrcli.cli.options import Debug, Quiet


@app.command()
def plot(
    result: Annotated[Path, typer.Argument(metavar="RESULT", help="JSON written by `icr sweep` or `icr timeline` "
                                           "(-o FILE, or their stdout saved to a file).")],
    output: Annotated[Path, typer.Option("-o", "--output", metavar="FILE",
                                         help="Plot file: .png, .svg or .pdf.")],
    quiet: Quiet = False,
    debug: Debug = False,
):
    """Redraw a saved sweep or timeline result as a plot (needs matplotlib: pip install 'icr\\[plot]').

    Examples:

      icr plot sweep.json -o sweep.png

      icr plot timeline.json -o timeline.svg
    """
    import json

    from icrcli.cli import console
    from icrcli.errors import UserError
    from icrcli.report.plot import plot_result

    from icrcli.report.checkresult import MAX_BYTES

    console.set_quiet(quiet)
    if not result.exists():
        raise UserError(f"{result}: no such file. Give the JSON that `icr sweep` or `icr timeline` wrote.")
    if not result.is_file() or result.stat().st_size > MAX_BYTES:   # a folder, a device (/dev/zero), a huge file
        what = "a folder" if result.is_dir() else "not a regular file" if not result.is_file() else "too large"
        raise UserError(f"{result} is {what}; give the JSON file that `icr sweep` or `icr timeline` wrote.")
    try:
        data = json.loads(result.read_bytes())
    except OSError as e:
        raise UserError(f"{result}: cannot be read ({e.strerror or e}).") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise UserError(f"{result}: not a JSON result ({str(e)[:200]}). Give the JSON that `icr sweep` or "
                        "`icr timeline` wrote.") from None
    from icrcli.cli.outputs import check_output
    from icrcli.report.checkresult import check_result
    from icrcli.report.plot import check_plot_path
    check_result(data, str(result))     # before the output is looked at: a bad input says so first
    check_plot_path(output)
    check_output(output, "-o", [("the result being plotted", result)], "plot")
    console.say(f"wrote {plot_result(data, output, str(result))}")
