"""Early, cheap checks of what the command line names: a mistyped path, augmentation or noise level is exit 2 at
once, before torch is imported (seconds) or a network is loaded (longer). The modules that use these values check
them again in their own words; this only makes the common mistakes cheap. Imports nothing heavy."""

from __future__ import annotations

import difflib
import math
from pathlib import Path

from icrcli.errors import UserError

DATA_FORMS = "a folder of images, a .zip/.tar, .npy/.npz, CIFAR or MNIST files"
CHECKPOINT_FORMS = "a .safetensors/.pt/.pth/.ckpt file, an EDM .pkl, or a diffusers model folder"


def _near(path: Path) -> str:
    """' (did you mean X?)' for the closest name in the same folder, when there is a close one."""
    try:
        names = [p.name for p in path.parent.iterdir()] if path.parent.is_dir() else []
    except OSError:
        names = []
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return f" (did you mean {path.parent / close[0]}?)" if close else ""


def existing(path: str | Path | None, flag: str, forms: str) -> None:
    """UserError unless `path` (given as `flag`) exists."""
    if path is None:
        return
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{flag} {path}: no such file or folder{_near(p)}. Pass {forms}.")


def noise_level(value: float | None, flag: str = "--sigma") -> None:
    """UserError unless `value` is a finite number >= 0."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise UserError(f"{flag} {value:g}: the noise level must be a finite number >= 0 (0 gives "
                        "augmentation-only views).")


def check(*, checkpoint: str | Path | None = None, checkpoint_flag: str = "CHECKPOINT", data: str | Path | None = None,
          sigma: float | None = None) -> None:
    """The checks of a command that reads a checkpoint and images: each argument given is checked."""
    existing(checkpoint, checkpoint_flag, CHECKPOINT_FORMS)
    existing(data, "--data", DATA_FORMS)
    noise_level(sigma)
