"""icr as a library: the functions behind the commands, taking typed options and returning typed results.

    import icrcli
    r = icrcli.score(features)                     # (N, K, D) numpy array, torch tensor, or a feature file
    r.icr, r.icr_ci, r.eigenvalues

    acc = icrcli.Accumulator(dim=256, ci=True)     # inside your own evaluation loop, no feature file
    for batch in loader: acc.update(net_features(batch))    # (B, K, D) batches, numpy or torch on any device
    acc.result().icr

    sw = icrcli.sweep("ckpt.pt", "imgs/", "edm18:..3.3", views=icrcli.ViewOptions(images=1024))
    sw.argmin, sw.levels                           # what `icr sweep` prints, typed

Each takes the option sets (ModelOptions, ViewOptions, ScoreOptions, ProbeOptions), or their fields as keywords,
and returns what the command prints as a typed result. See docs/API.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from icrcli.features.options import RunOptions, ViewOptions
from icrcli.models.options import ModelOptions
from icrcli.results import ExtractResult, ProbeResult
from icrcli.scans.options import MemorizationOptions, ProbeOptions
from icrcli.scans.result import SweepResult, TimelineResult
from icrcli.stats.accumulator import Accumulator
from icrcli.stats.options import ScoreOptions
from icrcli.stats.result import ScoreResult

__all__ = ["score", "Accumulator", "extract", "sweep", "timeline", "probe", "ScoreOptions", "ViewOptions",
           "RunOptions", "ModelOptions", "ProbeOptions", "MemorizationOptions", "ScoreResult", "ExtractResult",
           "ProbeResult", "SweepResult", "TimelineResult"]


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


def _views(views: ViewOptions | None, given: dict) -> ViewOptions:
    """The view options: `views`, with any of ViewOptions' fields given as keywords over it."""
    unknown = set(given) - {f.name for f in dataclasses.fields(ViewOptions)}
    if unknown:
        raise TypeError(f"unknown keyword {sorted(unknown)[0]!r}: keywords are ViewOptions' fields "
                        f"({', '.join(f.name for f in dataclasses.fields(ViewOptions))})")
    views = views or ViewOptions()
    return dataclasses.replace(views, **given) if given else views


def _reporter(progress: bool):
    """Progress bars on stderr as the commands show them, or nothing."""
    if not progress:
        from icrcli.progress import SILENT
        return SILENT
    from icrcli.cli.console import Reporter
    return Reporter()


def extract(checkpoint: str | Path, data: str | Path, sigma: float, *, model: ModelOptions | None = None,
            views: ViewOptions | None = None, output: str | Path | None = None, overwrite: bool = False,
            progress: bool = False, **view_options) -> ExtractResult:
    """`icr extract`: the multi-view features of a checkpoint on a data set at noise level `sigma`, into `output`
    or the content-addressed cache (the same request again returns the cached file). Keywords are ViewOptions'
    fields. Returns what the command prints (`.features` is the file)."""
    from icrcli.cli.inputs import check
    from icrcli.features.extract import extract as run_extract, output_path
    from icrcli.features.plan import load_data, load_model, make_plan, request_from
    views, model = _views(views, view_options), model or ModelOptions()
    check(checkpoint=checkpoint, data=data, sigma=sigma)
    if output is not None:      # never over an input, only over a feature file (as -o)
        from icrcli.cli.outputs import check_output
        check_output(output, "output", [("the checkpoint", checkpoint), ("the data", data),
                                        ("the indices", views.indices_file)], "features")
    reporter = _reporter(progress)
    request = request_from(views, sigma)
    loaded = load_model(Path(checkpoint), model, views.run.device, reporter)
    plan = make_plan(loaded, load_data(Path(data), loaded, reporter, request.skip_bad_images), request, reporter)
    summary = run_extract(plan, output_path(plan, output), dataclasses.replace(views.run, overwrite=overwrite),
                          reporter)
    return ExtractResult({"schema": 1, **summary})


