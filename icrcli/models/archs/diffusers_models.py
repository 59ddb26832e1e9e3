"""Hugging Face diffusers models (optional extra: pip install 'icr[diffusers]').

A model folder holds config.json + weights (diffusion_pytorch_model.safetensors); a pipeline folder holds
unet/ (or transformer/) and scheduler/. The scheduler's config, when present, gives the beta schedule.
Loaded with local_files_only: nothing is ever downloaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from icrcli.errors import UserError
from icrcli.models.adapter import Adapter
from icrcli.models.denoiser import Denoiser, ModelOptions, check_class_label

def diffusers_library():
    try:
        import diffusers
    except ImportError:
        raise UserError("This is a Hugging Face diffusers model folder, and the diffusers library is not "
                        "installed. Install the extra: pip install 'icr[diffusers]'.") from None
    return diffusers


def _load_kwargs() -> dict:
    """from_pretrained options. Without `accelerate`, diffusers warns on every load that it falls back to
    low_cpu_mem_usage=False; asking for that directly keeps stderr quiet and loads the same weights."""
    import importlib.util
    return {"local_files_only": True} | ({} if importlib.util.find_spec("accelerate") else
                                         {"low_cpu_mem_usage": False})


def _model_folder(path: Path) -> tuple[Path, Path | None]:
    """(folder with the denoiser's config.json, scheduler folder or None)."""
    for sub in ("unet", "transformer"):
        if (path / sub / "config.json").is_file():
            sched = path / "scheduler"
            return path / sub, sched if (sched / "scheduler_config.json").is_file() else None
    if (path / "config.json").is_file():
        sched = path.parent / "scheduler"
        return path, sched if (sched / "scheduler_config.json").is_file() else None
    raise UserError(f"{path} is a folder but not a diffusers model (no config.json, unet/ or transformer/). "
                    "Pass a checkpoint file, or a diffusers model/pipeline folder.")


def _read_config(file: Path) -> dict:
    """A diffusers config JSON as a dict, or a UserError naming the file."""
    try:
        cfg = json.loads(file.read_bytes())
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise UserError(f"{file} could not be read as JSON ({e}). The folder may be damaged: download it again.") \
            from None
    if not isinstance(cfg, dict):
        raise UserError(f"{file} holds a JSON {type(cfg).__name__}, not the object diffusers writes. The folder may "
                        "be damaged: download it again.")
    return cfg


def schedule_spec(sched_dir: Path | None) -> str | None:
    """A noise.parse_schedule spec from a diffusers scheduler_config.json."""
    if sched_dir is None:
        return None
    cfg = _read_config(sched_dir / "scheduler_config.json")
    kind = cfg.get("beta_schedule", "linear")
    t = cfg.get("num_train_timesteps", 1000)
    if kind == "linear":
        return f"linear:{cfg.get('beta_start', 1e-4)}:{cfg.get('beta_end', 0.02)}:{t}"
    if kind == "scaled_linear":
        return f"scaled-linear:{cfg.get('beta_start', 0.00085)}:{cfg.get('beta_end', 0.012)}:{t}"
    if kind == "squaredcos_cap_v2":
        return f"cosine:{t}"
    raise UserError(f"{sched_dir}: beta_schedule {kind!r} is not supported; pass --schedule explicitly.")


_WEIGHTS = "diffusion_pytorch_model"


def _weights_kwargs(folder: Path) -> dict:
    """Which weights from_pretrained should read, checked here: without any, diffusers would log an error and a
    note about "unsafe serialization" and then fail on a missing .bin. Its .bin loader is torch.load with
    weights_only=True, so neither kind runs code from the folder."""
    for ext, safe in (("safetensors", True), ("bin", False)):
        if (folder / f"{_WEIGHTS}.{ext}").is_file() or (folder / f"{_WEIGHTS}.{ext}.index.json").is_file():
            return {"use_safetensors": safe}
    found = sorted(p.name for p in folder.iterdir())
    raise UserError(f"{folder} has a config.json but no weights ({_WEIGHTS}.safetensors or .bin); it holds "
                    f"{_few(found)}. The download may be incomplete: fetch the weights too.")


def _few(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "") if names else "nothing"


def from_pretrained(diffusers, cls_name: str, folder: Path):
    """diffusers' `cls_name` (a model class, never a pipeline: those may name code) loaded from `folder`."""
    cls = getattr(diffusers, cls_name, None) if isinstance(cls_name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)):
        raise UserError(f"{folder}: {cls_name!r} is not a diffusers model class (diffusers {diffusers.__version__}). "
                        "Pass the folder of the denoiser (e.g. unet/ of a pipeline).")
    kwargs = _load_kwargs() | _weights_kwargs(folder)
    verbosity = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()  # what goes wrong is said below, in icr's words
    try:
        net, info = cls.from_pretrained(folder, output_loading_info=True, **kwargs)
    except Exception as e:  # noqa: BLE001  diffusers' errors on a damaged folder are of many types
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise UserError(f"{folder}: diffusers could not load the {cls_name} ({type(e).__name__}: {first}). The "
                        "folder may be damaged or incomplete: download it again.") from None
    finally:
        diffusers.utils.logging.set_verbosity(verbosity)
    # diffusers fills weights the file lacks (or has in another shape) with random ones and only logs it.
    missing = list(info.get("missing_keys") or []) + [str(m[0]) for m in info.get("mismatched_keys") or []]
    if missing:
        raise UserError(f"{folder}: the weights do not fit the {cls_name} its config.json describes (missing or "
                        f"of another shape: {_few(sorted(missing))}). The folder may be damaged, or config.json "
                        "belongs to other weights.")
    return net


