"""`icr memorization`: the fraction of a checkpoint's samples that copy a training image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from icrcli.cli.app import app
from icrcli.cli.options import (Debug, NoCache, Output, Quiet, cache_scope, guard_output, with_model_options,
                                with_options)
from icrcli.models.registry import checkpoint_help
from icrcli.scans.options import MemorizationOptions


@app.command()
@with_model_options
@with_options("memo", MemorizationOptions, panel=None)
def memorization(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help=checkpoint_help())],
    data: Annotated[Path, typer.Option(help="The model's training images (any format `icr extract` reads).")],
    memo=None,      # how samples are drawn and compared (scans.options.MemorizationOptions) go here
    grid: Annotated[Optional[Path], typer.Option(help="Write a PNG of samples beside their nearest training "
                                                 "image, copies framed in red.")] = None,
    grid_count: Annotated[int, typer.Option(min=1, help="Samples shown in the --grid.")] = 32,
    output: Output = "-",
    quiet: Quiet = False,
    debug: Debug = False,
    no_cache: NoCache = False,
    mopts=None,
):
    """Draw samples with the deterministic EDM Heun sampler and count those that copy a training image.

    Class-conditional models sample --class-label, or classes uniformly without it. Samples are cached, so a
    repeat (or a smaller --samples) draws nothing; a larger --samples extends them.

    Examples:

      icr memorization snapshot-200000.pkl --data train.zip --grid copies.png

      icr memorization ckpt.pt --data train/ --criterion cosine --threshold 0.6

      icr memorization ckpt.pt --data train/ --embed enc.pt --embed-layer blk.11
    """
    import dataclasses

    from icrcli.cli import console, inputs
    inputs.check(checkpoint=checkpoint, data=data)
    inputs.existing(memo.embed, "--embed", inputs.CHECKPOINT_FORMS)
    from icrcli.scans.memorization import memorization as run

    console.set_quiet(quiet)
    ins = [Path(p) for p in (checkpoint, data, memo.embed) if p is not None]
    guard_output(output, *ins)
    if grid is not None:
        from icrcli.cli.outputs import check_output
        check_output(grid, "--grid", [("the input file", p) for p in ins], "plot")
    bars = {}

    def on_phase(name, total):  # one bar per phase, the previous one closed first
        for cm in bars.values():
            cm.__exit__(None, None, None)
        bars.clear()
        bars[name] = console.progress(name, total, "samples" if name == "sampling" else "images")
        return bars[name].__enter__()

    try:
        with cache_scope(no_cache):     # --no-cache: samples drawn afresh, into a temporary cache
            result = run(checkpoint, data, mopts, **dataclasses.asdict(memo), grid=grid, grid_count=grid_count,
                         on_phase=on_phase, warn=lambda msg: console.say(f"warning: {msg}"))
    finally:
        for cm in bars.values():
            cm.__exit__(None, None, None)
    console.write_json(result, output)
    for w in result.get("warnings", []):
        console.say(f"warning: {w}")
    console.say(f"memorization ratio {result['ratio']:.4f} +- {result['ratio_se']:.4f} ({result['n_memorized']} of "
                f"{result['n_samples']} samples, {result['criterion']} rule, threshold {result['threshold']:.3g}, "
                f"in {result['space']}; " + ("samples from the cache" if result["cached"] else
                                            f"{result['samples_drawn']} drawn") + ")")
