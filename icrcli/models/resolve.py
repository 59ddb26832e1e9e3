"""From a checkpoint file to a frozen network and the way to call it.

Resolution order for the architecture: --arch (built-in name, `module:function` or `file.py:Class`), else the
JSON sidecar next to the checkpoint, else recognition from the state-dict keys (EDM U-Nets, DiT/SiT/REPA), else
a Hugging Face diffusers folder. What the weights cannot tell (noise parametrization, how time is fed, the data
range, the call signature) comes from the family's defaults, the sidecar, or the command line, in rising priority.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch

from icrcli.errors import UserError

BUILTIN_ARCHS = ("edm", "dit", "sit", "repa")
SIDECAR_SUFFIX = ".icr.json"


@dataclass
class ModelOptions:
    """How to build and call the network; None means: from the sidecar, else the family's default."""
    arch: str | None = None
    arch_args: dict = field(default_factory=dict)
    key: str | None = None
    trust_pickle: bool = False
    param: str | None = None            # edm | vp | ddpm | flow | ve
    schedule: str | None = None         # e.g. linear:1e-4:0.02:1000
    time_input: str | None = None       # see icrcli.models.noise time kinds
    time_shape: str | None = None       # "(B,)" (default) | "scalar" | "(B,1)"
    time_convention: str | None = None  # flow models: repa (t=0 clean) | sit (t=1 clean)
    data_range: str | None = None       # -1:1 | 0:1 | -0.5:0.5
    prediction: str | None = None       # eps | x0 | v | score | denoised (recorded; features do not need it)
    call: str | None = None             # "x,t" | "x,t,y" | "sample=x,timestep=t"
    class_label: int | None = None      # None = the null class, as in the paper
    vae: str | None = None              # diffusers AutoencoderKL folder for latent models


@dataclass
class Denoiser:
    net: torch.nn.Module
    family: str
    default_layer: str
    in_channels: int
    resolution: int | None
    latent: bool
    noise_defaults: dict                 # param, schedule, time_input, time_convention for noise.from_options
    data_range: str
    call: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], object]
    labels: Callable[[int, torch.device], torch.Tensor | None]
    description: dict
    schedule_buffer: object = None       # alphas_cumprod / betas stored in the checkpoint, if any


def noise_convention(den: Denoiser, opts: ModelOptions, t_mode: str = "nearest"):
    """The model's NoiseConvention: the family's defaults, overridden by the user's options. Naming another
    --param drops the family's schedule/time defaults, which belong to its own parametrization."""
    from icrcli.models import noise
    nd = dict(den.noise_defaults)
    if opts.param is not None and opts.param != nd.get("param"):
        nd = {"param": opts.param}
    for k in ("schedule", "time_input", "time_convention"):
        if getattr(opts, k) is not None:
            nd[k] = getattr(opts, k)
    if not nd.get("param"):
        raise UserError("Unknown noise parametrization: pass --param edm|vp|ddpm|flow|ve.")
    buffer = den.schedule_buffer if opts.schedule is None and nd["param"] in ("ddpm", "vp") else None
    return noise.from_options(nd["param"], schedule_spec=nd.get("schedule") if buffer is None else None,
                              schedule_buffer=buffer, time_kind=nd.get("time_input"),
                              time_convention=nd.get("time_convention"), t_mode=t_mode,
                              time_shape=opts.time_shape or "(B,)")


def sidecar_for(path: Path) -> Path | None:
    """`CKPT.icr.json` next to the checkpoint, else `icr.json` in its folder (one file for a run's checkpoints)."""
    for cand in (path.with_name(path.name + SIDECAR_SUFFIX), path.parent / "icr.json"):
        if cand.is_file():
            return cand
    return None


def merge_sidecar(path: Path, opts: ModelOptions) -> tuple[ModelOptions, Path | None]:
    side = sidecar_for(path) if path.exists() else None
    if side is None:
        return opts, None
    try:
        data = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{side}: not valid JSON ({e}). See README 'Sidecar' for the schema.") from None
    names = {f.name for f in fields(ModelOptions)}
    unknown = sorted(set(data) - names - {"layer", "comment"})
    if unknown:
        raise UserError(f"{side}: unknown keys {unknown}; allowed: {sorted(names | {'layer', 'comment'})}.")
    merged = ModelOptions(**{f.name: getattr(opts, f.name) for f in fields(ModelOptions)})
    for k, v in data.items():
        if k in names and (getattr(opts, k) in (None, {}, False)):
            setattr(merged, k, v)
    if data.get("arch_args") and opts.arch_args:
        merged.arch_args = {**data["arch_args"], **opts.arch_args}
    return merged, side


