"""Seeded, batched, semantic-preserving augmentations: the first half of the paper's views.

The paper forms a view as "a semantic-preserving augmentation, then Gaussian noise" (Sec. 3, footnote 1;
the noise is added elsewhere). App. B.6 ablates five levels; level 3, RandomCrop + horizontal flip +
ColorJitter, is its default but no strengths are given. Our choices, all in torchvision conventions
(brightness multiplies, contrast and saturation blend with the grey mean / grey image, hue rotates):

  paper      pad-and-crop (zero padding of side/8 px: 4 px at 32x32, the CIFAR recipe
             `RandomCrop(32, padding=4)`), horizontal flip p=0.5, and with p=0.8 ColorJitter with
             brightness, contrast, saturation 0.4 and hue 0.1 (factors in [0.6, 1.4], hue shift in
             [-0.1, 0.1] turns) in a random order per sample: SimCLR's CIFAR-10 strength (s=0.5,
             Chen et al. 2020, App. B.9), strong enough to vary colour, mild enough to keep the class.
  crop       pad-and-crop only (the paper's level 1).
  crop-flip  pad-and-crop, then flip p=0.5 (level 2).
  simclr     SimCLR's ImageNet views (Chen et al. 2020, App. A): random resized crop of scale
             [0.08, 1] and aspect ratio [3/4, 4/3], flip p=0.5, ColorJitter 0.8/0.8/0.8/0.2 with
             p=0.8, grayscale with p=0.2 (no blur: SimCLR drops it for small images).
  digits     small rotations, shifts and zooms, no flip and no colour change, for images whose class a
             mirror image changes (digits, letters): RandomAffine(degrees=10, translate=(0.1, 0.1),
             scale=(0.9, 1.1)), the usual MNIST recipe; bilinear, zero fill (torch affine_grid/grid_sample,
             the same resampling as kornia's warp_affine).
  none       the identity.

Every strength can be set in the spec, `crop:pad=2`, `paper:pad=4,jitter=0.4,p=0.8` (see STRENGTHS): the
spec is recorded exactly (canonical spelling) and is part of the cache key. ICR depends on them strongly.

Zero padding, not reflection: it is torchvision's default for RandomCrop and so the recipe that
"RandomCrop" names in CIFAR code, and a blank border adds no image content, whereas reflection
invents mirrored structure that a representation could pick up as content. On 1-channel images the
jitter only changes brightness and contrast (saturation and hue do not exist there).

Determinism: the random parameters of sample b come from its own numpy Generator(PCG64(seeds[b])),
so a sample's view depends only on (x[b], seeds[b], policy), never on what else is in the batch; the
parameters are then applied to the whole batch at once on x's device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.enhance import adjust_contrast, adjust_hue, adjust_saturation_with_gray_subtraction

from icrcli.data.rng import splitmix64 as _splitmix64
# The policies and their specs live in a torch-free module (a bad --augment fails before torch loads); re-exported.
from icrcli.data.augment_spec import (_PAD_CROP, _RESIZED_CROP, POLICIES, STRENGTHS,  # noqa: F401
                                      canonical_policy, describe_policy, parse_policy, policy_name, _ops)


# ----------------------------------------------------------------------------- seeds

_M64 = (1 << 64) - 1


def view_seeds(seed: int, image_indices: np.ndarray, view: int) -> np.ndarray:
    """int64 (N,) non-negative 63-bit seeds, one per (seed, image index, view), each computed alone.

    A pure function of its three inputs per element, so a view is the same whatever batch, order or
    subset the image is processed in.
    """
    idx = np.asarray(image_indices, dtype=np.int64).reshape(-1).astype(np.uint64)
    h = _splitmix64(np.full(idx.shape, int(seed) & _M64, dtype=np.uint64))
    h = _splitmix64(h ^ idx)
    h = _splitmix64(h ^ np.uint64(int(view) & _M64))
    return (h >> np.uint64(1)).astype(np.int64)


# ----------------------------------------------------------------------------- parameters

def pad_px(side: int, op: dict = _PAD_CROP) -> int:
    """Padding of pad_crop for an image side: its `pad` strength, else side/8 rounded half up (4 at 32, 4 at 28,
    32 at 256)."""
    return int(op["pad"]) if "pad" in op else int(side * op["pad_fraction"] + 0.5)


def policy_pad_px(spec: str, side: int) -> int | None:
    """The padding in px a policy applies at this image side; None if it does not pad-and-crop."""
    op = next((o for o in _ops(spec) if o["op"] == "pad_crop"), None)
    return pad_px(side, op) if op else None


def _draw_pad_crop(rng, op, h, w) -> dict:
    return {"crop_top": rng.integers(0, 2 * pad_px(h, op) + 1), "crop_left": rng.integers(0, 2 * pad_px(w, op) + 1)}


def _draw_flip(rng, op, h, w) -> dict:
    return {"flip": rng.random() < op["p"]}


def _draw_resized_crop(rng, op, height, width) -> dict:
    # torchvision RandomResizedCrop.get_params: rejection-sample area and log-aspect, else centre crop.
    area, (lo, hi) = height * width, np.log(op["ratio"])
    for _ in range(op["attempts"]):
        target = area * rng.uniform(*op["scale"])
        aspect = math.exp(rng.uniform(lo, hi))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            return {"crop_top": top, "crop_left": left, "crop_h": h, "crop_w": w}
    h, w = _central_box(height, width, min(op["ratio"]), max(op["ratio"]))
    return {"crop_top": (height - h) // 2, "crop_left": (width - w) // 2, "crop_h": h, "crop_w": w}


def _central_box(height: int, width: int, r_lo: float, r_hi: float) -> tuple[int, int]:
    """torchvision's fallback: the whole image, trimmed to the nearest allowed aspect ratio."""
    if width / height < r_lo:
        return int(round(width / r_lo)), width
    if width / height > r_hi:
        return height, int(round(height * r_hi))
    return height, width


