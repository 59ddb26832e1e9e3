"""Score results in the cache (<cache>/scores/), keyed by the feature file's content and the scoring options.

The key covers: the sha256 of the file's bytes (through the hash memo, so an unchanged file, same path, size,
mtime, inode and ctime, is not read again), the dataset or layer asked for, every ScoreOptions field (block size
included: it can change the last bits), the result schema and icr's version. A changed file has another hash,
so it is never answered from an old entry. Only the result is stored: a call that asks for the Fisher
directions (opts.top > 0) computes and stores nothing. A hit differs from a fresh result in nothing but
input.path, which names the file as given this time.

Imports nothing heavy (no numpy, no scipy): a repeated `icr score` answers without loading the statistics.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from icrcli import __version__, cache
from icrcli.errors import UserError
from icrcli.stats.options import ScoreOptions
from icrcli.stats.result import SCHEMA

KIND = "scores"


def score_key(path: str | Path, dataset: str | None, layer: str | None, opts: ScoreOptions) -> str:
    return cache.config_key({"kind": KIND, "schema": SCHEMA, "version": __version__,
                             "features_sha256": cache.file_sha256(path), "dataset": dataset, "layer": layer,
                             "options": dataclasses.asdict(opts)})


def cached_score(path: str | Path, dataset: str | None, layer: str | None, opts: ScoreOptions,
                 compute: Callable[[], tuple[dict, object]], use_cache: bool = True,
                 warn: Callable[[str], None] | None = None) -> tuple[dict, object]:
    """compute() -> (result, directions), answered from the cache when it can be. A damaged entry is said once
    through warn (without warn: added to the result's warnings) and recomputed."""
    if not use_cache or opts.top > 0:
        return compute()
    try:
        key = score_key(path, dataset, layer, opts)
    except UserError:       # missing, unreadable, not a file: the reader says so in its own words
        return compute()
    hit, note = cache.read_entry(KIND, key, lambda v: isinstance(v, dict) and "icr" in v)
    if hit is not None:
        hit["input"] = {**hit.get("input", {}), "path": str(path)}
        return hit, None
    result, directions = compute()
    cache.write_entry(KIND, key, result)
    if note is not None:
        if warn is not None:
            warn(note)
        else:
            result = {**result, "warnings": [*result.get("warnings", []), note]}
    return result, directions
