"""What a model family tells icr: how to recognise its checkpoints, build the Denoiser, and the family's answers
to what sampler and scans ask (classes, class input, prediction, `--layer auto` candidates).

A family is one module exporting `ADAPTER`, an instance of a subclass of `Adapter`; registry.py lists the built-in
ones and finds installed ones through the `icr.architectures` entry-point group. The defaults below are those of a
network icr knows nothing about (a user's own `--arch module:fn`): no classes, integer class input, no default
prediction, no layer candidates.
"""

from __future__ import annotations

from pathlib import Path


class Adapter:
    """One model family. Subclasses set `names` and override what their family answers differently."""

    names: tuple[str, ...] = ()    # --arch names it answers to; Denoiser.family is one of them
    what: str = ""                 # the family in words, for messages: "EDM U-Nets (DDPM++, NCSN++, ADM)"
    reads_folders: bool = False    # opens a model folder (open_folder) rather than a state dict (build)

    # -- recognising and building ----------------------------------------------------------------------------
    def recognises(self, sd: dict, meta: dict) -> bool:
        """Whether the state dict `sd` (tensors, possibly on the meta device) is one of this family's networks."""
        return False

    def build(self, sd: dict, meta: dict, opts, arch: str | None):
        """The Denoiser for `sd` (meta: what the checkpoint recorded beside the weights, e.g. training args).
        arch is the --arch name given (one of `names`), or None when the family was recognised."""
        raise NotImplementedError

    def opens(self, folder: Path) -> bool:
        """Whether `folder` is a model folder of this family (reads_folders only)."""
        return False

    def open_folder(self, folder: Path, opts):
        raise NotImplementedError

    # -- what sampler and scans ask of a Denoiser of this family ---------------------------------------------
    def layer_candidates(self, module_names: list[str]) -> list[str]:
        """The `--layer auto` candidates among the network's module names, in forward order ([]: none known)."""
        return []

    def class_count(self, den) -> int:
        """How many classes the network is conditioned on (0: unconditional or unknown)."""
        return 0

    def class_input(self, den, classes, device):
        """The network's class input for a batch with the given labels (int64 indices by default)."""
        import torch
        return torch.as_tensor(classes, dtype=torch.long, device=device)

    def default_prediction(self, den) -> str | None:
        """What the network outputs (eps, x0, v, score, denoised), or None when the family does not say."""
        return None
