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
