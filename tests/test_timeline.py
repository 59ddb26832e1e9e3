"""`icr timeline` end to end over a folder of tiny EDM checkpoints: step order, a point equals `icr extract` +
`icr score`, a new checkpoint computes one point, exit codes 0/2/3, --watch --until, --sigma auto."""

import json
import shutil
import threading
import time

import pytest
import torch
from safetensors.torch import save_file

from conftest import tiny_songunet
from conftest import answer


@pytest.fixture(autouse=True)
def cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _save(path, seed):
    save_file({k: v.contiguous() for k, v in tiny_songunet(seed).state_dict().items()}, path)


@pytest.fixture
def run(tmp_path, tiny_edm):
    """A run folder with checkpoints at steps 100, 900, 1000 (names sort wrongly as text), and the data."""
    d = tmp_path / "run"
    d.mkdir()
    for step, seed in ((1000, 3), (100, 1), (900, 2)):
        _save(d / f"ckpt-{step:d}.safetensors", seed)
    return d


def _tl(run, data, *extra, quiet=True):
    return ["timeline", run, "--data", data / "imgs.npy", "--images", "16", "--chunk-images", "8",
            *(["-q"] if quiet else []), *extra]


class Spy:
    """Counts the checkpoints that were loaded (i.e. computed, not answered from the cache)."""
    def __init__(self, monkeypatch):
        import icrcli.features.plan as plan
        self.loaded = []
        real = plan.load_model
        monkeypatch.setattr(plan, "load_model", lambda path, *a, **k: self.loaded.append(path.name) or
                            real(path, *a, **k))


@pytest.mark.slow
def test_points_in_step_order_equal_extract_plus_score(run, tiny_edm, tmp_path, icr):
    r = icr(*_tl(run, tiny_edm, "--sigma", "0.5"))
    assert r.code == 0, r.err
    res = r.json
    assert res["kind"] == "timeline" and [p["step"] for p in res["points"]] == [100, 900, 1000]
    p = res["points"][1]
    out = tmp_path / "e.h5"
    e = icr("extract", run / "ckpt-900.safetensors", "--data", tiny_edm / "imgs.npy", "--images", "16",
            "--chunk-images", "8", "--sigma", "0.5", "-o", out, "-q")
    assert e.code == 0, e.err
    s = icr("score", out, "-o", "-", "-q")
    assert p["icr"] == pytest.approx(s.json["icr"], rel=1e-6)
    (series,) = res["series"]
    assert series["sigma"] == 0.5 and series["trend"]["step_min"] in (100, 900, 1000)
    assert {"trace_s", "trace_xi"} <= p.keys()


@pytest.mark.slow
def test_new_checkpoint_computes_one_point(run, tiny_edm, icr, monkeypatch):
    spy = Spy(monkeypatch)
    assert icr(*_tl(run, tiny_edm, "--sigma", "0.5")).code == 0
    assert len(spy.loaded) == 3
    spy.loaded.clear()
    _save(run / "ckpt-2000.safetensors", 4)
    r = icr(*_tl(run, tiny_edm, "--sigma", "0.5"))
    assert r.code == 0 and spy.loaded == ["ckpt-2000.safetensors"]
    assert [p["step"] for p in r.json["points"]] == [100, 900, 1000, 2000]
    spy.loaded.clear()
    assert icr(*_tl(run, tiny_edm, "--sigma", "0.5")).code == 0 and spy.loaded == []  # a repeat loads nothing


@pytest.mark.slow
def test_changed_checkpoint_is_recomputed(run, tiny_edm, icr, monkeypatch):
    spy = Spy(monkeypatch)
    assert icr(*_tl(run, tiny_edm, "--sigma", "0.5")).code == 0
    spy.loaded.clear()
    _save(run / "ckpt-900.safetensors", 9)  # the same name, other weights
    assert icr(*_tl(run, tiny_edm, "--sigma", "0.5")).code == 0
    assert spy.loaded == ["ckpt-900.safetensors"]


@pytest.mark.slow
def test_exit_codes_and_gates(run, tiny_edm, icr):
    ok = icr(*_tl(run, tiny_edm, "--sigma", "0.5", "--fail-above", "100"))
    assert ok.code == 0, ok.err
    gate = icr(*_tl(run, tiny_edm, "--sigma", "0.5", "--fail-above", "0", quiet=False))
    assert gate.code == 3 and "gate failed" in gate.err and "--fail-above 0" in gate.err
    assert json.loads(gate.out)["gates"]["failed"]  # the result is still written
    last, low = gate.json["series"][0]["trend"]["icr_last"], gate.json["series"][0]["trend"]["icr_min"]
    rise = 100 * (last - low) / low
    r = icr(*_tl(run, tiny_edm, "--sigma", "0.5", "--fail-on-rise", str(rise + 1)))
    assert r.code == 0
    if rise > 0:
        assert icr(*_tl(run, tiny_edm, "--sigma", "0.5", "--fail-on-rise", str(rise / 2))).code == 3
    bad = icr(*_tl(run, tiny_edm, "--sigma", "-1"))
    assert bad.code == 2 and "Traceback" not in bad.err


