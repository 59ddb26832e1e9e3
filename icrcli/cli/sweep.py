"""`icr sweep`: ICR over noise levels (and layers) of one checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from icrcli.cli.app import app
from icrcli.cli.scan_output import Csv, JsonLines, Plot, Summary
from icrcli.cli.options import (Debug, NoCache, Output, Quiet, ShardOpt, Shards, cache_scope, with_model_options,
                                with_options, with_options_file, with_score_options, with_view_options)
from icrcli.scans.options import ProbeOptions

CHECKS = "Checks"
# The probe's options under their sweep names (`icr probe` names them --split, --protocol, ...); the seed is --seed.
PROBE_FLAGS = {"split": "--probe-split", "protocol": "--probe-protocol", "folds": "--probe-folds",
               "test_data": "--probe-test-data"}


@app.command()
@with_options_file
@with_model_options
@with_view_options
@with_score_options
@with_options("probe_base", ProbeOptions, skip=("seed", "l2"), flags=PROBE_FLAGS, block="probe")
def sweep(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="Checkpoint (as for `icr extract`).")],
    data: Annotated[Optional[Path], typer.Option(metavar="DATA", help="Images (as for `icr extract`); required "
                                                 "unless --options FILE names them.")] = None,
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
    mopts=None, vopts=None, sopts=None, probe_base=None,
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

      icr sweep ckpt.pt --options old.json --seed 1  # again, another seed
    """
    import dataclasses

    from icrcli import dist
    from icrcli.cli import console, scan_output
    from icrcli.cli import inputs as early
    from icrcli.scans.sigmas import edge_warnings, parse_sigmas, spec_warnings
    from icrcli.scans.split import split_from
    from icrcli.scans.sweep import run_sweep

    console.set_quiet(quiet or dist.rank() > 0)     # rank 0 alone speaks for a torchrun job
    split = split_from(shard, shards)
    data, sigmas, probe, saved_split = _saved(data, sigmas, probe)
    levels = parse_sigmas(sigmas)
    early.check(checkpoint=checkpoint, data=data)
    grid_warnings = spec_warnings(sigmas, levels)
    for w in grid_warnings:
        console.say(f"warning: {w}")
    base = dataclasses.replace(probe_base, seed=vopts.seed)
    probe_opts = base if probe else None
    if base.test_data is not None and not probe:
        from icrcli.errors import UserError
        raise UserError("--probe-test-data is the probe's held-out data: add --probe (or drop "
                        "--probe-test-data).")
    given = {"--probe-train": probe_train, "--probe-test": probe_test}
    if probe_first is not None or any(given.values()):
        from icrcli.data.indices import read_indices
        from icrcli.scans.sweep import reference_probe
        lists = {k: read_indices(v, k) if v is not None else None for k, v in given.items()}
        probe_opts, indices = reference_probe(base, vopts.indices, lists["--probe-train"], lists["--probe-test"],
                                              probe_first)
        vopts = dataclasses.replace(vopts, indices=indices)
    elif probe and saved_split is not None:     # --options FILE of a sweep probed on a reference split
        from icrcli.scans.sweep import reference_probe
        probe_opts, _ = reference_probe(base, vopts.indices, *saved_split)
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


def _saved(data: Path | None, sigmas: str | None, probe: bool):
    """--data, --sigmas and --probe as given, else as the --options FILE result ran (its reference split, if its
    probe had one, as (train, test)); --data is required one way or the other."""
    from icrcli.cli.options import given_on_command_line, options_path, saved_block, saved_or_given
    data = saved_or_given(data, "data", "data")
    if data is None:
        from icrcli.errors import UserError
        raise UserError("Missing option '--data': the images to sweep over (or --options FILE of a sweep that names "
                        "them).")
    saved_sigmas = saved_or_given(sigmas, "sigmas", "sigmas")
    if isinstance(saved_sigmas, list):  # the levels the saved sweep scored, exactly (repr round-trips a float)
        saved_sigmas = ",".join(repr(float(s)) for s in saved_sigmas)
    saved_probe = saved_block("probe") if options_path() is not None else None
    if not given_on_command_line("probe"):
        probe = probe or saved_probe is not None
    split = None
    if saved_probe is not None and "train" in saved_probe:
        split = (tuple(saved_probe["train"]), tuple(saved_probe["test"]))
    return Path(data), saved_sigmas, probe, split
