"""`icr timeline`: ICR over the checkpoints of a training run, in step order.

A timeline is N loaded models over one loaded data set. Each point is exactly `icr extract` + `icr score` of its
checkpoint, and is a record in the cache keyed by the checkpoint's content, so a rerun after new checkpoints
appear computes only those; `watch` keeps polling the folder while a run trains.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Callable

from icrcli import __version__, dist, fields
from icrcli.errors import Terminated, UserError
from icrcli.features.options import ViewOptions
from icrcli.progress import SILENT, Reporter
from icrcli.scans import engine, records
from icrcli.scans.result import TimelineResult, TimelineShard
from icrcli.scans.sigmas import parse_sigmas
from icrcli.scans.steps import find_checkpoints
from icrcli.scans.split import Split, checkpoint_progress, gather_points
from icrcli.scans.sweep import (ProbeOptions, check_labels, extract_and_score, level_plans, raise_if_stopped,
                                request_fields, run_sweep)
from icrcli.scans.trend import gate, held, trend
from icrcli.scans.options import MemorizationOptions
from icrcli.scans.watch import Unreadable, Watcher
from icrcli.stats.options import ScoreOptions

_stops = itertools.count()     # every rank makes its flags in the same order, so one flag has one name

KIND = "timeline-points"
AUTO = "auto"
# --sigma auto: every other level of the paper's grid, a coarse sweep of six levels on the last checkpoint.
AUTO_GRID = parse_sigmas(None)[::2]


def parse_timeline_sigmas(values: list[str]) -> list[float] | str:
    """--sigma values: numbers (one series each) or the single word auto."""
    if any(v.strip().lower() == AUTO for v in values):
        if len(values) > 1:
            raise UserError("--sigma auto stands alone: give either auto or the levels to follow.")
        return AUTO
    out = []
    for v in values:
        out += parse_sigmas(v)
    return sorted(set(out))


@dataclasses.dataclass(frozen=True)
class Checks:
    """What else each point measures: a probe on its features, the memorization ratio of its samples."""
    probe: ProbeOptions | None = None
    memorization: int | None = None     # samples per checkpoint (None: not measured)
    memorization_steps: int = MemorizationOptions().steps    # `icr memorization`'s default, declared there


def point_parts(checkpoint: Path, data_sha: str, sigma: float, mopts, vopts: ViewOptions, sopts: ScoreOptions,
                checks: Checks) -> dict:
    """What one timeline point's cache record is keyed by (scans.records.record_key)."""
    return {**records.checkpoint_identity(checkpoint, mopts), "data_sha256": data_sha, "sigma": sigma,
            "views": request_fields(vopts), "score": fields.keyed(sopts), "checks": dataclasses.asdict(checks)}


def point_key(checkpoint: Path, data_sha: str, sigma: float, mopts, vopts: ViewOptions, sopts: ScoreOptions,
              checks: Checks) -> str:
    return records.record_key(KIND, point_parts(checkpoint, data_sha, sigma, mopts, vopts, sopts, checks))


class _Loaded:
    """The data set, loaded once, for the first checkpoint that needs computing."""
    def __init__(self, data: Path, reporter: Reporter, skip_bad_images: bool = False):
        self.path, self.reporter, self.dset, self.skip = data, reporter, None, skip_bad_images

    def for_model(self, model):
        from icrcli.features.plan import load_data
        if self.dset is None or self.dset.latent != model.reads_latents:
            self.dset = load_data(self.path, model, self.reporter, self.skip)
        return self.dset


def _memorization(found, data: Path, mopts, vopts: ViewOptions, checks: Checks, reporter: Reporter) -> dict:
    from icrcli.scans.memorization import memorization
    reporter.step(f"memorization: {checks.memorization} samples of {found.path.name}")

    def phase(name: str, total: int):   # sampling, then the nearest-neighbour search: each with its progress
        reporter.start(name, total, unit="samples" if name == "sampling" else "images")
        return reporter.advance

    try:
        r = memorization(found.path, data, mopts, samples=checks.memorization, steps=checks.memorization_steps,
                         seed=vopts.seed, device=vopts.run.device, on_phase=phase, warn=reporter.warn)
    finally:
        reporter.finish()
    return {"memorization_ratio": r["ratio"], "memorization_ratio_se": r["ratio_se"]}


