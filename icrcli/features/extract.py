"""`icr extract`: checkpoint + images -> multi-view features (N images, K views, D) in a feature file.

A view of image i is  x = a(x0_i) + sigma * eps  (augmentation first, then noise: paper Sec. 3, footnote 1),
mapped to the model's own input by its noise convention (icrcli.models.noise). Every (image index, view) draws its
augmentation and its noise from its own seed, so the features depend on neither batch size nor chunking
nor resumption.

Resumable: rows are computed in chunks of whole images; each finished chunk is written atomically to
`OUT.parts/`. A killed run (kill -9 included) resumes from the last finished chunk; when all are done the
feature file is assembled in one pass, in row order, so it is byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from icrcli import __version__
from icrcli.features import chunks
from icrcli.data import latents
from icrcli.errors import UserError
from icrcli.features.featurefile import FORMAT_VERSION, write_feature_file
from icrcli.models.resolve import ModelOptions

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ExtractOptions:
    sigma: float
    layers: list[str] = field(default_factory=list)  # [] = the architecture's default layer
    views: int = 2                  # K; the paper uses two
    images: int | None = 4096       # N; the paper's subset size for EDM models (App. C); None = all
    augment: str = "paper"
    seed: int = 0
    batch_size: int = 256
    device: str = "auto"
    dtype: str = "float32"          # compute precision; features are stored as float32
    pool: str = "mean"
    resize: bool = False
    chunk_images: int = 256         # rows per resumable chunk (and per HDF5 chunk)
    t_mode: str = "nearest"         # discrete-time models: nearest step or interpolated
    overwrite: bool = False


@dataclass
class Plan:
    """Everything resolved before the first forward pass."""
    denoiser: object
    images: object
    indices: np.ndarray
    layers: list[str]
    noise: object
    config: dict
    key: str
    device: object
    vae: object = None
    aug_hw: tuple = ()       # (H, W) at which views are augmented
    noise_chw: tuple = ()    # (C, H, W) of the model input the noise is added to

    @property
    def latent_data(self) -> bool:
        """The data are latents fed as they are (a latent model without its VAE)."""
        return self.denoiser.latent and self.vae is None


def _device(name: str):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch here. Use --device cpu (or auto).")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N.") from None


def _check(opts: ExtractOptions) -> None:
    if opts.sigma < 0:
        raise UserError(f"--sigma {opts.sigma}: the noise level must be >= 0 (0 gives augmentation-only views).")
    if opts.views < 2:
        raise UserError(f"--views {opts.views}: ICR needs at least two views per image.")
    if opts.dtype not in DTYPES:
        raise UserError(f"--dtype {opts.dtype}: expected one of {', '.join(DTYPES)}.")
    if opts.images is not None and opts.images < 2:
        raise UserError(f"--images {opts.images}: ICR needs at least two images.")


def plan(checkpoint: str | Path, data: str | Path, opts: ExtractOptions, mopts: ModelOptions,
         hashes: Callable[[Path], str] | None = None) -> Plan:
    """Load the network and the data, check they fit, and fix the configuration (and its content key)."""
    from icrcli import cache
    from icrcli.data import augment
    from icrcli.data.images import open_images, subset_indices
    from icrcli.models.resolve import load_model, noise_convention

    _check(opts)
    augment.describe_policy(opts.augment)  # validates the name
    device = _device(opts.device)
    den = load_model(checkpoint, mopts, device)
    vae = _vae(den, mopts, device)
    latent_file = den.latent and vae is None and str(data).lower().endswith((".npy", ".npz"))
    imgs = latents.open_latents(data) if latent_file else open_images(data)
    if len(imgs) < 2:
        raise UserError(f"{data}: {len(imgs)} image(s); ICR needs at least two.")
    idx = subset_indices(len(imgs), opts.images, opts.seed)
    layers = list(opts.layers) or ([den.default_layer] if den.default_layer else [])
    if not layers:
        raise UserError("This architecture has no default layer: name one with --layer (see `icr layers CKPT`).")
    from icrcli.models.taps import resolve_layers
    resolve_layers(den.net, layers)
    _check_fit(den, imgs, opts, vae)
    conv = noise_convention(den, mopts, opts.t_mode)
    hash_file = hashes or cache.file_sha256
    config = {
        "format_version": FORMAT_VERSION,
        "checkpoint_sha256": _content_sha256(checkpoint, hash_file),
        "data_sha256": cache.tree_sha256(imgs.source_files()),
        "indices_sha256": hashlib.sha256(np.ascontiguousarray(idx, dtype="<i8").tobytes()).hexdigest(),
        "n_images": int(len(idx)), "n_views": opts.views, "sigma": float(opts.sigma), "seed": opts.seed,
        "augment": opts.augment, "augment_params": augment.describe_policy(opts.augment),
        "layers": layers, "pool": opts.pool, "dtype": opts.dtype, "resize": opts.resize,
        "noise": conv.describe(), "data_range": mopts.data_range or den.data_range,
        "class_label": mopts.class_label, "model": den.description.get("config"),
        "arch": den.description.get("arch"), "vae": _content_sha256(mopts.vae, hash_file) if vae else None,
        "weights": den.description.get("weights"), "call": mopts.call,  # which sub-dict, and how it is called
        "chunk_images": opts.chunk_images, "noise_rng": NOISE_RNG,
    }
    return Plan(den, imgs, idx, layers, conv, config, cache.config_key(config), device, vae,
                *_view_shapes(den, imgs, vae))


def _pixels_wanted(den, vae) -> tuple[int | None, int | None]:
    """(channels, side) of the images the model takes, through its VAE if it has one; None where unknown."""
    if vae is None:
        return den.in_channels, den.resolution
    return vae.in_channels, den.resolution * vae.factor if den.resolution else None


def _view_shapes(den, imgs, vae) -> tuple[tuple, tuple]:
    """(H, W) where views are augmented and (C, H, W) where the noise is added, as _fit and the VAE make them."""
    c, h, w = imgs.channels, imgs.height, imgs.width
    if den.latent and vae is None:
        return (h, w), (c, h, w)
    want_c, res = _pixels_wanted(den, vae)
    c, h, w = want_c or c, res or h, res or w
    if vae is not None:
        return (h, w), (vae.latent_channels, h // vae.factor, w // vae.factor)
    return (h, w), (c, h, w)


def _check_fit(den, imgs, opts: ExtractOptions, vae) -> None:
    """Images must match the model's input (pixels, or latents after the VAE) unless --resize."""
    c, h, w = imgs.channels, imgs.height, imgs.width
    want_c, want_res = _pixels_wanted(den, vae)
    if den.latent and vae is None:
        if imgs.kind not in ("npy", "npz") or c != den.in_channels:
            raise UserError(f"{den.description.get('arch')} is a latent model ({den.in_channels} channels): give "
                            "its VAE with --vae PATH (a diffusers AutoencoderKL folder) to encode images, or pass "
                            "--data as a float .npy/.npz of latents (N, 4, H, W) already scaled by 0.18215.")
        if (h, w) != (want_res, want_res) and want_res is not None:
            raise UserError(f"The latents are {c}x{h}x{w} but {den.description.get('arch')} takes "
                            f"{den.in_channels}x{want_res}x{want_res} (--resize does not apply to latents). Encode "
                            f"images of {want_res * 8}x{want_res * 8} pixels, or pass images with --vae.")
        if opts.augment not in ("none", "crop", "crop-flip"):
            raise UserError("Colour jitter has no meaning on VAE latents: with latent --data use --augment "
                            "crop-flip, crop or none (or give --vae to augment in pixel space).")
    ok_c = want_c is None or c == want_c
    ok_res = want_res is None or (h, w) == (want_res, want_res)
    if not (ok_c and ok_res) and not opts.resize:
        raise UserError(f"The images are {c}x{h}x{w} (CxHxW) but the model takes {want_c}x{want_res}x{want_res}. "
                        "Pass --resize to resize (and convert grey<->colour), or use matching data.")


