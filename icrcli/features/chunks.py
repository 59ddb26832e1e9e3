"""The store of finished chunks of one extraction, which any number of processes fill together.

`OUT.parts/` holds config.json (the request's key) and one chunk-NNNNNN.npz per finished chunk of rows,
each written to a temp name of its writer, fsynced and renamed, so a killed process leaves only whole
chunks. A process claims a chunk before computing it: an OS lock on chunk-NNNNNN.lock (flock), which the
OS drops when its holder dies, so a killed worker's chunk is free again at once. Chunks are claimed in any
order; which process assembles the file is decided elsewhere (the last one to find every chunk finished).
Two processes that race on a claim at worst compute one chunk twice: the bytes are the same and the rename
atomic.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import filelock
import numpy as np

from icrcli.errors import UserError


def part_path(parts: Path, c: int) -> Path:
    return parts / f"chunk-{c:06d}.npz"


def _digest(arrays: list[np.ndarray]) -> bytes:
    """sha256 over each array's dtype, shape and bytes, in order: what a chunk's authentication code covers."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.digest()


def _chunk_mac(key: str, path: Path, arrays: list[np.ndarray]) -> str:
    from icrcli import seal
    return seal.mac("chunk", f"{key}/{path.name}", _digest(arrays))


def write_part(path: Path, feats: dict, index: np.ndarray, labels, key: str = "") -> None:
    """Save one chunk with its authentication code (icrcli.seal), so a chunk planted in the store is never
    assembled into a feature file."""
    # A temp name per writer and thread: two processes computing the same chunk never share one.
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    labels = labels if labels is not None else np.array([])
    mac = _chunk_mac(key, path, [index, labels, *feats.values()])
    try:
        with open(tmp, "wb") as f:
            np.savez(f, index=index, labels=labels, mac=np.array(mac),
                     **{f"f_{i}": v for i, v in enumerate(feats.values())})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"Writing {path} failed ({e.strerror}): is the disk full? The chunks finished so far are "
                        f"kept in {path.parent}; free some space and run the same command again to resume.") \
            from None


def _verified(path: Path, layers: list[str], key: str) -> list[np.ndarray] | None:
    """The chunk's arrays if its authentication code verifies, else None (planted, altered, made with another
    secret, unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = [z["index"], z["labels"], *[z[f"f_{i}"] for i in range(len(layers))]]
            from icrcli import seal
            ok = seal.verify("chunk", f"{key}/{path.name}", _digest(arrays), str(z["mac"]) if "mac" in z else None)
    except (OSError, ValueError, KeyError, EOFError):
        ok = False
    return arrays if ok else None


def read_part(path: Path, layers: list[str], key: str = "") -> dict:
    """One chunk, its authentication code checked: a chunk that fails (planted, altered, made with another secret,
    unreadable) is removed and a UserError says that running the same command again recomputes it. (A run checks
    the chunks it finds when it joins the store, ChunkStore.drop_unverified, so this is the last line.)"""
    arrays = _verified(path, layers, key)
    if arrays is None:
        path.unlink(missing_ok=True)
        raise UserError(f"{path} is not a chunk this user's icr wrote (its authentication code does not verify: "
                        "altered, or made with another secret); removed it. Run the same command again to compute it.")
    index, labels, *feats = arrays
    return {"index": index, "labels": labels if labels.size else None,
            "features": {name: f for name, f in zip(layers, feats)}}


class ChunkStore:
    """The chunks 0..n_chunks-1 of one request in `parts`. Thread-safe for one claimer thread and one
    writer thread (the runner claims ahead in its loader thread)."""

    def __init__(self, parts: Path, n_chunks: int):
        self.parts = Path(parts)
        self.n_chunks = n_chunks
        self.key = ""                   # the request's key (set by open): part of each chunk's code
        self._held: dict[int, filelock.BaseFileLock] = {}
        self._mutex = threading.Lock()

    @property
    def meta(self) -> Path:
        return self.parts / "config.json"

    def open(self, config: dict, key: str, overwrite: bool) -> None:
        """Join (or start) the store of request `key`. A store of another request is an error unless
        overwrite, which discards it (and so does overwrite for this request: start from scratch)."""
        self.key = key
        if self.parts.exists() and self.meta.exists():
            try:
                old = json.loads(self.meta.read_text())
            except (OSError, ValueError):
                old = {}
            if old.get("key") == key and not overwrite:
                return
            if not overwrite:
                raise UserError(f"{self.parts} holds an unfinished extraction with a different configuration. "
                                "Re-run that command to finish it, choose another -o, or pass --overwrite to "
                                "discard it.")
        if self.parts.exists():
            shutil.rmtree(self.parts)
        self.parts.mkdir(parents=True, exist_ok=True)
        tmp = self.parts / f"config.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"key": key, "config": config}, indent=1, default=str))
        os.replace(tmp, self.meta)

    def drop_unverified(self, layers: list[str], warn=None) -> int:
        """Remove the finished chunks whose authentication code does not verify, each said through warn, so this
        run computes them again. Returns how many went."""
        bad = 0
        for c in self.finished():
            if _verified(self.path(c), layers, self.key) is None:
                self.path(c).unlink(missing_ok=True)
                bad += 1
                if warn is not None:
                    warn(f"{self.path(c)} is not a chunk this user's icr wrote (its authentication code does not "
                         "verify: altered, or made with another secret); removed it and computing it again")
        return bad

    def alive(self) -> bool:
        """False once the store is gone (another process assembled the file and removed it)."""
        return self.meta.exists()

    def path(self, c: int) -> Path:
        return part_path(self.parts, c)

    def done(self, c: int) -> bool:
        return self.path(c).exists()

    def finished(self) -> list[int]:
        return [c for c in range(self.n_chunks) if self.done(c)]

    def prefix(self) -> list[int]:
        """The finished chunks 0..j-1 before the first missing one (what a partial file can hold)."""
        out = []
        for c in range(self.n_chunks):
            if not self.done(c):
                break
            out.append(c)
        return out

    def complete(self) -> bool:
        return all(self.done(c) for c in range(self.n_chunks))

    def held(self) -> list[int]:
        with self._mutex:
            return sorted(self._held)

    def claim(self, c: int) -> bool:
        """Take chunk c for this process if it is unfinished and nobody holds it; never blocks."""
        with self._mutex:
            if c in self._held or self.done(c) or not self.alive():
                return False
        lock = filelock.FileLock(self.parts / f"chunk-{c:06d}.lock", thread_local=False)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return False
        except OSError:          # the store was removed under us (assembled by another process)
            return False
        if self.done(c):         # finished between our check and the lock
            self._release(c, lock)
            return False
        with self._mutex:
            self._held[c] = lock
        return True

    def write(self, c: int, feats: dict, index: np.ndarray, labels) -> None:
        """Save chunk c (claimed by us) and release its claim."""
        write_part(self.path(c), feats, index, labels, self.key)
        self.release(c)

    def release(self, c: int) -> None:
        with self._mutex:
            lock = self._held.pop(c, None)
        if lock is not None:
            self._release(c, lock)

    def release_all(self) -> None:
        for c in self.held():
            self.release(c)

    def _release(self, c: int, lock) -> None:
        # Removed while held: a process that opened the old file meanwhile may also take the chunk, which
        # costs a duplicate computation of the same bytes, never a wrong file.
        (self.parts / f"chunk-{c:06d}.lock").unlink(missing_ok=True)
        lock.release()

    def read(self, c: int, layers: list[str]) -> dict:
        return read_part(self.path(c), layers, self.key)

    def remove(self) -> None:
        shutil.rmtree(self.parts, ignore_errors=True)
