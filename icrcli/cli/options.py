"""Option declarations shared by several commands, declared once. Choices are spelled out here rather than
imported from the modules that own them (noise.PARAMS, augment.POLICIES, ...) so --help stays instant;
tests/test_cli_choices.py keeps them equal."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from icrcli.models.registry import arch_help

Output = Annotated[str, typer.Option("-o", "--output", help="Write the JSON result here; '-' is stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary on stderr.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Compute afresh: look nothing up in the cache ($ICR_CACHE_DIR) "
                                       "and leave nothing in it.")]


ShardOpt = Annotated[Optional[str], typer.Option("--shard", metavar="I/N", help="Do only shard I of N (0 <= I < N): "
                                                 "the chunks I, I+N, ... of the images (README 'Scale out'). For "
                                                 "Slurm arrays and CI matrices; under torchrun, ranks split the work "
                                                 "themselves.")]


Shards = Annotated[Optional[int], typer.Option("--shards", metavar="N", min=1, help="Score every level from its N "
                                              "shards (those of `--shard I/N` runs, from the cache; any missing "
                                              "are computed here), merged exactly.")]


def cache_scope(no_cache: bool):
    """The with-block a command does its work in: the real cache, or with --no-cache a temporary one that is
    removed at the end (icrcli.cache.scratch)."""
    import contextlib
    if not no_cache:
        return contextlib.nullcontext()
    from icrcli.cache import scratch
    return scratch()


def choices(name: str, values: str) -> type[Enum]:
    """A str Enum of the values, for typer. Spelled out here rather than imported from the modules that own them
    (noise.PARAMS, augment.POLICIES, ...) so --help stays instant; tests/test_cli_choices.py keeps them in sync."""
    return Enum(name, [(v, v) for v in values.split()], type=str)


Estimator = choices("Estimator", "paper plugin")
Param = choices("Param", "edm vp ddpm flow ve")
# --augment is a free string, POLICY[:name=value,...], checked by icrcli.data.augment when the command runs; the
# policy names are spelled out for --help (tests/test_cli_choices.py keeps them equal to augment.POLICIES).
AUGMENT_POLICIES = "paper crop crop-flip simclr digits none"
AUGMENT_HELP = ("Augmentation before the noise: " + ", ".join(AUGMENT_POLICIES.split()) + "; strengths as "
                "crop:pad=2 or paper:pad=4,jitter=0.4,p=0.8 (README 'Views'). digits: small rotations and shifts, no "
                "flip, for images a mirror changes (MNIST).")
Pool = choices("Pool", "mean none")
# Probe protocols (icrcli.scans.probe.PROTOCOLS): the paper's single noise-only view, or the mean over views.
ProbeProtocol = choices("ProbeProtocol", "paper view-mean")
DType = choices("DType", "float32 bfloat16 float16")
TMode = choices("TMode", "nearest interp")
TimeConvention = choices("TimeConvention", "repa sit")



def guard_output(out: str, *inputs: Path) -> None:
    """-o FILE ('-' is stdout): never an input, only over an icr result (icrcli.cli.outputs.check_output)."""
    if out != "-":
        from icrcli.cli.outputs import check_output
        check_output(out, "-o", [("the input file", p) for p in inputs], "result")


ARCH_ARG_FORMS = ("a Python or JSON literal: a number (128, 0.1, 1e-4), True/False/None (or true/false/null), a "
                  "quoted string ('silu'), a tuple (16,32,32,16), a list [1,2,2], a dict {'dropout': 0.1}; or a "
                  "bare word, taken as a string (silu)")


def _kv(pairs: list[str] | None) -> dict:
    """--arch-arg k=v pairs -> {k: value}: v read as a JSON or Python literal (never evaluated as code; see
    parse_arch_value), else as a bare string."""
    from icrcli.errors import UserError
    out = {}
    for pair in pairs or []:
        k, eq, v = pair.partition("=")
        k = k.strip()
        if not eq or not k.isidentifier():
            raise UserError(f"--arch-arg {pair!r}: expected name=value with the constructor argument's name, e.g. "
                            "--arch-arg model_channels=128 or --arch-arg 'n_hidden=(16,32,32,16)'.")
        out[k] = parse_arch_value(k, v)
    return out


def parse_arch_value(name: str, text: str):
    """A constructor argument as written: JSON first (true, null, [1, 2]: what the sidecar holds), then a Python
    literal by ast.literal_eval, which builds tuples, lists, dicts, numbers, strings, True/False/None and runs
    nothing. A bare word (silu, vp, a path) stays a string; anything else that is not a literal is an error."""
    import ast
    import json
    import re
    from icrcli.errors import UserError
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if not text.strip() or re.fullmatch(r"[A-Za-z_./~][\w.+/:~-]*", text.strip()):  # a word, a name, a path
            return text.strip()
        raise UserError(f"--arch-arg {name}={text}: {text!r} is not a value icr can read. Write {ARCH_ARG_FORMS}. "
                        "Quote it for the shell: --arch-arg 'n_hidden=(16, 32)'. Code (calls, names of "
                        "functions) is never run: for a network that takes a function, write a builder, --arch "
                        "file.py:build (README 'Your own checkpoint').") from None
    if not _literal_ok(value):
        raise UserError(f"--arch-arg {name}={text}: a {type(value).__name__} is not a constructor argument icr "
                        f"passes. Write {ARCH_ARG_FORMS}.")
    return value


def _literal_ok(value) -> bool:
    """Tuples, lists, dicts (string keys), numbers, strings, booleans, None: no sets, bytes or complex numbers."""
    if isinstance(value, (tuple, list)):
        return all(_literal_ok(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _literal_ok(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


MODEL_HELP = "Model"


def model_options(arch_arg=None, **given):
    """ModelOptions from the model panel's options: enums to their values, --arch-arg pairs to a dict."""
    from icrcli.models.options import ModelOptions
    values = {k: v.value if isinstance(v, Enum) else v for k, v in given.items()}
    return ModelOptions(arch_args=_kv(arch_arg), **values)


