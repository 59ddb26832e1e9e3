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


# Residual degrees of freedom per feature below which mean lambda is inflated enough to matter: with
# m = N(K-1) the inverse-Wishart factor m / (m - D - 1) (see bias_corrected_icr) is above 1.11 for m < 10 D.
DOF_PER_FEATURE = 10


def inflation(n_images: int, n_views: int, dim: int) -> float:
    """E[Sigma_xi_hat^{-1}] = m / (m - D - 1) Sigma_xi^{-1} for Gaussian residuals with m = N(K-1) degrees of
    freedom (the mean of an inverse Wishart matrix, Anderson 2003, Lemma 7.7.1): the factor by which a small
    sample inflates the residual-inverse part of mean lambda. inf when m <= D + 1."""
    m = n_images * (n_views - 1)
    return m / (m - dim - 1) if m > dim + 1 else float("inf")


def bias_corrected_icr(mean_lambda: float, n_images: int, n_views: int, dim: int, estimator: str) -> float | None:
    """ICR with mean lambda corrected analytically for the small-sample bias (not the jackknife).

    For Gaussian features and tau = 0 the within-image scatter W ~ Wishart(Sigma_xi, m), m = N(K-1), is
    independent of the between-image scatter, E[C_s] = (N-1)/N (Sigma_s + Sigma_xi/K) with C_s = m2_s / N, and
    E[Sigma_xi_hat^{-1}] = m / (m - D - 1) Sigma_xi^{-1}. With T = tr(Sigma_xi_hat^{-1} C_s) / D:
      paper:  mean lambda = T - 1/K,          E[T] = f (N-1)/N (lambda + 1/K)
      plugin: mean lambda = K/(K-1) T,        target K/(K-1) (lambda + 1/K)
    with f = m / (m - D - 1), so each estimate is unbiased for its population mean lambda after dividing by
    f (N-1)/N (paper: the 1/K offset first). The ridge tau is ignored (exact for tau = 0; with the default
    1e-3 it shifts the answer by about tau_rel times the condition of Sigma_xi). ICR = 1 / (1 + mean lambda)
    of the corrected mean lambda (mean lambda unbiased; ICR, a convex function of it, only to first order).
    None when m <= D + 1 (the factor is infinite)."""
    f = inflation(n_images, n_views, dim)
    if not np.isfinite(f) or n_images < 2:
        return None
    shrink = (n_images - 1) / n_images * f
    if estimator == "paper":
        lam = (mean_lambda + 1 / n_views) / shrink - 1 / n_views
    else:
        lam = mean_lambda / shrink
    return float(1.0 / (1.0 + lam))


def condition_warnings(cond: dict, dim: int, n_images: int, n_views: int, tau: float) -> list[str]:
    """Plain-language warnings when the ridge, not the features, decides ICR: D above the residual degrees of
    freedom N(K-1) (then at least D - N(K-1) directions of Sigma_xi are empty), or most Sigma_xi eigenvalues
    below tau; and when N(K-1) < 10 D, where a small sample inflates mean lambda noticeably (lowers ICR) even
    though the problem is well posed. Each says what it means and what to change."""
    out = []
    dof, need = cond["residual_dof"], cond["images_needed"]
    if dim > dof:
        out.append(f"D = {dim} features exceed the N(K-1) = {dof} residual degrees of freedom (N = {n_images} "
                   f"images, K = {n_views} views): at least {dim - dof} directions of Sigma_xi are empty and fall "
                   "below the ridge, so ICR looks better than the features are. Use N >= D/(K-1) = "
                   f"{need} images (better about {2 * need}), more views, or fewer features (--pool mean).")
    elif dof < DOF_PER_FEATURE * dim:
        enough = -(-DOF_PER_FEATURE * dim // (n_views - 1))
        f = inflation(n_images, n_views, dim)
        how = (f"for Gaussian features mean lambda comes out about {f:.2f}x too large" if np.isfinite(f) else
               "mean lambda is unbounded for Gaussian features")
        out.append(f"N(K-1) = {dof} residual degrees of freedom for D = {dim} features is fewer than {DOF_PER_FEATURE} "
                   f"per feature (N = {n_images} images, K = {n_views} views): {how}, so ICR is biased low "
                   f"(see icr_bias_corrected). Use N >= {enough} images at K = {n_views}, more views, or fewer "
                   "features.")
    below = cond["n_sigma_xi_below_tau"]
    if 2 * below > dim:
        out.append(f"{below} of {dim} Sigma_xi eigenvalues lie below tau = {tau:.3g}: along those directions the "
                   "ridge, not the features, sets lambda. ICR is then mostly a statement about tau; compare it "
                   "only with results of the same tau, N and D, or use more images or fewer features.")
    return out
