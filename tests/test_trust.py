"""Answers you can trust (issue 15), tried as a user and as an attacker would:
1. every input that can change an answer is in its key, by content (your own --arch source, label files, ...);
2. HDF5 inputs that read other files are refused unless --follow-external, then what they reach is keyed;
3. cache entries cannot be forged unnoticed (an authentication code made with a secret outside the cache), and
   every result says whether it came from the cache;
4. icr replaces only plots it drew;
5. `icr cache clear` never follows a link out of the cache, nor empties another program's hashes.sqlite;
6. hostile files end in exit 2 with a message, never exit 1.
Each test fails on the code before issue 15."""

import json
import os
import shutil
import sqlite3
import stat

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import answer, tiny_songunet

TESTS = os.path.dirname(__file__)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _feats(path, seed=0, n=64, k=2, d=5):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, 1, d))
    h = (s + 0.7 * rng.normal(size=(n, k, d))).astype(np.float32)
    return h


def _ok(r):
    assert r.code == 0, r.err
    return r


def _user_error(r, *words):
    assert r.code == 2, (r.code, r.err)
    assert "Traceback" not in r.err and "unexpected error" not in r.err, r.err
    for w in words:
        assert w in r.err, (w, r.err)
    return r


# ------------------------------------------------------------------------------------------------ 1. keys
def _user_net(tmp_path):
    """Your own network in a folder of its own (net.py, a copy of tests/user_arch.py, and helper.py beside it), its
    weights, and 8 images."""
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(os.path.join(TESTS, "user_arch.py"), folder / "net.py")
    (folder / "helper.py").write_text("SCALE = 1\n")
    import user_arch
    torch.manual_seed(0)
    net = user_arch.TinyDenoiser(width=8, depth=2)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "mine.safetensors")
    np.save(tmp_path / "imgs.npy", np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8))
    return folder


def _extract_mine(icr, tmp_path, arch):
    args = ["extract", tmp_path / "mine.safetensors", "--data", tmp_path / "imgs.npy", "--sigma", "0.5", "--images",
            "8", "--param", "edm", "--layer", "body.0", "--arch", arch, "--arch-arg", "width=8", "-q"]
    return _ok(icr(*args)).json


def _body0(path):
    with h5py.File(path, "r") as f:
        return f["features/body.0"][:]


def test_editing_your_own_architecture_file_recomputes(tmp_path, icr):
    folder = _user_net(tmp_path)
    arch = f"{folder / 'net.py'}:TinyDenoiser"
    first = _extract_mine(icr, tmp_path, arch)
    again = _extract_mine(icr, tmp_path, arch)
    assert (first["cached"], again["cached"]) == (False, True) and again["features"] == first["features"]
    old = _body0(first["features"])
    src = (folder / "net.py").read_text()
    assert "h = self.stem(x)" in src
    (folder / "net.py").write_text(src.replace("h = self.stem(x)", "h = 2 * self.stem(x)"))   # edit forward
    edited = _extract_mine(icr, tmp_path, arch)
    assert not edited["cached"] and edited["config_key"] != first["config_key"]
    assert not np.allclose(_body0(edited["features"]), old)     # the new code's features, not the old ones
    # Another .py file of the folder (which the network may import) is part of the key too.
    (folder / "helper.py").write_text("SCALE = 2\n")
    assert not _extract_mine(icr, tmp_path, arch)["cached"]


def test_editing_a_module_of_your_package_recomputes_sweeps_too(tmp_path, icr, monkeypatch):
    _user_net(tmp_path)
    pkg = tmp_path / "lib" / "mynets"
    (pkg / "blocks").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "blocks" / "__init__.py").write_text("")
    (pkg / "blocks" / "conv.py").write_text("WIDTH = 8\n")
    shutil.copy(os.path.join(TESTS, "user_arch.py"), pkg / "nets.py")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    arch = "mynets.nets:build"
    assert not _extract_mine(icr, tmp_path, arch)["cached"]
    assert _extract_mine(icr, tmp_path, arch)["cached"]
    sweep = ["sweep", tmp_path / "mine.safetensors", "--data", tmp_path / "imgs.npy", "--sigmas", "0.5", "--images",
             "8", "--param", "edm", "--layer", "body.0", "--arch", arch, "--arch-arg", "width=8", "-q"]
    assert not _ok(icr(*sweep)).json["cached"]
    assert _ok(icr(*sweep)).json["cached"]
    (pkg / "blocks" / "conv.py").write_text("WIDTH = 16\n")     # a sub-package's file: the package is hashed whole
    assert not _extract_mine(icr, tmp_path, arch)["cached"]
    r = _ok(icr(*sweep)).json
    assert not r["cached"] and not r["levels"][0]["cached"]


