"""`icr sweep`: ICR over noise levels (and layers, and augmentations) of one checkpoint.

A sweep is N plans over one loaded model and one loaded data set: every level is exactly `icr extract` +
`icr score` at its sigma with the same options, and every (image, view) keeps its augmentation and unit noise
across levels (common random numbers), so differences between levels are not sampling noise. The clean views
of each chunk are made once (decoded once, then augmented and VAE-encoded once per augmentation of an
augmentation x sigma grid) and noised at every level that still needs it.
Each level's features are a cache entry of their own, so a killed sweep resumes where it stopped; the finished
sweep is a record in the cache, so the same sweep again answers without loading the network.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from icrcli import __version__, cache, dist, fields
from icrcli.errors import Terminated, UserError
from icrcli.features.options import ViewOptions
from icrcli.progress import SILENT, Reporter
from icrcli.scans import engine, records
from icrcli.scans.result import SweepResult, SweepShard
from icrcli.scans.options import ProbeOptions  # noqa: F401  (re-exported)
from icrcli.scans.split import Split, check_no_probe, extract_shards, merged_score, shard_summary
from icrcli.stats.options import ScoreOptions

KIND = "sweeps"
AUTO = "auto"


def request_fields(vopts: ViewOptions) -> dict:
    """The view options that shape the features (everything but how the work runs: fields not keyed)."""
    return vopts.keyed()


def _probe_key(probe: ProbeOptions | None) -> dict | None:
    """The probe's part of a record key: the test data by content, not by name."""
    if probe is None:
        return None
    d = dataclasses.asdict(probe)
    if probe.test_data is not None:
        d["test_data"] = records.data_identity(Path(probe.test_data))
    return d


def augments_of(vopts: ViewOptions) -> list[str]:
    """The augmentations a sweep scans: --augment once (a str) or several times (a list), canonical, each once."""
    from icrcli.data.augment import canonical_policy
    out = [canonical_policy(a) for a in vopts.augments]
    if not out:
        raise UserError("--augment gave no augmentation.")
    dup = [a for i, a in enumerate(out) if a in out[:i]]
    if dup:
        raise UserError(f"--augment {dup[0]} is given twice; name each augmentation once.")
    return out


@dataclasses.dataclass(frozen=True)
class ReferenceProbe(ProbeOptions):
    """A probe on a given reference split: it trains on the images `train` and tests on the images `test`, both
    from one extraction. Both sorted: which images, not their order, decide the probe (the sweep's key holds them,
    so two listings that split differently are two requests); a plain ProbeOptions keeps the key it had."""
    train: tuple[int, ...] = ()
    test: tuple[int, ...] = ()


def reference_probe(base: ProbeOptions, indices: tuple[int, ...] | None, train: tuple[int, ...] | None = None,
                    test: tuple[int, ...] | None = None, first: int | None = None,
                    ) -> tuple[ReferenceProbe, tuple[int, ...] | None]:
    """--probe-first N (the first N images as --indices lists them train the probe, the rest test it) or
    --probe-train/--probe-test FILE: (the probe, the images to extract). Without --indices, the extraction is the
    union of the two lists."""
    if base.test_data is not None:
        raise UserError("a reference split (--probe-first, --probe-train/--probe-test) tests on images of --data; "
                        "--probe-test-data tests on another data set. Use one or the other.")
    if first is not None:
        if train is not None or test is not None:
            raise UserError("--probe-first takes its split from the order of --indices; --probe-train and "
                            "--probe-test give one by files. Use one or the other.")
        if indices is None:
            raise UserError("--probe-first N splits the images as --indices FILE lists them: the first N train the "
                            "probe, the rest test it. Pass --indices, or give the split as --probe-train FILE "
                            "--probe-test FILE.")
        if not 2 <= first <= len(indices) - 2:
            raise UserError(f"--probe-first {first}: --indices lists {len(indices)} images, and the probe needs at "
                            f"least 2 to train on and 2 to test on (2..{len(indices) - 2}).")
        train, test = indices[:first], indices[first:]
    for name, ids in (("--probe-train", train), ("--probe-test", test)):
        if ids is not None and len(set(ids)) != len(ids):
            raise UserError(f"{name} lists an image more than once; list each image once.")
    if train is None and test is None:
        raise UserError("a reference split needs --probe-first N, or --probe-train FILE and/or --probe-test FILE.")
    if indices is None and (train is None or test is None):
        raise UserError("Without --indices, the probe's split needs both --probe-train FILE and --probe-test FILE "
                        "(the images extracted are then those two lists). Pass both, or --indices FILE with one.")
    both = set(train or ()) & set(test or ())
    if both:
        raise UserError(f"--probe-train and --probe-test both list image {min(both)}: a probe is not tested on "
                        "images it was trained on. Make the lists disjoint.")
    if indices is None:
        indices = tuple(sorted(set(train) | set(test)))
    else:
        outside = sorted((set(train or ()) | set(test or ())) - set(indices))
        if outside:
            raise UserError(f"the probe's split lists image {outside[0]}, which --indices does not: the probe can "
                            "only use images that are extracted. Add it to --indices, or take it out of the split.")
    train = set(train) if train is not None else set(indices) - set(test)
    test = set(test) if test is not None else set(indices) - train
    if len(train) < 2 or len(test) < 2:
        raise UserError(f"the probe's split leaves {len(train)} image(s) to train on and {len(test)} to test on; it "
                        "needs at least 2 of each.")
    return ReferenceProbe(**dataclasses.asdict(base), train=tuple(sorted(train)), test=tuple(sorted(test))), indices


