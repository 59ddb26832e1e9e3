"""The DiT/SiT/REPA family for icr: recognising a transformer checkpoint from its keys, shapes and saved training
args, the paper's default tap, and the adapter that builds the Denoiser (one adapter answers to dit, sit and repa).
The networks themselves are ports of the originals' models.py, kept apart in dit_networks.py; their names are
re-exported here.
"""

import math
import re

import torch

from icrcli.errors import UserError
from icrcli.models.adapter import Adapter
from icrcli.models.archs.dit_networks import (  # noqa: F401  (re-exported: the family's networks)
    _SIZES, Attention, DiT, DiT_models, Mlp, PatchEmbed, SiT, SiT_models, SiTREPA, SiTREPA_models,
    _size_table, get_2d_sincos_pos_embed,
)
from icrcli.models.denoiser import Denoiser, ModelOptions, check_class_label, jsonable, load_strict

# What icr reads of the size tables.
FAMILIES = {"dit": DiT, "sit": SiT, "repa": SiTREPA}
_PREFIX = {"dit": "DiT", "sit": "SiT", "repa": "SiT"}
# Heads are invisible in the weights (qkv is D x 3D whatever the split); these are the tables' counts.
_STANDARD_HEADS = {h: n for d, h, n in _SIZES.values()}
REPA_DEFAULT_ENCODER_DEPTH = 8  # REPA train.py --encoder-depth default, used for its released SiT-XL/2


# ----------------------------------------------------------------------------------------------
# Recognising a checkpoint.

_REQUIRED_KEYS = ("x_embedder.proj.weight", "t_embedder.mlp.0.weight", "y_embedder.embedding_table.weight",
                  "blocks.0.adaLN_modulation.1.weight", "final_layer.linear.weight")


def _indices(state_dict, prefix):
    """Sorted distinct integers i over keys `<prefix>.<i>.*`."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    return sorted({int(m.group(1)) for k in state_dict if (m := pattern.match(k))})


def _count(state_dict, prefix):
    """Number of modules `<prefix>.0` ... `<prefix>.{n-1}`; refuses gaps."""
    idx = _indices(state_dict, prefix)
    if idx != list(range(len(idx))):
        raise UserError(f"The checkpoint's `{prefix}.*` keys have indices {idx}, not 0..n-1; the file is "
                        f"incomplete or from a different architecture. Use the unmodified checkpoint.")
    return len(idx)


def _args_dict(args):
    """The training args as a plain dict (accepts a dict, an argparse.Namespace or None)."""
    if args is None:
        return {}
    return dict(args) if isinstance(args, dict) else dict(vars(args))


def _check(what, from_weights, from_args):
    """Shapes decide; training args that contradict them mean the two do not belong together."""
    if from_args is not None and from_args != from_weights:
        raise UserError(f"The checkpoint's training args say {what} = {from_args!r} but its weights have "
                        f"{from_weights!r}. The args do not describe these weights: drop or correct them.")


def _family(state_dict, args):
    """'repa' if it has projectors, else 'sit' for a SiT-named or interpolant-trained model, else 'dit'."""
    if args.get("family") is not None:
        if args["family"] not in FAMILIES:
            raise UserError(f"Unknown transformer family {args['family']!r}; expected one of {sorted(FAMILIES)}.")
        return args["family"]
    if _indices(state_dict, "projectors") or _indices(state_dict, "decoder_blocks"):
        return "repa"
    # DiT and SiT weights are indistinguishable; only SiT's args carry "path_type" / a "SiT-" name.
    model = str(args.get("model", ""))
    return "sit" if model.startswith("SiT") or "path_type" in args else "dit"


def _named_size(args):
    """The size-table entry for args["model"] ("DiT-XL/2", "SiT-B/2", ...), else None."""
    size = str(args.get("model", "")).partition("-")[2]
    return _size_table("DiT").get(f"DiT-{size}")


def _num_heads(state_dict, hidden_size, args):
    """Head count: from q_norm's width when qk_norm is on, else args, the size name, or the table."""
    if "blocks.0.attn.q_norm.weight" in state_dict:
        return hidden_size // state_dict["blocks.0.attn.q_norm.weight"].shape[0]
    if args.get("num_heads") is not None:
        return int(args["num_heads"])
    named = _named_size(args)
    if named is not None:
        return named["num_heads"]
    if hidden_size in _STANDARD_HEADS:
        return _STANDARD_HEADS[hidden_size]
    raise UserError(f"A transformer with hidden size {hidden_size} is not one of the standard DiT/SiT sizes, "
                    f"and its head count cannot be read from the weights. Pass it: args={{'num_heads': N}}.")


