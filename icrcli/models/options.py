"""How a checkpoint is to be built and called, as the user (or the sidecar) said: a plain dataclass with no
torch, so the CLI can key cached results on it without importing the network code."""

from __future__ import annotations

from dataclasses import dataclass, field


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
