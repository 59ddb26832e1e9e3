"""Features of a chunk of rows, in three steps that a sweep can share across noise levels.

A view of image i is  x = a(x0_i) + sigma * eps  (augmentation first, then noise: paper Sec. 3, footnote 1),
mapped to the model's own input by its noise convention (icrcli.models.noise). Every (image index, view) draws
its augmentation and its unit noise eps from its own seed, so features depend on neither batch size nor
chunking nor resumption, and a view keeps its augmentation and eps at every sigma (common random numbers).

1. `prepare_rows` (host, loader thread): decoded pixels, augmentation parameters and eps per view.
2. `clean_views` (device, per batch): pixels -> fitted -> augmented -> model range (or VAE latents), with eps;
   the same for every sigma, so a sweep makes them once.
3. `features_at` (device, per batch and plan): add the noise at the plan's sigma, run the network to its taps.
`compute_levels` runs 2 and 3 over a chunk for plans that share their images (plan.same_views) and may differ
in sigma, layers and augmentation: each batch is decoded once (1), augmented once per augmentation (2), and run
once per (augmentation, sigma) with the taps of every plan there (3). `compute_rows` for one plan.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from icrcli.data import augment
from icrcli.data.images import to_channels
from icrcli.data.rng import normal
from icrcli.features.plan import Plan, pixels_wanted
from icrcli.models import noise
from icrcli.models.taps import Taps


def noise_seeds(seed: int, image_indices: np.ndarray, view: int) -> np.ndarray:
    """Seeds for the Gaussian noise of (image, view), a stream apart from the augmentation's seeds."""
    return augment.view_seeds(seed ^ 0x5EED_0F_A015E, image_indices, view)


def gaussian(seeds: np.ndarray, shape: tuple, device) -> torch.Tensor:
    """One standard normal tensor of `shape` per seed, computed on the CPU so it is the same on every device."""
    return torch.from_numpy(normal(seeds, shape)).to(device)


@dataclass
class Prepared:
    """Host-side inputs of a chunk: rows (b,), pixels (b, C, H, W) float32 in [0, 1] (or latents), per view its
    unit noise eps (b, *noise_chw) float32 on the CPU, and per augmentation the views' parameters
    [{name: (b, ...)}] (one per view)."""
    rows: np.ndarray
    pixels: np.ndarray
    eps: list[torch.Tensor]
    params: dict[str, list[dict]]

    def views(self, augment_spec: str) -> list[tuple[dict, torch.Tensor]]:
        """(augmentation parameters, eps) per view, for one augmentation."""
        return list(zip(self.params[augment_spec], self.eps))


def prepare_rows(p: Plan, rows: np.ndarray, augments: list[str] | None = None) -> Prepared:
    """The host-side work for `rows`, each view drawn from its (image, view) seed: independent of sigma, and of
    the augmentation but for its parameters, drawn for each of `augments` (default: p's). Runs in the loader
    thread, overlapping the previous chunk's forward passes."""
    r = p.request
    idx = p.indices[rows]
    eps = [gaussian(noise_seeds(r.seed, idx, v), p.noise_chw, "cpu") for v in range(r.views)]
    params = {a: [augment.draw_params(augment.view_seeds(r.seed, idx, v), a, *p.aug_hw) for v in range(r.views)]
              for a in dict.fromkeys(augments or [r.augment])}
    return Prepared(rows, _load_pixels(p, rows), eps, params)


def _load_pixels(p: Plan, rows: np.ndarray) -> np.ndarray:
    if p.latent_data:
        return np.asarray(p.images.get(p.indices[rows]), dtype=np.float32)
    return p.images.get_float(p.indices[rows])


@dataclass
class CleanViews:
    """K clean views of a batch on the device, in the units the noise is added in: x (b, *noise_chw) in
    model range, eps (b, *noise_chw) unit noise, and the range (lo, hi) the noise convention scales by."""
    x: list[torch.Tensor]
    eps: list[torch.Tensor]
    model_range: tuple[float, float]

    def __len__(self) -> int:
        return len(self.x[0])


def clean_views(p: Plan, prepared: Prepared, sel: slice) -> CleanViews:
    """Views of the batch `sel` of a prepared chunk before noise: fitted (--resize), augmented, then in the
    model's range, or encoded by the VAE (posterior mean x latent scale). Call inside `computing(p)`."""
    dev = p.device
    x01 = torch.from_numpy(prepared.pixels[sel]).to(dev, non_blocking=True)
    if not p.latent_data:
        x01 = _fit(x01, p)
    lo, hi = p.data_range
    xs, eps = [], []
    for params, e in prepared.views(p.request.augment):
        x = augment.apply_params(x01, {k: v[sel] for k, v in params.items()}, p.request.augment) \
            if params else x01
        if p.vae is not None:
            x = p.vae(x * 2 - 1)            # pixel views -> latents
            mrange = (-1.0, 1.0)
        elif p.latent_data:
            mrange = (-1.0, 1.0)            # latents are already in model units
        else:
            x = noise.to_model_range(x, lo, hi)
            mrange = (lo, hi)
        xs.append(x)
        eps.append(e[sel].to(dev, non_blocking=True))
    return CleanViews(xs, eps, mrange)