def _label_kwargs(table_rows, args):
    """(num_classes, class_dropout_prob) from the label table: a null row exists iff dropout > 0."""
    n = args.get("num_classes")
    if n is None:
        return table_rows - 1, 0.1  # every public DiT/SiT/REPA run trains with 10% label dropout
    if table_rows not in (n, n + 1):
        raise UserError(f"The checkpoint's training args say num_classes = {n} but its label table has "
                        f"{table_rows} rows (expected {n} or {n + 1} with the null class). The args do not "
                        f"describe these weights: drop or correct them.")
    return n, (0.1 if table_rows == n + 1 else 0.0)


def _input_size(state_dict, patch_size, args):
    """Latent side length: sqrt(#patches) * patch from pos_embed, checked against image_size / 8."""
    from_args = args.get("image_size", args.get("resolution"))
    from_args = None if from_args is None else int(from_args) // 8  # SD-VAE latents are 8x smaller
    if "pos_embed" not in state_dict:
        if from_args is None:
            raise UserError("The checkpoint has no `pos_embed`, so its input size is unknown. "
                            "Pass args={'image_size': <pixels>} (the latent side is image_size / 8).")
        return from_args
    num_patches = state_dict["pos_embed"].shape[1]
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise UserError(f"The checkpoint's pos_embed has {num_patches} rows, not a square number of patches; "
                        f"it is not a DiT/SiT position embedding. Use the unmodified checkpoint.")
    _check("the latent size (image_size / 8)", grid * patch_size, from_args)
    return grid * patch_size


def _size_name(family, depth, hidden_size, patch_size, num_heads, args):
    """'DiT-XL/2'-style name of the standard config these dimensions match, else None."""
    table = _size_table(_PREFIX[family])
    if args.get("model") in table:
        return args["model"]
    want = dict(depth=depth, hidden_size=hidden_size, patch_size=patch_size, num_heads=num_heads)
    return next((name for name, cfg in table.items() if cfg == want), None)


def infer_transformer_config(state_dict, args=None):
    """Recognise a DiT / SiT / REPA-SiT state dict; None if it is not one.

    state_dict: name -> tensor (shapes are all that is read; meta tensors work).
    args: the training script's argparse args (dict or Namespace: "model", "image_size" or
    "resolution", "num_classes", "encoder_depth", "path_type", ...) or our overrides "family",
    "num_heads". Shapes decide what they can; args decide the rest (heads, family, encoder_depth).
    Returns {"family": "dit" | "sit" | "repa", "kwargs": constructor kwargs, "name": "DiT-XL/2" | None}.
    """
    if not all(k in state_dict for k in _REQUIRED_KEYS):
        return None
    args = _args_dict(args)
    family = _family(state_dict, args)
    hidden_size, in_channels, patch_size, _ = state_dict["x_embedder.proj.weight"].shape
    legacy_encoder_depth = _count(state_dict, "blocks") if _indices(state_dict, "decoder_blocks") else None
    depth = _count(state_dict, "blocks") + _count(state_dict, "decoder_blocks")
    named = _named_size(args)
    if named is not None:
        for key, value in dict(depth=depth, hidden_size=hidden_size, patch_size=patch_size).items():
            _check(f"{key} (model {args['model']})", value, named[key])
    num_heads = _num_heads(state_dict, hidden_size, args)
    mlp_width = state_dict["blocks.0.mlp.fc1.weight"].shape[0]
    mlp_ratio = mlp_width / hidden_size
    if int(hidden_size * mlp_ratio) != mlp_width:  # the constructor rebuilds the width as int(D * ratio)
        raise UserError(f"MLP width {mlp_width} is not a multiple the constructor can rebuild from hidden "
                        f"size {hidden_size}; this is not a standard DiT/SiT checkpoint.")
    num_classes, class_dropout_prob = _label_kwargs(state_dict["y_embedder.embedding_table.weight"].shape[0], args)
    out_width, final_hidden = state_dict["final_layer.linear.weight"].shape
    out_channels = out_width // (patch_size * patch_size)
    kwargs = dict(input_size=_input_size(state_dict, patch_size, args), patch_size=patch_size,
                  in_channels=in_channels, hidden_size=hidden_size, depth=depth, num_heads=num_heads,
                  mlp_ratio=mlp_ratio, class_dropout_prob=class_dropout_prob, num_classes=num_classes)
    if family == "repa":
        kwargs.update(_repa_kwargs(state_dict, args, depth, final_hidden, legacy_encoder_depth))
        _check("the output channels", out_channels, in_channels)
    else:
        if out_channels not in (in_channels, 2 * in_channels):
            raise UserError(f"The final layer writes {out_channels} channels per pixel for {in_channels} input "
                            f"channels; DiT/SiT write in_channels, or twice that with learn_sigma. "
                            f"This is not a DiT/SiT checkpoint.")
        kwargs["learn_sigma"] = out_channels == 2 * in_channels
    name = _size_name(family, depth, hidden_size, patch_size, num_heads, args)
    return {"family": family, "kwargs": kwargs, "name": name}


