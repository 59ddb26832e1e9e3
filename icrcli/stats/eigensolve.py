"""The generalized eigenproblem Sigma_s v = lambda (Sigma_xi + tau I) v and the ICR (Li et al. 2026, Eq. 5).

lambda_i is the invariant signal-to-residual ratio along the i-th Fisher direction; ICR = 1 / (1 + mean(lambda))
over all D eigenvalues (the paper uses the whole spectrum, App. B.6 footnote 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from icrcli.errors import UserError

# Default ridge, relative to the mean residual variance trace(Sigma_xi)/D. The paper only asks for "a small
# tau > 0". 1e-3 sits at the resolution of half-precision features (float16/bfloat16 keep 3 significant
# digits), so directions whose residual variance is below that floor -- dead channels, rank deficiency when
# D > N(K-1) -- cannot dominate mean(lambda), and cond(Sigma_xi + tau I) <= 1000 D keeps the float64 solve
# accurate. Relative, so ICR is unchanged when the features are rescaled.
DEFAULT_TAU_REL = 1e-3


@dataclass
class Spectrum:
    eigenvalues: np.ndarray   # (D,) descending
    directions: np.ndarray    # (D, D) columns are Fisher directions, (Sigma_xi + tau I)-orthonormal
    tau: float


def resolve_tau(sigma_xi: np.ndarray, tau: float | None, tau_rel: float | None) -> tuple[float, float | None]:
    """The absolute ridge, and the relative factor it came from (None when tau was given absolutely)."""
    if tau is not None:
        return float(tau), None
    rel = DEFAULT_TAU_REL if tau_rel is None else float(tau_rel)
    return rel * float(np.trace(sigma_xi)) / sigma_xi.shape[0], rel


def solve(sigma_s: np.ndarray, sigma_xi: np.ndarray, tau: float, vectors: bool = True) -> Spectrum:
    b = sigma_xi + tau * np.eye(sigma_xi.shape[0])
    try:
        out = scipy.linalg.eigh(sigma_s, b, eigvals_only=not vectors, driver="gv" if vectors else None)
    except np.linalg.LinAlgError:
        raise UserError(
            f"Sigma_xi + tau I is not positive definite (tau = {tau:g}): the residual covariance is singular, "
            "e.g. because some feature never varies between views, or there are fewer residual degrees of "
            "freedom N(K-1) than features D. Use a positive ridge: --tau-rel 1e-3 (the default) or --tau VALUE."
        ) from None
    lam, vec = (out, None) if not vectors else out
    order = np.argsort(lam)[::-1]
    return Spectrum(lam[order], None if vec is None else vec[:, order], tau)


def icr(eigenvalues: np.ndarray) -> float:
    return float(1.0 / (1.0 + np.mean(eigenvalues)))
