"""Delete-a-group jackknife over images (Efron & Tibshirani 1993, ch. 11; Kott 2001).

Images are dealt into G groups by index (i mod G), so each group's moments accumulate while streaming and the
interval stays out-of-core; dealing by index rather than taking contiguous blocks keeps groups alike when the
file is ordered by class.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from icrcli.stats.moments import ViewMoments, empty, merge


def leave_one_out(groups: list[ViewMoments]) -> list[ViewMoments]:
    """Moments of all groups but g, for each g, with O(G) merges (prefix and suffix merges)."""
    g = len(groups)
    blank = empty(groups[0].n_views, groups[0].dim)
    prefix, suffix = [blank], [blank]
    for m in groups[:-1]:
        prefix.append(merge(prefix[-1], m))
    for m in reversed(groups[1:]):
        suffix.append(merge(m, suffix[-1]))
    suffix.reverse()
    return [merge(prefix[i], suffix[i]) for i in range(g)]


def interval(estimate: float, replicates: np.ndarray, confidence: float) -> tuple[float, tuple[float, float]]:
    """Jackknife standard error and a Student-t interval with G-1 degrees of freedom."""
    import scipy.stats  # here, not at module top: importing it costs ~0.8 s of every `icr score` start-up
    g = len(replicates)
    se = float(np.sqrt((g - 1) / g * np.sum((replicates - replicates.mean()) ** 2)))
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, g - 1)) * se
    return se, (estimate - half, estimate + half)


def jackknife(groups: list[ViewMoments], statistics: Callable[[ViewMoments], dict[str, float]],
              estimates: dict[str, float], confidence: float = 0.95) -> dict[str, dict]:
    """For each statistic named in estimates (its value on all images): {"se", "ci": [low, high], "replicates"}.
    statistics(m) gives them all on one leave-one-group-out set of moments, so what they share (the covariances)
    is worked out once per replicate. The replicates themselves are kept: with them two results on the same
    images (same groups: image i in group i mod G) can be compared pairwise (paired_difference)."""
    reps = [statistics(m) for m in leave_one_out(groups)]
    out = {}
    for name, estimate in estimates.items():
        r = np.array([x[name] for x in reps], dtype=np.float64)
        se, (lo, hi) = interval(estimate, r, confidence)
        out[name] = {"se": se, "ci": [lo, hi], "replicates": r.tolist()}
    return out


def paired_difference(estimate_a: float, replicates_a, estimate_b: float, replicates_b,
                      confidence: float = 0.95) -> dict:
    """The jackknife interval of a - b for two statistics computed on the same images with the same groups
    (two noise levels of one sweep, two checkpoints of one timeline): replicate g of the difference is the
    difference of their replicates g, so what the two share (which images were drawn) cancels. Returns
    {"difference", "se", "ci": [low, high]}."""
    ra, rb = np.asarray(replicates_a, dtype=np.float64), np.asarray(replicates_b, dtype=np.float64)
    if ra.shape != rb.shape or ra.ndim != 1 or len(ra) < 2:
        raise ValueError("paired_difference needs two replicate lists of one length G >= 2 (the same groups)")
    diff = float(estimate_a - estimate_b)
    se, (lo, hi) = interval(diff, ra - rb, confidence)
    return {"difference": diff, "se": se, "ci": [lo, hi]}
