"""icr: the Invariant Contamination Ratio of diffusion-model features (Li et al., ICML 2026).

The Python API (docs/API.md): `icrcli.score`, `icrcli.Accumulator`, `icrcli.extract`, `icrcli.sweep`,
`icrcli.timeline`, `icrcli.probe`, the option sets (`ModelOptions`, `ViewOptions`, `RunOptions`, `ScoreOptions`,
`ProbeOptions`, `MemorizationOptions`) and the typed results (`ScoreResult`, `ExtractResult`, `ProbeResult`,
`SweepResult`, `TimelineResult`). They are imported on first use, so `import icrcli` (and the CLI's start-up)
stays light.
"""

__version__ = "0.1.0"

_API = ("score", "Accumulator", "extract", "sweep", "timeline", "probe", "ScoreOptions", "ViewOptions", "RunOptions",
        "ModelOptions", "ProbeOptions", "MemorizationOptions", "ScoreResult", "ExtractResult", "ProbeResult",
        "SweepResult", "TimelineResult")
__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        from icrcli import api
        return getattr(api, name)
    raise AttributeError(f"module 'icrcli' has no attribute {name!r}")