def sweep_parts(checkpoint: Path, data: Path, sigmas: list[float], mopts, vopts: ViewOptions, sopts: ScoreOptions,
                probe: ProbeOptions | None = None, split: Split = Split()) -> dict:
    """What a finished sweep's cache record is keyed by (scans.records.record_key)."""
    return {**records.checkpoint_identity(checkpoint, mopts), "data_sha256": records.data_identity(data),
            "sigmas": list(sigmas), "views": request_fields(vopts), "score": fields.keyed(sopts),
            "probe": _probe_key(probe), **split.key()}


def sweep_key(checkpoint: Path, data: Path, sigmas: list[float], mopts, vopts: ViewOptions, sopts: ScoreOptions,
              probe: ProbeOptions | None = None, split: Split = Split()) -> str:
    return records.record_key(KIND, sweep_parts(checkpoint, data, sigmas, mopts, vopts, sopts, probe, split))


def run_sweep(checkpoint: str | Path, data: str | Path, sigmas: list[float], mopts, vopts: ViewOptions,
              sopts: ScoreOptions | None = None, reporter: Reporter = SILENT,
              on_level: Callable[[dict], None] | None = None, use_cache: bool = True,
              probe: ProbeOptions | None = None, split: Split = Split()) -> SweepResult:
    """The sweep result (scans.result.SweepResult; .to_dict() is the JSON): one record per (augmentation, sigma,
    layer) with the score's keys, the argmin, the levels tied with it (scans.ties) and the augmentation grid; with
    `probe`, each record's probe accuracy and the argmax of accuracy beside the argmin of ICR, with paired tests.
    vopts.augment is one policy or several. Ctrl-C or SIGTERM ends it with the levels scored so far (`stopped`
    says which; nothing is cached, the extraction resumes).

    split (icrcli.scans.split): the levels' images in shards, computed by torchrun's ranks or --shards N here
    and merged exactly (the jackknife's groups too: image i is in group i mod G whatever its shard, so a split
    sweep has its ties as a whole one does); with --shard I/N only shard I is extracted and the answer is what was
    extracted (kind "sweep-shard"), to be merged by the same sweep with --shards N. A split sweep that is
    interrupted stops (its extractions resume), without a partial result."""
    checkpoint, data = Path(checkpoint), Path(data)
    sopts = sopts or ScoreOptions()
    if not sigmas:
        raise UserError("--sigmas gave no levels.")
    check_no_probe(split, probe)
    entry = engine.Entry(KIND, sweep_parts(checkpoint, data, sigmas, mopts, vopts, sopts, probe, split), use_cache)
    rec = entry.load(reporter.warn, "levels") if split.shard.count == 1 and dist.rank() == 0 else None
    if split.ranks > 1:     # rank 0's cache decides for every rank (the others' may be on other disks)
        rec = dist.broadcast(rec, "sharing the cached sweep")
    if rec is not None:
        reporter.step(f"cached: the same sweep was done before, answered from the cache entry {entry.path} "
                      f"({len(rec['levels'])} levels; --no-cache recomputes)")
        for lv in rec["levels"] if dist.rank() == 0 else []:
            on_level and on_level(lv)
        return SweepResult(rec)
    augments = augments_of(vopts)  # after the look-up: canonical spellings need the augmentation module (torch)
    done: list[dict] = []

    def collect(rec: dict) -> None:
        done.append(rec)
        on_level and on_level(rec)

    stopped = None
    try:
        levels, layers = _compute(checkpoint, data, sigmas, mopts, vopts, sopts, reporter, collect, probe, augments,
                                  split)
    except KeyboardInterrupt as e:   # Ctrl-C or SIGTERM: the levels scored so far; the extraction resumes
        if not split.whole:          # the other ranks or shards could not finish theirs: no partial result
            raise
        stopped = "terminated" if isinstance(e, Terminated) else "interrupted"
        levels, layers = done, list(dict.fromkeys(r["layer"] for r in done))
        reporter.interrupted(f"the sweep stopped with {len(done)} of its levels scored; run the same command "
                             "again to continue (finished extractions are kept)")
    if split.shard.count > 1:
        return SweepShard({"schema": records.SCHEMA, "kind": "sweep-shard", "version": __version__,
                           "shard": str(split.shard), "checkpoint": str(checkpoint), "data": str(data),
                           "sigmas": list(sigmas), "levels": levels})
    from icrcli.scans.ties import annotate
    ties = annotate(levels, engine.SIGMA)
    result = {
        "schema": records.SCHEMA, "kind": "sweep", "version": __version__,
        "checkpoint": str(checkpoint), "data": str(data), "sigmas": list(sigmas),
        "layers": list(layers), "augments": augments, "levels": levels,
        "argmin": _best(levels),
        "best_by_layer": {L: _best([r for r in levels if r["layer"] == L]) for L in layers},
        "ties": ties, "augment_grid": augment_grid(levels),
        "options": {"views": request_fields(vopts), "score": dataclasses.asdict(sopts),
                    "model": dataclasses.asdict(mopts), "probe": dataclasses.asdict(probe) if probe else None},
        "stopped": stopped,
    }
    if probe:
        result["probe"] = probe_agreement(levels, ties)
    if split.ranks > 1:
        result["ranks"] = split.ranks
    elif split.shards > 1:
        result["shards"] = split.shards
    if stopped is None and dist.rank() == 0:
        entry.save(result)
    return SweepResult(entry.fresh(result, kept=stopped is None))