def load_model(path: str | Path, opts: ModelOptions, device: torch.device | str = "cpu") -> Denoiser:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint. Pass a .safetensors/.pt/.pth/.ckpt file, an EDM .pkl, "
                        "or a diffusers model folder.")
    opts, side = merge_sidecar(path, opts)
    if path.is_dir():
        from icrcli.models.archs.diffusers_models import load_diffusers
        den = load_diffusers(path, opts)
    else:
        den = _from_checkpoint(path, opts)
    den.net.eval().requires_grad_(False).to(device)
    den.description["sidecar"] = str(side) if side else None
    return den


def _from_checkpoint(path: Path, opts: ModelOptions) -> Denoiser:
    from icrcli.models.checkpoints import load_checkpoint
    ckpt = load_checkpoint(path, key=opts.key, trust_pickle=opts.trust_pickle, map_location="cpu")
    sd, meta = ckpt.state_dict, ckpt.meta
    desc = {"checkpoint": str(path), "format": ckpt.format, "weights": ckpt.source,
            "weights_found": ckpt.candidates}
    buffer = next((sd[k] for k in ("alphas_cumprod", "betas") if k in sd), None)
    arch = opts.arch
    if arch and ":" in arch:
        den = _user_arch(arch, opts, sd)
    elif arch in (None, "edm") and (arch == "edm" or _looks_edm(sd)):
        den = _edm(sd, meta, opts)
    elif arch in (None, "dit", "sit", "repa"):
        den = _transformer(sd, meta, opts, arch)
    else:
        raise UserError(f"Unknown --arch {arch!r}. Built-in: {', '.join(BUILTIN_ARCHS)}; or your own network "
                        "as `my.module:build_fn` or `path/to/file.py:ClassName` with --arch-arg k=v.")
    den.description.update(desc)
    den.schedule_buffer = buffer
    return den


def _looks_edm(sd) -> bool:
    from icrcli.models.archs.edm import infer_edm_config
    return infer_edm_config(sd) is not None


def _edm(sd, meta, opts: ModelOptions) -> Denoiser:
    from icrcli.models.archs import edm
    config = edm.infer_edm_config(sd)
    if config is None:
        raise UserError("--arch edm: the weights are not an EDM SongUNet/DhariwalUNet state dict.")
    recorded = meta.get("init_kwargs") or {}
    # What the pickle recorded (sigma_data, beta_d, ...) wins over what shapes imply; then --arch-arg.
    precond = _edm_precond(meta.get("class_name"), opts.arch_args.get("precond"), config["precond"])
    config.update({k: v for k, v in recorded.items() if k not in ("model_type",)})
    config.update({k: v for k, v in opts.arch_args.items() if k != "precond"})
    config["precond"] = precond
    with torch.device("meta"):
        net = edm.build_edm(**config)
    target = net if any(k.startswith("model.") for k in sd) else net.model
    _load_strict(target, sd, f"the EDM {config['model_type']} network")
    label_dim = config.get("label_dim", 0)
    check_class_label(opts.class_label, label_dim, "EDM")

    def labels(b, device):
        if not label_dim:
            return None
        out = torch.zeros(b, label_dim, device=device)  # EDM's null class: an all-zero label vector
        if opts.class_label is not None:
            out[:, opts.class_label] = 1
        return out

    return Denoiser(
        net=net, family="edm", default_layer=edm.default_layer(net), in_channels=config["img_channels"],
        resolution=config["img_resolution"], latent=False,
        noise_defaults={"param": "edm", "time_input": "sigma"}, data_range="-1:1",
        call=lambda x, t, y: net(x, t, y), labels=labels,
        description={"arch": f"edm/{precond}/{config['model_type']}", "config": _jsonable(config)},
    )


_EDM_CLASSES = {"EDMPrecond": "edm", "VPPrecond": "vp", "VEPrecond": "ve", "iDDPMPrecond": "iddpm"}


