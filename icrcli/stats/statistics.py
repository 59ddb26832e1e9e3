"""Every statistic of an `icr score` result, declared once: its name, how it is computed from the accumulated
moments, its meaning, where it is shown and whether the jackknife gives it an interval.

From TABLE come the result's keys and their order (stats/result.py), the scan CSV's and the human table's columns
(report/table.py), ScoreResult's attributes, and the `icr score` / `icr merge` tables of docs/JSON.md
(dev/docgen.py). Adding a statistic is one row here.

Imports nothing heavy at its top (scorecache and docgen read the table without numpy or scipy); the functions
import what they need when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable


class Parts:
    """What the statistics are computed from, for one set of moments: the covariances, the ridge, the spectrum
    and the conditioning, each worked out once and only when a statistic asks for it (a jackknife replicate of
    trace_s needs no eigensolve)."""

    def __init__(self, m, opts, vectors: bool = False):
        self.m, self.opts, self.vectors = m, opts, vectors

    @cached_property
    def cov(self):
        from icrcli.stats.estimators import covariances
        return covariances(self.m, self.opts.estimator)

    @cached_property
    def ridge(self) -> tuple[float, float | None]:
        """(absolute tau, relative tau_rel or None when tau was given absolutely)."""
        from icrcli.stats.eigensolve import resolve_tau
        return resolve_tau(self.cov.sigma_xi, self.opts.tau, self.opts.tau_rel)

    @cached_property
    def spectrum(self):
        from icrcli.stats.eigensolve import solve
        return solve(self.cov.sigma_s, self.cov.sigma_xi, self.ridge[0], vectors=self.vectors)

    @property
    def eigenvalues(self):
        return self.spectrum.eigenvalues

    @cached_property
    def condition(self) -> dict:
        from icrcli.stats.diagnostics import condition
        return condition(self.cov.sigma_xi, self.cov.sigma_s, self.ridge[0], self.m.n, self.m.n_views)


@dataclass(frozen=True)
class Statistic:
    name: str
    type: str                       # its JSON type, as docs/JSON.md writes types
    doc: str                        # what it is, one line (docs/JSON.md, ScoreResult's attribute)
    compute: Callable[[Parts], object]
    csv: bool = False               # a column of the scans' CSV (with _low, _high, _se when it has an interval)
    table: str | None = None        # its column header in the scans' human table
    table_ci: bool = False          # the human table shows its interval too
    jackknife: bool = False         # --ci gives it an interval: <name>_ci [low, high] and <name>_se
    replicates: bool = False        # ... and keeps the G replicates, <name>_replicates, for paired comparisons


# ------------------------------------------------------------------------------------- how each is computed
def _icr(p: Parts) -> float:
    from icrcli.stats.eigensolve import icr
    return icr(p.eigenvalues)


def _mean_lambda(p: Parts) -> float:
    return float(p.eigenvalues.mean())


def _icr_bias_corrected(p: Parts) -> float | None:
    from icrcli.stats.diagnostics import bias_corrected_icr
    return bias_corrected_icr(_mean_lambda(p), p.m.n, p.m.n_views, p.m.dim, p.opts.estimator)


def _icr_tau_tenth(p: Parts) -> float | None:
    """ICR with a ten times smaller absolute ridge: how much the ridge carries. None when tau = 0, or when
    Sigma_xi + tau/10 I is singular."""
    from icrcli.errors import UserError
    from icrcli.stats.eigensolve import icr, solve
    tau = p.ridge[0]
    if not tau > 0:
        return None
    try:
        return icr(solve(p.cov.sigma_s, p.cov.sigma_xi, tau / 10, vectors=False).eigenvalues)
    except UserError:
        return None


def _trace(which: str) -> Callable[[Parts], float]:
    return lambda p: float(getattr(p.cov, which).trace())


def _effective_rank(p: Parts) -> float:
    from icrcli.stats.diagnostics import effective_rank
    return effective_rank(p.cov.sigma_h)


def _alignment(p: Parts) -> float:
    from icrcli.stats.diagnostics import alignment
    return alignment(p.m)


def _lidar(p: Parts) -> float:
    from icrcli.stats.diagnostics import lidar
    return lidar(p.m)


BIAS_CORRECTION = ("analytic: mean lambda divided by the inverse-Wishart factor N(K-1) / (N(K-1) - D - 1) and "
                   "(N-1)/N, exact for Gaussian features at tau = 0 (diagnostics.bias_corrected_icr)")
CONDITION_KEYS = ("sigma_xi_min_eigenvalue", "sigma_xi_max_eigenvalue", "sigma_xi_condition", "regularized_condition",
                  "n_sigma_xi_below_tau", "sigma_s_min_eigenvalue", "n_sigma_s_negative", "residual_dof",
                  "images_needed")

# ------------------------------------------------------------------------------------- the table
# In the order of the result's keys (which stays: sweep and timeline records and saved results rely on it).
# The jackknife gives an interval to smooth functions of the moments; not to the spectrum's extremes, the
# ridge-swapped ICR, counts or settings. trace_h and alignment would qualify too (a flag each) but are sums of
# what trace_s and trace_xi already bound.
TABLE = (
    Statistic("icr", "float", "the Invariant Contamination Ratio (lower is cleaner)", _icr,
              csv=True, table="ICR", table_ci=True, jackknife=True, replicates=True),
    Statistic("icr_bias_corrected", "float | null",
              "ICR with mean lambda corrected for the small-sample bias, analytically (`bias_correction`); null when "
              "N(K-1) <= D + 1", _icr_bias_corrected),
    Statistic("bias_correction", "str",
              "how `icr_bias_corrected` was corrected: the inverse-Wishart factor N(K-1)/(N(K-1) - D - 1) and "
              "(N-1)/N, exact for Gaussian features at tau = 0", lambda p: BIAS_CORRECTION),
    Statistic("icr_tau_tenth", "float | null",
              "ICR with a ten times smaller ridge (tau / 10): how much the ridge carries; null when tau = 0",
              _icr_tau_tenth),
    Statistic("mean_lambda", "float", "mean generalized eigenvalue", _mean_lambda, csv=True, table="mean λ"),
    Statistic("min_eigenvalue", "float", "smallest generalized eigenvalue", lambda p: float(p.eigenvalues[-1])),
    Statistic("eigenvalues", "list[float]", "the generalized spectrum, descending, length `dim`",
              lambda p: p.eigenvalues.tolist()),
    Statistic("tau", "float", "the absolute ridge added to Sigma_xi", lambda p: p.ridge[0]),
    Statistic("tau_rel", "float | null", "the ridge relative to trace(Sigma_xi)/D (null when `--tau` was given)",
              lambda p: p.ridge[1]),
    Statistic("estimator", "str", "`paper` or `plugin`", lambda p: p.opts.estimator),
    Statistic("n_images", "int", "images scored (after `--skip-nonfinite`)", lambda p: p.m.n, csv=True),
    Statistic("n_views", "int", "views K", lambda p: p.m.n_views, csv=True),
    Statistic("dim", "int", "features D per view", lambda p: p.m.dim, csv=True),
    Statistic("trace_s", "float", "trace of Sigma_s", _trace("sigma_s"), csv=True, table="trace_s", jackknife=True),
    Statistic("trace_xi", "float", "trace of Sigma_xi", _trace("sigma_xi"), csv=True, table="trace_xi",
              jackknife=True),
    Statistic("trace_h", "float", "trace of the total covariance", _trace("sigma_h"), csv=True),
    Statistic("effective_rank", "float",
              "effective rank of the total covariance (RankMe: exp entropy of its normalised singular values)",
              _effective_rank, csv=True, jackknife=True),
    Statistic("alignment", "float",
              "mean squared distance between two views of one image: 2 trace(Sigma_xi) of the paper's estimator, "
              "whichever `estimator` scored", _alignment),
    Statistic("lidar", "float", "LiDAR (effective rank of the LDA matrix)", _lidar, csv=True),
    Statistic("condition", "object",
              "conditioning of the problem: " + ", ".join(f"`{k}`" for k in CONDITION_KEYS),
              lambda p: p.condition),
)
BY_NAME = {s.name: s for s in TABLE}
JACKKNIFED = tuple(s for s in TABLE if s.jackknife)
# The interval's settings, after the first interval's standard error (icr_se), where they have always been.
INTERVAL_SETTINGS = ("ci_groups", "ci_confidence")


def interval_keys(s: Statistic) -> tuple[str, ...]:
    """The keys --ci adds after statistic s, in order."""
    if not s.jackknife:
        return ()
    keys = (f"{s.name}_ci", f"{s.name}_se")
    if s is JACKKNIFED[0]:
        keys += INTERVAL_SETTINGS
    return keys + ((f"{s.name}_replicates",) if s.replicates else ())


def interval_rows(s: Statistic) -> list[tuple[str, str, str]]:
    """(key, JSON type, meaning) of each key --ci adds after statistic s (docs/JSON.md)."""
    doc = {f"{s.name}_ci": ("list[float]", "jackknife interval [low, high]"),
           f"{s.name}_se": ("float", "jackknife standard error"),
           "ci_groups": ("int", "jackknife groups"),
           "ci_confidence": ("float", "the interval's coverage"),
           f"{s.name}_replicates": ("list[float]", f"the G leave-one-group-out values of `{s.name}` (image i in "
                                                   "group i mod G): two results on the same images compare "
                                                   "pairwise through them")}
    return [(k, doc[k][0], f"*(optional, `--ci`)* {doc[k][1]}") for k in interval_keys(s)]


def result_keys(ci: bool) -> tuple[str, ...]:
    """The statistics' keys of a result, in order: each statistic, followed with --ci by its interval's keys."""
    return tuple(k for s in TABLE for k in (s.name, *(interval_keys(s) if ci else ())))


def compute(m, opts, vectors: bool = False) -> tuple[dict, Parts]:
    """Every statistic of moments m, by name, and the parts they came from (the spectrum, with the Fisher
    directions when vectors)."""
    p = Parts(m, opts, vectors)
    return {s.name: s.compute(p) for s in TABLE}, p


def replicate(m, opts) -> dict[str, float]:
    """The jackknifed statistics of one leave-one-group-out set of moments."""
    p = Parts(m, opts)
    return {s.name: s.compute(p) for s in JACKKNIFED}


def interval_of(jack: dict, groups: int, confidence: float) -> dict:
    """The result's interval keys from the jackknife's {name: {"se", "ci", "replicates"}}."""
    out = {"ci_groups": groups, "ci_confidence": confidence}
    for s in JACKKNIFED:
        j = jack[s.name]
        out[f"{s.name}_ci"], out[f"{s.name}_se"] = j["ci"], j["se"]
        if s.replicates:
            out[f"{s.name}_replicates"] = j["replicates"]
    return out