def features_at(p: Plan, views: CleanViews, taps: Taps, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    """{layer: (b, K, D)} on the device: the views noised at p's sigma, through the network to its taps (to
    `layers` of them: default p's; plans at one sigma ask for all of theirs in one pass)."""
    den, dev = p.denoiser, p.device
    layers = list(p.layers if layers is None else layers)
    per_view = []
    for x, e in zip(views.x, views.eps):
        x_in, t, _ = p.noise.model_inputs(x, e, p.sigma, views.model_range)
        y = den.labels(len(x), dev)
        per_view.append(taps.run(lambda x_in=x_in, t=t, y=y: den.call(x_in, t, y), layers))
    return {name: torch.stack([f[name] for f in per_view], dim=1) for name in layers}


@contextmanager
def computing(p: Plan, layers: list[str] | None = None):
    """Everything the forward passes of p run inside: no autograd, the taps (yielded; on `layers`, default p's),
    the compute dtype."""
    dev, dtype = p.device, p.request.dtype
    amp = (torch.autocast(dev.type, dtype=getattr(torch, dtype)) if dtype != "float32"
           else torch.autocast(dev.type, enabled=False))
    with torch.inference_mode(), Taps(p.denoiser.net, list(layers or p.layers), p.request.pool) as taps, amp, \
            _ieee_fp32(dtype):
        yield taps


def _shared(plans: list[Plan]) -> dict[str, dict[float, list[int]]]:
    """The plans by what they share: {augmentation: {sigma: [plan numbers]}}, in first-seen order."""
    out: dict[str, dict[float, list[int]]] = {}
    for j, p in enumerate(plans):
        out.setdefault(p.request.augment, {}).setdefault(p.sigma, []).append(j)
    return out


def compute_levels(plans: list[Plan], prepared: Prepared, batch_size: int,
                   on_batch: Callable[[int], None] | None = None) -> list[dict[str, np.ndarray]]:
    """Features {layer: (len(rows), K, D) float32} of a prepared chunk for each plan (plans that share their
    images, plan.same_views). Per batch, the clean views are made once per augmentation and run once per
    (augmentation, sigma), with every layer the plans there tap: each plan's features are those it gets alone.
    on_batch(b) is called after each batch with the number of images done at all levels (b x len(plans))."""
    out = [{name: [] for name in p.layers} for p in plans]
    n = len(prepared.rows)
    every = list(dict.fromkeys(name for p in plans for name in p.layers))
    with computing(plans[0], every) as taps:
        for a in range(0, n, batch_size):
            sel = slice(a, a + batch_size)
            for by_sigma in _shared(plans).values():
                views = clean_views(plans[next(iter(by_sigma.values()))[0]], prepared, sel)
                for js in by_sigma.values():
                    layers = list(dict.fromkeys(name for j in js for name in plans[j].layers))
                    feats = features_at(plans[js[0]], views, taps, layers)
                    for j in js:
                        for name in plans[j].layers:
                            out[j][name].append(feats[name])  # stays on the device until the chunk is done
            if on_batch is not None:
                on_batch(len(views) * len(plans))
    return [{name: torch.cat(v).cpu().numpy().astype(np.float32) for name, v in acc.items()} for acc in out]


def compute_rows(p: Plan, prepared: Prepared, batch_size: int,
                 on_batch: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Features {layer: (len(rows), K, D) float32} of one plan for a prepared chunk."""
    return compute_levels([p], prepared, batch_size, on_batch)[0]


@contextmanager
def _ieee_fp32(dtype: str):
    """--dtype float32 means IEEE float32: cuDNN convolutions default to TF32 (a 10-bit mantissa), which makes
    features depend on the batch size at the 1e-3 level. Turned off for the extraction, then restored."""
    flags = torch.backends.cudnn, torch.backends.cuda.matmul
    old = [f.allow_tf32 for f in flags]
    if dtype == "float32":
        for f in flags:
            f.allow_tf32 = False
    try:
        yield
    finally:
        for f, v in zip(flags, old):
            f.allow_tf32 = v


def _fit(x01: torch.Tensor, p: Plan) -> torch.Tensor:
    """--resize: channels and size to what the model (or its VAE) takes."""
    want_c, res = pixels_wanted(p.model)
    if want_c is not None and x01.shape[1] != want_c:
        x01 = to_channels(x01, want_c)
    if res is not None and tuple(x01.shape[-2:]) != (res, res):
        x01 = F.interpolate(x01, size=(res, res), mode="bilinear", antialias=True, align_corners=False)
        x01 = x01.clamp(0, 1)
    return x01
