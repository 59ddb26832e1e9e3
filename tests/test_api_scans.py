"""The scans from Python (issue 17 point 2): icrcli.extract, .sweep, .timeline and .probe called as a notebook
would, with the option objects, give what the commands print (compared key by key with the CLI's JSON, each
computed in a cache of its own), as typed results that round-trip through to_dict()/from_dict()."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import icrcli
from conftest import answer, tiny_songunet


@pytest.fixture
def caches(monkeypatch, tmp_path):
    """A fresh cache for the CLI run and another for the Python call: each computes (neither answers the other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)    # in-process runs compute alike, bit for bit

    def use(name):
        monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / f"cache-{name}"))
    yield use
    torch.set_num_threads(threads)


def _same(python: dict, cli: dict, drop=("seconds", "cached", "cache_entry")):
    """Equal but for where each was computed (its own cache: the same file names in another folder) and how long
    it took."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in drop}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x.replace("/cache-python/", "/cache-cli/") if isinstance(x, str) else x
    assert strip(answer(python)) == strip(answer(cli))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    d = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(3)
    np.savez(d / "imgs.npz", images=rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8), labels=np.arange(24) % 3)
    return d / "imgs.npz"


@pytest.mark.slow
def test_extract_and_probe_as_in_a_notebook(tiny_edm, labelled, tmp_path, icr, caches):
    ck = tiny_edm / "net.safetensors"
    caches("cli")
    e = icr("extract", ck, "--data", labelled, "--sigma", "0.4", "--images", "24", "--chunk-images", "8",
            "--augment", "none", "-q")
    assert e.code == 0, e.err
    p = icr("probe", e.json["features"], "--folds", "3", "--knn", "2", "-q")
    assert p.code == 0, p.err

    caches("python")
    views = icrcli.ViewOptions(images=24, chunk_images=8, augment="none")
    r = icrcli.extract(ck, labelled, 0.4, views=views)
    assert isinstance(r, icrcli.ExtractResult) and r.features.is_file() and not r.cached
    _same(r.to_dict(), e.json)
    assert r.config_key == e.json["config_key"]     # the same request, the same content key
    assert icrcli.ExtractResult.from_dict(json.loads(json.dumps(r.to_dict()))).to_dict() == r.to_dict()

    pr = icrcli.probe(r.features, options=icrcli.ProbeOptions(folds=3, knn=2))
    assert isinstance(pr, icrcli.ProbeResult)
    _same(pr.to_dict(), p.json)
    assert pr.test_accuracy == p.json["test_accuracy"] and pr.knn == p.json["knn"]
    assert icrcli.probe(r.features, folds=3, knn=2).to_dict() == pr.to_dict()    # keywords as the options' fields
    assert icrcli.ProbeResult.from_dict(p.json).test_accuracy == p.json["test_accuracy"]


@pytest.mark.slow
def test_sweep_as_in_a_notebook(tiny_edm, icr, caches):
    ck, data = tiny_edm / "net.safetensors", tiny_edm / "imgs.npy"
    caches("cli")
    c = icr("sweep", ck, "--data", data, "--sigmas", "0.2,1,3", "--images", "16", "--views", "3", "--chunk-images",
            "8", "--batch-size", "8", "--ci", "--ci-groups", "4", "-q")
    assert c.code == 0, c.err

    caches("python")
    r = icrcli.sweep(ck, data, [0.2, 1, 3], views=icrcli.ViewOptions(images=16, views=3, chunk_images=8,
                                                                      run=icrcli.RunOptions(batch_size=8)),
                     score=icrcli.ScoreOptions(ci=True, ci_groups=4))
    assert isinstance(r, icrcli.SweepResult) and not r.cached
    _same(r.to_dict(), c.json)
    assert r.argmin == c.json["argmin"] and [lv["icr"] for lv in r.levels] == [lv["icr"] for lv in c.json["levels"]]
    # the same sweep with view options as keywords and the levels as a SPEC: answered from the cache
    again = icrcli.sweep(ck, data, "0.2,1,3", images=16, views=icrcli.ViewOptions(views=3, chunk_images=8),
                         score=icrcli.ScoreOptions(ci=True, ci_groups=4))
    assert again.cached and answer(again.to_dict()) == answer(r.to_dict())
    assert icrcli.SweepResult.from_dict(c.json).argmin == c.json["argmin"]
    with pytest.raises(ValueError, match="not a sweep result"):
        icrcli.SweepResult.from_dict({"kind": "timeline"})


@pytest.mark.slow
def test_timeline_as_in_a_notebook(tiny_edm, tmp_path, icr, caches):
    run = tmp_path / "run"
    run.mkdir()
    for step, seed in ((10, 1), (20, 2)):
        save_file({k: v.contiguous() for k, v in tiny_songunet(seed).state_dict().items()},
                  run / f"ckpt-{step}.safetensors")
    data = tiny_edm / "imgs.npy"
    caches("cli")
    c = icr("timeline", run, "--data", data, "--sigma", "0.5", "--images", "16", "--chunk-images", "8", "-q",
            "-o", "-")
    assert c.code == 0, c.err
    caches("python")
    r = icrcli.timeline(run, data, 0.5, views=icrcli.ViewOptions(images=16, chunk_images=8))
    assert isinstance(r, icrcli.TimelineResult)
    _same(r.to_dict(), c.json, drop=("seconds", "cached", "cache_entry"))
    assert [p["step"] for p in r.points] == [10, 20] and r.gates["failed"] == []
    assert icrcli.TimelineResult.from_dict(c.json).points == c.json["points"]


def test_api_checks_its_arguments(tmp_path):
    with pytest.raises(TypeError, match="unknown keyword 'veiws'"):
        icrcli.sweep(tmp_path / "ck.pt", tmp_path / "d", [0.5], veiws=3)
    with pytest.raises(ValueError, match="views = 1"):
        icrcli.sweep(tmp_path / "ck.pt", tmp_path / "d", [0.5], views=icrcli.ViewOptions(views=1))
    with pytest.raises(icrcli.errors.UserError, match="no such"):
        icrcli.extract(tmp_path / "ck.pt", tmp_path / "d", 0.5)
    with pytest.raises(TypeError, match="test="):
        icrcli.probe(tmp_path / "f.h5", options=icrcli.ProbeOptions(test_data="x"))