def _points_of(found, data_sha: str, sigmas: list[float], mopts, vopts: ViewOptions, sopts: ScoreOptions,
               loaded: _Loaded, reporter: Reporter, checks: Checks) -> list[dict]:
    """The records of one checkpoint at every sigma: from the cache where they are, else computed together."""
    with Unreadable.when_reading(found.path):
        parts = {s: point_parts(found.path, data_sha, s, mopts, vopts, sopts, checks) for s in sigmas}

    def compute(todo: list[float]) -> dict[float, list[dict]]:
        from icrcli.features.plan import load_model
        with Unreadable.when_reading(found.path):
            model = load_model(found.path, mopts, vopts.run.device, reporter)
        dset = loaded.for_model(model)
        check_labels(dset, checks.probe)
        plans = level_plans(model, dset, todo, vopts, reporter)
        extra = {"step": found.step, "checkpoint": str(found.path)}
        if checks.memorization:
            extra.update(_memorization(found, loaded.path, mopts, vopts, checks, reporter))
        fresh: dict[float, list[dict]] = {s: [] for s in todo}
        for rec in extract_and_score(plans, vopts, sopts, reporter, None, extra, probe=checks.probe):
            fresh[rec["sigma"]].append(rec)
        return fresh

    found_points = engine.cached_points(KIND, parts, compute, reporter.warn)
    return [{**p, "step": found.step, "checkpoint": str(found.path)} for s in sigmas for p in found_points[s]]


@dataclasses.dataclass(frozen=True)
class Gates:
    """The CI conditions (exit 3 when one fails). With intervals a condition counts only beyond them
    (icrcli.scans.trend.gate); `point_estimates` gates on the point values alone. `fail_fast` stops the timeline
    at the first point where a condition fails."""
    fail_on_rise: float | None = None
    fail_above: float | None = None
    point_estimates: bool = False
    fail_fast: bool = False
    # the points' intervals count (trend and gates) only when --ci asked for them: every point has a jackknife
    # anyway (its paired rises, scans.ties), but without --ci the gates stay on the point values as before
    intervals: bool = True

    def check(self, t) -> list[str]:
        return gate(t, self.fail_on_rise, self.fail_above, self.point_estimates)


@dataclasses.dataclass(frozen=True)
class Watch:
    """--watch: look at the folder every `poll` seconds; stop once a checkpoint at step `until` or later is
    read, or after `idle` seconds without a new file or point; give up a file that keeps failing to load after
    `retry_for` seconds (icrcli.scans.watch)."""
    poll: float = 30.0
    until: int | None = None
    idle: float | None = None
    retry_for: float = 600.0


def _series(points: list[dict], gates: Gates) -> tuple[list[dict], list, list]:
    """Each sigma's trend, the CI gates that failed over all of them, and those the intervals held back."""
    out, failed, held_back = [], [], []
    for sigma in sorted({p["sigma"] for p in points}):
        pts = sorted((p for p in points if p["sigma"] == sigma), key=lambda p: p["step"])
        ci = [p.get("icr_ci") if gates.intervals else None for p in pts]
        t = trend([p["step"] for p in pts], [p["icr"] for p in pts], ci if all(ci) else None)
        out.append({"sigma": sigma, "layer": pts[0].get("layer"), "trend": t.as_dict(), "rises": _rises(pts)})
        failed += gates.check(t)
        held_back += held(t, gates.fail_on_rise, gates.fail_above, gates.point_estimates)
    return out, failed, held_back


