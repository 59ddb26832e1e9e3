"""The content-addressed cache: `icr extract` without -o writes here; `sweep` and `timeline` find it again.

Layout under cache_dir():
  hashes.sqlite                      memo: (resolved path, size, mtime_ns, inode, ctime_ns) -> sha256
  features/<key[:2]>/<key>.h5        one finished entry per request key (config_key of everything that
                                     shapes the output: input hashes, model, layer, sigmas, views, version)
  features/<key[:2]>/<key>.h5.lock   inter-process lock, present only while the entry is being made
  features/<key[:2]>/.<key>.tmp-*.h5 an entry being written; renamed over <key>.h5 only when complete

  features/<key[:2]>/<key>.h5.parts/ the finished chunks of an extraction in progress (icrcli.features.chunks)
  features/<key[:2]>/<key>.h5.mac    the entry's authentication code (icrcli.seal), over the file's sha256
  scores/<key[:2]>/<key>.json        one `icr score` result (icrcli.stats.scorecache)
  sweeps/, timeline-points/          scan records (icrcli.scans.records); samples/: memorization samples

Every entry carries an authentication code made with a secret kept outside this folder (icrcli.seal): one that
does not verify is removed and recomputed, never believed.
An entry exists only once complete (atomic_write), so a reader that finds the file can use it without a lock.
Listing and clearing the entries: icrcli.cli.cache_admin (`icr cache`).
Files are created with the user's umask (as `open` would), so teammates can read shared results.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Callable, Iterator, NamedTuple

import platformdirs

from icrcli.errors import UserError

ENV_VAR = "ICR_CACHE_DIR"
MEMO_NAME = "hashes.sqlite"
_CHUNK_BYTES = 4 << 20          # streaming read size: big enough for full disk throughput, small in memory
_RACY_NS = 2_000_000_000        # coarse filesystems (FAT, HFS+, some NFS) keep mtime to 1-2 s
_MEMO_BATCH = 256               # rows per memo write: progress survives an interrupt, few transactions
_SQLITE_TIMEOUT_S = 30.0        # wait this long for another process's memo write before giving up on the memo
_HEX_KEY = re.compile(r"[0-9a-f]{8,128}")
_LOCK_POLL_S = (0.05, 0.5)      # first and longest pause between tries for a lock another process holds


_scratch: list[Path] = []        # the innermost scratch() folder, which replaces the cache while it lasts


# ---------------------------------------------------------------------------------------------- location
def cache_dir() -> Path:
    """$ICR_CACHE_DIR if set, else the per-user cache dir (e.g. ~/.cache/icr); created on demand. Inside
    scratch(), a temporary folder instead."""
    if _scratch:
        return _scratch[-1]
    env = os.environ.get(ENV_VAR, "").strip()
    where = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("icr", appauthor=False))
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unusable(where, e) from None
    if not os.access(where, os.W_OK | os.X_OK):
        raise _unusable(where, "permission denied")
    return where


@contextmanager
def scratch() -> Iterator[Path]:
    """--no-cache: for the with-block the cache is a new temporary folder (under $TMPDIR), removed at the end.
    Nothing is looked up in the real cache and nothing is left in it (not even file hashes), while the code
    that needs a place for its intermediate files (a sweep's levels, samples) runs unchanged."""
    import shutil
    folder = Path(tempfile.mkdtemp(prefix="icr-no-cache-"))
    _scratch.append(folder)
    try:
        yield folder
    finally:
        _scratch.remove(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _unusable(where: Path, why) -> UserError:
    return UserError(f"cannot use the cache directory {where} ({why}). Set the environment variable "
                     f"{ENV_VAR} to a writable directory, or pass -o/--output to write the result elsewhere.")


def cached_path(key: str, suffix: str = ".h5", kind: str = "features") -> Path:
    """<cache>/<kind>/<key[:2]>/<key><suffix>; the parent folder is created. Two hex digits fan out the
    entries so no single folder grows huge."""
    if not _HEX_KEY.fullmatch(key):
        raise ValueError(f"cache key must be lowercase hex (from config_key), got {key!r}")
    folder = cache_dir() / kind / key[:2]
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}{suffix}"


# ---------------------------------------------------------------------------------------------- keys
def config_key(parts: dict) -> str:
    """sha256 hex of the canonical JSON of `parts`: keys sorted, no whitespace, floats as repr (exact,
    shortest round-trip). Numerically equal numbers give one key (1 == 1.0, 0.0 == -0.0); so do tuples
    and lists, and a Path and its POSIX string. NaN/inf and unknown types are refused (TypeError/ValueError),
    since a key that silently ignores part of a config would hand back the wrong cached result."""
    text = json.dumps(_canonical(parts), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def short(key: str, n: int = 16) -> str:
    """The first n hex digits of a key, for file names a person reads (64 bits: collisions are negligible)."""
    return key[:n]


def _canonical(x):
    """A JSON-ready copy of x with one spelling per value."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return int(x)                   # int subclasses (IntEnum) as plain ints
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"config_key: {x!r} is not a finite number")
        # Integral floats as ints below 2**53, where the conversion is exact: 1.0 and 1 mean the same setting.
        return int(x) if x.is_integer() and abs(x) < 2 ** 53 else x
    if isinstance(x, PurePath):
        return x.as_posix()
    if isinstance(x, dict):
        bad = [k for k in x if not isinstance(k, str)]
        if bad:
            raise TypeError(f"config_key: dict keys must be str, got {bad[0]!r}")
        return {k: _canonical(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_canonical(v) for v in x]
    if hasattr(x, "tolist") and hasattr(x, "dtype"):   # numpy scalars and arrays, without importing numpy
        return _canonical(x.tolist())
    raise TypeError(f"config_key: cannot canonicalize {type(x).__name__} value {x!r}")


# ---------------------------------------------------------------------------------------------- hashing
class _Stamp(NamedTuple):
    """What must be unchanged for a remembered hash to still hold. The inode catches a file replaced by one
    with the same size and a preserved mtime (cp -p, rsync -a); the POSIX ctime, which no tool can set back,
    catches an edit in place whose mtime was restored (on Windows ctime is the creation time: left out)."""
    path: str
    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int

    @classmethod
    def of(cls, path: str, st: os.stat_result) -> "_Stamp":
        return cls(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns if os.name == "posix" else 0)


def _stamp(path: Path) -> _Stamp:
    try:
        resolved = Path(path).resolve(strict=True)
        st = resolved.stat()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}. Check the path and its permissions.") from None
    if not resolved.is_file():
        raise UserError(f"{path} is not a regular file; pass files (a folder's files for tree_sha256).")
    return _Stamp.of(str(resolved), st)


def _hash_file(path: str) -> str:
    """sha256 hex of a file's contents, read in _CHUNK_BYTES pieces into one reused buffer."""
    h = hashlib.sha256()
    buf = bytearray(_CHUNK_BYTES)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


class _Memo:
    """The hash memo in <cache>/hashes.sqlite. Only a speed-up: if SQLite fails (read-only disk, a corrupt
    file, a lock held past the timeout) lookups miss and writes are dropped, and hashing still works.

    Autocommit mode: every statement is its own transaction, so a read never has to upgrade to a write
    lock (the case in which SQLite returns "database is locked" at once, without waiting for the timeout)."""

    def __init__(self, folder: Path):
        self.db = None
        if (folder / MEMO_NAME).is_symlink():
            return                      # not ours: icr makes no links
        try:
            self.db = sqlite3.connect(folder / MEMO_NAME, timeout=_SQLITE_TIMEOUT_S, isolation_level=None)
            if not claim_memo(self.db):
                self.close()
        except sqlite3.Error:
            self.close()

    def get(self, s: _Stamp) -> str | None:
        if self.db is None:
            return None
        try:
            row = self.db.execute("SELECT size, mtime_ns, ino, ctime_ns, sha256 FROM hashes WHERE path = ?",
                                  (s.path,)).fetchone()
        except sqlite3.Error:
            return None
        return row[4] if row and tuple(row[:4]) == s[1:] else None

    def put(self, rows: list[tuple[_Stamp, str]]) -> None:
        if self.db is None or not rows:
            return
        try:
            with self.db:   # one transaction for the batch
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?)",
                                    [(*s, h) for s, h in rows])
        except sqlite3.Error:
            pass

    def close(self) -> None:
        if getattr(self, "db", None) is not None:
            self.db.close()
        self.db = None


