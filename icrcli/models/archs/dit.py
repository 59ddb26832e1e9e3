"""DiT, SiT and REPA's SiT: class-conditional adaLN-Zero diffusion transformers on latent patches.

# Ports of facebookresearch/DiT models.py (Peebles & Xie, "Scalable Diffusion Models with
# Transformers", ICCV 2023; CC BY-NC 4.0), willisma/SiT models.py (Ma et al., "SiT: Exploring Flow
# and Diffusion-based Generative Models with Scalable Interpolant Transformers", ECCV 2024) and
# sihyun-yu/REPA models/sit.py (Yu et al., "Representation Alignment for Generation", ICLR 2025).
# Constructor arguments, defaults and attribute names are the originals', and PatchEmbed /
# Attention / Mlp below carry timm's parameter names (proj; qkv, q_norm, k_norm, proj; fc1, fc2), so
# a public checkpoint's state dict loads here with `load_state_dict(strict=True)` without timm.
# Changes: attention always uses torch's fused scaled_dot_product_attention (timm's default path);
# no forward_with_cfg (sampling only); random init zeroes the patch-embedding bias for DiT too
# (SiT and REPA do; DiT keeps Conv2d's default: matters only when training from scratch); REPA's
# S-size configs get decoder_hidden_size = hidden_size (REPA leaves its 768 default there, which
# cannot run a forward pass).

Shapes: x is (N, C, H, W) latents, t is (N,) timesteps (DiT: DDPM step indices 0..999; SiT and
REPA: interpolant time in [0, 1]), y is (N,) integer labels, `num_classes` meaning "no class"
(the classifier-free-guidance null row). Tokens are (N, T, D), T = (H / patch_size) ** 2.
"""

import functools
import math
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from icrcli.errors import UserError
from icrcli.models.adapter import Adapter
from icrcli.models.denoiser import Denoiser, ModelOptions, check_class_label, jsonable, load_strict

# ----------------------------------------------------------------------------------------------
# timm layers, the subset DiT uses (timm.layers PatchEmbed, Attention, Mlp).


class PatchEmbed(nn.Module):
    """(N, C, H, W) image -> (N, T, D) tokens via a stride-p convolution (timm.layers.PatchEmbed)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, bias=True):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, x):
        if tuple(x.shape[-2:]) != self.img_size:
            raise UserError(
                f"The transformer was built for {self.img_size[0]}x{self.img_size[1]} inputs but got "
                f"{x.shape[-2]}x{x.shape[-1]}: its fixed position embedding has one row per patch. "
                f"Feed latents of the checkpoint's resolution (image size / 8 for SD-VAE latents)."
            )
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention on (N, T, D) with optional per-head LayerNorm on q, k (timm)."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_norm=False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)  # (N, heads, T, hd)
        return self.proj(x.transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    """fc1 -> activation -> fc2 on the last axis (timm.layers.Mlp without dropout)."""

    def __init__(self, in_features, hidden_features, act_layer=nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _approx_gelu():
    return nn.GELU(approximate="tanh")


# ----------------------------------------------------------------------------------------------
# DiT building blocks (DiT models.py; SiT and REPA copy them with the same names).


def modulate(x, shift, scale):
    """adaLN: (N, T, D) tokens scaled and shifted per sample by (N, D) vectors."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """(N,) scalar times -> (N, D): GLIDE's sinusoidal features, then a 2-layer SiLU MLP."""

    def __init__(self, hidden_size, frequency_embedding_size=256, match_t_dtype=False):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size
        self.match_t_dtype = match_t_dtype  # REPA casts the features to t's dtype; DiT/SiT do not

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        """(N,) possibly fractional times -> (N, dim) [cos | sin] at geometric frequencies."""
        # https://github.com/openai/glide-text2im/blob/main/glide_text2im/nn.py
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t):
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)
        # REPA's `.to(t.dtype)`, kept for float t only: for integer t it would truncate to 0/±1.
        if self.match_t_dtype and t.is_floating_point():
            t_freq = t_freq.to(t.dtype)
        return self.mlp(t_freq)


