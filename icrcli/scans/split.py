"""A scan split across processes: the ranks of a torchrun job, or shards run as plain processes.

Sweep: every level's images are split into shards (icrcli.features.shards); a process extracts its shards' features
(cached, resumable, per shard), takes their float64 moments, and the moments of all shards are merged in shard order
(sent to rank 0 under torchrun, read from the shared cache with --shards N), so no level is scored twice
and the result is the unsplit sweep's to float64 rounding. Timeline: every checkpoint is whole on one process (the
checkpoints are split, rank r takes checkpoints r, r+W, ...), and the points are gathered.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from icrcli import cache, dist
from icrcli.errors import UserError
from icrcli.progress import Reporter
from icrcli.features.shards import WHOLE, Shard, parse_shard


@dataclass(frozen=True)
class Split:
    shard: Shard = WHOLE    # --shard I/N: compute shard I of every level only (no score: a part of the whole)
    shards: int = 1         # --shards N: every level from N shards, those not in the cache computed here
    ranks: int = 1          # torchrun's world size: rank r computes shard r of every level (or checkpoints r::W)

    @property
    def whole(self) -> bool:
        return self.shard.count == 1 and self.shards == 1 and self.ranks == 1

    @property
    def count(self) -> int:
        """Shards per level."""
        return max(self.shard.count, self.shards, self.ranks)

    def mine(self) -> list[int]:
        """The shards (of each level) or the share of checkpoints this process computes."""
        if self.ranks > 1:
            return [dist.rank()]
        if self.shard.count > 1:
            return [self.shard.index]
        return list(range(self.shards))

    def key(self) -> dict:
        """What a cached scan record adds to its key (nothing for an unsplit scan: old keys stay)."""
        return {} if self.whole else {"split_shards": self.count}


def split_from(shard: str | None, shards: int | None) -> Split:
    """--shard I/N, --shards N and torchrun's world: at most one of them."""
    part, w = parse_shard(shard), dist.world_size()
    given = [f for f, on in (("--shard", part.count > 1), ("--shards", (shards or 1) > 1),
                             (f"torchrun's {w} ranks", w > 1)) if on]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)}: one way of splitting per run. Under torchrun the ranks split the "
                        "work themselves; --shard I/N is for plain processes (a Slurm array), --shards N merges "
                        "their shards.")
    return Split(part, shards or 1, w)


def check_no_probe(split: Split, probe) -> None:
    if probe is not None and not split.whole:
        raise UserError("--probe needs every image of a level in one process: run it without --shard, --shards or "
                        "torchrun (the probe's features are then cached per level).")


def shard_paths(plans: list, split: Split, i: int) -> list[tuple]:
    """(shard plan, its cache path) of every plan, for shard i."""
    from icrcli.features.shards import shard_plan
    sp = [shard_plan(p, Shard(i, split.count)) for p in plans]
    return [(q, cache.cached_path(q.key)) for q in sp]


def extract_shards(plans: list, split: Split, run, reporter: Reporter) -> dict[int, list[tuple]]:
    """Extract this process's shards of every level (one pass over the data per shard): {i: [(plan, path)]}.
    One bar for it all (icrcli.jobprogress): under torchrun rank 0's counts every rank's images, with --shards N
    every shard's; with --shard I/N the job is shard I."""
    from icrcli.features.extract import extract_levels
    from icrcli.jobprogress import job_progress
    out = {i: shard_paths(plans, split, i) for i in split.mine()}
    share = sum(len(q.indices) for pairs in out.values() for q, _ in pairs)
    total = share if split.shard.count > 1 else sum(len(p.indices) for p in plans)
    with job_progress(reporter, "extracting", total, share, split.ranks) as rep:
        for pairs in out.values():
            extract_levels([q for q, _ in pairs], [path for _, path in pairs], run, rep)
    return out


