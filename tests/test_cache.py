"""icrcli.cache: hash memo, tree hashes, config keys, atomic writes, and the inter-process entry lock."""

import hashlib
import multiprocessing as mp
import os
import random
import shutil
import sqlite3
import time
from pathlib import Path

import filelock
import numpy as np
import platformdirs
import pytest

from icrcli import cache
from icrcli.errors import UserError

SPAWN = mp.get_context("spawn")   # not fork: the test session may hold torch/OpenMP threads
PAST = 1_600_000_000              # an mtime far from "now", so the memo may remember the file


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(cache.ENV_VAR, str(root))
    return root


def _write(path, data: bytes, mtime=PAST) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, ns=(mtime * 10**9, mtime * 10**9))
    return path


@pytest.fixture
def count_reads(monkeypatch):
    """Count real reads of file contents: calls[i] is the path of the i-th hashing."""
    calls = []
    real = cache._hash_file

    def counting(path):
        calls.append(path)
        return real(path)
    monkeypatch.setattr(cache, "_hash_file", counting)
    return calls


# ----------------------------------------------------------------------------------------- cache_dir
def test_cache_dir_from_env_is_created(tmp_path, monkeypatch):
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "a" / "b"))
    assert cache.cache_dir() == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()


def test_cache_dir_default_is_the_platform_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("ICR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))   # keep the real ~/.cache untouched
    expected = Path(platformdirs.user_cache_dir("icr", appauthor=False))
    assert cache.cache_dir() == expected
    assert expected.is_dir()


def test_cache_dir_unusable_names_the_env_var(tmp_path, monkeypatch):
    blocker = _write(tmp_path / "a_file", b"x")
    monkeypatch.setenv("ICR_CACHE_DIR", str(blocker / "cache"))   # a folder inside a regular file
    with pytest.raises(UserError, match="ICR_CACHE_DIR") as e:
        cache.cache_dir()
    assert str(blocker / "cache") in str(e.value)


# ----------------------------------------------------------------------------------------- file_sha256
def test_file_sha256_matches_hashlib_across_chunks(cache_root, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "_CHUNK_BYTES", 7)   # many chunks, the last one partial
    data = random.Random(0).randbytes(1000)
    f = _write(tmp_path / "f.bin", data)
    assert cache.file_sha256(f) == hashlib.sha256(data).hexdigest()
    assert cache.file_sha256(_write(tmp_path / "empty", b"")) == hashlib.sha256(b"").hexdigest()


def test_memo_hit_does_not_reread(cache_root, tmp_path, count_reads):
    f = _write(tmp_path / "big.bin", b"abc" * 1000)
    first = cache.file_sha256(f)
    assert cache.file_sha256(f) == first
    assert cache.file_sha256(tmp_path / "." / "big.bin") == first   # same file, other spelling
    assert len(count_reads) == 1
    assert (cache_root / "hashes.sqlite").is_file()


def test_changed_mtime_rehashes(cache_root, tmp_path, count_reads):
    f = _write(tmp_path / "f.bin", b"one")
    cache.file_sha256(f)
    os.utime(f, ns=((PAST + 5) * 10**9,) * 2)
    cache.file_sha256(f)
    assert len(count_reads) == 2


def test_changed_size_rehashes_even_with_same_mtime(cache_root, tmp_path, count_reads):
    f = _write(tmp_path / "f.bin", b"one")
    assert cache.file_sha256(f) == hashlib.sha256(b"one").hexdigest()
    _write(f, b"longer", mtime=PAST)     # mtime restored: only the size tells
    assert cache.file_sha256(f) == hashlib.sha256(b"longer").hexdigest()
    assert len(count_reads) == 2


@pytest.mark.skipif(os.name != "posix", reason="POSIX ctime")
def test_edit_with_restored_mtime_rehashes(cache_root, tmp_path, count_reads):
    f = _write(tmp_path / "f.bin", b"one")
    cache.file_sha256(f)
    time.sleep(0.05)                     # past the kernel's coarse timestamp tick (<= 10 ms)
    _write(f, b"two", mtime=PAST)        # same size, same mtime, same inode: only ctime tells
    assert cache.file_sha256(f) == hashlib.sha256(b"two").hexdigest()
    assert len(count_reads) == 2


def test_just_written_file_is_not_remembered(cache_root, tmp_path, count_reads):
    # A second write in the same coarse mtime tick would go unnoticed ("racy git"), so fresh files are re-read.
    f = _write(tmp_path / "f.bin", b"fresh", mtime=None)
    assert cache.file_sha256(f) == cache.file_sha256(f) == hashlib.sha256(b"fresh").hexdigest()
    assert len(count_reads) == 2
    with sqlite3.connect(cache_root / "hashes.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM hashes").fetchone() == (0,)


def test_broken_memo_still_hashes(cache_root, tmp_path):
    _write(cache_root / "hashes.sqlite", b"this is not a database" * 100)
    f = _write(tmp_path / "f.bin", b"data")
    assert cache.file_sha256(f) == hashlib.sha256(b"data").hexdigest()


def test_missing_file_is_a_user_error(cache_root, tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        cache.file_sha256(tmp_path / "nope.bin")
    with pytest.raises(UserError, match="not a regular file"):
        cache.file_sha256(tmp_path)


# ----------------------------------------------------------------------------------------- tree_sha256
def _tree(root: Path) -> list[Path]:
    files = {"a.png": b"A", "b.png": b"B", "sub/c.png": b"C", "sub/d.png": b"D"}
    return [_write(root / name, data) for name, data in files.items()]


def test_tree_hash_ignores_order_and_duplicates(cache_root, tmp_path):
    files = _tree(tmp_path / "ds")
    h = cache.tree_sha256(files)
    shuffled = files[:]
    random.Random(1).shuffle(shuffled)
    assert cache.tree_sha256(shuffled) == h
    assert cache.tree_sha256(files + files[:2]) == h


def test_tree_hash_remembers_every_file_across_memo_batches(cache_root, tmp_path, monkeypatch, count_reads):
    monkeypatch.setattr(cache, "_MEMO_BATCH", 3)     # 4 files: one full batch written mid-way, then the rest
    files = _tree(tmp_path / "ds")
    h = cache.tree_sha256(files)
    assert cache.tree_sha256(files) == h
    assert len(count_reads) == len(files)


def test_tree_hash_does_not_depend_on_where_the_tree_lives(cache_root, tmp_path):
    files = _tree(tmp_path / "ds")
    shutil.copytree(tmp_path / "ds", tmp_path / "elsewhere" / "copy")
    copied = [tmp_path / "elsewhere" / "copy" / f.relative_to(tmp_path / "ds") for f in files]
    assert cache.tree_sha256(copied) == cache.tree_sha256(files)


def test_tree_hash_sees_renames_edits_swaps_and_additions(cache_root, tmp_path):
    files = _tree(tmp_path / "ds")
    base = cache.tree_sha256(files, root=tmp_path / "ds")
    variants = {}

    (tmp_path / "ds" / "b.png").rename(tmp_path / "ds" / "z.png")
    variants["rename"] = cache.tree_sha256([*files[:1], tmp_path / "ds" / "z.png", *files[2:]],
                                           root=tmp_path / "ds")
    (tmp_path / "ds" / "z.png").rename(tmp_path / "ds" / "b.png")
    assert cache.tree_sha256(files, root=tmp_path / "ds") == base   # renamed back: same again

    _write(files[0], b"a", PAST + 1)                         # edited, same size
    variants["edit"] = cache.tree_sha256(files, root=tmp_path / "ds")
    _write(files[0], b"B", PAST + 2)
    _write(files[1], b"A", PAST + 2)                         # contents swapped between two names
    variants["swap"] = cache.tree_sha256(files, root=tmp_path / "ds")
    _write(files[0], b"A", PAST + 3)
    _write(files[1], b"B", PAST + 3)
    extra = _write(tmp_path / "ds" / "e.png", b"E")
    variants["add"] = cache.tree_sha256(files + [extra], root=tmp_path / "ds")
    variants["remove"] = cache.tree_sha256(files[1:], root=tmp_path / "ds")

    assert len({base, *variants.values()}) == 1 + len(variants)


def test_tree_hash_refuses_files_outside_root(cache_root, tmp_path):
    files = _tree(tmp_path / "ds")
    with pytest.raises(ValueError, match="under root"):
        cache.tree_sha256(files, root=tmp_path / "ds" / "sub")
    with pytest.raises(ValueError):
        cache.tree_sha256([])


# ----------------------------------------------------------------------------------------- config_key
CONFIG = {"model": "dit-xl-2", "layer": 14, "sigma_s": 0.5, "sigma_xi": [0.1, 0.2], "views": 8,
          "augment": {"crop": 0.25, "flip": True}, "inputs": "ab12", "seed": None}


def test_config_key_is_sha256_of_compact_sorted_json():
    expected = hashlib.sha256(b'{"a":[1,0.5,"\xc3\xa9"],"b":null}').hexdigest()
    assert cache.config_key({"b": None, "a": (1, 0.5, "\u00e9")}) == expected


def test_config_key_ignores_dict_order_and_number_spelling():
    reordered = {k: CONFIG[k] for k in reversed(CONFIG)}
    reordered["augment"] = {"flip": True, "crop": 0.25}
    assert cache.config_key(reordered) == cache.config_key(CONFIG)
    same = [{"x": 1}, {"x": 1.0}, {"x": np.int64(1)}, {"x": np.float64(1.0)}]
    assert len({cache.config_key(d) for d in same}) == 1
    assert cache.config_key({"x": 0.1}) == cache.config_key({"x": 1 / 10}) == cache.config_key(
        {"x": np.float64(0.1)})
    assert cache.config_key({"x": -0.0}) == cache.config_key({"x": 0.0})
    assert cache.config_key({"p": Path("a/b.h5")}) == cache.config_key({"p": "a/b.h5"})


def _leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, prefix + (k,))
        elif isinstance(v, list):
            for i in range(len(v)):
                yield prefix + (k, i)
        else:
            yield prefix + (k,)


def _perturbed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, float):
        return float(np.nextafter(value, np.inf))       # one ulp: floats are keyed exactly
    if isinstance(value, int):
        return value + 1
    if value is None:
        return 0
    return value + "x"


