"""Mergeable first and second moments of multi-view features.

For a block of images h of shape (n, K, D) we keep, in float64:
  n       number of images
  mean_s  (D,)   mean of the invariant parts s_i = mean_k h_ik
  m2_s    (D, D) scatter of s about mean_s:   sum_i (s_i - mean_s)(s_i - mean_s)^T
  w_xi    (D, D) scatter of the residuals:    sum_ik xi_ik xi_ik^T,  xi_ik = h_ik - s_i
Blocks merge exactly (Chan, Golub & LeVeque 1979, pairwise update), so the result does not depend on how
the images were chunked or ordered beyond rounding. Every covariance `icr score` reports derives from these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Rows per GEMM when products run in float32: the float32 sum inside one call stays short and the running
# total is float64, which keeps the error near float32's unit roundoff whatever the number of images.
_GEMM_ROWS = 16384


@dataclass
class ViewMoments:
    n: int
    n_views: int
    mean_s: np.ndarray
    m2_s: np.ndarray
    w_xi: np.ndarray

    @property
    def dim(self) -> int:
        return self.mean_s.shape[0]


def empty(n_views: int, dim: int) -> ViewMoments:
    return ViewMoments(0, n_views, np.zeros(dim), np.zeros((dim, dim)), np.zeros((dim, dim)))


def _scatter(x: np.ndarray) -> np.ndarray:
    """x^T x for x (rows, D), accumulated in float64 over blocks of rows."""
    out = np.zeros((x.shape[1], x.shape[1]))
    for a in range(0, x.shape[0], _GEMM_ROWS):
        blk = x[a:a + _GEMM_ROWS]
        out += blk.T @ blk
    return out


def from_block(h: np.ndarray, work: np.ndarray | None = None) -> ViewMoments:
    """Moments of one block h (n, K, D), float16/32/64. `work`, if given, is a float32 buffer of at least
    h's size reused for the residuals (a fresh 32 MB array per block costs page faults).

    float64 input is computed in float64 throughout. Lower precisions form the D x D products in float32,
    which is what lets `score` run at the speed of one float32 X^T X while staying exact to second order:
    image means s are float64, and the residuals are taken about float32(s) (a subtraction of nearby
    numbers: exact, no cancellation left for the products). The rounding delta = s - float32(s) shifts each
    image's residuals by a constant, so it enters w_xi only as K sum_i delta_i delta_i^T, which is removed
    whenever it is not negligible.
    """
    n, k, d = h.shape
    if h.dtype == np.float64:
        s = h.mean(axis=1)
        xi = (h - s[:, None, :]).reshape(n * k, d)
        mean_s = s.mean(axis=0)
        return ViewMoments(n, k, mean_s, _scatter(s - mean_s), _scatter(xi))
    s = np.empty((n, d))
    xi = np.empty(h.shape, np.float32) if work is None else work.reshape(-1)[: h.size].reshape(h.shape)
    np.add.reduce(h, axis=1, dtype=np.float64, out=s)
    s *= 1.0 / k
    np.subtract(h, s.astype(np.float32)[:, None, :], out=xi, dtype=np.float32)
    w = _scatter(xi.reshape(n * k, d))
    delta = s - s.astype(np.float32)
    if k * float(np.vdot(delta, delta)) > 1e-10 * float(np.trace(w)):
        w -= k * _scatter(delta)
    mean_s = s.mean(axis=0)
    return ViewMoments(n, k, mean_s, _scatter((s - mean_s).astype(np.float32)), w)


def merge(a: ViewMoments, b: ViewMoments) -> ViewMoments:
    """Exact merge of the moments of two disjoint sets of images."""
    if a.n == 0:
        return b
    if b.n == 0:
        return a
    n = a.n + b.n
    delta = b.mean_s - a.mean_s
    mean = a.mean_s + delta * (b.n / n)
    m2 = a.m2_s + b.m2_s + np.outer(delta, delta) * (a.n * b.n / n)
    return ViewMoments(n, a.n_views, mean, m2, a.w_xi + b.w_xi)


def merge_all(parts) -> ViewMoments:
    parts = list(parts)
    out = parts[0]
    for p in parts[1:]:
        out = merge(out, p)
    return out