MEMO_APP_ID = 0x69637231       # "icr1": SQLite's application_id of icr's memo, so a foreign hashes.sqlite is left alone
_MEMO_SCHEMA = ("CREATE TABLE hashes (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, "
                "ino INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL)")


def claim_memo(db: sqlite3.Connection) -> bool:
    """Whether `db` is icr's memo (made so if it is a new, empty database; an older icr's, with its one table
    exactly, is marked as ours). A database of anything else is never written."""
    app = db.execute("PRAGMA application_id").fetchone()[0]
    if app == MEMO_APP_ID:
        return True
    if app != 0:
        return False
    names = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master").fetchall())
    if not names:
        db.execute(_MEMO_SCHEMA)
    elif names != ["hashes", "sqlite_autoindex_hashes_1"] or not is_memo_table(db):
        return False
    db.execute(f"PRAGMA application_id = {MEMO_APP_ID}")
    return True


def is_memo_table(db: sqlite3.Connection) -> bool:
    cols = [(r[1], r[2]) for r in db.execute("PRAGMA table_info(hashes)").fetchall()]
    return cols == [("path", "TEXT"), ("size", "INTEGER"), ("mtime_ns", "INTEGER"), ("ino", "INTEGER"),
                    ("ctime_ns", "INTEGER"), ("sha256", "TEXT")]