def _repa_kwargs(state_dict, args, depth, decoder_hidden_size, legacy_encoder_depth):
    """REPA-only constructor kwargs: projector widths from shapes, encoder_depth from args."""
    n_proj = _count(state_dict, "projectors")
    z_dims = [state_dict[f"projectors.{i}.4.weight"].shape[0] for i in range(n_proj)]
    projector_dim = state_dict["projectors.0.0.weight"].shape[0] if n_proj else 2048
    encoder_depth = args.get("encoder_depth", legacy_encoder_depth)
    if legacy_encoder_depth is not None:
        _check("encoder_depth", legacy_encoder_depth, encoder_depth)
    if encoder_depth is None:
        encoder_depth = min(REPA_DEFAULT_ENCODER_DEPTH, depth)
    if not 1 <= int(encoder_depth) <= depth:
        raise UserError(f"encoder_depth = {encoder_depth} but the model has {depth} blocks; REPA's projectors "
                        f"read one of blocks 1..{depth}. Pass args={{'encoder_depth': k}} with k in that range.")
    return dict(decoder_hidden_size=decoder_hidden_size, encoder_depth=int(encoder_depth), z_dims=z_dims,
                projector_dim=projector_dim, qk_norm="blocks.0.attn.q_norm.weight" in state_dict,
                use_cfg=True, path_type=args.get("path_type", "linear"))


def upgrade_legacy_repa(state_dict):
    """Early REPA checkpoints split the stack into `blocks` (encoder) and `decoder_blocks`;
    renumber `decoder_blocks.i` to `blocks.{encoder_depth + i}` (REPA utils.load_legacy_checkpoints)."""
    encoder_depth = _count(state_dict, "blocks")
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"^decoder_blocks\.(\d+)\.(.*)$", key)
        out[f"blocks.{int(m.group(1)) + encoder_depth}.{m.group(2)}" if m else key] = value
    return out


def build_transformer(cfg):
    """The randomly initialised module described by infer_transformer_config's dict."""
    return FAMILIES[cfg["family"]](**cfg["kwargs"])


def default_layer(model):
    """The paper's tap: the output of the middle block (block 14 of 28 -> 'blocks.13')."""
    return f"blocks.{len(model.blocks) // 2 - 1}"


# ----------------------------------------------------------------------------------------------
# The adapter: a state dict (and the training run's saved args) -> a Denoiser.

