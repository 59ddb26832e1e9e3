"""Regenerate docs/VALIDATION.md: the paper's two findings checked on the models shipped in icrcli/demo_data.

    python examples/validate.py [--runs /tmp/runs] [--data ../shared/data]

The protocol is fixed here, before any result is seen, and is not tuned by how the curves come out:

Finding 1 (paper Sec. 4, Fig. 2 in form): the data-rich model's final checkpoint; 600 held-out MNIST test images
(../shared/data/mnist-test, never trained on); the paper's sigma grid (0 plus the EDM-18 levels up to 3.3); two
layers, the decoder's second block at 14x14 (the default tap) and at 7x7 (the bottleneck level); augmentations
`crop` and `paper`; K = 2 views; the paper estimator with the default ridge and a 95% jackknife interval (20 groups); a
linear probe on 75% of the images, tested on the rest; extraction seeds 0 and 1.

Finding 2 (paper Sec. 5, Fig. 4 in form): every shipped checkpoint of the data-limited run; its 64 training images;
sigma 0.5 (sigma_data, fixed in advance); the default layer (dec.14x14_block1); augmentation `paper`; K = 2;
the memorization ratio of 128 samples per checkpoint (EDM Heun, 18 steps; nearest training image closer than a
third of the second nearest, in pixels) with sampling seed 0; extraction seeds 0 and 1 (the ratio is measured
at seed 0 only: the CPU time of a second set of samples did not fit). The "first clear rise" in
memorization is the first step whose ratio is at least 0.1 and more than two standard errors above 0.

Plots are made by icr itself (icrcli.report.plot.plot_result); results are saved as JSON beside them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from icrcli.cli.console import Reporter
from icrcli.models.options import ModelOptions
from icrcli.report.plot import plot_result
from icrcli.scans.demo import demo_data, view_options
from icrcli.scans.memorization import memorization
from icrcli.scans.sigmas import parse_sigmas
from icrcli.scans.sweep import ProbeOptions, run_sweep
from icrcli.scans.timeline import Checks, run_timeline
from icrcli.stats.options import ScoreOptions

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FIG = DOCS / "validation"
SEEDS = (0, 1)
AUGMENTS = ("crop", "paper")
F1_IMAGES = 600
F1_LAYERS = ["model.dec.14x14_block1", "model.dec.7x7_block1"]
F2_SIGMA = 0.5
F2_SAMPLES = 128


def first_clear_rise(points: list[dict]) -> int | None:
    for p in points:
        if p["memorization_ratio"] >= 0.1 and p["memorization_ratio"] - 2 * p["memorization_ratio_se"] > 0:
            return p["step"]
    return None


def finding1(test_images: Path, rep) -> list[dict]:
    files = demo_data()
    out = []
    for aug in AUGMENTS:
        for seed in SEEDS:
            vopts = dataclasses.replace(view_options(F1_IMAGES, "cpu", seed), augment=aug, layer=F1_LAYERS)
            r = run_sweep(files.rich_checkpoint, test_images, parse_sigmas(None), ModelOptions(), vopts,
                          ScoreOptions(ci=True), reporter=rep, probe=ProbeOptions(seed=seed))
            name = f"finding1-{aug}-seed{seed}"
            (FIG / f"{name}.json").write_text(json.dumps(r, indent=1, default=str))
            plot_result(r, FIG / f"{name}.png")
            out.append({"augment": aug, "seed": seed, "result": r, "name": name})
    return out


def finding2(rep) -> list[dict]:
    files = demo_data()
    out = []
    for seed in SEEDS:
        vopts = view_options(64, "cpu", seed)
        r = run_timeline(files.limited_checkpoints, files.limited_images, [F2_SIGMA], ModelOptions(), vopts,
                         ScoreOptions(ci=True), reporter=rep,
                         checks=Checks(memorization=F2_SAMPLES if seed == 0 else None))
        name = f"finding2-seed{seed}"
        (FIG / f"{name}.json").write_text(json.dumps(r, indent=1, default=str))
        plot_result(r, FIG / f"{name}.png")
        out.append({"seed": seed, "result": r, "name": name})
    return out


def loss_plot(runs: Path | None) -> list[str]:
    """The training loss curves (from the runs' loss.csv, copied beside the figures) as one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lines = []
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for run in ("rich", "limited"):
        src = (runs / run / "loss.csv") if runs else None
        dst = FIG / f"loss-{run}.csv"
        if src and src.exists():
            dst.write_text(src.read_text())
        if not dst.exists():
            continue
        rows = list(csv.DictReader(dst.open()))
        step = np.array([int(r["step"]) for r in rows])
        loss = np.array([float(r["loss"]) for r in rows])
        ax.plot(step, loss, label=f"{run} (last 50-step mean {loss[-1]:.3f})")
        lines.append(f"| {run} | {step[-1]} | {loss[-1]:.4f} | {float(rows[-1]['seconds']) / 60:.0f} min |")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("EDM loss (mean of 50 steps)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(FIG / "loss.png", dpi=110)
    plt.close(fig)
    return lines


def sample_grid() -> dict:
    """Samples of the data-rich model beside their nearest training image (icr memorization --grid)."""
    files = demo_data()
    return memorization(files.rich_checkpoint, files.rich_images, samples=64, grid=FIG / "samples-rich.png",
                        grid_count=32)


def fmt_ci(rec) -> str:
    lo, hi = rec.get("icr_ci") or (float("nan"), float("nan"))
    return f"{rec['icr']:.3f} [{lo:.3f}, {hi:.3f}]"


def write_md(f1, f2, losses, grid, seconds) -> str:
    L = ["# Validation: the paper's two findings on models trained here", "",
         ("Regenerated by `python examples/validate.py` (its docstring fixes the protocol; nothing here was tuned "
         "to make the curves agree). Models: `icrcli/demo_data` (how they were trained: README, \"The demo and its models\"). "
         f"This regeneration took {seconds:.0f} s on a 2-core CPU shared with other work (scans already in icr's cache "
         "are answered from it; the first run took about 5 min)."), "",
         "## The models", "", "| run | steps | final loss (mean of the last 50 steps) | wall time |", "|---|---|---|---|",
         *losses, "", "![training loss](validation/loss.png)", "",
         (f"Samples of the data-rich model (left of each pair) beside their nearest training image (right): "
         f"memorization ratio {grid['ratio']:.3f} of {grid['n_samples']} samples against its 5,000 training "
         "images."), "", "![samples](validation/samples-rich.png)", "",
         "## Finding 1: ICR's minimum over sigma marks the level whose features classify best", "",
         ("| augment | seed | layer | argmin ICR (sigma) | ICR there [95% CI] | argmax probe accuracy (sigma) | "
         "accuracy at ICR's argmin | best accuracy | same level? | within 2 SE? |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for run in f1:
        r = run["result"]
        for a in r["probe"]:  # one verdict per (augmentation, layer)
            layer = a["layer"]
            rec = min((x for x in r["levels"] if x["layer"] == layer), key=lambda x: (x["icr"], x["sigma"]))
            L.append(f"| {run['augment']} | {run['seed']} | {layer.split('.')[-1]} | {a['argmin_icr_sigma']:g} | "
                     f"{fmt_ci(rec)} | {a['argmax_accuracy_sigma']:g} | {a['accuracy_at_argmin_icr']:.3f} | "
                     f"{a['best_accuracy']:.3f} | {'yes' if a['agree'] else 'no'} | "
                     f"{'yes' if a['within_se'] else 'no'} |")
    L += ["", "Seed-to-seed spread (seeds 0 and 1: the views' augmentation and noise, the probe split):", ""]
    for aug in AUGMENTS:
        runs = [x["result"] for x in f1 if x["augment"] == aug]
        for layer in runs[0]["layers"]:
            per = [{x["sigma"]: x for x in r["levels"] if x["layer"] == layer} for r in runs]
            d_icr = max(abs(per[0][s]["icr"] - per[1][s]["icr"]) for s in per[0])
            d_acc = max(abs(per[0][s]["probe_test_accuracy"] - per[1][s]["probe_test_accuracy"]) for s in per[0])
            L.append(f"- {aug}, {layer.split('.')[-1]}: largest |ICR(seed 0) - ICR(seed 1)| over sigma {d_icr:.4f}; "
                     f"largest accuracy difference {d_acc:.3f}")
    L += ["", *[f"![{x['name']}](validation/{x['name']}.png)" for x in f1], "",
          "## Finding 2: in a data-limited run, ICR's minimum over training comes before memorization", "",
          "| seed | step | ICR [95% CI] | trace Σ_s | trace Σ_ξ | memorization ratio ± SE |", "|---|---|---|---|---|---|"]
    for run in f2:
        for p in run["result"]["points"]:
            L.append(f"| {run['seed']} | {p['step']} | {fmt_ci(p)} | {p['trace_s']:.4g} | {p['trace_xi']:.4g} | "
                     + (f"{p['memorization_ratio']:.3f} ± {p['memorization_ratio_se']:.3f} |"
                        if "memorization_ratio" in p else "(seed 0's) |"))
    L.append("")
    for run in f2:
        t = run["result"]["series"][0]["trend"]
        rise = first_clear_rise(f2[0]["result"]["points"])   # samples of seed 0: the same checkpoints
        order = ("before" if rise is not None and t["step_min"] < rise else
                 "at the same checkpoint as" if rise == t["step_min"] else "after" if rise is not None else "—")
        L.append(f"- seed {run['seed']}: ICR minimum at step {t['step_min']} (ICR {t['icr_min']:.4f}; "
                 f"{t['description']}); first clear rise in memorization: "
                 f"{'step ' + str(rise) if rise is not None else 'none among the shipped checkpoints'}; the ICR "
                 f"minimum comes {order} it.")
    L += ["", *[f"![{x['name']}](validation/{x['name']}.png)" for x in f2], "", "## What reproduces", "",
          *verdict(f1, f2), ""]
    return "\n".join(L) + "\n"


def verdict(f1, f2) -> list[str]:
    """The plain summary, computed from the numbers by rules fixed in advance."""
    cases = [(x["augment"], x["seed"], a) for x in f1 for a in x["result"]["probe"]]
    same = sum(a["agree"] for *_, a in cases)
    close = sum(a["within_se"] for *_, a in cases)
    gaps = [a["best_accuracy"] - a["accuracy_at_argmin_icr"] for *_, a in cases]
    out = [f"- Finding 1: in {same} of {len(cases)} (augmentation, seed, layer) cases ICR's lowest level is the "
           f"probe's best level; in {close} of {len(cases)} the accuracy at ICR's argmin is within two standard "
           f"errors of the best (accuracy lost by picking sigma by ICR: median {np.median(gaps):.3f}, largest "
           f"{max(gaps):.3f}). "
           + ("It reproduces on this model." if close == len(cases) else
              "It reproduces in part." if close >= len(cases) / 2 else "It does not reproduce on this model.")]
    # Descriptive, added after the first run to say what the table alone does not: do the two curves move together
    # over sigma (rank correlation; negative: lower ICR goes with higher accuracy), and is the accuracy peak sharp?
    rhos, flat = [], 0
    for x in f1:
        for layer in x["result"]["layers"]:
            recs = [r for r in x["result"]["levels"] if r["layer"] == layer]
            rhos.append(spearmanr([r["icr"] for r in recs], [r["probe_test_accuracy"] for r in recs])[0])
            low = [r for r in recs if r["sigma"] <= 0.6]
            acc = [r["probe_test_accuracy"] for r in low]
            flat += max(acc) - min(acc) <= 2 * max(r["probe_test_accuracy_se"] for r in low)
    out.append(f"  Over sigma, ICR and probe accuracy are rank-correlated at Spearman rho {np.median(rhos):+.2f} (median; "
               f"range {min(rhos):+.2f} to {max(rhos):+.2f}). Below sigma 0.6 the accuracy is flat within two "
               f"standard errors in {flat} of {len(rhos)} cases (no sharp peak for ICR's minimum to find), and ICR's "
               f"minimum lies at sigma <= {max(a['argmin_icr_sigma'] for *_, a in cases):g} in every case.")
    for run in f2:
        t = run["result"]["series"][0]["trend"]
        rise = first_clear_rise(f2[0]["result"]["points"])   # samples of seed 0: the same checkpoints
        if rise is None:
            out.append(f"- Finding 2, seed {run['seed']}: no clear rise in memorization among the shipped checkpoints, "
                       "so the ordering cannot be tested.")
        else:
            ok = t["step_min"] < rise
            out.append(f"- Finding 2, seed {run['seed']}: ICR is lowest at step {t['step_min']}, memorization first "
                       f"rises clearly at step {rise}: " + ("the minimum comes first, as the paper reports" if ok
                                                             else "the minimum does NOT come first")
                       + ("; ICR's later rise lies beyond the 95% intervals." if t["rise_beyond_ci"] else
                          "; but ICR's later rise lies within the 95% intervals (64 images), so the ordering holds "
                          "in the point estimates only and is not significant."))
    steps = [r["result"]["series"][0]["trend"]["step_min"] for r in f2]
    out.append(f"- Finding 2, seed to seed: the step of ICR's minimum moves from {steps[0]} to {steps[1]} between "
               "extraction seeds 0 and 1.")
    out.append("- Not measured: the spread over training seeds (each model was trained once, seed 0).")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, help="the training runs' folders (rich/, limited/) for their loss.csv")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args()
    FIG.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rep = Reporter()
    losses = loss_plot(args.runs)
    grid = sample_grid()
    f1 = finding1(args.data / "mnist-test" / "t10k-images-idx3-ubyte.gz", rep)
    f2 = finding2(rep)
    md = write_md(f1, f2, losses, grid, time.time() - t0)
    old = DOCS / "VALIDATION.md"
    old.write_text(md)
    print(f"wrote {old} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