def _idx(path, dims, data):
    path.write_bytes(bytes([0, 0, 8, len(dims)]) + np.array(dims, dtype=">i4").tobytes()
                     + np.asarray(data, dtype=np.uint8).tobytes())


def test_idx_label_file_is_in_the_scan_key():
    """A sweep's or timeline's key names the data by content: for IDX images, their idx1 labels file too (the
    labels --probe reads)."""
    import tempfile
    from pathlib import Path

    from icrcli.scans.records import data_identity
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        imgs = d / "train-images-idx3-ubyte"
        _idx(imgs, (16, 8, 8), np.random.default_rng(0).integers(0, 256, (16, 8, 8)))
        _idx(d / "train-labels-idx1-ubyte", (16,), np.repeat(np.arange(2), 8))
        before = data_identity(imgs)
        _idx(d / "train-labels-idx1-ubyte", (16,), np.tile(np.arange(2), 8))   # shuffled labels, same bytes count
        assert data_identity(imgs) != before


@pytest.mark.slow
def test_shuffled_idx_labels_recompute_a_probed_sweep(tmp_path, icr, tiny_edm):
    imgs = tmp_path / "train-images-idx3-ubyte"
    _idx(imgs, (16, 16, 16), np.random.default_rng(0).integers(0, 256, (16, 16, 16)))
    labels = tmp_path / "train-labels-idx1-ubyte"
    _idx(labels, (16,), np.repeat(np.arange(2), 8))
    args = ["sweep", tiny_edm / "net.safetensors", "--data", imgs, "--resize", "--sigmas", "0.5", "--images", "16",
            "--probe", "-q"]
    first = _ok(icr(*args)).json
    assert _ok(icr(*args)).json["cached"]
    _idx(labels, (16,), np.tile(np.arange(2), 8))
    r = _ok(icr(*args)).json
    assert not r["cached"]
    fresh = _ok(icr(*args, "--no-cache")).json
    assert r["levels"][0]["probe_test_accuracy"] == fresh["levels"][0]["probe_test_accuracy"]
    assert first["levels"][0]["icr"] == r["levels"][0]["icr"]      # the features did not change, the labels did


@pytest.mark.slow
@pytest.mark.parametrize("edit", ["checkpoint", "sidecar", "data", "indices"])
def test_each_input_edited_makes_the_next_sweep_recompute(tmp_path, icr, tiny_edm, edit):
    ckpt = tmp_path / "net.safetensors"
    shutil.copy(tiny_edm / "net.safetensors", ckpt)
    data = tmp_path / "imgs.npy"
    shutil.copy(tiny_edm / "imgs.npy", data)
    idx = tmp_path / "subset.txt"
    idx.write_text("\n".join(map(str, range(0, 32, 2))))
    args = ["sweep", ckpt, "--data", data, "--sigmas", "0.5", "--indices", idx, "-q"]
    first = _ok(icr(*args)).json
    assert not first["cached"] and _ok(icr(*args)).json["cached"]
    if edit == "checkpoint":
        save_file({k: v.contiguous() for k, v in tiny_songunet(7).state_dict().items()}, ckpt)
    elif edit == "sidecar":
        (tmp_path / "icr.json").write_text(json.dumps({"data_range": "0:1"}))
    elif edit == "data":
        a = np.load(data)
        a[0] = 255 - a[0]
        np.save(data, a)
    else:
        idx.write_text("\n".join(map(str, range(1, 33, 2))))
    r = _ok(icr(*args)).json
    assert not r["cached"] and not r["levels"][0]["cached"]
    fresh = _ok(icr(*args, "--no-cache")).json          # the answer a fresh run gives
    assert [(lv["icr"], lv["eigenvalues"]) for lv in r["levels"]] == \
        [(lv["icr"], lv["eigenvalues"]) for lv in fresh["levels"]]
    assert r["levels"][0]["icr"] != first["levels"][0]["icr"]


