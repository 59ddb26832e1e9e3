"""icr as a library: the functions behind the commands, taking typed options and returning typed results.

    import icrcli
    r = icrcli.score(features)                     # (N, K, D) numpy array, torch tensor, or a feature file
    r.icr, r.icr_ci, r.eigenvalues

    acc = icrcli.Accumulator(dim=256, ci=True)     # inside your own evaluation loop, no feature file
    for batch in loader: acc.update(net_features(batch))    # (B, K, D) batches, numpy or torch on any device
    acc.result().icr

See docs/API.md.
"""

from __future__ import annotations

from pathlib import Path

from icrcli.stats.accumulator import Accumulator
from icrcli.stats.options import ScoreOptions
from icrcli.stats.result import ScoreResult

__all__ = ["score", "Accumulator", "ScoreOptions", "ScoreResult"]


def score(x, *, dataset: str | None = None, layer: str | None = None, options: ScoreOptions | None = None,
          use_cache: bool = True, **score_options) -> ScoreResult:
    """ICR and every statistic of `icr score` for x: an (N, K, D) numpy array or torch tensor (any device, any
    float dtype), or the path of a feature file / HDF5 file / .npy. Keyword options are ScoreOptions' fields
    (estimator, tau, tau_rel, ci, ci_groups, confidence, skip_nonfinite, allow_partial, block_images).

    A file is answered from the score cache when it can be (as `icr score`); an array is always computed.
    `.to_dict()` of the result is the JSON `icr score` prints."""
    if options is not None and score_options:
        raise TypeError("give either options= or keyword score options, not both")
    opts = options or ScoreOptions(**score_options)
    if opts.top:
        raise TypeError("score() returns no Fisher directions; use icrcli.stats.score.score_source for them")
    if isinstance(x, (str, Path)):
        from icrcli.stats.score import score_file
        result, _ = score_file(x, dataset, layer, opts, use_cache=use_cache)
        return ScoreResult(result)
    if dataset is not None or layer is not None:
        raise TypeError("dataset= and layer= choose inside a file; an array is scored as it is")
    from icrcli.features.arraysource import array_source
    from icrcli.stats.score import score_source
    result, _ = score_source(array_source(x), opts)
    return ScoreResult({**result, "cached": False, "cache_entry": None})  # the CLI's shape: never cached
