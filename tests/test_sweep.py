"""`icr sweep` end to end on a tiny EDM network: every SPEC form reaches the levels, a level equals `icr extract` +
`icr score`, a repeat does no forward pass (and imports no torch), kill -9 then resume equals one run, layers."""

import json
import os
import random
import subprocess
import sys
import time

import h5py
import pytest
import torch

from conftest import tiny_songunet  # noqa: F401  (the fixture below builds on the same network)
from conftest import answer


@pytest.fixture(autouse=True)
def cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # subprocesses and this process compute alike, bit for bit
    yield tmp_path / "cache"
    torch.set_num_threads(n)


def _sweep(d, *extra, quiet=True):
    return ["sweep", d / "net.safetensors", "--data", d / "imgs.npy", "--images", "16", "--chunk-images", "8",
            "--batch-size", "8", *(["-q"] if quiet else []), *extra]


@pytest.mark.slow
def test_level_equals_extract_plus_score(tiny_edm, tmp_path, icr):
    r = icr(*_sweep(tiny_edm, "--sigmas", "0,0.5,2"))
    assert r.code == 0, r.err
    res = r.json
    assert res["kind"] == "sweep" and res["schema"] == 1 and res["sigmas"] == [0, 0.5, 2]
    assert [lv["sigma"] for lv in res["levels"]] == [0, 0.5, 2]
    for lv in res["levels"][1:]:
        out = tmp_path / f"e{lv['sigma']}.h5"
        e = icr("extract", tiny_edm / "net.safetensors", "--data", tiny_edm / "imgs.npy", "--images", "16",
                "--chunk-images", "8", "--sigma", lv["sigma"], "-o", out, "-q")
        assert e.code == 0, e.err
        s = icr("score", out, "-o", "-", "-q")
        assert s.code == 0, s.err
        assert lv["icr"] == pytest.approx(s.json["icr"], rel=1e-6)
        assert lv["trace_xi"] == pytest.approx(s.json["trace_xi"], rel=1e-6)
        with h5py.File(out) as a, h5py.File(lv["features"]) as b:  # the very same features
            assert (a["features"][lv["layer"]][:] == b["features"][lv["layer"]][:]).all()
    best = min(res["levels"], key=lambda lv: lv["icr"])
    assert res["argmin"] == {"layer": best["layer"], "sigma": best["sigma"], "icr": best["icr"],
                             "augment": best["augment"]}


@pytest.mark.slow
def test_levels_share_views_common_random_numbers(tiny_edm, icr):
    """sigma 0 with augmentation 'none' gives identical views, and every level draws the same unit noise: the
    features at sigma s of one level are those of a one-level sweep at s."""
    a = icr(*_sweep(tiny_edm, "--sigmas", "0.3,1"))
    b = icr(*_sweep(tiny_edm, "--sigmas", "1"))
    assert a.code == 0 and b.code == 0, a.err + b.err
    assert a.json["levels"][1]["icr"] == b.json["levels"][0]["icr"]


def test_spec_forms_and_bad_specs(tiny_edm, icr, monkeypatch):
    import icrcli.scans.sweep as sw
    seen = []
    monkeypatch.setattr(sw, "_compute", lambda c, d, sigmas, *a: (_ for _ in ()).throw(
        SystemExit(seen.append(sigmas) or 0)))
    for spec, n in (("0.1:10:5", 5), ("lin:0:1:3", 3), ("0,0.1,0.5,2", 4), ("edm18:..3.3", 10), (None, 11)):
        r = icr(*_sweep(tiny_edm, *(["--sigmas", spec] if spec else [])))
        assert r.code == 0
        assert len(seen[-1]) == n
    r = icr(*_sweep(tiny_edm, "--sigmas", "0:10:5"))
    assert r.code == 2 and "geometric spacing needs start > 0" in r.err and "Traceback" not in r.err


@pytest.mark.slow
def test_repeat_answers_from_cache_without_torch(tiny_edm, tmp_path, icr, cache_dir):
    first = icr(*_sweep(tiny_edm, "--sigmas", "0.2,1"))
    assert first.code == 0, first.err
    code = ("import sys; from icrcli.cli.main import main; sys.argv = ['icr', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code, *map(str, _sweep(tiny_edm, "--sigmas", "0.2,1"))],
                       capture_output=True, text=True, env={**os.environ, "ICR_CACHE_DIR": str(cache_dir)})
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip().splitlines()[-1] == "False"
    again = json.loads(p.stdout)
    assert answer(again["levels"]) == answer(first.json["levels"])
    assert again["cached"] and all(lv["cached"] and lv["cache_entry"] == again["cache_entry"] for lv in again["levels"])


@pytest.mark.slow
def test_changed_option_is_not_answered_from_cache(tiny_edm, icr, monkeypatch):
    assert icr(*_sweep(tiny_edm, "--sigmas", "0.5")).code == 0
    import icrcli.features.compute as comp
    calls = []
    real = comp.compute_levels
    monkeypatch.setattr(comp, "compute_levels", lambda *a, **k: calls.append(1) or real(*a, **k))
    import icrcli.features.extract as ex
    monkeypatch.setattr(ex, "compute_levels", comp.compute_levels)
    r = icr(*_sweep(tiny_edm, "--sigmas", "0.5", "--views", "3"))
    assert r.code == 0 and calls  # a new request computes
    calls.clear()
    r2 = icr(*_sweep(tiny_edm, "--sigmas", "0.5", "--views", "3"))
    assert r2.code == 0 and not calls and answer(r2.json) == answer(r.json)  # the whole result, as fresh
    assert (r.json["cached"], r2.json["cached"]) == (False, True)