def _edm_precond(class_name: str | None, given: str | None, inferred: str) -> str:
    if given:
        return given
    if class_name:
        return _EDM_CLASSES.get(class_name.rsplit(".", 1)[-1], inferred)
    return inferred


def _transformer(sd, meta, opts: ModelOptions, arch: str | None) -> Denoiser:
    from icrcli.models.archs import dit
    args = dict(meta.get("args") or {})
    if arch in ("dit", "sit", "repa"):
        args["family"] = arch
    args.update(opts.arch_args)
    if any(k.startswith("decoder_blocks.") for k in sd):
        sd = dit.upgrade_legacy_repa(sd)
    cfg = dit.infer_transformer_config(sd, args or None)
    if cfg is None:
        raise UserError(
            "Could not recognise the architecture from the checkpoint's keys (tried: EDM SongUNet/DhariwalUNet, "
            "DiT/SiT/REPA). Name it: --arch edm|dit|sit|repa, or build your own network with "
            "--arch my.module:build_fn / --arch path/to/model.py:ClassName (+ --arch-arg k=v), or put the same "
            "in a sidecar CKPT.icr.json (see README).")
    with torch.device("meta"):
        net = dit.build_transformer(cfg)
    _load_strict(net, sd, f"the {cfg['name'] or cfg['family']} network")
    family = cfg["family"]
    kw = cfg["kwargs"]
    num_classes = kw.get("num_classes", 1000)
    check_class_label(opts.class_label, num_classes, {"dit": "DiT", "sit": "SiT", "repa": "REPA-SiT"}[family])
    has_null = net.y_embedder.embedding_table.weight.shape[0] > num_classes
    if opts.class_label is None and not has_null:  # said before any output is written
        raise UserError("This checkpoint has no null-class embedding (trained without label dropout); "
                        "pass --class-label N to condition on a class.")

    def labels(b, device):
        y = num_classes if opts.class_label is None else opts.class_label
        return torch.full((b,), y, dtype=torch.long, device=device)

    if family == "dit":
        noise = {"param": "ddpm", "schedule": "linear:1e-4:0.02:1000", "time_input": "index"}
    else:
        path_type = str(args.get("path_type", "Linear"))
        if path_type.lower() != "linear":
            raise UserError(f"This {family.upper()} checkpoint was trained with path_type={path_type}; icr supports "
                            "the linear interpolant only. Override with --param and --time-input if you know "
                            "the mapping.")
        convention = "repa" if family == "repa" or "proj_coeff" in args or "enc_type" in args else "sit"
        noise = {"param": "flow", "time_input": "t", "time_convention": convention}
    return Denoiser(
        net=net, family=family, default_layer=dit.default_layer(net), in_channels=kw.get("in_channels", 4),
        resolution=kw.get("input_size"), latent=kw.get("in_channels", 4) == 4, noise_defaults=noise,
        data_range="-1:1", call=lambda x, t, y: net(x, t, y), labels=labels,
        description={"arch": cfg["name"] or family, "config": _jsonable(kw)},
    )


def check_class_label(label: int | None, n_classes: int | None, what: str) -> None:
    """--class-label must name one of the model's classes; an unconditional model takes none."""
    if label is None:
        return
    if not n_classes:
        raise UserError(f"--class-label {label}: this {what} model is unconditional (it takes no class label). "
                        "Drop --class-label.")
    if not 0 <= label < n_classes:
        raise UserError(f"--class-label {label}: this {what} model has classes 0..{n_classes - 1}. Pick one of "
                        "them, or leave --class-label out for the null class.")


_BUILTIN_HINT = "Check --arch/--arch-arg (or the sidecar), or --key if the file holds several networks."


def _load_strict(net: torch.nn.Module, sd: dict, what: str, hint: str = _BUILTIN_HINT, assign: bool = True) -> None:
    """Load `sd` into `net` exactly, or say by name which keys and shapes do not fit. assign=True hands the
    checkpoint's tensors to a network built on the meta device; a user's network (built for real, in its own
    dtype) gets them copied in."""
    diff = _key_diff(net, sd)
    if any(diff):
        raise UserError(f"The weights do not fit {what}: {_describe_diff(*diff)} {hint}")
    net.load_state_dict(sd, strict=True, assign=assign)


