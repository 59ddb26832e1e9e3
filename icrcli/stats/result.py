"""The one shape of an `icr score` result (README "Output (JSON keys)"), built here and nowhere else, so that
sweep and timeline records and their plots can rely on it. SCHEMA changes when a key changes meaning or goes."""

from __future__ import annotations

from dataclasses import fields

from icrcli.stats.options import ScoreOptions
from icrcli.stats.statistics import TABLE, result_keys

SCHEMA = 1
# What a result holds beyond its schema: 2 since trace_s, trace_xi and effective_rank carry jackknife intervals with
# --ci (stats.statistics.TABLE). In the score cache's key, so an entry made before (without them) answers no
# request made after: a cached answer is what a fresh run gives.
CONTENTS = 2

# The result's statistic keys, in order (stats.statistics.TABLE; with --ci each jackknifed one is followed by its
# interval, statistics.result_keys(True)).
STATISTICS = tuple(s.name for s in TABLE)
# ScoreOptions fields that change nothing but speed (and the result by float64 rounding): not in the result.
NOT_RESULT_OPTIONS = ("block_images",)

# The keys around the statistics, in order, with their JSON type and meaning (docs/JSON.md): before them ...
HEAD = (("schema", "int", str(SCHEMA)),)
# ... and after them.
TAIL = (
    ("warnings", "list[str]", "plain-language warnings (also printed)"),
    ("n_skipped_nonfinite", "int", "images left out for NaN/Inf (`--skip-nonfinite`)"),
    ("input", "object", "`path`, `dataset`, `shape` [N, K, D], `dtype`, `complete`; for shards merged also `paths` "
                        "(every file, in shard order) and `shards` (their count), and then `path` is the first"),
    ("provenance", "object", "the feature file's attributes (checkpoint and data hashes, sigma, augment, ..., and "
                             "`layer`: the dataset's); empty for a .npy"),
    ("options", "object", "the scoring options: " + ", ".join(
        f"`{f.name}`" for f in fields(ScoreOptions) if f.name not in NOT_RESULT_OPTIONS)),
    ("version", "str", "icr's version"),
)


def build_result(stats: dict, *, warnings: list[str], n_skipped: int, source: dict, provenance: dict,
                 options: dict, version: str, interval: dict | None = None) -> dict:
    """The JSON-ready result.

    stats: every statistic of stats.statistics.TABLE by name; warnings: plain-language strings (also printed by
    the CLI); interval: with --ci, the interval keys (statistics.interval_of: icr_ci, icr_se, ci_groups,
    ci_confidence, icr_replicates, and <name>_ci, <name>_se of the other jackknifed statistics), each placed after
    its statistic; source: the input's path, dataset, shape, dtype, completeness; provenance: the feature file's
    attributes; options: the scoring options.
    """
    values = {**stats, **(interval or {})}
    out = {"schema": SCHEMA}
    out.update({k: values[k] for k in result_keys(interval is not None)})
    out["warnings"] = list(warnings)
    out["n_skipped_nonfinite"] = n_skipped
    out["input"] = dict(source)
    out["provenance"] = dict(provenance)
    out["options"] = dict(options)
    out["version"] = version
    return out


class ScoreResult:
    """A score result as typed attributes; `to_dict()` is exactly the JSON `icr score` prints. One attribute per
    statistic of stats.statistics.TABLE and, for those the jackknife gives an interval, `<name>_ci` and `<name>_se`
    (None without ci=True), set below the class from the table.

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

    warnings = property(lambda self: list(self._data.get("warnings", [])))
    cached = property(lambda self: bool(self._data.get("cached", False)), doc="answered from the score cache")
    cache_entry = property(lambda self: self._data.get("cache_entry"), doc="the cache entry it came from or went to")


def _reader(json_type: str):
    """How an attribute reads its JSON value: numbers as Python numbers, the spectrum as a numpy array, an
    interval or replicates as a list."""
    if json_type.endswith(" | null"):
        inner = _reader(json_type[: -len(" | null")])
        return lambda v: None if v is None else inner(v)
    if json_type == "list[float]":
        return lambda v: __import__("numpy").asarray(v)
    return {"float": float, "int": int, "str": str, "object": dict, "list": list}[json_type]


def _attribute(key: str, json_type: str, doc: str, required: bool = True) -> property:
    read = _reader(json_type if required else f"{json_type} | null")
    return property(lambda self: read(self._data[key] if required else self._data.get(key)), doc=doc)


# One attribute per statistic, and per interval key (None without --ci, or in a result saved before it existed).
for _s in TABLE:
    setattr(ScoreResult, _s.name, _attribute(_s.name, _s.type, _s.doc))
    if _s.jackknife:
        setattr(ScoreResult, f"{_s.name}_ci", _attribute(f"{_s.name}_ci", "list", f"[low, high] of {_s.name} "
                                                         "with ci=True, else None", required=False))
        setattr(ScoreResult, f"{_s.name}_se", _attribute(f"{_s.name}_se", "float", f"jackknife standard error of "
                                                         f"{_s.name} with ci=True, else None", required=False))
    if _s.replicates:
        setattr(ScoreResult, f"{_s.name}_replicates", _attribute(
            f"{_s.name}_replicates", "list", "the G leave-one-group-out values with ci=True", required=False))
ScoreResult.ci_groups = _attribute("ci_groups", "int", "the jackknife's groups with ci=True", required=False)
ScoreResult.ci_confidence = _attribute("ci_confidence", "float", "the interval's coverage with ci=True",
                                       required=False)
del _s