def raise_if_stopped(result: dict) -> dict:
    """For a caller that goes on after a scan (the demo, --sigma auto): an interrupted scan interrupts it too."""
    if result.get("stopped") == "terminated":
        raise Terminated()
    if result.get("stopped") == "interrupted":
        raise KeyboardInterrupt()
    return result


def cells(levels: list[dict]):
    """(augmentation, layer, its records in sigma order) for each cell of a sweep's grid that has records, in
    first-seen order: the series of the sigma axis (engine.SIGMA)."""
    for (aug, layer), recs in engine.SIGMA.groups(levels).items():
        yield aug, layer, recs


def augment_grid(levels: list[dict]) -> list[dict]:
    """Per (augmentation, layer): ICR's argmin over sigma, and the residual the augmentation leaves at the lowest
    sigma, tr Sigma_xi / tr Sigma_s (what moves the minimum: the more residual the views carry without noise,
    the less noise it takes to reach the minimum)."""
    out = []
    for aug, layer, recs in cells(levels):
        low = min(recs, key=lambda r: (r["icr"], r["sigma"]))
        first = min(recs, key=lambda r: r["sigma"])
        ratio = first["trace_xi"] / first["trace_s"] if first["trace_s"] > 0 else None
        out.append({"augment": aug, "layer": layer, "argmin_sigma": low["sigma"], "icr_min": low["icr"],
                    "lowest_sigma": first["sigma"], "residual_ratio": ratio})
    return out