def test_ties_and_missing_folder_are_exit_2(run, tiny_edm, tmp_path, icr):
    shutil.copy(run / "ckpt-100.safetensors", run / "ema-100.safetensors")
    r = icr(*_tl(run, tiny_edm, "--sigma", "0.5"))
    assert r.code == 2 and "share a training step" in r.err and "ema-100.safetensors" in r.err
    r = icr(*_tl(tmp_path / "nope", tiny_edm, "--sigma", "0.5"))
    assert r.code == 2 and "not a folder" in r.err


@pytest.mark.slow
def test_several_sigmas_are_series(run, tiny_edm, icr):
    r = icr(*_tl(run, tiny_edm, "--sigma", "0.2", "--sigma", "1"))
    assert r.code == 0, r.err
    assert [s["sigma"] for s in r.json["series"]] == [0.2, 1]
    assert len(r.json["points"]) == 6


@pytest.mark.slow
def test_sigma_auto_takes_the_argmin_of_a_coarse_sweep(run, tiny_edm, icr):
    from icrcli.scans.timeline import AUTO_GRID
    r = icr(*_tl(run, tiny_edm, "--sigma", "auto", "--pattern", "ckpt-1000*", quiet=False))
    assert r.code == 0, r.err
    res = json.loads(r.out)
    sw = icr("sweep", run / "ckpt-1000.safetensors", "--data", tiny_edm / "imgs.npy", "--images", "16",
             "--chunk-images", "8", "--sigmas", ",".join(map(str, AUTO_GRID)), "-q")
    assert res["sigmas"] == [sw.json["argmin"]["sigma"]] and "--sigma auto" in r.err


@pytest.mark.slow
def test_watch_until_adds_points_as_checkpoints_appear(run, tiny_edm, icr):
    def later():
        time.sleep(2)
        _save(run / "ckpt-3000.safetensors.tmp", 5)
        (run / "ckpt-3000.safetensors.tmp").rename(run / "ckpt-3000.safetensors")
    t = threading.Thread(target=later)
    t.start()
    r = icr(*_tl(run, tiny_edm, "--sigma", "0.5", "--watch", "--poll", "0.2", "--until", "3000"))
    t.join()
    assert r.code == 0, r.err
    assert [p["step"] for p in r.json["points"]] == [100, 900, 1000, 3000]


@pytest.mark.slow
def test_plot_csv_and_json_lines(run, tiny_edm, tmp_path, icr):
    pytest.importorskip("matplotlib")
    r = icr(*_tl(run, tiny_edm, "--sigma", "0.5", "--json-lines", "--plot", tmp_path / "t.svg", "--csv",
                 tmp_path / "t.csv"))
    assert r.code == 0, r.err
    lines = [json.loads(x) for x in r.out.splitlines()]
    assert [x["step"] for x in lines[:3]] == [100, 900, 1000] and lines[-1]["kind"] == "timeline"
    assert b"<svg" in (tmp_path / "t.svg").read_bytes()
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 4
    again = icr("plot", tmp_path / "t.json", "-o", tmp_path / "x.png")
    assert again.code == 2  # no such result file


@pytest.mark.slow
def test_memorization_and_probe_per_point(run, tiny_edm, tmp_path, icr, monkeypatch):
    import numpy as np
    labels = np.repeat(np.arange(2), 8)
    np.savez(tmp_path / "lab.npz", images=np.load(tiny_edm / "imgs.npy")[:16], labels=labels)
    r = icr("timeline", run, "--data", tmp_path / "lab.npz", "--images", "16", "--sigma", "0.5", "--probe",
            "--memorization", "4", "-q")
    assert r.code == 0, r.err
    for p in r.json["points"]:
        assert 0 <= p["memorization_ratio"] <= 1 and "memorization_ratio_se" in p
        assert 0 <= p["probe_test_accuracy"] <= 1
    spy = Spy(monkeypatch)
    again = icr("timeline", run, "--data", tmp_path / "lab.npz", "--images", "16", "--sigma", "0.5", "--probe",
                "--memorization", "4", "-q")
    assert again.code == 0 and spy.loaded == [] and answer(again.json["points"]) == answer(r.json["points"])
    assert all(p["cached"] for p in again.json["points"]) and not any(p["cached"] for p in r.json["points"])
