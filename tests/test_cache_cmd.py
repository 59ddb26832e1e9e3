"""The score cache (keyed by content, never stale, damage recomputed) and `icr cache` (path, info, clear that
never removes what another run holds or writes), and --no-cache."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from icrcli import cache
from icrcli.cli import cache_admin
from icrcli.stats import score as score_mod

PAST = 1_600_000_000     # an mtime long ago: the hash memo may remember the file, clear --older-than sees it old
KEY = "ab" + "0" * 62


@pytest.fixture
def root(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv(cache.ENV_VAR, str(d))
    return d


def _feats(path: Path, seed: int, mtime: int | None = PAST) -> Path:
    x = np.random.default_rng(seed).normal(size=(40, 2, 6)).astype(np.float32)
    x[:, 1] += 0.3 * x[:, 0]
    np.save(path, x)
    if mtime is not None:
        os.utime(path, ns=(mtime * 10**9, mtime * 10**9))
    return path


@pytest.fixture
def computed(monkeypatch):
    """Counts the real computations of a score (cache misses)."""
    calls = []
    real = score_mod.score_source

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(score_mod, "score_source", counting)
    return calls


def _answer(result: dict) -> dict:
    """A result without what says where it came from (cached, cache_entry): the answer itself."""
    return {k: v for k, v in result.items() if k not in ("cached", "cache_entry")}


def _age(path: Path, t: float = PAST) -> None:
    for dirpath, _, files in os.walk(path) if path.is_dir() else [(str(path.parent), [], [path.name])]:
        for f in files:
            os.utime(os.path.join(dirpath, f), (t, t))
    os.utime(path, (t, t))


# ---------------------------------------------------------------------------------------------- score cache
def test_repeat_score_answers_from_cache_identically(icr, root, tmp_path, computed):
    f = _feats(tmp_path / "f.npy", 0)
    first = icr("score", f, "-o", tmp_path / "a.json")
    second = icr("score", f, "-o", tmp_path / "b.json")
    assert first.code == second.code == 0
    assert len(computed) == 1                            # the second answered without scoring
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    # identical but for saying where it came from (issue 15: every result says whether it came from the cache)
    assert (a.pop("cached"), b.pop("cached")) == (False, True) and a["cache_entry"] == b["cache_entry"]
    assert a == b and "cached: answered from the cache entry" in second.err
    fresh = icr("score", f, "--no-cache", "-o", tmp_path / "c.json")
    assert fresh.code == 0 and len(computed) == 2
    c = json.loads((tmp_path / "c.json").read_text())
    assert c.pop("cached") is False and c.pop("cache_entry") is None and a.pop("cache_entry")
    assert c == a
    assert len(list((root / "scores").rglob("*.json"))) == 1


def test_options_are_part_of_the_key(icr, root, tmp_path, computed):
    f = _feats(tmp_path / "f.npy", 0)
    a = icr("score", f).json
    b = icr("score", f, "--estimator", "plugin").json
    c = icr("score", f, "--tau", "0.5").json
    assert len(computed) == 3 and len({a["icr"], b["icr"], c["icr"]}) == 3
    assert _answer(icr("score", f, "--estimator", "plugin").json) == _answer(b) and len(computed) == 3


def test_same_content_elsewhere_is_a_hit_naming_the_new_path(icr, root, tmp_path, computed):
    a = _feats(tmp_path / "a.npy", 0)
    b = tmp_path / "copy.npy"
    b.write_bytes(a.read_bytes())
    ra, rb = icr("score", a).json, icr("score", b).json
    assert len(computed) == 1
    assert rb["input"]["path"] == str(b) and ra["input"]["path"] == str(a)
    assert rb["cached"] and {**_answer(rb), "input": None} == {**_answer(ra), "input": None}


def test_unchanged_file_not_rehashed_and_changed_file_never_stale(icr, root, tmp_path, computed, monkeypatch):
    hashed = []
    real_hash = cache._hash_file
    monkeypatch.setattr(cache, "_hash_file", lambda p: hashed.append(p) or real_hash(p))
    f = _feats(tmp_path / "f.npy", 0)
    old = _answer(icr("score", f).json)
    assert _answer(icr("score", f).json) == old
    assert len(hashed) == 1 and len(computed) == 1       # the memo knew the unchanged file: read once in all
    # Other bytes, same size, same mtime, same inode (rewritten in place): only the ctime tells.
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.seek(size - 4)
        fh.write(np.float32(123.0).tobytes())
    os.utime(f, ns=(PAST * 10**9, PAST * 10**9))
    assert f.stat().st_size == size and f.stat().st_mtime_ns == PAST * 10**9
    new = _answer(icr("score", f).json)
    assert len(computed) == 2 and new["icr"] != old["icr"]
    assert new == _answer(icr("score", f, "--no-cache").json)


def test_damaged_entry_reported_once_and_recomputed(icr, root, tmp_path, computed):
    f = _feats(tmp_path / "f.npy", 0)
    good = icr("score", f).json
    (entry,) = (root / "scores").rglob("*.json")
    for damage in (lambda t: t[: len(t) // 2], lambda t: t.replace('"icr"', '"icx"'), lambda t: "[]"):
        entry.write_text(damage(entry.read_text()))
        r = icr("score", f)
        assert r.code == 0 and r.json == good
        assert r.err.count("recomputing") == 1 and str(entry) in r.err
        again = icr("score", f)
        assert "recomputing" not in again.err and _answer(again.json) == _answer(good)
    assert len(computed) == 4


def test_score_file_api_cache_and_directions(root, tmp_path, computed):
    from icrcli.stats.options import ScoreOptions
    f = _feats(tmp_path / "f.npy", 1)
    r1, d1 = score_mod.score_file(f)
    r2, d2 = score_mod.score_file(f)
    assert _answer(r1) == _answer(r2) and d1 is None and d2 is None and len(computed) == 1
    assert (r1["cached"], r2["cached"]) == (False, True)
    r3, _ = score_mod.score_file(f, use_cache=False)
    assert _answer(r3) == _answer(r1) and len(computed) == 2
    # Directions are never cached: computed each time, and returned.
    for _ in range(2):
        r, d = score_mod.score_file(f, opts=ScoreOptions(top=3))
        assert d.shape == (3, 6) and r["icr"] == pytest.approx(r1["icr"], rel=1e-12)  # eigenvectors: last bits
    assert len(computed) == 4
    assert len(list((root / "scores").rglob("*.json"))) == 1


def test_score_file_damage_note_goes_to_warnings(root, tmp_path):
    f = _feats(tmp_path / "f.npy", 2)
    good, _ = score_mod.score_file(f)
    (entry,) = (root / "scores").rglob("*.json")
    entry.write_text("{")
    r, _ = score_mod.score_file(f)
    assert any("was damaged" in w for w in r["warnings"]) and r["icr"] == good["icr"]
    assert _answer(score_mod.score_file(f)[0]) == _answer(good)


# ---------------------------------------------------------------------------------------------- icr cache
def test_cache_path_and_info(icr, root, tmp_path):
    assert icr("cache", "path").out.strip() == str(root)
    f = _feats(tmp_path / "f.npy", 0)
    icr("score", f)
    icr("score", f, "--ci", "--ci-groups", "4")
    (root / "features" / "ab").mkdir(parents=True)
    (root / "features" / "ab" / f"{KEY}.h5").write_bytes(b"x" * 1000)
    _age(root / "features" / "ab" / f"{KEY}.h5")
    (root / "features" / "ab" / f"{KEY}.h5.parts").mkdir()
    d = icr("cache", "info", "--json").json
    assert d["schema"] == 1 and d["cache_dir"] == str(root)
    assert set(d["kinds"]) == set(cache_admin.KINDS)
    assert d["kinds"]["scores"]["entries"] == 2 and d["kinds"]["scores"]["bytes"] > 0
    assert d["kinds"]["features"]["entries"] == 1 and d["kinds"]["features"]["in_progress"] == 1
    assert d["kinds"]["features"]["oldest"].startswith("2020-09-13")
    assert d["kinds"]["hashes"]["entries"] == 1
    assert d["total_bytes"] == sum(k["bytes"] for k in d["kinds"].values())
    text = icr("cache", "info").out
    assert "scores" in text and "2 entries" in text


def test_cache_kind_names_match():
    from icrcli.cli.cache_cmd import KIND_NAMES
    assert KIND_NAMES.split() == list(cache_admin.KINDS)


def _entry(root: Path, kind: str, name: str, age: float | None = PAST, data: bytes = b"{}") -> Path:
    p = root / kind / name.lstrip(".")[:2] / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    if age is not None:
        _age(p, age)
    return p


def test_clear_all_older_than_kind_and_dry_run(icr, root):
    now = time.time()
    old_score = _entry(root, "scores", "aa" + "1" * 62 + ".json")
    new_score = _entry(root, "scores", "aa" + "2" * 62 + ".json", age=now - 3600)
    sweep = _entry(root, "sweeps", "bb" + "3" * 62 + ".json")
    feat = _entry(root, "features", "cc" + "4" * 62 + ".h5", data=b"h" * 100)
    stranger = _entry(root, "scores", "notes.txt")            # not a name icr makes: never touched
    (root / "README").write_text("mine")
    dry = icr("cache", "clear", "--dry-run", "--json")
    assert dry.code == 0 and dry.json["removed"]["scores"]["entries"] == 2
    assert all(p.exists() for p in (old_score, new_score, sweep, feat))
    r = icr("cache", "clear", "--older-than", "30d", "--kind", "scores", "--json").json
    assert r["removed"]["scores"] == {"entries": 1, "bytes": 2} and set(r["kinds"]) == {"scores"}
    assert not old_score.exists() and new_score.exists() and sweep.exists() and feat.exists()
    r = icr("cache", "clear", "--json")
    assert r.code == 0 and "removed 3 entries" in r.err
    assert not any(p.exists() for p in (new_score, sweep, feat))
    assert stranger.exists() and (root / "README").read_text() == "mine"
    assert icr("cache", "clear", "--older-than", "soon").code == 2


def test_clear_empties_the_hash_memo(icr, root, tmp_path):
    f = _feats(tmp_path / "f.npy", 0)
    cache.file_sha256(f)
    assert cache_admin.info()["kinds"]["hashes"]["entries"] == 1
    assert icr("cache", "clear", "--older-than", "1d").code == 0      # the memo has no ages: kept
    assert cache_admin.info()["kinds"]["hashes"]["entries"] == 1
    icr("cache", "clear", "--kind", "hashes")
    assert cache_admin.info()["kinds"]["hashes"]["entries"] == 0


_HOLDER = """
import sys
from icrcli import cache
with cache.exclusive(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_clear_never_removes_an_entry_another_process_locks(icr, root):
    feat = _entry(root, "features", "cc" + "4" * 62 + ".h5", data=b"h" * 100)
    env = {**os.environ, cache.ENV_VAR: str(root)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(feat)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = icr("cache", "clear", "--json")
        assert r.code == 0 and feat.exists()
        assert r.json["kept_in_use"]["features"] == 1 and r.json["removed"]["features"]["entries"] == 0
        assert "kept 1 in use" in r.err
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    r = icr("cache", "clear", "--json").json
    assert not feat.exists() and r["removed"]["features"]["entries"] == 1
    assert not list((root / "features").rglob("*.lock"))


def test_clear_keeps_claimed_or_busy_chunk_folders_and_fresh_temps(icr, root):
    from icrcli.features.chunks import ChunkStore
    key = "dd" + "5" * 62
    parts = root / "features" / "dd" / f"{key}.h5.parts"
    store = ChunkStore(parts, n_chunks=3)
    store.open({"k": 1}, key, overwrite=False)
    (parts / "chunk-000000.npz").write_bytes(b"z" * 10)
    _age(parts)
    claimed = threading.Event()
    release = threading.Event()

    def worker():          # a worker of an extraction in progress: holds chunk 1's claim
        assert store.claim(1)
        claimed.set()
        release.wait(60)
        store.release(1)
    t = threading.Thread(target=worker)
    t.start()
    try:
        assert claimed.wait(60)
        _age(parts)
        assert icr("cache", "clear", "--json").json["kept_in_use"]["features"] == 1
        assert (parts / "chunk-000000.npz").exists()
    finally:
        release.set()
        t.join()
    (parts / "chunk-000000.npz").touch()          # written a moment ago: a worker between two claims
    assert icr("cache", "clear", "--json").json["kept_in_use"]["features"] == 1 and parts.exists()
    _age(parts)
    fresh_tmp = _entry(root, "features", f".{key}.tmp-x1.h5", age=None)
    stale_tmp = _entry(root, "features", f".{key}.tmp-x2.h5", age=time.time() - 2 * cache_admin.STALE_TMP_S)
    r = icr("cache", "clear", "--json").json
    assert not parts.exists() and not stale_tmp.exists() and fresh_tmp.exists()
    assert r["kept_in_use"]["features"] == 1


def test_clear_keeps_samples_being_extended(icr, root):
    folder = root / "samples" / "ee" / ("ee" + "6" * 62 + ".samples")
    folder.mkdir(parents=True)
    (folder / "chunk-000000.npy").write_bytes(b"s")
    (folder / ".chunk-000001.tmp-abc.npy").write_bytes(b"t")
    os.utime(folder / "chunk-000000.npy", (PAST, PAST))
    os.utime(folder, (PAST, PAST))
    assert icr("cache", "clear", "--json").json["kept_in_use"]["samples"] == 1 and folder.exists()
    (folder / ".chunk-000001.tmp-abc.npy").unlink()
    os.utime(folder, (PAST, PAST))
    assert icr("cache", "clear", "--json").json["removed"]["samples"]["entries"] == 1
    assert not folder.exists()


# ---------------------------------------------------------------------------------------------- --no-cache
def test_no_cache_scratch_and_extract_needs_output(icr, root, tmp_path):
    with cache.scratch() as s:
        assert cache.cache_dir() == s and s != root
        (s / "x").write_text("1")
    assert not s.exists() and cache.cache_dir() == root
    r = icr("extract", tmp_path / "ckpt.pt", "--data", tmp_path, "--sigma", "0.1", "--no-cache")
    assert r.code == 2 and "--no-cache" in r.err and "-o" in r.err
    f = _feats(tmp_path / "f.npy", 3)
    assert icr("score", f, "--no-cache").code == 0
    assert not (root / "scores").exists() and not (root / cache.MEMO_NAME).exists()
