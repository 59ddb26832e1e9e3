"""icr score's numerics against a dense float64 reference, identities, closed forms and invariances."""

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from icrcli.stats import eigensolve
from icrcli.stats.estimators import covariances
from icrcli.features.featurefile import open_features
from icrcli.stats.moments import from_block, merge, merge_all
from icrcli.stats.score import ScoreOptions, score_file, score_source

import reference as ref


def _score_array(tmp_path, h, **kw):
    p = tmp_path / "f.npy"
    np.save(p, h)
    return score_file(p, opts=ScoreOptions(**kw))[0]


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["paper", "plugin"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("block", [1, 7, 64, None])
def test_matches_dense_reference(tmp_path, estimator, dtype, block):
    rng = np.random.default_rng(1)
    h = ref.views(rng, n=300, k=3, d=10).astype(dtype)
    r = _score_array(tmp_path, h, estimator=estimator, block_images=block)
    want, lam, tau = ref.icr(h, estimator)
    assert r["icr"] == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(r["eigenvalues"], lam, rtol=1e-6, atol=1e-9 * abs(lam).max())
    assert r["tau"] == pytest.approx(tau, rel=1e-6)
    assert r["eigenvalues"] == sorted(r["eigenvalues"], reverse=True)


@pytest.mark.parametrize("estimator", ["paper", "plugin"])
def test_large_common_offset(tmp_path, estimator):
    rng = np.random.default_rng(2)
    h = ref.views(rng, n=500, k=2, d=8, offset=1e4).astype(np.float32)
    r = _score_array(tmp_path, h, estimator=estimator, block_images=37)
    assert r["icr"] == pytest.approx(ref.icr(h, estimator)[0], rel=1e-6)


def test_plugin_over_paper_is_k_minus_1_over_k(tmp_path):
    rng = np.random.default_rng(3)
    for k in (2, 3, 5):
        h = ref.views(rng, n=200, k=k, d=6)
        paper = _score_array(tmp_path, h, estimator="paper", tau=0.0)["icr"]
        plugin = _score_array(tmp_path, h, estimator="plugin", tau=0.0)["icr"]
        assert plugin / paper == pytest.approx((k - 1) / k, rel=1e-10)


def test_mean_lambda_is_trace_of_inverse_product():
    rng = np.random.default_rng(4)
    m = from_block(ref.views(rng, n=200, k=4, d=9))
    c = covariances(m, "paper")
    tau = 0.05
    spec = eigensolve.solve(c.sigma_s, c.sigma_xi, tau)
    tr = np.trace(np.linalg.solve(c.sigma_xi + tau * np.eye(9), c.sigma_s)) / 9
    assert spec.eigenvalues.mean() == pytest.approx(tr, rel=1e-10)


def test_two_view_formulas_hold_literally():
    # Paper App. B.6: t = (h1+h2)/2, d = h1-h2, Sigma_xi = Cov(d)/2, Sigma_s = Cov(t) - Cov(d)/4.
    # d has mean zero by exchangeability of the views, so Cov(d) is its second moment about zero; centring it
    # on the sample mean would make the result depend on which view is called "first".
    rng = np.random.default_rng(5)
    h = ref.views(rng, n=300, k=2, d=5)
    t, d = h.mean(1), h[:, 0] - h[:, 1]
    cov_t = np.cov(t.T, bias=True)
    cov_d = d.T @ d / len(d)
    c = covariances(from_block(h), "paper")
    np.testing.assert_allclose(c.sigma_xi, cov_d / 2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c.sigma_s, cov_t - cov_d / 4, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("estimator", ["paper", "plugin"])
def test_split_sums_to_total_covariance(estimator):
    rng = np.random.default_rng(6)
    h = ref.views(rng, n=100, k=3, d=4)
    c = covariances(from_block(h), estimator)
    np.testing.assert_allclose(c.sigma_s + c.sigma_xi, np.cov(h.reshape(-1, 4).T, bias=True), atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 6])
def test_closed_form_gaussian(tmp_path, k):
    # s ~ N(0, diag(a)), xi ~ N(0, diag(b)): with the paper's estimator lambda_j -> a_j / b_j for any K.
    rng = np.random.default_rng(7)
    a, b = np.array([4.0, 1.0, 0.25, 9.0]), np.array([1.0, 2.0, 1.0, 0.5])
    n = 60000
    h = rng.normal(size=(n, 1, 4)) * np.sqrt(a) + rng.normal(size=(n, k, 4)) * np.sqrt(b)
    r = _score_array(tmp_path, h, tau=0.0)
    np.testing.assert_allclose(r["eigenvalues"], np.sort(a / b)[::-1], rtol=0.05)
    assert r["icr"] == pytest.approx(1 / (1 + np.mean(a / b)), rel=0.02)


def test_pure_noise_gives_icr_near_one(tmp_path):
    rng = np.random.default_rng(8)
    r = _score_array(tmp_path, rng.normal(size=(20000, 2, 6)), tau=0.0)
    assert r["icr"] == pytest.approx(1.0, abs=0.02)
    assert r["min_eigenvalue"] < 0  # reported, not clipped: Sigma_s is indefinite here


def test_invariances(tmp_path):
    rng = np.random.default_rng(9)
    h = ref.views(rng, n=300, k=3, d=7)
    base = _score_array(tmp_path, h)["icr"]
    q, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    variants = {
        "scale": h * 123.0,
        "rotate": h @ q,
        "offset": h + 50.0,
        "permute images": h[rng.permutation(300)],
        "permute views": np.stack([x[rng.permutation(3)] for x in h]),
    }
    for name, v in variants.items():
        assert _score_array(tmp_path, v)["icr"] == pytest.approx(base, rel=1e-9), name


def test_merge_of_halves_equals_whole():
    rng = np.random.default_rng(10)
    h = ref.views(rng, n=101, k=3, d=5)
    whole, halves = from_block(h), merge(from_block(h[:40]), from_block(h[40:]))
    for f in ("mean_s", "m2_s", "w_xi"):
        np.testing.assert_allclose(getattr(halves, f), getattr(whole, f), rtol=1e-12, atol=1e-12)
    assert halves.n == whole.n == 101
    many = merge_all(from_block(h[i:i + 9]) for i in range(0, 101, 9))
    np.testing.assert_allclose(many.m2_s, whole.m2_s, rtol=1e-12, atol=1e-12)


def test_jackknife_against_direct_leave_one_group_out(tmp_path):
    rng = np.random.default_rng(11)
    h = ref.views(rng, n=120, k=2, d=4)
    r = _score_array(tmp_path, h, ci=True, ci_groups=6, block_images=17)
    groups = np.arange(120) % 6
    reps = np.array([ref.icr(h[groups != g])[0] for g in range(6)])
    se = np.sqrt(5 / 6 * np.sum((reps - reps.mean()) ** 2))
    assert r["icr_se"] == pytest.approx(se, rel=1e-6)
    half = scipy.stats.t.ppf(0.975, 5) * se
    np.testing.assert_allclose(r["icr_ci"], [r["icr"] - half, r["icr"] + half], rtol=1e-6)
    assert r["icr_ci"][0] < r["icr"] < r["icr_ci"][1]


def test_companion_statistics(tmp_path):
    rng = np.random.default_rng(12)
    h = ref.views(rng, n=400, k=3, d=6)
    r = _score_array(tmp_path, h)
    ss, sx = ref.covs(h, "paper")
    # alignment: mean squared distance between two views of one image, computed directly
    pairs = [np.sum((h[:, i] - h[:, j]) ** 2, axis=1).mean() for i in range(3) for j in range(3) if i != j]
    assert r["alignment"] == pytest.approx(np.mean(pairs), rel=1e-9)
    assert r["alignment"] == pytest.approx(2 * np.trace(sx), rel=1e-9)
    assert r["trace_h"] == pytest.approx(np.trace(np.cov(h.reshape(-1, 6).T, bias=True)), rel=1e-9)
    assert r["trace_s"] + r["trace_xi"] == pytest.approx(r["trace_h"], rel=1e-9)
    # RankMe from singular values of the centred matrix of all N*K rows
    x = h.reshape(-1, 6) - h.reshape(-1, 6).mean(0)
    sv = np.linalg.svd(x, compute_uv=False)
    p = sv / sv.sum() + 1e-7
    assert r["effective_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)
    # LiDAR (Thilak et al.) from its own definition: Sigma_w^{-1/2} Sigma_b Sigma_w^{-1/2}
    s = h.mean(1)
    sb = np.cov(s.T)  # 1/(N-1)
    sw = np.einsum("nkd,nke->de", h - s[:, None], h - s[:, None]) / (400 * 2) + 1e-4 * np.eye(6)
    w, v = np.linalg.eigh(sw)
    isq = v @ np.diag(w ** -0.5) @ v.T
    lam = np.linalg.eigvalsh(isq @ sb @ isq)
    p = lam / lam.sum() + 1e-8
    assert r["lidar"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)


def test_directions_are_fisher_directions(tmp_path):
    rng = np.random.default_rng(13)
    h = ref.views(rng, n=300, k=2, d=5)
    np.save(tmp_path / "f.npy", h)
    r, dirs = score_file(tmp_path / "f.npy", opts=ScoreOptions(top=2))
    ss, sx = ref.covs(h)
    b = sx + r["tau"] * np.eye(5)
    for lam, v in zip(r["eigenvalues"][:2], dirs):
        np.testing.assert_allclose(ss @ v, lam * b @ v, rtol=1e-6, atol=1e-9)
        assert v @ b @ v == pytest.approx(1.0, rel=1e-6)


def test_relative_tau_scales_with_features(tmp_path):
    rng = np.random.default_rng(14)
    h = ref.views(rng, n=100, k=2, d=4)
    a, b = _score_array(tmp_path, h), _score_array(tmp_path, h * 10)
    assert b["tau"] == pytest.approx(100 * a["tau"], rel=1e-9)
    assert a["tau_rel"] == 1e-3


def test_hdf5_chunked_source(tmp_path):
    import h5py
    rng = np.random.default_rng(15)
    h = ref.views(rng, n=250, k=2, d=8).astype(np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("feats", data=h, chunks=(16, 2, 8))
    src = open_features(tmp_path / "x.h5")
    assert src.dataset == "feats" and src.chunk_rows == 16
    assert src.block_images(None) % 16 == 0 or src.block_images(None) == 250
    r = score_source(src, ScoreOptions(block_images=40))[0]
    assert r["icr"] == pytest.approx(ref.icr(h)[0], rel=1e-6)


def test_merge_all_of_nothing_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one"):
        merge_all([])
    m = from_block(ref.views(np.random.default_rng(16), n=5, k=2, d=3))
    assert merge_all([m]) is m


@pytest.mark.parametrize("k", [2, 3, 7])
def test_helmert_contrasts_have_the_residual_scatter(k):
    from icrcli.stats.moments import helmert
    h = ref.views(np.random.default_rng(17), n=50, k=k, d=4)
    out = np.empty(50 * (k - 1) * 4)
    s = helmert(h, out)
    c = out.reshape(-1, 4)
    xi = (h - h.mean(1, keepdims=True)).reshape(-1, 4)
    np.testing.assert_allclose(s, h.mean(1), rtol=1e-14)
    np.testing.assert_allclose(c.T @ c, xi.T @ xi, rtol=1e-12, atol=1e-12)
    # each contrast sums the views with weights that sum to zero: an offset shared by the views drops out
    out2 = np.empty_like(out)
    np.testing.assert_allclose(helmert(h + 1e6, out2) - 1e6, s, atol=1e-8)
    np.testing.assert_allclose(out2, out, atol=1e-8)


@pytest.mark.slow
def test_scoring_module_does_not_import_scipy_stats():
    # scipy.stats costs ~0.8 s of start-up and is needed only for the interval's t quantile (issue 10)
    import subprocess
    import sys
    code = "import sys, icrcli.stats.score; print('scipy.stats' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
