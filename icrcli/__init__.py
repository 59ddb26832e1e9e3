"""icr: the Invariant Contamination Ratio of diffusion-model features (Li et al., ICML 2026)."""

__version__ = "0.1.0"
