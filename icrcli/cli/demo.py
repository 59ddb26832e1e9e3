"""`icr demo`: the sweep and the timeline on the small MNIST models shipped with icr, into one folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icrcli.cli.app import app
from icrcli.cli.options import Debug, Quiet

FILES = ("sweep.json", "sweep.png", "timeline.json", "timeline.png", "summary.json")


@app.command()
def demo(
    output: Annotated[Path, typer.Option("-o", "--output", metavar="DIR", help="Folder for the results (JSON and "
                                         "plots); created if absent.")] = Path("icr-demo"),
    quick: Annotated[bool, typer.Option("--quick", help="Fewer images, levels and samples (under a minute): a smoke "
                                        "test, its numbers are rough.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "cpu",
    quiet: Quiet = False,
    debug: Debug = False,
):
    """Run the tool's two scans on real diffusion models trained on MNIST, shipped with icr (no download).

    1. `icr sweep --probe` of a model trained on 5,000 digits: ICR over noise levels, its lowest point beside
    the noise level whose features a linear probe classifies best. 2. `icr timeline --memorization` over the
    checkpoints of a model trained on 64 digits until it copies them: ICR against training step beside the
    fraction of samples that copy a training image. Tables and charts go to stderr; sweep.json, sweep.png,
    timeline.json, timeline.png and summary.json go to DIR. A few minutes on a laptop CPU.

    Examples:

      icr demo

      icr demo -o demo-out --quick
    """
    import importlib.util

    from icrcli import __version__
    from icrcli.cli import console, scan_output
    from icrcli.errors import UserError
    from icrcli.cli.outputs import check_output
    from icrcli.report.plot import check_plot_path, plot_result
    from icrcli.scans.demo import run_demo

    console.set_quiet(quiet)
    if output.exists() and not output.is_dir():
        raise UserError(f"-o {output} is a file; give a folder for the demo's results (created if absent).")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:    # e.g. under /proc, on a read-only disk, where a parent is a file
        raise UserError(f"-o {output}: cannot create the folder ({e.strerror or e}). Give a folder you can write "
                        "to.") from None
    paths = {name: output / name for name in FILES}
    for name, path in paths.items():   # refuse before any work, never over a file that is not icr's own
        if name.endswith(".png"):
            check_plot_path(path)
        check_output(path, "-o", [], "plot" if name.endswith(".png") else "result")
    result = run_demo(quick=quick, device=device, reporter=console.Reporter())

    sweep, timeline = result["sweep"], result["timeline"]
    best = sweep["argmin"]
    for layer in sweep["layers"]:
        recs = [r for r in sweep["levels"] if r["layer"] == layer]
        mark = next((r for r in recs if r["sigma"] == best["sigma"]), None)
        scan_output.finish_table(recs, "sigma", f"1. ICR by sigma, data-rich model, layer {layer}", mark, log_x=True)
    for agree in sweep.get("probe") or []:
        console.say(f"probe ({agree['protocol']['name']}): best accuracy {agree['best_accuracy']:.3f} at sigma "
                    f"{agree['argmax_accuracy_sigma']:g}; "
                    f"ICR lowest at sigma {agree['argmin_icr_sigma']:g} (accuracy there "
                    f"{agree['accuracy_at_argmin_icr']:.3f})")
    for series in timeline["series"]:
        pts = [p for p in timeline["points"] if p["sigma"] == series["sigma"]]
        mark = next((p for p in pts if p["step"] == series["trend"]["step_min"]), None)
        scan_output.finish_table(pts, "step", f"2. ICR by step, data-limited run, sigma {series['sigma']:g}", mark,
                                 log_x=False)
        console.say(series["trend"]["description"])
        mem = ", ".join(f"{p['step']}: {p['memorization_ratio']:.2f}" for p in pts)
        console.say(f"memorization ratio by step: {mem}")

    console.write_json(sweep, str(paths["sweep.json"]))
    console.write_json(timeline, str(paths["timeline.json"]))
    written = [n for n in FILES if n.endswith(".json")]
    if importlib.util.find_spec("matplotlib") is None:   # the plots are optional; the results are not
        console.say("no plots: matplotlib is not installed (pip install 'icr[plot]', then `icr plot "
                    f"{paths['sweep.json']} -o {paths['sweep.png']}` draws one)")
    else:
        plot_result(sweep, paths["sweep.png"])
        plot_result(timeline, paths["timeline.png"])
        written += ["sweep.png", "timeline.png"]
    summary = {"schema": 1, "kind": "demo", "version": __version__, "settings": result["settings"],
               "files": {n: str(paths[n]) for n in written},
               "sweep_argmin": best, "probe": sweep.get("probe"),
               "timeline_trend": [s["trend"] for s in timeline["series"]],
               "memorization": [{"step": p["step"], "ratio": p["memorization_ratio"]} for p in timeline["points"]]}
    console.write_json(summary, str(paths["summary.json"]))
    console.say(f"wrote {', '.join(sorted(written))} to {output}")
