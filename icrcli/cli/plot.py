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

    console.set_quiet(quiet)
    try:
        data = json.loads(result.read_text())
    except FileNotFoundError:
        raise UserError(f"{result}: no such file. Give the JSON that `icr sweep` or `icr timeline` wrote.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{result}: not a JSON result ({e}). Give the JSON that `icr sweep` or `icr timeline` "
                        "wrote.") from None
    from icrcli.outputs import check_output
    from icrcli.report.plot import check_plot_path
    check_plot_path(output)
    check_output(output, "-o", [("the result being plotted", result)], "plot")
    console.say(f"wrote {plot_result(data, output)}")
