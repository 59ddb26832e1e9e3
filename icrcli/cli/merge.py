"""`icr merge`: one score result from the statistics files of `icr score --stats-out`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icrcli.cli.app import app
from icrcli.cli.options import Debug, NoCache, Output, Quiet, with_score_options


@app.command()
@with_score_options
def merge(
    stats: Annotated[list[Path], typer.Argument(metavar="STATS...", help="Statistics files (.npz) from `icr score "
                                                "--stats-out`: a list, their folder, or a quoted glob.")],
    no_cache: NoCache = False,
    output: Output = "-",
    quiet: Quiet = False,
    debug: Debug = False,
    sopts=None,
):
    """Merge the float64 sufficient statistics of the parts of one extraction (its shards, scored where their
    features are) into the full `icr score` result, equal to scoring the whole to float64 rounding.

    Every shard must be there once; parts of another extraction, layer or --ci grouping are refused by name.
    The result is cached by the content of every statistics file and the options, like `icr score`'s.

    Examples:

      icr score shard-0.h5 --stats-out s0.npz   # where shard 0 is

      icr merge s0.npz s1.npz s2.npz -o result.json

      icr merge 'stats/*.npz' --ci --ci-groups 20   # parts written so
    """
    from icrcli.cli import console
    from icrcli.cli.outputs import check_output
    from icrcli.stats.merged import expand, merge_stats
    from icrcli.stats.scorecache import cached_parts

    console.set_quiet(quiet)
    paths = expand(stats, (".npz",))
    if output != "-":
        check_output(output, "-o", [("a statistics file", p) for p in paths], "result")
    result, _ = cached_parts(paths, "stats", None, None, sopts, lambda: merge_stats(paths, sopts),
                             use_cache=not no_cache, warn=lambda msg: console.say(f"warning: {msg}"))
    if result.get("cached"):
        console.say(f"cached: answered from the cache entry {result['cache_entry']} (--no-cache recomputes)")
    for warning in result["warnings"]:
        console.say(f"warning: {warning}")
    console.write_json(result, output)
    console.say(f"ICR {result['icr']:.4f}  (N={result['n_images']}, K={result['n_views']}, D={result['dim']}, "
                f"{len(paths)} statistics files merged)")
