"""issue 18 in `icr sweep`: levels tied with the minimum (paired jackknife, against a dense recomputation), the
augmentation x sigma grid (each row equal to a sweep of its own), and the paper's probe (noise-only single views,
held-out data or cross-validation)."""

import json

import h5py
import numpy as np
import pytest
import torch

import reference as ref
from conftest import tiny_songunet  # noqa: F401


@pytest.fixture(autouse=True)
def cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "cache"
    torch.set_num_threads(n)


def _args(d, data, *extra):
    return ["sweep", d / "net.safetensors", "--data", data, "--chunk-images", "8", "--batch-size", "8", "-q", *extra]


def _features(rec):
    with h5py.File(rec["features"]) as f:
        return f["features"][rec["layer"]][:].astype(np.float64)


@pytest.mark.slow
def test_rise_from_min_is_the_paired_jackknife_of_a_dense_recomputation(tiny_edm, icr):
    r = icr(*_args(tiny_edm, tiny_edm / "imgs.npy", "--images", "24", "--sigmas", "0,0.3,1,3", "--ci-groups", "6"))
    assert r.code == 0, r.err
    res = json.loads(r.out)
    levels = res["levels"]
    low = min(levels, key=lambda lv: lv["icr"])
    h = {lv["sigma"]: _features(lv) for lv in levels}
    g = 6
    groups = np.arange(24) % g

    def reps(x):  # independent: drop each group's images and recompute ICR densely
        return np.array([ref.icr(x[groups != j])[0] for j in range(g)])

    base = reps(h[low["sigma"]])
    import scipy.stats
    t = scipy.stats.t.ppf(0.975, g - 1)
    for lv in levels:
        d = reps(h[lv["sigma"]]) - base
        se = np.sqrt((g - 1) / g * np.sum((d - d.mean()) ** 2))
        diff = lv["icr"] - low["icr"]
        assert lv["rise_from_min"]["difference"] == pytest.approx(diff, abs=1e-12)
        assert lv["rise_from_min"]["se"] == pytest.approx(se, rel=1e-6, abs=1e-12)
        assert lv["rise_from_min"]["ci"][0] == pytest.approx(diff - t * se, rel=1e-6, abs=1e-12)
        assert lv["tied_with_min"] == (lv is low or diff - t * se <= 0)
    (ties,) = res["ties"]
    assert ties["argmin_sigma"] == low["sigma"]
    assert ties["tied_sigmas"] == [lv["sigma"] for lv in levels if lv["tied_with_min"]]
    assert low["sigma"] in ties["tied_sigmas"]


@pytest.mark.slow
def test_augmentation_grid_rows_equal_their_own_sweeps(tiny_edm, tmp_path, icr):
    common = ["--images", "16", "--sigmas", "0,0.5"]
    r = icr(*_args(tiny_edm, tiny_edm / "imgs.npy", *common, "--augment", "crop", "--augment", "digits:rotate=10"))
    assert r.code == 0, r.err
    grid = json.loads(r.out)
    assert grid["augments"] == ["crop", "digits:rotate=10"]
    for aug in grid["augments"]:
        alone = icr(*_args(tiny_edm, tiny_edm / "imgs.npy", *common, "--augment", aug))
        assert alone.code == 0, alone.err
        one = json.loads(alone.out)
        row = [lv for lv in grid["levels"] if lv["augment"] == aug]
        assert [lv["icr"] for lv in row] == [lv["icr"] for lv in one["levels"]]
        (cell,) = [c for c in grid["augment_grid"] if c["augment"] == aug]
        first = min(row, key=lambda lv: lv["sigma"])
        h = _features(first)
        ss, sx = ref.covs(h)
        assert cell["residual_ratio"] == pytest.approx(np.trace(sx) / np.trace(ss), rel=1e-6)
        assert cell["argmin_sigma"] == min(row, key=lambda lv: lv["icr"])["sigma"]
    # the two augmentations really gave different views
    assert grid["levels"][0]["icr"] != grid["levels"][2]["icr"]
    pytest.importorskip("matplotlib")
    from icrcli.report.plot import _series_of, plot_result
    curves, rows = _series_of(grid)
    assert rows == "augmentation" and set(curves) == set(grid["augments"])
    assert plot_result(grid, tmp_path / "grid.png").stat().st_size > 0
    # outside a sweep a repeated --augment is what it always was: the last one given
    last = icr("extract", tiny_edm / "net.safetensors", "--data", tiny_edm / "imgs.npy", "--sigma", "0.5",
               "--images", "4", "--augment", "crop", "--augment", "paper", "-q", "-o", tmp_path / "e.h5")
    assert last.code == 0, last.err
    with h5py.File(tmp_path / "e.h5") as f:
        assert f.attrs["augment"] == "paper"


