"""One loaded model and data set, many plans: levels that differ only in sigma share their clean views (decoded,
augmented once) and give files byte-identical to extracting each plan alone; each level resumes on its own.
And what `icr extract` records and says: --prediction, --images beyond the data, bad sigmas, no lock left."""

import h5py
import numpy as np
import pytest
import torch

from icrcli.features import compute
from icrcli.features import extract as ex
from icrcli.features.plan import Request, RunOptions, load_data, load_model, make_plan
from icrcli.models.resolve import ModelOptions

SIGMAS = (0.0, 0.3, 1.5)


@pytest.fixture(autouse=True)
def setup(monkeypatch, tmp_path):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    yield
    torch.set_num_threads(n)



@pytest.mark.slow
def test_levels_share_clean_views_resume_per_level_and_equal_single_plans(tiny_edm, tmp_path, monkeypatch,
                                                                         count_calls):
    model = load_model(tiny_edm / "net.safetensors", ModelOptions(), "cpu")
    data = load_data(tiny_edm / "imgs.npy", model)
    request = Request(sigma=SIGMAS[0], images=20, chunk_images=8, views=3)
    plans = [make_plan(model, data, request.at(s)) for s in SIGMAS]
    assert len({p.key for p in plans}) == 3 and all(p.model is model and p.data is data for p in plans)
    run = RunOptions(batch_size=3)
    alone = []
    for i, p in enumerate(plans):
        ex.extract(p, tmp_path / f"alone{i}.h5", run)
        alone.append((tmp_path / f"alone{i}.h5").read_bytes())
    assert len(set(alone)) == 3

    outs = [tmp_path / f"level{i}.h5" for i in range(3)]
    ex.extract(plans[1], outs[1], run)                         # level 1: already finished
    real = ex.compute_levels
    monkeypatch.setattr(ex, "compute_levels", _fails(real, 2))  # level 2: interrupted after its first chunk
    with pytest.raises(KeyboardInterrupt):
        ex.extract(plans[2], outs[2], run)
    monkeypatch.setattr(ex, "compute_levels", real)
    with h5py.File(outs[2]) as f:
        assert f.attrs["rows_done"] == 8 and not f.attrs["complete"]

    prepared = count_calls(ex, "prepare_rows")
    levels = count_calls(ex, "compute_levels")
    views = count_calls(compute, "clean_views")
    summaries = ex.extract_levels(plans, outs, run)
    assert [s["cached"] for s in summaries] == [False, True, False]
    assert [s["sigma"] for s in summaries] == list(SIGMAS)
    assert len(prepared) == 3                                  # each chunk decoded and augmented once
    assert [[p.sigma for p in call[0]] for call in levels] == [[0.0], [0.0, 1.5], [0.0, 1.5]]
    assert len(views) == 3 + 3 + 2                             # once per batch (20 images: 8, 8, 4), not per level
    for i in range(3):
        assert outs[i].read_bytes() == alone[i], i
        assert not outs[i].with_name(outs[i].name + ".parts").exists()
    assert not list(tmp_path.glob("*.lock"))


def test_levels_refuse_plans_that_differ_beyond_sigma(tiny_edm, tmp_path):
    model = load_model(tiny_edm / "net.safetensors", ModelOptions(), "cpu")
    data = load_data(tiny_edm / "imgs.npy", model)
    a = make_plan(model, data, Request(sigma=0.1, images=8))
    b = make_plan(model, data, Request(sigma=0.2, images=8, seed=1))
    with pytest.raises(ValueError, match="except sigma"):
        ex.extract_levels([a, b], [tmp_path / "a.h5", tmp_path / "b.h5"])


def _fails(fn, n):
    calls = {"n": 0}

    def wrapped(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return fn(*a, **k)
    return wrapped


def _cmd(d, out, *extra):
    return ["extract", d / "net.safetensors", "--data", d / "imgs.npy", "--sigma", "0.2", "--chunk-images", "16",
            "-o", out, *extra]


@pytest.mark.slow
def test_cli_records_prediction_and_reduced_images_and_leaves_no_lock(tiny_edm, tmp_path, icr):
    out = tmp_path / "f.h5"
    r = icr(*_cmd(tiny_edm, out, "--images", str(10**12), "--prediction", "eps"))
    assert r.code == 0, r.err
    assert f"--images {10**12}: the data hold 48 images; using all 48" in r.err
    assert "loading checkpoint" in r.err and "hashing data" in r.err
    assert r.json["images_requested"] == 10**12 and r.json["n_images"] == 48 and r.json["data_images"] == 48
    with h5py.File(out) as f:
        assert f.attrs["prediction"] == "eps" and f.attrs["images_requested"] == 10**12
        assert f.attrs["n_images"] == 48 and f.attrs["data_images"] == 48
        assert "prediction" not in f.attrs["config"]           # recorded, not part of the key
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob("*.parts"))
    r = icr(*_cmd(tiny_edm, tmp_path / "g.h5", "--images", "8", "-q"))
    assert r.code == 0 and r.err == ""                         # --quiet: nothing on stderr
    with h5py.File(tmp_path / "g.h5") as f:
        assert f.attrs["prediction"] == "" and f.attrs["images_requested"] == 8


@pytest.mark.parametrize("sigma", ["nan", "inf", "-inf"])
def test_cli_refuses_non_finite_sigma(tiny_edm, tmp_path, icr, sigma):
    r = icr("extract", tiny_edm / "net.safetensors", "--data", tiny_edm / "imgs.npy", f"--sigma={sigma}",
            "-o", tmp_path / "f.h5")
    assert r.code == 2 and "finite number >= 0" in r.err and "Traceback" not in r.err
    assert "loading checkpoint" not in r.err and not (tmp_path / "f.h5").exists()


def test_request_changes_cannot_leak_into_a_plan(tiny_edm):
    """The runner reads everything that shapes features from the plan: a Request is frozen."""
    import dataclasses
    req = Request(sigma=0.2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.sigma = 0.5
    assert req.at(0.5).sigma == 0.5 and req.sigma == 0.2 and np.isclose(req.at(0.5).at(0.2).sigma, 0.2)
