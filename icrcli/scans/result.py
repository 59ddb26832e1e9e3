"""A scan's result as typed data: one shape for every scan (its kind, its axis, its records in axis order, why it
stopped, its cache entry), and what a sweep and a timeline add. `to_dict()` is exactly the JSON the command
prints (docs/JSON.md, in key order); `from_dict()` reads one back, so a saved result is redrawn, tabulated and
summarised (icrcli.report) from the same typed object a fresh run returns.

Records stay dicts: each is a score result (stats.result) with the scan's keys in front of it. A new scan is a
subclass naming its kind, its axis (scans.engine.Axis) and where its records are, registered with `@register`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from icrcli.scans.engine import SIGMA, STEP, Axis

_KINDS: dict[str, type[ScanResult]] = {}


def register(cls: type[ScanResult]) -> type[ScanResult]:
    """Make `cls` the result of its kind: from_dict, `icr plot` and the reports then know it."""
    _KINDS[cls.kind] = cls
    return cls


def result_class(kind: str) -> type[ScanResult] | None:
    return _KINDS.get(kind)


def kinds() -> list[str]:
    """The kinds a saved result may have to be drawn (not the shards: parts of a scan, not a scan)."""
    return [k for k, c in _KINDS.items() if c.drawn]


class ScanResult(Mapping):
    """What every scan's result has. Read-only: a Mapping of the JSON's keys (result["levels"] works), with
    typed attributes for what the reports read."""
    kind: ClassVar[str] = ""
    axis: ClassVar[Axis] = Axis("x", "x")
    records_key: ClassVar[str] = "records"
    drawn: ClassVar[bool] = True       # a whole scan (False: a shard of one)

    def __init__(self, data: dict):
        self._data = data

    @classmethod
    def from_dict(cls, data: dict) -> ScanResult:
        """The typed result of a JSON object; ScanResult.from_dict picks the class by its "kind"."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a scan result is a JSON object, not a {type(data).__name__}")
        data = data.to_dict() if isinstance(data, ScanResult) else data
        target = _KINDS.get(data.get("kind")) if cls is ScanResult else cls
        if target is None or data.get("kind") != target.kind:
            raise ValueError(f"not a {target.kind if target else 'scan'} result (kind {data.get('kind')!r})")
        return target(dict(data))

    def to_dict(self) -> dict:
        """The JSON object, keys in the command's order (a shallow copy)."""
        return dict(self._data)

    def __getitem__(self, key: str):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        best = self.lowest()
        at = f", lowest ICR {best['icr']:.4g} at {self.axis.at(best[self.axis.name])}" if best else ""
        return f"{type(self).__name__}({len(self.records)} records{at})"

    # The one shape.
    records = property(lambda self: list(self._data.get(self.records_key) or []),
                       doc="one dict per (point of the axis, series), in the order the scan produced them")
    argmin = property(lambda self: self._data.get("argmin"), doc="the lowest ICR: the series' keys, the x, icr")
    ties = property(lambda self: list(self._data.get("ties") or []),
                    doc="per series: the x of its minimum, and those tied with it (scans.ties)")
    stopped = property(lambda self: self._data.get("stopped"), doc="why it ended early, or None")
    cached = property(lambda self: bool(self._data.get("cached", False)), doc="answered from the cache")
    cache_entry = property(lambda self: self._data.get("cache_entry"), doc="its cache entry, or None")
    options = property(lambda self: dict(self._data.get("options") or {}), doc="the options that made it")
    warnings = property(lambda self: list(self._data.get("warnings") or []))
    version = property(lambda self: self._data.get("version"))

    @property
    def source(self) -> str:
        """What was scanned (a checkpoint, a run's folder), as given."""
        return str(self._data.get("checkpoint") or self._data.get("folder") or "")

    @property
    def views(self) -> dict:
        """The view options (images, views, augment, ...) it was extracted with."""
        return dict(self.options.get("views") or {})

    def groups(self) -> dict[tuple, list[dict]]:
        """The records by series (the axis's series keys), each in ascending x."""
        return self.axis.groups(self.records)

    def lowest(self, recs: list[dict] | None = None) -> dict | None:
        """The record of lowest ICR (of `recs`, default every record)."""
        recs = self.records if recs is None else recs
        return self.axis.lowest(recs) if recs else None

    def series_names(self) -> dict[tuple, str]:
        """Each series' name: the parts of its key that differ between series (the last part when none do)."""
        keys = list(self.groups())
        vary = [i for i in range(len(self.axis.series)) if len({k[i] for k in keys}) > 1] or \
            [len(self.axis.series) - 1] if self.axis.series else []
        return {k: " · ".join(str(k[i]) for i in vary) for k in keys}

    def series_label(self, key: tuple, name: str) -> str:
        """A series' curve in a plot's legend."""
        return f"ICR {name}" if len(self.groups()) > 1 else "ICR"

    def table_title(self, key: tuple, name: str) -> str:
        where = ", ".join(f"{k} {v}" for k, v in zip(self.axis.series, key) if v is not None)
        return f"ICR by {self.axis.name}" + (f", {where}" if where else "")