def probe_agreement(levels: list[dict], ties: list[dict] | None = None) -> list[dict]:
    """Where probe accuracy peaks beside where ICR bottoms out (paper Sec. 4: they should coincide), per
    augmentation and layer. 'agree': the same level; 'within_se': the accuracy at ICR's argmin is within two
    standard errors of the best; 'mcnemar_p': the exact paired test of those two levels' per-image correctness;
    'accuracy_tied_sigmas': the levels whose accuracy does not differ from the best (McNemar p >= 0.05);
    'best_in_icr_ties': the probe's best level is among the levels tied with ICR's minimum."""
    from icrcli.stats.crossval import mcnemar, unpack
    out = []
    for aug, layer, recs in cells(levels):
        lo = min(recs, key=lambda r: (r["icr"], r["sigma"]))
        hi = max(recs, key=lambda r: (r["probe_test_accuracy"], -r["sigma"]))
        gap = hi["probe_test_accuracy"] - lo["probe_test_accuracy"]
        se = max(hi["probe_test_accuracy_se"], lo["probe_test_accuracy_se"])
        best = unpack(hi["probe_correct"])
        tied_acc = [r["sigma"] for r in recs if mcnemar(unpack(r["probe_correct"]), best)["p_value"] >= 0.05]
        icr_ties = next((t["tied_sigmas"] for t in ties or [] if t.get("augment") == aug
                         and t["layer"] == layer), None)
        out.append({"augment": aug, "layer": layer, "argmin_icr_sigma": lo["sigma"],
                    "argmax_accuracy_sigma": hi["sigma"], "accuracy_at_argmin_icr": lo["probe_test_accuracy"],
                    "best_accuracy": hi["probe_test_accuracy"], "agree": lo["sigma"] == hi["sigma"],
                    "within_se": gap <= 2 * se,
                    "mcnemar_p": mcnemar(unpack(lo["probe_correct"]), best)["p_value"],
                    "accuracy_tied_sigmas": tied_acc,
                    "best_in_icr_ties": None if icr_ties is None else hi["sigma"] in icr_ties,
                    "protocol": hi.get("probe_protocol")})
    return out


def _best(levels: list[dict]) -> dict | None:
    """The sweep's minimum in its JSON order (layer, sigma, icr, augment; engine.best's keys)."""
    b = engine.best(engine.SIGMA, levels)
    return b and {k: b[k] for k in ("layer", "sigma", "icr", "augment")}


def level_plans(model, dset, sigmas: list[float], vopts: ViewOptions, reporter: Reporter) -> list:
    """One plan per level over one loaded model and data set (layers resolved, `auto` expanded)."""
    from icrcli.features.plan import make_plan, request_from
    layers = list(vopts.layer or [])
    if AUTO in layers:
        if layers != [AUTO]:
            raise UserError("--layer auto stands alone: give either auto or the layers to compare.")
        from icrcli.models.registry import layer_candidates
        layers = layer_candidates(model.denoiser)
        reporter.step(f"--layer auto: {', '.join(layers)}")
    return [make_plan(model, dset, request_from(vopts, s, layers), reporter) for s in sigmas]