# ------------------------------------------------------------------------------------------------ 2. HDF5 reach
def test_external_link_is_refused_then_followed_and_keyed(tmp_path, icr):
    src = tmp_path / "src.h5"
    with h5py.File(src, "w") as f:
        f["feats"] = _feats(src, 0)
    outer = tmp_path / "outer.h5"
    with h5py.File(outer, "w") as f:
        f["feats"] = h5py.ExternalLink(str(src), "/feats")
    _user_error(icr("score", outer, "--dataset", "feats"), "/feats", "external link", "src.h5", "--follow-external")
    first = _ok(icr("score", outer, "--dataset", "feats", "--follow-external", "-q")).json
    assert first["icr"] == _ok(icr("score", src, "-q")).json["icr"]
    assert _ok(icr("score", outer, "--dataset", "feats", "--follow-external", "-q")).json["cached"]
    with h5py.File(src, "w") as f:                  # the source changes; the outer file does not
        f["feats"] = _feats(src, 1)
    after = _ok(icr("score", outer, "--dataset", "feats", "--follow-external", "-q")).json
    assert not after["cached"] and after["icr"] != first["icr"]
    assert after["icr"] == _ok(icr("score", src, "-q")).json["icr"]


def test_virtual_dataset_and_external_storage_are_refused(tmp_path, icr):
    src = tmp_path / "src.h5"
    h = _feats(src, 0)
    with h5py.File(src, "w") as f:
        f["feats"] = h
    layout = h5py.VirtualLayout(shape=h.shape, dtype=h.dtype)
    layout[:] = h5py.VirtualSource(str(src), "feats", shape=h.shape)
    with h5py.File(tmp_path / "vds.h5", "w") as f:
        f.create_virtual_dataset("feats", layout)
    _user_error(icr("score", tmp_path / "vds.h5"), "/feats", "virtual dataset", "src.h5")
    # Raw storage in another file, here any file of bytes (as /etc/passwd would be).
    raw = tmp_path / "secret.txt"
    raw.write_bytes(np.random.default_rng(0).integers(0, 255, 64 * 2 * 4 * 4, dtype=np.uint8).tobytes())
    with h5py.File(tmp_path / "ext.h5", "w") as f:
        f.create_dataset("feats", shape=(64, 2, 4), dtype="<f4", external=[(str(raw), 0, h5py.h5f.UNLIMITED)])
    _user_error(icr("score", tmp_path / "ext.h5"), "/feats", "external storage", "secret.txt")
    first = icr("score", tmp_path / "ext.h5", "--follow-external", "-q")
    assert first.code in (0, 2) and "unexpected error" not in first.err
    if first.code == 0:                              # what it reads is keyed: editing the raw file recomputes
        raw.write_bytes(np.random.default_rng(1).integers(0, 255, 64 * 2 * 4 * 4, dtype=np.uint8).tobytes())
        again = icr("score", tmp_path / "ext.h5", "--follow-external", "-q")
        assert again.code in (0, 2) and not (again.code == 0 and again.json["cached"])


def test_broken_external_link_is_a_user_error(tmp_path, icr):
    with h5py.File(tmp_path / "outer.h5", "w") as f:
        f["feats"] = h5py.ExternalLink(str(tmp_path / "gone.h5"), "/feats")
    _user_error(icr("score", tmp_path / "outer.h5", "--dataset", "feats"), "gone.h5")
    _user_error(icr("score", tmp_path / "outer.h5", "--dataset", "feats", "--follow-external"), "gone.h5")


def test_declared_shape_larger_than_the_file_is_refused_at_once(tmp_path, icr):
    with h5py.File(tmp_path / "huge.h5", "w") as f:
        f.create_dataset("feats", shape=(10 ** 12, 2, 4), dtype="f4", chunks=(1024, 2, 4))
    assert (tmp_path / "huge.h5").stat().st_size < 10_000
    _user_error(icr("score", tmp_path / "huge.h5"), "declares", "truncated")


# ------------------------------------------------------------------------------------------------ 3. forging
def _entry(cache_dir, kind):
    (entry,) = (cache_dir / kind).rglob("*.json")
    return entry