class LabelEmbedder(nn.Module):
    """(N,) labels -> (N, D); one extra row, index num_classes, is the null class used for CFG."""

    def __init__(self, num_classes, hidden_size, dropout_prob):
        super().__init__()
        use_cfg_embedding = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels, force_drop_ids=None):
        """Replace a random `dropout_prob` fraction (or the forced ones) of labels by the null class."""
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, self.num_classes, labels)

    def forward(self, labels, train, force_drop_ids=None):
        if (train and self.dropout_prob > 0) or (force_drop_ids is not None):
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


class DiTBlock(nn.Module):
    """Pre-norm attention + MLP, each modulated and gated by the condition c (adaLN-Zero)."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, qk_norm=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True, qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=_approx_gelu)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x, c):
        """x (N, T, D), c (N, D) -> (N, T, D)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


SiTBlock = DiTBlock  # SiT and REPA rename the class only


class FinalLayer(nn.Module):
    """(N, T, D) tokens -> (N, T, p * p * out_channels) patch values, modulated by c."""

    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def build_mlp(hidden_size, projector_dim, z_dim):
    """REPA's projector: D -> projector_dim -> projector_dim -> z_dim with SiLU between."""
    return nn.Sequential(
        nn.Linear(hidden_size, projector_dim),
        nn.SiLU(),
        nn.Linear(projector_dim, projector_dim),
        nn.SiLU(),
        nn.Linear(projector_dim, z_dim),
    )


# ----------------------------------------------------------------------------------------------
# Fixed 2-D sin-cos position embedding (MAE util/pos_embed.py, as copied into DiT).


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    """(M,) positions -> (M, embed_dim) float64 [sin | cos] at frequencies 10000^(-2i/embed_dim)."""
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size):
    """(grid_size**2, embed_dim): first half encodes the column (w) index, second half the row (h)."""
    if embed_dim % 4:
        raise ValueError(f"embed_dim {embed_dim} must be a multiple of 4 for 2-D sin-cos embeddings")
    grid = np.stack(np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32)))
    # meshgrid(w, h) puts w first: grid[0] is the column index, as in MAE/DiT.
    emb_0 = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_1 = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_0, emb_1], axis=1)


# ----------------------------------------------------------------------------------------------
# Models.