@register
class SweepResult(ScanResult):
    """`icr sweep`: the sigma axis, a series per (augmentation, layer)."""
    kind = "sweep"
    axis = SIGMA
    records_key = "levels"

    checkpoint = property(lambda self: self._data.get("checkpoint"))
    data = property(lambda self: self._data.get("data"))
    sigmas = property(lambda self: list(self._data.get("sigmas") or []))
    levels = property(lambda self: list(self._data.get("levels") or []))
    layers = property(lambda self: list(self._data.get("layers") or []))
    augments = property(lambda self: list(self._data.get("augments") or []),
                        doc="the augmentations scanned (several: an augmentation x sigma grid)")
    best_by_layer = property(lambda self: dict(self._data.get("best_by_layer") or {}))
    augment_grid = property(lambda self: list(self._data.get("augment_grid") or []))
    probe = property(lambda self: list(self._data.get("probe") or []), doc="per cell, with --probe")

    @property
    def grid(self) -> bool:
        """Several augmentations: the series are augmentations (and layers)."""
        return len(self.augments) > 1

    def is_argmin(self, rec: dict) -> bool:
        best = self.argmin
        return bool(best) and (rec["sigma"], rec["layer"], rec.get("augment")) == \
            (best["sigma"], best["layer"], best.get("augment"))

    def table_title(self, key: tuple, name: str) -> str:
        aug, layer = key
        return f"ICR by sigma, layer {layer}" + (f", --augment {aug}" if self.grid else "")


@register
class TimelineResult(ScanResult):
    """`icr timeline`: the step axis, a series per (sigma, layer), with each series' trend and the gates."""
    kind = "timeline"
    axis = STEP
    records_key = "points"

    folder = property(lambda self: self._data.get("folder"))
    data = property(lambda self: self._data.get("data"))
    sigmas = property(lambda self: list(self._data.get("sigmas") or []))
    sigma_auto = property(lambda self: self._data.get("sigma_auto"))
    points = property(lambda self: list(self._data.get("points") or []))
    series = property(lambda self: list(self._data.get("series") or []),
                      doc="per sigma: its trend and rises (scans.trend, scans.ties)")
    notes = property(lambda self: list(self._data.get("notes") or []))
    gates = property(lambda self: dict(self._data.get("gates") or {}), doc="the CI gates: failed, held, on")

    def trend_of(self, key: tuple) -> dict | None:
        """The series entry (sigma, layer, trend, rises) of a series key."""
        return next((s for s in self.series if s["sigma"] == key[0]), None)

    def series_label(self, key: tuple, name: str) -> str:
        return f"ICR σ={key[0]:g}"

    def table_title(self, key: tuple, name: str) -> str:
        return f"ICR by step, sigma {key[0]:g}"


@register
class SweepShard(SweepResult):
    """`icr sweep --shard I/N`: what one task extracted, to be merged (not a scan to draw)."""
    kind = "sweep-shard"
    drawn = False


@register
class TimelineShard(TimelineResult):
    """`icr timeline --shard I/N`: one task's points (each also cached)."""
    kind = "timeline-shard"
    drawn = False
