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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from icrcli.errors import UserError

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