def test_config_key_changes_with_every_value():
    import copy
    keys = {cache.config_key(CONFIG)}
    for path in _leaves(CONFIG):
        changed = copy.deepcopy(CONFIG)
        holder = changed
        for part in path[:-1]:
            holder = holder[part]
        holder[path[-1]] = _perturbed(holder[path[-1]])
        keys.add(cache.config_key(changed))
    assert len(keys) == 1 + len(list(_leaves(CONFIG)))
    # Types and structure count too: "1" is not 1, list order matters, a renamed key differs.
    assert cache.config_key({"x": "1"}) != cache.config_key({"x": 1})
    assert cache.config_key({"x": True}) != cache.config_key({"x": 1})
    assert cache.config_key({"x": [1, 2]}) != cache.config_key({"x": [2, 1]})
    assert cache.config_key({"x": 1}) != cache.config_key({"y": 1})
    assert cache.config_key({"x": 0.30000000000000004}) != cache.config_key({"x": 0.3})


def test_config_key_refuses_what_it_cannot_key_exactly():
    with pytest.raises(ValueError, match="finite"):
        cache.config_key({"x": float("nan")})
    with pytest.raises(TypeError, match="object"):
        cache.config_key({"x": object()})
    with pytest.raises(TypeError, match="keys must be str"):
        cache.config_key({"x": {1: 2}})