def test_an_edited_score_entry_is_refused_and_recomputed(tmp_path, icr, cache_dir):
    np.save(tmp_path / "f.npy", _feats(tmp_path, 0))
    good = _ok(icr("score", tmp_path / "f.npy", "-q")).json
    entry = _entry(cache_dir, "scores")
    text = entry.read_text()
    forged = text.replace(json.dumps(good["icr"]), "0.0123")
    assert forged != text
    entry.write_text(forged)
    r = _ok(icr("score", tmp_path / "f.npy"))
    assert r.json["icr"] == good["icr"] and not r.json["cached"]
    assert "authentication code" in r.err and str(entry) in r.err
    # An attacker who writes a whole entry of their own, in any format, has no secret to sign it with.
    entry.write_text(json.dumps({"key": entry.stem, "value": {**good, "icr": 0.0123}}))
    r = _ok(icr("score", tmp_path / "f.npy", "-q"))
    assert r.json["icr"] == good["icr"] and not r.json["cached"]


def test_a_forged_feature_entry_with_restored_mtime_is_recomputed(tmp_path, icr, tiny_edm):
    args = ["extract", tiny_edm / "net.safetensors", "--data", tiny_edm / "imgs.npy", "--sigma", "0.5", "--images",
            "8", "-q"]
    first = _ok(icr(*args)).json
    path = first["features"]
    orig = _body = None
    with h5py.File(path, "r") as f:
        name = next(iter(f["features"]))
        orig = f["features"][name][:]
    st = os.stat(path)
    with h5py.File(path, "r+") as f:                    # the attacker's features, same shape
        f["features"][name][...] = np.zeros_like(orig)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = _ok(icr(*args[:-1]))
    assert "authentication code" in r.err and not r.json["cached"]
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["features"][name][:], orig)
    assert _ok(icr(*args)).json["cached"]


@pytest.mark.slow
def test_an_edited_timeline_point_cannot_pass_the_gate(tmp_path, icr, tiny_edm, cache_dir):
    run = tmp_path / "run"
    run.mkdir()
    for step, seed in ((100, 1), (200, 2)):
        save_file({k: v.contiguous() for k, v in tiny_songunet(seed).state_dict().items()},
                  run / f"ckpt-{step}.safetensors")
    args = ["timeline", run, "--data", tiny_edm / "imgs.npy", "--images", "16", "--sigma", "0.5", "--fail-above",
            "0.01", "-q"]
    r = icr(*args)
    assert r.code == 3, r.err
    for entry in (cache_dir / "timeline-points").rglob("*.json"):   # every point made to pass
        head, body = entry.read_text().split("\n", 1)
        rec = json.loads(body)
        for p in rec["points"]:
            p["icr"] = 0.001
        entry.write_text(head + "\n" + json.dumps(rec))
    again = icr(*args[:-1])
    assert again.code == 3 and again.err.count("authentication code") == 2
    assert answer(json.loads(again.out)["points"]) == answer(json.loads(r.out)["points"])
    # not answered by the forged records (their scores may come from the score cache, which says so)
    assert not any("timeline-points" in (p["cache_entry"] or "") for p in json.loads(again.out)["points"])


def test_the_secret_lives_outside_the_cache_mode_0600_or_in_the_environment(tmp_path, icr, monkeypatch, cache_dir):
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    np.save(tmp_path / "f.npy", _feats(tmp_path, 0))
    _ok(icr("score", tmp_path / "f.npy", "-q"))
    secret = config / "icr" / "cache-secret"
    assert secret.is_file() and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert cache_dir not in secret.parents and len(secret.read_bytes().strip()) >= 32
    assert _ok(icr("score", tmp_path / "f.npy", "-q")).json["cached"]
    # A CI runner with its own shared secret does not believe entries made with another.
    monkeypatch.setenv("ICR_CACHE_SECRET", "x" * 40)
    r = _ok(icr("score", tmp_path / "f.npy"))
    assert not r.json["cached"] and "authentication code" in r.err
    assert _ok(icr("score", tmp_path / "f.npy", "-q")).json["cached"]
    monkeypatch.setenv("ICR_CACHE_SECRET", "short")
    _user_error(icr("score", tmp_path / "f.npy"), "ICR_CACHE_SECRET")
    monkeypatch.delenv("ICR_CACHE_SECRET")
    secret.chmod(0o644)             # a secret others can read is no secret: said, not used
    _user_error(icr("score", tmp_path / "f.npy"), "chmod 600")


def test_every_answer_says_whether_it_came_from_the_cache(tmp_path, icr):
    np.save(tmp_path / "f.npy", _feats(tmp_path, 0))
    fresh, hit = icr("score", tmp_path / "f.npy"), icr("score", tmp_path / "f.npy")
    assert not fresh.json["cached"] and "cached:" not in fresh.err
    assert hit.json["cached"] and hit.err.count("cached: answered from the cache entry") == 1
    assert hit.json["cache_entry"] == fresh.json["cache_entry"] and os.path.isfile(hit.json["cache_entry"])