def _draw_jitter(rng, op, h, w) -> dict:
    return {"jitter": rng.random() < op["p"], "brightness": rng.uniform(*op["brightness"]),
            "contrast": rng.uniform(*op["contrast"]), "saturation": rng.uniform(*op["saturation"]),
            "hue": rng.uniform(*op["hue"]), "order": rng.permutation(4)}


def _draw_gray(rng, op, h, w) -> dict:
    return {"gray": rng.random() < op["p"]}


def _draw_affine(rng, op, h, w) -> dict:
    t = op["translate"]
    return {"angle": rng.uniform(-op["degrees"], op["degrees"]), "shift_x": rng.uniform(-t, t) * w,
            "shift_y": rng.uniform(-t, t) * h, "zoom": rng.uniform(*op["zoom"])}


_DRAW = {"pad_crop": _draw_pad_crop, "hflip": _draw_flip, "resized_crop": _draw_resized_crop,
         "color_jitter": _draw_jitter, "grayscale": _draw_gray, "affine": _draw_affine}


def draw_params(seeds, policy: str, height: int, width: int) -> dict[str, np.ndarray]:
    """Per-sample random parameters of `policy` for HxW images: name -> array with leading dim B.

    Sample b uses only Generator(PCG64(seeds[b])), drawing the ops in policy order.
    """
    ops, seeds = _ops(policy), _as_seeds(seeds)
    rows = []
    for s in seeds.tolist():
        rng = np.random.Generator(np.random.PCG64(s))
        rows.append({k: v for op in ops for k, v in _DRAW[op["op"]](rng, op, height, width).items()})
    keys = rows[0].keys() if rows else []
    return {k: np.array([r[k] for r in rows]) for k in keys}


