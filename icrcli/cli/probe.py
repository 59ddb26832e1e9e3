"""`icr probe`: linear-probe accuracy of a labelled feature file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from icrcli.cli.app import app
from icrcli.cli.options import Debug, Output, Quiet, guard_output, with_options
from icrcli.scans.options import ProbeOptions


@app.command()
@with_options("popts", ProbeOptions, skip=("test_data",), panel=None)
def probe(
    features: Annotated[Path, typer.Argument(metavar="FEATURES", help="Feature file from `icr extract` on "
                                             "labelled data (has /labels).")],
    test: Annotated[Optional[Path], typer.Option(help="Test on this feature file (the held-out images' "
                                                 "extraction with the same options) instead of folds or a split.")]
    = None,
    popts=None,     # the probe's options (scans.options.ProbeOptions) go here
    layer: Annotated[Optional[str], typer.Option(help="Layer name in a feature file with several "
                                                 "layers.")] = None,
    output: Output = "-",
    quiet: Quiet = False,
    debug: Debug = False,
):
    """Linear-probe accuracy of a labelled feature file, by default as the paper probes: one view per image.

    --protocol paper (default) reads view 0 of each image, which is the clean image noised at the file's sigma
    when extracted with --augment none, and tests on --test or by k-fold cross-validation (said in the
    result); --protocol view-mean reads the mean over views s_i. Standardised with the training split's mean
    and std; multinomial logistic regression with bias, float64, Newton's method (L-BFGS for large problems)
    from zero (deterministic). See docs/PROBE.md.

    Examples:

      icr probe feats.h5                  # 5-fold cross-validation, view 0

      icr probe train-feats.h5 --test test-feats.h5 --knn 20

      icr probe feats.h5 --protocol view-mean --split 0.75

      icr probe feats.h5 -q | jq .test_accuracy
    """
    from icrcli.cli import console, inputs
    for path, flag in ((features, "FEATURES"), (test, "--test")):   # before torch is imported
        inputs.existing(path, flag, "a feature file written by `icr extract` on labelled data")
    from icrcli.scans.probe import probe_file

    console.set_quiet(quiet)
    guard_output(output, *[p for p in (features, test) if p is not None])
    result = probe_file(features, test=test, split=popts.split, seed=popts.seed, l2=popts.l2, knn=popts.knn,
                        layer=layer, protocol=popts.protocol, folds=popts.folds)
    console.write_json(result, output)
    knn_text = (f"; {result['knn']['k']}-NN {result['knn']['test_accuracy']:.4f}" if "knn" in result else "")
    console.say(f"test accuracy {result['test_accuracy']:.4f} +- {result['test_accuracy_se']:.4f} "
                f"(train {result['train_accuracy']:.4f}; {result['n_classes']} classes, {result['n_train']} train / "
                f"{result['n_test']} test images; {result['protocol']['evaluation']}){knn_text}")
    for w in result["warnings"]:
        console.say(f"warning: {w}")