def _gates_dict(gates: Gates, failed: list, held_back: list, points: list[dict]) -> dict:
    on_ci = (bool(points) and gates.intervals and all(p.get("icr_ci") for p in points)
             and not gates.point_estimates)
    return {"fail_on_rise": gates.fail_on_rise, "fail_above": gates.fail_above,
            "point_estimates": gates.point_estimates, "on": "intervals" if on_ci else "point estimates",
            "failed": failed, "held_by_intervals": held_back}


def _point_line(p: dict, t: dict, failed: list) -> str:
    """One line per new point on stderr: its ICR and where it stands in its series."""
    ci = f" [{p['icr_ci'][0]:.4f}, {p['icr_ci'][1]:.4f}]" if p.get("icr_ci") else ""
    if t["step_min"] == p["step"]:
        where = "the lowest so far"
    else:
        where = f"{100 * (p['icr'] - t['icr_min']) / t['icr_min']:+.1f}% on the minimum at step {t['step_min']}"
        if p["icr"] == t["icr_last"] and t["rise_beyond_ci"] is not None:   # the series' last point
            where += ", beyond the intervals" if t["rise_beyond_ci"] else ", within the intervals"
    gate_word = f"; gate failed: {failed[0]}" if failed else ""
    return (f"step {p['step']} ({Path(p['checkpoint']).name}), sigma {p['sigma']:g}: ICR {p['icr']:.4f}{ci}, "
            f"{where}{gate_word}")


class _Follow:
    """The points so far, and what each new one says: its record with the running trend and gates goes to
    `on_point`, a line to the reporter."""

    def __init__(self, gates: Gates, reporter: Reporter, on_point):
        self.gates, self.reporter, self.on_point = gates, reporter, on_point
        self.points: list[dict] = []
        self.failed: list[str] = []

    def add(self, new: list[dict]) -> None:
        self.points += new
        series, self.failed, held_back = _series(self.points, self.gates)
        trends = {s["sigma"]: s["trend"] for s in series}
        gates = _gates_dict(self.gates, self.failed, held_back, self.points)
        for p in new:
            self.reporter.note(_point_line(p, trends[p["sigma"]], self.failed))
            if self.on_point:
                self.on_point({**p, "trend": trends[p["sigma"]], "gates": gates})

    def stop_now(self) -> bool:
        return self.gates.fail_fast and bool(self.failed)


def _rises(pts: list[dict]) -> list[dict] | None:
    """Each point's rise from the series' minimum with its paired jackknife interval (every checkpoint is scored on
    the same images in the same groups, so the interval is of the difference itself, not two overlapping
    intervals); None when a point has no replicates (too few images)."""
    from icrcli.scans.ties import rises
    rs = rises(pts)
    if any(r is None for r in rs):
        return None
    return [{"step": p["step"], "difference": r["difference"], "se": r["se"], "ci": r["ci"],
             "beyond_interval": r["ci"][0] > 0} for p, r in zip(pts, rs)]


