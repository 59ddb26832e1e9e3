"""The linear and k-NN probes (icrcli.stats.probe, icrcli.scans.probe, `icr probe`).

Independent checks: the L-BFGS solution against scipy's L-BFGS-B on the same loss written in numpy (float64),
the first-order optimality condition with the gradient written out by hand, k-NN against a brute-force loop,
accuracy on separable data (near 1) and on shuffled labels (chance within a few standard errors), invariance
of the probe to per-feature affine maps (the standardisation), and the CLI's JSON and its errors.
"""

import numpy as np
import pytest

from icrcli.errors import UserError
from icrcli.stats import probe as P


def blobs(n, d, c, sep, seed):
    """n points in d dims, c classes, Gaussian blobs whose means are sep apart in scale."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(c, d)) * sep
    y = np.arange(n) % c
    return means[y] + rng.normal(size=(n, d)), y


def np_loss_grad(theta, x, y, c, l2):
    """Mean cross-entropy + l2 ||W||^2 and its gradient, by hand in numpy (float64). theta = [W.ravel(), b]."""
    d = x.shape[1]
    W, b = theta[:d * c].reshape(d, c), theta[d * c:]
    z = x @ W + b
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    onehot = np.eye(c)[y]
    loss = -np.mean(np.log(p[np.arange(len(y)), y])) + l2 * np.sum(W * W)
    g = (p - onehot) / len(y)
    return loss, np.concatenate([(x.T @ g + 2 * l2 * W).ravel(), g.sum(axis=0)])


def test_separable_features_give_accuracy_near_one():
    x, y = blobs(400, 8, 4, sep=6.0, seed=0)
    tr, te = P.stratified_split(y, 0.75, 0)
    r = P.probe_features(x[tr], y[tr], x[te], y[te], knn=5)
    assert r["test_accuracy"] >= 0.99 and r["train_accuracy"] == 1.0
    assert r["knn"]["test_accuracy"] >= 0.99
    assert (r["n_classes"], r["n_train"], r["n_test"]) == (4, 300, 100)
    assert r["optimizer"]["converged"]


@pytest.mark.slow
def test_shuffled_labels_give_chance_within_a_few_standard_errors():
    x, y = blobs(2400, 10, 4, sep=6.0, seed=1)
    y = np.random.default_rng(2).permutation(y)      # labels carry no information about x
    tr, te = P.stratified_split(y, 0.5, 0)
    r = P.probe_features(x[tr], y[tr], x[te], y[te], knn=15)
    se = np.sqrt(0.25 * 0.75 / r["n_test"])
    assert abs(r["test_accuracy"] - 0.25) < 4 * se
    assert abs(r["knn"]["test_accuracy"] - 0.25) < 4 * se
    assert r["test_accuracy_se"] == pytest.approx(np.sqrt(r["test_accuracy"] * (1 - r["test_accuracy"])
                                                          / r["n_test"]))


@pytest.mark.parametrize("l2", [1e-4, 1e-2])
def test_solution_satisfies_first_order_optimality(l2):
    x, y = blobs(300, 6, 3, sep=1.0, seed=3)          # overlapping classes: an interior optimum
    z, = P.standardise(x)
    W, b, info = P.fit_logistic(z, y, 3, l2)
    _, grad = np_loss_grad(np.concatenate([W.ravel(), b]), z, y, 3, l2)
    assert np.abs(grad).max() < 1e-7
    assert info["grad_max"] < 1e-7 and info["converged"]


def test_matches_an_independent_solver():
    from scipy.optimize import minimize
    x, y = blobs(60, 3, 3, sep=1.5, seed=4)
    z, = P.standardise(x)
    l2 = 1e-3
    W, b, info = P.fit_logistic(z, y, 3, l2)
    ref = minimize(np_loss_grad, np.zeros(3 * 3 + 3), args=(z, y, 3, l2), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000})
    np.testing.assert_allclose(np.concatenate([W.ravel(), b]), ref.x, rtol=1e-5, atol=1e-6)
    assert info["loss"] == pytest.approx(ref.fun, rel=1e-10)


def test_probe_is_invariant_to_per_feature_affine_maps():
    x, y = blobs(200, 5, 3, sep=1.0, seed=5)
    tr, te = P.stratified_split(y, 0.6, 1)
    a = P.probe_features(x[tr], y[tr], x[te], y[te], knn=3)
    scale, shift = np.array([1e-3, 5.0, 1.0, 300.0, 0.2]), np.array([1e4, -3.0, 0.0, 7.0, 1.0])
    b = P.probe_features(x[tr] * scale + shift, y[tr], x[te] * scale + shift, y[te], knn=3)
    for key in ("train_accuracy", "test_accuracy"):
        assert a[key] == b[key]
    assert a["knn"]["test_accuracy"] == b["knn"]["test_accuracy"]
    assert 0.4 < a["test_accuracy"] < 1.0      # a case where the predictions could differ


def test_constant_feature_is_centred_not_blown_up():
    x, _ = blobs(90, 3, 3, sep=3.0, seed=6)
    x = np.hstack([x, np.full((90, 1), 0.1)])      # 0.1 is inexact in binary: the mean rounds
    z, = P.standardise(x)
    assert np.abs(z[:, -1]).max() < 1e-12


def test_knn_against_brute_force():
    rng = np.random.default_rng(7)
    tr, te = rng.normal(size=(50, 4)), rng.normal(size=(20, 4))
    ty = rng.integers(0, 3, 50)
    k = 5
    got = P.knn_predict(tr, ty, te, k, 3)
    cos = (te / np.linalg.norm(te, axis=1, keepdims=True)) @ (tr / np.linalg.norm(tr, axis=1, keepdims=True)).T
    for i in range(len(te)):
        nn = np.argsort(-cos[i])[:k]
        counts = np.bincount(ty[nn], minlength=3)
        best = np.flatnonzero(counts == counts.max())
        sims = [cos[i, nn][ty[nn] == c].sum() for c in best]
        assert got[i] == best[int(np.argmax(sims))]


def test_stratified_split_is_deterministic_disjoint_and_stratified():
    y = np.repeat([3, 7, 9], [40, 20, 8])
    tr, te = P.stratified_split(y, 0.75, 0)
    tr2, te2 = P.stratified_split(y, 0.75, 0)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert not set(tr) & set(te) and len(tr) + len(te) == len(y)
    assert [int((y[tr] == c).sum()) for c in (3, 7, 9)] == [30, 15, 6]
    assert not np.array_equal(P.stratified_split(y, 0.75, 1)[0], tr)


def test_bad_inputs_are_user_errors():
    x, y = blobs(40, 3, 2, sep=2.0, seed=8)
    with pytest.raises(UserError, match="at least two"):
        P.probe_features(x, np.zeros(40, int), x, np.zeros(40, int))
    with pytest.raises(UserError, match="class\\(es\\) 1 have no test image"):
        P.probe_features(x, y, x[y == 0], y[y == 0])
    with pytest.raises(UserError, match="class 5 has 1 image"):
        P.stratified_split(np.array([0, 0, 5, 0]), 0.5, 0)
    with pytest.raises(UserError, match="NaN"):
        x2 = x.copy()
        x2[3, 1] = np.nan
        P.probe_features(x2, y, x, y)


# ----------------------------------------------------------------------------------------------------------
# Feature files and the CLI.

def write_features(path, s, labels, views=2, seed=0, noise=0.1):
    """A feature file whose view features are s plus small per-view noise (so the mean over views is ~s)."""
    from icrcli.features.featurefile import write_feature_file
    rng = np.random.default_rng(seed)
    n, d = s.shape
    h = (s[:, None, :] + noise * rng.normal(size=(n, views, d))).astype(np.float32)
    part = {"start": 0, "features": {"blk": h}, "index": np.arange(n),
            "labels": None if labels is None else np.asarray(labels)}
    write_feature_file(path, {"blk": d}, n, views, "float32", {"sigma": 0.5}, iter([part]))
    return h


@pytest.mark.slow
def test_cli_probe_split_and_test_file(icr, tmp_path):
    x, y = blobs(120, 6, 3, sep=1.2, seed=9)
    h = write_features(tmp_path / "a.h5", x, y)
    r = icr("probe", tmp_path / "a.h5", "--knn", "5", "--split", "0.5", "--seed", "3", "--protocol", "view-mean")
    assert r.code == 0, r.err
    j = r.json
    assert j["schema"] == 1 and j["version"] and j["layer"] == "blk"
    assert (j["n_classes"], j["n_train"], j["n_test"]) == (3, 60, 60)
    tr, te = P.stratified_split(y, 0.5, 3)
    s = h.astype(np.float64).mean(axis=1)
    ref = P.probe_features(s[tr], y[tr], s[te], y[te], knn=5)
    assert j["test_accuracy"] == ref["test_accuracy"] and j["knn"]["test_accuracy"] == ref["knn"]["test_accuracy"]
    assert "test accuracy" in r.err

    x2, y2 = blobs(60, 6, 3, sep=1.2, seed=10)
    write_features(tmp_path / "b.h5", x2, y2, seed=1)
    r = icr("probe", tmp_path / "a.h5", "--test", tmp_path / "b.h5", "-o", tmp_path / "out.json", "-q",
            "--protocol", "view-mean")
    assert r.code == 0, r.err
    import json
    j = json.loads((tmp_path / "out.json").read_text())
    assert (j["n_train"], j["n_test"], j["split"]["kind"]) == (120, 60, "file")


def test_cli_probe_refuses_bad_input(icr, tmp_path):
    x, y = blobs(30, 4, 3, sep=1.0, seed=11)
    write_features(tmp_path / "nolab.h5", x, None)
    r = icr("probe", tmp_path / "nolab.h5")
    assert r.code == 2 and "no /labels" in r.err
    write_features(tmp_path / "one.h5", x, np.zeros(30, int))
    r = icr("probe", tmp_path / "one.h5")
    assert r.code == 2 and "at least two" in r.err
    np.save(tmp_path / "f.npy", np.zeros((30, 2, 4), np.float32))
    r = icr("probe", tmp_path / "f.npy")
    assert r.code == 2 and "holds no labels" in r.err
    write_features(tmp_path / "ok.h5", x, y)
    r = icr("probe", tmp_path / "ok.h5", "-o", tmp_path / "ok.h5")
    assert r.code == 2 and "never writes over its input" in r.err


# ----------------------------------------------------------------------------------------------------------
# The paper's protocol (issue 18): view 0, a held-out file or k-fold cross-validation; paired tests.

def test_stratified_folds_partition_each_class_evenly():
    from icrcli.stats.crossval import stratified_folds
    y = np.repeat([0, 1, 2], [10, 7, 23])
    f = stratified_folds(y, 5, seed=4)
    assert np.array_equal(f, stratified_folds(y, 5, seed=4)) and not np.array_equal(f, stratified_folds(y, 5, 5))
    for c in (0, 1, 2):
        counts = np.bincount(f[y == c], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert np.bincount(f).max() - np.bincount(f).min() <= 1  # the round-robin carries over between classes


def test_cross_validation_predicts_each_image_once_by_a_probe_that_never_saw_it():
    from icrcli.stats.crossval import cross_validate, stratified_folds
    x, y = blobs(90, 5, 3, sep=0.8, seed=12)
    cv = cross_validate(x, y, k=3, seed=1, knn=3)
    folds = stratified_folds(y, 3, 1)
    want = np.zeros(len(y), bool)
    for f in range(3):  # independently: the one-split probe on each fold
        r = P.probe_features(x[folds != f], y[folds != f], x[folds == f], y[folds == f])
        want[folds == f] = np.frombuffer(r["correct"].encode(), np.uint8) == ord("1")
        assert cv["fold_accuracies"][f] == r["test_accuracy"]
    assert np.array_equal(cv["correct"], want)
    assert cv["test_accuracy"] == want.mean()


def test_mcnemar_against_the_binomial_by_hand():
    from math import comb
    from icrcli.stats.crossval import mcnemar
    a = np.array([1] * 30 + [1] * 9 + [0] * 2 + [0] * 9, bool)
    b = np.array([1] * 30 + [0] * 9 + [1] * 2 + [0] * 9, bool)
    r = mcnemar(a, b)
    p = 2 * sum(comb(11, i) for i in range(0, 3)) / 2 ** 11
    assert (r["only_a"], r["only_b"]) == (9, 2) and r["p_value"] == pytest.approx(p, rel=1e-12)
    assert mcnemar(a, a)["p_value"] == 1.0


def _views(path, s, labels, noise, seed, augment="none"):
    """A feature file whose K = 3 views are s plus large per-view noise: view 0 alone is much noisier than the
    mean over views."""
    from icrcli.features.featurefile import write_feature_file
    rng = np.random.default_rng(seed)
    n, d = s.shape
    h = (s[:, None, :] + noise * rng.normal(size=(n, 3, d))).astype(np.float32)
    part = {"start": 0, "features": {"blk": h}, "index": np.arange(n), "labels": np.asarray(labels)}
    write_feature_file(path, {"blk": d}, n, 3, "float32", {"sigma": 0.5, "augment": augment}, iter([part]))
    return h


def test_paper_protocol_reads_view_zero_and_tests_on_the_held_out_file(tmp_path):
    from icrcli.scans.probe import probe_file
    xa, ya = blobs(240, 6, 3, sep=1.0, seed=13)  # one draw, so training and test images share class means
    x, y, tx, ty = xa[:150], ya[:150], xa[150:], ya[150:]
    h = _views(tmp_path / "tr.h5", x, y, 1.5, 0)
    th = _views(tmp_path / "te.h5", tx, ty, 1.5, 1)
    r = probe_file(tmp_path / "tr.h5", test=tmp_path / "te.h5")
    want = P.probe_features(h[:, 0].astype(np.float64), y, th[:, 0].astype(np.float64), ty)
    assert r["test_accuracy"] == want["test_accuracy"] and r["correct"] == want["correct"]
    assert r["protocol"]["name"] == "paper" and "held-out" in r["protocol"]["evaluation"] and not r["warnings"]
    mean = probe_file(tmp_path / "tr.h5", test=tmp_path / "te.h5", protocol="view-mean")
    assert mean["test_accuracy"] > r["test_accuracy"]  # the mean of 3 noisy views is cleaner: not what was probed

    cv = probe_file(tmp_path / "tr.h5", folds=4, seed=2)
    from icrcli.stats.crossval import cross_validate
    assert cv["test_accuracy"] == cross_validate(h[:, 0].astype(np.float64), y, 4, 2)["test_accuracy"]
    assert cv["split"]["kind"] == "cv" and "4-fold" in cv["protocol"]["evaluation"] and len(cv["correct"]) == 150


def test_paper_protocol_warns_on_augmented_views(tmp_path):
    from icrcli.scans.probe import probe_file
    x, y = blobs(60, 4, 2, sep=1.0, seed=15)
    _views(tmp_path / "a.h5", x, y, 0.3, 0, augment="paper")
    r = probe_file(tmp_path / "a.h5", folds=3)
    assert any("--augment none" in w for w in r["warnings"])
    assert not probe_file(tmp_path / "a.h5", protocol="view-mean")["warnings"]