class _Trunk(nn.Module):
    """What DiT, SiT and REPA share: embedders, fixed pos_embed and the block stack."""

    def __init__(self, input_size, patch_size, in_channels, hidden_size, depth, num_heads, mlp_ratio,
                 class_dropout_prob, num_classes, qk_norm=False, match_t_dtype=False):
        super().__init__()
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size, bias=True)
        self.t_embedder = TimestepEmbedder(hidden_size, match_t_dtype=match_t_dtype)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        # A frozen nn.Parameter, not a buffer, as in the original: the key `pos_embed` is in checkpoints.
        self.pos_embed = nn.Parameter(torch.zeros(1, self.x_embedder.num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList(
            [DiTBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio, qk_norm=qk_norm) for _ in range(depth)]
        )

    def initialize_weights(self):
        """DiT's init: xavier linears, sin-cos pos_embed, and zeroed adaLN gates and output layer."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)
        table = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], self.x_embedder.grid_size[0])
        self.pos_embed.data.copy_(torch.from_numpy(table).float()[None])
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))  # like nn.Linear, not nn.Conv2d
        nn.init.constant_(self.x_embedder.proj.bias, 0)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for layer in [block.adaLN_modulation[-1] for block in self.blocks] + [
                self.final_layer.adaLN_modulation[-1], self.final_layer.linear]:
            nn.init.constant_(layer.weight, 0)
            nn.init.constant_(layer.bias, 0)

    def embed(self, x, t, y):
        """x (N, C, H, W), t (N,), y (N,) -> tokens (N, T, D) with positions, condition c (N, D)."""
        tokens = self.x_embedder(x) + self.pos_embed
        return tokens, self.t_embedder(t) + self.y_embedder(y, self.training)

    def unpatchify(self, x):
        """(N, T, p * p * C) -> (N, C, H, W)."""
        c, p = self.out_channels, self.patch_size
        h = w = int(x.shape[1] ** 0.5)
        x = torch.einsum("nhwpqc->nchpwq", x.reshape(x.shape[0], h, w, p, p, c))
        return x.reshape(x.shape[0], c, h * p, w * p)


class DiT(_Trunk):
    """Diffusion transformer (DiT models.py). forward: (N, C, H, W) -> (N, out_channels, H, W)."""

    def __init__(self, input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_heads=16,
                 mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=1000, learn_sigma=True):
        super().__init__(input_size, patch_size, in_channels, hidden_size, depth, num_heads, mlp_ratio,
                         class_dropout_prob, num_classes)
        self.learn_sigma = learn_sigma
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def forward(self, x, t, y):
        x, c = self.embed(x, t, y)
        for block in self.blocks:
            x = block(x, c)
        return self.unpatchify(self.final_layer(x, c))


class SiT(DiT):
    """Scalable interpolant transformer (SiT models.py): DiT's network; forward drops the sigma half."""

    def forward(self, x, t, y):
        x = super().forward(x, t, y)
        return x.chunk(2, dim=1)[0] if self.learn_sigma else x


class SiTREPA(_Trunk):
    """REPA's SiT (REPA models/sit.py, class `SiT` there): projectors read block `encoder_depth`.

    forward(x, t, y) -> (x (N, C, H, W), zs: one (N, T, z_dim) tensor per entry of z_dims).
    `path_type`, `use_cfg` and `fused_attn` are stored or accepted but change nothing, as in REPA.
    """

    def __init__(self, path_type="edm", input_size=32, patch_size=2, in_channels=4, hidden_size=1152,
                 decoder_hidden_size=768, encoder_depth=8, depth=28, num_heads=16, mlp_ratio=4.0,
                 class_dropout_prob=0.1, num_classes=1000, use_cfg=False, z_dims=(768,), projector_dim=2048,
                 qk_norm=False, fused_attn=True):
        super().__init__(input_size, patch_size, in_channels, hidden_size, depth, num_heads, mlp_ratio,
                         class_dropout_prob, num_classes, qk_norm=qk_norm, match_t_dtype=True)
        if not 1 <= encoder_depth <= depth:
            raise ValueError(f"encoder_depth {encoder_depth} must be between 1 and depth {depth}")
        self.path_type = path_type
        self.out_channels = in_channels
        self.use_cfg = use_cfg
        self.num_classes = num_classes
        self.z_dims = list(z_dims)
        self.encoder_depth = encoder_depth
        # Registered between blocks and final_layer, as in REPA, so state-dict order matches too.
        self.projectors = nn.ModuleList([build_mlp(hidden_size, projector_dim, z) for z in self.z_dims])
        self.final_layer = FinalLayer(decoder_hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def forward(self, x, t, y, return_logvar=False):
        x, c = self.embed(x, t, y)
        n, t_len, d = x.shape
        for i, block in enumerate(self.blocks):
            x = block(x, c)
            if i + 1 == self.encoder_depth:
                zs = [projector(x.reshape(-1, d)).reshape(n, t_len, -1) for projector in self.projectors]
        return self.unpatchify(self.final_layer(x, c)), zs


# ----------------------------------------------------------------------------------------------
# Size tables: name -> constructor, as DiT_models / SiT_models in the originals.

# (depth, hidden_size, num_heads) per size, from the DiT-XL_2 ... DiT-S_8 config functions.
_SIZES = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}
_PATCHES = (2, 4, 8)


def _size_table(prefix):
    """{"<prefix>-XL/2": dict(depth=28, hidden_size=1152, patch_size=2, num_heads=16), ...}."""
    return {f"{prefix}-{size}/{p}": dict(depth=d, hidden_size=h, patch_size=p, num_heads=n)
            for size, (d, h, n) in _SIZES.items() for p in _PATCHES}


def _repa_size(cfg):
    return dict(cfg, decoder_hidden_size=cfg["hidden_size"])


DiT_models = {name: functools.partial(DiT, **cfg) for name, cfg in _size_table("DiT").items()}
SiT_models = {name: functools.partial(SiT, **cfg) for name, cfg in _size_table("SiT").items()}
SiTREPA_models = {name: functools.partial(SiTREPA, **_repa_size(cfg)) for name, cfg in _size_table("SiT").items()}

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