def run_timeline(folder: str | Path, data: str | Path, sigmas: list[float] | str, mopts, vopts: ViewOptions,
                 sopts: ScoreOptions | None = None, pattern: str | None = None, watch: Watch | None = None,
                 reporter: Reporter = SILENT, on_point: Callable[[dict], None] | None = None,
                 checks: Checks | None = None, gates: Gates | None = None,
                 split: Split = Split()) -> TimelineResult:
    """The timeline result (scans.result.TimelineResult; .to_dict() is the JSON): one record per (checkpoint,
    sigma) in step order, each series' trend, the CI gates (`gates.failed` lists the conditions that failed:
    `icr timeline` exits 3 on any) and why it stopped.

    on_point gets each point as it is added, with the running `trend` of its series and the `gates` so far.
    Ctrl-C (KeyboardInterrupt) or SIGTERM (icrcli.errors.Terminated) ends it with the points done so far and
    `stopped` saying which; the unfinished checkpoint's extraction is kept and resumes on the next run.

    split (icrcli.scans.split): torchrun's rank r computes checkpoints r, r+W, ... and the points are gathered
    (rank 0 alone streams them); with --shard I/N only checkpoints I, I+N, ... are computed (each point cached)
    and the answer is those points (kind "timeline-shard"): the same command without --shard then finds every
    point in the cache. A split timeline that is interrupted stops without a partial result."""
    checks, gates = checks or Checks(), gates or Gates()
    if not split.whole and watch is not None:
        raise UserError("--watch follows one training run in one process: run it without --shard or torchrun.")
    if split.shards > 1:
        raise UserError("--shards is for `icr sweep`: a timeline's shards are whole checkpoints, and the same "
                        "command without --shard finds every point they computed in the cache.")
    if split.shard.count > 1 and sigmas == AUTO:
        raise UserError("--sigma auto with --shard: every shard must follow the same sigma. Give the sigma (e.g. "
                        "from `icr sweep` on the last checkpoint).")
    folder, data = Path(folder), Path(data)
    sopts = sopts or ScoreOptions()
    gates = dataclasses.replace(gates, intervals=sopts.ci)
    layers = list(vopts.layer or [])
    if len(layers) > 1 or layers == ["auto"]:
        raise UserError("`icr timeline` follows one layer: give one --layer (compare layers with `icr sweep`).")
    if watch is None:
        found, notes = find_checkpoints(folder, pattern)
        for n in notes:
            reporter.warn(n)
    data_sha = records.data_identity(data)
    run = _Follow(gates, reporter if split.whole else SILENT, on_point if split.whole else None)
    loaded = _Loaded(data, reporter, vopts.skip_bad_images)
    state = {"sigmas": sigmas, "auto": None}

    def sigmas_for(last):
        if state["sigmas"] == AUTO:      # the coarse sweep is of the last checkpoint there is
            state["sigmas"], state["auto"] = _auto_sigma(last.path, data, mopts, vopts, sopts, reporter, split)

    def points_of(f, last, rep=reporter):
        sigmas_for(last)
        run.add(_points_of(f, data_sha, state["sigmas"], mopts, vopts, sopts, loaded, rep, checks))

    watcher = Watcher(folder, pattern, watch.retry_for, reporter.warn) if watch else None
    stopped = None
    # --fail-fast under torchrun: the lowest step whose gate failed on any rank; no rank reads a checkpoint past it
    stop = dist.StopFlag(f"fail-fast/{next(_stops)}")
    try:
        if watcher is None:
            sigmas_for(found[-1])   # first: under torchrun every rank (one with no checkpoint too) joins the sweep
            with checkpoint_progress(found, split, reporter) as (mine, rep, done):
                for f in mine:
                    lowest = stop.lowest() if gates.fail_fast and split.ranks > 1 else None
                    if lowest is not None and f.step > lowest:
                        break
                    points_of(f, found[-1], rep)
                    done()
                    if run.stop_now():
                        stopped = "fail-fast"
                        stop.raise_(f.step)
                        break
        else:
            stopped = _follow(watcher, watch, reporter, run, points_of)
    except KeyboardInterrupt as e:
        if not split.whole:      # the other ranks or shards could not finish theirs: no partial result
            raise
        stopped = "terminated" if isinstance(e, Terminated) else "interrupted"
        reporter.interrupted(f"the timeline stopped with {len(run.points)} points done; run the same command "
                             "again to continue (finished points and extractions are kept)")
    if watcher is not None:
        notes = watcher.notes
    sigmas = state["sigmas"] if state["sigmas"] != AUTO else []
    if split.shard.count > 1:
        return TimelineShard({"schema": records.SCHEMA, "kind": "timeline-shard", "version": __version__,
                              "shard": str(split.shard), "folder": str(folder), "data": str(data),
                              "sigmas": list(sigmas),
                              "points": sorted(run.points, key=lambda p: (p["sigma"], p["step"]))})
    if split.ranks > 1:          # every rank's points, said and streamed by rank 0 in step order
        gathered = sorted(gather_points(run.points, split), key=lambda p: (p["step"], p["sigma"]))
        if gates.fail_fast:      # the job stops where one process would have: the first step the gates fail at
            at = _first_failure(gathered, gates)
            at = stop.lowest() if at is None else at
            gathered = [p for p in gathered if at is None or p["step"] <= at]
            stopped = "fail-fast" if at is not None else None
        run = _Follow(gates, reporter, on_point if dist.rank() == 0 else None)
        run.add(gathered)
    points = sorted(run.points, key=lambda p: (p["sigma"], p["step"]))
    hits = sum(bool(p.get("cached")) for p in points)
    if hits:
        reporter.step(f"cached: {hits} of {len(points)} points answered from the cache (each point's cache_entry "
                      "names its entry; --no-cache recomputes)")
    series, failed, held_back = _series(points, gates)
    return TimelineResult({
        "schema": records.SCHEMA, "kind": "timeline", "version": __version__, "folder": str(folder),
        "data": str(data), "sigmas": list(sigmas), "sigma_auto": state["auto"], "points": points,
        "series": series, "notes": notes, "stopped": stopped,
        "stopped_at": ({k: run.points[-1][k] for k in ("step", "checkpoint")}
                       if stopped == "fail-fast" and run.points else None),
        "options": {"views": request_fields(vopts), "score": dataclasses.asdict(sopts),
                    "model": dataclasses.asdict(mopts), "checks": dataclasses.asdict(checks),
                    "watch": dataclasses.asdict(watch) if watch else None},
        "gates": _gates_dict(gates, failed, held_back, points)})


