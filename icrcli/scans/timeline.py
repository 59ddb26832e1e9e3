"""`icr timeline`: ICR over the checkpoints of a training run, in step order.

A timeline is N loaded models over one loaded data set. Each point is exactly `icr extract` + `icr score` of its
checkpoint, and is a record in the cache keyed by the checkpoint's content, so a rerun after new checkpoints
appear computes only those; `watch` keeps polling the folder while a run trains.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from icrcli import __version__
from icrcli.errors import UserError
from icrcli.features.report import SILENT, Reporter
from icrcli.scans import records
from icrcli.scans.sigmas import parse_sigmas
from icrcli.scans.steps import find_checkpoints
from icrcli.scans.sweep import ProbeOptions, check_labels, extract_and_score, level_plans, request_fields, run_sweep
from icrcli.scans.trend import gate, trend
from icrcli.stats.options import ScoreOptions

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
    memorization_steps: int = 18


def point_key(checkpoint: Path, data_sha: str, sigma: float, mopts, vopts: dict, sopts: ScoreOptions,
              checks: Checks) -> str:
    return records.record_key(KIND, {**records.checkpoint_identity(checkpoint, mopts), "data_sha256": data_sha,
                                     "sigma": sigma, "views": request_fields(vopts),
                                     "score": dataclasses.asdict(sopts), "checks": dataclasses.asdict(checks)})


class _Loaded:
    """The data set, loaded once, for the first checkpoint that needs computing."""
    def __init__(self, data: Path, reporter: Reporter, skip_bad_images: bool = False):
        self.path, self.reporter, self.dset, self.skip = data, reporter, None, skip_bad_images

    def for_model(self, model):
        from icrcli.features.plan import load_data
        if self.dset is None or self.dset.latent != model.reads_latents:
            self.dset = load_data(self.path, model, self.reporter, self.skip)
        return self.dset


def _memorization(found, data: Path, mopts, vopts: dict, checks: Checks, reporter: Reporter) -> dict:
    from icrcli.scans.memorization import memorization
    reporter.step(f"memorization: {checks.memorization} samples of {found.path.name}")
    r = memorization(found.path, data, mopts, samples=checks.memorization, steps=checks.memorization_steps,
                     seed=vopts["seed"], device=vopts["device"])
    return {"memorization_ratio": r["ratio"], "memorization_ratio_se": r["ratio_se"]}


def _points_of(found, data_sha: str, sigmas: list[float], mopts, vopts: dict, sopts: ScoreOptions,
               loaded: _Loaded, reporter: Reporter, on_point, checks: Checks) -> list[dict]:
    """The records of one checkpoint at every sigma: from the cache where they are, else computed together."""
    keys = {s: point_key(found.path, data_sha, s, mopts, vopts, sopts, checks) for s in sigmas}
    cached = {s: records.load(KIND, k, reporter.warn) for s, k in keys.items()}
    todo = [s for s in sigmas if cached[s] is None]
    fresh: dict[float, list[dict]] = {}
    if todo:
        from icrcli.features.plan import load_model
        model = load_model(found.path, mopts, vopts["device"], reporter)
        dset = loaded.for_model(model)
        check_labels(dset, checks.probe)
        plans = level_plans(model, dset, todo, vopts, reporter)
        extra = {"step": found.step, "checkpoint": str(found.path)}
        if checks.memorization:
            extra.update(_memorization(found, loaded.path, mopts, vopts, checks, reporter))
        for rec in extract_and_score(plans, vopts, sopts, reporter, None, extra, probe=checks.probe):
            fresh.setdefault(rec["sigma"], []).append(rec)
        for s in todo:
            records.save(KIND, keys[s], {"schema": records.SCHEMA, "points": fresh[s]})
    out = []
    for s in sigmas:
        pts = fresh[s] if s in fresh else cached[s]["points"]
        for p in pts:
            p = {**p, "step": found.step, "checkpoint": str(found.path)}
            out.append(p)
            on_point and on_point(p)
    return out


def _series(points: list[dict], fail_on_rise: float | None, fail_above: float | None) -> tuple[list[dict], list]:
    """Each sigma's trend, and the CI gates that failed over all of them."""
    out, failed = [], []
    for sigma in sorted({p["sigma"] for p in points}):
        pts = sorted((p for p in points if p["sigma"] == sigma), key=lambda p: p["step"])
        ci = [p.get("icr_ci") for p in pts]
        t = trend([p["step"] for p in pts], [p["icr"] for p in pts], ci if all(ci) else None)
        out.append({"sigma": sigma, "layer": pts[0].get("layer"), "trend": t.as_dict(), "rises": _rises(pts)})
        failed += gate(t, fail_on_rise, fail_above)
    return out, failed


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