@pytest.mark.slow
def test_damaged_cache_record_is_recomputed(tiny_edm, icr, cache_dir):
    r = icr(*_sweep(tiny_edm, "--sigmas", "0.5"))
    assert r.code == 0
    (rec,) = list((cache_dir / "sweeps").rglob("*.json"))
    rec.write_text(rec.read_text()[:50])
    r2 = icr(*_sweep(tiny_edm, "--sigmas", "0.5", quiet=False))  # the warning shows
    assert r2.code == 0 and "damaged" in r2.err, r2.err
    assert json.loads(r2.out)["levels"][0]["icr"] == r.json["levels"][0]["icr"]


@pytest.mark.slow
def test_layer_grid_table_heatmap_and_outputs(tiny_edm, tmp_path, icr):
    pytest.importorskip("matplotlib")
    r = icr(*_sweep(tiny_edm, "--sigmas", "0.2,1", "--layer", "auto", "--plot", tmp_path / "g.png",
                    "--csv", tmp_path / "g.csv", "-o", tmp_path / "g.json", quiet=False))
    assert r.code == 0, r.err
    res = json.loads((tmp_path / "g.json").read_text())
    assert len(res["layers"]) >= 2 and len(res["levels"]) == 2 * len(res["layers"])
    assert set(res["best_by_layer"]) == set(res["layers"])
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((tmp_path / "g.csv").read_text().splitlines()) == 1 + len(res["levels"])
    for layer in res["layers"]:
        assert f"layer {layer}" in r.err
    assert "◀ min" in r.err and "lowest ICR" in r.err


@pytest.mark.slow
def test_json_lines_stream_one_record_per_level(tiny_edm, icr):
    r = icr(*_sweep(tiny_edm, "--sigmas", "0.2,1,3", "--json-lines"))
    assert r.code == 0, r.err
    lines = [json.loads(x) for x in r.out.splitlines()]
    assert [x["sigma"] for x in lines[:3]] == [0.2, 1, 3] and lines[-1]["kind"] == "sweep"


DRIVER = r"""
import sys, time
from pathlib import Path
import icrcli.features.extract as ex
log, block_after = Path(sys.argv[1]), int(sys.argv[2])
real, calls = ex.compute_levels, []
def watched(plans, prepared, *a, **k):
    calls.append(1)
    while len(calls) > block_after:
        time.sleep(1)   # hold here until killed
    out = real(plans, prepared, *a, **k)
    with open(log, "a") as f:
        f.write("chunk\n")
    return out
ex.compute_levels = watched
from icrcli.cli.main import main
sys.argv = ["icr", *sys.argv[3:]]
main()
"""


@pytest.mark.slow
def test_kill9_mid_sweep_then_resume_equals_one_run(tiny_edm, tmp_path, icr, cache_dir, monkeypatch):
    args = [str(a) for a in _sweep(tiny_edm, "--sigmas", "0.3,1,3", "--images", "32", "--chunk-images", "4")]
    block_after = random.Random(7).randint(1, 6)  # of 8 chunks
    log = tmp_path / "log"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(log), str(block_after), *args],
                            env={**os.environ, "OMP_NUM_THREADS": "1", "ICR_CACHE_DIR": str(cache_dir)},
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (log.exists() and len(log.read_text().split()) >= block_after):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the sweep never reached the chunk to kill at"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    parts = list(cache_dir.rglob("*.parts"))
    chunks = [c for p in parts for c in p.glob("chunk-*.npz")]
    assert len(parts) == 3 and 0 < len(chunks) < 3 * 8  # it landed mid-run: every level half done
    resumed = icr(*args)
    assert resumed.code == 0, resumed.err
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "other"))
    whole = icr(*args)
    assert whole.code == 0, whole.err
    for a, b in zip(resumed.json["levels"], whole.json["levels"]):
        assert a["icr"] == b["icr"]
        with open(a["features"], "rb") as fa, open(b["features"], "rb") as fb:
            assert fa.read() == fb.read()


@pytest.mark.slow
def test_probe_on_every_level_and_the_verdict(tiny_edm, tmp_path, icr):
    import numpy as np
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 8)
    imgs = rng.integers(0, 256, size=(32, 16, 16, 3), dtype=np.uint8)
    imgs[labels % 2 == 1, :, :, 0] = 255  # a class-linked colour: something for the probe to find
    np.savez(tmp_path / "lab.npz", images=imgs, labels=labels)
    args = ["sweep", tiny_edm / "net.safetensors", "--data", tmp_path / "lab.npz", "--images", "32",
            "--sigmas", "0.1,2", "--probe", "--knn", "3"]
    r = icr(*args)
    assert r.code == 0, r.err
    res = json.loads(r.out)
    for lv in res["levels"]:
        assert 0 <= lv["probe_test_accuracy"] <= 1 and lv["probe_test_accuracy_se"] > 0 and "knn_test_accuracy" in lv
    (verdict,) = res["probe"]
    best = max(res["levels"], key=lambda lv: lv["probe_test_accuracy"])
    assert verdict["argmax_accuracy_sigma"] == best["sigma"]
    assert verdict["agree"] == (verdict["argmax_accuracy_sigma"] == verdict["argmin_icr_sigma"])
    assert "probe (paper): best accuracy" in r.err
    nolab = icr("sweep", tiny_edm / "net.safetensors", "--data", tiny_edm / "imgs.npy", "--images", "16",
                "--sigmas", "1", "--probe", "-q")
    assert nolab.code == 2 and "--probe needs labelled data" in nolab.err