# ------------------------------------------------------------------------------------------------ 4. plots
def _sweep_result():
    return {"kind": "sweep", "checkpoint": "ck.pt", "version": "0", "schema": 1,
            "levels": [{"layer": "a", "sigma": s, "icr": 0.5 + s / 10} for s in (0.1, 1.0)]}


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_plot_replaces_only_a_figure_icr_drew(tmp_path, icr, suffix):
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt
    (tmp_path / "r.json").write_text(json.dumps(_sweep_result()))
    theirs = tmp_path / f"theirs{suffix}"
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    fig.savefig(theirs)              # a figure the user made with matplotlib: says Matplotlib in its metadata
    plt.close(fig)
    before = theirs.read_bytes()
    assert b"atplotlib" in before
    _user_error(icr("plot", tmp_path / "r.json", "-o", theirs), "not a plot drawn by icr")
    assert theirs.read_bytes() == before
    mine = tmp_path / f"mine{suffix}"
    _ok(icr("plot", tmp_path / "r.json", "-o", mine))
    _ok(icr("plot", tmp_path / "r.json", "-o", mine))     # icr's own plot may be redrawn
    from icrcli.cli.outputs import _is_plot
    assert _is_plot(mine) and not _is_plot(theirs)


# ------------------------------------------------------------------------------------------------ 5. cache clear
def test_cache_clear_never_follows_a_link_out_of_the_cache(tmp_path, icr, cache_dir):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    victim = outside / ("ab" + "1" * 62 + ".json")
    victim.write_text("precious")
    (cache_dir / "scores").mkdir(parents=True)
    os.symlink(outside, cache_dir / "scores" / "ab")              # a linked shard folder
    os.symlink(outside, cache_dir / "sweeps")                     # a linked kind folder
    (cache_dir / "features" / "cd").mkdir(parents=True)
    os.symlink(victim, cache_dir / "features" / "cd" / ("cd" + "2" * 62 + ".h5"))   # a linked entry
    os.symlink(tmp_path / "gone", cache_dir / "features" / "cd" / ("cd" + "3" * 62 + ".h5"))  # dangling
    r = _ok(icr("cache", "clear", "--json"))
    assert victim.read_text() == "precious" and r.json["removed"]["scores"]["entries"] == 0
    _ok(icr("cache", "info", "--json"))


def test_cache_clear_empties_only_its_own_hash_memo(tmp_path, icr, cache_dir):
    cache_dir.mkdir(parents=True)
    db = sqlite3.connect(cache_dir / "hashes.sqlite")          # another program's file of the same name
    db.execute("CREATE TABLE hashes (name TEXT, digest TEXT)")
    db.execute("INSERT INTO hashes VALUES ('a', 'b')")
    db.commit()
    db.close()
    np.save(tmp_path / "f.npy", _feats(tmp_path, 0))
    _ok(icr("score", tmp_path / "f.npy", "-q"))                 # icr leaves it alone while hashing, too
    _ok(icr("cache", "clear", "--kind", "hashes"))
    db = sqlite3.connect(cache_dir / "hashes.sqlite")
    assert db.execute("SELECT * FROM hashes").fetchall() == [("a", "b")]
    db.close()


# ------------------------------------------------------------------------------------------------ 6. hostile files
def test_plot_on_a_folder_a_device_or_a_huge_label(tmp_path, icr):
    pytest.importorskip("matplotlib")
    _user_error(icr("plot", tmp_path, "-o", tmp_path / "x.png"), "folder")
    _user_error(icr("plot", "/dev/zero", "-o", tmp_path / "x.png"), "not a regular file")
    res = _sweep_result()
    for lv in res["levels"]:
        lv["layer"] = "L" * (1 << 20)
    (tmp_path / "r.json").write_text(json.dumps(res))
    _ok(icr("plot", tmp_path / "r.json", "-o", tmp_path / "x.png"))


def _feature_file(path, h, **attrs):
    with h5py.File(path, "w") as f:
        f.create_dataset("features/blk", data=h)
        for k, v in attrs.items():
            f.attrs[k] = v