Arch = Annotated[Optional[str], typer.Option(help=arch_help(), rich_help_panel=MODEL_HELP)]
ArchArg = Annotated[Optional[list[str]], typer.Option(help="Constructor argument name=value (repeatable); the "
                                                      "value a JSON or Python literal: 128, 0.1, True, None, "
                                                      "(16,32), [1,2], {'a': 1}, 'text', or a bare word.",
                                                      rich_help_panel=MODEL_HELP)]
Key = Annotated[Optional[str], typer.Option(help="Sub-dict of a training checkpoint (default: EMA first).",
                                            rich_help_panel=MODEL_HELP)]
TrustPickle = Annotated[bool, typer.Option("--trust-pickle", help="Load pickles that need code by running it "
                                           "(only for files you trust).", rich_help_panel=MODEL_HELP)]
ParamOpt = Annotated[Optional[Param], typer.Option("--param", help="Noise parametrization (default: from the "
                                                   "architecture).", rich_help_panel=MODEL_HELP)]
Schedule = Annotated[Optional[str], typer.Option(help="Discrete schedule, e.g. linear:1e-4:0.02:1000, "
                                                 "cosine:1000.", rich_help_panel=MODEL_HELP)]
TimeInput = Annotated[Optional[str], typer.Option(help="How time is fed: index, index-float, index/T, t, sigma, "
                                                  "log-sigma, c-noise-edm, c-noise-ve, 999t.",
                                                  rich_help_panel=MODEL_HELP)]
TimeShape = Annotated[Optional[str], typer.Option(help="Shape of the time tensor: (B,), scalar, (B,1).",
                                                  rich_help_panel=MODEL_HELP)]
TimeConv = Annotated[Optional[TimeConvention], typer.Option(help="Flow models: repa (t=0 clean) or sit "
                                                            "(t=1 clean).", rich_help_panel=MODEL_HELP)]
DataRange = Annotated[Optional[str], typer.Option(help="Pixel range the model was trained on: -1:1, 0:1, "
                                                  "-0.5:0.5.", rich_help_panel=MODEL_HELP)]
Prediction = Annotated[Optional[str], typer.Option(help="What the network predicts (eps, x0, v, score, "
                                                   "denoised); recorded.", rich_help_panel=MODEL_HELP)]
Call = Annotated[Optional[str], typer.Option(help="Call signature: x,t | x,t,y | sample=x,timestep=t.",
                                             rich_help_panel=MODEL_HELP)]
