"""`icr layers`: the module tree of a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from icrcli.cli.app import app
from icrcli.cli.options import Debug, with_model_options


@app.command()
@with_model_options
def layers(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="Checkpoint (as for extract).")],
    depth: Annotated[Optional[int], typer.Option(min=1, help="Show modules down to this nesting depth.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
    debug: Debug = False,
    mopts=None,
):
    """List the network's modules with their output shapes from one dry forward pass; * marks the default tap.

    Activations computed by functions inside a forward (F.relu, a lambda passed to the constructor) are not
    modules, so no --layer reaches them: stderr names them, with the module after each (the nearest tap); to tap
    one, make it a module (nn.ReLU(), nn.SiLU()).

    Examples:

      icr layers edm-cifar10-32x32-uncond-vp.pkl --depth 3

      icr layers ckpt.pt --json | jq -r '.[] | select(.default) | .name'
    """
    from icrcli.cli import console
    from icrcli.models.layers import list_layers, render
    console.set_quiet(False)  # no --quiet here: what was read and loaded is always said
    den, rows = list_layers(checkpoint, mopts, depth)
    for line in [*den.notes(), den.headline()]:
        console.say(line)
    if not den.default_layer:
        console.say("no default layer for this architecture: pass --layer NAME to `icr extract` (a name below)")
    from icrcli.models.untapped import describe
    for line in describe(den.description.get("not_taps") or [], own=den.family == "user"):
        console.say(line)
    if json_out:
        console.write_json(rows, "-")
    else:
        typer.echo(render(rows))


