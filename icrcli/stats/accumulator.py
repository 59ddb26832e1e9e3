"""ICR inside a user's own evaluation loop: feed (B, K, D) batches, get the result of `icr score` on their
concatenation, with no feature file. Moments stay float64 on the batches' device (numpy, or torch on any device)
and are merged exactly (icrcli.stats.moments), so the answer does not depend on how the data were batched."""

from __future__ import annotations

import numpy as np

from icrcli.errors import OptionError as UserError  # also a ValueError, for Python callers
from icrcli.stats.moments import ViewMoments, empty, from_block, merge
from icrcli.stats.options import ScoreOptions


def _torch_moments(h) -> ViewMoments:
    """`moments.from_block` for a torch tensor (B, K, D), in float64 on its own device (same Helmert contrasts)."""
    import torch
    h = h.detach().to(torch.float64)
    n, k, d = h.shape
    run = h[:, 0] + h[:, 1]
    w = torch.zeros((d, d), dtype=torch.float64, device=h.device)
    c = (h[:, 0] - h[:, 1]) * (0.5 ** 0.5)
    w += c.T @ c
    for j in range(2, k):
        c = (run - j * h[:, j]) / (j * (j + 1.0)) ** 0.5
        w += c.T @ c
        run = run + h[:, j]
    s = run / k
    mean_s = s.mean(dim=0)
    s = s - mean_s
    return ViewMoments(n, k, mean_s, s.T @ s, w)


def _to_numpy(m: ViewMoments) -> ViewMoments:
    if isinstance(m.mean_s, np.ndarray):
        return m
    return ViewMoments(m.n, m.n_views, *(t.cpu().numpy() for t in (m.mean_s, m.m2_s, m.w_xi)))


class Accumulator:
    """`acc = Accumulator(dim); acc.update(batch) ...; acc.result()` equals `icrcli.score` on the concatenated
    batches (to float64 rounding). Images are dealt into the jackknife's groups by their running index, as
    `icr score` deals the rows of a file. `merge(other)` adds another accumulator's images after this one's."""

    def __init__(self, dim: int, n_views: int | None = None, options: ScoreOptions | None = None, **score_options):
        if options is not None and score_options:
            raise TypeError("give either options= or keyword score options, not both")
        self.options = options or ScoreOptions(**score_options)
        if not isinstance(dim, int) or dim < 1:
            raise UserError(f"dim = {dim!r}: the feature dimension must be a whole number >= 1.")
        self.dim, self.n_views = dim, n_views
        self.n_images = 0
        self._groups: list[ViewMoments] | None = None

    def _check(self, shape) -> None:
        if len(shape) != 3:
            raise UserError(f"a batch of shape {tuple(shape)}: Accumulator.update takes (B images, K views, D "
                            "features).")
        b, k, d = shape
        if d != self.dim:
            raise UserError(f"a batch with D = {d} features fed to an Accumulator of dim {self.dim}.")
        if k < 2:
            raise UserError(f"a batch with K = {k} view per image; ICR needs at least two views per image.")
        if self.n_views is not None and k != self.n_views:
            raise UserError(f"a batch with K = {k} views after batches of K = {self.n_views}; every image needs the "
                            "same number of views.")

    def update(self, batch) -> "Accumulator":
        """Add a (B, K, D) batch: a numpy array or a torch tensor (moments computed in float64 on its device)."""
        self._check(tuple(batch.shape))
        b, k, _ = batch.shape
        self.n_views = k
        if b == 0:
            return self
        is_torch = not isinstance(batch, np.ndarray)
        finite = bool(batch.isfinite().all()) if is_torch else bool(np.isfinite(batch).all())
        if not finite:
            raise UserError(f"a batch holds NaN or Inf features (images {self.n_images}..{self.n_images + b - 1}); "
                            "drop those images before update().")
        g = self.options.ci_groups if self.options.ci else 1
        if self._groups is None:
            self._groups = [empty(k, self.dim) for _ in range(g)]
        for j in range(g):
            part = batch[(j - self.n_images) % g::g]
            if len(part):
                m = _torch_moments(part) if is_torch else from_block(part)
                self._groups[j] = _merge(self._groups[j], m)
        self.n_images += b
        return self

    def merge(self, other: "Accumulator") -> "Accumulator":
        """Add the images of `other` (same dim, views and options), as if its batches came after this one's."""
        if (other.dim, other.options) != (self.dim, self.options):
            raise UserError("Accumulator.merge needs the same dim and score options on both sides.")
        if other._groups is None:
            return self
        if self._groups is None:
            self.n_views, self._groups, self.n_images = other.n_views, list(other._groups), other.n_images
            return self
        if other.n_views != self.n_views:
            raise UserError(f"Accumulator.merge: K = {other.n_views} views against K = {self.n_views}.")
        g = len(self._groups)
        # other's image i has running index n_images + i: its group j holds what belongs in (j + n_images) mod g
        for j, m in enumerate(other._groups):
            t = (j + self.n_images) % g
            self._groups[t] = _merge(self._groups[t], m)
        self.n_images += other.n_images
        return self

    def moments(self) -> ViewMoments:
        """All images' moments as float64 numpy arrays."""
        if self._groups is None:
            raise UserError("the Accumulator holds no images yet: call update() with (B, K, D) batches first.")
        from icrcli.stats.moments import merge_all
        return merge_all([_to_numpy(m) for m in self._groups])

    def result(self):
        """The ScoreResult of every image so far (what `icr score` gives for them)."""
        from icrcli.stats.score import score_moments
        if self._groups is None:
            raise UserError("the Accumulator holds no images yet: call update() with (B, K, D) batches first.")
        return score_moments([_to_numpy(m) for m in self._groups], self.options)


def _merge(a: ViewMoments, b: ViewMoments) -> ViewMoments:
    """moments.merge, with numpy and torch moments (batches of both kinds fed to one accumulator) met on the host."""
    if a.n and b.n and isinstance(a.mean_s, np.ndarray) != isinstance(b.mean_s, np.ndarray):
        a, b = _to_numpy(a), _to_numpy(b)
    return merge(a, b)     # an empty side is returned as the other, so torch moments stay on their device
