"""`icr extract`: checkpoint + images -> feature file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from icrcli.cli.app import app
from icrcli.cli.options import Debug, NoCache, Quiet, ShardOpt, cache_scope, with_model_options, with_view_options
from icrcli.models.registry import checkpoint_help


@app.command()
@with_model_options
@with_view_options
def extract(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help=checkpoint_help())],
    data: Annotated[Path, typer.Option(help="Images: folder (class sub-folders = labels), .zip/.tar, .npy/.npz, "
                                       "CIFAR pickles, MNIST IDX, NVlabs dataset zip.")],
    sigma: Annotated[float, typer.Option(help="Noise level, EDM/VE units on data in [-1, 1] (0 = augmentation "
                                         "only).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output of another "
                                            "configuration.")] = False,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Feature file to write (default: the "
                                                   "content-addressed cache, $ICR_CACHE_DIR).")] = None,
    shard: ShardOpt = None,
    quiet: Quiet = False,
    debug: Debug = False,
    no_cache: NoCache = False,
    mopts=None, vopts=None,
):
    """Extract multi-view features from a frozen diffusion network into a feature file.

    Prints a JSON summary ({"features": PATH, ...}) on stdout. A killed run resumes when the same command
    is run again; the same request again returns the cached file at once.

    Examples:

      icr extract edm-cifar10-uncond.pkl --data cifar10/ --sigma 0.29 -o f.h5

      icr extract ckpt.pt --data imgs.zip --sigma 0.5 --views 4 --layer dec.16x16

      icr score $(icr extract ck.pt --data imgs/ --sigma 0.3 -q | jq -r .features)

      icr extract ck.pt --data imgs/ --sigma 0.3 --shard 1/4 -o shards/f1.h5

      torchrun --nproc-per-node 8 -m icrcli extract ck.pt --data imgs/ --sigma 0.3 -o f.h5
    """
    import dataclasses

    from icrcli import dist
    from icrcli.cli import console, inputs
    if no_cache and output is None:
        from icrcli.errors import UserError
        raise UserError("--no-cache writes the features only to -o FILE: give -o/--output (without --no-cache "
                        "they go to the cache).")
    inputs.check(checkpoint=checkpoint, data=data, sigma=sigma)   # before torch is imported
    from icrcli.features.extract import extract as run_extract, output_path
    from icrcli.features.plan import load_data, load_model, make_plan, request_from
    from icrcli.features.shards import parse_shard, shard_plan

    console.set_quiet(quiet or dist.rank() > 0)     # rank 0 alone speaks for a torchrun job
    part = parse_shard(shard)
    _one_split(part)
    request = request_from(vopts, sigma)
    run_opts = dataclasses.replace(vopts.run, overwrite=overwrite)
    if output is not None:      # checked before any model is loaded, not after minutes of work
        from icrcli.models.options import sidecar_candidates
        from icrcli.cli.outputs import check_output
        sidecars = sidecar_candidates(checkpoint)
        check_output(output, "-o", [("the checkpoint", checkpoint), ("the data", data), ("the VAE", mopts.vae),
                                    ("the indices", vopts.indices_file),
                                    *[("the checkpoint's sidecar", s) for s in sidecars]], "features")
    if no_cache and dist.world_size() > 1:
        from icrcli.errors import UserError
        raise UserError("--no-cache under torchrun: each rank would have a cache of its own. Give -o/--output on a "
                        "file system every rank sees, without --no-cache.")
    reporter = console.Reporter()
    with cache_scope(no_cache), dist.session():     # --no-cache: not even the input files' hashes are remembered
        model = load_model(checkpoint, mopts, run_opts.device, reporter)
        p = shard_plan(make_plan(model, load_data(data, model, reporter, request.skip_bad_images), request, reporter),
                       part)
        out = output_path(p, output)
        split = f"shard {part}: " if part.count > 1 else f"{dist.world_size()} ranks: " if dist.world_size() > 1 else ""
        console.say("\n".join([*p.denoiser.notes(), f"{p.denoiser.headline()}; layers {', '.join(p.layers)}; {split}"
                               f"{len(p.indices)} images x {request.views} views at sigma={sigma:g}"]))
        summary = run_extract(p, out, run_opts, reporter, ranks=True)
    if part.count > 1:
        summary["shard"] = str(part)
    if dist.rank() == 0:
        console.write_json({"schema": 1, **summary}, "-")
    console.say(("cached: " if summary["cached"] else "wrote ") + summary["features"])


def _one_split(part) -> None:
    """--shard or torchrun's ranks, not both: one way of splitting per run."""
    from icrcli import dist
    if part.count > 1 and dist.world_size() > 1:
        from icrcli.errors import UserError
        raise UserError(f"--shard {part} under torchrun ({dist.world_size()} ranks): the ranks split the work "
                        "themselves. Drop --shard, or run plain processes (one per shard).")


