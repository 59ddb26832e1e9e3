"""Exact nearest neighbours in bounded memory, and the memorization ratio built on them.

Two rules count a generated sample as a copy of a training image:
  ratio   its nearest training image (L2) is closer than 1/3 of the distance to the second nearest
          (Yoon et al. 2023, "Diffusion probabilistic models generalize when they fail to memorize";
          Gu et al. 2023, "On memorization in diffusion models");
  cosine  its largest cosine similarity to any training image exceeds a threshold, 0.6 in the ICR paper
          (on SSCD embeddings there, Pizzi et al. 2022; here on pixels or on any layer's features).

Distances come from ||q||^2 + ||r||^2 - 2 q.r in blocks (one GEMM per block, memory set by max_elems, not by
the data size); the few best candidates per query are then recomputed directly as ||q - r|| in float64, so the
reported distances do not suffer the cancellation of the expanded form for near-copies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch

RATIO_THRESHOLD = 1 / 3          # Yoon et al. 2023; Gu et al. 2023
COSINE_THRESHOLD = 0.6           # the ICR paper, App. (memorization ratio)
_CANDIDATES = 4                  # kept per query before the exact recomputation: ties between 2nd and 4th are safe
_MAX_ELEMS = 1 << 24             # distances held at once (128 MB in float64)


def _blocks(n: int, size: int) -> Iterable[np.ndarray]:
    return (np.arange(a, min(n, a + size)) for a in range(0, n, size))


def nearest(queries: torch.Tensor, reference: torch.Tensor | Callable[[np.ndarray], torch.Tensor], n_reference: int,
            k: int = 2, metric: str = "l2", max_elems: int = _MAX_ELEMS,
            progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest reference rows of each query row, exactly.

    queries (m, D); reference (n, D) as a tensor, or a function returning its rows at given indices (so the
    reference set can be read from disk block by block). metric "l2": ascending Euclidean distances; "cosine": descending
    cosine similarities. Returns (values (m, k) float64, indices (m, k) int64). Computed in the queries' dtype
    and device; the final values in float64."""
    q = queries.reshape(len(queries), -1)
    get = reference if callable(reference) else (lambda rows: reference[torch.as_tensor(rows)])
    k = min(k, n_reference)
    keep = min(n_reference, k + _CANDIDATES - 2) if metric == "l2" else k
    if metric == "cosine":
        q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-30)
    rows_r = max(1, min(n_reference, max_elems // max(1, len(q)), max_elems // max(1, q.shape[1])))
    best_v = torch.full((len(q), 0), 0.0, dtype=q.dtype, device=q.device)
    best_i = torch.zeros((len(q), 0), dtype=torch.long, device=q.device)
    for rows in _blocks(n_reference, rows_r):
        r = get(rows).reshape(len(rows), -1).to(q.device, q.dtype)
        if metric == "cosine":
            score = q @ (r / r.norm(dim=1, keepdim=True).clamp_min(1e-30)).T          # larger is nearer
        else:
            score = -((q * q).sum(1, keepdim=True) + (r * r).sum(1) - 2 * q @ r.T)   # -(squared distance)
        idx = torch.as_tensor(rows, device=q.device).expand(len(q), -1)
        v, j = torch.cat([best_v, score], 1).topk(min(keep, best_v.shape[1] + score.shape[1]), dim=1)
        best_v, best_i = v, torch.cat([best_i, idx], 1).gather(1, j)
        if progress:
            progress(len(rows))
    if metric == "cosine":
        return best_v[:, :k].double().cpu().numpy(), best_i[:, :k].cpu().numpy()
    # exact distances of the candidates, a block of queries at a time, then the k smallest (ties: the lower index)
    cand = best_i.cpu().numpy()
    qd = q.double().cpu()
    exact = np.empty(cand.shape)
    rows_q = max(1, max_elems // max(1, cand.shape[1] * q.shape[1]))
    for qs in _blocks(len(q), rows_q):
        block = cand[qs]
        rows = np.unique(block)
        ref = get(rows).reshape(len(rows), -1).double().cpu()
        pos = torch.as_tensor(np.searchsorted(rows, block))                      # (b, keep) into ref
        exact[qs] = (qd[torch.as_tensor(qs)][:, None, :] - ref[pos]).norm(dim=2).numpy()
    order = np.lexsort((cand, exact), axis=1)[:, :k]
    return np.take_along_axis(exact, order, 1), np.take_along_axis(cand, order, 1)


def memorized(values: np.ndarray, criterion: str = "ratio", threshold: float | None = None) -> np.ndarray:
    """(m,) bool: which samples count as copies. values (m, 2) from `nearest`: L2 distances to the nearest two
    for "ratio" (d1 < threshold * d2, default 1/3), cosine similarities for "cosine" (s1 > threshold, 0.6)."""
    if criterion == "ratio":
        t = RATIO_THRESHOLD if threshold is None else threshold
        return values[:, 0] < t * values[:, 1]
    if criterion == "cosine":
        t = COSINE_THRESHOLD if threshold is None else threshold
        return values[:, 0] > t
    raise ValueError(f"unknown criterion {criterion!r}")


def memorization_ratio(values: np.ndarray, criterion: str = "ratio", threshold: float | None = None) -> dict:
    """The fraction of copies, its binomial standard error, and the distance statistics."""
    copies = memorized(values, criterion, threshold)
    m = len(copies)
    p = float(copies.mean()) if m else float("nan")
    first = values[:, 0]
    out = {"ratio": p, "ratio_se": math.sqrt(p * (1 - p) / m) if m else float("nan"), "n_samples": int(m),
           "n_memorized": int(copies.sum()), "criterion": criterion,
           "threshold": (RATIO_THRESHOLD if criterion == "ratio" else COSINE_THRESHOLD) if threshold is None
           else threshold}
    name = "nearest_distance" if criterion == "ratio" else "nearest_cosine"
    out[name] = _stats(first)
    if criterion == "ratio":
        with np.errstate(divide="ignore", invalid="ignore"):
            out["distance_ratio"] = _stats(np.where(values[:, 1] > 0, first / values[:, 1], 1.0))
        out["second_distance"] = _stats(values[:, 1])
    return out


def _stats(v: np.ndarray) -> dict:
    q = np.quantile(v, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0]) if len(v) else [float("nan")] * 7
    return {"mean": float(np.mean(v)) if len(v) else float("nan"), "min": float(q[0]), "p05": float(q[1]),
            "p25": float(q[2]), "median": float(q[3]), "p75": float(q[4]), "p95": float(q[5]), "max": float(q[6])}
