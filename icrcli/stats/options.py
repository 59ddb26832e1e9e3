"""How features are scored: a plain dataclass that imports nothing heavy, so cached scan results can be keyed
on it without loading scipy. Checked on construction, so Python callers get the CLI's one-sentence errors."""

from __future__ import annotations

import math
from dataclasses import dataclass

from icrcli.errors import OptionError

ESTIMATORS = ("paper", "plugin")


@dataclass(frozen=True)
class ScoreOptions:
    estimator: str = "paper"
    tau: float | None = None          # absolute ridge; wins over tau_rel
    tau_rel: float | None = 1e-3      # ridge relative to trace(Sigma_xi)/D: README "Definitions" says why 1e-3
    ci: bool = False
    ci_groups: int = 20
    confidence: float = 0.95
    skip_nonfinite: bool = False
    allow_partial: bool = False
    block_images: int | None = None   # images per read; None picks ~16 MB blocks
    top: int = 0                      # Fisher directions to return

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
