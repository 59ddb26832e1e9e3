"""The `icr` command line: parse, call a plain function, print. Heavy imports stay inside commands so that
--help, --version and shell completion are instant."""

from __future__ import annotations

import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from icrcli import __version__

app = typer.Typer(
    name="icr",
    help="Invariant Contamination Ratio (ICR) of diffusion-model features: how cleanly a frozen denoiser "
         "separates what is invariant about an image from augmentation and noise (Li et al., ICML 2026). "
         "Lower is cleaner. Results are JSON on stdout (or -o FILE); progress and summaries go to stderr.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

Output = Annotated[str, typer.Option("-o", "--output", help="Write the JSON result here; '-' is stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary on stderr.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]


def _choices(name: str, values: str) -> type[Enum]:
    """A str Enum of the values, for typer. Spelled out here rather than imported from the modules that own them
    (noise.PARAMS, augment.POLICIES, ...) so --help stays instant; tests/test_cli_choices.py keeps them in sync."""
    return Enum(name, [(v, v) for v in values.split()], type=str)


Estimator = _choices("Estimator", "paper plugin")
Param = _choices("Param", "edm vp ddpm flow ve")
Augment = _choices("Augment", "paper crop crop-flip simclr none")
Pool = _choices("Pool", "mean none")
DType = _choices("DType", "float32 bfloat16 float16")
TMode = _choices("TMode", "nearest interp")
TimeConvention = _choices("TimeConvention", "repa sit")


def _version(value: bool):
    if value:
        typer.echo(f"icr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None):
    pass


def _guard_output(out: str, *inputs: Path) -> None:
    from icrcli.errors import UserError
    if out != "-" and any(Path(out).resolve() == p.resolve() for p in inputs):
        raise UserError(f"-o {out} is the input file; icr never writes over its input. Choose another path.")


@app.command()
def score(
    features: Annotated[Path, typer.Argument(help="Feature file from `icr extract`, an HDF5 file with an "
                                             "(N, K, D) dataset, or a .npy array (N, K, D).")],
    dataset: Annotated[Optional[str], typer.Option(help="HDF5 dataset path (default: the only (N, K, D) one).")] = None,
    layer: Annotated[Optional[str], typer.Option(help="Layer name in a feature file with several layers.")] = None,
    estimator: Annotated[Estimator, typer.Option(help="paper: finite-K corrected (App. B.6); plugin: raw "
                                                 "within/between split.")] = Estimator("paper"),
    tau: Annotated[Optional[float], typer.Option(min=0.0, help="Absolute ridge on Sigma_xi (overrides --tau-rel).")] = None,
    tau_rel: Annotated[float, typer.Option(min=0.0, help="Ridge relative to trace(Sigma_xi)/D.")] = 1e-3,
    ci: Annotated[bool, typer.Option("--ci", help="Add a jackknife interval: icr_ci, icr_se.")] = False,
    ci_groups: Annotated[int, typer.Option(min=2, help="Jackknife groups of images.")] = 20,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Interval coverage.")] = 0.95,
    skip_nonfinite: Annotated[bool, typer.Option("--skip-nonfinite", help="Drop images with NaN/Inf features "
                                                 "(reported as n_skipped_nonfinite).")] = False,
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Score a file whose extraction did "
                                                "not finish (the rows written so far).")] = False,
    directions: Annotated[Optional[Path], typer.Option(help="Save the top Fisher directions to this .npy, "
                                                       "shape (top, D).")] = None,
    top: Annotated[int, typer.Option(min=1, help="How many directions --directions saves.")] = 16,
    block_images: Annotated[Optional[int], typer.Option(min=1, help="Images per read (default: ~32 MB).")] = None,
    output: Output = "-",
    quiet: Quiet = False,
    debug: Debug = False,
):
    """Compute ICR, its generalized spectrum and companion statistics from multi-view features.

    Streams the file in blocks of whole images (memory does not grow with N).

    Examples:

      icr score feats.h5                      # JSON to stdout

      icr score feats.h5 --ci -o icr.json     # with a 95% jackknife interval

      icr score feats.npy --estimator plugin --tau 0

      icr score feats.h5 -q | jq .icr
    """
    from icrcli.cli import console
    from icrcli.stats.score import ScoreOptions, open_source, score_source

    console.set_quiet(quiet)
    _guard_output(output, features)
    if directions is not None:
        _guard_output(str(directions), features)
    opts = ScoreOptions(estimator=estimator.value, tau=tau, tau_rel=None if tau is not None else tau_rel,
                        ci=ci, ci_groups=ci_groups, confidence=confidence, skip_nonfinite=skip_nonfinite,
                        allow_partial=allow_partial, block_images=block_images,
                        top=top if directions is not None else 0)
    src = open_source(features, dataset, layer)
    with console.progress(f"scoring {features.name}", src.shape[0]) as advance:
        result, dirs = score_source(src, opts, advance)
    if dirs is not None:
        import numpy as np
        np.save(directions, dirs)
        result["directions"] = str(directions)
    console.write_json(result, output)
    console.say(_summary(result))


def _summary(r: dict) -> str:
    ci = f" [{r['icr_ci'][0]:.4f}, {r['icr_ci'][1]:.4f}]" if "icr_ci" in r else ""
    skipped = f", skipped {r['n_skipped_nonfinite']} non-finite" if r.get("n_skipped_nonfinite") else ""
    return (f"ICR {r['icr']:.4f}{ci}  (N={r['n_images']}, K={r['n_views']}, D={r['dim']}, {r['estimator']} "
            f"estimator, tau={r['tau']:.3g}{skipped}); mean lambda {r['mean_lambda']:.4g}, "
            f"effective rank {r['effective_rank']:.1f}, LiDAR {r['lidar']:.1f}")


@app.command()
def info(
    features: Annotated[Path, typer.Argument(help="Feature file (.h5) or .npy array.")],
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
        console.write_json(d, "-")
    else:
        typer.echo(render(d))


def _kv(pairs: list[str] | None) -> dict:
    """--arch-arg k=v pairs; values parsed as JSON when they are JSON (numbers, lists, true/false)."""
    import json
    from icrcli.errors import UserError
    out = {}
    for pair in pairs or []:
        k, eq, v = pair.partition("=")
        if not eq or not k:
            raise UserError(f"--arch-arg {pair!r}: expected key=value, e.g. --arch-arg model_channels=128.")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


_MODEL_HELP = "Model"


def _model_options(arch_arg=None, **given):
    """ModelOptions from the model panel's options: enums to their values, --arch-arg pairs to a dict."""
    from icrcli.models.resolve import ModelOptions
    values = {k: v.value if isinstance(v, Enum) else v for k, v in given.items()}
    return ModelOptions(arch_args=_kv(arch_arg), **values)


Arch = Annotated[Optional[str], typer.Option(help="edm|dit|sit|repa, or your own: my.module:build_fn or "
                                             "path/to/model.py:ClassName.", rich_help_panel=_MODEL_HELP)]
ArchArg = Annotated[Optional[list[str]], typer.Option(help="Constructor argument k=v (repeatable).",
                                                      rich_help_panel=_MODEL_HELP)]
Key = Annotated[Optional[str], typer.Option(help="Sub-dict of a training checkpoint (default: EMA first).",
                                            rich_help_panel=_MODEL_HELP)]
TrustPickle = Annotated[bool, typer.Option("--trust-pickle", help="Load pickles that need code by running it "
                                           "(only for files you trust).", rich_help_panel=_MODEL_HELP)]
ParamOpt = Annotated[Optional[Param], typer.Option("--param", help="Noise parametrization (default: from the "
                                                   "architecture).", rich_help_panel=_MODEL_HELP)]
Schedule = Annotated[Optional[str], typer.Option(help="Discrete schedule, e.g. linear:1e-4:0.02:1000, "
                                                 "cosine:1000.", rich_help_panel=_MODEL_HELP)]
TimeInput = Annotated[Optional[str], typer.Option(help="How time is fed: index, index-float, index/T, t, sigma, "
                                                  "log-sigma, c-noise-edm, c-noise-ve, 999t.",
                                                  rich_help_panel=_MODEL_HELP)]
TimeShape = Annotated[Optional[str], typer.Option(help="Shape of the time tensor: (B,), scalar, (B,1).",
                                                  rich_help_panel=_MODEL_HELP)]
TimeConv = Annotated[Optional[TimeConvention], typer.Option(help="Flow models: repa (t=0 clean) or sit "
                                                            "(t=1 clean).", rich_help_panel=_MODEL_HELP)]
DataRange = Annotated[Optional[str], typer.Option(help="Pixel range the model was trained on: -1:1, 0:1, "
                                                  "-0.5:0.5.", rich_help_panel=_MODEL_HELP)]
Prediction = Annotated[Optional[str], typer.Option(help="What the network predicts (eps, x0, v, score, "
                                                   "denoised); recorded.", rich_help_panel=_MODEL_HELP)]
Call = Annotated[Optional[str], typer.Option(help="Call signature: x,t | x,t,y | sample=x,timestep=t.",
                                             rich_help_panel=_MODEL_HELP)]
ClassLabel = Annotated[Optional[int], typer.Option(min=0, help="Condition on this class (default: the null "
                                                   "class, as the paper).", rich_help_panel=_MODEL_HELP)]
Vae = Annotated[Optional[str], typer.Option(help="diffusers AutoencoderKL folder for latent models.",
                                            rich_help_panel=_MODEL_HELP)]


@app.command()
def extract(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint: .safetensors, .pt/.pth/.ckpt, EDM .pkl, or a "
                                               "diffusers folder.")],
    data: Annotated[Path, typer.Option(help="Images: folder (class sub-folders = labels), .zip/.tar, .npy/.npz, "
                                       "CIFAR pickles, MNIST IDX, NVlabs dataset zip.")],
    sigma: Annotated[float, typer.Option(help="Noise level, EDM/VE units on data in [-1, 1] (0 = augmentation "
                                         "only).")],
    layer: Annotated[Optional[list[str]], typer.Option(help="Module to tap (repeatable; default: the "
                                                       "architecture's, see `icr layers`).")] = None,
    views: Annotated[int, typer.Option(min=2, help="Views K per image.")] = 2,
    images: Annotated[int, typer.Option(min=2, help="Images N: a deterministic subset, the same for every "
                                        "sigma.")] = 4096,
    augment: Annotated[Augment, typer.Option(help="Augmentation before the noise.")] = Augment("paper"),
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
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Feature file to write (default: the "
                                                   "content-addressed cache, $ICR_CACHE_DIR).")] = None,
    arch: Arch = None, arch_arg: ArchArg = None, key: Key = None, trust_pickle: TrustPickle = False,
    param: ParamOpt = None, schedule: Schedule = None, time_input: TimeInput = None, time_shape: TimeShape = None,
    time_convention: TimeConv = None, data_range: DataRange = None, prediction: Prediction = None,
    call: Call = None, class_label: ClassLabel = None, vae: Vae = None,
    t_mode: Annotated[TMode, typer.Option(help="Discrete-time models: the nearest step, or a fractional step "
                                          "(needs --time-input index-float).", rich_help_panel=_MODEL_HELP)]
    = TMode("nearest"),
    quiet: Quiet = False,
    debug: Debug = False,
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
    from icrcli.cache import cached_path
    from icrcli.features.extract import ExtractOptions, plan, run

    console.set_quiet(quiet)
    opts = ExtractOptions(sigma=sigma, layers=list(layer or []), views=views, images=images,
                          augment=augment.value, seed=seed, batch_size=batch_size, device=device,
                          dtype=dtype.value, pool=pool.value, resize=resize, chunk_images=chunk_images,
                          t_mode=t_mode.value, overwrite=overwrite)
    mopts = _model_options(arch=arch, arch_arg=arch_arg, key=key, trust_pickle=trust_pickle, param=param,
                           schedule=schedule, time_input=time_input, time_shape=time_shape,
                           time_convention=time_convention, data_range=data_range, prediction=prediction, call=call,
                           class_label=class_label, vae=vae)
    p = plan(checkpoint, data, opts, mopts)
    out = output or cached_path(p.key)
    console.say(f"{p.denoiser.description.get('arch')} ({p.denoiser.description.get('weights', '')} weights), "
                f"layers {', '.join(p.layers)}; {len(p.indices)} images x {views} views at sigma={sigma:g}")
    with console.progress("extracting", len(p.indices)) as advance:
        summary = run(p, opts, out, advance,
                      on_resume=lambda n: console.say(f"resuming: {n} images already done"),
                      on_wait=lambda: console.say(f"waiting for another icr run writing {out} ..."),
                      on_warn=lambda msg: console.say(f"warning: {msg}"))
    console.write_json(summary, "-")
    console.say(("cached: " if summary["cached"] else "wrote ") + summary["features"])


@app.command()
def layers(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (as for extract).")],
    depth: Annotated[Optional[int], typer.Option(min=1, help="Show modules down to this nesting depth.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
    arch: Arch = None, arch_arg: ArchArg = None, key: Key = None, trust_pickle: TrustPickle = False,
    param: ParamOpt = None, schedule: Schedule = None, time_input: TimeInput = None, time_shape: TimeShape = None,
    time_convention: TimeConv = None, data_range: DataRange = None, call: Call = None,
    class_label: ClassLabel = None,
    debug: Debug = False,
):
    """List the network's modules with their output shapes from one dry forward pass; * marks the default tap.

    Examples:

      icr layers edm-cifar10-32x32-uncond-vp.pkl --depth 3

      icr layers ckpt.pt --json | jq -r '.[] | select(.default) | .name'
    """
    from icrcli.cli import console
    from icrcli.models.layers import list_layers, render
    mopts = _model_options(arch=arch, arch_arg=arch_arg, key=key, trust_pickle=trust_pickle, param=param,
                           schedule=schedule, time_input=time_input, time_shape=time_shape,
                           time_convention=time_convention, data_range=data_range, call=call,
                           class_label=class_label)
    rows = list_layers(checkpoint, mopts, depth)
    if json_out:
        console.write_json(rows, "-")
    else:
        typer.echo(render(rows))


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
