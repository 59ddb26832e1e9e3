"""Mergeable first and second moments of multi-view features.

For a block of images h of shape (n, K, D) we keep, in float64:
  n       number of images
  mean_s  (D,)   mean of the invariant parts s_i = mean_k h_ik
  m2_s    (D, D) scatter of s about mean_s:   sum_i (s_i - mean_s)(s_i - mean_s)^T
  w_xi    (D, D) scatter of the residuals:    sum_ik xi_ik xi_ik^T,  xi_ik = h_ik - s_i
Blocks merge exactly (Chan, Golub & LeVeque 1979, pairwise update), so the result does not depend on how
the images were chunked or ordered beyond float64 rounding. Every covariance `icr score` reports derives from these.

W from Helmert contrasts: the K residuals of an image span only K-1 dimensions, and the K-1 orthonormal Helmert
contrasts c_j = (h_1 + ... + h_j - j h_{j+1}) / sqrt(j (j+1)) (j = 1..K-1; for K = 2, (h_1 - h_2)/sqrt 2) have
the same scatter: sum_j c_j c_j^T = sum_k xi_k xi_k^T. So W and the between-image scatter take n(K-1) + n = nK
rows of products per block, as many as one X^T X of the raw features.

Precision: every product is float64, whatever the input dtype. float32 products (eps 6e-8, and BLAS sums them
in float32) perturb Sigma_xi by ~1e-7 of its norm; the eigenproblem amplifies that by up to
cond(Sigma_xi + tau I) (about 1000 D with the default ridge), which moved ICR by 1e-5 relative on
ill-conditioned features. In float64 that error is ~1e-16 sqrt(NK) of the norm instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# float64 contrasts are formed and multiplied in sub-blocks of about this many bytes: small enough to stay in
# cache between being written and being read by the GEMM, large enough that each GEMM is efficient.
_SUB_BYTES = 4 << 20


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


def sub_block_images(n_views: int, dim: int) -> int:
    """Images per sub-block, so that the float64 contrasts of one sub-block take about _SUB_BYTES."""
    return max(1, _SUB_BYTES // (8 * max(1, n_views - 1) * max(1, dim)))


def work_buffer(n_views: int, dim: int) -> np.ndarray:
    """A float64 buffer for `from_block`'s contrasts, to reuse across blocks (a fresh one per block costs
    page faults)."""
    return np.empty(sub_block_images(n_views, dim) * max(1, n_views - 1) * dim)


def helmert(h: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The K-1 Helmert contrasts of each image's views, in float64, and the image means.

    h (n, K, D) any float dtype; out: a float64 buffer of at least n(K-1)D elements, filled with the contrasts
    as ((K-1) n, D) rows. Returns s (n, D) float64, the mean over views. Each contrast entry is within a few
    float64 ulps of its exact value (the running sum of float16/32 views is exact in float64).
    """
    n, k, d = h.shape
    c = out[: (k - 1) * n * d].reshape(k - 1, n, d)
    np.subtract(h[:, 0], h[:, 1], out=c[0], dtype=np.float64)  # j = 1 in one pass: (h_1 - h_2) / sqrt 2
    c[0] *= np.sqrt(0.5)
    run = np.add(h[:, 0], h[:, 1], dtype=np.float64)
    for j in range(2, k):
        np.multiply(h[:, j], -float(j), out=c[j - 1], dtype=np.float64)
        c[j - 1] += run
        c[j - 1] *= 1.0 / np.sqrt(j * (j + 1.0))
        np.add(run, h[:, j], out=run, dtype=np.float64)
    run *= 1.0 / k
    return run


def from_block(h: np.ndarray, work: np.ndarray | None = None) -> ViewMoments:
    """Moments of one block h (n, K, D), float16/32/64. `work`, if given, is a float64 buffer from
    `work_buffer(K, D)`, reused for the contrasts.

    Error bound: contrasts and image means are float64 functions of the stored values (a few ulps, 1.1e-16
    relative); the products are float64 GEMMs, so each entry of w_xi and m2_s is within about
    sqrt(rows) * 1.1e-16 * sqrt(a_ii a_jj) of its exact value (rows summed per GEMM, a the matrix itself;
    the worst case is rows * 1.1e-16), with no dependence on the features' offset or conditioning.
    """
    n, k, d = h.shape
    step = sub_block_images(k, d)
    if work is None or work.size < min(step, n) * (k - 1) * d:
        work = np.empty(min(step, n) * (k - 1) * d)
    s = np.empty((n, d))
    w = np.zeros((d, d))
    for a in range(0, n, step):
        part = h[a:a + step]
        s[a:a + len(part)] = helmert(part, work)
        c = work[: (k - 1) * len(part) * d].reshape(-1, d)
        w += c.T @ c
    mean_s = s.mean(axis=0)
    s -= mean_s
    return ViewMoments(n, k, mean_s, s.T @ s, w)


def merge(a: ViewMoments, b: ViewMoments) -> ViewMoments:
    """Exact merge of the moments of two disjoint sets of images. Written with array operators only, so the same
    code merges torch moments on their device (icrcli.stats.accumulator)."""
    if a.n == 0:
        return b
    if b.n == 0:
        return a
    n = a.n + b.n
    delta = b.mean_s - a.mean_s
    mean = a.mean_s + delta * (b.n / n)
    m2 = a.m2_s + b.m2_s + delta[:, None] * delta[None, :] * (a.n * b.n / n)
    return ViewMoments(n, a.n_views, mean, m2, a.w_xi + b.w_xi)


def merge_all(parts) -> ViewMoments:
    """Merge of one or more ViewMoments, in order. An empty sequence has no K and D to give its result: ValueError."""
    parts = list(parts)
    if not parts:
        raise ValueError("merge_all needs at least one ViewMoments (use empty(n_views, dim) for no images)")
    out = parts[0]
    for p in parts[1:]:
        out = merge(out, p)
    return out