def _key_diff(net, sd):
    """(missing keys, unexpected keys, shape mismatches "key (file AxB, network CxD)"); all empty iff it loads."""
    want = net.state_dict()
    shape = lambda t: "x".join(map(str, t.shape)) or "scalar"
    wrong = [f"{k} (file {shape(sd[k])}, network {shape(want[k])})" for k in sorted(set(want) & set(sd))
             if torch.is_tensor(sd[k]) and sd[k].shape != want[k].shape]
    return sorted(set(want) - set(sd)), sorted(set(sd) - set(want)), wrong


def _describe_diff(missing, unexpected, wrong=()) -> str:
    def few(keys):
        return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
    parts = []
    if missing:
        parts.append(f"missing keys: {few(missing)}.")
    if unexpected:
        parts.append(f"unexpected keys: {few(unexpected)}.")
    if wrong:
        parts.append(f"shapes differ: {few(list(wrong))}.")
    return " ".join(parts)


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


# --------------------------------------------------------------------------------------------------------------
# The user's own architecture.

def import_target(spec: str):
    """`pkg.module:attr` or `path/to/file.py:attr` -> the attribute (a class or a factory function)."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise UserError(f"--arch {spec!r}: expected `my.module:build_fn` or `path/to/file.py:ClassName`.")
    try:
        if target.endswith(".py"):
            file = Path(target)
            if not file.is_file():
                raise UserError(f"--arch {spec!r}: no such file {file}.")
            name = f"icr_user_arch_{abs(hash(str(file.resolve())))}"
            mod_spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except UserError:
        raise
    except Exception as e:  # the user's code failed to import: show why, it is theirs to fix
        raise UserError(f"--arch {spec!r}: importing {target} failed: {type(e).__name__}: {e}") from None
    if not hasattr(module, attr):
        raise UserError(f"--arch {spec!r}: {target} has no attribute {attr!r}.")
    return getattr(module, attr)


def parse_call(spec: str | None) -> list[tuple[str | None, str]]:
    """"x,t,y" -> positional [(None,'x'),(None,'t'),(None,'y')]; "sample=x,timestep=t" -> keywords."""
    spec = spec or "x,t"
    out = []
    for part in spec.split(","):
        name, eq, role = part.strip().partition("=")
        kw, role = (name, role) if eq else (None, name)
        if role not in ("x", "t", "y"):
            raise UserError(f"--call {spec!r}: each entry is x, t or y, optionally as keyword=x; got {part!r}.")
        out.append((kw, role))
    return out


def _user_arch(spec: str, opts: ModelOptions, sd: dict) -> Denoiser:
    build = import_target(spec)
    try:
        net = build(**opts.arch_args)
    except TypeError as e:
        raise UserError(f"--arch {spec}: constructing it with {opts.arch_args} failed: {e}. "
                        "Pass constructor arguments with --arch-arg k=v.") from None
    if not isinstance(net, torch.nn.Module):
        raise UserError(f"--arch {spec} returned {type(net).__name__}, not a torch.nn.Module.")
    _load_strict(net, sd, spec, "Hints: check --arch-arg values (layer widths, depth); pick the right sub-dict "
                                "with --key; a common prefix (e.g. 'model.') in the file but not in your class "
                                "means the file wraps the network.", assign=False)
    if not opts.param:
        raise UserError("A user architecture needs its noise parametrization: --param edm|vp|ddpm|flow|ve "
                        "(and --schedule / --time-input / --time-convention as applicable; see README).")
    roles = parse_call(opts.call)

    def call(x, t, y):
        values = {"x": x, "t": t, "y": y}
        args = [values[r] for k, r in roles if k is None]
        kwargs = {k: values[r] for k, r in roles if k is not None}
        return net(*args, **kwargs)

    def labels(b, device):
        if opts.class_label is None:
            return None
        return torch.full((b,), opts.class_label, dtype=torch.long, device=device)

    in_ch = int(opts.arch_args.get("in_channels", opts.arch_args.get("img_channels", 3)))
    res = opts.arch_args.get("img_resolution", opts.arch_args.get("resolution"))
    return Denoiser(
        net=net, family="user", default_layer="", in_channels=in_ch, resolution=res, latent=False,
        noise_defaults={}, data_range="-1:1", call=call, labels=labels,
        description={"arch": spec, "config": _jsonable(opts.arch_args)},
    )
