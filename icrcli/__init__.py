"""icr: the Invariant Contamination Ratio of diffusion-model features (Li et al., ICML 2026).

The Python API (docs/API.md): `icrcli.score`, `icrcli.Accumulator`, `icrcli.ScoreOptions`, `icrcli.ScoreResult`.
They are imported on first use, so `import icrcli` (and the CLI's start-up) stays light.
"""

__version__ = "0.1.0"

_API = ("score", "Accumulator", "ScoreOptions", "ScoreResult")
__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        from icrcli import api
        return getattr(api, name)
    raise AttributeError(f"module 'icrcli' has no attribute {name!r}")