def test_short_and_cached_path_layout(cache_root):
    key = cache.config_key(CONFIG)
    assert len(key) == 64 and cache.short(key) == key[:16]
    p = cache.cached_path(key)
    assert p == cache_root / "features" / key[:2] / f"{key}.h5"
    assert p.parent.is_dir() and not p.exists()
    assert cache.cached_path(key, ".json", kind="scores").parent == cache_root / "scores" / key[:2]
    with pytest.raises(ValueError, match="hex"):
        cache.cached_path("../../etc")


# ----------------------------------------------------------------------------------------- atomic_write
def test_atomic_write_replaces_only_when_complete(tmp_path):
    target = _write(tmp_path / "out.h5", b"old")
    with cache.atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".h5" and tmp != target
        tmp.write_bytes(b"new, half")
        assert target.read_bytes() == b"old"          # readers never see the partial write
        with open(tmp, "ab") as f:
            f.write(b" and the rest")
    assert target.read_bytes() == b"new, half and the rest"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("existed", [False, True])
def test_atomic_write_failure_leaves_nothing(tmp_path, error, existed):
    target = tmp_path / "out.h5"
    if existed:
        _write(target, b"old")
    with pytest.raises(error):
        with cache.atomic_write(target) as tmp:
            tmp.write_bytes(b"partial")
            raise error("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out.h5"] if existed else [])
    if existed:
        assert target.read_bytes() == b"old"


