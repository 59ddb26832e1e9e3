"""Companion statistics reported next to ICR, all from the same covariances."""

from __future__ import annotations

import numpy as np
import scipy.linalg

from icrcli.stats.moments import ViewMoments

# LiDAR's constants (Thilak et al., "LiDAR: Sensing Linear Probing Performance in Joint Embedding SSL
# Architectures", ICLR 2024, Sec. 3): ridge delta on the within-class covariance, epsilon in the entropy.
LIDAR_DELTA = 1e-4
LIDAR_EPS = 1e-8
# RankMe's epsilon (Garrido et al., "RankMe", ICML 2023, Eq. 1).
RANKME_EPS = 1e-7


def _entropy_rank(values: np.ndarray, eps: float) -> float:
    """exp(Shannon entropy) of p = values / ||values||_1 + eps."""
    values = np.clip(values, 0.0, None)
    p = values / values.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def effective_rank(sigma_h: np.ndarray) -> float:
    """RankMe on the singular values of the centred feature matrix, i.e. sqrt of the eigenvalues of Sigma_h
    (the 1/(NK) normalisation cancels in p)."""
    ev = np.clip(scipy.linalg.eigvalsh(sigma_h), 0.0, None)
    return _entropy_rank(np.sqrt(ev), RANKME_EPS)


def lidar(m: ViewMoments) -> float:
    """LiDAR: every image is a surrogate class and its K views the class members.
    Sigma_b = m2_s / (N - 1), Sigma_w = W / (N (K-1)) + delta I; LiDAR is the entropy rank of the eigenvalues of
    Sigma_w^{-1/2} Sigma_b Sigma_w^{-1/2}, i.e. of the generalized problem (Sigma_b, Sigma_w)."""
    d = m.dim
    sb = m.m2_s / (m.n - 1)
    sw = m.w_xi / (m.n * (m.n_views - 1)) + LIDAR_DELTA * np.eye(d)
    return _entropy_rank(scipy.linalg.eigh((sb + sb.T) / 2, (sw + sw.T) / 2, eigvals_only=True), LIDAR_EPS)


def alignment(m: ViewMoments) -> float:
    """Mean squared distance between two views of one image: sum_{k != l} ||h_k - h_l||^2 = 2K sum_k ||xi_k||^2,
    averaged over the K(K-1) ordered pairs and the N images: 2 trace(W) / (N (K-1)) = 2 trace(Sigma_xi[paper])."""
    return float(2.0 * np.trace(m.w_xi) / (m.n * (m.n_views - 1)))


def condition(sigma_xi: np.ndarray, sigma_s: np.ndarray, tau: float) -> dict:
    """How well posed the eigenproblem is, and how much the ridge shapes it."""
    ev = scipy.linalg.eigvalsh(sigma_xi)
    ev_s = scipy.linalg.eigvalsh(sigma_s)
    lo, hi = float(ev[0]), float(ev[-1])
    return {
        "sigma_xi_min_eigenvalue": lo,
        "sigma_xi_max_eigenvalue": hi,
        "sigma_xi_condition": float(hi / lo) if lo > 0 else float("inf"),
        "regularized_condition": float((hi + tau) / (lo + tau)) if lo + tau > 0 else float("inf"),
        "n_sigma_xi_below_tau": int(np.sum(ev < tau)),
        "sigma_s_min_eigenvalue": float(ev_s[0]),
        "n_sigma_s_negative": int(np.sum(ev_s < 0)),
    }
