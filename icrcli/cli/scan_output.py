"""What the scan commands share on the way out: records streamed as JSON lines, the table and chart on stderr,
the CSV and the plot files, the final JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from icrcli.cli import console
from icrcli.errors import UserError


SCAN_OUT = "Output"
EXIT_STOPPED = {"interrupted": 130, "terminated": 143}   # Ctrl-C, SIGTERM: 128 + the signal's number
JsonLines = Annotated[bool, typer.Option("--json-lines", help="Stream one JSON record per finished level or point on "
                                         "stdout; the last line is the whole result.", rich_help_panel=SCAN_OUT)]
Csv = Annotated[Optional[Path], typer.Option(metavar="FILE", help="Also write the records as CSV.",
                                             rich_help_panel=SCAN_OUT)]
Plot = Annotated[Optional[Path], typer.Option(metavar="FILE", help="Plot the scan (.png/.svg/.pdf; needs "
                                              "icr\\[plot]).", rich_help_panel=SCAN_OUT)]
Summary = Annotated[Optional[Path], typer.Option(metavar="FILE", help="Also write a Markdown summary (table, "
                                                 "verdict, gates, plot path), e.g. $GITHUB_STEP_SUMMARY.",
                                                 rich_help_panel=SCAN_OUT)]


def write_json_line(obj) -> None:
    """One record as one line of JSON on stdout, flushed at once so a pipeline sees it as it finishes."""
    sys.stdout.write(json.dumps(console._finite(obj), default=str) + "\n")
    sys.stdout.flush()


def check_outputs(inputs: list[tuple[str, Path]], output: str, csv: Path | None, plot: Path | None,
                  summary: Path | None = None) -> None:
    """-o, --csv, --plot and --summary: never an input, never a file that is not icr's own output of that kind;
    checked before any work. The checkpoint's sidecars count as inputs."""
    from icrcli.cli.outputs import check_output
    if plot is not None:
        from icrcli.report.plot import check_plot_path
        check_plot_path(plot)
    outs = ((output, "-o", "result"), (csv, "--csv", "csv"), (plot, "--plot", "plot"),
            (summary, "--summary", "summary"))
    for out, flag, kind in outs:
        if out is not None and str(out) != "-":
            check_output(out, flag, inputs, kind)
    given = [(str(o), f) for o, f, _ in outs if o is not None and str(o) != "-"]
    paths = [Path(o).resolve() for o, _ in given]
    if len(set(paths)) < len(paths):
        raise UserError(f"{' and '.join(f for _, f in given)} name the same file; give each its own path.")


def scan_inputs(checkpoint_or_folder: Path, data: Path, mopts, vopts) -> list[tuple[str, Path]]:
    from icrcli.models.options import sidecar_candidates
    # a timeline's folder holds the run's shared icr.json
    sidecars = [*sidecar_candidates(checkpoint_or_folder), checkpoint_or_folder / "icr.json"]
    return [("the checkpoint", checkpoint_or_folder), ("the data", data), ("the VAE", mopts.vae),
            ("the indices", vopts.indices_file), *[("a sidecar", s) for s in sidecars]]


def level_printer(json_lines: bool):
    """A callback for each finished record: one JSON line on stdout with --json-lines, else nothing."""
    return write_json_line if json_lines else None


def tables(result) -> None:
    """A scan's table on stderr, keyed by its axis (scans.engine.Axis): per series, its records against the
    axis with the minimum marked and a chart, then what the series says; then what the whole scan says
    (report.verdict)."""
    from icrcli.report.verdict import scan_lines, series_lines
    names = result.series_names()
    for key, recs in result.groups().items():
        finish_table(recs, result.axis.name, result.table_title(key, names[key]), result.lowest(recs),
                     log_x=result.axis.log)
        for line in series_lines(result, key):
            console.say(line)
    for line in scan_lines(result):
        console.say(line)


def finish_table(records: list[dict], x_key: str, title: str, best: dict | None, log_x: bool) -> None:
    """The table, then a small chart of ICR against x, on stderr."""
    from icrcli.report.chart import curve_chart
    from icrcli.report.table import records_table
    console.err().print(records_table(records, x_key, title, best))
    chart = curve_chart([r[x_key] for r in records], [r["icr"] for r in records], log_x=log_x, x_label=x_key)
    if chart:
        console.say(chart)


def finish(result: dict, records: list[dict], output: str, json_lines: bool, csv: Path | None,
           plot: Path | None, summary: Path | None = None) -> None:
    """CSV, plot and summary files if asked, then the result: a last JSON line with --json-lines, else JSON on -o
    or on stdout when it is not a terminal (a terminal gets the table and summary on stderr, as `icr score`)."""
    if csv is not None:
        from icrcli.cache import atomic_write
        from icrcli.report.table import csv_text
        with atomic_write(csv) as tmp:
            Path(tmp).write_text(csv_text(records))
        console.say(f"wrote {csv}")
    if plot is not None:
        from icrcli.report.plot import plot_result
        console.say(f"wrote {plot_result(result, plot)}")
    if summary is not None:
        from icrcli.cache import atomic_write
        from icrcli.report.summary import summary as markdown
        with atomic_write(summary) as tmp:
            Path(tmp).write_text(markdown(result, plot) + "\n")
        console.say(f"wrote {summary}")
    if json_lines and output == "-":
        write_json_line(result)
    elif output == "-" and stdout_is_terminal():
        console.say("(the full JSON result goes to a pipe or to -o FILE)")
    else:
        console.write_json(result, output)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def always_say(msg: str) -> None:
    """A line on stderr even with --quiet: why the exit status is what it is (a CI log must say it)."""
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
