"""What an extraction is, kept apart from how it runs.

- `load_model` / `load_data` open and hash a checkpoint (with its VAE) and a data set ONCE: `LoadedModel`,
  `LoadedData`. A sweep reuses one of each; a timeline loads N models over one `LoadedData`.
- `Request` is what shapes the features (sigma, views, subset, augmentation, seed, layers, pool, dtype, time
  mode, resize, chunk size): frozen and typed. `make_plan(model, data, request)` checks that they fit and
  fixes the configuration and its content key: a `Plan`. Making a plan loads nothing.
- `RunOptions` is how a plan runs (batch size, device, overwrite): never part of the key, never read for
  anything that shapes the features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from icrcli import cache
from icrcli.data import augment, latents
from icrcli.data.images import ImageSet, open_images, subset_indices
from icrcli.errors import UserError
from icrcli.features.featurefile import FORMAT_VERSION
from icrcli.features.options import DTYPES, T_MODES, RunOptions, ViewOptions  # noqa: F401  (re-exported)
from icrcli.progress import SILENT, Reporter
from icrcli.models import resolve
from icrcli.models.archsource import arch_source_sha256, is_user_arch
from icrcli.models.noise import NoiseConvention
from icrcli.models.resolve import Denoiser, ModelOptions, noise_convention
from icrcli.models.taps import resolve_layers

# The generator behind every view's noise; recorded in the configuration, so a change of generator is a new key.
NOISE_RNG = "splitmix64-box-muller-float32"


# A request's defaults are the view options' (declared once, in icrcli.features.options).
_VIEWS = ViewOptions()


@dataclass(frozen=True)
class Request:
    """What shapes the features; every field is part of the cache key (through the plan's configuration).
    Checked on construction, so a bad request fails before anything is loaded."""
    sigma: float
    layers: tuple[str, ...] = ()    # () = the architecture's default layer
    views: int = _VIEWS.views
    images: int | None = _VIEWS.images      # None = all
    augment: str = _VIEWS.augment
    seed: int = _VIEWS.seed
    pool: str = _VIEWS.pool
    dtype: str = _VIEWS.dtype
    resize: bool = _VIEWS.resize
    chunk_images: int = _VIEWS.chunk_images
    t_mode: str = _VIEWS.t_mode
    skip_bad_images: bool = _VIEWS.skip_bad_images  # recorded in the configuration when set
    indices: tuple[int, ...] | None = None  # the images to use (--indices FILE), instead of `images` drawn by seed

    def __post_init__(self):
        object.__setattr__(self, "sigma", float(self.sigma))
        object.__setattr__(self, "layers", tuple(self.layers))
        # One spelling per augmentation spec ("paper" stays "paper"), so equal requests have equal keys.
        object.__setattr__(self, "augment", augment.canonical_policy(self.augment))
        if self.indices is not None:
            object.__setattr__(self, "indices", tuple(int(i) for i in self.indices))
            if len(self.indices) < 2:
                raise UserError(f"--indices: {len(self.indices)} image(s) listed; ICR needs at least two.")
        if not math.isfinite(self.sigma) or self.sigma < 0:
            raise UserError(f"--sigma {self.sigma}: the noise level must be a finite number >= 0 (0 gives "
                            "augmentation-only views).")
        # the view fields are checked once, by the view options (ViewOptions: the sentence Python callers get)
        ViewOptions(**{name: getattr(self, name) for name in _SHARED})

    def at(self, sigma: float) -> Request:
        """The same request at another noise level (a sweep's levels)."""
        return dataclasses.replace(self, sigma=sigma)


# The fields a Request shares with the view options: checked by ViewOptions on construction.
_SHARED = tuple(f.name for f in dataclasses.fields(Request)
                if f.name in {g.name for g in dataclasses.fields(ViewOptions)})


def request_from(v: ViewOptions, sigma: float, layers: list[str] | tuple[str, ...] | None = None) -> Request:
    """The Request of the view options at `sigma`; `layers` replaces v.layer (a sweep's `auto`, resolved)."""
    # --augment repeated outside a sweep: the last one, as a repeated option always was
    aug = v.augment if isinstance(v.augment, str) else v.augment[-1]
    return Request(sigma=sigma, layers=tuple(v.layer or () if layers is None else layers), views=v.views,
                   images=v.images, augment=aug, seed=v.seed, pool=v.pool, dtype=v.dtype, resize=v.resize,
                   chunk_images=v.chunk_images, t_mode=v.t_mode, skip_bad_images=v.skip_bad_images,
                   indices=v.indices)


@dataclass(frozen=True)
class LoadedModel:
    """A network ready to run, with what identifies it: the content hash of its file(s) and of its VAE."""
    path: Path
    options: ModelOptions           # as the network was read: the command line over the sidecar
    denoiser: Denoiser
    vae: object | None
    device: torch.device
    sha256: str
    vae_sha256: str | None
    prediction: str | None          # what the network predicts, if said (option or sidecar); recorded only

    @property
    def reads_latents(self) -> bool:
        """A latent model without its VAE: the data must be latents, fed as they are."""
        return self.denoiser.latent and self.vae is None

    @property
    def arch(self) -> str | None:
        return self.denoiser.description.get("arch")


@dataclass(frozen=True)
class LoadedData:
    """An opened data set and the content hash of its files."""
    path: Path
    images: ImageSet | latents.LatentSet
    sha256: str
    latent: bool                    # read as latents (LatentSet), not as pixels

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> np.ndarray | None:
        return self.images.labels


@dataclass(frozen=True)
class Plan:
    """One extraction, fully resolved: the loaded pieces, the request, and what follows from them."""
    model: LoadedModel
    data: LoadedData
    request: Request
    indices: np.ndarray             # (N,) int64, sorted: rows of the feature file -> data indices
    layers: tuple[str, ...]
    noise: NoiseConvention
    data_range: tuple[float, float]  # the pixel range the model was trained on
    aug_hw: tuple[int, int]         # (H, W) at which views are augmented
    noise_chw: tuple[int, int, int]  # (C, H, W) of the model input the noise is added to
    config: dict = field(repr=False)  # everything that shapes the features; config_key(config) == key
    key: str = ""

    # Shorthands used by the runner and the CLI.
    @property
    def sigma(self) -> float:
        return self.request.sigma

    @property
    def denoiser(self) -> Denoiser:
        return self.model.denoiser

    @property
    def vae(self):
        return self.model.vae

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def images(self):
        return self.data.images

    @property
    def latent_data(self) -> bool:
        """The data are latents fed as they are (a latent model without its VAE)."""
        return self.model.reads_latents

    @property
    def n_chunks(self) -> int:
        return -(-len(self.indices) // self.request.chunk_images)

    def chunk_rows(self, c: int) -> np.ndarray:
        """Rows of the feature file in chunk c."""
        step = self.request.chunk_images
        return np.arange(c * step, min(len(self.indices), (c + 1) * step))

    def record(self) -> dict:
        """What the feature file records besides the configuration, and is not part of the key (each follows
        from what is): what the views really got at this sigma (effective_sigma on [-1, 1] data, the discrete
        step effective_step, the time_value fed to the network) and the crop padding in px at this image size."""
        rec = {"prediction": self.model.prediction or "", "data_images": len(self.data)}
        if self.request.images is not None and self.request.indices is None:
            rec["images_requested"] = int(self.request.images)
        at = self.noise_at()
        rec["effective_sigma"] = float(at["effective_sigma"])
        if self.noise.family == "ddpm":
            rec["effective_step"] = float(at["t"])
        rec["time_value"] = float(at["time_value"])
        pad = augment.policy_pad_px(self.request.augment, self.aug_hw[0])
        if pad is not None:
            rec["augment_pad_px"] = pad
        return rec

    def noise_at(self) -> dict:
        """NoiseConvention.at for this plan's sigma, in the units the noise is added in (noise.py)."""
        units = (-1.0, 1.0) if self.vae is not None or self.latent_data else self.data_range
        return self.noise.at(self.sigma, units)


def device(name: str) -> torch.device:
    """--device as a torch.device. Under torchrun, auto and cuda mean this rank's own GPU (cuda:LOCAL_RANK)."""
    from icrcli import dist
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch here. Use --device cpu (or auto).")
    if name == "cuda" and dist.world_size() > 1:
        return torch.device("cuda", dist.local_rank())
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N.") from None


def load_model(checkpoint: str | Path, mopts: ModelOptions, device_name: str = "auto",
               reporter: Reporter = SILENT, hashes: Callable[[Path], str] | None = None) -> LoadedModel:
    """Load the network (and its VAE) onto the device and hash the file(s) they came from."""
    checkpoint = Path(checkpoint)
    dev = device(device_name)
    reporter.step(f"loading checkpoint {checkpoint}")
    den = resolve.load_model(checkpoint, mopts, dev)
    # From here on the options as the network was read: the command line over the sidecar. The key must follow
    # what shaped the features, wherever it was said.
    mopts = den.options or mopts
    vae = None
    if mopts.vae:
        from icrcli.models.vae import load_vae
        reporter.step(f"loading VAE {mopts.vae}")
        vae = load_vae(mopts.vae, dev)
    hash_file = hashes or cache.file_sha256
    reporter.step(f"hashing checkpoint {checkpoint}")
    sha = cache.content_sha256(checkpoint, hash_file)
    vae_sha = cache.content_sha256(mopts.vae, hash_file) if vae is not None else None
    return LoadedModel(checkpoint, mopts, den, vae, dev, sha, vae_sha, mopts.prediction)


def load_data(data: str | Path, model: LoadedModel, reporter: Reporter = SILENT,
              skip_bad_images: bool = False) -> LoadedData:
    """Open the data set the way `model` reads it (latent arrays for a latent model without its VAE, images
    otherwise) and hash its files. A timeline opens it once, for the first of its models. skip_bad_images:
    undecodable image files do not stop the opening (make_plan leaves them out with Request.skip_bad_images)."""
    data = Path(data)
    latent_file = _latent_file(model, data)
    reporter.step(f"opening data {data}")
    imgs = latents.open_latents(data) if latent_file else open_images(data, skip_bad_images=skip_bad_images)
    unsafe = getattr(imgs, "unsafe_members", [])
    if unsafe:
        reporter.warn(f"{data}: left out {len(unsafe)} archive member(s) whose names are absolute or climb out with "
                      f"../ (e.g. {unsafe[0]!r}); icr never reads them. Re-make the archive with relative names if "
                      "they are images you want.")
    if len(imgs) < 2:
        raise UserError(f"{data}: {len(imgs)} image(s); ICR needs at least two.")
    reporter.step(f"hashing data {data}")
    return LoadedData(data, imgs, cache.tree_sha256(imgs.source_files()), latent_file)


def _latent_file(model: LoadedModel, data: Path) -> bool:
    return model.reads_latents and str(data).lower().endswith((".npy", ".npz"))


def make_plan(model: LoadedModel, data: LoadedData, request: Request, reporter: Reporter = SILENT) -> Plan:
    """Check that model, data and request fit, and fix the configuration and its content key."""
    den = model.denoiser
    if _latent_file(model, data.path) != data.latent:
        raise UserError(f"{data.path} was opened for a model that reads {'latents' if data.latent else 'images'}; "
                        "open it again with load_data for this model.")
    imgs = data.images
    if request.indices is not None:
        idx = _given_indices(request.indices, len(imgs), data.path)
    else:
        idx = subset_indices(len(imgs), request.images, request.seed)
        if request.images is not None and request.images > len(imgs):
            reporter.warn(f"--images {request.images}: the data hold {len(imgs)} images; using all {len(imgs)}.")
    idx, skipped = _leave_out_bad(imgs, idx, request, reporter)
    layers = request.layers or ((den.default_layer,) if den.default_layer else ())
    if not layers:
        raise UserError("This architecture has no default layer: name one with --layer (see `icr layers CKPT`).")
    resolve_layers(den.net, list(layers))
    _check_fit(model, imgs, request)
    conv = noise_convention(den, model.options, request.t_mode)
    mopts = model.options
    data_range = mopts.data_range or den.data_range
    config = {
        "format_version": FORMAT_VERSION,
        "checkpoint_sha256": model.sha256,
        "data_sha256": data.sha256,
        "indices_sha256": hashlib.sha256(np.ascontiguousarray(idx, dtype="<i8").tobytes()).hexdigest(),
        "n_images": len(idx), "n_views": request.views, "sigma": request.sigma, "seed": request.seed,
        "augment": request.augment, "augment_params": augment.describe_policy(request.augment),
        "layers": list(layers), "pool": request.pool, "dtype": request.dtype, "resize": request.resize,
        "noise": conv.describe(), "data_range": data_range,
        "class_label": mopts.class_label, "model": den.description.get("config"),
        "arch": den.description.get("arch"), "vae": model.vae_sha256,
        "weights": den.description.get("weights"), "call": mopts.call,  # which sub-dict, and how it is called
        "chunk_images": request.chunk_images, "noise_rng": NOISE_RNG,
    }
    if skipped is not None:         # only when asked, so every other request keeps its key
        config["skipped_images"] = skipped
    if mopts.image_shape:           # only when given: the input shape, which --resize fits the images to
        config["image_shape"] = mopts.image_shape
    if is_user_arch(mopts.arch):    # your own network: its source, by content (editing forward changes the key)
        config["arch_source_sha256"] = arch_source_sha256(mopts.arch)
    aug_hw, noise_chw = _view_shapes(model, imgs)
    p = Plan(model, data, request, idx, tuple(layers), conv, conv.data_range, aug_hw, noise_chw, config,
             cache.config_key(config))
    _say_noise(p, reporter)
    return p


def _say_noise(p: Plan, reporter: Reporter) -> None:
    """Where the schedule came from (a stored buffer, by name), and a warning when sigma is below the least noise
    the model was trained on: its views then carry more noise than asked (discrete steps), or it is conditioned
    on a time it was not trained at (SDE time inputs)."""
    if p.noise.family == "ddpm" and (p.noise.schedule_source or "").startswith("buffer"):
        reporter.step(p.noise.summary())
    at = p.noise_at()
    if at["below_smallest"]:
        lo = p.noise.smallest_sigma_model() * 2 / (at["data_range"][1] - at["data_range"][0])
        what = (f"its views carry sigma = {at['effective_sigma']:.4g} (step {at['t']:g}), whatever smaller sigma is "
                "asked, so such sigmas give the same features" if p.noise.family == "ddpm" else at.get("note", ""))
        reporter.warn(f"--sigma {p.sigma:g} is below this model's smallest noise level ({lo:.4g} on [-1, 1] data): "
                      f"{what}.")


def _given_indices(given: tuple[int, ...], n: int, where) -> np.ndarray:
    """--indices: the listed images, in ascending order (rows of the feature file), each once and in range."""
    idx = np.asarray(given, dtype=np.int64)
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise UserError(f"--indices lists image {int(bad[0])}, but {where} holds {n} images (indices 0..{n - 1}). "
                        "Check that the list was made for this data set.")
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise UserError(f"--indices lists image {int(uniq[counts > 1][0])} more than once; list each image once.")
    return uniq


_NAMED_SKIPS = 20   # names kept in the configuration (an HDF5 attribute): the count and the kept indices say the rest


def _leave_out_bad(imgs, idx: np.ndarray, request: Request, reporter: Reporter) -> tuple[np.ndarray, dict | None]:
    """--skip-bad-images: the subset without its undecodable images (decoded once each to find them), and what
    was left out, {"count", "names"} for the configuration; (idx, None) without the option."""
    if not request.skip_bad_images or not hasattr(imgs, "decodable"):
        return idx, None
    kept, bad = imgs.decodable(idx)
    names = [name for _, name, _ in bad]
    if bad:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        reporter.warn(f"--skip-bad-images: left out {len(bad)} of {len(idx)} images that cannot be decoded "
                      f"({shown}).")
    if len(kept) < 2:
        raise UserError(f"--skip-bad-images: only {len(kept)} of {len(idx)} images can be decoded; ICR needs at "
                        f"least two. The first error: {bad[0][2] if bad else 'none'}")
    return kept, {"count": len(bad), "names": names[:_NAMED_SKIPS]}


def same_views(plans: list[Plan]) -> None:
    """Plans that may share one pass over the data (each chunk decoded once, icrcli.features.compute): the same
    model, data and request except sigma, layers and augmentation (so the same images, views and seeds). Raises
    ValueError otherwise (a programming error, not a user's)."""
    def shared(r: Request) -> Request:
        return dataclasses.replace(r, sigma=0.0, layers=(), augment="none")
    first = plans[0]
    for p in plans[1:]:
        if p.model is not first.model or p.data is not first.data or shared(p.request) != shared(first.request):
            raise ValueError("extract_levels: the plans must share model, data and request except sigma, layers "
                             "and augmentation")


def pixels_wanted(model: LoadedModel) -> tuple[int | None, int | None]:
    """(channels, side) of the images the model takes, through its VAE if it has one; None where unknown."""
    den, vae = model.denoiser, model.vae
    if vae is None:
        return den.in_channels, den.resolution
    return vae.in_channels, den.resolution * vae.factor if den.resolution else None


def _view_shapes(model: LoadedModel, imgs) -> tuple[tuple, tuple]:
    """(H, W) where views are augmented and (C, H, W) where the noise is added, as the fitting and the VAE
    make them."""
    c, h, w = imgs.channels, imgs.height, imgs.width
    vae = model.vae
    if model.reads_latents:
        return (h, w), (c, h, w)
    want_c, res = pixels_wanted(model)
    c, h, w = want_c or c, res or h, res or w
    if vae is not None:
        return (h, w), (vae.latent_channels, h // vae.factor, w // vae.factor)
    return (h, w), (c, h, w)


def _check_fit(model: LoadedModel, imgs, request: Request) -> None:
    """Images must match the model's input (pixels, or latents after the VAE) unless --resize."""
    den = model.denoiser
    c, h, w = imgs.channels, imgs.height, imgs.width
    want_c, want_res = pixels_wanted(model)
    if model.reads_latents:
        if imgs.kind not in ("npy", "npz") or c != den.in_channels:
            raise UserError(f"{den.description.get('arch')} is a latent model ({den.in_channels} channels): give "
                            "its VAE with --vae PATH (a diffusers AutoencoderKL folder) to encode images, or pass "
                            "--data as a float .npy/.npz of latents (N, 4, H, W) already scaled by 0.18215.")
        if (h, w) != (want_res, want_res) and want_res is not None:
            raise UserError(f"The latents are {c}x{h}x{w} but {den.description.get('arch')} takes "
                            f"{den.in_channels}x{want_res}x{want_res} (--resize does not apply to latents). Encode "
                            f"images of {want_res * 8}x{want_res * 8} pixels, or pass images with --vae.")
        if augment.policy_name(request.augment) not in ("none", "crop", "crop-flip"):
            raise UserError("Colour jitter has no meaning on VAE latents: with latent --data use --augment "
                            "crop-flip, crop or none (or give --vae to augment in pixel space).")
    ok_c = want_c is None or c == want_c
    ok_res = want_res is None or (h, w) == (want_res, want_res)
    if not (ok_c and ok_res) and not request.resize:
        raise UserError(f"The images are {c}x{h}x{w} (CxHxW) but the model takes {want_c}x{want_res}x{want_res}. "
                        "Pass --resize to resize (and convert grey<->colour), or use matching data.")

