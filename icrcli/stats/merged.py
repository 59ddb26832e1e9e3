"""One score from several parts: the shard files of one extraction (`icr score A B C`, a folder, a glob), or the
statistics files that `icr score --stats-out` wrote where the features were (`icr merge`).

The parts' moments merge exactly (icrcli.stats.moments, Chan et al.), each image in the jackknife group of its row
in the whole extraction, so the result is the unsplit extraction's to float64 rounding. Before anything is read, the
set is checked: every part of one extraction (same configuration), each shard once and complete, none missing, and
the first part that breaks this is named.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from icrcli import __version__
from icrcli.errors import UserError
from icrcli.features.featurefile import FeatureSource, refuse_checkpoint
from icrcli.features.shards import Shard, shard_of, shard_rows
from icrcli.stats.moments import merge_all
from icrcli.stats.options import ScoreOptions
from icrcli.stats.score import (Accumulated, accumulate, check_source, check_views_differ, open_source,
                                provenance_of, result_of, source_of)

_FEATURE_SUFFIXES = (".h5", ".hdf5", ".npy")


def expand(given: list[str | Path], suffixes: tuple[str, ...] = _FEATURE_SUFFIXES) -> list[Path]:
    """The files named on the command line: files as they are, a folder's files with these suffixes, a quoted glob
    (one the shell did not expand) its matches; each file once, in the order given."""
    out: list[Path] = []
    for g in given:
        p = Path(g)
        if p.is_dir():
            refuse_checkpoint(p)    # a diffusers model folder: say to extract, not that it has no feature files
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in suffixes)
            if not found:
                raise UserError(f"{p} is a folder with no {'/'.join(suffixes)} files in it; pass the files, or the "
                                "folder that holds them.")
        elif not p.exists() and glob.has_magic(str(g)):
            found = sorted(Path(q) for q in glob.glob(str(g)))
            if not found:
                raise UserError(f"{g}: no file matches this pattern.")
        else:
            found = [p]
        out += [q for q in found if q not in out]
    return out


@dataclass
class ShardSet:
    """The members of one extraction, in shard order: sources[j] is shard shards[j] of `count`."""
    sources: list[FeatureSource]
    shards: list[int]
    count: int
    whole: dict                     # the "shard" entry: {index, count, of, n_images}

    @property
    def complete(self) -> bool:
        return self.shards == list(range(self.count))

    def rows(self, j: int) -> np.ndarray:
        cfg = self.sources[j].attrs["config"]
        return shard_rows(self.whole["n_images"], cfg["chunk_images"], Shard(self.shards[j], self.count))


def shard_set(sources: list[FeatureSource], require_all: bool = True) -> ShardSet:
    """Check that `sources` are shards of one extraction, each once and complete (and, with require_all, all
    of them); the first that is not is named."""
    first, members = sources[0], []
    for src in sources:
        s = shard_of(src.attrs.get("config") if isinstance(src.attrs.get("config"), dict) else None)
        if s is None:
            raise UserError(f"{src.path} is not a shard (its configuration names no --shard), and several files were "
                            f"given: `icr score` merges only the shards of one extraction (written by `icr extract "
                            f"--shard I/N`). Score {src.path} alone.")
        members.append((s, src))
    s0 = members[0][0]
    for s, src in members[1:]:
        if s["of"] != s0["of"] or s["count"] != s0["count"]:
            raise UserError(f"{src.path} is shard {s['index']}/{s['count']} of another extraction than {first.path} "
                            f"(shard {s0['index']}/{s0['count']}): its configuration differs "
                            f"({_differs(first.attrs['config'], src.attrs['config'])}). Give the shards of one "
                            "extraction, made by the same command with only --shard changed.")
    by_index: dict[int, FeatureSource] = {}
    for s, src in members:
        if s["index"] in by_index:
            raise UserError(f"shard {s['index']}/{s['count']} is given twice: {by_index[s['index']].path} and "
                            f"{src.path}. Give each shard once.")
        by_index[s["index"]] = src
        want = len(shard_rows(s["n_images"], src.attrs["config"]["chunk_images"], Shard(s["index"], s["count"])))
        if not src.complete or src.shape[0] != want:
            raise UserError(f"{src.path} (shard {s['index']}/{s['count']}) is incomplete: {src.shape[0]} of its {want} "
                            f"images written. Run the same `icr extract --shard {s['index']}/{s['count']}` command "
                            "again to finish it.")
    missing = [i for i in range(s0["count"]) if i not in by_index]
    if missing and require_all:
        count = s0["count"]
        names = ", ".join(f"{i}/{count}" for i in missing)
        given = ", ".join(f"{i}/{count} in {by_index[i].path}" for i in sorted(by_index))
        raise UserError(f"shard(s) {names} of this extraction are missing (given: {given}). "
                        "Give every shard's file (a list, their folder, or a quoted glob), or run the missing "
                        "`icr extract --shard I/N` first.")
    order = sorted(by_index)
    return ShardSet([by_index[i] for i in order], order, s0["count"], s0)


def _differs(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if k != "shard" and a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:3]) or "shard count"


def accumulate_set(ss: ShardSet, opts: ScoreOptions, progress: Callable[[int], None] | None = None) -> Accumulated:
    """The moments of every member, each image in the group of its row in the whole extraction, merged in shard
    order."""
    parts = []
    for j, src in enumerate(ss.sources):
        check_source(src, _unsplit(opts))
        parts.append(accumulate(src, opts, progress, rows=ss.rows(j), at_least=0))
    return merge_parts(parts, str(ss.sources[0].path))


def merge_parts(parts: list[Accumulated], where: str) -> Accumulated:
    groups = [merge_all(gs) for gs in zip(*[p.groups for p in parts])]
    total = merge_all(groups)
    skipped = sum(p.n_skipped for p in parts)
    if total.n < 2:
        raise UserError(f"{where}: fewer than two images left after skipping {skipped} with NaN/Inf values.")
    return Accumulated(groups, total, skipped)


def _unsplit(opts: ScoreOptions) -> ScoreOptions:
    """A shard may hold fewer images than --ci has groups; the whole is checked for that instead."""
    import dataclasses
    return dataclasses.replace(opts, ci=False)


def whole_provenance(ss: ShardSet) -> dict:
    """The first shard's provenance as the unsplit extraction's file would have it: its key, its N."""
    prov = provenance_of(ss.sources[0])
    if not prov:
        return prov
    cfg = {k: v for k, v in prov.get("config", {}).items() if k != "shard"}
    n = ss.whole["n_images"]
    return {**prov, "config": cfg, "config_key": ss.whole["of"], "n_images": n, "rows_done": n, "shards": ss.count}


def whole_source(ss: ShardSet) -> dict:
    src = source_of(ss.sources[0])
    n = sum(s.shape[0] for s in ss.sources)
    return {**src, "shape": [n, *src["shape"][1:]], "paths": [str(s.path) for s in ss.sources], "shards": ss.count}


def open_sources(paths: list[Path], dataset: str | None, layer: str | None,
                 follow_external: bool = False) -> list[FeatureSource]:
    return [open_source(p, dataset, layer, follow_external) for p in paths]


def check_whole(n: int, opts: ScoreOptions, where: str) -> None:
    if opts.ci and n < 2 * opts.ci_groups:
        raise UserError(f"--ci with {opts.ci_groups} groups needs at least {2 * opts.ci_groups} images, "
                        f"{where} hold {n}. Lower --ci-groups.")


def score_shards(sources: list[FeatureSource], opts: ScoreOptions, progress: Callable[[int], None] | None = None,
                 keep: Callable[[Accumulated, dict], None] | None = None) -> tuple[dict, np.ndarray | None]:
    """The result of every shard of one extraction, merged: the unsplit extraction's to float64 rounding.
    keep(acc, meta), if given, sees the merged moments (for --stats-out)."""
    ss = shard_set(sources)
    check_whole(ss.whole["n_images"], opts, "the shards")
    acc = accumulate_set(ss, opts, progress)
    prov = whole_provenance(ss)
    check_views_differ(acc.total, None, f"{ss.sources[0].path} and the other shards", prov)
    if keep is not None:
        keep(acc, stats_meta(ss, acc, opts))
    return result_of(acc, opts, source=whole_source(ss), provenance=prov)


def stats_meta(ss: ShardSet | FeatureSource, acc: Accumulated, opts: ScoreOptions) -> dict:
    """What a statistics file says of itself: of which extraction, which shards, from which inputs."""
    from icrcli import cache
    if isinstance(ss, ShardSet):
        sources, shards, count = ss.sources, ss.shards, ss.count
        extraction, total = ss.whole["of"], ss.whole["n_images"]
        prov = whole_provenance(ss)
    else:
        sources, shards, count, total = [ss], None, None, None
        cfg = ss.attrs.get("config") if isinstance(ss.attrs.get("config"), dict) else None
        extraction = ss.attrs.get("config_key") if cfg is not None else None
        prov = provenance_of(ss)
    src = source_of(sources[0])
    return {"version": __version__, "n_views": acc.total.n_views, "dim": acc.total.dim, "groups": len(acc.groups),
            "n_images": acc.total.n, "n_skipped": acc.n_skipped, "skip_nonfinite": opts.skip_nonfinite,
            "extraction": extraction, "shards": shards, "shard_count": count, "whole_n_images": total,
            "complete": all(s.complete for s in sources),
            "inputs": [str(s.path) for s in sources], "features_sha256": [cache.file_sha256(s.path) for s in sources],
            "dataset": src["dataset"], "dtype": src["dtype"], "provenance": prov}


# ----------------------------------------------------------------------------------------- statistics files
def merge_stats(paths: list[Path], opts: ScoreOptions) -> tuple[dict, None]:
    """`icr merge`: the score result of statistics files that together cover one extraction (or files of
    disjoint data), checked like shard files."""
    from icrcli.stats.statsfile import read_stats
    parts = [(p, *read_stats(p)) for p in paths]
    p0, g0, m0 = parts[0]
    for p, g, m in parts[1:]:
        if (m["n_views"], m["dim"]) != (m0["n_views"], m0["dim"]):
            raise UserError(f"{p} holds statistics of K = {m['n_views']} views of D = {m['dim']} features, {p0} of "
                            f"K = {m0['n_views']}, D = {m0['dim']}: they are not parts of one extraction.")
        if m["extraction"] != m0["extraction"] or m["shard_count"] != m0["shard_count"] or \
                m["dataset"] != m0["dataset"] or m["skip_nonfinite"] != m0["skip_nonfinite"]:
            raise UserError(f"{p} holds statistics of another extraction (or layer, or --skip-nonfinite) than {p0}: "
                            f"extraction {str(m['extraction'])[:16]} vs {str(m0['extraction'])[:16]}, dataset "
                            f"{m['dataset']} vs {m0['dataset']}. Merge the parts of one extraction only.")
        if len(g) != len(g0):
            raise UserError(f"{p} holds {len(g)} jackknife group(s), {p0} {len(g0)}: write every part with the same "
                            "--ci/--ci-groups.")
    _check_coverage(parts)
    want = opts.ci_groups if opts.ci else 1
    if opts.ci and len(g0) != want:
        have = "no --ci" if len(g0) == 1 else f"--ci --ci-groups {len(g0)}"
        raise UserError(f"--ci --ci-groups {want}: the statistics were written with {have}. Write them again with "
                        f"`icr score --stats-out ... --ci --ci-groups {want}`, or merge with the same options.")
    # Parts in shard order (the order `icr score` merges shard files in), then as given.
    parts.sort(key=lambda t: min(t[2]["shards"]) if t[2]["shards"] else 0)
    acc = merge_parts([Accumulated(g, merge_all(g), m["n_skipped"]) for _, g, m in parts], str(p0))
    if not opts.ci and len(acc.groups) > 1:
        acc = Accumulated([acc.total], acc.total, acc.n_skipped)
    check_whole(acc.total.n, opts, "the statistics")
    prov = m0["provenance"]
    check_views_differ(acc.total, None, f"{p0} and the other statistics", prov)
    source = {"path": str(p0), "dataset": m0["dataset"], "shape": [acc.total.n + acc.n_skipped, m0["n_views"],
                                                                    m0["dim"]],
              "dtype": m0["dtype"], "complete": all(m["complete"] for _, _, m in parts),
              "paths": [str(p) for p, _, _ in parts], "shards": m0["shard_count"]}
    return result_of(acc, opts, source=source, provenance=prov)[0], None


def _check_coverage(parts: list[tuple]) -> None:
    """Shards: each once, none missing. Unsharded parts: no file counted twice."""
    p0, _, m0 = parts[0]
    seen: dict = {}
    for p, _, m in parts:
        for key in (m["shards"] if m["shards"] is not None else m["features_sha256"]):
            if key in seen:
                what = f"shard {key}/{m['shard_count']}" if m["shards"] is not None else "the same features"
                raise UserError(f"{what} is counted twice: in {seen[key]} and in {p}. Give each part once.")
            seen[key] = p
    if m0["shard_count"] is not None:
        missing = [i for i in range(m0["shard_count"]) if i not in seen]
        if missing:
            count = m0["shard_count"]
            names = ", ".join(f"{i}/{count}" for i in missing)
            raise UserError(f"shard(s) {names} of this "
                            "extraction are in none of the statistics files given. Write their statistics with "
                            "`icr score SHARD --stats-out FILE` and merge them all.")



def score_sources(sources: list[FeatureSource], opts: ScoreOptions, progress: Callable[[int], None] | None = None,
                  stats_out: Path | None = None) -> tuple[dict, object]:
    """`icr score` of one feature file or of the shards of one extraction; with stats_out, the merged moments are
    also written there (icrcli.stats.statsfile). Some shards only, with stats_out: their statistics are written
    and the answer is a summary of them (a part to `icr merge` later), not a score."""
    from icrcli.stats.score import score_source
    from icrcli.stats.statsfile import write_stats
    keep = (lambda acc, meta: write_stats(stats_out, acc.groups, meta)) if stats_out is not None else None
    cfg = sources[0].attrs.get("config")
    if len(sources) == 1 and shard_of(cfg if isinstance(cfg, dict) else None) is None:
        src = sources[0]
        if keep is None:
            return score_source(src, opts, progress)
        check_source(src, opts)
        acc = accumulate(src, opts, progress)
        check_views_differ(acc.total, src)
        keep(acc, stats_meta(src, acc, opts))
        return result_of(acc, opts, source=source_of(src), provenance=provenance_of(src))
    ss = shard_set(sources, require_all=stats_out is None)
    if ss.complete:
        return score_shards(sources, opts, progress, keep)
    acc = accumulate_set(ss, opts, progress)
    keep(acc, stats_meta(ss, acc, opts))
    return {"schema": 1, "stats": str(stats_out), "shards": ss.shards, "shard_count": ss.count,
            "n_images": acc.total.n, "n_skipped_nonfinite": acc.n_skipped, "all_shards": False,
            "version": __version__}, None
