"""How a checkpoint is to be built and called, as the user (or the sidecar) said: a plain dataclass with no
torch, so the CLI can key cached results on it without importing the network code."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ModelOptions:
    """How to build and call the network; None means: from the sidecar, else the family's default."""
    arch: str | None = None
    arch_args: dict = field(default_factory=dict)
    key: str | None = None
    trust_pickle: bool = False
    param: str | None = None            # edm | vp | ddpm | flow | ve
    schedule: str | None = None         # e.g. linear:1e-4:0.02:1000
    time_input: str | None = None       # see icrcli.models.noise time kinds
    time_shape: str | None = None       # "(B,)" (default) | "scalar" | "(B,1)"
    time_convention: str | None = None  # flow models: repa (t=0 clean) | sit (t=1 clean)
    data_range: str | None = None       # -1:1 | 0:1 | -0.5:0.5
    prediction: str | None = None       # eps | x0 | v | score | denoised (recorded; features do not need it)
    call: str | None = None             # "x,t" | "x,t,y" | "sample=x,timestep=t"
    class_label: int | None = None      # None = the null class, as in the paper
    vae: str | None = None              # diffusers AutoencoderKL folder for latent models
    image_shape: str | None = None      # "CxHxW" the network takes (your own architectures: default the data's)


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
