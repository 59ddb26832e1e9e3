"""What the cache holds, and removing it safely while other icr runs use it (`icr cache info` and `clear`).

Kinds are the cache's sub-folders (layout in icrcli.cache): features, scores, sweeps, timeline-points, samples,
and the hash memo (hashes). Only names icr itself makes are ever listed or removed, so a mistaken
ICR_CACHE_DIR=~ loses nothing else.

Never removed, whatever the age asked for:
- a feature entry whose lock (<key>.h5.lock) another process holds: we take that lock ourselves (never
  waiting) and hold it while removing, so no extraction can start on the entry meanwhile;
- an extraction's chunk folder (<key>.h5.parts) with a claimed chunk (a held chunk-N.lock), or with anything
  written in the last BUSY_S seconds (a worker between two claims);
- a temp file (.<key>.tmp-*, chunk-N.npz.<pid>-<tid>.tmp) touched in the last STALE_TMP_S seconds: someone is
  writing it; older ones lost their writer (a crash) and are removed;
- a samples folder being extended (a fresh temp file inside, or written in the last BUSY_S seconds).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from icrcli import cache
from icrcli.errors import UserError

SCHEMA = 1
KINDS = {
    "features": "feature files (icr extract; every sweep level and timeline point)",
    "scores": "icr score results",
    "sweeps": "finished sweeps",
    "timeline-points": "timeline points",
    "samples": "memorization samples",
    "hashes": "the memo of file hashes (hashes.sqlite)",
}
STALE_TMP_S = 24 * 3600     # a temp file untouched this long has no writer left
BUSY_S = 120                # a chunk or samples folder written this recently may be between two locked steps

_KEY = r"[0-9a-f]{8,128}"
_PATTERNS = [  # (what, regex on a name inside a shard folder <kind>/<xx>/)
    ("entry", re.compile(rf"(?P<key>{_KEY})\.(?:h5|json)")),
    ("entry", re.compile(rf"(?P<key>{_KEY})\.samples")),
    ("parts", re.compile(rf"(?P<key>{_KEY})\.h5\.parts")),
    ("temp", re.compile(rf"\.(?P<key>{_KEY})\.tmp-.*")),
    ("lock", re.compile(rf"(?P<key>{_KEY})\.h5\.lock")),
    ("mac", re.compile(rf"(?P<key>{_KEY})\.h5\.mac")),       # a feature entry's authentication code
]
_SHARD = re.compile(r"[0-9a-f]{2}")
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNIT_S = {"": 86400, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class Item:
    """One thing in the cache: a finished entry, an extraction's chunk folder, a temp file, or a lock file."""
    kind: str
    key: str
    what: str           # entry | parts | temp | lock | mac
    path: Path
    size: int           # bytes (a folder: its files together)
    mtime: float        # last written (a folder: its newest file)


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '45s', '2w' (a bare number is days) -> seconds."""
    m = _AGE.fullmatch(text.strip().lower())
    if not m:
        raise UserError(f"--older-than {text!r}: expected a number and a unit, e.g. 30d, 12h, 90m, 2w.")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def check_kinds(kinds: list[str] | None) -> list[str]:
    bad = [k for k in kinds or [] if k not in KINDS]
    if bad:
        raise UserError(f"--kind {bad[0]!r}: expected one of {', '.join(KINDS)}.")
    return list(kinds) if kinds else list(KINDS)


def items(kind: str) -> list[Item]:
    """Everything of one kind (not hashes) in the cache, in name order."""
    root = cache.cache_dir() / kind
    out = []
    # Links are never followed (icr makes none): a linked kind or shard folder, or a linked entry, may lead out of
    # the cache, and a dangling one leads nowhere. They are left as they are.
    for shard in sorted(root.iterdir()) if root.is_dir() and not root.is_symlink() else []:
        if not (_SHARD.fullmatch(shard.name) and shard.is_dir() and not shard.is_symlink()):
            continue
        for p in sorted(shard.iterdir()):
            if p.is_symlink():
                continue
            for what, pat in _PATTERNS:
                m = pat.fullmatch(p.name)
                if m:
                    size, mtime = _measure(p)
                    out.append(Item(kind, m.group("key"), what, p, size, mtime))
                    break
    return out


def _measure(p: Path) -> tuple[int, float]:
    try:
        st = p.lstat()
    except OSError:
        return 0, 0.0
    if not p.is_dir():
        return st.st_size, st.st_mtime
    size, mtime = 0, st.st_mtime
    for dirpath, _, files in os.walk(p):
        for f in files:
            try:
                s = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            size, mtime = size + s.st_size, max(mtime, s.st_mtime)
    return size, mtime


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------- info
def info() -> dict:
    """Entries by kind: how many, their bytes, the oldest and newest, and how many are being made."""
    kinds = {}
    for kind, desc in KINDS.items():
        if kind == "hashes":
            kinds[kind] = _memo_info(desc)
            continue
        its = items(kind)
        done = [i for i in its if i.what == "entry"]
        times = [i.mtime for i in done]
        kinds[kind] = {"description": desc, "entries": len(done), "bytes": sum(i.size for i in its),
                       "in_progress": sum(i.what in ("parts", "temp") for i in its),
                       "oldest": _iso(min(times) if times else None), "newest": _iso(max(times) if times else None)}
    return {"schema": SCHEMA, "cache_dir": str(cache.cache_dir()), "kinds": kinds,
            "total_bytes": sum(k["bytes"] for k in kinds.values())}


def _memo_path() -> Path:
    return cache.cache_dir() / cache.MEMO_NAME


def _is_our_memo(path: Path, db: sqlite3.Connection) -> bool:
    """The memo icr made (its application_id, its one table), not a link to or a file of anything else."""
    return (not path.is_symlink() and db.execute("PRAGMA application_id").fetchone()[0] == cache.MEMO_APP_ID
            and cache.is_memo_table(db))


def _memo_info(desc: str) -> dict:
    path = _memo_path()
    rows, size, mtime = 0, 0, None
    if path.exists() and not path.is_symlink():
        size, mtime = path.stat().st_size, path.stat().st_mtime
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                rows = db.execute("SELECT COUNT(*) FROM hashes").fetchone()[0] if _is_our_memo(path, db) else 0
            finally:
                db.close()
        except sqlite3.Error:
            rows = 0
    return {"description": desc, "entries": rows, "bytes": size, "in_progress": 0, "oldest": None,
            "newest": _iso(mtime)}


# ---------------------------------------------------------------------------------------------- clear
def clear(kinds: list[str] | None = None, older_than_s: float | None = None, dry_run: bool = False) -> dict:
    """Remove the entries of `kinds` (default all) last written more than `older_than_s` seconds ago (default:
    all), except those in use (module docstring). The memo of hashes has no ages: it is emptied only without
    older_than_s. Returns what was removed and what was kept because it is in use."""
    kinds = check_kinds(kinds)
    now = time.time()
    removed = {k: {"entries": 0, "bytes": 0} for k in kinds}
    in_use = {k: 0 for k in kinds}
    for kind in kinds:
        if kind == "hashes":
            if older_than_s is None:
                removed[kind]["entries"] = _memo_clear(dry_run)
            continue
        by_key: dict[str, list[Item]] = {}
        for it in items(kind):
            by_key.setdefault(it.key, []).append(it)
        for key, its in by_key.items():
            gone, busy = _clear_key(its, now, older_than_s, dry_run)
            for it in gone:
                removed[kind]["entries"] += it.what == "entry"
                removed[kind]["bytes"] += it.size
            in_use[kind] += busy
    return {"schema": SCHEMA, "cache_dir": str(cache.cache_dir()), "dry_run": dry_run, "kinds": kinds,
            "older_than_s": older_than_s, "removed": removed, "kept_in_use": in_use}


def _clear_key(its: list[Item], now: float, older_than_s: float | None, dry_run: bool) -> tuple[list[Item], int]:
    """Remove one key's items that are old enough and free. Returns (removed, how many were kept as in use)."""
    old = [i for i in its if i.what != "lock" and (older_than_s is None or now - i.mtime > older_than_s)]
    if not old:
        return [], 0
    entry_lock = next((i.path for i in its if i.what == "lock"), None)
    if its[0].kind == "features":
        target = old[0].path.parent / f"{its[0].key}.h5"
        if dry_run:
            if entry_lock is not None and _held(entry_lock):
                return [], len(old)
            return _removable(old, now, dry_run=True)
        try:
            with cache.exclusive(target, timeout=0):   # no extraction starts or finishes on it meanwhile
                return _removable(old, now, dry_run=False)
        except UserError:                               # held by a running extraction (or not lockable)
            return [], len(old)
    return _removable(old, now, dry_run)