def _vae(den, mopts: ModelOptions, device):
    if not mopts.vae:
        return None
    from icrcli.models.archs.diffusers_models import load_vae
    return load_vae(mopts.vae, device)


def _content_sha256(path, hash_file: Callable[[Path], str]) -> str:
    """A file's hash, or a folder's (diffusers model, VAE): the tree hash of every file in it."""
    from icrcli import cache
    p = Path(path)
    return cache.tree_sha256(sorted(f for f in p.rglob("*") if f.is_file())) if p.is_dir() else hash_file(p)


# ------------------------------------------------------------------------------------------------------------
# Computing one chunk of rows.

def noise_seeds(seed: int, image_indices: np.ndarray, view: int) -> np.ndarray:
    """Seeds for the Gaussian noise of (image, view), a stream apart from the augmentation's seeds."""
    from icrcli.data.augment import view_seeds
    return view_seeds(seed ^ 0x5EED_0F_A015E, image_indices, view)


# The generator behind every view's noise; recorded in the configuration, so a change of generator is a new key.
NOISE_RNG = "splitmix64-box-muller-float32"


def gaussian(seeds: np.ndarray, shape: tuple, device):
    """One standard normal tensor of `shape` per seed, computed on the CPU so it is the same on every device."""
    import torch
    from icrcli.data.rng import normal
    return torch.from_numpy(normal(seeds, shape)).to(device)