def _as_seeds(seeds) -> np.ndarray:
    s = seeds.detach().cpu().numpy() if isinstance(seeds, torch.Tensor) else np.asarray(seeds)
    s = s.astype(np.int64).reshape(-1)
    if s.size and s.min() < 0:
        raise ValueError("augmentation seeds must be non-negative (use view_seeds)")
    return s


# ----------------------------------------------------------------------------- batched ops

def _apply_pad_crop(x: torch.Tensor, p: dict, op: dict) -> torch.Tensor:
    """Zero-pad by pad_px, then cut each sample's HxW window at (crop_top, crop_left): pure gathers."""
    b, c, h, w = x.shape
    py, px = pad_px(h, op), pad_px(w, op)
    xp = F.pad(x, (px, px, py, py), value=op["fill"])
    rows = torch.as_tensor(p["crop_top"], device=x.device)[:, None] + torch.arange(h, device=x.device)
    cols = torch.as_tensor(p["crop_left"], device=x.device)[:, None] + torch.arange(w, device=x.device)
    xp = xp.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * px))
    return xp.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def _apply_flip(x: torch.Tensor, p: dict, op: dict) -> torch.Tensor:
    flip = torch.as_tensor(p["flip"], device=x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def _apply_resized_crop(x: torch.Tensor, p: dict, op: dict) -> torch.Tensor:
    """Bilinear resize of each sample's box back to HxW, as F.interpolate(crop, align_corners=False)."""
    b, c, h, w = x.shape
    ys = _sample_coords(p["crop_top"], p["crop_h"], h, x)
    xs = _sample_coords(p["crop_left"], p["crop_w"], w, x)
    grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _sample_coords(start, length, size: int, x: torch.Tensor) -> torch.Tensor:
    """(B, size) grid_sample coordinates of output pixel centres mapped into [start, start+length).

    Computed in float64 numpy (tiny: B x size) so no device needs float64 support (MPS has none).
    """
    start = np.asarray(start, dtype=np.float64)[:, None]
    length = np.asarray(length, dtype=np.float64)[:, None]
    src = start + (np.arange(size) + 0.5) * length / size - 0.5
    src = np.clip(src, start, start + length - 1)  # clamp to the crop, as interpolating the crop would
    return torch.as_tensor((2 * src + 1) / size - 1, device=x.device, dtype=x.dtype)


def _brightness(x, f):  # torchvision brightness = blend with black = a clamped product (kornia's "contrast")
    return adjust_contrast(x, f)


def _contrast(x, f):
    """torchvision contrast: blend with the mean of the grey image (kornia's mean-subtraction variant).

    The mean is summed along rows, then columns, so no reduction ever has a single output: torch
    splits such reductions across threads, which made a lone sample differ in the last bit from
    the same sample inside a batch.
    """
    grey = rgb_to_grayscale(x) if x.shape[1] == 3 else x
    mean = grey.sum(-1, keepdim=True).sum(-2, keepdim=True) / (x.shape[-2] * x.shape[-1])
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * mean).clamp(0.0, 1.0)


def _hue(x, f):  # torchvision hue is a fraction of a turn; kornia's is radians
    return adjust_hue(x, f * (2 * math.pi))


_JITTER_FNS = [("brightness", _brightness), ("contrast", _contrast),
               ("saturation", adjust_saturation_with_gray_subtraction), ("hue", _hue)]


def _apply_jitter(x: torch.Tensor, p: dict, op: dict) -> torch.Tensor:
    """Four stages; at stage k each jittered sample gets the op its permutation puts k-th."""
    on, order = np.asarray(p["jitter"], bool), np.asarray(p["order"])
    n_ops = 4 if x.shape[1] == 3 else 2  # grey images: brightness and contrast only
    for stage in range(4):
        for k, (name, fn) in enumerate(_JITTER_FNS[:n_ops]):
            idx = np.flatnonzero(on & (order[:, stage] == k))
            if idx.size:
                x = _apply_to(x, idx, fn, p[name][idx])
    return x


