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
_GEMM_ROWS = 4096
_SUB_BYTES = 1 << 20


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


def from_block(h: np.ndarray) -> ViewMoments:
    """Moments of one block h (n, K, D), float16/32/64.

    float64 input is computed in float64 throughout. Lower precisions take the image means in float64 and
    form the D x D products in float32, which is what lets `score` run at the speed of one float32 X^T X:
    the residuals are centred per image, so their products carry no cancellation, and rounding s to float32
    before subtracting only shifts each image's residuals by a constant, which enters w_xi at second order.
    The work goes in sub-blocks of about 1 MB so that the mean, the subtraction and the GEMM reuse the
    sub-block from cache instead of streaming the whole block through memory three times.
    """
    n, k, d = h.shape
    if h.dtype == np.float64:
        s = h.mean(axis=1)
        xi = (h - s[:, None, :]).reshape(n * k, d)
        mean_s = s.mean(axis=0)
        return ViewMoments(n, k, mean_s, _scatter(s - mean_s), _scatter(xi))
    step = max(1, _SUB_BYTES // (k * d * 4))
    s = np.empty((n, d))
    w = np.zeros((d, d))
    buf = np.empty((min(step, n), k, d), np.float32)
    for a in range(0, n, step):
        hb = h[a:a + step]
        m = len(hb)
        sb = hb.mean(axis=1, dtype=np.float64, out=s[a:a + m])
        xb = np.subtract(hb, sb.astype(np.float32)[:, None, :], out=buf[:m]).reshape(m * k, d)
        w += xb.T @ xb
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