def extract_and_score(plans: list, vopts: ViewOptions, sopts: ScoreOptions, reporter: Reporter,
                      on_record: Callable[[dict], None] | None, extra: dict | Callable | None = None,
                      probe: ProbeOptions | None = None, probe_memo: dict | None = None,
                      split: Split = Split()) -> list[dict]:
    """Extract the plans' features (one pass over the data for the plans not yet in the cache: they may differ
    in sigma, layers and augmentation, features.extract.extract_levels) and score every (plan, layer), with the
    jackknife on (scans.ties), probing it too with `probe`: the records, in plan order. `extra`: the keys each
    record starts with (a dict, or a function of the plan). Under the paper's probe protocol the probe reads
    features of its own, extracted without augmentation in the same pass (and the test data's, with
    --probe-test-data); `probe_memo` keeps probe results across calls that share them.
    split: the levels in shards (icrcli.scans.split), merged; with --shard I/N the summaries of shard I's
    extraction, unscored."""
    from icrcli.features.extract import extract_levels
    from icrcli.scans.ties import with_jackknife
    from icrcli.stats.score import score_file
    if not split.whole:
        return _split_levels(plans, vopts, sopts, reporter, on_record, extra, split)
    outs = [cache.cached_path(p.key) for p in plans]
    train = _probe_plans(plans, probe)
    more = list({p.key: p for p in train if p.key not in {q.key for q in plans}}.values())
    if more:
        reporter.step("the paper's probe: the same levels without augmentation, in the same pass")
    extract_levels([*plans, *more], [*outs, *(cache.cached_path(p.key) for p in more)], vopts.run,
                   reporter)
    probe_files = _probe_files(plans, train, vopts, probe, reporter) if probe is not None else None
    memo = {} if probe_memo is None else probe_memo
    out = []
    # scoring (and probing) every level is minutes on real models: progress by level, like the extraction's
    reporter.start("scoring and probing" if probe else "scoring", sum(len(p.layers) for p in plans), unit="levels")
    try:
        for i, (p, path) in enumerate(zip(plans, outs)):
            for layer in p.layers:
                res = _score(path, layer, sopts, with_jackknife(sopts, len(p.indices)), score_file)
                rec = {**_extra(extra, p), "sigma": p.sigma, "layer": layer, "icr": res["icr"], **res,
                       "features": str(path)}
                if probe is not None:
                    train_file, test = probe_files[i]
                    mk = (str(train_file), str(test), layer)
                    if mk not in memo:
                        memo[mk] = _probe(train_file, layer, probe, test)
                    rec.update(memo[mk])
                out.append(rec)
                reporter.advance(1)
                on_record and on_record(rec)
    finally:
        reporter.finish()
    return out


def _extra(extra: dict | Callable | None, plan) -> dict:
    return extra(plan) if callable(extra) else dict(extra or {})


def _split_levels(plans: list, vopts: ViewOptions, sopts: ScoreOptions, reporter: Reporter,
                  on_record: Callable[[dict], None] | None, extra, split: Split) -> list[dict]:
    from icrcli.scans.ties import with_jackknife
    mine = extract_shards(plans, split, vopts.run, reporter)
    if split.shard.count > 1:   # shard_summary lists every shard's levels in plan order
        return [{**_extra(extra, p), **r} for p, r in zip([p for _ in mine for p in plans], shard_summary(mine))]
    out = []
    # merging the shards' moments and scoring each level is minutes at large D: a bar by level (on rank 0 only:
    # the others' console is quiet), like the unsplit sweep's scoring
    reporter.start("merging and scoring", sum(len(p.layers) for p in plans), unit="levels")
    try:
        for j, p in enumerate(plans):
            for layer in p.layers:
                # the jackknife's groups are by global image index, so the shards' merged moments carry them
                res = merged_score(p, layer, {i: pairs[j] for i, pairs in mine.items()}, split,
                                   with_jackknife(sopts, len(p.indices)))
                rec = {**_extra(extra, p), "sigma": p.sigma, "layer": layer, "icr": res["icr"], **res,
                       "features": res["input"]["paths"][0]}
                out.append(rec)
                reporter.advance(1)
                on_record and dist.rank() == 0 and on_record(rec)
    finally:
        reporter.finish()
    return out


def _score(path: Path, layer: str, sopts: ScoreOptions, jk: ScoreOptions, score_file) -> dict:
    """Score with the jackknife; without it when its per-group statistics would not fit in memory (the
    score's own check says so), so a sweep that ran before still runs (without ties)."""
    if jk is not sopts:
        try:
            return score_file(path, layer=layer, opts=jk)[0]
        except UserError as e:
            if "--ci" not in str(e):
                raise
    return score_file(path, layer=layer, opts=sopts)[0]


def _probe_plans(plans: list, probe: ProbeOptions | None) -> list:
    """The plans whose features the probe trains on: the plans' own (view-mean, or no probe); the paper's protocol,
    the same requests without augmentation (a plan's own when it has none)."""
    if probe is None or probe.protocol != "paper":
        return plans
    from icrcli.features.plan import make_plan
    return [p if p.request.augment == "none" else make_plan(p.model, p.data, dataclasses.replace(
        p.request, augment="none")) for p in plans]


