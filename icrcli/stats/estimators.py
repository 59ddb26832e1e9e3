"""Sigma_s and Sigma_xi from view moments (Li et al. 2026, Sec. 3 and App. B.6).

With C_s = m2_s / N and W = sum_ik xi_ik xi_ik^T:
  paper  (default): Sigma_xi = W / (N (K-1)),  Sigma_s = C_s - Sigma_xi / K
           unbiased for finite K: the mean of K views still holds Sigma_xi / K of residual variance.
           For K = 2 this is exactly Sigma_xi = Cov(d)/2, Sigma_s = Cov(t) - Cov(d)/4 with t, d the
           half-sum and difference of the two views. Sigma_s may be indefinite; that is reported, not clipped.
  plugin:          Sigma_xi = W / (N K),      Sigma_s = C_s
Either way Sigma_s + Sigma_xi = Sigma_h, the 1/(NK) covariance of all N*K feature rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icrcli.stats.moments import ViewMoments

from icrcli.stats.options import ESTIMATORS  # noqa: E402  (declared with the --estimator option)


@dataclass
class Covariances:
    sigma_s: np.ndarray   # (D, D) invariant (signal) covariance
    sigma_xi: np.ndarray  # (D, D) residual (contamination) covariance
    sigma_h: np.ndarray   # (D, D) total covariance of the features

    @property
    def dim(self) -> int:
        return self.sigma_s.shape[0]


def covariances(m: ViewMoments, estimator: str = "paper") -> Covariances:
    n, k = m.n, m.n_views
    c_s = m.m2_s / n
    sigma_h = c_s + m.w_xi / (n * k)
    if estimator == "paper":
        sigma_xi = m.w_xi / (n * (k - 1))
        sigma_s = c_s - sigma_xi / k
    elif estimator == "plugin":
        sigma_xi = m.w_xi / (n * k)
        sigma_s = c_s
    else:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
    return Covariances(_sym(sigma_s), _sym(sigma_xi), _sym(sigma_h))


def _sym(a: np.ndarray) -> np.ndarray:
    # float32 GEMMs are not exactly symmetric; eigh reads one triangle, so make both agree.
    return (a + a.T) / 2