def _labelled(tmp_path, n, seed, name):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    imgs = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    imgs[labels % 2 == 1, :, :, 0] = 255  # a class-linked colour: something for the probe to find
    np.savez(tmp_path / name, images=imgs, labels=labels)
    return tmp_path / name


@pytest.mark.slow
def test_paper_probe_reads_noise_only_views_of_its_own_extraction(tiny_edm, tmp_path, icr):
    from icrcli.scans.probe import probe_file
    train, test = _labelled(tmp_path, 32, 1, "train.npz"), _labelled(tmp_path, 24, 2, "test.npz")
    r = icr(*_args(tiny_edm, train, "--images", "32", "--sigmas", "0.1,2", "--probe", "--probe-test-data", test))
    assert r.code == 0, r.err
    res = json.loads(r.out)
    for lv in res["levels"]:
        proto = lv["probe_protocol"]
        assert proto["name"] == "paper" and "held-out" in proto["evaluation"]
        with h5py.File(proto["features_file"]) as f:  # its own features: no augmentation, this sigma
            assert f.attrs["augment"] == "none" and f.attrs["sigma"] == pytest.approx(lv["sigma"])
        assert proto["features_file"] != lv["features"]  # the ICR's views are augmented (paper), the probe's not
        assert len(lv["probe_correct"]) == 24
    (verdict,) = res["probe"]
    assert 0 <= verdict["mcnemar_p"] <= 1 and verdict["argmax_accuracy_sigma"] in verdict["accuracy_tied_sigmas"]

    cv = icr(*_args(tiny_edm, train, "--images", "32", "--sigmas", "0.1", "--probe", "--probe-folds", "4"))
    assert cv.code == 0, cv.err
    (lv,) = json.loads(cv.out)["levels"]
    assert "4-fold" in lv["probe_protocol"]["evaluation"]
    want = probe_file(lv["probe_protocol"]["features_file"], folds=4)  # the same probe, run on its file
    assert lv["probe_test_accuracy"] == want["test_accuracy"] and lv["probe_correct"] == want["correct"]

    old = icr(*_args(tiny_edm, train, "--images", "32", "--sigmas", "0.1", "--probe", "--probe-protocol",
                     "view-mean", "--probe-test-data", test))
    assert old.code == 0, old.err
    (lv,) = json.loads(old.out)["levels"]
    assert lv["probe_protocol"]["name"] == "view-mean" and lv["probe_protocol"]["features_file"] == lv["features"]
    assert "held-out" in lv["probe_protocol"]["evaluation"] and len(lv["probe_correct"]) == 24
    alone = icr(*_args(tiny_edm, train, "--sigmas", "0.1", "--probe-test-data", test))
    assert alone.code == 2 and "add --probe" in alone.err