def _settled(s: _Stamp, started_ns: int) -> bool:
    """Safe to remember: unchanged while we read it, and last written well before we started, so any later
    write gets a later mtime even on a filesystem with coarse timestamps ("racy git" problem)."""
    try:
        st = os.stat(s.path)
    except OSError:
        return False
    return _Stamp.of(s.path, st) == s and s.mtime_ns < started_ns - _RACY_NS


def _hashes(paths: list[Path]) -> list[str]:
    """sha256 hex of each file, in order, using and filling the memo (each distinct file read at most once)."""
    stamps = [_stamp(p) for p in paths]
    known: dict[str, str] = {}
    memo = _Memo(cache_dir())
    try:
        fresh: list[tuple[_Stamp, str]] = []
        for s in stamps:
            if s.path in known:
                continue
            digest = memo.get(s)
            if digest is None:
                started = time.time_ns()
                digest = _hash_file(s.path)
                if _settled(s, started):
                    fresh.append((s, digest))
                if len(fresh) >= _MEMO_BATCH:
                    memo.put(fresh)
                    fresh = []
            known[s.path] = digest
        memo.put(fresh)
    finally:
        memo.close()
    return [known[s.path] for s in stamps]


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex of a file's contents; remembered by (resolved path, size, mtime_ns, inode, ctime_ns), so
    an unchanged file is read once. A change to any of these reads it again."""
    return _hashes([Path(path)])[0]


def tree_sha256(paths: list[Path], root: str | os.PathLike | None = None) -> str:
    """sha256 hex of a set of files: their names relative to `root` (default: the deepest folder holding
    them all) and their contents' hashes. Listing order and duplicates do not matter; renaming, moving
    within the tree, adding, removing or editing a file does. Moving the whole tree elsewhere does not.
    Names are taken as given (symlinks not followed), contents through any symlink."""
    if not paths:
        raise ValueError("tree_sha256 needs at least one file")
    names = [Path(os.path.abspath(p)) for p in paths]
    if root is None:
        base = Path(os.path.commonpath([n.parent for n in names]))
    else:
        base = Path(os.path.abspath(root))
    try:
        rel = [n.relative_to(base).as_posix() for n in names]
    except ValueError:
        raise ValueError(f"tree_sha256: every file must lie under root {base}") from None
    entries = sorted(dict(zip(rel, _hashes(names))).items())
    # JSON, not "hash  name" lines: a file name may itself hold a newline.
    text = json.dumps(["icr-tree-v1", entries], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_sha256(path: str | os.PathLike, hash_file: Callable[[Path], str] | None = None) -> str:
    """A file's sha256 (by `hash_file`, default the memoised file_sha256), or a folder's (a diffusers model, a
    VAE): the tree hash of every file in it."""
    p = Path(path)
    if p.is_dir():
        return tree_sha256(sorted(f for f in p.rglob("*") if f.is_file()))
    return (hash_file or file_sha256)(p)


# ---------------------------------------------------------------------------------------------- writing
@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success it is flushed to disk and renamed over `path`
    (os.replace: atomic on one filesystem), on any exception or interrupt it is removed. So `path` is
    either absent, its old version, or complete. The temp name keeps the suffix, since some writers
    (np.save) append one that is missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.tmp-", suffix=path.suffix)
    tmp = Path(tmp_name)
    try:
        _chmod_as_created(fd)
    finally:
        os.close(fd)
    try:
        yield tmp
        _fsync(tmp)     # data on disk before the rename makes it visible, so a crash cannot expose a stub
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux: /proc/self/status), since
    os.umask's set-and-restore would race with files being created in other threads."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _chmod_as_created(fd: int) -> None:
    """mkstemp makes files 0600; give the file the mode open() would have given it (0666 less the umask)."""
    if os.name == "posix":
        os.fchmod(fd, 0o666 & ~umask())


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX; folders cannot be opened this way on Windows)."""
    if os.name == "posix":
        _fsync(folder)


