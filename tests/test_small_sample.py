"""Small-sample honesty (issue 18, point 4): the N(K-1) < 10 D warning, the bias-corrected ICR checked on
simulated Gaussian features of known ICR, and ICR at a ten times smaller ridge against a dense solve."""

import numpy as np
import pytest
import scipy.linalg

from icrcli.stats import diagnostics
from icrcli.stats.moments import from_block
from icrcli.stats.score import ScoreOptions, statistics


def _population(rng, d):
    """A random Sigma_s (PSD, rank d) and Sigma_xi (PD) and the true mean lambda tr(Sigma_xi^-1 Sigma_s)/D."""
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    sigma_s = a @ a.T / d
    sigma_xi = b @ b.T / d + 0.5 * np.eye(d)
    return sigma_s, sigma_xi, float(np.trace(np.linalg.solve(sigma_xi, sigma_s)) / d)


def _draw(rng, n, k, sigma_s, sigma_xi):
    """(n, k, d) Gaussian views h_ik = s_i + xi_ik."""
    d = len(sigma_s)
    s = rng.multivariate_normal(np.zeros(d), sigma_s, size=n)
    xi = rng.multivariate_normal(np.zeros(d), sigma_xi, size=(n, k))
    return s[:, None, :] + xi


@pytest.mark.parametrize("estimator,k", [("paper", 2), ("paper", 4), ("plugin", 3)])
def test_bias_corrected_mean_lambda_is_unbiased(estimator, k):
    """At N(K-1) about 3 D the plain mean lambda is far off its population value; the corrected one is within
    Monte-Carlo error of it (tau = 0, where the correction is exact for Gaussian features)."""
    rng = np.random.default_rng(0)
    d = 6
    n = -(-3 * d // (k - 1))
    sigma_s, sigma_xi, lam = _population(rng, d)
    # the plugin's population mean lambda: K/(K-1) (lambda + 1/K)
    target = lam if estimator == "paper" else k / (k - 1) * (lam + 1 / k)
    plain, corrected = [], []
    for _ in range(3000):
        st, _ = statistics(from_block(_draw(rng, n, k, sigma_s, sigma_xi)), ScoreOptions(estimator=estimator, tau=0.0))
        plain.append(st["mean_lambda"])
        corrected.append(1 / st["icr_bias_corrected"] - 1)
    plain, corrected = np.array(plain), np.array(corrected)
    se = corrected.std() / np.sqrt(len(corrected))
    assert abs(corrected.mean() - target) < 4 * se
    assert plain.mean() - target > 10 * plain.std() / np.sqrt(len(plain))  # the old estimate really is biased
    # and the factor is the inverse-Wishart one
    m = n * (k - 1)
    assert diagnostics.inflation(n, k, d) == pytest.approx(m / (m - d - 1))


def test_bias_correction_undefined_without_enough_dof():
    assert diagnostics.bias_corrected_icr(1.0, n_images=4, n_views=2, dim=3, estimator="paper") is None
    assert diagnostics.bias_corrected_icr(1.0, n_images=5, n_views=2, dim=3, estimator="paper") is not None


def test_warning_below_ten_dof_per_feature_names_the_n_that_would_do():
    rng = np.random.default_rng(1)
    d, k = 8, 3
    sigma_s, sigma_xi, _ = _population(rng, d)
    few, _ = statistics(from_block(_draw(rng, 30, k, sigma_s, sigma_xi)), ScoreOptions())  # 60 < 80 dof
    assert any("fewer than 10 per feature" in w and "N >= 40 images at K = 3" in w for w in few["warnings"])
    enough, _ = statistics(from_block(_draw(rng, 40, k, sigma_s, sigma_xi)), ScoreOptions())  # 80 dof
    assert not any("per feature" in w for w in enough["warnings"])


def test_icr_at_a_tenth_of_the_ridge_matches_a_dense_solve():
    rng = np.random.default_rng(2)
    d = 7
    sigma_s, sigma_xi, _ = _population(rng, d)
    h = _draw(rng, 50, 2, sigma_s, sigma_xi)
    st, _ = statistics(from_block(h), ScoreOptions(tau_rel=0.3))
    # independent: covariances straight from the definition (paper estimator, K = 2)
    n, k = h.shape[:2]
    s = h.mean(axis=1)
    xi = h - s[:, None]
    sxi = np.einsum("ikd,ike->de", xi, xi) / (n * (k - 1))
    ss = np.cov(s.T, bias=True) - sxi / k
    tau = 0.3 * np.trace(sxi) / d
    assert st["tau"] == pytest.approx(tau, rel=1e-10)
    lam = scipy.linalg.eigh(ss, sxi + tau / 10 * np.eye(d), eigvals_only=True)
    assert st["icr_tau_tenth"] == pytest.approx(1 / (1 + lam.mean()), rel=1e-9)
    assert st["icr_tau_tenth"] != pytest.approx(st["icr"], rel=1e-6)  # the ridge does carry something here
