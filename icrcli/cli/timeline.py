"""`icr timeline`: ICR over the checkpoints of a training run, with CI exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from icrcli.cli.app import app
from icrcli.cli.scan_output import Csv, JsonLines, Plot
from icrcli.cli.options import (Debug, NoCache, Output, Quiet, cache_scope, with_model_options, with_score_options,
                                with_view_options)

CHECKS = "Checks"
GATES = "CI gates (exit 3)"
EXIT_GATE = 3


@app.command()
@with_model_options
@with_view_options
@with_score_options
def timeline(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="The folder a training run writes its checkpoints "
                                           "to; ordered by the step in their names.")],
    data: Annotated[Path, typer.Option(metavar="DATA", help="Images (as for `icr extract`).")],
    sigma: Annotated[list[str], typer.Option(metavar="S", help="Noise level (repeatable: one series each), or "
                                             "'auto': the argmin of a coarse sweep on the last checkpoint.")],
    pattern: Annotated[Optional[str], typer.Option(metavar="GLOB", help="Only checkpoints whose name matches "
                                                   "(default: every file `icr extract` reads).")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Keep polling DIR and add points as checkpoints appear, "
                                        "until interrupted or --until.")] = False,
    poll: Annotated[float, typer.Option(min=0.1, metavar="SECONDS", help="How often --watch looks.")] = 30.0,
    until: Annotated[Optional[int], typer.Option(metavar="STEP", help="With --watch: stop once a checkpoint at "
                                                 "this step or later is scored.")] = None,
    fail_on_rise: Annotated[Optional[float], typer.Option(min=0.0, metavar="PCT", help="Exit 3 when the last ICR "
                                                          "is PCT percent above the minimum so far.",
                                                          rich_help_panel=GATES)] = None,
    fail_above: Annotated[Optional[float], typer.Option(metavar="X", help="Exit 3 when the last ICR exceeds X.",
                                                        rich_help_panel=GATES)] = None,
    output: Output = "-",
    json_lines: JsonLines = False,
    csv: Csv = None,
    plot: Plot = None,
    probe: Annotated[bool, typer.Option("--probe", help="Also a linear probe on each point's features (labelled "
                                        "data).", rich_help_panel=CHECKS)] = False,
    memorization: Annotated[Optional[int], typer.Option(min=1, metavar="N", help="Also the memorization ratio of N "
                                                        "samples of each checkpoint against the --data images "
                                                        "(see `icr memorization`).", rich_help_panel=CHECKS)] = None,
    quiet: Quiet = False,
    debug: Debug = False,
    no_cache: NoCache = False,
    mopts=None, vopts=None, sopts=None,
):
    """ICR of every checkpoint of a training run, in step order: steadily falling, or a minimum followed by a
    rise (in data-limited runs, the paper's early warning that memorization is coming).

    Each point is exactly `icr extract` + `icr score` of that checkpoint, cached by its content: rerun after new
    checkpoints appear and only those are computed. Exit status: 0, 2 on bad input, 3 when a --fail-on-rise or
    --fail-above gate fails (in CI: `--fail-on-rise 5` fails the job on a 5% rise).

    Examples:

      icr timeline runs/ckpts/ --data train/ --sigma 0.3

      icr timeline runs/ckpts/ --data train/ --sigma auto --plot timeline.png

      icr timeline runs/ckpts/ --data train/ --sigma 0.3 --fail-on-rise 5

      icr timeline runs/ --data train/ --sigma 0.3 --watch --until 100000
    """
    from icrcli.cli import console, scan_output
    from icrcli.scans.sweep import ProbeOptions
    from icrcli.scans.timeline import Checks, parse_timeline_sigmas, run_timeline

    console.set_quiet(quiet)
    sigmas = parse_timeline_sigmas(sigma)
    scan_output.check_outputs(scan_output.scan_inputs(folder, data, mopts, vopts), output, csv, plot)
    with cache_scope(no_cache):
        result = run_timeline(folder, data, sigmas, mopts, vopts, sopts, pattern=pattern, watch=watch, poll=poll,
                              until=until, reporter=console.Reporter(),
                              on_point=scan_output.level_printer(json_lines),
                              checks=Checks(ProbeOptions(seed=vopts["seed"]) if probe else None, memorization),
                              fail_on_rise=fail_on_rise, fail_above=fail_above)
    for series in result["series"]:
        pts = [p for p in result["points"] if p["sigma"] == series["sigma"]]
        mark = next((p for p in pts if p["step"] == series["trend"]["step_min"]), None)
        scan_output.finish_table(pts, "step", f"ICR by step, sigma {series['sigma']:g}", mark, log_x=False)
        console.say(series["trend"]["description"])
        last = (series.get("rises") or [None])[-1]
        if last is not None and last["difference"] > 0:
            console.say(f"the last point's rise from the minimum: {last['difference']:+.4f}, paired jackknife "
                        f"interval [{last['ci'][0]:+.4f}, {last['ci'][1]:+.4f}]"
                        + (" (beyond it)" if last["beyond_interval"] else " (reaches 0: not a sure rise)"))
    scan_output.finish(result, result["points"], output, json_lines, csv, plot)
    failed = result["gates"]["failed"]
    for msg in failed:
        console.say(f"icr: gate failed: {msg}")
    if failed:
        raise typer.Exit(EXIT_GATE)
