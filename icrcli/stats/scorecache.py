"""Score results in the cache (<cache>/scores/), keyed by the feature file's content and the scoring options.

The key covers: the sha256 of the file's bytes (through the hash memo, so an unchanged file, same path, size,
mtime, inode and ctime, is not read again), the dataset or layer asked for, every ScoreOptions field (block size
included: it can change the last bits), the result's schema and contents (result.CONTENTS) and icr's version; with
--follow-external, the content of every file the HDF5 file reaches (h5reach). A changed file has another hash, so
it is never answered from an old entry; an entry is believed only with a valid authentication code (icrcli.seal).
Only the result is stored: a call that asks for the Fisher directions (opts.top > 0) computes and stores nothing.
A hit differs from a fresh result in nothing but input.path, which names the file as given this time, and
"cached" (true) with "cache_entry", where it was found.

A score merged from several files (the shard files of one extraction, or `icr merge`'s statistics files) is cached
the same way: keyed by the content of every file (as a set: the merge orders them itself), what they are, the dataset
or layer and every option; a hit names the files as given this time.

Imports nothing heavy (no numpy, no scipy): a repeated `icr score` answers without loading the statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from icrcli import __version__, cache, fields
from icrcli.errors import UserError
from icrcli.stats.options import ScoreOptions
from icrcli.stats.result import CONTENTS, SCHEMA

KIND = "scores"
# The keys every answer adds after the result's own (stats.result.TAIL), with their JSON type and meaning
# (docs/JSON.md): `icr score`'s ...
KEYS = (("cached", "bool", "true when the answer came from the cache (the entry's authentication code verified; "
                           "shards merged: keyed by every shard's content); also said on stderr"),
        ("cache_entry", "str | null", "the cache entry it came from or was stored in (null with `--no-cache`, "
                                      "`--directions`, `--stats-out`)"))
# ... and `icr merge`'s.
MERGE_KEYS = (("cached", "bool", "true when the answer came from the cache (keyed by the content of every "
                                 "statistics file and the options; the entry's authentication code verified); also "
                                 "said on stderr"),
              ("cache_entry", "str | null", "the cache entry it came from or was stored in (null with `--no-cache`)"))


def score_key(path: str | Path, dataset: str | None, layer: str | None, opts: ScoreOptions,
              follow_external: bool = False) -> str:
    parts = {"kind": KIND, "schema": SCHEMA, "contents": CONTENTS, "version": __version__,
             "features_sha256": cache.file_sha256(path),
             "dataset": dataset, "layer": layer, "options": fields.keyed(opts)}
    if follow_external:     # only then: every other key stays as it was
        from icrcli.features.h5reach import reached_files
        parts["reached_sha256"] = {str(p): cache.file_sha256(p) for p in reached_files(path)}
    return cache.config_key(parts)


def parts_key(paths: list[str | Path], what: str, dataset: str | None, layer: str | None, opts: ScoreOptions,
              follow_external: bool = False) -> str:
    """The key of a score merged from `paths` ("shards": feature files; "stats": statistics files)."""
    parts = {"kind": KIND, "schema": SCHEMA, "contents": CONTENTS, "version": __version__, "parts": what,
             "sha256": sorted(cache.file_sha256(p) for p in paths), "dataset": dataset, "layer": layer,
             "options": fields.keyed(opts)}
    if follow_external:
        from icrcli.features.h5reach import reached_files
        parts["reached_sha256"] = {str(q): cache.file_sha256(q) for p in paths for q in reached_files(p)}
    return cache.config_key(parts)


def _fresh(result: dict, entry: Path | None) -> dict:
    return {**result, "cached": False, "cache_entry": None if entry is None else str(entry)}


def cached_score(path: str | Path, dataset: str | None, layer: str | None, opts: ScoreOptions,
                 compute: Callable[[], tuple[dict, object]], use_cache: bool = True,
                 warn: Callable[[str], None] | None = None, follow_external: bool = False) -> tuple[dict, object]:
    """compute() -> (result, directions), answered from the cache when it can be; result["cached"] says which and
    result["cache_entry"] names the entry. A damaged or forged entry is said once through warn (without warn:
    added to the result's warnings), removed and recomputed."""
    return _cached(lambda: score_key(path, dataset, layer, opts, follow_external), opts, compute, use_cache, warn,
                   lambda hit: {**hit.get("input", {}), "path": str(path)})


_NAMES = "_sha256_of_paths"     # in a merged score's entry only: each file it names, by content


def cached_parts(paths: list[str | Path], what: str, dataset: str | None, layer: str | None, opts: ScoreOptions,
                 compute: Callable[[], tuple[dict, object]], use_cache: bool = True,
                 warn: Callable[[str], None] | None = None, follow_external: bool = False) -> tuple[dict, object]:
    """cached_score for a score merged from several files (parts_key). A hit's input.paths (and input.path) name
    the files given this time that have the contents the stored result's files had."""
    shas: dict[str, str] = {}

    def key() -> str:
        shas.update({str(p): cache.file_sha256(p) for p in paths})
        return parts_key(paths, what, dataset, layer, opts, follow_external)

    def renamed(hit: dict) -> dict:
        now = {sha: p for p, sha in shas.items()}
        was = hit.pop(_NAMES, None)
        was = was if isinstance(was, dict) else {}
        inp = dict(hit.get("input", {}))
        name = lambda p: now.get(was.get(p), p)
        if isinstance(inp.get("paths"), list):
            inp["paths"] = [name(p) for p in inp["paths"]]
        # statistics: `path` is the first file given; shards: the first in shard order
        inp["path"] = str(paths[0]) if what == "stats" else name(inp.get("path"))
        return inp

    return _cached(key, opts, compute, use_cache, warn, renamed, lambda result: {_NAMES: shas})


def _cached(key: Callable[[], str], opts: ScoreOptions, compute: Callable[[], tuple[dict, object]], use_cache: bool,
            warn: Callable[[str], None] | None, hit_input: Callable[[dict], dict],
            extra: Callable[[dict], dict] = lambda result: {}) -> tuple[dict, object]:
    if not use_cache or opts.top > 0:
        result, directions = compute()
        return _fresh(result, None), directions
    try:
        k = key()
    except UserError:       # missing, unreadable, not a file: the reader says so in its own words
        result, directions = compute()
        return _fresh(result, None), directions
    hit, note = cache.read_entry(KIND, k, lambda v: isinstance(v, dict) and "icr" in v)
    entry = cache.entry_path(KIND, k)
    if hit is not None:
        hit["input"] = hit_input(hit)
        return {**hit, "cached": True, "cache_entry": str(entry)}, None
    result, directions = compute()
    stored = cache.write_entry(KIND, k, {**result, **extra(result)})
    result = _fresh(result, entry if stored else None)
    if note is not None:
        if warn is not None:
            warn(note)
        else:
            result = {**result, "warnings": [*result.get("warnings", []), note]}
    return result, directions
