"""Typed results of the Python API's extract and probe: read-only views of the JSON the commands print, with
attributes for what a notebook reads; `to_dict()` is that JSON and `from_dict()` reads a saved one back. (The scans'
results, SweepResult and TimelineResult, are the scan engine's: icrcli.scans.result.)"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar


class Result(Mapping):
    """A result's JSON object as a read-only Mapping (r["levels"] works) with typed attributes."""
    what: ClassVar[tuple[str, str]] = ("", "")     # the key and value that say which result a dict is

    def __init__(self, data: Mapping):
        self._data = dict(data)

    @classmethod
    def from_dict(cls, data: Mapping):
        """The typed result of a JSON object (as saved with -o); a ValueError when it is another kind."""
        if isinstance(data, Result):
            data = data.to_dict()
        if not isinstance(data, Mapping):
            raise ValueError(f"a result is a JSON object, not a {type(data).__name__}")
        key, value = cls.what
        if key and data.get(key) != value:
            raise ValueError(f"not a {cls.__name__} ({key} is {data.get(key)!r}, expected {value!r})")
        return cls(data)

    def to_dict(self) -> dict:
        """The JSON object the command prints (a shallow copy)."""
        return dict(self._data)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    cached = property(lambda self: bool(self._data.get("cached", False)), doc="answered from the cache")
    options = property(lambda self: dict(self._data.get("options") or {}), doc="the options that made it")
    warnings = property(lambda self: list(self._data.get("warnings") or []))
    version = property(lambda self: self._data.get("version"))


class ExtractResult(Result):
    """`icr extract`'s summary: where the features are and what they hold."""
    features = property(lambda self: Path(self._data["features"]), doc="the feature file (HDF5)")
    n_images = property(lambda self: self._data["n_images"])
    n_views = property(lambda self: self._data["n_views"])
    layers = property(lambda self: list(self._data["layers"]))
    sigma = property(lambda self: self._data["sigma"])
    config_key = property(lambda self: self._data["config_key"], doc="the content key of the extraction")

    @classmethod
    def from_dict(cls, data: Mapping):
        if not isinstance(data, Mapping) or "features" not in data or "config_key" not in data:
            raise ValueError("not an ExtractResult (no features and config_key)")
        return cls(data)

    def __repr__(self) -> str:
        return (f"ExtractResult({self.features}, {self.n_images} images x {self.n_views} views, sigma "
                f"{self.sigma:g}, layers {', '.join(self.layers)}{', cached' if self.cached else ''})")


class ProbeResult(Result):
    """`icr probe`: linear-probe accuracy of a labelled feature file."""
    what = ("command", "probe")
    test_accuracy = property(lambda self: self._data["test_accuracy"])
    test_accuracy_se = property(lambda self: self._data["test_accuracy_se"])
    train_accuracy = property(lambda self: self._data["train_accuracy"])
    chance = property(lambda self: self._data["chance"])
    n_classes = property(lambda self: self._data["n_classes"])
    knn = property(lambda self: self._data.get("knn"), doc="k-NN accuracy (with knn=k), or None")
    protocol = property(lambda self: dict(self._data["protocol"]))

    def __repr__(self) -> str:
        return (f"ProbeResult(test_accuracy={self.test_accuracy:.4f} +- {self.test_accuracy_se:.4f}, "
                f"{self.n_classes} classes)")
