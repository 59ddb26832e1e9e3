"""The EDM family for icr: recognising an EDM state dict from its keys and shapes, the paper's default tap, and
the adapter that builds the Denoiser. The networks themselves are a port of NVlabs/edm's training/networks.py,
kept apart in edm_networks.py (as EDM keeps its networks.py); their names are re-exported here.
"""

import re

import torch

from icrcli.errors import UserError
from icrcli.models.adapter import Adapter
from icrcli.models.archs.edm_networks import (  # noqa: F401  (re-exported: the family's networks)
    EDM_PRESETS, NETWORKS, PRECONDS, DhariwalUNet, EDMPrecond, SongUNet, VEPrecond, VPPrecond, build_edm,
    iDDPMPrecond,
)
from icrcli.models.denoiser import Denoiser, ModelOptions, check_class_label, jsonable, load_strict

# ----------------------------------------------------------------------------------------------
# Recognising an EDM state dict from its keys and shapes.

_PRECOND_PREFIX = "model."
_LEVEL_KEY = re.compile(r"^dec\.(\d+)x\1_block(\d+)\.conv0\.weight$")
_FILTERS = {2: [1, 1], 4: [1, 3, 3, 1]}  # the two filters EDM uses; buffer values get loaded anyway


def infer_edm_config(state_dict):
    """Constructor kwargs for `build_edm(**config)` that rebuild `state_dict`, or None if it is not EDM-style
    (keys of the wrong rank or size included: a damaged file is then simply not recognised).
    """
    try:
        return _infer_edm_config(state_dict)
    except (KeyError, IndexError, ZeroDivisionError, TypeError, ValueError):
        return None


