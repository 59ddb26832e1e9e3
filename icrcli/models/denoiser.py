"""What every architecture family hands back: a frozen network and the way to call it (`Denoiser`), built from the
user's model options (`ModelOptions`), with the checks all families share (class labels, strict weight loading).

Each family's adapter (adapter.Adapter) lives beside its architecture in archs/ and returns a Denoiser; resolve.py
asks the registry (registry.py) which family a checkpoint is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import torch

from icrcli.errors import UserError
from icrcli.models.options import ModelOptions  # noqa: F401  (re-exported)


@dataclass
class Denoiser:
    """A frozen network and how to call it.

    call(x (B, C, H, W), t (time input, see noise.py), y (labels or None)) -> the network's output;
    labels(B, device) -> the class input for B samples (None for unconditional models). description is
    JSON-able provenance: "arch" (a short code, part of the cache key), "config", "checkpoint", "weights"
    (where in the file the weights came from, "<root>" for the top level), "sidecar" (path, sha256, the
    options it gave), ... title says in words what the network is, for people.
    """
    net: torch.nn.Module
    family: str
    default_layer: str
    in_channels: int
    resolution: int | None
    latent: bool
    noise_defaults: dict                 # param, schedule, time_input, time_convention for noise.from_options
    data_range: str                      # pixel range it takes: the family's, or the options' (sidecar included)
    call: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], object]
    labels: Callable[[int, torch.device], torch.Tensor | None]
    description: dict
    schedule_buffer: object = None       # a schedule stored in the checkpoint (alphas_cumprod, alpha_t, ...), if any
    schedule_buffer_name: str | None = None  # its key in the state dict (noise.read_schedule_buffer reads it by name)
    schedule_buffer_beside: bool = False  # found beside the weights taken (its name then is its full path in the file)
    title: str = ""                      # e.g. "EDM SongUNet (DDPM++), EDM preconditioning"
    options: ModelOptions | None = None  # the options it was loaded with, the sidecar's included (set by load_model)
    adapter: object = None               # its family's Adapter (set by resolve): what sampler and scans ask of it

    def headline(self) -> str:
        """One line for stderr: which network, in words, and which weights of the file."""
        what = self.title or self.description.get("arch") or self.family
        weights = self.description.get("weights")
        return f"{what}, weights: {weights_in_words(weights)}" if weights else what

    def notes(self) -> list[str]:
        """Lines for stderr about files next to the checkpoint that were read (or deliberately not)."""
        side = self.description.get("sidecar")
        if not side:
            return []
        if side.get("ignored"):
            return [f"not using {side['path']} as a sidecar: {side['ignored']}"]
        given = ", ".join(side.get("applied") or []) or "nothing the command line did not already set"
        return [f"sidecar {side['path']} (sha256 {side['sha256'][:12]}) gives: {given}"]


def weights_in_words(source: str) -> str:
    """"<root>" -> "the checkpoint's top level"; a dotted key stays as it is ("ema", "ema.model")."""
    return "the checkpoint's top level" if source == "<root>" else source


def check_class_label(label: int | None, n_classes: int | None, what: str) -> None:
    """--class-label must name one of the model's classes; an unconditional model takes none."""
    if label is None:
        return
    if not n_classes:
        raise UserError(f"--class-label {label}: this {what} model is unconditional (it takes no class label). "
                        "Drop --class-label.")
    if not 0 <= label < n_classes:
        raise UserError(f"--class-label {label}: this {what} model has classes 0..{n_classes - 1}. Pick one of "
                        "them, or leave --class-label out for the null class.")


BUILTIN_HINT = "Check --arch/--arch-arg (or the sidecar), or --key if the file holds several networks."


def load_strict(net: torch.nn.Module, sd: dict, what: str, hint: str = BUILTIN_HINT, assign: bool = True) -> None:
    """Load `sd` into `net` exactly, or say by name which keys, shapes and dtypes do not fit. assign=True hands
    the checkpoint's tensors to a network built on the meta device; a user's network (built for real, in its own
    dtype) gets them copied in."""
    diff = key_diff(net, sd, kinds=assign)  # copied in (assign=False), an integer tensor is cast: no harm
    if any(diff):
        raise UserError(f"The weights do not fit {what}: {describe_diff(*diff)} {hint}")
    net.load_state_dict(sd, strict=True, assign=assign)


def key_diff(net: torch.nn.Module, sd: dict, kinds: bool = True) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, mismatches "key (file AxB, network CxD)"); all empty iff it loads.
    A mismatch is a non-tensor, a shape, or (kinds=True) a floating-point tensor where the network has none or
    the reverse: handed over as they are, integer weights would fail in the first forward pass."""
    want = net.state_dict()
    shape = lambda t: "x".join(map(str, t.shape)) or "scalar"
    kind = lambda t: "floating" if t.is_floating_point() else "complex" if t.is_complex() else str(t.dtype)
    wrong = []
    for k in sorted(set(want) & set(sd)):
        if not torch.is_tensor(sd[k]):
            wrong.append(f"{k} (file {type(sd[k]).__name__}, network a tensor)")
        elif sd[k].shape != want[k].shape:
            wrong.append(f"{k} (file {shape(sd[k])}, network {shape(want[k])})")
        elif kinds and want[k].is_floating_point() != sd[k].is_floating_point():
            wrong.append(f"{k} (file {sd[k].dtype}, network {kind(want[k])})")
    return sorted(set(want) - set(sd)), sorted(set(sd) - set(want)), wrong


def describe_diff(missing, unexpected, wrong=()) -> str:
    def few(keys):
        return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
    parts = []
    if missing:
        parts.append(f"missing keys: {few(missing)}.")
    if unexpected:
        parts.append(f"unexpected keys: {few(unexpected)}.")
    if wrong:
        parts.append(f"shapes or dtypes differ: {few(list(wrong))}.")
    return " ".join(parts)


def jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))
