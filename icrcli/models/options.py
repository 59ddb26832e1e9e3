"""How a checkpoint is to be built and called, as the user (or the sidecar) said: a plain dataclass with no
torch, so the CLI can key cached results on it without importing the network code. The command-line options
are generated from its fields (icrcli.fields)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from icrcli import fields
from icrcli.errors import OptionError
from icrcli.fields import option


PANEL = "Model"
# The noise parametrizations and flow conventions (icrcli.models.noise reads them from here).
PARAMS = ("edm", "ve", "vp", "ddpm", "flow")
TIME_CONVENTIONS = ("repa", "sit")


def _arch_help() -> str:
    from icrcli.models.registry import arch_help    # when --help is built: an architecture loads no registry
    return arch_help()


@dataclass(frozen=True)
class ModelOptions:
    """How to build and call the network; None means: from the sidecar, else the family's default. Checked on
    construction; every field is part of a scan's key (how the network is read)."""
    arch: str | None = option(None, _arch_help, panel=PANEL)
    # --arch-arg name=value pairs (repeatable), read into {name: value} on construction (parse_arch_value)
    arch_args: dict = option(help="Constructor argument name=value (repeatable); the value a JSON or Python "
                             "literal: 128, 0.1, True, None, (16,32), [1,2], {'a': 1}, 'text', or a bare word.",
                             factory=dict, flag="--arch-arg", cli_type=Optional[list[str]], panel=PANEL)
    key: str | None = option(None, "Sub-dict of a training checkpoint (default: EMA first).", panel=PANEL)
    trust_pickle: bool = option(False, "Load pickles that need code by running it (only for files you trust).",
                                panel=PANEL)
    param: str | None = option(None, "Noise parametrization (default: from the architecture).", choices=PARAMS,
                               panel=PANEL)
    schedule: str | None = option(None, "Discrete schedule, e.g. linear:1e-4:0.02:1000, cosine:1000.", panel=PANEL)
    time_input: str | None = option(None, "How time is fed: index, index-float, index/T, t, sigma, log-sigma, "
                                    "c-noise-edm, c-noise-ve, 999t.", panel=PANEL)
    time_shape: str | None = option(None, "Shape of the time tensor: (B,), scalar, (B,1).", panel=PANEL)
    time_convention: str | None = option(None, "Flow models: repa (t=0 clean) or sit (t=1 clean).",
                                         choices=TIME_CONVENTIONS, panel=PANEL)
    data_range: str | None = option(None, "Pixel range the model was trained on: -1:1, 0:1, -0.5:0.5.", panel=PANEL)
    prediction: str | None = option(None, "What the network predicts (eps, x0, v, score, denoised); recorded.",
                                    panel=PANEL)
    call: str | None = option(None, "Call signature: x,t | x,t,y | sample=x,timestep=t.", panel=PANEL)
    class_label: int | None = option(None, "Condition on this class (default: the null class, as the paper).",
                                     min=0, panel=PANEL)
    vae: str | None = option(None, "diffusers AutoencoderKL folder for latent models.", panel=PANEL)
    image_shape: str | None = option(None, "Input shape your own network takes, e.g. 1x28x28 (default: the "
                                     "data's); never passed to its constructor.", metavar="CxHxW", panel=PANEL)

    def __post_init__(self):
        if isinstance(self.arch_args, (list, tuple)):   # the command line's name=value pairs
            object.__setattr__(self, "arch_args", arch_args_from(self.arch_args))
        if not isinstance(self.arch_args, dict):
            raise OptionError(f"arch_args = {self.arch_args!r}: expected a dict of constructor arguments, e.g. "
                              "{'model_channels': 128}.")
        fields.check(self)


ARCH_ARG_FORMS = ("a Python or JSON literal: a number (128, 0.1, 1e-4), True/False/None (or true/false/null), a "
                  "quoted string ('silu'), a tuple (16,32,32,16), a list [1,2,2], a dict {'dropout': 0.1}; or a "
                  "bare word, taken as a string (silu)")


def arch_args_from(pairs) -> dict:
    """--arch-arg k=v pairs -> {k: value}: v read as a JSON or Python literal (never evaluated as code; see
    parse_arch_value), else as a bare string."""
    out = {}
    for pair in pairs or []:
        k, eq, v = str(pair).partition("=")
        k = k.strip()
        if not eq or not k.isidentifier():
            raise OptionError(f"--arch-arg {pair!r}: expected name=value with the constructor argument's name, e.g. "
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
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if not text.strip() or re.fullmatch(r"[A-Za-z_./~][\w.+/:~-]*", text.strip()):  # a word, a name, a path
            return text.strip()
        raise OptionError(f"--arch-arg {name}={text}: {text!r} is not a value icr can read. Write {ARCH_ARG_FORMS}. "
                          "Quote it for the shell: --arch-arg 'n_hidden=(16, 32)'. Code (calls, names of "
                          "functions) is never run: for a network that takes a function, write a builder, --arch "
                          "file.py:build (README 'Your own checkpoint').") from None
    if not _literal_ok(value):
        raise OptionError(f"--arch-arg {name}={text}: a {type(value).__name__} is not a constructor argument icr "
                          f"passes. Write {ARCH_ARG_FORMS}.")
    return value


def _literal_ok(value) -> bool:
    """Tuples, lists, dicts (string keys), numbers, strings, booleans, None: no sets, bytes or complex numbers."""
    if isinstance(value, (tuple, list)):
        return all(_literal_ok(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _literal_ok(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


def parse_image_shape(spec: str, where: str = "--image-shape") -> tuple[int, int, int]:
    """"1x28x28" -> (1, 28, 28); a UserError that names `where` otherwise."""
    from icrcli.errors import UserError
    parts = str(spec).lower().replace(" ", "").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"{where} {spec!r}: write the shape the network takes as CxHxW, e.g. 1x28x28 or 3x32x32.")
    return shape


SIDECAR_SUFFIX = ".icr.json"


def sidecar_candidates(checkpoint: Path) -> tuple[Path, Path]:
    """Where a checkpoint's sidecar may lie, first match wins: `CKPT.icr.json` beside it, else `icr.json` in its
    folder (one file for a run's checkpoints). Inputs of every command that reads the checkpoint."""
    return checkpoint.with_name(checkpoint.name + SIDECAR_SUFFIX), checkpoint.parent / "icr.json"
