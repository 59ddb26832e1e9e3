"""The probe's solver reaches its tolerance (issue 19, point 6): on correlated features like a network's channels
(and on real pixels) Newton's method gets the largest gradient entry below GRAD_TOL in a few steps, where L-BFGS
stopped short; both solvers give the same answer; a probe that did not converge says so."""

import gzip

import numpy as np
import pytest

from conftest import SHARED_DATA
from icrcli.stats import probe as P
from test_probe import blobs, np_loss_grad


def correlated(n=600, d=32, seed=0):
    """Four classes read off a 4-dimensional latent seen through d strongly correlated features (as pooled
    channels of a network are), plus a little noise."""
    rng = np.random.default_rng(seed)
    lat = rng.normal(size=(n, 4))
    y = (lat[:, 0] > 0).astype(int) + 2 * (lat[:, 1] > 0)
    x = lat @ rng.normal(size=(4, d)) + 1e-3 * rng.normal(size=(n, d))
    return P.standardise(x)[0], y


def _check_optimum(z, y, c, l2, W, b, tol):
    _, grad = np_loss_grad(np.concatenate([W.ravel(), b]), z, y, c, l2)   # the gradient written out by hand
    assert np.abs(grad).max() <= tol


def test_newton_reaches_the_tolerance_on_correlated_features():
    z, y = correlated()
    W, b, info = P.fit_logistic(z, y, 4, 1e-4)
    assert info["solver"] == "newton" and info["converged"]
    assert info["grad_max"] <= P.GRAD_TOL and info["iterations"] <= 20
    _check_optimum(z, y, 4, 1e-4, W, b, 10 * P.GRAD_TOL)
    assert abs(b.sum()) < 1e-9           # the flat direction of the biases: held at 0, as L-BFGS from zero does


@pytest.mark.parametrize("l2", [1e-4, 1e-2])
def test_newton_and_lbfgs_give_the_same_answer(l2):
    x, y = blobs(300, 6, 3, sep=1.0, seed=3)
    z, = P.standardise(x)
    Wn, bn, n_info = P.fit_logistic(z, y, 3, l2, solver="newton")
    Wl, bl, l_info = P.fit_logistic(z, y, 3, l2, solver="lbfgs")
    assert (n_info["solver"], l_info["solver"]) == ("newton", "lbfgs")
    np.testing.assert_allclose(Wn, Wl, atol=1e-6)
    np.testing.assert_allclose(bn, bl, atol=1e-6)
    assert n_info["loss"] == pytest.approx(l_info["loss"], rel=1e-12)


def test_large_problems_and_no_penalty_use_lbfgs():
    z, y = correlated(n=200, d=(P.NEWTON_MAX_PARAMS // 4))          # (d + 1) * 4 > NEWTON_MAX_PARAMS
    assert P.fit_logistic(z, y, 4, 1e-4, max_iter=5)[2]["solver"] == "lbfgs"
    z, y = correlated(n=200, d=8)
    assert P.fit_logistic(z, y, 4, 0.0, max_iter=5)[2]["solver"] == "lbfgs"   # no penalty: maybe no optimum


def test_a_probe_that_did_not_converge_is_a_warning(monkeypatch):
    z, y = correlated()
    tr, te = P.stratified_split(y, 0.75, 0)
    ok = P.probe_features(z[tr], y[tr], z[te], y[te])
    assert ok["optimizer"]["converged"] and ok["warnings"] == []
    monkeypatch.setattr(P, "NEWTON_MAX_ITER", 1)
    cut = P.probe_features(z[tr], y[tr], z[te], y[te])
    assert not cut["optimizer"]["converged"] and cut["optimizer"]["iterations"] == 1
    assert len(cut["warnings"]) == 1 and "stopped after 1 iterations" in cut["warnings"][0]


def test_real_pixels_reach_the_tolerance():
    path = SHARED_DATA / "digits" / "digits.csv.gz"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    a = np.loadtxt(gzip.open(path), delimiter=",")
    x, y = a[:, :64], a[:, 64].astype(int)          # 8x8 digits: neighbouring pixels are strongly correlated
    tr, te = P.stratified_split(y, 0.75, 0)
    ztr, zte = P.standardise(x[tr], x[te])
    W, b, info = P.fit_logistic(ztr, y[tr], 10, 1e-4)
    assert info["grad_max"] <= P.GRAD_TOL and info["iterations"] <= 20
    _check_optimum(ztr, y[tr], 10, 1e-4, W, b, 10 * P.GRAD_TOL)
    assert np.mean(P.predict(zte, W, b) == y[te]) > 0.9