# ----------------------------------------------------------------------------------------- exclusive
def _hold_lock(target, acquired, released_at):
    """Child: take the entry lock, make the entry slowly, record when the lock is released."""
    with cache.exclusive(target):
        acquired.set()
        time.sleep(0.6)
        with cache.atomic_write(target) as tmp:
            Path(tmp).write_bytes(b"made by the first run")
        released_at.value = time.time()


@pytest.mark.slow
def test_second_process_waits_for_the_first_and_finds_its_file(cache_root):
    target = cache.cached_path(cache.config_key({"run": 1}))
    acquired, released_at = SPAWN.Event(), SPAWN.Value("d", 0.0)
    holder = SPAWN.Process(target=_hold_lock, args=(target, acquired, released_at))
    holder.start()
    try:
        assert acquired.wait(30), "child never took the lock"
        waits = []
        with cache.exclusive(target, timeout=30, on_wait=lambda: waits.append(time.time())):
            got_it = time.time()
            found = target.read_bytes()
    finally:
        holder.join(30)
    assert holder.exitcode == 0
    assert len(waits) == 1 and waits[0] < released_at.value <= got_it
    assert found == b"made by the first run"


def test_lock_free_entry_does_not_call_on_wait_and_is_reentrant_across_calls(tmp_path):
    waits = []
    for _ in range(2):
        with cache.exclusive(tmp_path / "e.h5", on_wait=lambda: waits.append(1)):
            pass
    assert waits == []


@pytest.mark.slow
def test_lock_timeout_is_a_user_error(tmp_path):
    target = tmp_path / "e.h5"
    other = filelock.FileLock(f"{target}.lock")        # another holder: flock locks are per open file
    waits = []
    with other:
        with pytest.raises(UserError, match="still making the cache entry"):
            with cache.exclusive(target, timeout=0.2, on_wait=lambda: waits.append(1)):
                pass
    assert waits == [1]


def _ensure_entry(target, log, barrier, results):
    """Child: one concurrent `icr extract` of the same request."""
    def build(tmp):
        with open(log, "a") as f:
            f.write(f"start {os.getpid()}\n")
        time.sleep(0.4)
        Path(tmp).write_text(f"built by {os.getpid()}")
        with open(log, "a") as f:
            f.write(f"end {os.getpid()}\n")
    barrier.wait(30)
    path, built = cache.ensure(target, build, timeout=30)
    results.put((built, Path(path).read_text()))


