"""`icr timeline`: ICR over the checkpoints of a training run, with CI exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from icrcli.cli.app import app
from icrcli.cli.scan_output import Csv, JsonLines, Plot, Summary
from icrcli.cli.options import (Debug, NoCache, Output, Quiet, ShardOpt, cache_scope, with_model_options,
                                with_options_file, with_score_options, with_view_options)

CHECKS = "Checks"
GATES = "CI gates (exit 3)"
WATCH = "Watch"
EXIT_GATE = 3
EXIT_IDLE = 4          # --idle ended the watch (and no gate failed)


@app.command()
@with_options_file
@with_model_options
@with_view_options
@with_score_options
def timeline(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="The folder a training run writes its checkpoints "
                                           "to; ordered by the step in their names.")],
    data: Annotated[Optional[Path], typer.Option(metavar="DATA", help="Images (as for `icr extract`); required "
                                                 "unless --options FILE names them.")] = None,
    sigma: Annotated[Optional[list[str]], typer.Option(metavar="S", help="Noise level (repeatable: one series "
                                                       "each), or 'auto': the argmin of a coarse sweep on the last "
                                                       "checkpoint; required unless --options FILE names them.")]
    = None,
    pattern: Annotated[Optional[str], typer.Option(metavar="GLOB", help="Only checkpoints whose name matches "
                                                   "(default: every file `icr extract` reads).")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Keep polling DIR and add points as checkpoints appear "
                                        "(each once complete), until --until, --idle or interrupted.",
                                        rich_help_panel=WATCH)] = False,
    poll: Annotated[float, typer.Option(min=0.1, metavar="SECONDS", help="How often --watch looks.",
                                        rich_help_panel=WATCH)] = 30.0,
    until: Annotated[Optional[int], typer.Option(metavar="STEP", help="With --watch: stop once a checkpoint at "
                                                 "this step or later is scored.", rich_help_panel=WATCH)] = None,
    idle: Annotated[Optional[str], typer.Option(metavar="DURATION", help="With --watch: stop when nothing new "
                                                "arrives for this long (90s, 10m, 2h); exit 4 unless a gate "
                                                "failed.", rich_help_panel=WATCH)] = None,
    retry_for: Annotated[str, typer.Option(metavar="DURATION", help="With --watch: how long a checkpoint that "
                                           "fails to load is tried again before it is skipped with a warning.",
                                           rich_help_panel=WATCH)] = "10m",
    fail_on_rise: Annotated[Optional[float], typer.Option(min=0.0, metavar="PCT", help="Exit 3 when the last ICR "
                                                          "is PCT percent above the minimum so far (with --ci: "
                                                          "and its interval lies wholly above the minimum's).",
                                                          rich_help_panel=GATES)] = None,
    fail_above: Annotated[Optional[float], typer.Option(metavar="X", help="Exit 3 when the last ICR exceeds X "
                                                        "(with --ci: its whole interval).",
                                                        rich_help_panel=GATES)] = None,
    point_estimates: Annotated[bool, typer.Option("--point-estimates", help="Gate on the point values even "
                                                  "when there are intervals.", rich_help_panel=GATES)] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first point where a gate fails "
                                            "(exit 3).", rich_help_panel=GATES)] = False,
    output: Output = "-",
    json_lines: JsonLines = False,
    csv: Csv = None,
    plot: Plot = None,
    summary: Summary = None,
    probe: Annotated[bool, typer.Option("--probe", help="Also a linear probe on each point's features (labelled "
                                        "data).", rich_help_panel=CHECKS)] = False,
    memorization: Annotated[Optional[int], typer.Option(min=1, metavar="N", help="Also the memorization ratio of N "
                                                        "samples of each checkpoint against the --data images "
                                                        "(see `icr memorization`).", rich_help_panel=CHECKS)] = None,
    shard: ShardOpt = None,
    quiet: Quiet = False,
    debug: Debug = False,
    no_cache: NoCache = False,
    mopts=None, vopts=None, sopts=None,
):
    """ICR of every checkpoint of a training run, in step order: steadily falling, or a minimum followed by a
    rise (in data-limited runs, the paper's early warning that memorization is coming).

    Each point is exactly `icr extract` + `icr score` of that checkpoint, cached by its content: rerun after new
    checkpoints appear and only those are computed. Exit status: 0; 2 on bad input; 3 when a --fail-on-rise or
    --fail-above gate fails (in CI: `--fail-on-rise 5 --ci` fails the job on a 5% rise beyond the intervals);
    4 when --idle ended a watch; 130 on Ctrl-C and 143 on SIGTERM, after the JSON of the points done.

    Examples:

      icr timeline runs/ckpts/ --data train/ --sigma 0.3

      icr timeline runs/ckpts/ --data train/ --sigma auto --plot timeline.png

      icr timeline runs/ckpts/ --data train/ --sigma 0.3 --ci --fail-on-rise 5

      icr timeline runs/ --data t/ --sigma 0.3 --ci --watch --idle 30m --fail-fast

      torchrun --nproc-per-node 8 -m icrcli timeline runs/ --data train/ --sigma 0.3

      icr timeline runs/ --data train/ --sigma 0.3 --shard 3/16

      icr timeline runs/ --options last.json --seed 1  # another seed
    """
    from icrcli import dist
    from icrcli.cli import console, inputs, scan_output
    from icrcli.scans.split import split_from
    from icrcli.scans.sweep import ProbeOptions
    from icrcli.scans.timeline import Checks, Gates, Watch, parse_timeline_sigmas, run_timeline
    from icrcli.scans.watch import parse_duration

    console.set_quiet(quiet or dist.rank() > 0)     # rank 0 alone speaks for a torchrun job
    data, sigma, probe, memorization = _saved(data, sigma, probe, memorization)
    sigmas = parse_timeline_sigmas(sigma)
    inputs.check(data=data)
    from icrcli.scans.sigmas import spec_warnings
    for w in spec_warnings(",".join(sigma), [] if isinstance(sigmas, str) else sigmas):
        console.say(f"warning: {w}")
    split = split_from(shard, None)
    if idle is not None and not watch:
        from icrcli.errors import UserError
        raise UserError(f"--idle {idle} ends a watch: add --watch, or drop --idle.")
    follow = Watch(poll, until, parse_duration(idle, "--idle") if idle is not None else None,
                   parse_duration(retry_for, "--retry-for")) if watch else None
    scan_output.check_outputs(scan_output.scan_inputs(folder, data, mopts, vopts), output, csv, plot, summary)
    with cache_scope(no_cache), dist.session():
        result = run_timeline(folder, data, sigmas, mopts, vopts, sopts, pattern=pattern, watch=follow,
                              reporter=console.Reporter(), on_point=scan_output.level_printer(json_lines),
                              checks=Checks(ProbeOptions(seed=vopts.seed) if probe else None, memorization),
                              gates=Gates(fail_on_rise, fail_above, point_estimates, fail_fast), split=split)
    if dist.rank() > 0:
        return
    if result.kind == "timeline-shard":
        console.write_json(result, output)
        console.say(f"shard {result['shard']}: {len(result.points)} point(s) computed and cached; the same "
                    "command without --shard assembles the timeline")
        return
    scan_output.tables(result)
    scan_output.finish(result, result.points, output, json_lines, csv, plot if result.points else None, summary)
    raise typer.Exit(exit_status(result))


def _saved(data: Path | None, sigma: list[str] | None, probe: bool, memorization: int | None):
    """--data, --sigma, --probe and --memorization as given, else as the --options FILE result ran; --data and
    --sigma are required one way or the other."""
    from icrcli.cli.options import given_on_command_line, options_path, saved_block, saved_or_given
    from icrcli.errors import UserError
    data = saved_or_given(data, "data", "data")
    if options_path() is not None and not given_on_command_line("sigma"):
        auto = saved_or_given(None, "sigma", "sigma_auto")
        saved = saved_or_given(None, "sigma", "sigmas")
        sigma = ["auto"] if auto else [repr(float(s)) for s in saved] if saved else sigma
    checks = saved_block("checks") if options_path() is not None else None
    if checks:
        probe = probe or (not given_on_command_line("probe") and checks.get("probe") is not None)
        if not given_on_command_line("memorization"):
            memorization = checks.get("memorization")
    for name, value in (("--data", data), ("--sigma", sigma)):
        if not value:
            raise UserError(f"Missing option '{name}' (or --options FILE of a timeline that names it).")
    return Path(data), list(sigma), probe, memorization


def exit_status(result: dict) -> int:
    """Interrupted (130, 143) over a failed gate (3) over an idle watch (4) over success (0); the reason is said
    on stderr even with --quiet, so a CI log tells why the job failed."""
    from icrcli.cli import scan_output
    from icrcli.cli.scan_output import always_say
    failed, stopped = result["gates"]["failed"], result.get("stopped")
    for msg in failed:
        always_say(f"icr: gate failed: {msg}")
    if stopped in scan_output.EXIT_STOPPED:
        always_say(f"icr: {stopped} with {len(result['points'])} points done; the JSON result holds them")
        return scan_output.EXIT_STOPPED[stopped]
    if failed:
        return EXIT_GATE
    if stopped == "idle":
        always_say(f"icr: the watch ended: nothing new for {result['options']['watch']['idle']:g} s (--idle)")
        return EXIT_IDLE
    return 0
