"""A dense float64 implementation of the definitions, written independently of icrcli, for tests."""

import numpy as np
import scipy.linalg


def covs(h, estimator="paper"):
    h = np.asarray(h, dtype=np.float64)
    n, k, d = h.shape
    s = h.mean(axis=1)
    xi = h - s[:, None, :]
    c_s = (s - s.mean(0)).T @ (s - s.mean(0)) / n
    w = xi.reshape(-1, d).T @ xi.reshape(-1, d)
    if estimator == "paper":
        sigma_xi = w / (n * (k - 1))
        return c_s - sigma_xi / k, sigma_xi
    return c_s, w / (n * k)


def icr(h, estimator="paper", tau=None, tau_rel=1e-3):
    ss, sx = covs(h, estimator)
    d = sx.shape[0]
    t = tau if tau is not None else tau_rel * np.trace(sx) / d
    lam = scipy.linalg.eigh(ss, sx + t * np.eye(d), eigvals_only=True)
    return 1.0 / (1.0 + lam.mean()), np.sort(lam)[::-1], t


def views(rng, n=400, k=3, d=12, signal=2.0, noise=1.0, offset=0.0):
    s = rng.normal(size=(n, 1, d)) * signal
    return s + rng.normal(size=(n, k, d)) * noise + offset


def rankme(h, eps=1e-7):
    """RankMe (Garrido et al. 2023, Eq. 1): exp entropy of the normalised singular values of the centred N*K x D
    matrix of every view's features."""
    x = np.asarray(h, dtype=np.float64).reshape(-1, np.shape(h)[-1])
    sv = np.linalg.svd(x - x.mean(0), compute_uv=False)
    p = sv / sv.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))