@pytest.mark.slow
def test_concurrent_ensure_builds_once(cache_root, tmp_path):
    target = cache.cached_path(cache.config_key({"run": 2}))
    log = tmp_path / "build.log"
    barrier, results = SPAWN.Barrier(2), SPAWN.Queue()
    procs = [SPAWN.Process(target=_ensure_entry, args=(target, log, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(built for built, _ in got) == [False, True]
    assert got[0][1] == got[1][1] == target.read_text()
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start", "end"]


def test_ensure_returns_existing_entry_without_building(tmp_path):
    target = _write(tmp_path / "e.h5", b"done")
    assert cache.ensure(target, lambda tmp: pytest.fail("rebuilt")) == (target, False)


# ----------------------------------------------------------------------------------------- memo, 2 processes
def _hash_all(paths, results):
    try:
        results.put(("ok", [cache.file_sha256(p) for p in paths]))
    except Exception as e:  # report to the parent instead of dying silently
        results.put(("error", repr(e)))


@pytest.mark.slow
def test_memo_shared_by_two_processes(cache_root, tmp_path, monkeypatch):
    datas = [f"file {i}".encode() * (i + 1) for i in range(120)]
    files = [_write(tmp_path / "data" / f"{i}.bin", d) for i, d in enumerate(datas)]
    # Each process: its own half plus all of the shared part, so both write the memo at the same time.
    shared, own = files[:40], files[40:]
    jobs = [own[0::2] + shared, shared + own[1::2]]
    results = SPAWN.Queue()
    procs = [SPAWN.Process(target=_hash_all, args=(job, results)) for job in jobs]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert [status for status, _ in got] == ["ok", "ok"], got

    with sqlite3.connect(cache_root / "hashes.sqlite") as db:
        rows = dict(db.execute("SELECT path, sha256 FROM hashes").fetchall())
    expected = {str(f.resolve()): hashlib.sha256(d).hexdigest() for f, d in zip(files, datas)}
    assert rows == expected          # every file remembered by whichever process hashed it, none lost

    monkeypatch.setattr(cache, "_hash_file", lambda path: pytest.fail(f"re-read {path}"))
    assert [cache.file_sha256(f) for f in files] == list(expected.values())


# ----------------------------------------------------------------------------------------- lock files, modes
def test_lock_file_is_removed_on_release(tmp_path):
    target = tmp_path / "e.h5"
    with cache.exclusive(target):
        assert (tmp_path / "e.h5.lock").exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with cache.exclusive(target):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["under a file", "under /proc"])
def test_lock_that_cannot_be_created_is_a_user_error_not_a_wait(tmp_path, where):
    if where == "under a file":
        target = _write(tmp_path / "file", b"x") / "e.h5"
    else:
        target = Path("/proc/icr-no-such-dir/e.h5")
    waits = []
    with pytest.raises(UserError, match=r"cannot create the lock file .*e\.h5\.lock next to .*Write the output to"):
        with cache.exclusive(target, on_wait=lambda: waits.append(1)):
            pytest.fail("entered without a lock")
    assert waits == []


def test_lock_in_a_read_only_folder_is_a_user_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: a read-only folder is writable")
        with pytest.raises(UserError, match="Permission denied"):
            with cache.exclusive(ro / "e.h5"):
                pass
    finally:
        ro.chmod(0o700)


def test_a_lock_file_removed_by_its_holder_is_not_locked_twice(tmp_path, monkeypatch):
    """The holder removes the lock file while it still holds it. A waiter that opened the old file then
    gets a lock on a file no longer at the path; it must not enter while a third process holds the new file."""
    import fcntl
    import threading
    target, lock_path = tmp_path / "e.h5", tmp_path / "e.h5.lock"
    first = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(first, fcntl.LOCK_EX)                   # the holder (flock locks belong to open files)
    stale, entered, waiting = threading.Event(), threading.Event(), threading.Event()
    same_file = cache._same_file

    def watched(fd, path):
        same = same_file(fd, path)
        if not same:
            stale.set()
        return same
    monkeypatch.setattr(cache, "_same_file", watched)

    def waiter():
        with cache.exclusive(target, timeout=60, on_wait=waiting.set):
            entered.set()
    t = threading.Thread(target=waiter)
    t.start()
    assert waiting.wait(30)
    lock_path.unlink()                                  # the holder releases: removes, then unlocks
    third = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(third, fcntl.LOCK_EX)                   # a third process locks the new file meanwhile
    os.close(first)
    assert stale.wait(30)                               # the waiter got the old file and saw it was stale
    assert not entered.is_set()
    os.close(third)
    t.join(60)
    assert entered.is_set() and not lock_path.exists()


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_write_follows_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert cache.umask() == mask
        with cache.atomic_write(tmp_path / "out.h5") as tmp:
            tmp.write_bytes(b"result")
    finally:
        os.umask(old)
    assert (tmp_path / "out.h5").stat().st_mode & 0o777 == 0o666 & ~mask
