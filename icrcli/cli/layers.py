"""`icr layers`: the module tree of a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from icrcli.cli.app import app
from icrcli.cli.options import (Arch, ArchArg, Call, ClassLabel, DataRange, Debug, ImageShape, Key, ParamOpt,
                                Schedule, TimeConv, TimeInput, TimeShape, TrustPickle, model_options)


@app.command()
def layers(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="Checkpoint (as for extract).")],
    depth: Annotated[Optional[int], typer.Option(min=1, help="Show modules down to this nesting depth.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
    arch: Arch = None, arch_arg: ArchArg = None, key: Key = None, trust_pickle: TrustPickle = False,
    param: ParamOpt = None, schedule: Schedule = None, time_input: TimeInput = None, time_shape: TimeShape = None,
    time_convention: TimeConv = None, data_range: DataRange = None, call: Call = None,
    class_label: ClassLabel = None, image_shape: ImageShape = None,
    debug: Debug = False,
):
    """List the network's modules with their output shapes from one dry forward pass; * marks the default tap.

    Examples:

      icr layers edm-cifar10-32x32-uncond-vp.pkl --depth 3

      icr layers ckpt.pt --json | jq -r '.[] | select(.default) | .name'
    """
    from icrcli.cli import console
    from icrcli.models.layers import list_layers, render
    console.set_quiet(False)  # no --quiet here: what was read and loaded is always said
    mopts = model_options(arch=arch, arch_arg=arch_arg, key=key, trust_pickle=trust_pickle, param=param,
                           schedule=schedule, time_input=time_input, time_shape=time_shape,
                           time_convention=time_convention, data_range=data_range, call=call,
                           class_label=class_label, image_shape=image_shape)
    den, rows = list_layers(checkpoint, mopts, depth)
    for line in [*den.notes(), den.headline()]:
        console.say(line)
    if not den.default_layer:
        console.say("no default layer for this architecture: pass --layer NAME to `icr extract` (a name below)")
    if json_out:
        console.write_json(rows, "-")
    else:
        typer.echo(render(rows))