def _infer_edm_config(state_dict):
    """Constructor kwargs for `build_edm(**config)` that rebuild `state_dict`, or None if it is not EDM-style.

    Accepts the keys of a whole preconditioner (`model.enc...`) or of the bare U-Net (`enc...`).
    The precond is "iddpm" when the `u` buffer is present or the net outputs twice the input
    channels; otherwise "edm", because EDMPrecond, VPPrecond and VEPrecond have no parameters or
    buffers of their own and cannot be told apart from weights (they differ only in c_in, c_out,
    c_skip, c_noise). Settings that leave no trace in the weights (dropout, label_dropout, sigma
    ranges, C_1/C_2) are left at their defaults.
    """
    shapes = _net_shapes(state_dict)
    if shapes is None:
        return None
    net, own = shapes
    model_type = _model_type(net)
    levels = _levels(net)
    if model_type is None or not levels:
        return None
    top = levels[0][0]
    img_channels = net[f"enc.{top}x{top}_conv.weight"][1]
    out_channels = net["out_conv.weight" if model_type == "DhariwalUNet" else f"dec.{top}x{top}_aux_conv.weight"][0]
    iddpm = "u" in own or out_channels == 2 * img_channels
    # ADM's first conv has model_channels * channel_mult[0] outputs, so read its embedding input.
    song = model_type == "SongUNet"
    model_channels = net[f"enc.{top}x{top}_conv.weight"][0] if song else net["map_layer0.weight"][1]
    num_blocks = levels[0][1] - 1
    config = dict(
        precond="iddpm" if iddpm else "edm",
        model_type=model_type,
        img_resolution=top,
        img_channels=img_channels,
        label_dim=net["map_label.weight"][1] if "map_label.weight" in net else 0,
        augment_dim=net["map_augment.weight"][1] if "map_augment.weight" in net else 0,
        model_channels=model_channels,
        channel_mult=[net[f"dec.{r}x{r}_block0.conv0.weight"][0] // model_channels for r, _ in levels],
        channel_mult_emb=net["map_layer1.weight"][0] // model_channels,
        num_blocks=num_blocks,
        attn_resolutions=[r for r, _ in levels if f"dec.{r}x{r}_block{num_blocks}.qkv.weight" in net],
    )
    if song:
        config.update(_song_options(net, model_channels))
    if iddpm and "u" in own:
        config["M"] = own["u"][0] - 1
    return config


def _net_shapes(state_dict):
    """({U-Net key: shape}, {precond-own key: shape}) with the `model.` prefix removed, or None."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    if not any(k.startswith(_PRECOND_PREFIX) for k in shapes):
        return shapes, {}
    net = {k[len(_PRECOND_PREFIX):]: s for k, s in shapes.items() if k.startswith(_PRECOND_PREFIX)}
    own = {k: s for k, s in shapes.items() if not k.startswith(_PRECOND_PREFIX)}
    return (net, own) if set(own) <= {"u"} else None


def _model_type(net):
    """'SongUNet' / 'DhariwalUNet' from the output head; None without a mapping network or a known head."""
    if "map_layer0.weight" not in net or "map_layer1.weight" not in net:
        return None
    if "out_conv.weight" in net:
        return "DhariwalUNet"
    if any(k.startswith("dec.") and k.endswith("_aux_conv.weight") for k in net):
        return "SongUNet"
    return None


def _levels(net):
    """[(resolution, decoder blocks at it)], highest resolution first; [] if not one halving per level."""
    blocks = {}
    for key in net:
        m = _LEVEL_KEY.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    levels = sorted(((r, len(b)) for r, b in blocks.items()), reverse=True)
    if not levels or any(r != levels[0][0] >> i for i, (r, _) in enumerate(levels)):
        return []
    return levels


def _song_options(net, model_channels):
    """The SongUNet-only switches: embedding, encoder/decoder type, resampling filter."""
    filters = [s[-1] for k, s in net.items() if k.endswith(".resample_filter")]
    return dict(
        embedding_type="fourier" if "map_noise.freqs" in net else "positional",
        channel_mult_noise=net["map_layer0.weight"][1] // model_channels,
        encoder_type="residual" if any("_aux_residual." in k for k in net)
        else "skip" if any("_aux_skip." in k for k in net) else "standard",
        decoder_type="skip" if sum(k.endswith("_aux_conv.weight") for k in net) > 1 else "standard",
        resample_filter=_FILTERS.get(filters[0], [1] * filters[0]) if filters else [1, 1],
    )


def edm_from_state_dict(state_dict):
    """Build the EDM network `state_dict` describes and load it strictly; returns the precond module.

    A bare U-Net state dict (no `model.` prefix) is loaded into `.model` of the inferred precond.
    The returned module shares storage with `state_dict`. Raises UserError if it is not EDM-style.
    """
    config = infer_edm_config(state_dict)
    if config is None:
        raise UserError("The checkpoint's weights do not look like an EDM network (SongUNet or DhariwalUNet): "
                        "no map_layer0/enc/dec keys were found. Pass a checkpoint saved from NVlabs/edm.")
    with torch.device("meta"):
        net = build_edm(**config)
    prefixed = any(k.startswith(_PRECOND_PREFIX) for k in state_dict)
    target = net if prefixed else net.model
    target.load_state_dict(state_dict, strict=True, assign=True)  # assign: replace the meta tensors
    if isinstance(net, iDDPMPrecond) and net.u.is_meta:  # a bare U-Net brings no `u`: recompute it
        net.u = net._noise_levels()
    return net


# ----------------------------------------------------------------------------------------------
# The paper's feature tap (Appendix C): "dec.16x16 block1", near the bottleneck, for CIFAR-10
# (32x32, levels 32/16/8) and for ImageNet-64 (levels 64/32/16/8; 576 = 192*3 channels at 16x16).
# Both are the second decoder block one level above the bottleneck, so that is the rule here.


def default_layer(model):
    """named_modules() name of the default tap, e.g. 'model.dec.16x16_block1' for 32x32 EDM U-Nets.

    The second decoder block (block1) at the resolution one level above the bottleneck; the
    bottleneck level itself when the U-Net has a single level, block0 when it has one block per level.
    """
    prefix, net = ("model.", model.model) if hasattr(model, "model") else ("", model)
    levels = _levels({f"dec.{name}.conv0.weight": None for name in net.dec.keys()})
    res, n_blocks = levels[-2] if len(levels) > 1 else levels[-1]  # levels run from high to low resolution
    return f"{prefix}dec.{res}x{res}_block{1 if n_blocks > 1 else 0}"


# ----------------------------------------------------------------------------------------------
# The adapter: a state dict (and what an EDM pickle recorded about it) -> a Denoiser.

_EDM_CLASSES = {"EDMPrecond": "edm", "VPPrecond": "vp", "VEPrecond": "ve", "iDDPMPrecond": "iddpm"}
_PRECOND_WORDS = {"edm": "EDM", "vp": "VP", "ve": "VE", "iddpm": "iDDPM"}


def denoiser(sd, meta: dict, opts: ModelOptions) -> Denoiser:
    """The EDM network `sd` holds, built from its shapes, then what the pickle recorded (meta["init_kwargs"]:
    sigma_data, beta_d, ...), then --arch-arg; preconditioning from --arch-arg precond, else the pickled class."""
    config = infer_edm_config(sd)
    if config is None:
        raise UserError("--arch edm: the weights are not an EDM SongUNet/DhariwalUNet state dict.")
    recorded = meta.get("init_kwargs") or {}
    if not isinstance(recorded, dict):
        raise UserError(f"The checkpoint records the network's constructor arguments as a {type(recorded).__name__}, "
                        "not a dict; the file is damaged or not an EDM snapshot.")
    precond = _edm_precond(meta.get("class_name"), opts.arch_args.get("precond"), config["precond"])
    config.update({k: v for k, v in recorded.items() if k not in ("model_type",)})
    config.update({k: v for k, v in opts.arch_args.items() if k != "precond"})
    config["precond"] = precond
    try:
        with torch.device("meta"):
            net = build_edm(**config)
    except UserError:
        raise
    except Exception as e:  # the values come from the file or --arch-arg: they are the user's to fix
        raise UserError(f"The EDM network cannot be built from the recorded and given arguments ({type(e).__name__}: "
                        f"{e}). Check --arch-arg values, or the checkpoint is damaged.") from None
    target = net if any(k.startswith("model.") for k in sd) else net.model
    load_strict(target, sd, f"the EDM {config['model_type']} network")
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
        net=net, family="edm", default_layer=default_layer(net), in_channels=config["img_channels"],
        resolution=config["img_resolution"], latent=False,
        noise_defaults={"param": "edm", "time_input": "sigma"}, data_range="-1:1",
        call=lambda x, t, y: net(x, t, y), labels=labels,
        description={"arch": f"edm/{precond}/{config['model_type']}", "config": jsonable(config)},
        title=title(config, precond),
    )


def title(config: dict, precond: str) -> str:
    """In words, e.g. "EDM SongUNet (DDPM++), EDM preconditioning, 3x32x32 images, 10 classes"."""
    kind = config["model_type"]
    if kind == "DhariwalUNet":
        kind += " (ADM)"
    elif (config.get("embedding_type"), config.get("encoder_type")) == ("positional", "standard"):
        kind += " (DDPM++)"
    elif (config.get("embedding_type"), config.get("encoder_type")) == ("fourier", "residual"):
        kind += " (NCSN++)"
    res, ch = config.get("img_resolution"), config.get("img_channels")
    labels = config.get("label_dim") or 0
    return (f"EDM {kind}, {_PRECOND_WORDS.get(precond, precond)} preconditioning, {ch}x{res}x{res} images"
            + (f", {labels} classes" if labels else ", unconditional"))


def _edm_precond(class_name, given, inferred: str) -> str:
    if given:
        return given
    if isinstance(class_name, str):
        return _EDM_CLASSES.get(class_name.rsplit(".", 1)[-1], inferred)
    return inferred


# ----------------------------------------------------------------------------------------------
# The family as icr's registry sees it.

class EdmAdapter(Adapter):
    names = ("edm",)
    what = "EDM U-Nets (DDPM++, NCSN++, ADM)"

    def recognises(self, sd, meta):
        return infer_edm_config(sd) is not None

    def build(self, sd, meta, opts, arch):
        return denoiser(sd, meta, opts)

    def layer_candidates(self, module_names):
        """The decoder's second block at each resolution (dec.RxR_block1), as the --layer help says."""
        return [n for n in module_names if re.fullmatch(r"model\.dec\.\d+x\d+_block1", n)]

    def class_count(self, den):
        return int((den.description.get("config") or {}).get("label_dim") or 0)

    def class_input(self, den, classes, device):
        """EDM takes one-hot class vectors."""
        y = torch.as_tensor(classes, dtype=torch.long, device=device)
        return torch.nn.functional.one_hot(y, self.class_count(den)).to(torch.float32)

    def default_prediction(self, den):
        return "denoised"   # EDM's Precond wrappers return D


ADAPTER = EdmAdapter()
