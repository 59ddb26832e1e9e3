"""The one shape of an `icr score` result (README "Output (JSON keys)"), built here and nowhere else, so that
sweep and timeline records and their plots can rely on it. SCHEMA changes when a key changes meaning or goes."""

from __future__ import annotations

SCHEMA = 1

# What `score.statistics` computes from the accumulated moments, in the order the result lists them.
STATISTICS = ("icr_bias_corrected", "bias_correction", "icr_tau_tenth",
              "mean_lambda", "min_eigenvalue", "eigenvalues", "tau", "tau_rel", "estimator", "n_images", "n_views",
              "dim", "trace_s", "trace_xi", "trace_h", "effective_rank", "alignment", "lidar", "condition")


def build_result(stats: dict, *, warnings: list[str], n_skipped: int, source: dict, provenance: dict,
                 options: dict, version: str, interval: dict | None = None) -> dict:
    """The JSON-ready result.

    stats: `icr` and the STATISTICS keys; warnings: plain-language strings (also printed by the CLI);
    interval: the jackknife's icr_se, icr_ci, ci_groups, ci_confidence, icr_replicates (with --ci); source: the
    input's path,
    dataset, shape, dtype, completeness; provenance: the feature file's attributes; options: the scoring options.
    """
    out = {"schema": SCHEMA, "icr": stats["icr"]}
    if interval is not None:
        out.update({k: interval[k] for k in ("icr_ci", "icr_se", "ci_groups", "ci_confidence",
                                                 "icr_replicates")})
    out.update({k: stats[k] for k in STATISTICS})
    out["warnings"] = list(warnings)
    out["n_skipped_nonfinite"] = n_skipped
    out["input"] = dict(source)
    out["provenance"] = dict(provenance)
    out["options"] = dict(options)
    out["version"] = version
    return out


class ScoreResult:
    """A score result as typed attributes; `to_dict()` is exactly the JSON `icr score` prints.

    >>> r = icrcli.score(features); r.icr, r.eigenvalues[:5], r.icr_ci
    """

    def __init__(self, data: dict):
        self._data = dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> "ScoreResult":
        if not isinstance(data, dict) or "icr" not in data or "eigenvalues" not in data:
            raise ValueError("not an icr score result: a dict with 'icr' and 'eigenvalues' is expected")
        return cls(data)

    def to_dict(self) -> dict:
        return dict(self._data)

    def __getitem__(self, key: str):
        return self._data[key]

    def __repr__(self) -> str:
        ci = f", icr_ci={self.icr_ci}" if self.icr_ci is not None else ""
        return f"ScoreResult(icr={self.icr:.6g}{ci}, n_images={self.n_images}, n_views={self.n_views}, dim={self.dim})"

    icr = property(lambda self: float(self._data["icr"]), doc="1 / (1 + mean lambda)")
    icr_ci = property(lambda self: self._data.get("icr_ci"), doc="[low, high] with ci=True, else None")
    icr_se = property(lambda self: self._data.get("icr_se"), doc="jackknife standard error with ci=True")
    eigenvalues = property(lambda self: __import__("numpy").asarray(self._data["eigenvalues"]),
                           doc="(D,) generalized eigenvalues, descending")
    mean_lambda = property(lambda self: float(self._data["mean_lambda"]))
    tau = property(lambda self: float(self._data["tau"]))
    n_images = property(lambda self: int(self._data["n_images"]))
    n_views = property(lambda self: int(self._data["n_views"]))
    dim = property(lambda self: int(self._data["dim"]))
    trace_s = property(lambda self: float(self._data["trace_s"]))
    trace_xi = property(lambda self: float(self._data["trace_xi"]))
    trace_h = property(lambda self: float(self._data["trace_h"]))
    effective_rank = property(lambda self: float(self._data["effective_rank"]))
    alignment = property(lambda self: float(self._data["alignment"]))
    lidar = property(lambda self: float(self._data["lidar"]))
    condition = property(lambda self: dict(self._data["condition"]))
    warnings = property(lambda self: list(self._data.get("warnings", [])))
    cached = property(lambda self: bool(self._data.get("cached", False)), doc="answered from the score cache")
    cache_entry = property(lambda self: self._data.get("cache_entry"), doc="the cache entry it came from or went to")
