"""The statistics docs/VALIDATION.md adds on top of icr's own results (examples/validate.py uses them).

- A bootstrap of ICR's argmin over sigma: images resampled with replacement, the SAME resample at every level
  (every level holds the same images), ICR recomputed from per-image moments with icr's own eigensolve.
- A bootstrap of the probe's argmax: held-out test images resampled, accuracy per level from the per-image
  correctness that icr records.
- Null rates: for each rule that compares ICR's pick of sigma with the probe's best, the rate at which a sigma
  drawn uniformly from the grid would pass it. A rule that a random pick passes 90% of the time says little.
- The data-limited run's ordering: the first clear rise in memorization, and the paired rises of ICR from its
  minimum.
Pure numpy (plus icrcli.stats for the eigensolve), so tests can check each piece on small arrays.
"""

from __future__ import annotations

import numpy as np

from icrcli.stats.moments import ViewMoments


def per_image_moments(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """h (N, K, D) -> (s (N, D) the image means, w (N, D*D) each image's residual scatter sum_k xi xi^T), float64:
    enough to rebuild the moments of any multiset of the images (a bootstrap resample) without the views."""
    h = np.asarray(h, dtype=np.float64)
    s = h.mean(axis=1)
    xi = h - s[:, None, :]
    w = np.einsum("nkd,nke->nde", xi, xi).reshape(len(h), -1)
    return s, w


def resampled_moments(s: np.ndarray, w: np.ndarray, counts: np.ndarray, n_views: int) -> ViewMoments:
    """The ViewMoments of the images repeated `counts` times (what icrcli.stats.moments.from_block gives on the
    repeated block)."""
    c = np.asarray(counts, dtype=np.float64)
    n = int(c.sum())
    mean = c @ s / n
    d = s - mean
    m2 = (d * c[:, None]).T @ d
    dim = s.shape[1]
    return ViewMoments(n, n_views, mean, m2, (c @ w).reshape(dim, dim))


def bootstrap_counts(n: int, b: int, seed: int) -> np.ndarray:
    """(b, n) multinomial counts: b resamples of n items with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(b)])


def icr_of(m: ViewMoments, opts) -> float:
    """ICR of moments with icr's own covariances, ridge and eigensolve (icrcli.stats.statistics.Parts)."""
    from icrcli.stats.eigensolve import icr
    from icrcli.stats.statistics import Parts
    return icr(Parts(m, opts).eigenvalues)


def bootstrap_icr(levels: list[np.ndarray], counts: np.ndarray, opts=None) -> np.ndarray:
    """(b, L) ICR of each resample (rows of `counts`) at each level; `levels` holds each level's (N, K, D)
    features of the same N images. icr's score options (ridge, estimator) apply unchanged."""
    from icrcli.stats.options import ScoreOptions
    opts = opts or ScoreOptions()
    out = np.empty((len(counts), len(levels)))
    for j, h in enumerate(levels):
        s, w = per_image_moments(h)
        for i, c in enumerate(counts):
            out[i, j] = icr_of(resampled_moments(s, w, c, h.shape[1]), opts)
    return out


def bootstrap_accuracy(correct: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(b, L) accuracy of each resample at each level from per-image correctness (L, n) of the same test images."""
    c = np.asarray(counts, dtype=np.float64)
    return c @ np.asarray(correct, dtype=np.float64).T / c.sum(axis=1, keepdims=True)


def argmin_lowest(values: np.ndarray) -> np.ndarray:
    """Per row, the column of the smallest value, the first (lowest sigma) on ties, as icr's argmin."""
    return np.argmin(values, axis=1)


def argmax_lowest(values: np.ndarray) -> np.ndarray:
    """Per row, the column of the largest value, the first (lowest sigma) on ties, as icr's probe argmax."""
    return np.argmax(values, axis=1)


def agreement_rules(sigmas: list[float], icr: list[float], acc: list[float], acc_se: list[float],
                    mcnemar_p_vs_best: list[float], icr_tied: list[bool] | None) -> list[dict]:
    """For one (augmentation, layer) cell with levels in sigma order: each rule that says "ICR's pick of sigma
    agrees with the probe", whether ICR's argmin passes it, and its null rate, the fraction of the grid's levels
    that would pass it if the pick were a sigma drawn uniformly at random.

    Rules: 'same level' (the argmin is the probe's argmax); 'within 2 SE' (accuracy there within two standard
    errors, the larger of the two levels', of the best); 'McNemar p >= 0.05' (not significantly worse than the best
    on the same test images); 'best among ICR's ties' (the probe's best level is tied with ICR's minimum by the
    paired jackknife: null rate = ties / levels, the chance that a random set of that many levels holds it)."""
    L = len(sigmas)
    lo = min(range(L), key=lambda i: (icr[i], sigmas[i]))
    hi = max(range(L), key=lambda i: (acc[i], -sigmas[i]))
    within = [acc[hi] - acc[i] <= 2 * max(acc_se[hi], acc_se[i]) for i in range(L)]
    not_worse = [p >= 0.05 for p in mcnemar_p_vs_best]
    rules = [{"rule": "same level", "passes": lo == hi, "null_rate": 1 / L},
             {"rule": "within 2 SE of the best", "passes": within[lo], "null_rate": sum(within) / L},
             {"rule": "McNemar p >= 0.05 against the best", "passes": not_worse[lo], "null_rate": sum(not_worse) / L}]
    if icr_tied is not None:
        rules.append({"rule": "best among ICR's ties", "passes": bool(icr_tied[hi]), "null_rate": sum(icr_tied) / L})
    return rules


def expected_passes(null_rates: list[float]) -> tuple[float, float]:
    """Mean and standard deviation of the number of cells a random pick passes (independent Bernoulli cells)."""
    p = np.asarray(null_rates, dtype=np.float64)
    return float(p.sum()), float(np.sqrt((p * (1 - p)).sum()))


def first_clear_rise(points: list[dict], level: float = 0.1) -> int | None:
    """The first step whose memorization ratio is at least `level` and more than two standard errors above 0."""
    for p in points:
        r, se = p.get("memorization_ratio"), p.get("memorization_ratio_se")
        if r is not None and r >= level and r - 2 * se > 0:
            return p["step"]
    return None


def first_rise_beyond(rises: list[dict] | None, after_step: int) -> int | None:
    """The first step after `after_step` whose ICR lies above the series' minimum beyond the paired interval."""
    for r in rises or []:
        if r["step"] > after_step and r["beyond_interval"]:
            return r["step"]
    return None