ClassLabel = Annotated[Optional[int], typer.Option(min=0, help="Condition on this class (default: the null "
                                                   "class, as the paper).", rich_help_panel=MODEL_HELP)]
Vae = Annotated[Optional[str], typer.Option(help="diffusers AutoencoderKL folder for latent models.",
                                            rich_help_panel=MODEL_HELP)]
ImageShape = Annotated[Optional[str], typer.Option(metavar="CxHxW", help="Input shape your own network takes, e.g. "
                                                   "1x28x28 (default: the data's); never passed to its constructor.",
                                                   rich_help_panel=MODEL_HELP)]




# ------------------------------------------------------------------------------------------------------------
# Option groups: declared once, added to any command by a decorator, handed to it as one value by name.

VIEWS_HELP = "Views"
Layer = Annotated[Optional[list[str]], typer.Option(help="Module to tap (repeatable; default: the architecture's, "
                                                    "see `icr layers`). sweep also takes `auto`: EDM U-Nets the "
                                                    "decoder's second block at each resolution (dec.RxR_block1), "
                                                    "DiT/SiT every quarter of the depth, diffusers U-Nets mid_block "
                                                    "and each up block.", rich_help_panel=VIEWS_HELP)]
Views = Annotated[int, typer.Option(min=2, help="Views K per image.", rich_help_panel=VIEWS_HELP)]
Images = Annotated[int, typer.Option(min=2, help="Images N: a deterministic subset, the same for every sigma.",
                                     rich_help_panel=VIEWS_HELP)]
AugmentOpt = Annotated[Optional[list[str]], typer.Option("--augment", metavar="POLICY[:k=v,...]", help=AUGMENT_HELP
                                                        + " Default paper; sweep takes it repeated (an augmentation x "
                                                        "sigma grid), other commands the last one given.",
                                                        rich_help_panel=VIEWS_HELP)]
Indices = Annotated[Optional[Path], typer.Option(metavar="FILE", help="Use exactly these images: a text file of "
                                                 "indices (one per line) or a .npy integer array; --images is "
                                                 "then ignored.", rich_help_panel=VIEWS_HELP)]
Seed = Annotated[int, typer.Option(min=0, help="Seed for the subset, augmentations and noise.",
                                   rich_help_panel=VIEWS_HELP)]
DTypeOpt = Annotated[DType, typer.Option("--dtype", help="Compute precision (autocast); features are stored as "
                                         "float32.", rich_help_panel=VIEWS_HELP)]
PoolOpt = Annotated[Pool, typer.Option("--pool", help="mean over positions/tokens, or none (flatten).",
                                       rich_help_panel=VIEWS_HELP)]
Resize = Annotated[bool, typer.Option("--resize", help="Resize images (and grey<->colour) to fit the model.",
                                      rich_help_panel=VIEWS_HELP)]
ChunkImages = Annotated[int, typer.Option(min=1, help="Images per resumable chunk.", rich_help_panel=VIEWS_HELP)]
TModeOpt = Annotated[TMode, typer.Option("--t-mode", help="Discrete-time models: the nearest step, or a fractional "
                                         "step (needs --time-input index-float).", rich_help_panel=VIEWS_HELP)]
BatchSize = Annotated[int, typer.Option(min=1, help="Images per forward pass.", rich_help_panel=VIEWS_HELP)]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.", rich_help_panel=VIEWS_HELP)]
SkipBadImages = Annotated[bool, typer.Option("--skip-bad-images", help="Leave out images that cannot be decoded "
                                             "(counted and named on stderr, recorded in the file) instead of "
                                             "stopping.", rich_help_panel=VIEWS_HELP)]

_MODEL_GROUP = [("arch", Arch, None), ("arch_arg", ArchArg, None), ("key", Key, None),
                ("trust_pickle", TrustPickle, False), ("param", ParamOpt, None), ("schedule", Schedule, None),
                ("time_input", TimeInput, None), ("time_shape", TimeShape, None),
                ("time_convention", TimeConv, None), ("data_range", DataRange, None),
                ("prediction", Prediction, None), ("call", Call, None), ("class_label", ClassLabel, None),
                ("vae", Vae, None), ("image_shape", ImageShape, None)]