def _removable(old: list[Item], now: float, dry_run: bool) -> tuple[list[Item], int]:
    gone, busy = [], 0
    for it in old:
        if it.what == "temp" and now - it.mtime < STALE_TMP_S:
            busy += 1
        elif it.what == "parts" and not _remove_parts(it, now, dry_run):
            busy += 1
        elif it.path.is_dir() and it.what == "entry" and _folder_busy(it, now):
            busy += 1
        else:
            if not dry_run and it.what != "parts":
                _remove(it.path)
            gone.append(it)
    return gone, busy


def _folder_busy(it: Item, now: float) -> bool:
    """A samples folder being extended: written very recently, or holding a temp file that is not stale."""
    if now - it.mtime < BUSY_S:
        return True
    return any(now - p.stat().st_mtime < STALE_TMP_S for p in it.path.glob(".*.tmp-*"))


def _remove_parts(it: Item, now: float, dry_run: bool) -> bool:
    """Remove an extraction's chunk folder if no chunk is claimed and nothing was written lately: True if removed
    (or, dry run, removable). The claims are held by us while removing, so none is taken meanwhile."""
    if now - it.mtime < BUSY_S:
        return False
    fds = _hold_all(sorted(it.path.glob("chunk-*.lock")))
    if fds is None:
        return False
    try:
        if not dry_run:
            shutil.rmtree(it.path, ignore_errors=True)
    finally:
        for fd in fds:
            os.close(fd)
    return True


