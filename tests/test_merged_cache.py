"""A score merged from shard files (`icr score A B`) or statistics files (`icr merge`) is cached like every other
score: keyed by the content of every file and the options, a sealed entry, `cached`/`cache_entry` in the result and
one line on stderr. A second run answers from the cache with the same numbers; a change to any one file's content
recomputes, and the answer is then the fresh one."""

import shutil

import h5py
import numpy as np
import pytest

import reference
from conftest import answer


@pytest.fixture(autouse=True)
def cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def merges(monkeypatch):
    """Counts the merges actually computed (a cached answer computes none)."""
    import icrcli.stats.merged as merged
    calls = []
    for name in ("score_shards", "merge_stats"):
        real = getattr(merged, name)
        monkeypatch.setattr(merged, name, lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    return calls


def _shards(icr, d, tmp_path):
    out = []
    for i in range(2):
        f = tmp_path / f"s{i}.h5"
        r = icr("extract", d / "net.safetensors", "--data", d / "imgs.npy", "--images", "16", "--chunk-images", "4",
                "--batch-size", "4", "--views", "2", "--device", "cpu", "--sigma", "0.4", "--shard", f"{i}/2",
                "-o", f, "-q")
        assert r.code == 0, r.err
        out.append(f)
    return out


@pytest.mark.slow
def test_a_merged_shard_score_is_cached_by_every_shards_content(icr, tiny_edm, tmp_path, cache_dir, merges):
    s0, s1 = _shards(icr, tiny_edm, tmp_path)
    first = icr("score", s0, s1)
    assert first.code == 0, first.err
    a = first.json
    assert a["cached"] is False and a["cache_entry"] and "cached:" not in first.err and len(merges) == 1

    again = icr("score", s1, s0)                    # the same files in another order: the same request
    b = again.json
    assert b["cached"] is True and b["cache_entry"] == a["cache_entry"] and len(merges) == 1
    assert again.err.count(f"cached: answered from the cache entry {a['cache_entry']}") == 1
    assert answer(b) == answer(a)                   # identical numbers, identical names

    c0, c1 = tmp_path / "copy0.h5", tmp_path / "copy1.h5"   # the same contents elsewhere: the files given now
    shutil.copy(s0, c0)
    shutil.copy(s1, c1)
    moved = icr("score", c0, c1).json
    assert moved["cached"] is True and len(merges) == 1
    assert moved["input"]["paths"] == [str(c0), str(c1)] and moved["input"]["path"] == str(c0)
    assert moved["icr"] == a["icr"] and moved["eigenvalues"] == a["eigenvalues"]

    with h5py.File(s1, "r+") as f:                  # one shard's content changes (one value of one view)
        (name,) = f["features"]
        f["features"][name][0, 0, 0] += 1.0
    changed = icr("score", s0, s1).json
    assert changed["cached"] is False and len(merges) == 2 and changed["icr"] != a["icr"]
    fresh = icr("score", s0, s1, "--no-cache").json
    assert fresh["cached"] is False and fresh["cache_entry"] is None and answer(changed) == answer(fresh)
    with h5py.File(s0) as f, h5py.File(s1) as g:    # and it is the changed whole's ICR (dense float64)
        (name,) = f["features"]
        whole = np.concatenate([f["features"][name][:], g["features"][name][:]]).astype(np.float64)
    assert changed["icr"] == pytest.approx(reference.icr(whole)[0], rel=1e-7)

    other = icr("score", s0, s1, "--tau-rel", "1e-2").json     # an option is in the key too
    assert other["cached"] is False and len(merges) == 4


@pytest.mark.slow
def test_a_merged_entry_is_sealed(icr, tiny_edm, tmp_path, cache_dir, merges):
    s0, s1 = _shards(icr, tiny_edm, tmp_path)
    good = icr("score", s0, s1).json
    entry = cache_dir / "scores"
    (path,) = [p for p in entry.rglob("*.json") if str(p) == good["cache_entry"]]
    path.write_text(path.read_text().replace(str(good["icr"]), str(good["icr"] / 2)))   # a forged answer
    r = icr("score", s0, s1)
    assert r.code == 0 and "recomputing" in r.err and r.json["cached"] is False
    assert r.json["icr"] == good["icr"] and len(merges) == 2


def test_icr_merge_is_cached_by_every_statistics_files_content(icr, tmp_path, merges):
    rng = np.random.default_rng(5)
    h = reference.views(rng, n=200, k=3, d=8, offset=4.0)
    np.save(tmp_path / "a.npy", h[:90])
    np.save(tmp_path / "b.npy", h[90:])
    for name in ("a", "b"):
        assert icr("score", tmp_path / f"{name}.npy", "--stats-out", tmp_path / f"{name}.npz").code == 0
    first = icr("merge", tmp_path / "a.npz", tmp_path / "b.npz")
    a = first.json
    assert first.code == 0 and a["cached"] is False and a["cache_entry"] and len(merges) == 1
    assert a["icr"] == pytest.approx(reference.icr(h)[0], rel=1e-9)
    again = icr("merge", tmp_path / "a.npz", tmp_path / "b.npz")
    assert again.json["cached"] is True and len(merges) == 1 and answer(again.json) == answer(a)
    assert again.err.count("cached: answered from the cache entry") == 1
    assert icr("merge", tmp_path / "a.npz", tmp_path / "b.npz", "--no-cache").json["cache_entry"] is None
    assert len(merges) == 2

    h2 = h.copy()
    h2[100:] *= 1.5                                 # b's statistics change
    np.save(tmp_path / "b.npy", h2[90:])
    assert icr("score", tmp_path / "b.npy", "--stats-out", tmp_path / "b.npz").code == 0
    changed = icr("merge", tmp_path / "a.npz", tmp_path / "b.npz").json
    assert changed["cached"] is False and len(merges) == 3
    assert changed["icr"] == pytest.approx(reference.icr(h2)[0], rel=1e-9) and changed["icr"] != a["icr"]