def run_timeline(folder: str | Path, data: str | Path, sigmas: list[float] | str, mopts, vopts: dict,
                 sopts: ScoreOptions | None = None, pattern: str | None = None, watch: bool = False,
                 poll: float = 30.0, until: int | None = None, reporter: Reporter = SILENT,
                 on_point: Callable[[dict], None] | None = None, checks: Checks | None = None,
                 fail_on_rise: float | None = None, fail_above: float | None = None) -> dict:
    """The timeline result: one record per (checkpoint, sigma) in step order, each series' trend, and the CI
    gates (`gates.failed` lists the conditions that failed: `icr timeline` exits 3 on any)."""
    checks = checks or Checks()
    folder, data = Path(folder), Path(data)
    sopts = sopts or ScoreOptions()
    layers = list(vopts.get("layer") or [])
    if len(layers) > 1 or layers == ["auto"]:
        raise UserError("`icr timeline` follows one layer: give one --layer (compare layers with `icr sweep`).")
    found, notes = find_checkpoints(folder, pattern)
    for n in notes:
        reporter.warn(n)
    data_sha = records.data_identity(data)
    auto = None
    if sigmas == AUTO:
        reporter.step(f"--sigma auto: a coarse sweep of {found[-1].path.name} over {len(AUTO_GRID)} levels")
        sw = run_sweep(found[-1].path, data, AUTO_GRID, mopts, vopts, sopts, reporter)
        sigmas = [sw["argmin"]["sigma"]]
        auto = {"checkpoint": str(found[-1].path), "grid": AUTO_GRID, "sigma": sigmas[0]}
        reporter.step(f"--sigma auto: following sigma {sigmas[0]:g}, where {found[-1].path.name} has its lowest ICR")
    loaded = _Loaded(data, reporter, vopts.get("skip_bad_images", False))
    points: list[dict] = []
    seen: set[Path] = set()
    while True:
        for f in found:
            if f.path not in seen:
                points += _points_of(f, data_sha, sigmas, mopts, vopts, sopts, loaded, reporter, on_point, checks)
                seen.add(f.path)
        if not watch or (until is not None and max(f.step for f in found) >= until):
            break
        try:
            reporter.waiting(f"watching {folder} for new checkpoints (every {poll:g} s; Ctrl-C to stop)")
            time.sleep(poll)
        except KeyboardInterrupt:
            break
        found, _ = find_checkpoints(folder, pattern)
    points.sort(key=lambda p: (p["sigma"], p["step"]))
    series, failed = _series(points, fail_on_rise, fail_above)
    return {"schema": records.SCHEMA, "kind": "timeline", "version": __version__, "folder": str(folder),
            "data": str(data), "sigmas": list(sigmas), "sigma_auto": auto, "points": points,
            "series": series, "notes": notes,
            "options": {"views": request_fields(vopts), "score": dataclasses.asdict(sopts),
                        "model": dataclasses.asdict(mopts), "checks": dataclasses.asdict(checks)},
            "gates": {"fail_on_rise": fail_on_rise, "fail_above": fail_above, "failed": failed}}
