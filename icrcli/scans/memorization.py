"""`icr memorization`: how many of a checkpoint's samples are copies of its training images.

Samples come from the deterministic EDM Heun sampler (icrcli.models.sampler), each from its own (seed, index)
noise and class, so they do not depend on batch size and a larger request extends a smaller one. They are
cached by content key (checkpoint hash, model and noise configuration, prediction, sampler levels, seed, class
rule) in chunks of CHUNK samples under <cache>/samples/: an interrupted run keeps its finished chunks, and a
repeat draws nothing. Copies are counted by icrcli.stats.neighbours, in pixels (on [-1, 1]) or in the features
of any layer of any checkpoint (--embed).
"""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Callable

import numpy as np
import torch

from icrcli import __version__, cache
from icrcli.data.images import open_images
from icrcli.errors import UserError
from icrcli.models import noise, sampler
from icrcli.models.resolve import ModelOptions, load_model, noise_convention
from icrcli.scans.options import MemorizationOptions
from icrcli.features.plan import device as device_named
from icrcli.stats.neighbours import memorization_ratio, nearest

CHUNK = 256            # samples per cache file: the unit of resumption
SAMPLES_FORMAT = 1     # bumped when the sampler's output for a key would change


class SampleSource:
    """A checkpoint ready to sample: the network wrapped as D(x; sigma), its levels, shape, classes and key."""

    def __init__(self, ckpt_path, mopts: ModelOptions, steps: int, seed: int, device, shape_hint=None):
        ckpt_path = Path(ckpt_path)
        self.den = load_model(ckpt_path, mopts, device)
        self.mopts = self.den.options or mopts          # the sidecar's options included
        self.vae = None
        if self.den.latent:  # samples are drawn as latents and decoded: memorization compares pixels
            if not self.mopts.vae:
                raise UserError(f"{self.den.description.get('arch')} is a latent model: memorization compares "
                                "pixels, so give its VAE with --vae PATH (a diffusers AutoencoderKL folder) to decode "
                                "the samples.")
            from icrcli.models.vae import load_vae
            self.vae = load_vae(self.mopts.vae, device)
        self.conv = noise_convention(self.den, self.mopts)
        self.data_range = noise.parse_data_range(self.mopts.data_range or self.den.data_range)
        self.prediction = sampler.prediction_for(self.den, self.mopts.prediction)
        self.sigmas = sampler.round_sigmas(sampler.edm_sigmas(steps), self.conv, self.data_range)
        # A user network says no shape of its own: --image-shape, else the training images' (shape_hint).
        res = self.den.resolution or (shape_hint[1] if shape_hint and not self.vae else None)
        channels = self.den.in_channels or (shape_hint[0] if shape_hint else None)
        if not res or not channels:
            raise UserError("the network does not say its image shape; give it with --image-shape CxHxW "
                            "(e.g. --image-shape 1x28x28).")
        self.shape = (int(channels), int(res), int(res))   # what the sampler draws (latents for a latent model)
        self.pixel_shape = self.shape if self.vae is None else \
            (self.vae.in_channels, int(res) * self.vae.factor, int(res) * self.vae.factor)
        self.n_classes = sampler.class_count(self.den)
        self.seed, self.device = seed, device
        label = self.mopts.class_label
        self.classes = "none" if not self.n_classes else ("uniform" if label is None else int(label))
        self.config = {
            "samples_format": SAMPLES_FORMAT, "checkpoint_sha256": cache.content_sha256(ckpt_path),
            "arch": self.den.description.get("arch"), "model": self.den.description.get("config"),
            "weights": self.den.description.get("weights"), "call": self.mopts.call, "noise": self.conv.describe(),
            "data_range": list(self.data_range), "prediction": self.prediction, "sampler": "edm-heun",
            "sigmas": [float(s) for s in self.sigmas], "shape": list(self.shape), "seed": seed,
            "classes": self.classes, "noise_rng": "splitmix64-box-muller-float32",
            **({"vae_sha256": cache.content_sha256(self.mopts.vae)} if self.vae is not None else {}),
        }
        self.key = cache.config_key(self.config)

    def draw(self, indices: np.ndarray, batch_size: int = 64, progress=None) -> np.ndarray:
        """(len(indices), C, H, W) float32 samples in [0, 1] (clamped), sample i from its own seed."""
        out = []
        lo, hi = self.data_range
        for a in range(0, len(indices), batch_size):
            idx = indices[a:a + batch_size]
            y = self._labels(idx)
            denoise = sampler.make_denoise(self.den.call, self.conv, self.prediction, (lo, hi), y)
            z = sampler.sample_latents(self.seed, idx, self.shape).to(self.device)
            with torch.inference_mode():
                x = sampler.heun_sample(denoise, z, self.sigmas)
                if self.vae is not None:
                    x = self.vae.decode(x.float())  # the sampler integrates in float64
            out.append(((x + 1) / 2).clamp(0, 1).float().cpu().numpy())
            if progress:
                progress(len(idx))
        return np.concatenate(out) if out else np.zeros((0, *self.pixel_shape), np.float32)

    def _labels(self, idx: np.ndarray):
        if self.classes == "uniform":
            return sampler.class_input(self.den, sampler.sample_classes(self.seed, idx, self.n_classes), self.device)
        return self.den.labels(len(idx), self.device)

    def samples(self, n: int, batch_size: int = 64, progress=None,
                warn: Callable[[str], None] | None = None) -> tuple[np.ndarray, Path, int]:
        """The first n samples, from the cache where it has them. Returns (samples, cache folder, how many were
        drawn now). Each chunk carries an authentication code (cache.seal_file): one that does not verify is said
        through warn, removed and drawn again."""
        folder = cache.cached_path(self.key, ".samples", kind="samples")
        folder.mkdir(exist_ok=True)
        parts, drawn = [], 0
        for c in range(-(-n // CHUNK)):
            want = min(CHUNK, n - c * CHUNK)
            path = folder / f"chunk-{c:06d}.npy"
            entry_key = f"{self.key}/{path.name}"
            if path.exists() and (note := cache.check_file(path, entry_key, kind="samples")) is not None:
                warn and warn(note)
            have = np.load(path, mmap_mode="r") if path.exists() else None
            if have is None or len(have) < want:
                block = self.draw(np.arange(c * CHUNK, c * CHUNK + want), batch_size, progress)
                with cache.atomic_write(path) as tmp:
                    np.save(tmp, block)
                    cache.seal_file(tmp, path, entry_key, kind="samples")
                drawn += want
            else:
                block = np.asarray(have[:want])
                if progress:
                    progress(want)
            parts.append(block)
        return np.concatenate(parts), folder, drawn


def embedder(ckpt_path, layer: str, mopts: ModelOptions, device, sigma: float = 0.0):
    """images (B, C, H, W) in [0, 1] -> (B, D) pooled features of `layer` of another checkpoint at noise `sigma`
    (clean, eps = 0), as `icr extract` reads them."""
    from icrcli.models.taps import Taps
    den = load_model(Path(ckpt_path), mopts, device)
    mopts = den.options or mopts
    conv = noise_convention(den, mopts)
    lo, hi = noise.parse_data_range(mopts.data_range or den.data_range)

    def embed(x01: np.ndarray) -> torch.Tensor:
        x = noise.to_model_range(torch.as_tensor(x01, device=device), lo, hi)
        with torch.inference_mode(), Taps(den.net, [layer], "mean") as taps:
            x_in, t, _ = conv.model_inputs(x, torch.zeros_like(x), sigma, (lo, hi))
            return taps.run(lambda: den.call(x_in, t, den.labels(len(x), device)))[layer].double()

    return embed


def _features(images: Callable[[np.ndarray], np.ndarray], n: int, embed, batch: int) -> torch.Tensor:
    return torch.cat([embed(images(np.arange(a, min(n, a + batch)))).cpu() for a in range(0, n, batch)])


_M = MemorizationOptions()  # the defaults below are the options' (one declaration); the device stays cpu


def memorization(ckpt_path, data_path, mopts: ModelOptions | None = None, samples: int = _M.samples,
                 steps: int = _M.steps, seed: int = _M.seed, criterion: str = _M.criterion,
                 threshold: float | None = _M.threshold, device: str = "cpu",
                 progress: Callable[[int], None] | None = None, embed: str | None = _M.embed,
                 embed_layer: str | None = _M.embed_layer, embed_sigma: float = _M.embed_sigma,
                 embed_mopts: ModelOptions | None = None, grid: str | Path | None = None, grid_count: int = 32,
                 batch_size: int = _M.batch_size,
                 on_phase: Callable[[str, int], Callable[[int], None] | None] | None = None,
                 warn: Callable[[str], None] | None = None) -> dict:
    """Draw `samples` samples of a checkpoint and count the copies of its training images `data_path`.

    progress(n) is called as samples are drawn; on_phase(name, total), if given, returns the progress
    callback of each phase ("sampling", then "searching") instead; warn(note) hears of cached samples that did
    not verify (redrawn). Returns the JSON-ready result."""
    t0 = time.perf_counter()
    if criterion not in ("ratio", "cosine"):
        raise UserError(f"--criterion {criterion!r}: choose ratio or cosine.")
    if samples < 1:
        raise UserError(f"--samples {samples}: draw at least one sample.")
    if (embed is None) != (embed_layer is None):
        raise UserError("--embed CKPT and --embed-layer NAME go together: name the checkpoint and its layer.")
    dev = device_named(device)
    imgs = open_images(data_path)
    if len(imgs) < 2:
        raise UserError(f"{data_path}: {len(imgs)} image; the ratio rule needs at least two training images.")
    src = SampleSource(ckpt_path, mopts or ModelOptions(), steps, seed, dev, (imgs.channels, imgs.height))
    if src.pixel_shape != (imgs.channels, imgs.height, imgs.width):
        raise UserError(f"the model draws {'x'.join(map(str, src.pixel_shape))} (CxHxW) samples but the training images "
                        f"are {imgs.channels}x{imgs.height}x{imgs.width}. Pass the images the model was trained on.")
    phase = on_phase or (lambda name, total: progress if name == "sampling" else None)
    x, folder, drawn = src.samples(samples, batch_size, phase("sampling", samples), warn)

    search = phase("searching", len(imgs))
    if embed is None:
        space = "pixels on [-1, 1]"
        queries = torch.as_tensor(x, device=dev) * 2 - 1
        reference = lambda rows: torch.as_tensor(imgs.get_float(rows)) * 2 - 1
    else:
        space = f"{embed}:{embed_layer} at sigma {embed_sigma:g}"
        f = embedder(embed, embed_layer, embed_mopts or ModelOptions(trust_pickle=(mopts or ModelOptions())
                                                                     .trust_pickle), dev, embed_sigma)
        queries = _features(lambda rows: x[rows], len(x), f, batch_size).to(dev)
        ref = _features(imgs.get_float, len(imgs), f, batch_size)
        reference = lambda rows: ref[torch.as_tensor(rows)]
    values, index = nearest(queries, reference, len(imgs), k=2, metric="l2" if criterion == "ratio" else "cosine",
                            progress=search)
    result = {"schema": 1, "command": "memorization", "checkpoint": str(ckpt_path), "data": str(data_path),
              "n_train": len(imgs), "space": space}
    result.update(memorization_ratio(values, criterion, threshold))
    result.update({
        "sampler": {"name": "EDM Heun (Karras et al. 2022, Alg. 1, no churn)", "steps": steps,
                    "evaluations": 2 * (len(src.sigmas) - 1) - 1, "sigmas": src.config["sigmas"],
                    "prediction": src.prediction, "classes": src.classes, "seed": seed},
        "noise": src.config["noise"], "arch": src.config["arch"],
        "samples_cache": str(folder), "samples_drawn": drawn, "cached": drawn == 0,
        "nearest_index": index[:, 0].tolist(),
        "warnings": criterion_warnings(criterion, threshold, embed),
    })
    if grid is not None:
        from icrcli.stats.neighbours import memorized
        k = min(grid_count, len(x))
        copies = memorized(values, criterion, threshold)
        write_grid(grid, x[:k], imgs.get_float(index[:k, 0]), copies[:k])
        result["grid"] = str(grid)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    result["version"] = __version__
    return result


def criterion_warnings(criterion: str, threshold: float | None, embed: str | None) -> list[str]:
    """The cosine rule's 0.6 is the ICR paper's for SSCD copy-detection embeddings; on raw pixels cosine
    similarities between different images of one data set are high (every real MNIST digit has a neighbour above
    0.6), so it counts nearly everything as a copy."""
    from icrcli.stats.neighbours import COSINE_THRESHOLD
    if criterion == "cosine" and embed is None and (threshold is None or threshold == COSINE_THRESHOLD):
        return [f"--criterion cosine at {COSINE_THRESHOLD:g} on pixels: {COSINE_THRESHOLD:g} is calibrated for "
                "SSCD embeddings (the ICR paper), not pixels, where different real images already exceed it (it flags "
                "100% of real MNIST digits as copies). Use --criterion ratio, an --embed layer, or a --threshold "
                "calibrated on real held-out images."]
    return []


def write_grid(path, samples: np.ndarray, nearest_images: np.ndarray, copies: np.ndarray, per_row: int = 8,
               pad: int = 2) -> None:
    """A PNG of sample | nearest training image pairs, `per_row` pairs a row; the pairs counted as copies are
    framed in red. samples, nearest_images (n, C, H, W) in [0, 1]; copies (n,) bool."""
    from PIL import Image
    n, _, h, w = samples.shape
    to_rgb = lambda a: np.repeat(a, 3, 0) if a.shape[0] == 1 else a[:3]
    cell_w, cell_h = 2 * w + 3 * pad, h + 2 * pad
    rows = -(-n // per_row)
    canvas = np.full((rows * (cell_h + pad) + pad, per_row * (cell_w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        y0, x0 = pad + (i // per_row) * (cell_h + pad), pad + (i % per_row) * (cell_w + pad)
        canvas[y0:y0 + cell_h, x0:x0 + cell_w] = (220, 30, 30) if copies[i] else (200, 200, 200)
        for j, img in enumerate((samples[i], nearest_images[i])):
            pix = (to_rgb(img).transpose(1, 2, 0) * 255 + 0.5).clip(0, 255).astype(np.uint8)
            xs = x0 + pad + j * (w + pad)
            canvas[y0 + pad:y0 + pad + h, xs:xs + w] = pix
    path = Path(path)
    from PIL.PngImagePlugin import PngInfo
    mark = PngInfo()
    mark.add_text("Software", "icr")  # so a rerun may replace it (icrcli.cli.outputs: only icr's own plots)
    with cache.atomic_write(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG", pnginfo=mark)