# ---------------------------------------------------------------------------------------------- JSON entries
# An entry file is one line of header, {"key": KEY, "mac": HMAC}, then the value's JSON. The code (icrcli.seal) is
# made over the value's exact bytes, so it is checked before the value is even parsed.
def entry_path(kind: str, key: str) -> Path:
    return cached_path(key, ".json", kind=kind)


def read_entry(kind: str, key: str, valid: Callable[[object], bool] = lambda v: True) -> tuple[object, str | None]:
    """(the value stored under `key` in <cache>/<kind>/, or None; a note when the entry was refused). An entry that
    is damaged (not ours, another key's, a value `valid` refuses) or whose authentication code does not verify
    (edited, or made with another secret) is removed, so the caller recomputes it."""
    from icrcli import seal
    path = entry_path(kind, key)
    if not path.exists():
        return None, None
    why = "was damaged"
    try:
        raw = path.read_bytes()
        head, _, body = raw.partition(b"\n")
        header = json.loads(head)
        if isinstance(header, dict) and header.get("key") == key:
            if seal.verify(kind, key, body, header.get("mac")):
                value = json.loads(body)
                if valid(value):
                    return value, None
            else:
                why = ("does not carry a valid authentication code (it was edited, or made by another user or with "
                       "another $ICR_CACHE_SECRET)")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        pass
    path.unlink(missing_ok=True)
    return None, f"the cached {kind} entry {path} {why}; removed it and recomputing"


def write_entry(kind: str, key: str, value) -> bool:
    """Store `value` under `key` (atomically), with its authentication code. NaN is kept (allow_nan) and nothing
    is converted, so what is read back equals what was stored; a value JSON cannot hold exactly is not stored
    (False)."""
    from icrcli import seal
    try:
        body = json.dumps(value).encode("utf-8")
    except (TypeError, ValueError):
        return False
    head = json.dumps({"key": key, "mac": seal.mac(kind, key, body)}).encode("utf-8")
    with atomic_write(entry_path(kind, key)) as tmp:
        tmp.write_bytes(head + b"\n" + body)
    return True


# ---------------------------------------------------------------------------------------------- sealed files
# A feature file in the cache: its code is over the sha256 of its bytes (the hash memo spares a re-read of an
# unchanged file; the memo keys on inode and ctime, which no edit can restore), kept beside it in <entry>.mac.
def mac_path(path: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(path)}.mac")


def seal_file(content: str | os.PathLike, entry: str | os.PathLike, key: str, kind: str = "features") -> None:
    """Write the authentication code of the entry `entry` (made under `key`), whose bytes are now in `content`:
    the temp file about to be renamed over it, so no reader ever finds the entry without its code."""
    from icrcli import seal
    code = seal.mac(kind, key, bytes.fromhex(file_sha256(content)))
    with atomic_write(mac_path(entry)) as tmp:
        tmp.write_text(code)


def check_file(path: str | os.PathLike, key: str, kind: str = "features") -> str | None:
    """None if the entry file `path` carries a valid code; else a note, after removing it and its code (the
    caller makes it again)."""
    from icrcli import seal
    try:
        code = mac_path(path).read_text().strip()
        ok = seal.verify(kind, key, bytes.fromhex(file_sha256(path)), code)
    except (OSError, UnicodeDecodeError, ValueError, UserError):
        ok = False
    if ok:
        return None
    Path(path).unlink(missing_ok=True)
    mac_path(path).unlink(missing_ok=True)
    return (f"the cached {kind} entry {path} does not carry a valid authentication code (it was edited, or made by "
            "another user or with another $ICR_CACHE_SECRET); removed it and recomputing")


