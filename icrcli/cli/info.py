"""`icr info`: what a feature file holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icrcli.cli.app import app
from icrcli.cli.options import Debug


@app.command()
def info(
    features: Annotated[Path, typer.Argument(metavar="FEATURES", help="Feature file (.h5) or .npy array.")],
    json_out: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
    debug: Debug = False,
):
    """Describe a feature file: shape, dtype, layers, provenance, completeness.

    Examples:

      icr info feats.h5

      icr info feats.h5 --json | jq .layers
    """
    from icrcli.cli import console
    from icrcli.features.inspect import describe, render
    d = describe(features)
    if json_out:
        console.write_json({"schema": 1, **d}, "-")
    else:
        typer.echo(render(d))


