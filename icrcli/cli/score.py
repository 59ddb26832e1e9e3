"""`icr score`: ICR of a feature file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from icrcli.cli.app import app
from icrcli.cli.options import Debug, NoCache, Output, Quiet, with_options, with_options_file
from icrcli.stats.options import ScoreOptions


@app.command()
@with_options_file
@with_options("sopts", ScoreOptions, panel=None)
def score(
    features: Annotated[list[Path], typer.Argument(metavar="FEATURES...", help="Feature file from `icr extract`, an "
                                                   "HDF5 file with an (N, K, D) dataset, or a .npy array (N, K, D); or "
                                                   "the shard files of one `icr extract --shard I/N` (a list, their "
                                                   "folder, or a quoted glob), merged exactly.")],
    dataset: Annotated[Optional[str], typer.Option(help="HDF5 dataset path (default: the only (N, K, D) one).")] = None,
    layer: Annotated[Optional[str], typer.Option(help="Layer name in a feature file with several layers.")] = None,
    sopts=None,     # the scoring options (stats.options.ScoreOptions) go here
    directions: Annotated[Optional[Path], typer.Option(help="Save the top Fisher directions to this .npy, "
                                                       "shape (top, D).")] = None,
    top: Annotated[int, typer.Option(min=1, help="How many directions --directions saves.")] = 16,
    stats_out: Annotated[Optional[Path], typer.Option(metavar="FILE", help="Also write the float64 sufficient "
                                                      "statistics (.npz, a few MB) for `icr merge`; with only some "
                                                      "shards given, write theirs and print a summary.")] = None,
    follow_external: Annotated[bool, typer.Option("--follow-external", help="Read what an HDF5 file points to in "
                                                  "other files (external links, virtual datasets, external "
                                                  "storage); refused without it. Every file reached is hashed into "
                                                  "the cache key.")] = False,
    no_cache: NoCache = False,
    output: Output = "-",
    quiet: Quiet = False,
    debug: Debug = False,
):
    """Compute ICR, its generalized spectrum and companion statistics from multi-view features.

    Streams the file in blocks of whole images (memory does not grow with N). The result is cached by the
    file's content (shards: every shard's) and the options, so the same request again answers without reading
    the features.

    Examples:

      icr score feats.h5                      # JSON to stdout

      icr score feats.h5 --ci -o result.json  # with a 95% jackknife interval

      icr score feats.npy --estimator plugin --tau 0

      icr score feats.h5 -q | jq .icr

      icr score shards/                       # shard files, merged

      icr score shard-0.h5 --stats-out s0.npz # for icr merge

      icr score new.h5 --options old.json     # scored as old.json was
    """
    import dataclasses

    from icrcli.cli import console
    from icrcli.stats.scorecache import cached_parts, cached_score

    console.set_quiet(quiet)
    paths = _expand(features)
    _check_outputs(paths, output, directions, stats_out)
    opts = dataclasses.replace(sopts, top=top if directions is not None else 0)

    def compute():  # imported only on a cache miss: a cached answer loads neither numpy's linalg nor scipy
        from icrcli.stats.merged import open_sources, score_sources
        sources = open_sources(paths, dataset, layer, follow_external)
        more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
        with console.progress(f"scoring {paths[0].name}{more}", sum(s.shape[0] for s in sources)) as advance:
            return score_sources(sources, opts, advance, stats_out)

    warn = lambda msg: console.say(f"warning: {msg}")  # noqa: E731
    if stats_out is not None:   # the statistics are written from the moments: computed
        result, dirs = compute()
        if "icr" in result:     # a score (not some shards' statistics): it says it was computed
            result = {**result, "cached": False, "cache_entry": None}
    elif len(paths) == 1:
        result, dirs = cached_score(paths[0], dataset, layer, opts, compute, use_cache=not no_cache, warn=warn,
                                    follow_external=follow_external)
    else:       # the shards of one extraction, merged: keyed by every shard's content
        result, dirs = cached_parts(paths, "shards", dataset, layer, opts, compute, use_cache=not no_cache,
                                    warn=warn, follow_external=follow_external)
    if result.get("cached"):
        console.say(f"cached: answered from the cache entry {result['cache_entry']} (--no-cache recomputes)")
    if "stats" in result and "icr" not in result:    # some shards only: their statistics, no score
        console.write_json(result, output)
        console.say(f"wrote the statistics of shard(s) {', '.join(map(str, result['shards']))} of "
                    f"{result['shard_count']} to {stats_out}; merge them all with `icr merge`")
        return
    if stats_out is not None:
        result["stats"] = str(stats_out)
    if dirs is not None:
        import numpy as np
        np.save(directions, dirs)
        result["directions"] = str(directions)
    for warning in result["warnings"]:
        console.say(f"warning: {warning}")
    if output == "-" and _stdout_is_terminal():
        # A terminal gets the summary, not a screen of D eigenvalues; piped or with -o the JSON has everything.
        typer.echo(_summary(result) + "\n(the full JSON result goes to a pipe or to -o FILE)")
    else:
        console.write_json(result, output)
        console.say(_summary(result))


def _stdout_is_terminal() -> bool:
    import sys
    return sys.stdout.isatty()


def _expand(features: list[Path]) -> list[Path]:
    """One existing file as it is (a cached answer imports nothing heavy); else folders and globs expanded."""
    if len(features) == 1 and features[0].is_file():
        return features
    from icrcli.stats.merged import expand
    return expand(features)


def _check_outputs(features: list[Path], output: str, directions: Path | None, stats_out: Path | None) -> None:
    """-o, --directions and --stats-out: never the features, never each other, only over icr's own outputs
    (icrcli.cli.outputs)."""
    from icrcli.cli.outputs import check_output
    scored = [("the features being scored", f) for f in features]
    if output != "-":
        check_output(output, "-o", scored, "result")
    if directions is not None:     # np.save adds .npy to a name without it: check the file it will write
        target = directions if directions.suffix == ".npy" else directions.with_name(directions.name + ".npy")
        check_output(target, "--directions", scored + [("the -o result", None if output == "-" else output)],
                     "directions")
    if stats_out is not None:
        check_output(stats_out, "--stats-out", scored + [("the -o result", None if output == "-" else output),
                                                         ("the --directions file", directions)], "stats")


def _summary(r: dict) -> str:
    ci = f" [{r['icr_ci'][0]:.4f}, {r['icr_ci'][1]:.4f}]" if "icr_ci" in r else ""
    skipped = f", skipped {r['n_skipped_nonfinite']} non-finite" if r.get("n_skipped_nonfinite") else ""
    return (f"ICR {r['icr']:.4f}{ci}  (N={r['n_images']}, K={r['n_views']}, D={r['dim']}, {r['estimator']} "
            f"estimator, tau={r['tau']:.3g}{skipped}); mean lambda {r['mean_lambda']:.4g}, "
            f"effective rank {r['effective_rank']:.1f}, LiDAR {r['lidar']:.1f}; bias-corrected ICR "
            f"{_num(r.get('icr_bias_corrected'))}, at tau/10 {_num(r.get('icr_tau_tenth'))}")


def _num(v) -> str:
    return "-" if v is None else f"{v:.4f}"