def denoiser(path: Path, opts: ModelOptions) -> Denoiser:
    """The diffusers model in a model or pipeline folder: DDPM with the scheduler's betas (default linear
    1e-4..0.02 over 1000 steps), called with the integer step."""
    diffusers = diffusers_library()
    folder, sched = _model_folder(path)
    cfg = _read_config(folder / "config.json")
    cls_name = cfg.get("_class_name", "UNet2DModel")
    if cls_name == "UNet2DConditionModel":
        raise UserError(f"{folder}: text-conditioned UNet2DConditionModel needs text embeddings; icr supports "
                        "unconditional and class-conditional diffusers models for now.")
    net = from_pretrained(diffusers, cls_name, folder)
    num_classes = net.config.get("num_class_embeds") if hasattr(net.config, "get") else None
    check_class_label(opts.class_label, num_classes, cls_name)

    def labels(b, device):
        if opts.class_label is None:
            return None
        return torch.full((b,), opts.class_label, dtype=torch.long, device=device)

    def call(x, t, y):
        kwargs = {"class_labels": y} if y is not None else {}
        return net(x, t, **kwargs)

    in_channels = int(net.config.get("in_channels", 3))
    size = net.config.get("sample_size")
    size = size if isinstance(size, int) else None
    shape = f"{in_channels}x{size}x{size} " if size else ""
    return Denoiser(
        net=net, family="diffusers", default_layer=_default_layer(net), in_channels=in_channels,
        resolution=size, latent=in_channels == 4,
        noise_defaults={"param": "ddpm", "schedule": schedule_spec(sched) or "linear:1e-4:0.02:1000",
                        "time_input": "index"},
        data_range="-1:1", call=call, labels=labels,
        description={"arch": f"diffusers/{cls_name}", "config": {k: v for k, v in cfg.items()
                                                                 if not k.startswith("_")},
                     "checkpoint": str(path), "format": "diffusers", "weights": str(folder),
                     "num_class_embeds": num_classes},
        title=f"diffusers {cls_name}, {shape}{'latents' if in_channels == 4 else 'images'}"
              + (f", {num_classes} classes" if num_classes else ""),
    )


def _default_layer(net) -> str:
    """The U-Net's mid block output (its bottleneck); for transformers the middle block."""
    names = dict(net.named_modules())
    if "mid_block" in names:
        return "mid_block"
    blocks = getattr(net, "transformer_blocks", None)
    if blocks is not None and len(blocks):
        return f"transformer_blocks.{len(blocks) // 2 - 1}"
    return ""


class DiffusersAdapter(Adapter):
    names = ("diffusers",)
    what = "Hugging Face diffusers models"
    reads_folders = True

    def opens(self, folder):
        return any((folder / sub / "config.json").is_file() for sub in ("unet", "transformer", "."))

    def open_folder(self, folder, opts):
        return denoiser(folder, opts)

    def layer_candidates(self, module_names):
        """U-Nets: mid_block and each up block, as the --layer help says."""
        return [n for n in module_names if re.fullmatch(r"(?:\w+\.)?(?:mid_block|up_blocks\.\d+)", n)]

    def class_count(self, den):
        return int(den.description.get("num_class_embeds") or 0)

    def default_prediction(self, den):
        return "eps"   # diffusers' UNet2DModel pipelines default to eps


ADAPTER = DiffusersAdapter()
