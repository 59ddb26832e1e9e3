"""What views are drawn (ViewOptions) and how the work runs (RunOptions): frozen dataclasses that import nothing
heavy, checked on construction, from whose fields the command-line options are generated (icrcli.fields).
A field's `keyed` says whether it is part of a scan's cache key: the run options never are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from icrcli import fields
from icrcli.data.augment_spec import POLICIES
from icrcli.errors import OptionError, UserError
from icrcli.fields import option

PANEL = "Views"
DTYPES = ("float32", "bfloat16", "float16")
T_MODES = ("nearest", "interp")
POOLS = ("mean", "none")
AUGMENT_HELP = ("Augmentation before the noise: " + ", ".join(POLICIES) + "; strengths as crop:pad=2 or "
                "paper:pad=4,jitter=0.4,p=0.8 (README 'Views'). digits: small rotations and shifts, no flip, for "
                "images a mirror changes (MNIST). Default paper; sweep takes it repeated (an augmentation x sigma "
                "grid), other commands the last one given.")


@dataclass(frozen=True)
class RunOptions:
    """How a plan runs; nothing here changes the features or any key."""
    batch_size: int = option(256, "Images per forward pass.", min=1, keyed=False, panel=PANEL)
    device: str = option("auto", "auto, cpu, cuda, cuda:N.", keyed=False, panel=PANEL)
    # discard an existing output or unfinished chunks of another request (`icr extract --overwrite`)
    overwrite: bool = option(False, keyed=False, cli=False)

    def __post_init__(self):
        fields.check(self)


@dataclass(frozen=True)
class ViewOptions:
    """What views are drawn, at every sigma of a scan: the request of icrcli.features.plan without its sigma,
    plus how it runs (`run`). `augment` is one policy, or several for a sweep's grid; `indices` the images to
    use, or a file that lists them (read on construction: the indices are keyed, not the file's name)."""
    layer: tuple[str, ...] | None = option(
        None, "Module to tap (repeatable; default: the architecture's, see `icr layers`). sweep also takes `auto`: "
        "EDM U-Nets the decoder's second block at each resolution (dec.RxR_block1), DiT/SiT every quarter of the "
        "depth, diffusers U-Nets mid_block and each up block.", cli_type=Optional[list[str]], panel=PANEL)
    views: int = option(2, "Views K per image.", min=2, panel=PANEL)     # the paper uses two
    # the paper's subset size for EDM models (App. C); None: all the images
    images: int | None = option(4096, "Images N: a deterministic subset, the same for every sigma.", min=2,
                                panel=PANEL)
    augment: str | tuple[str, ...] | None = option(None, AUGMENT_HELP, metavar="POLICY[:k=v,...]",
                                                   cli_type=Optional[list[str]], panel=PANEL)
    indices: tuple[int, ...] | None = option(
        None, "Use exactly these images: a text file of indices (one per line) or a .npy integer array; --images "
        "is then ignored.", metavar="FILE", cli_type=Optional[Path], panel=PANEL)
    seed: int = option(0, "Seed for the subset, augmentations and noise.", min=0, panel=PANEL)
    dtype: str = option("float32", "Compute precision (autocast); features are stored as float32.", choices=DTYPES,
                        panel=PANEL)
    pool: str = option("mean", "mean over positions/tokens, or none (flatten).", choices=POOLS, panel=PANEL)
    resize: bool = option(False, "Resize images (and grey<->colour) to fit the model.", panel=PANEL)
    # rows per resumable chunk, and per HDF5 chunk (so: the file's bytes, and part of the key)
    chunk_images: int = option(256, "Images per resumable chunk.", min=1, panel=PANEL)
    t_mode: str = option("nearest", "Discrete-time models: the nearest step, or a fractional step (needs "
                         "--time-input index-float).", choices=T_MODES, panel=PANEL)
    skip_bad_images: bool = option(False, "Leave out images that cannot be decoded (counted and named on stderr, "
                                   "recorded in the file) instead of stopping.", panel=PANEL)
    run: RunOptions = option(factory=RunOptions, keyed=False)
    # the file --indices named: an input no output may overwrite, never part of a key
    indices_file: str | None = option(None, keyed=False, cli=False)

    def __post_init__(self):
        set_ = lambda name, v: object.__setattr__(self, name, v)   # noqa: E731  (frozen)
        set_("layer", tuple(self.layer) if self.layer else None)
        set_("augment", _augments(self.augment))
        if isinstance(self.indices, (str, Path)):
            from icrcli.data.indices import read_indices
            set_("indices_file", str(self.indices))
            set_("indices", read_indices(self.indices))
        elif self.indices is not None:
            set_("indices", tuple(int(i) for i in self.indices))
        if isinstance(self.run, dict):      # a saved options block
            set_("run", fields.from_dict(RunOptions, self.run, "run"))
        fields.check(self)
        if not isinstance(self.run, RunOptions):
            raise OptionError(f"run = {self.run!r}: expected RunOptions(batch_size=..., device=...).")

    @property
    def augments(self) -> list[str]:
        """The augmentations as a list (one unless a sweep's grid)."""
        return [self.augment] if isinstance(self.augment, str) else list(self.augment)

    def keyed(self) -> dict:
        """What shapes the features, as the scans' keys and results hold it (the run options left out)."""
        return fields.keyed(self)



def _augments(given) -> str | tuple[str, ...]:
    """--augment given once is a str (as the feature files and keys have always had it), several times a tuple (a
    sweep's grid), not at all "paper"; each spec is parsed here so a typo is refused before anything loads."""
    from icrcli.data.augment_spec import parse_policy
    if not given:
        return "paper"
    specs = [given] if isinstance(given, str) else list(given)
    for s in specs:
        if not isinstance(s, str):
            raise OptionError(f"augment = {s!r}: expected a policy such as paper or crop:pad=2.")
        try:
            parse_policy(s)
        except UserError as e:
            raise OptionError(str(e)) from None
    return specs[0] if len(specs) == 1 else tuple(specs)
