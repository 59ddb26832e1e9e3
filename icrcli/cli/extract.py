"""`icr extract`: checkpoint + images -> feature file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from icrcli.cli.app import app
from icrcli.cli.options import (Arch, ArchArg, AugmentOpt, Call, ClassLabel, DataRange, DType, Debug, ImageShape,
                                Indices, Key, MODEL_HELP, NoCache, ParamOpt, Pool, Prediction, Quiet, Schedule,
                                TimeConv, TimeInput, TimeShape, TMode, TrustPickle, Vae, cache_scope, model_options)


@app.command()
def extract(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="Checkpoint: .safetensors, .pt/.pth/"
                                               ".ckpt, EDM .pkl, or a diffusers folder.")],
    data: Annotated[Path, typer.Option(help="Images: folder (class sub-folders = labels), .zip/.tar, .npy/.npz, "
                                       "CIFAR pickles, MNIST IDX, NVlabs dataset zip.")],
    sigma: Annotated[float, typer.Option(help="Noise level, EDM/VE units on data in [-1, 1] (0 = augmentation "
                                         "only).")],
    layer: Annotated[Optional[list[str]], typer.Option(help="Module to tap (repeatable; default: the "
                                                       "architecture's, see `icr layers`).")] = None,
    views: Annotated[int, typer.Option(min=2, help="Views K per image.")] = 2,
    images: Annotated[int, typer.Option(min=2, help="Images N: a deterministic subset, the same for every "
                                        "sigma.")] = 4096,
    augment: AugmentOpt = "paper",
    indices: Indices = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed for the subset, augmentations and noise.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    dtype: Annotated[DType, typer.Option(help="Compute precision (autocast); features are stored as "
                                         "float32.")] = DType("float32"),
    pool: Annotated[Pool, typer.Option(help="mean over positions/tokens, or none (flatten).")] = Pool("mean"),
    resize: Annotated[bool, typer.Option("--resize", help="Resize images (and grey<->colour) to fit the "
                                         "model.")] = False,
    chunk_images: Annotated[int, typer.Option(min=1, help="Images per resumable chunk.")] = 256,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output of another "
                                            "configuration.")] = False,
    skip_bad_images: Annotated[bool, typer.Option("--skip-bad-images", help="Leave out images that cannot be "
                                                  "decoded (counted and named on stderr, recorded in the file) "
                                                  "instead of stopping.")] = False,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Feature file to write (default: the "
                                                   "content-addressed cache, $ICR_CACHE_DIR).")] = None,
    arch: Arch = None, arch_arg: ArchArg = None, key: Key = None, trust_pickle: TrustPickle = False,
    param: ParamOpt = None, schedule: Schedule = None, time_input: TimeInput = None, time_shape: TimeShape = None,
    time_convention: TimeConv = None, data_range: DataRange = None, prediction: Prediction = None,
    call: Call = None, class_label: ClassLabel = None, vae: Vae = None, image_shape: ImageShape = None,
    t_mode: Annotated[TMode, typer.Option(help="Discrete-time models: the nearest step, or a fractional step "
                                          "(needs --time-input index-float).", rich_help_panel=MODEL_HELP)]
    = TMode("nearest"),
    quiet: Quiet = False,
    debug: Debug = False,
    no_cache: NoCache = False,
):
    """Extract multi-view features from a frozen diffusion network into a feature file.

    Prints a JSON summary ({"features": PATH, ...}) on stdout. A killed run resumes when the same command
    is run again; the same request again returns the cached file at once.

    Examples:

      icr extract edm-cifar10-32x32-uncond-vp.pkl --data cifar10/ --sigma 0.29 -o feats.h5

      icr extract ckpt.pt --data imgs.zip --sigma 0.5 --views 4 --layer model.dec.16x16_block1

      icr score $(icr extract ckpt.pt --data imgs/ --sigma 0.3 -q | jq -r .features)
    """
    from icrcli.cli import console
    from icrcli.features.extract import extract as run_extract, output_path
    from icrcli.data.indices import read_indices
    from icrcli.features.plan import Request, RunOptions, load_data, load_model, make_plan

    console.set_quiet(quiet)
    request = Request(sigma=sigma, layers=tuple(layer or ()), views=views, images=images, augment=augment,
                      seed=seed, dtype=dtype.value, pool=pool.value, resize=resize, chunk_images=chunk_images,
                      t_mode=t_mode.value, skip_bad_images=skip_bad_images,
                      indices=read_indices(indices) if indices is not None else None)
    run_opts = RunOptions(batch_size=batch_size, device=device, overwrite=overwrite)
    mopts = model_options(arch=arch, arch_arg=arch_arg, key=key, trust_pickle=trust_pickle, param=param,
                           schedule=schedule, time_input=time_input, time_shape=time_shape,
                           time_convention=time_convention, data_range=data_range, prediction=prediction, call=call,
                           class_label=class_label, vae=vae, image_shape=image_shape)
    if output is not None:      # checked before any model is loaded, not after minutes of work
        from icrcli.models.resolve import SIDECAR_SUFFIX
        from icrcli.outputs import check_output
        sidecars = [checkpoint.with_name(checkpoint.name + SIDECAR_SUFFIX), checkpoint.parent / "icr.json"]
        check_output(output, "-o", [("the checkpoint", checkpoint), ("the data", data), ("the VAE", vae),
                                    ("the indices", indices),
                                    *[("the checkpoint's sidecar", s) for s in sidecars]], "features")
    if no_cache and output is None:
        from icrcli.errors import UserError
        raise UserError("--no-cache writes the features only to -o FILE: give -o/--output (without --no-cache "
                        "they go to the cache).")
    reporter = console.Reporter()
    with cache_scope(no_cache):     # --no-cache: not even the input files' hashes are remembered
        model = load_model(checkpoint, mopts, run_opts.device, reporter)
        p = make_plan(model, load_data(data, model, reporter, skip_bad_images), request, reporter)
        out = output_path(p, output)
        console.say("\n".join([*p.denoiser.notes(), f"{p.denoiser.headline()}; layers {', '.join(p.layers)}; "
                               f"{len(p.indices)} images x {views} views at sigma={sigma:g}"]))
        summary = run_extract(p, out, run_opts, reporter)
    console.write_json({"schema": 1, **summary}, "-")
    console.say(("cached: " if summary["cached"] else "wrote ") + summary["features"])