@pytest.mark.slow
def test_timeline_rises_are_paired_intervals_of_a_dense_recomputation(tiny_edm, tmp_path, icr):
    from safetensors.torch import save_file
    run = tmp_path / "run"
    run.mkdir()
    for step, seed in ((100, 1), (200, 2), (300, 3)):
        save_file({k: v.contiguous() for k, v in tiny_songunet(seed).state_dict().items()},
                  run / f"ckpt-{step}.safetensors")
    r = icr("timeline", run, "--data", tiny_edm / "imgs.npy", "--images", "16", "--chunk-images", "8", "--sigma",
            "0.5", "--ci-groups", "4", "-q")
    assert r.code == 0, r.err
    res = r.json
    (series,) = res["series"]
    pts = sorted(res["points"], key=lambda p: p["step"])
    low = min(pts, key=lambda p: p["icr"])
    groups = np.arange(16) % 4
    reps = {p["step"]: np.array([ref.icr(_features(p)[groups != j])[0] for j in range(4)]) for p in pts}
    for p, rise in zip(pts, series["rises"]):
        d = reps[p["step"]] - reps[low["step"]]
        assert rise["step"] == p["step"]
        assert rise["difference"] == pytest.approx(p["icr"] - low["icr"], abs=1e-12)
        assert rise["se"] == pytest.approx(np.sqrt(3 / 4 * np.sum((d - d.mean()) ** 2)), rel=1e-6, abs=1e-12)
        assert rise["beyond_interval"] == (rise["ci"][0] > 0)


def test_ties_on_simulated_levels_and_the_table_marks_them():
    """ties.annotate over the sigma axis on levels of known replicates: a level whose replicates sit just above the minimum's in
    every group (a sure rise, however small) is not tied; one that crosses it is."""
    from rich.console import Console

    from icrcli.report.table import records_table
    from icrcli.scans.engine import SIGMA
    from icrcli.scans.ties import annotate
    base = np.linspace(0.30, 0.32, 8)
    lv = [{"sigma": 0.0, "layer": "L", "augment": "a", "icr": 0.31, "icr_replicates": list(base)},
          {"sigma": 0.5, "layer": "L", "augment": "a", "icr": 0.3101, "icr_replicates": list(base + 1e-4)},
          {"sigma": 1.0, "layer": "L", "augment": "a", "icr": 0.3102,
           "icr_replicates": list(base + 2e-4 * np.array([1, -1] * 4))}]
    (t,) = annotate(lv, SIGMA)
    assert t["argmin_sigma"] == 0.0 and t["tied_sigmas"] == [0.0, 1.0]
    assert lv[1]["rise_from_min"]["se"] == pytest.approx(0, abs=1e-15) and not lv[1]["tied_with_min"]
    out = Console(record=True, width=200)
    out.print(records_table(lv, "sigma", "t", lv[0]))
    text = out.export_text()
    assert text.count("≈ tied") == 1 and "◀ min" in text


@pytest.mark.slow
def test_a_reference_split_probes_the_noise_only_views(tiny_edm, tmp_path, icr):
    """Issue 20's reference split (--probe-first) under the paper's protocol: the split's images, read from the
    levels' own extraction without augmentation."""
    from icrcli.scans.probe import probe_images
    train = _labelled(tmp_path, 32, 3, "train.npz")
    listed = [int(i) for i in np.random.default_rng(0).permutation(32)[:20]]
    (tmp_path / "ref.txt").write_text("\n".join(map(str, listed)))
    r = icr(*_args(tiny_edm, train, "--sigmas", "0.3", "--indices", tmp_path / "ref.txt", "--probe-first", "12"))
    assert r.code == 0, r.err
    (lv,) = json.loads(r.out)["levels"]
    proto = lv["probe_protocol"]
    assert proto["name"] == "paper" and "reference split" in proto["evaluation"]
    assert proto["features_file"] != lv["features"]
    want = probe_images(proto["features_file"], tuple(sorted(listed[:12])), tuple(sorted(listed[12:])),
                        layer=lv["layer"], protocol="paper")
    assert lv["probe_test_accuracy"] == want["test_accuracy"] and lv["probe_correct"] == want["correct"]
    both = icr(*_args(tiny_edm, train, "--sigmas", "0.3", "--indices", tmp_path / "ref.txt", "--probe-first", "12",
                      "--probe", "--probe-test-data", train))
    assert both.code == 2 and "Use one or the other" in both.err
