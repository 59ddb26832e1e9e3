"""The checks' options: the linear probe (`icr probe`, `icr sweep --probe`) and the memorization ratio (`icr
memorization`). Frozen dataclasses that import nothing heavy, checked on construction, from whose fields the
command-line options are generated (icrcli.fields)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from icrcli import fields
from icrcli.fields import option

PANEL = "Checks"
PROTOCOLS = ("paper", "view-mean")
CRITERIA = ("ratio", "cosine")


@dataclass(frozen=True)
class ProbeOptions:
    """A linear probe (and optionally k-NN) on labelled features (scans.probe, docs/PROBE.md).

    protocol "paper": view 0 of features extracted at the level's sigma WITHOUT augmentation (clean images
    noised), tested on `test_data` (a data set extracted with the same plan) or k-fold cross-validated;
    "view-mean": the mean over the level's own (augmented) views, on a stratified split. Every field is part of a
    sweep's key (the test data by content)."""
    split: float = option(0.75, "Fraction of the images the view-mean probe trains on (a stratified split by the "
                          "seed) when it has no held-out test features.", min=0.05, max=0.95, panel=PANEL)
    seed: int = option(0, "Seed of the folds or the split.", min=0, panel=PANEL)
    l2: float = option(1e-4, "Penalty on ||W||^2 added to the mean cross-entropy.", min=0.0, panel=PANEL)
    knn: int | None = option(None, "Also k-nearest-neighbour accuracy (cosine) with this k.", min=1, metavar="K",
                             panel=PANEL)
    protocol: str = option("paper", "paper: one noise-only view per image (view 0: extract with --augment none), "
                           "tested on held-out features or k-fold cross-validated; view-mean: the mean over the "
                           "views, tested on held-out features or a stratified split.", choices=PROTOCOLS,
                           panel=PANEL)
    folds: int = option(5, "Cross-validation folds of the paper's probe when it has no held-out test features.",
                        min=2, panel=PANEL)
    test_data: str | None = option(None, "With --probe: held-out labelled images the probe is tested on, "
                                   "extracted with the same plan (without it: --probe-folds cross-validation).",
                                   metavar="DATA", cli_type=Optional[Path], panel=PANEL)

    # a reference split's images, which a sweep's saved probe options hold beside these (scans.sweep.ReferenceProbe)
    _SAVED_EXTRA = ("train", "test")

    def __post_init__(self):
        if isinstance(self.test_data, Path):
            object.__setattr__(self, "test_data", str(self.test_data))
        fields.check(self)


@dataclass(frozen=True)
class MemorizationOptions:
    """How `icr memorization` draws samples and decides which copy a training image."""
    samples: int = option(1000, "Samples to draw (deterministic per seed and index; cached).", min=1)
    steps: int = option(18, "EDM Heun steps (sigma 80 -> 0.002, rho 7).", min=1)
    seed: int = option(0, "Seed of the samples' noise and classes.", min=0)
    criterion: str = option("ratio", "ratio: nearest L2 distance < threshold x the second nearest (1/3); cosine: "
                            "largest cosine similarity > threshold (0.6).", choices=CRITERIA)
    threshold: float | None = option(None, "Threshold of the criterion (default 1/3 for ratio, 0.6 for cosine).",
                                     min=0.0)
    embed: str | None = option(None, "Compare in the features of this checkpoint (default: pixels).",
                               cli_type=Optional[Path])
    embed_layer: str | None = option(None, "The --embed checkpoint's layer (see `icr layers`).")
    embed_sigma: float = option(0.0, "Noise level at which --embed reads features.", min=0.0)
    batch_size: int = option(64, "Samples per forward pass.", min=1, keyed=False)
    device: str = option("auto", "auto, cpu, cuda, cuda:N.", keyed=False)

    def __post_init__(self):
        if isinstance(self.embed, Path):
            object.__setattr__(self, "embed", str(self.embed))
        fields.check(self)