def _remove(p: Path) -> None:
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    except OSError:
        pass                    # e.g. open elsewhere on Windows: left for a later clear


def _held(lock: Path) -> bool:
    """Whether another process holds the flock of this lock file (checked without waiting)."""
    fds = _hold_all([lock])
    if fds is None:
        return True
    for fd in fds:
        os.close(fd)
    return False


def _hold_all(locks: list[Path]) -> list[int] | None:
    """Open descriptors holding the flock of each lock file, or None (nothing held) if any is held elsewhere.
    Where flock does not exist, a lock file's presence counts as held."""
    try:
        import fcntl
    except ImportError:
        return None if locks else []
    fds: list[int] = []
    try:
        for lock in locks:
            try:
                fd = os.open(lock, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                continue            # released (and removed) meanwhile
            fds.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        for fd in fds:
            os.close(fd)
        return None
    return fds


def _memo_clear(dry_run: bool) -> int:
    """Empty the hash memo (rows, not the file: other processes may have it open). Returns the rows removed."""
    path = _memo_path()
    if not path.exists() or path.is_symlink():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=cache._SQLITE_TIMEOUT_S, isolation_level=None)
        try:
            if not _is_our_memo(path, db):
                return 0            # another program's hashes.sqlite: not ours to empty
            n = db.execute("SELECT COUNT(*) FROM hashes").fetchone()[0]
            if not dry_run:
                db.execute("DELETE FROM hashes")
            return n
        finally:
            db.close()
    except sqlite3.Error:
        return 0
