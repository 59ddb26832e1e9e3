"""`icr sweep`: ICR over noise levels (and layers) of one checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from icrcli.cli.app import app
from icrcli.cli.scan_output import Csv, JsonLines, Plot, Summary
from icrcli.cli.options import (Debug, NoCache, Output, ProbeProtocol, Quiet, ShardOpt, Shards, cache_scope,
                                with_model_options, with_score_options, with_view_options)

CHECKS = "Checks"


@app.command()
@with_model_options
@with_view_options
@with_score_options
def sweep(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="Checkpoint (as for `icr extract`).")],
    data: Annotated[Path, typer.Option(metavar="DATA", help="Images (as for `icr extract`).")],
    sigmas: Annotated[Optional[str], typer.Option(
        metavar="SPEC", help="Noise levels: start:stop:num (geometric, both ends), lin:start:stop:num, a list "
        "0,0.1,0.5, edmN or edmN:LO..HI (EDM/Karras levels). Default: 0 plus the EDM-18 levels up to 3.3, "
        "the paper's grid.")] = None,
    output: Output = "-",
    json_lines: JsonLines = False,
    csv: Csv = None,
    plot: Plot = None,
    summary: Summary = None,
    probe: Annotated[bool, typer.Option("--probe", help="Also a linear probe at each level (labelled data): the "
                                        "accuracy's argmax beside ICR's argmin, with paired tests. By default the "
                                        "paper's probe: one view per image of the clean images noised at that "
                                        "sigma (no augmentation), tested on --probe-test-data or by k-fold "
                                        "cross-validation.", rich_help_panel=CHECKS)] = False,
    probe_test_data: Annotated[Optional[Path], typer.Option(metavar="DATA", help="With --probe: held-out labelled "
                                                       "images the probe is tested on, extracted with the same "
                                                       "plan (without it: --probe-folds cross-validation).",
                                                       rich_help_panel=CHECKS)] = None,
    probe_protocol: Annotated[ProbeProtocol, typer.Option("--probe-protocol", help="paper: one noise-only view per "
                                                          "image; view-mean: the mean over the level's own "
                                                          "augmented views, on a --probe-split.",
                                                          rich_help_panel=CHECKS)] = ProbeProtocol("paper"),
    probe_folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds of the paper's probe without "
                                             "--probe-test-data.", rich_help_panel=CHECKS)] = 5,
    probe_split: Annotated[float, typer.Option(min=0.05, max=0.95, help="Fraction of images the view-mean probe "
                                               "trains on (stratified, by --seed).", rich_help_panel=CHECKS)] = 0.75,
    knn: Annotated[Optional[int], typer.Option(min=1, metavar="K", help="With --probe: also k-NN accuracy "
                                               "(cosine).", rich_help_panel=CHECKS)] = None,
    probe_first: Annotated[Optional[int], typer.Option(metavar="N", help="A reference split from --indices' "
                                                       "order: the probe trains on the first N images listed and "
                                                       "tests on the rest (implies --probe).",
                                                       rich_help_panel=CHECKS)] = None,
    probe_train: Annotated[Optional[Path], typer.Option(metavar="FILE", help="A reference split by files: the "
                                                        "images the probe trains on, listed as for --indices "
                                                        "(implies --probe).", rich_help_panel=CHECKS)] = None,
    probe_test: Annotated[Optional[Path], typer.Option(metavar="FILE", help="The images the probe tests on "
                                                       "(default: the other images extracted). Without --indices "
                                                       "the extraction is the two lists.",
                                                       rich_help_panel=CHECKS)] = None,
    shard: ShardOpt = None,
    shards: Shards = None,
    quiet: Quiet = False,
    debug: Debug = False,
    no_cache: NoCache = False,
    mopts=None, vopts=None, sopts=None,
):
    """ICR at every noise level of a grid (and at every --layer): finds the semantic window of a checkpoint,
    the sigma (and layer) where ICR is lowest, and which levels are statistically tied with it (a paired
    jackknife interval of each level's rise from the minimum).

    --augment may be repeated: one pass gives an augmentation x sigma grid, with the residual each
    augmentation leaves at the lowest sigma (tr Sigma_xi / tr Sigma_s), which moves where the minimum falls.

    Each level is exactly `icr extract` + `icr score` at that sigma with the same options, and every (image,
    view) keeps its augmentation and unit noise across levels, so differences between levels are not sampling
    noise. Images are decoded once for every level and augmentation. Killed, the same command resumes; repeated
    unchanged, it answers from the cache.

    Examples:

      icr sweep ckpt.pt --data imgs/ --sigmas 0.1:10:20

      icr sweep edm.pkl --data cifar10/ --sigmas edm18:..3.3 --ci --plot s.png

      icr sweep ckpt.pt --data imgs/ --layer auto --plot grid.png

      icr sweep ckpt.pt --data mnist/ --augment crop --augment digits

      icr sweep ckpt.pt --data train/ --probe --probe-test-data test/

      icr sweep ckpt.pt --data imgs/ -q | jq '.argmin.sigma'

      icr sweep ckpt.pt --data mnist/ --indices ref.txt --probe-first 1500

      torchrun --nproc-per-node 8 -m icrcli sweep ckpt.pt --data imgs/ -o sweep.json

      icr sweep ckpt.pt --data imgs/ --shard 2/8    # a Slurm array task

      icr sweep ckpt.pt --data imgs/ --shards 8     # then: merge the 8
    """
    from icrcli import dist
    from icrcli.cli import console, scan_output
    from icrcli.cli import inputs as early
    from icrcli.scans.sigmas import edge_warnings, parse_sigmas, spec_warnings
    from icrcli.scans.split import split_from
    from icrcli.scans.sweep import ProbeOptions, run_sweep

    console.set_quiet(quiet or dist.rank() > 0)     # rank 0 alone speaks for a torchrun job
    split = split_from(shard, shards)
    levels = parse_sigmas(sigmas)
    early.check(checkpoint=checkpoint, data=data, vopts=vopts)
    grid_warnings = spec_warnings(sigmas, levels)
    for w in grid_warnings:
        console.say(f"warning: {w}")
    base = ProbeOptions(split=probe_split, seed=vopts["seed"], knn=knn, protocol=probe_protocol.value,
                        folds=probe_folds, test_data=None if probe_test_data is None else str(probe_test_data))
    probe_opts = base if probe else None
    if probe_test_data is not None and not probe:
        from icrcli.errors import UserError
        raise UserError("--probe-test-data is the probe's held-out data: add --probe (or drop "
                        "--probe-test-data).")
    given = {"--probe-train": probe_train, "--probe-test": probe_test}
    if probe_first is not None or any(given.values()):
        from icrcli.data.indices import read_indices
        from icrcli.scans.sweep import reference_probe
        lists = {k: read_indices(v, k) if v is not None else None for k, v in given.items()}
        probe_opts, vopts["indices"] = reference_probe(base, vopts["indices"], lists["--probe-train"],
                                                       lists["--probe-test"], probe_first)
    inputs = [*scan_output.scan_inputs(checkpoint, data, mopts, vopts),
              *[(f"the {k} list", v) for k, v in given.items() if v is not None]]
    scan_output.check_outputs(inputs, output, csv, plot, summary)
    with cache_scope(no_cache), dist.session():
        result = run_sweep(checkpoint, data, levels, mopts, vopts, sopts, reporter=console.Reporter(),
                           on_level=scan_output.level_printer(json_lines), probe=probe_opts, use_cache=not no_cache,
                           split=split)
    if dist.rank() > 0:
        return
    if result.kind == "sweep-shard":
        console.write_json(result, output)
        console.say(f"shard {result['shard']}: {len(result.levels)} level(s) extracted; score them all with the "
                    f"same command and --shards {split.shard.count}")
        return
    from icrcli.scans.result import SweepResult
    edges = edge_warnings(result.levels)     # said after the table, in the JSON with the grid's own
    result = SweepResult({**result.to_dict(), "warnings": [*grid_warnings, *result.warnings, *edges]})
    scan_output.tables(result)
    for w in edges:
        console.say(f"warning: {w}")
    scan_output.finish(result, result.levels, output, json_lines, csv, plot if result.argmin else None, summary)
    if result.stopped:
        scan_output.always_say(f"icr: {result.stopped} with {len(result.levels)} levels scored")
        raise typer.Exit(scan_output.EXIT_STOPPED[result.stopped])
