"""What every scan shares: an axis over requests, one cached-record path, the minimum and its ties per series.

A scan asks the same question (ICR, and what comes with it) at each value of one axis: sigma (`icr sweep`),
the checkpoint's step (`icr timeline`), or anything else a caller scans (a seed, a data subset). Its records are
dicts with the axis's key (the x) and the series' keys (what splits the records into curves: a sweep's
augmentation and layer, a timeline's sigma and layer). Everything downstream, the table, the plot, the JSON
(icrcli.scans.result), reads the axis instead of knowing the scan.

A scan is cached in one way: a record under a key made from the content of its inputs and every option that
shapes it (scans.records), read back without loading a network, written once computed, and said when answered
(`cached`, `cache_entry`). A sweep keeps its whole result in one record; a timeline one record per point, so a
rerun after new checkpoints computes only those (`cached_points`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable

from icrcli import __version__
from icrcli.progress import SILENT, Reporter
from icrcli.scans import records


@dataclass(frozen=True)
class Axis:
    """What a scan varies. name: the records' key of the x; label: the plot's x label; fmt: how one value is
    written in labels (σ=0.1, step 200; default name=value); log: a log x axis (sigma = 0 drawn half a decade
    left); series: the records' keys whose values split them into series (curves, tables), in that order."""
    name: str
    label: str
    fmt: str = ""
    log: bool = False
    series: tuple[str, ...] = ()

    @property
    def symbol(self) -> str:
        """The axis's name in labels: σ, step."""
        return self.fmt.split("=")[0].split(" ")[0] if self.fmt else self.name

    def at(self, value) -> str:
        """One value as labels write it: 'σ=0.1', 'step 200', 'seed=3'."""
        return (self.fmt or self.name + "={}").format(value)

    def key_of(self, rec: dict) -> tuple:
        return tuple(rec.get(k) for k in self.series)

    def groups(self, recs: list[dict]) -> dict[tuple, list[dict]]:
        """The records by series (first-seen order), each in ascending x."""
        out: dict[tuple, list[dict]] = {}
        for r in recs:
            out.setdefault(self.key_of(r), []).append(r)
        return {k: sorted(v, key=lambda r: r[self.name]) for k, v in out.items()}

    def lowest(self, recs: list[dict]) -> dict:
        """The record of lowest ICR (the lowest x among equals)."""
        return min(recs, key=lambda r: (r["icr"], r[self.name]))


SIGMA = Axis("sigma", "σ (EDM units, data in [-1, 1])", "σ={:g}", log=True, series=("augment", "layer"))
STEP = Axis("step", "training step", "step {}", log=False, series=("sigma", "layer"))


def best(axis: Axis, recs: list[dict]) -> dict | None:
    """The scan's minimum as the JSON says it: the series' keys, the x, the ICR."""
    if not recs:
        return None
    r = axis.lowest(recs)
    return {**{k: r.get(k) for k in axis.series}, axis.name: r[axis.name], "icr": r["icr"]}


class Entry:
    """One cached scan record: its key (from `parts`, scans.records.record_key), looked up, sealed, said.
    `use_cache=False` looks nothing up and writes nothing (cache_entry null)."""

    def __init__(self, kind: str, parts: dict, use_cache: bool = True):
        self.kind, self.use_cache = kind, use_cache
        self.key = records.record_key(kind, parts)
        self.path = str(records.entry_path(kind, self.key)) if use_cache else None

    def load(self, warn=None, inner: str | None = None) -> dict | None:
        """The record as answered from the cache (it and each of its `inner` records say so), or None."""
        rec = records.load(self.kind, self.key, warn) if self.use_cache else None
        if rec is None:
            return None
        if inner is not None:
            rec[inner] = [records.from_cache(r, self.path) for r in rec[inner]]
        return records.from_cache(rec, self.path)

    def save(self, rec: dict) -> None:
        if self.use_cache:
            records.save(self.kind, self.key, rec)

    def fresh(self, rec: dict, kept: bool = True) -> dict:
        """A computed record as answered: not from the cache, and its entry when it was kept there."""
        return {**rec, "cached": False, "cache_entry": self.path if kept else None}


def cached_points(kind: str, parts: dict[Hashable, dict], compute: Callable[[list], dict[Hashable, list[dict]]],
                  warn=None, use_cache: bool = True) -> dict[Hashable, list[dict]]:
    """Per value of the axis, its records: from its own cache entry where there is one (each says so), else
    computed (all missing values in one call, so they can share their work) and kept, one entry per value.
    parts: per value, what its key is made of."""
    entries = {v: Entry(kind, p, use_cache) for v, p in parts.items()}
    found = {v: e.load(warn, "points") for v, e in entries.items()}
    todo = [v for v in parts if found[v] is None]
    fresh = compute(todo) if todo else {}
    for v in todo:
        entries[v].save({"schema": records.SCHEMA, "points": fresh[v]})
    return {v: fresh[v] if found[v] is None else found[v]["points"] for v in parts}


def run_scan(kind: str, axis: Axis, values: list, parts: Callable[[object], dict],
             compute: Callable[[list], dict[Hashable, list[dict]]], head: dict | None = None,
             reporter: Reporter = SILENT, on_record: Callable[[dict], None] | None = None,
             use_cache: bool = True, record_kind: str | None = None):
    """A scan over `values` of `axis` with nothing but the shared parts: each value's records cached under
    parts(value) (cached_points), computed by compute(values to do) -> {value: [records]} where each record
    holds the axis's key, the series' keys and a score's keys (`icr`, and `icr_replicates` for ties). The
    result (scans.result, by `kind`) lists the records in axis order with the argmin, the ties per series and
    the usual `cached`/`cache_entry` (cached: every point came from the cache). A new axis is this call, and
    a ScanResult subclass naming its kind and axis."""
    from icrcli.scans.result import ScanResult
    from icrcli.scans.ties import annotate
    found = cached_points(record_kind or f"{kind}-points", {v: parts(v) for v in values}, compute,
                          reporter.warn, use_cache)
    recs = [r for v in values for r in found[v]]
    for r in recs:
        on_record and on_record(r)
    ties = annotate(recs, axis)
    result = {"schema": records.SCHEMA, "kind": kind, "version": __version__, "axis": axis.name,
              "values": list(values), **(head or {}), "records": recs, "argmin": best(axis, recs), "ties": ties,
              "stopped": None, "cached": bool(recs) and all(r.get("cached") for r in recs), "cache_entry": None}
    return ScanResult.from_dict(result)
