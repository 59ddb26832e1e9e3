"""How features are scored: a plain dataclass that imports nothing heavy, so cached scan results can be keyed
on it without loading scipy. Checked on construction, so Python callers get the CLI's one-sentence errors; the
command-line options are generated from its fields (icrcli.fields)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from icrcli import fields
from icrcli.errors import OptionError
from icrcli.fields import option

ESTIMATORS = ("paper", "plugin")
PANEL = "Scoring"
# The options a scan (sweep, timeline) and `icr merge` take; `icr score` takes every command-line field.
SCAN_FIELDS = ("estimator", "tau", "tau_rel", "ci", "ci_groups", "confidence")


@dataclass(frozen=True)
class ScoreOptions:
    """How features are scored. Every field is part of the score's cache key (block_images too: the blocks are
    the order of the float64 sums, and keys made so far hold it)."""
    estimator: str = option("paper", "paper: finite-K corrected (App. B.6); plugin: raw within/between split.",
                            choices=ESTIMATORS, panel=PANEL)
    tau: float | None = option(None, "Absolute ridge on Sigma_xi (overrides --tau-rel).", min=0.0, panel=PANEL)
    # README "Definitions" says why 1e-3
    tau_rel: float | None = option(1e-3, "Ridge relative to trace(Sigma_xi)/D.", min=0.0, panel=PANEL)
    ci: bool = option(False, "Add a jackknife interval: icr_ci, icr_se.", panel=PANEL)
    ci_groups: int = option(20, "Jackknife groups of images.", min=2, panel=PANEL)
    confidence: float = option(0.95, "Interval coverage.", min=0.5, max=0.999, panel=PANEL)
    skip_nonfinite: bool = option(False, "Drop images with NaN/Inf features (reported as n_skipped_nonfinite).",
                                  panel=PANEL)
    allow_partial: bool = option(False, "Score a file whose extraction did not finish (the rows written so far).",
                                 panel=PANEL)
    block_images: int | None = option(None, "Images per read (default: ~16 MB blocks).", min=1, panel=PANEL)
    top: int = option(0, "Fisher directions to return.", min=0, cli=False)

    _RIVALS = {"tau": ("tau_rel",), "tau_rel": ("tau",)}   # --options FILE: the ridge given wins over the saved one

    def __post_init__(self):
        if self.tau is not None:    # an absolute ridge wins: recorded as such, as the CLI records it
            object.__setattr__(self, "tau_rel", None)
        if self.estimator not in ESTIMATORS:
            raise OptionError(f"estimator {self.estimator!r} is not one of {', '.join(ESTIMATORS)}.")
        for name in ("tau", "tau_rel"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise OptionError(f"{name} = {v!r}: the ridge must be a finite number >= 0 (tau_rel 1e-3 is the "
                                  "default).")
        if not isinstance(self.ci_groups, int) or self.ci_groups < 2:
            raise OptionError(f"ci_groups = {self.ci_groups!r}: the jackknife needs at least 2 groups of images "
                              "(20 is the default).")
        if not (isinstance(self.confidence, (int, float)) and 0.5 <= self.confidence <= 0.999):
            raise OptionError(f"confidence = {self.confidence!r}: the interval's coverage must lie in "
                              "[0.5, 0.999] (0.95 is the default).")
        if self.block_images is not None and (not isinstance(self.block_images, int) or self.block_images < 1):
            raise OptionError(f"block_images = {self.block_images!r}: images per read must be a whole number >= 1, "
                              "or None for ~16 MB blocks.")
        if not isinstance(self.top, int) or self.top < 0:
            raise OptionError(f"top = {self.top!r}: the number of Fisher directions must be a whole number >= 0.")
        fields.check(self)
