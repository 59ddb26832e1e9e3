"""The resumable store of finished chunks: `OUT.parts/` holds config.json and one chunk-NNNNNN.npz per chunk
of rows, each written to a temp name, fsynced and renamed, so a killed run leaves only whole chunks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from icrcli.errors import UserError


def part_path(parts: Path, c: int) -> Path:
    return parts / f"chunk-{c:06d}.npz"


def write_part(path: Path, feats: dict, index: np.ndarray, labels) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, index=index, labels=labels if labels is not None else np.array([]),
                     **{f"f_{i}": v for i, v in enumerate(feats.values())})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"Writing {path} failed ({e.strerror}): is the disk full? The chunks finished so far are "
                        f"kept in {path.parent}; free some space and run the same command again to resume.") \
            from None


def read_part(path: Path, layers: list[str]) -> dict:
    with np.load(path) as z:
        labels = z["labels"] if z["labels"].size else None
        return {"index": z["index"], "labels": labels,
                "features": {name: z[f"f_{i}"] for i, name in enumerate(layers)}}


def done_chunks(parts: Path, n_chunks: int) -> list[int]:
    done = []
    for c in range(n_chunks):
        if not part_path(parts, c).exists():
            break
        done.append(c)
    return done


def prepare(parts: Path, config: dict, key: str, overwrite: bool) -> None:
    meta = parts / "config.json"
    if parts.exists() and meta.exists():
        old = json.loads(meta.read_text())
        if old.get("key") == key and not overwrite:
            return
        if not overwrite:
            raise UserError(f"{parts} holds an unfinished extraction with a different configuration. Re-run "
                            "that command to finish it, choose another -o, or pass --overwrite to discard it.")
    if parts.exists():
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    meta.write_text(json.dumps({"key": key, "config": config}, indent=1, default=str))
