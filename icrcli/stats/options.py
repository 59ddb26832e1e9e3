"""How features are scored: a plain dataclass that imports nothing heavy, so cached scan results can be keyed
on it without loading scipy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ScoreOptions:
    estimator: str = "paper"
    tau: float | None = None          # absolute ridge; wins over tau_rel
    tau_rel: float | None = None      # ridge relative to trace(Sigma_xi)/D (default eigensolve.DEFAULT_TAU_REL)
    ci: bool = False
    ci_groups: int = 20
    confidence: float = 0.95
    skip_nonfinite: bool = False
    allow_partial: bool = False
    block_images: int | None = None   # images per read; None picks ~16 MB blocks
    top: int = 0                      # Fisher directions to return