@pytest.mark.parametrize("attrs", [{"config": "{not json"}, {"config": "[1, 2]"}, {"rows_done": "many"},
                                   {"rows_done": np.array([1, 2])}, {"complete": np.arange(3)}, {"rows_done": 2.5}])
def test_altered_feature_file_attributes_are_user_errors(tmp_path, icr, attrs):
    _feature_file(tmp_path / "f.h5", _feats(tmp_path), **attrs)
    _user_error(icr("score", tmp_path / "f.h5"), "f.h5")


@pytest.mark.parametrize("labels", [np.zeros((64, 2)), np.array([b"a"] * 64), np.zeros(3), np.full(64, np.nan)])
def test_probe_labels_of_the_wrong_shape_or_type(tmp_path, icr, labels):
    path = tmp_path / "f.h5"
    _feature_file(path, _feats(tmp_path), complete=True)
    with h5py.File(path, "a") as f:
        f["labels"] = labels
    _user_error(icr("probe", path), "/labels")


@pytest.mark.parametrize("value", ["99999999999999999999999", str(2 ** 64)])
def test_indices_beyond_int64(tmp_path, icr, tiny_edm, value):
    (tmp_path / "i.txt").write_text(f"0\n1\n{value}\n")
    _user_error(icr("extract", tiny_edm / "net.safetensors", "--data", tiny_edm / "imgs.npy", "--sigma", "0.5",
                    "--indices", tmp_path / "i.txt", "-o", tmp_path / "f.h5"), "--indices")


@pytest.mark.parametrize("schedule", ["linear:1e-4:0.02:1000000000000", "cosine:1000000000000",
                                      "scaled-linear:0.00085:0.012:1000000000000"])
def test_a_schedule_of_a_trillion_steps(tmp_path, icr, tiny_edm, schedule):
    _user_error(icr("extract", tiny_edm / "net.safetensors", "--data", tiny_edm / "imgs.npy", "--sigma", "0.5",
                    "--images", "4", "--param", "ddpm", "--schedule", schedule, "-o", tmp_path / "f.h5"), "schedule")


def test_demo_under_proc(tmp_path, icr):
    _user_error(icr("demo", "-o", "/proc/icr-demo", "--quick"), "/proc/icr-demo")


def test_archive_members_climbing_out_are_counted_and_said(tmp_path, icr, tiny_edm):
    import io
    import zipfile

    from PIL import Image
    from icrcli.data.images import open_images
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as z:
        for i, a in enumerate(np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)):
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="PNG")
            name = {0: "../evil.png", 1: "/etc/evil.png"}.get(i, f"ok/{i}.png")
            z.writestr(zipfile.ZipInfo(name), buf.getvalue())
    imgs = open_images(tmp_path / "d.zip")
    assert len(imgs) == 4 and sorted(imgs.unsafe_members) == ["../evil.png", "/etc/evil.png"]
    assert "left out 2 member(s)" in imgs.describe()
    r = _ok(icr("extract", tiny_edm / "net.safetensors", "--data", tmp_path / "d.zip", "--sigma", "0.5",
                "-o", tmp_path / "f.h5"))
    assert "left out 2 archive member(s)" in r.err and "../evil.png" in r.err


def test_a_planted_chunk_is_never_assembled(tmp_path, icr, tiny_edm):
    """An extraction's finished chunks carry an authentication code too: a chunk planted in OUT.parts/ (or in the
    cache's) is said, removed and computed again in the same run."""
    args = ["extract", tiny_edm / "net.safetensors", "--data", tiny_edm / "imgs.npy", "--sigma", "0.5", "--images",
            "8", "--chunk-images", "4", "-o", tmp_path / "f.h5", "-q"]
    _ok(icr(*args))
    with h5py.File(tmp_path / "f.h5", "r") as f:
        key, layer = f.attrs["config_key"], next(iter(f["features"]))
        good, index = f["features"][layer][:], f["index"][:]
    (tmp_path / "f.h5").unlink()
    parts = tmp_path / "f.h5.parts"
    parts.mkdir()
    (parts / "config.json").write_text(json.dumps({"key": key, "config": {}}))
    np.savez(parts / "chunk-000000.npz", index=index[:4], labels=np.array([]), f_0=np.zeros_like(good[:4]))
    r = _ok(icr(*args[:-1]))
    assert "chunk-000000.npz" in r.err and "authentication code" in r.err and "computing it again" in r.err
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f.attrs["complete"]
        np.testing.assert_array_equal(f["features"][layer][:], good)
