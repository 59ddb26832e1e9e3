"""`icr score` / `icr info` from the command line: output conventions and bad input."""

import json

import h5py
import numpy as np
import pytest

import reference as ref


@pytest.fixture
def feats(tmp_path):
    h = ref.views(np.random.default_rng(0), n=200, k=2, d=6).astype(np.float32)
    p = tmp_path / "f.npy"
    np.save(p, h)
    return p, h


def test_json_on_stdout_summary_on_stderr(icr, feats):
    p, h = feats
    r = icr("score", p)
    assert r.code == 0
    out = r.json
    assert out["icr"] == pytest.approx(ref.icr(h)[0], rel=1e-6)
    for key in ("icr", "eigenvalues", "tau", "tau_rel", "n_images", "n_views", "dim", "trace_s", "trace_xi",
                "trace_h", "mean_lambda", "estimator", "min_eigenvalue", "effective_rank", "alignment", "lidar",
                "condition", "input", "provenance", "version"):
        assert key in out, key
    assert len(out["eigenvalues"]) == 6 and out["n_images"] == 200
    assert "ICR" in r.err and "{" not in r.err


def test_quiet_and_output_file(icr, feats, tmp_path):
    p, _ = feats
    r = icr("score", p, "-q", "-o", tmp_path / "r.json", "--ci")
    assert r.code == 0 and r.out == "" and r.err == ""
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["icr_ci"][0] < res["icr"] < res["icr_ci"][1] and res["icr_se"] > 0


def test_directions_file(icr, feats, tmp_path):
    p, _ = feats
    r = icr("score", p, "--directions", tmp_path / "d.npy", "--top", "3", "-q")
    assert r.code == 0
    assert np.load(tmp_path / "d.npy").shape == (3, 6)


def _bad(icr, *args, match):
    r = icr("score", *args)
    assert r.code == 2, (r.code, r.err)
    assert match in r.err, r.err
    assert "Traceback" not in r.err
    return r


def test_bad_inputs(icr, tmp_path, feats):
    p, h = feats
    _bad(icr, tmp_path / "missing.h5", match="no such file")
    (tmp_path / "junk.h5").write_text("hello")
    _bad(icr, tmp_path / "junk.h5", match="neither an HDF5 file nor a .npy")
    np.save(tmp_path / "r2.npy", h[:, 0])
    _bad(icr, tmp_path / "r2.npy", match="rank-3")
    np.save(tmp_path / "k1.npy", h[:, :1])
    _bad(icr, tmp_path / "k1.npy", match="ICR needs at least two views per image")
    np.save(tmp_path / "n1.npy", h[:1])
    _bad(icr, tmp_path / "n1.npy", match="at least two images")
    np.save(tmp_path / "int.npy", h.astype(np.int32))
    _bad(icr, tmp_path / "int.npy", match="float16, float32 or float64")
    before = p.read_bytes()
    _bad(icr, p, "-o", p, match="never writes over its input")
    assert p.read_bytes() == before
    r = icr("score", p, "--estimator", "nope")
    assert r.code == 2