def merged_score(p, layer: str, mine: dict[int, tuple], split: Split, sopts) -> dict:
    """The score of (level p, layer) from its shards: this process's moments, merged in shard order; under torchrun
    each rank's moments go to rank 0 alone (icrcli.dist.reduce_to_root: rank r holds shard r, so the order is the
    same), rank 0 scores them once and the other ranks get its result."""
    import dataclasses
    from icrcli.stats.merged import ShardSet, whole_provenance, whole_source
    from icrcli.stats.score import accumulate, check_source, open_source
    part = None
    for i, (q, path) in sorted(mine.items()):
        src = open_source(path, layer=layer)
        one = ShardSet([src], [i], split.count, q.config["shard"])
        check_source(src, dataclasses.replace(sopts, ci=False))
        acc = accumulate(src, sopts, rows=one.rows(0), at_least=0)
        part = _fold(part, ([i], acc, [whole_source(one)], whole_provenance(one)))
    if split.ranks > 1:
        part = dist.reduce_to_root(part, _fold, f"sending the moments of sigma {p.sigma:g} to rank 0")
    return dist.on_root(lambda: _score_part(p, part, split, sopts), f"sharing the score of sigma {p.sigma:g}")


def _fold(a: tuple | None, b: tuple) -> tuple:
    """(shards, moments, sources, provenance) of shards a then b: each jackknife group merged exactly (Chan), in
    this order, as icrcli.stats.merged.merge_parts merges them (the total is merged from the groups at the end)."""
    if a is None:
        return b
    from icrcli.stats.moments import merge
    from icrcli.stats.score import Accumulated
    acc = Accumulated([merge(x, y) for x, y in zip(a[1].groups, b[1].groups)], None, a[1].n_skipped + b[1].n_skipped)
    return a[0] + b[0], acc, a[2] + b[2], a[3]


def _score_part(p, part: tuple, split: Split, sopts) -> dict:
    from icrcli.stats.merged import check_whole, merge_parts
    from icrcli.stats.score import check_views_differ, result_of
    shards, acc, sources, prov = part
    if shards != list(range(split.count)):
        raise UserError(f"sigma {p.sigma:g}: shards {shards} of {split.count} came back; run the same command "
                        "again.")
    acc = merge_parts([acc], f"sigma {p.sigma:g}")
    check_whole(acc.total.n, sopts, f"the {split.count} shards of sigma {p.sigma:g}")
    source = {**sources[0], "shape": [acc.total.n + acc.n_skipped, *sources[0]["shape"][1:]],
              "paths": [x["path"] for x in sources], "shards": split.count}
    check_views_differ(acc.total, None, f"sigma {p.sigma:g}", prov)
    return result_of(acc, sopts, source=source, provenance=prov)[0]


def shard_summary(extracted: dict[int, list[tuple]]) -> list[dict]:
    """--shard I/N: what this process extracted, one entry per level."""
    return [{"sigma": q.sigma, "features": str(path), "config_key": q.key, "n_images": len(q.indices),
             "shard": f"{q.config['shard']['index']}/{q.config['shard']['count']}"}
            for pairs in extracted.values() for q, path in pairs]


def checkpoint_share(found: list, split: Split) -> list:
    """Timeline: the checkpoints this process computes (rank r of W: r, r+W, ...; --shard I/N likewise)."""
    if split.ranks > 1:
        return found[dist.rank()::split.ranks]
    if split.shard.count > 1:
        return found[split.shard.index::split.shard.count]
    return found


@contextmanager
def checkpoint_progress(found: list, split: Split, reporter: Reporter):
    """Timeline: (the checkpoints this process computes, the reporter to compute them with, done() after each).
    Under torchrun one bar on rank 0 counts the whole job's checkpoints (icrcli.jobprogress); a rank's own bars,
    of one checkpoint's extraction and scoring, would be a share's, and are not shown. Otherwise each checkpoint
    shows its own bars."""
    mine = checkpoint_share(found, split)
    if split.ranks == 1:
        yield mine, reporter, lambda: None
        return
    from icrcli.jobprogress import job_progress
    with job_progress(reporter, "checkpoints", len(found), len(mine), split.ranks, unit="checkpoints",
                      count_inner=False) as rep:
        yield mine, rep, lambda: rep.add(1)


def gather_points(points: list[dict], split: Split) -> list[dict]:
    if split.ranks == 1:
        return points
    return [p for got in dist.all_gather(points, "gathering the timeline's points") for p in got]