def sweep(checkpoint: str | Path, data: str | Path, sigmas: str | list[float] | None = None, *,
          model: ModelOptions | None = None, views: ViewOptions | None = None, score: ScoreOptions | None = None,
          probe: ProbeOptions | bool | None = None, use_cache: bool = True, progress: bool = False,
          **view_options) -> SweepResult:
    """`icr sweep`: ICR at every noise level of `sigmas` (a SPEC as --sigmas takes it, e.g. "edm18:..3.3" or
    "0.1:10:20", or a list of levels; None: the paper's grid) and at every layer of views.layer. probe=True is
    --probe (the seed the views'), or give ProbeOptions. Keywords are ViewOptions' fields. Answered from the cache
    when the same sweep was done; interrupted (Ctrl-C), it returns the levels scored so far (`.stopped`)."""
    from icrcli.scans.sigmas import edge_warnings, parse_sigmas, spec_warnings
    from icrcli.scans.sweep import run_sweep
    views = _views(views, view_options)
    spec = sigmas if sigmas is None or isinstance(sigmas, str) else None
    levels = parse_sigmas(spec) if spec is not None or sigmas is None else sorted({float(s) for s in sigmas})
    probe = ProbeOptions(seed=views.seed) if probe is True else probe or None
    result = run_sweep(Path(checkpoint), Path(data), levels, model or ModelOptions(), views, score or ScoreOptions(),
                       reporter=_reporter(progress), probe=probe, use_cache=use_cache)
    # the grid's warnings and a minimum at its edge, as the command adds them to its JSON
    warnings = [*spec_warnings(spec, levels), *result.warnings, *edge_warnings(result.levels)]
    return SweepResult({**result.to_dict(), "warnings": warnings})


def timeline(folder: str | Path, data: str | Path, sigmas: float | str | list, *, model: ModelOptions | None = None,
             views: ViewOptions | None = None, score: ScoreOptions | None = None, pattern: str | None = None,
             probe: bool = False, memorization: int | None = None, gates=None, progress: bool = False,
             **view_options) -> TimelineResult:
    """`icr timeline`: ICR of every checkpoint in `folder`, in step order, at each level of `sigmas` (a number, a
    list, or "auto": the argmin of a coarse sweep of the last checkpoint). probe=True adds the probe of each point,
    memorization=N the memorization ratio of N samples; gates an icrcli.scans.timeline.Gates (the CI conditions:
    `.gates["failed"]` lists those that failed). Keywords are ViewOptions' fields."""
    from icrcli.scans.timeline import Checks, parse_timeline_sigmas, run_timeline
    views = _views(views, view_options)
    given = [sigmas] if isinstance(sigmas, (str, int, float)) else list(sigmas)
    levels = parse_timeline_sigmas([s if isinstance(s, str) else repr(float(s)) for s in given])
    result = run_timeline(Path(folder), Path(data), levels, model or ModelOptions(), views, score or ScoreOptions(),
                          pattern=pattern, reporter=_reporter(progress), gates=gates,
                          checks=Checks(ProbeOptions(seed=views.seed) if probe else None, memorization))
    return result


def probe(features: str | Path, test: str | Path | None = None, *, layer: str | None = None,
          options: ProbeOptions | None = None, **probe_options) -> ProbeResult:
    """`icr probe`: linear-probe accuracy of a labelled feature file (from `extract` on labelled data), tested on
    the feature file `test` or, without it, by k-fold cross-validation (protocol paper) or a stratified split
    (view-mean). Keywords are ProbeOptions' fields (split, seed, l2, knn, protocol, folds)."""
    if options is not None and probe_options:
        raise TypeError("give either options= or keyword probe options, not both")
    o = options or ProbeOptions(**probe_options)
    if o.test_data is not None:
        raise TypeError("test_data is a sweep's held-out images; probe() tests on a feature file: pass test=")
    from icrcli.scans.probe import probe_file
    return ProbeResult(probe_file(features, test=test, split=o.split, seed=o.seed, l2=o.l2, knn=o.knn,
                                  layer=layer, protocol=o.protocol, folds=o.folds))
