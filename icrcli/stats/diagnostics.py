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


def condition(sigma_xi: np.ndarray, sigma_s: np.ndarray, tau: float, n_images: int, n_views: int) -> dict:
    """How well posed the eigenproblem is, and how much the ridge shapes it. Sigma_xi has at most N(K-1)
    nonzero eigenvalues (the residual degrees of freedom); `images_needed` is the least N for which D <= N(K-1)."""
    ev = scipy.linalg.eigvalsh(sigma_xi)
    ev_s = scipy.linalg.eigvalsh(sigma_s)
    lo, hi = float(ev[0]), float(ev[-1])
    d = sigma_xi.shape[0]
    return {
        "sigma_xi_min_eigenvalue": lo,
        "sigma_xi_max_eigenvalue": hi,
        "sigma_xi_condition": float(hi / lo) if lo > 0 else float("inf"),
        "regularized_condition": float((hi + tau) / (lo + tau)) if lo + tau > 0 else float("inf"),
        "n_sigma_xi_below_tau": int(np.sum(ev < tau)),
        "sigma_s_min_eigenvalue": float(ev_s[0]),
        "n_sigma_s_negative": int(np.sum(ev_s < 0)),
        "residual_dof": n_images * (n_views - 1),
        "images_needed": -(-d // (n_views - 1)),
    }


def condition_warnings(cond: dict, dim: int, n_images: int, n_views: int, tau: float) -> list[str]:
    """Plain-language warnings when the ridge, not the features, decides ICR: D above the residual degrees of
    freedom N(K-1) (then at least D - N(K-1) directions of Sigma_xi are empty), or most Sigma_xi eigenvalues
    below tau. Each says what it means and what to change."""
    out = []
    dof, need = cond["residual_dof"], cond["images_needed"]
    if dim > dof:
        out.append(f"D = {dim} features exceed the N(K-1) = {dof} residual degrees of freedom (N = {n_images} "
                   f"images, K = {n_views} views): at least {dim - dof} directions of Sigma_xi are empty and fall "
                   "below the ridge, so ICR looks better than the features are. Use N >= D/(K-1) = "
                   f"{need} images (better about {2 * need}), more views, or fewer features (--pool mean).")
    below = cond["n_sigma_xi_below_tau"]
    if 2 * below > dim:
        out.append(f"{below} of {dim} Sigma_xi eigenvalues lie below tau = {tau:.3g}: along those directions the "
                   "ridge, not the features, sets lambda. ICR is then mostly a statement about tau; compare it "
                   "only with results of the same tau, N and D, or use more images or fewer features.")
    return out