_VIEW_GROUP = [("layer", Layer, None), ("views", Views, 2), ("images", Images, 4096),
               ("augment", AugmentOpt, None), ("indices", Indices, None), ("seed", Seed, 0),
               ("dtype", DTypeOpt, DType("float32")),
               ("pool", PoolOpt, Pool("mean")), ("resize", Resize, False), ("chunk_images", ChunkImages, 256),
               ("t_mode", TModeOpt, TMode("nearest")), ("skip_bad_images", SkipBadImages, False),
               ("batch_size", BatchSize, 256), ("device", Device, "auto")]


def _plain(values: dict) -> dict:
    return {k: v.value if isinstance(v, Enum) else v for k, v in values.items()}


def _with_group(group: str, declared: list[tuple], build):
    """Decorator: append the group's options to a command's signature (typer reads it) and call the command
    with `group=build(**their values)` instead, so each option is declared once and reaches its owner by name."""
    import functools
    import inspect

    extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, a, d in declared]

    def deco(fn):
        sig = inspect.signature(fn, eval_str=True)
        own = [p for n, p in sig.parameters.items() if n != group]

        @functools.wraps(fn)
        def wrapper(**kw):
            kw[group] = build(**{n: kw.pop(n) for n, _, _ in declared})
            return fn(**kw)

        params = own + extra
        del wrapper.__wrapped__  # typer must see the new signature, not the original's
        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper
    return deco


def with_model_options(fn):
    """The 15 model options, handed to the command as `mopts` (an icrcli.models.resolve.ModelOptions)."""
    return _with_group("mopts", _MODEL_GROUP, model_options)(fn)


def with_view_options(fn):
    """What views are drawn and how they run (layers, K, N, augmentation, seed, dtype, pool, ..., batch size,
    device), handed to the command as `vopts`, a plain dict of values keyed by option name."""
    return _with_group("vopts", _VIEW_GROUP, view_options)(fn)


def view_options(**values) -> dict:
    """The view options as plain values; --indices FILE read into the tuple of indices it lists (so what is
    keyed is the list, not the file's name)."""
    v = _plain(values)
    # --augment: one policy is a str (as the feature files and keys have always had it), several a list (sweep)
    aug = v.get("augment")
    v["augment"] = "paper" if not aug else aug[0] if len(aug) == 1 else list(aug)
    v["indices_file"] = None
    if v.get("indices") is not None:
        from icrcli.data.indices import read_indices
        v["indices_file"] = str(v["indices"])  # an input (no output may overwrite it), never part of a key
        v["indices"] = read_indices(v["indices"])
    return v


SCORE_HELP = "Scoring"
EstimatorOpt = Annotated[Estimator, typer.Option("--estimator", help="paper: finite-K corrected (App. B.6); plugin: "
                                                 "raw within/between split.", rich_help_panel=SCORE_HELP)]
Tau = Annotated[Optional[float], typer.Option(min=0.0, help="Absolute ridge on Sigma_xi (overrides --tau-rel).",
                                              rich_help_panel=SCORE_HELP)]
TauRel = Annotated[float, typer.Option(min=0.0, help="Ridge relative to trace(Sigma_xi)/D.",
                                       rich_help_panel=SCORE_HELP)]
CI = Annotated[bool, typer.Option("--ci", help="Add a jackknife interval: icr_ci, icr_se.", rich_help_panel=SCORE_HELP)]
CIGroups = Annotated[int, typer.Option(min=2, help="Jackknife groups of images.", rich_help_panel=SCORE_HELP)]
Confidence = Annotated[float, typer.Option(min=0.5, max=0.999, help="Interval coverage.", rich_help_panel=SCORE_HELP)]

_SCORE_GROUP = [("estimator", EstimatorOpt, Estimator("paper")), ("tau", Tau, None), ("tau_rel", TauRel, 1e-3),
                ("ci", CI, False), ("ci_groups", CIGroups, 20), ("confidence", Confidence, 0.95)]


def _score_options(**v):
    from icrcli.stats.options import ScoreOptions
    v = _plain(v)
    if v["tau"] is not None:
        v["tau_rel"] = None
    return ScoreOptions(**v)


def with_score_options(fn):
    """How each level or point is scored (estimator, ridge, interval), handed to the command as `sopts`
    (an icrcli.stats.score.ScoreOptions)."""
    return _with_group("sopts", _SCORE_GROUP, _score_options)(fn)