def prepare_rows(p: Plan, opts: ExtractOptions, rows: np.ndarray) -> dict:
    """The host-side work for `rows`: decoded pixels, and per view the augmentation parameters and the noise,
    each drawn from its (image, view) seed. Runs in the loader thread, overlapping the previous chunk's
    forward passes."""
    from icrcli.data import augment
    idx = p.indices[rows]
    views = [(augment.draw_params(augment.view_seeds(opts.seed, idx, v), opts.augment, *p.aug_hw),
              gaussian(noise_seeds(opts.seed, idx, v), p.noise_chw, "cpu")) for v in range(opts.views)]
    return {"pixels": _load_pixels(p, rows), "views": views}


def compute_rows(p: Plan, opts: ExtractOptions, rows: np.ndarray, prepared: dict) -> dict[str, np.ndarray]:
    """Features {layer: (len(rows), K, D) float32} for the images at `rows` of the subset."""
    import torch
    from icrcli.data import augment
    from icrcli.models import noise
    from icrcli.models.taps import Taps

    den, dev = p.denoiser, p.device
    lo, hi = noise.parse_data_range(p.config["data_range"])
    latent_data = p.latent_data
    out = {name: [] for name in p.layers}
    amp = (torch.autocast(dev.type, dtype=getattr(torch, opts.dtype)) if opts.dtype != "float32"
           else torch.autocast(dev.type, enabled=False))
    with torch.inference_mode(), Taps(den.net, p.layers, opts.pool) as taps, amp, _ieee_fp32(opts.dtype):
        for a in range(0, len(rows), opts.batch_size):
            sel = slice(a, a + opts.batch_size)
            x01 = torch.from_numpy(prepared["pixels"][sel]).to(dev, non_blocking=True)
            if not latent_data:
                x01 = _fit(x01, den, p, opts)
            views = []
            for params, eps in prepared["views"]:
                x = augment.apply_params(x01, {k: v[sel] for k, v in params.items()}, opts.augment) \
                    if params else x01
                if p.vae is not None:
                    x = p.vae(x * 2 - 1)            # pixel views -> latents (posterior mean x latent scale)
                    mlo, mhi = -1.0, 1.0
                elif latent_data:
                    mlo, mhi = -1.0, 1.0            # latents are already in model units
                else:
                    x = noise.to_model_range(x, lo, hi)
                    mlo, mhi = lo, hi
                x_in, t, _ = p.noise.model_inputs(x, eps[sel].to(dev, non_blocking=True), p.config["sigma"],
                                                  (mlo, mhi))
                y = den.labels(len(x), dev)
                feats = taps.run(lambda: den.call(x_in, t, y))
                views.append(feats)
            for name in p.layers:  # stays on the device until the chunk is done: no sync per batch
                out[name].append(torch.stack([f[name] for f in views], dim=1))
    return {name: torch.cat(v).cpu().numpy().astype(np.float32) for name, v in out.items()}


@contextmanager
def _ieee_fp32(dtype: str):
    """--dtype float32 means IEEE float32: cuDNN convolutions default to TF32 (a 10-bit mantissa), which makes
    features depend on the batch size at the 1e-3 level. Turned off for the extraction, then restored."""
    import torch
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


def _fit(x01, den, p: Plan, opts: ExtractOptions):
    """--resize: channels and size to what the model (or its VAE) takes."""
    import torch.nn.functional as F
    from icrcli.data.images import to_channels
    want_c, res = _pixels_wanted(den, p.vae)
    if want_c is not None and x01.shape[1] != want_c:
        x01 = to_channels(x01, want_c)
    if res is not None and tuple(x01.shape[-2:]) != (res, res):
        x01 = F.interpolate(x01, size=(res, res), mode="bilinear", antialias=True, align_corners=False)
        x01 = x01.clamp(0, 1)
    return x01


# ------------------------------------------------------------------------------------------------------------
# Resumable driver.

def _existing(out: Path, key: str, overwrite: bool) -> bool:
    """True if `out` is already the finished result of this exact request."""
    if not out.exists() or overwrite:
        return False
    try:
        import h5py
        with h5py.File(out, "r") as f:
            same = f.attrs.get("config_key") == key
            complete = bool(f.attrs.get("complete", False))
    except OSError:
        raise UserError(f"{out} exists and is not a readable feature file. Choose another -o, or pass "
                        "--overwrite to replace it.") from None
    if same and complete:
        return True
    if same:
        return False  # an interrupted run of this request: resume
    raise UserError(f"{out} exists and holds features from a different configuration; icr never mixes them. "
                    "Choose another -o, or pass --overwrite to replace it.")