def _probe_files(plans: list, train: list, vopts: ViewOptions, probe: ProbeOptions, reporter: Reporter) -> list[tuple]:
    """Per plan, (training features, test features or None) for the probe: `train`'s files (extracted with the
    plans, _probe_plans). With --probe-test-data, the same request on the test data (all of its images unless
    --images is smaller; never --indices, which name training images)."""
    from icrcli.features.extract import extract_levels
    from icrcli.features.plan import load_data, make_plan
    train_outs = [cache.cached_path(p.key) for p in train]
    if probe.test_data is None:
        return [(o, None) for o in train_outs]
    first = plans[0]
    tdata = load_data(probe.test_data, first.model, reporter, vopts.skip_bad_images)
    if tdata.labels is None:
        raise UserError(f"--probe-test-data {probe.test_data} has no labels: give the labelled held-out images "
                        "(class sub-folders, an .npz with labels, CIFAR or MNIST files).")
    tests = [make_plan(p.model, tdata, dataclasses.replace(p.request, indices=None)) for p in train]
    unique = list({p.key: p for p in tests}.values())
    reporter.step(f"the probe's held-out images: {probe.test_data}")
    extract_levels(unique, [cache.cached_path(p.key) for p in unique], vopts.run, reporter)
    return list(zip(train_outs, (cache.cached_path(p.key) for p in tests)))


def _probe(path: Path, layer: str, probe: ProbeOptions, test: Path | None = None) -> dict:
    from icrcli.scans.probe import probe_file, probe_images
    if isinstance(probe, ReferenceProbe):  # a reference split of the same images (issue 20), either protocol
        r = probe_images(path, probe.train, probe.test, l2=probe.l2, knn=probe.knn, layer=layer,
                         protocol=probe.protocol)
    else:
        r = probe_file(path, test=test, split=probe.split, seed=probe.seed, l2=probe.l2, knn=probe.knn,
                       layer=layer, protocol=probe.protocol, folds=probe.folds)
    out = {"probe_test_accuracy": r["test_accuracy"], "probe_test_accuracy_se": r["test_accuracy_se"],
           "probe_train_accuracy": r["train_accuracy"], "probe_chance": r["chance"],
           "probe_protocol": {**r["protocol"], "features_file": str(path)}, "probe_correct": r["correct"],
           "probe_iterations": r["optimizer"]["iterations"], "probe_converged": r["optimizer"]["converged"]}
    if "knn" in r:
        out["knn_test_accuracy"] = r["knn"]["test_accuracy"]
    return out


def check_labels(dset, probe: ProbeOptions | None) -> None:
    """--probe needs labelled data: say so before any extraction, not after."""
    if probe is not None and dset.labels is None:
        raise UserError(f"--probe needs labelled data, and {dset.path} has no labels: use class sub-folders, an "
                        ".npz with labels, CIFAR or MNIST files (see README 'Data'), or drop --probe.")


def _compute(checkpoint: Path, data: Path, sigmas: list[float], mopts, vopts: ViewOptions, sopts: ScoreOptions,
             reporter: Reporter, on_level, probe: ProbeOptions | None = None,
             augments: list[str] | None = None, split: Split = Split()) -> tuple[list[dict], tuple[str, ...]]:
    """The records of every (augmentation, level, layer) over one loaded model and data set, and the layers.
    Every augmentation's levels are extracted in one pass over the data (each chunk decoded once)."""
    from icrcli.features.plan import load_data, load_model
    model = load_model(checkpoint, mopts, vopts.run.device, reporter)
    dset = load_data(data, model, reporter, vopts.skip_bad_images)
    check_labels(dset, probe)
    augments = augments or augments_of(vopts)
    if len(augments) > 1:
        reporter.step(f"augmentations {', '.join(augments)}: every level of each, in one pass over the data")
    plans = [p for aug in augments
             for p in level_plans(model, dset, sigmas, dataclasses.replace(vopts, augment=aug), reporter)]
    levels = extract_and_score(plans, vopts, sopts, reporter, on_level, lambda p: {"augment": p.request.augment},
                               probe=probe, split=split)
    return levels, plans[0].layers