# ---------------------------------------------------------------------------------------------- locking
@contextmanager
def exclusive(path: str | os.PathLike, timeout: float | None = None,
              on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the inter-process lock of one cache entry (the file `path`.lock) for the with-block.

    If another process holds it, on_wait() is called once (e.g. to say "waiting for another icr run"),
    then we wait up to `timeout` seconds (None: for as long as it takes). The OS drops the lock when its
    holder dies, so a crashed run never blocks later ones. The .lock file is removed on release (a crashed
    run leaves it behind, harmlessly). A lock file that cannot be created is a UserError at once, never a wait.
    """
    lock_path = Path(f"{os.fspath(path)}.lock")
    if os.name != "posix":
        yield from _exclusive_portable(path, lock_path, timeout, on_wait)
        return
    fd = _acquire(path, lock_path, timeout, on_wait)
    try:
        yield
    finally:
        _release(lock_path, fd)


def _acquire(path, lock_path: Path, timeout: float | None, on_wait) -> int:
    """An open descriptor of `lock_path` holding its flock, and still the file at that path.

    Removing the file on release is safe because the holder removes it while still locked, and a process
    that locked a file which was removed meanwhile (it opened the old file before the removal) sees that
    the path now names another file or none, and tries again on the new one."""
    import fcntl
    deadline = None if timeout is None else time.monotonic() + timeout
    waited, pause = False, _LOCK_POLL_S[0]
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as e:
            raise _no_lock(path, lock_path, e) from None
        try:
            while not _try_flock(fd, fcntl, path, lock_path):
                if not waited:
                    waited = True
                    if on_wait is not None:
                        on_wait()
                if deadline is not None and time.monotonic() >= deadline:
                    raise UserError(f"another icr process is still making the cache entry {path} after waiting "
                                    f"{timeout:g} s. Let it finish and run again, or pass -o/--output to write "
                                    f"elsewhere.")
                time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
                pause = min(2 * pause, _LOCK_POLL_S[1])
            if _same_file(fd, lock_path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)    # we locked a file its holder had just removed: lock the one at the path now


def _try_flock(fd: int, fcntl, path, lock_path: Path) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:    # e.g. ENOLCK: a network filesystem without locking
        raise _no_lock(path, lock_path, e) from None


def _same_file(fd: int, lock_path: Path) -> bool:
    try:
        st = os.stat(lock_path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _release(lock_path: Path, fd: int) -> None:
    try:
        if _same_file(fd, lock_path):
            lock_path.unlink()      # while still locked: see _acquire
    except OSError:
        pass                        # a lock file left behind is harmless
    finally:
        os.close(fd)                # closing drops the flock


def _no_lock(path, lock_path: Path, e: OSError) -> UserError:
    return UserError(f"cannot create the lock file {lock_path} next to {path} ({e.strerror or e}). Write the "
                     "output to a folder where you can create files (-o PATH, or $ICR_CACHE_DIR for the cache).")


def _exclusive_portable(path, lock_path: Path, timeout: float | None, on_wait) -> Iterator[None]:
    """Where flock does not exist (Windows): filelock, whose lock file stays in place."""
    import filelock
    lock = filelock.FileLock(os.fspath(lock_path))
    try:
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            if on_wait is not None:
                on_wait()
            lock.acquire(timeout=-1 if timeout is None else timeout)
    except filelock.Timeout:
        raise UserError(f"another icr process is still making the cache entry {path} after waiting "
                        f"{timeout:g} s. Let it finish and run again, or pass -o/--output to write "
                        f"elsewhere.") from None
    except OSError as e:
        raise _no_lock(path, lock_path, e) from None
    try:
        yield
    finally:
        lock.release()


def ensure(path: str | os.PathLike, build: Callable[[Path], None], timeout: float | None = None,
           on_wait: Callable[[], None] | None = None) -> tuple[Path, bool]:
    """Return (path, built): the finished cache entry, made by build(temp_path) unless it already exists.

    Concurrent calls for one entry serialize on its lock; the later ones find the finished file and do not
    build it again."""
    path = Path(path)
    if path.exists():           # complete by construction (atomic_write): no lock needed to read it
        return path, False
    with exclusive(path, timeout=timeout, on_wait=on_wait):
        if path.exists():       # made by the process we waited for
            return path, False
        with atomic_write(path) as tmp:
            build(tmp)
    return path, True
