"""Where a scan's minimum is, with its uncertainty: which levels are statistically tied with it.

Every level of a sweep (every point of a timeline series) is scored on the same images, dealt into the same
jackknife groups (image i in group i mod G), so the difference between two levels has a paired jackknife
interval: replicate g of the difference is the difference of their replicates g (stats.jackknife
.paired_difference). A level is tied with the minimum when that interval for (its ICR - the minimum's) reaches
0. Scans therefore always compute the jackknife; --ci only sets its groups and coverage.
"""

from __future__ import annotations

import dataclasses

from icrcli.stats.options import ScoreOptions


def with_jackknife(sopts: ScoreOptions, n_images: int) -> ScoreOptions:
    """The options a scan scores with: the user's, with the jackknife on (ci_groups lowered to N/2 when there
    are fewer than 2 G images). Unchanged when N < 4 (fewer than two groups of two)."""
    if sopts.ci or n_images < 4:
        return sopts
    return dataclasses.replace(sopts, ci=True, ci_groups=min(sopts.ci_groups, n_images // 2))


def rises(records: list[dict]) -> list[dict | None]:
    """Per record, the paired interval of (its ICR - the lowest ICR among `records`): {"difference", "se", "ci",
    "tied": interval reaches 0}; all None unless every record has replicates from the same number of groups."""
    from icrcli.stats.jackknife import paired_difference
    reps = [r.get("icr_replicates") for r in records]
    if not records or not all(reps) or len({len(x) for x in reps}) != 1:
        return [None] * len(records)
    low = min(records, key=lambda r: (r["icr"], r.get("sigma", 0.0), r.get("step", 0)))
    conf = low.get("ci_confidence", 0.95)
    out = []
    for r in records:
        d = paired_difference(r["icr"], r["icr_replicates"], low["icr"], low["icr_replicates"], conf)
        out.append({**d, "tied": r is low or d["ci"][0] <= 0})
    return out


def annotate(levels: list[dict], axis) -> list[dict]:
    """Add `rise_from_min` and `tied_with_min` to each record (within its series: a sweep's augmentation and
    layer) and return, per series, {*axis.series, "argmin_<x>", "tied_<x>s", "confidence"} (the tied values None
    without replicates). axis: the scan's scans.engine.Axis (x = axis.name)."""
    x = axis.name
    out = []
    for key, recs in axis.groups(levels).items():
        rs = rises(recs)
        for r, d in zip(recs, rs):
            r["rise_from_min"] = None if d is None else {k: d[k] for k in ("difference", "se", "ci")}
            r["tied_with_min"] = None if d is None else d["tied"]
        low = axis.lowest(recs)
        out.append({**dict(zip(axis.series, key)), f"argmin_{x}": low[x],
                    f"tied_{x}s": None if rs[0] is None else [r[x] for r, d in zip(recs, rs) if d["tied"]],
                    "confidence": low.get("ci_confidence")})
    return out
