"""One extraction split into N shards: shard I takes the chunks I, I+N, I+2N, ... of the whole plan's rows.

A shard is a plan of its own (its rows, its key), so it is cached, resumed and shared between processes like any
extraction, and its file is a feature file of those rows. Whole chunks keep every image's batch the same as in the
unsplit run, and every (image, view) draws its augmentation and noise from its own seed (icrcli.data.rng), so a
shard's rows are the unsplit file's rows; their moments merge exactly (icrcli.stats.moments). The configuration of a
shard says which it is, of how many, and of which extraction ("shard": {index, count, of, n_images}), so a set of
shard files can be checked for a missing, duplicated or foreign member before it is merged.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from icrcli import cache
from icrcli.errors import UserError


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Shard(0, 1)


def parse_shard(text: str | None) -> Shard:
    """--shard I/N (0 <= I < N); None is the whole extraction."""
    if text is None:
        return WHOLE
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not int(m.group(2)) >= 1 or not int(m.group(1)) < int(m.group(2)):
        raise UserError(f"--shard {text}: expected I/N with 0 <= I < N, e.g. --shard 0/4 (the first of four; in a "
                        "Slurm array, --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT).")
    return Shard(int(m.group(1)), int(m.group(2)))


def shard_rows(n_images: int, chunk_images: int, shard: Shard) -> np.ndarray:
    """The rows of the whole extraction (0..n_images-1) that `shard` holds, ascending: its chunks' rows."""
    starts = np.arange(shard.index * chunk_images, n_images, shard.count * chunk_images)
    rows = (starts[:, None] + np.arange(chunk_images)[None, :]).ravel()
    return rows[rows < n_images]


def shard_plan(p, shard: Shard):
    """The plan of `shard` of plan p (p itself for the whole). Its key names p's key and the shard."""
    if shard.count == 1:
        return p
    n, step = len(p.indices), p.request.chunk_images
    rows = shard_rows(n, step, shard)
    if not len(rows):
        chunks = -(-n // step)
        raise UserError(f"--shard {shard}: the {n} images make {chunks} chunk(s) of --chunk-images {step}, so at "
                        f"most {chunks} shards hold any. Use fewer shards, or a smaller --chunk-images.")
    config = {**p.config, "shard": {"index": shard.index, "count": shard.count, "of": p.key, "n_images": n}}
    return dataclasses.replace(p, indices=p.indices[rows], config=config, key=cache.config_key(config))


def shard_of(config: dict | None) -> dict | None:
    """The "shard" entry of a feature file's configuration ({index, count, of, n_images}), or None."""
    s = (config or {}).get("shard")
    return s if isinstance(s, dict) and {"index", "count", "of", "n_images"} <= s.keys() else None