def test_nonfinite(icr, tmp_path, feats):
    _, h = feats
    h = h.copy()
    h[37, 1, 2] = np.inf
    h[150, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", h)
    _bad(icr, tmp_path / "nan.npy", match="image 37")
    r = icr("score", tmp_path / "nan.npy", "--skip-nonfinite", "-q")
    assert r.code == 0
    assert r.json["n_skipped_nonfinite"] == 2 and r.json["n_images"] == 198
    keep = np.ones(200, bool)
    keep[[37, 150]] = False
    assert r.json["icr"] == pytest.approx(ref.icr(h[keep])[0], rel=1e-6)


def test_several_datasets_and_choice(icr, tmp_path, feats):
    _, h = feats
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = h
        f["grp/b"] = h[:100]
        f["labels"] = np.zeros(200)
    r = _bad(icr, tmp_path / "two.h5", match="several candidate datasets")
    assert "a" in r.err and "grp/b" in r.err
    r = icr("score", tmp_path / "two.h5", "--dataset", "grp/b", "-q")
    assert r.code == 0 and r.json["n_images"] == 100
    _bad(icr, tmp_path / "two.h5", "--dataset", "zzz", match="no dataset 'zzz'")


def test_singular_sigma_xi_with_zero_tau(icr, tmp_path, feats):
    _, h = feats
    h = h.copy()
    h[:, :, 3] = h[:, :1, 3]  # feature 3 never changes between views
    np.save(tmp_path / "sing.npy", h)
    _bad(icr, tmp_path / "sing.npy", "--tau", "0", match="not positive definite")
    assert icr("score", tmp_path / "sing.npy", "-q").code == 0  # the default relative ridge handles it


def test_partial_file_refused_unless_allowed(icr, tmp_path, feats):
    from icrcli.features.featurefile import write_feature_file
    _, h = feats
    parts = [{"start": 0, "features": {"blk": h[:120]}, "index": np.arange(120), "labels": None}]
    write_feature_file(tmp_path / "p.h5", {"blk": 6}, 200, 2, "float32", {"sigma": 0.5}, iter(parts), 32)
    _bad(icr, tmp_path / "p.h5", match="marked incomplete")
    r = icr("score", tmp_path / "p.h5", "--allow-partial", "-q")
    assert r.code == 0 and r.json["n_images"] == 120
    assert r.json["icr"] == pytest.approx(ref.icr(h[:120])[0], rel=1e-6)
    assert r.json["provenance"]["sigma"] == 0.5


def test_info(icr, tmp_path, feats):
    from icrcli.features.featurefile import write_feature_file
    _, h = feats
    parts = [{"start": 0, "features": {"a": h, "b": h[..., :3]}, "index": np.arange(200),
              "labels": np.arange(200) % 10}]
    write_feature_file(tmp_path / "f.h5", {"a": 6, "b": 3}, 200, 2, "float32", {"sigma": 0.3, "seed": 1},
                       iter(parts), 64)
    r = icr("info", tmp_path / "f.h5", "--json")
    assert r.code == 0
    d = r.json
    assert d["layers"] == ["a", "b"] and d["complete"] is True
    assert d["datasets"]["features/b"]["dim"] == 3
    text = icr("info", tmp_path / "f.h5").out
    assert "complete" in text and "N=200" in text
    _bad(icr, tmp_path / "f.h5", match="several candidate datasets")
    r = icr("score", tmp_path / "f.h5", "--layer", "b", "-q")
    assert r.code == 0 and r.json["dim"] == 3
    with h5py.File(tmp_path / "f.h5") as f:
        np.testing.assert_array_equal(f["labels"][:], np.arange(200) % 10)


def test_version_and_help(icr):
    from icrcli import __version__
    r = icr("--version")
    assert r.code == 0 and __version__ in r.out
    r = icr("score", "--help")
    assert r.code == 0 and "Examples" in r.out and "--tau-rel" in r.out


def test_ci_refuses_more_memory_than_the_machine_has(icr, feats, monkeypatch):
    import icrcli.stats.score as sc
    p, _ = feats
    monkeypatch.setattr(sc, "_physical_memory", lambda: 2 * sc._jackknife_bytes(6, 20) - 1)
    _bad(icr, p, "--ci", match="Lower --ci-groups")
    assert icr("score", p, "--ci", "--ci-groups", "10", "-q").code == 0


def test_identical_views_say_what_is_wrong(icr, tmp_path, feats):
    from icrcli.features.featurefile import write_feature_file
    _, h = feats
    same = np.repeat(h[:, :1], 2, axis=1)  # sigma 0 with --augment none: every view is the image itself
    np.save(tmp_path / "same.npy", same)
    r = _bad(icr, tmp_path / "same.npy", match="every view of each image is identical")
    assert "carry no nuisance" in r.err and "--sigma > 0" in r.err and "--augment paper" in r.err
    assert "--tau-rel" not in r.err  # not the option the user already has at its default
    parts = [{"start": 0, "features": {"blk": same}, "index": np.arange(200), "labels": None}]
    write_feature_file(tmp_path / "same.h5", {"blk": 6}, 200, 2, "float32", {"sigma": 0.0, "augment": "none"},
                       iter(parts), 64)
    r = _bad(icr, tmp_path / "same.h5", match="sigma = 0.0, augment = none")


def test_more_features_than_residual_degrees_of_freedom_warns(icr, tmp_path):
    h = ref.views(np.random.default_rng(1), n=30, k=2, d=80).astype(np.float32)
    np.save(tmp_path / "wide.npy", h)
    r = icr("score", tmp_path / "wide.npy")
    assert r.code == 0
    res = r.json
    cond = res["condition"]
    assert cond["residual_dof"] == 30 and cond["images_needed"] == 80
    assert cond["n_sigma_xi_below_tau"] >= 50  # the 50 empty directions at least
    assert len(res["warnings"]) == 2
    assert "D = 80 features exceed the N(K-1) = 30" in res["warnings"][0]
    assert "N >= D/(K-1) = 80 images (better about 160)" in res["warnings"][0]
    assert "Sigma_xi eigenvalues lie below tau" in res["warnings"][1]
    for w in res["warnings"]:
        assert "warning: " + w in r.err.replace("\n", " ")
    np.save(tmp_path / "ok.npy", ref.views(np.random.default_rng(2), n=200, k=2, d=6))
    ok = icr("score", tmp_path / "ok.npy")
    assert ok.code == 0 and ok.json["warnings"] == [] and "warning" not in ok.err


def test_terminal_gets_a_summary_not_the_spectrum(icr, feats, tmp_path, monkeypatch):
    import icrcli.cli.score as cli_score
    p, h = feats
    monkeypatch.setattr(cli_score, "_stdout_is_terminal", lambda: True)
    r = icr("score", p)
    assert r.code == 0
    assert r.out.startswith("ICR ") and "{" not in r.out and "-o FILE" in r.out
    assert f"{ref.icr(h)[0]:.4f}" in r.out
    assert r.err.count("ICR ") == 0  # said once, on the terminal
    r = icr("score", p, "-o", tmp_path / "r.json")  # -o still writes everything
    assert r.code == 0 and len(json.loads((tmp_path / "r.json").read_text())["eigenvalues"]) == 6


# The keys of a score result, in order, as they have always been (sweep and timeline records and saved results rely
# on them): spelled out here, not read from the statistics table, so that a change to the table shows here.
RESULT_KEYS = ["schema", "icr", "icr_bias_corrected", "bias_correction", "icr_tau_tenth", "mean_lambda",
               "min_eigenvalue", "eigenvalues", "tau", "tau_rel", "estimator", "n_images", "n_views", "dim", "trace_s",
               "trace_xi", "trace_h", "effective_rank", "alignment", "lidar", "condition", "warnings",
               "n_skipped_nonfinite", "input", "provenance", "options", "version", "cached", "cache_entry"]


def test_result_schema_is_one_shape(icr, feats):
    from icrcli.stats.result import SCHEMA, STATISTICS
    p, _ = feats
    plain, ci = icr("score", p, "-q").json, icr("score", p, "-q", "--ci").json
    assert plain["schema"] == ci["schema"] == SCHEMA == 1
    # "cached" and "cache_entry" (issue 15): every result says whether it came from the cache, and which entry.
    assert list(plain) == RESULT_KEYS
    assert list(STATISTICS) == RESULT_KEYS[1:RESULT_KEYS.index("warnings")]
    # --ci adds each interval after its statistic (issue 17: the companions' too); the existing keys keep their order.
    after = {"icr": ["icr_ci", "icr_se", "ci_groups", "ci_confidence", "icr_replicates"],
             "trace_s": ["trace_s_ci", "trace_s_se"], "trace_xi": ["trace_xi_ci", "trace_xi_se"],
             "effective_rank": ["effective_rank_ci", "effective_rank_se"]}
    assert list(ci) == [k for key in RESULT_KEYS for k in (key, *after.get(key, []))]


def _feature_file(tmp_path, h, name="f.h5"):
    from icrcli.features.featurefile import write_feature_file
    parts = [{"start": 0, "features": {"blk": h}, "index": np.arange(len(h)), "labels": None}]
    write_feature_file(tmp_path / name, {"blk": h.shape[2]}, len(h), h.shape[1], "float32", {"sigma": 0.3},
                       iter(parts), 64)
    return tmp_path / name


@pytest.mark.parametrize("cut", [0.5, 0.98])
def test_truncated_feature_file(icr, tmp_path, feats, cut):
    _, h = feats
    whole = _feature_file(tmp_path, h).read_bytes()
    assert icr("score", tmp_path / "f.h5", "-q").code == 0  # the file is good before it is cut
    short = tmp_path / "short.h5"
    short.write_bytes(whole[: int(len(whole) * cut)])
    for cmd in ("score", "info"):
        r = icr(cmd, short)
        assert r.code == 2, (cmd, r.code, r.err)
        assert "truncated or damaged" in r.err and "Traceback" not in r.err
    assert short.read_bytes() == whole[: int(len(whole) * cut)]


def test_dataset_with_no_features(icr, tmp_path):
    with h5py.File(tmp_path / "d0.h5", "w") as f:
        f["x"] = np.zeros((10, 2, 0), np.float32)
    for cmd in ("score", "info"):
        r = icr(cmd, tmp_path / "d0.h5")
        assert r.code == 2, (cmd, r.code, r.err)
        assert "D = 0 features" in r.err and "Traceback" not in r.err
