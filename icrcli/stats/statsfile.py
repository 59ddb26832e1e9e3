"""The sufficient statistics of a score on disk (`icr score --stats-out`, read by `icr merge`).

An .npz of float64 arrays, one row per jackknife group (one group without --ci): n (G,), mean_s (G, D),
m2_s (G, D, D), w_xi (G, D, D), and `meta`, a JSON string saying what they are the statistics of (the extraction's
key, which of its shards, the inputs' hashes, the provenance). Read with allow_pickle=False: loading one runs no
code. A few MB for D = 512: computed where the features are, merged anywhere (icrcli.stats.merged).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from icrcli.errors import UserError
from icrcli.stats.moments import ViewMoments

FORMAT = "icr-stats"
FORMAT_VERSION = 1


def write_stats(path: str | Path, groups: list[ViewMoments], meta: dict) -> None:
    from icrcli.cache import atomic_write
    arrays = {"n": np.array([g.n for g in groups], dtype=np.int64),
              "mean_s": np.stack([g.mean_s for g in groups]).astype(np.float64),
              "m2_s": np.stack([g.m2_s for g in groups]).astype(np.float64),
              "w_xi": np.stack([g.w_xi for g in groups]).astype(np.float64)}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta, sort_keys=True, default=str)), **arrays)


def read_stats(path: str | Path) -> tuple[list[ViewMoments], dict]:
    """(groups, meta) of a statistics file; anything else is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file. Pass the statistics files written by `icr score --stats-out`.")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            n, mean, m2, w = (z[k] for k in ("n", "mean_s", "m2_s", "w_xi"))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        raise UserError(f"{path} is not a statistics file written by `icr score --stats-out` (or it is damaged: "
                        "copy it again, or write it again).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} is not a statistics file of this icr (format {FORMAT} version {FORMAT_VERSION}); "
                        "write it again with `icr score --stats-out`.")
    g, d = mean.shape
    if n.shape != (g,) or m2.shape != (g, d, d) or w.shape != (g, d, d) or d != meta.get("dim"):
        raise UserError(f"{path}: its arrays do not have the shapes its header says (damaged?). Write it again "
                        "with `icr score --stats-out`.")
    k = int(meta["n_views"])
    return [ViewMoments(int(n[j]), k, mean[j], m2[j], w[j]) for j in range(g)], meta