def denoiser(sd, meta: dict, opts: ModelOptions, arch: str | None) -> Denoiser:
    """The DiT/SiT/REPA network `sd` holds. arch ("dit" | "sit" | "repa" | None) names the family when the
    saved args do not; --arch-arg overrides the saved args. DiT is DDPM (1000 linear steps, integer index),
    SiT/REPA a linear flow in t (REPA: t = 0 clean, SiT: t = 1 clean)."""
    args = dict(meta.get("args") or {}) if isinstance(meta.get("args") or {}, dict) else {}
    if arch in ("dit", "sit", "repa"):
        args["family"] = arch
    args.update(opts.arch_args)
    if any(k.startswith("decoder_blocks.") for k in sd):
        sd = upgrade_legacy_repa(sd)
    try:
        cfg = infer_transformer_config(sd, args or None)
    except (KeyError, IndexError, ValueError, TypeError, ZeroDivisionError) as e:
        raise UserError(f"The weights have DiT/SiT keys but shapes or saved args that no DiT/SiT/REPA network has "
                        f"({type(e).__name__}: {e}). Check --arch-arg values, or the checkpoint is damaged.") from None
    if cfg is None:
        raise UserError(
            "Could not recognise the architecture from the checkpoint's keys (tried: EDM SongUNet/DhariwalUNet, "
            "DiT/SiT/REPA). Name it: --arch edm|dit|sit|repa, or build your own network with "
            "--arch my.module:build_fn / --arch path/to/model.py:ClassName (+ --arch-arg k=v), naming the data "
            "(parametrization, schedule, ...) in a sidecar CKPT.icr.json if you like (see README).")
    try:
        with torch.device("meta"):
            net = build_transformer(cfg)
    except Exception as e:  # the values come from the file or --arch-arg: they are the user's to fix
        raise UserError(f"The {cfg['name'] or cfg['family']} network cannot be built from the saved and given "
                        f"arguments ({type(e).__name__}: {e}). Check --arch-arg values.") from None
    load_strict(net, sd, f"the {cfg['name'] or cfg['family']} network")
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
        how = "DDPM, 1000 linear steps"
    else:
        path_type = str(args.get("path_type", "Linear"))
        if path_type.lower() != "linear":
            raise UserError(f"This {family.upper()} checkpoint was trained with path_type={path_type}; icr supports "
                            "the linear interpolant only. Override with --param and --time-input if you know "
                            "the mapping.")
        convention = "repa" if family == "repa" or "proj_coeff" in args or "enc_type" in args else "sit"
        noise = {"param": "flow", "time_input": "t", "time_convention": convention}
        how = f"linear flow, t = {0 if convention == 'repa' else 1} clean"
    size = kw.get("input_size")
    name = cfg["name"] or f"{_PREFIX[family]} (depth {kw['depth']}, width {kw['hidden_size']})"
    name = ("REPA " if family == "repa" else "") + name
    return Denoiser(
        net=net, family=family, default_layer=default_layer(net), in_channels=kw.get("in_channels", 4),
        resolution=size, latent=kw.get("in_channels", 4) == 4, noise_defaults=noise,
        data_range="-1:1", call=lambda x, t, y: net(x, t, y), labels=labels,
        description={"arch": cfg["name"] or family, "config": jsonable(kw)},
        title=f"{name} ({how}), {kw.get('in_channels', 4)}x{size}x{size} latents, {num_classes} classes",
    )


# ----------------------------------------------------------------------------------------------
# The family as icr's registry sees it: one adapter answers to dit, sit and repa.

_PREDICTION = {"dit": "eps", "sit": "v", "repa": "v"}   # DiT learns eps (and its variance), SiT/REPA the velocity


class TransformerAdapter(Adapter):
    names = ("dit", "sit", "repa")
    what = "DiT/SiT/REPA's SiT"

    def recognises(self, sd, meta):
        return all(k in sd for k in _REQUIRED_KEYS)   # early REPA's split stack has them too

    def build(self, sd, meta, opts, arch):
        return denoiser(sd, meta, opts, arch)

    def layer_candidates(self, module_names):
        """Every quarter of the depth (blocks.N), as the --layer help says."""
        blocks = sorted({int(m.group(1)) for n in module_names if (m := re.fullmatch(r"blocks\.(\d+)", n))})
        if not blocks:
            return []
        depth = len(blocks)
        return [f"blocks.{i}" for i in sorted({max(0, depth * q // 4 - 1) for q in (1, 2, 3, 4)})]

    def class_count(self, den):
        return int((den.description.get("config") or {}).get("num_classes", 1000))

    def default_prediction(self, den):
        return _PREDICTION.get(den.family)


ADAPTER = TransformerAdapter()