def _first_failure(points: list[dict], gates: Gates) -> int | None:
    """The first step at which the points up to it fail a gate: where one process with --fail-fast stops (under
    torchrun each rank's gate sees its own checkpoints only; this sees the job's)."""
    for step in sorted({p["step"] for p in points}):
        if _series([p for p in points if p["step"] <= step], gates)[1]:
            return step
    return None


def _auto_sigma(checkpoint: Path, data: Path, mopts, vopts, sopts, reporter: Reporter,
                split: Split = Split()) -> tuple[list, dict]:
    """--sigma auto: the argmin of a coarse sweep of `checkpoint` (split across torchrun's ranks under torchrun)."""
    reporter.step(f"--sigma auto: a coarse sweep of {checkpoint.name} over {len(AUTO_GRID)} levels")
    sw = raise_if_stopped(run_sweep(checkpoint, data, AUTO_GRID, mopts, vopts, sopts, reporter, split=split))
    sigma = sw.argmin["sigma"]
    reporter.step(f"--sigma auto: following sigma {sigma:g}, where {checkpoint.name} has its lowest ICR")
    return [sigma], {"checkpoint": str(checkpoint), "grid": AUTO_GRID, "sigma": sigma}


def _follow(w: Watcher, watch: Watch, reporter: Reporter, run: _Follow, points_of) -> str:
    """--watch: read each checkpoint once it is complete, until --until, --idle or --fail-fast says stop (or
    an interruption). Returns why it stopped."""
    first, said = True, None
    while True:
        ready = w.look()
        for f in ready:
            try:
                points_of(f, ready[-1])
            except Unreadable as e:   # half written, gone, or not a checkpoint: said, retried, given up in time
                w.failed(f, e)
                continue
            w.done(f)
            said = None
            if run.stop_now():
                return "fail-fast"
            if watch.until is not None and f.step >= watch.until:
                return "until"
        if watch.idle is not None and w.idle_for() >= watch.idle:
            reporter.note(f"nothing new in {w.folder} for {watch.idle:g} s (--idle): the watch ends")
            return "idle"
        wait = (f"waiting for the first checkpoint in {w.folder}" if not w.steps else
                f"watching {w.folder} for new checkpoints (every {watch.poll:g} s; Ctrl-C to stop)")
        if wait != said and not first:
            reporter.waiting(wait)
            said = wait
        time.sleep(min(watch.poll, 1.0) if first else watch.poll)
        first = False