def run(p: Plan, opts: ExtractOptions, out: Path,
        progress: Callable[[int], None] | None = None, on_resume: Callable[[int], None] | None = None,
        on_wait: Callable[[], None] | None = None, on_warn: Callable[[str], None] | None = None) -> dict:
    """Extract into `out` (resuming if possible). Returns a summary dict for the JSON report."""
    from icrcli import cache
    out = Path(out)
    t0 = time.perf_counter()
    if _existing(out, p.key, opts.overwrite):
        return _summary(p, out, cached=True, seconds=0.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    with cache.exclusive(out, on_wait=on_wait):
        if _existing(out, p.key, opts.overwrite):  # a concurrent run of the same request finished it
            return _summary(p, out, cached=True, seconds=time.perf_counter() - t0)
        parts = out.with_name(out.name + ".parts")
        chunks.prepare(parts, p.config, p.key, opts.overwrite)
        n = len(p.indices)
        step = opts.chunk_images
        n_chunks = -(-n // step)
        done = chunks.done_chunks(parts, n_chunks)
        if done and on_resume:
            on_resume(min(n, len(done) * step))
        if progress and done:
            progress(min(n, len(done) * step))
        labels = p.images.labels
        try:
            with ThreadPoolExecutor(1) as pool:  # decode the next chunk's images while this one computes
                todo = list(range(len(done), n_chunks))
                rows_of = lambda c: np.arange(c * step, min(n, (c + 1) * step))
                load = lambda c: prepare_rows(p, opts, rows_of(c))
                nxt = pool.submit(load, todo[0]) if todo else None
                for j, c in enumerate(todo):
                    prepared = nxt.result()
                    nxt = pool.submit(load, todo[j + 1]) if j + 1 < len(todo) else None
                    rows = rows_of(c)
                    feats = compute_rows(p, opts, rows, prepared)
                    if j == 0 and on_warn:
                        _warn_large(feats, on_warn)
                    lab = labels[p.indices[rows]] if labels is not None else None
                    chunks.write_part(chunks.part_path(parts, c), feats, p.indices[rows], lab)
                    if progress:
                        progress(len(rows))
        except KeyboardInterrupt:
            _assemble(p, opts, out, parts, chunks.done_chunks(parts, n_chunks))
            raise
        _assemble(p, opts, out, parts, list(range(n_chunks)))
        shutil.rmtree(parts)
    return _summary(p, out, cached=False, seconds=time.perf_counter() - t0)


def _warn_large(feats: dict, warn: Callable[[str], None]) -> None:
    from icrcli.models.taps import LARGE_DIM
    for name, f in feats.items():
        d = f.shape[-1]
        if d > LARGE_DIM:
            warn(f"layer {name} gives D = {d} features per view: `icr score` needs two {d}x{d} float64 "
                 f"matrices ({2 * d * d * 8 / 2**30:.1f} GiB) and a D^3 eigensolve. Consider --pool mean.")


def _load_pixels(p: Plan, rows: np.ndarray) -> np.ndarray:
    if p.latent_data:
        return np.asarray(p.images.get(p.indices[rows]), dtype=np.float32)
    return p.images.get_float(p.indices[rows])


def _assemble(p: Plan, opts: ExtractOptions, out: Path, parts: Path, finished: list[int]) -> None:
    """Write the feature file from the finished chunks (all of them: complete; a prefix: marked incomplete)."""
    from icrcli import cache
    if not finished:
        return
    first = chunks.read_part(chunks.part_path(parts, finished[0]), p.layers)
    dims = {name: v.shape[-1] for name, v in first["features"].items()}
    attrs = {
        "config_key": p.key, "config": p.config, "sigma": p.config["sigma"], "seed": opts.seed,
        "augment": opts.augment, "layers": p.layers, "pool": opts.pool,
        "checkpoint_sha256": p.config["checkpoint_sha256"], "data_sha256": p.config["data_sha256"],
        "checkpoint": p.denoiser.description.get("checkpoint", ""), "data": str(p.images.path),
        "arch": p.config["arch"] or "", "compute_dtype": opts.dtype,
    }

    def gen():
        for c in finished:
            part = first if c == finished[0] else chunks.read_part(chunks.part_path(parts, c), p.layers)
            yield {"start": c * opts.chunk_images, **part}

    try:
        with cache.atomic_write(out) as tmp:
            write_feature_file(tmp, dims, len(p.indices), opts.views, "float32", attrs, gen(), opts.chunk_images)
    except OSError as e:
        raise UserError(f"Writing {out} failed ({e.strerror or e}): is the disk full? Every computed chunk is kept "
                        f"in {parts}; free some space and run the same command again to finish.") from None


def _summary(p: Plan, out: Path, cached: bool, seconds: float) -> dict:
    return {"features": str(out), "cached": cached, "config_key": p.key, "n_images": len(p.indices),
            "n_views": p.config["n_views"], "layers": p.layers, "sigma": p.config["sigma"],
            "seconds": round(seconds, 3), "version": __version__}