def _apply_gray(x: torch.Tensor, p: dict, op: dict) -> torch.Tensor:
    idx = np.flatnonzero(np.asarray(p["gray"], bool))
    if x.shape[1] != 3 or not idx.size:
        return x
    return _apply_to(x, idx, lambda y, _: rgb_to_grayscale(y).expand_as(y), None)


def _apply_to(x: torch.Tensor, idx: np.ndarray, fn, factors) -> torch.Tensor:
    """x with rows `idx` replaced by fn(x[idx], factors): work only where the op applies."""
    rows = torch.as_tensor(idx, device=x.device)
    f = None if factors is None else torch.as_tensor(factors, device=x.device, dtype=x.dtype)
    return x.index_copy(0, rows, fn(x.index_select(0, rows), f))


def affine_theta(angle, shift_x, shift_y, zoom, h: int, w: int) -> np.ndarray:
    """(B, 2, 3) float64 affine_grid matrices: each output pixel reads the input at the point that a rotation by
    `angle` degrees (counter-clockwise on screen) and zoom about the centre, then a shift of (shift_x, shift_y)
    px (right, down), carried there. Built in pixel units and mapped to normalised ones, so non-square images
    rotate without shear."""
    a = np.deg2rad(np.asarray(angle, dtype=np.float64))
    z = np.asarray(zoom, dtype=np.float64)
    tx, ty = np.asarray(shift_x, dtype=np.float64), np.asarray(shift_y, dtype=np.float64)
    # forward map on screen (y down): counter-clockwise by a is [[cos, sin], [-sin, cos]]; its inverse over z:
    m00, m01, m10, m11 = np.cos(a) / z, -np.sin(a) / z, np.sin(a) / z, np.cos(a) / z
    theta = np.empty((len(a), 2, 3))
    theta[:, 0] = np.stack([m00, m01 * h / w, -(2 / w) * (m00 * tx + m01 * ty)], axis=1)
    theta[:, 1] = np.stack([m10 * w / h, m11, -(2 / h) * (m10 * tx + m11 * ty)], axis=1)
    return theta


def _apply_affine(x: torch.Tensor, p: dict, op: dict) -> torch.Tensor:
    b, c, h, w = x.shape
    theta = torch.as_tensor(affine_theta(p["angle"], p["shift_x"], p["shift_y"], p["zoom"], h, w),
                            device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


_APPLY = {"pad_crop": _apply_pad_crop, "hflip": _apply_flip, "resized_crop": _apply_resized_crop,
          "color_jitter": _apply_jitter, "grayscale": _apply_gray, "affine": _apply_affine}


def apply_params(x: torch.Tensor, params: dict, policy: str) -> torch.Tensor:
    """Apply drawn `params` of `policy` to x (B, C, H, W) float in [0, 1]; returns a new tensor."""
    for op in _ops(policy):
        x = _APPLY[op["op"]](x, params, op)
    return x.clamp(0.0, 1.0)


def augment(x: torch.Tensor, seeds, policy: str = "paper") -> torch.Tensor:
    """Augmented views of x (B, C, H, W) float in [0, 1], any device; seeds int64 (B,), one per sample.

    Output b depends only on (x[b], seeds[b], policy). C must be 1 or 3 for colour policies.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"augment expects float images (B, C, H, W), got {tuple(x.shape)} {x.dtype}")
    ops, seeds = _ops(policy), _as_seeds(seeds)
    if len(seeds) != x.shape[0]:
        raise ValueError(f"{x.shape[0]} images but {len(seeds)} seeds")
    if x.shape[1] not in (1, 3) and any(op["op"] in ("color_jitter", "grayscale") for op in ops):
        raise ValueError(f"policy '{policy}' needs 1- or 3-channel images, got {x.shape[1]} channels")
    if not ops or x.shape[0] == 0:
        return x.clone()
    return apply_params(x, draw_params(seeds, policy, x.shape[2], x.shape[3]), policy)
