"""EDM network architectures: DDPM++/NCSN++ (SongUNet), ADM (DhariwalUNet) and their preconditioners.

# Port of NVlabs/edm training/networks.py (Karras et al., "Elucidating the Design Space of
# Diffusion-Based Generative Models", NeurIPS 2022; code CC BY-NC-SA 4.0). Constructor arguments,
# defaults and module attribute names are the original's, so the state-dict keys are too and a
# public checkpoint's `state_dict()` loads here with `load_state_dict(strict=True)`.
# Changes: no `persistence` decorator, no torch_utils/misc; attention uses plain torch ops (same
# parameters, same fp32 softmax); no in-place ops on tensors a forward hook could capture.

Images are NCHW float tensors; `sigma` is a tensor of N noise levels (or one, broadcast).
"""

import numpy as np
import torch
from torch.nn.functional import silu

from icrcli.errors import UserError

# ----------------------------------------------------------------------------------------------
# Building blocks.


def weight_init(shape, mode, fan_in, fan_out):
    """A random tensor of `shape` from one of EDM's four init schemes (same RNG calls as EDM)."""
    if mode == "xavier_uniform":
        return np.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "xavier_normal":
        return np.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return np.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return np.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f'Invalid init mode "{mode}"')


class Linear(torch.nn.Module):
    """Fully-connected layer: [N, in_features] -> [N, out_features]."""

    def __init__(self, in_features, out_features, bias=True, init_mode="kaiming_normal", init_weight=1, init_bias=0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = torch.nn.Parameter(weight_init([out_features, in_features], **fans) * init_weight)
        self.bias = torch.nn.Parameter(weight_init([out_features], **fans) * init_bias) if bias else None

    def forward(self, x):
        x = x @ self.weight.to(x.dtype).t()
        return x if self.bias is None else x + self.bias.to(x.dtype)


class Conv2d(torch.nn.Module):
    """Convolution with optional 2x up/downsampling by a separable FIR filter: [N, Cin, H, W] -> [N, Cout, H', W'].

    `kernel=0` makes a parameter-free resampler (only the `resample_filter` buffer). The buffer is
    registered as None (so it is absent from the state dict) when the layer does not resample.
    """

    def __init__(self, in_channels, out_channels, kernel, bias=True, up=False, down=False,
                 resample_filter=[1, 1], fused_resample=False, init_mode="kaiming_normal", init_weight=1, init_bias=0):
        assert not (up and down)
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.fused_resample = fused_resample
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        shape = [out_channels, in_channels, kernel, kernel]
        self.weight = torch.nn.Parameter(weight_init(shape, **fans) * init_weight) if kernel else None
        self.bias = torch.nn.Parameter(weight_init([out_channels], **fans) * init_bias) if kernel and bias else None
        self.register_buffer("resample_filter", _outer_filter(resample_filter) if up or down else None)

    def forward(self, x):
        w = self.weight.to(x.dtype) if self.weight is not None else None
        f = self.resample_filter.to(x.dtype) if self.resample_filter is not None else None
        w_pad = w.shape[-1] // 2 if w is not None else 0
        f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
        conv, conv_t = torch.nn.functional.conv2d, torch.nn.functional.conv_transpose2d

        if self.fused_resample and self.up and w is not None:
            x = conv_t(x, _depthwise(f * 4, self.in_channels), groups=self.in_channels, stride=2, padding=w_pad + f_pad)
            x = conv(x, w)
        elif self.fused_resample and self.down and w is not None:
            x = conv(x, w, padding=w_pad + f_pad)
            x = conv(x, _depthwise(f, self.out_channels), groups=self.out_channels, stride=2)
        else:
            if self.up:  # x4 keeps the mean: transposed stride-2 conv spreads each pixel over 4
                x = conv_t(x, _depthwise(f * 4, self.in_channels), groups=self.in_channels, stride=2, padding=f_pad)
            if self.down:
                x = conv(x, _depthwise(f, self.in_channels), groups=self.in_channels, stride=2, padding=f_pad)
            if w is not None:
                x = conv(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


def _outer_filter(taps):
    """The 2-D FIR filter [1, 1, k, k] = outer(taps, taps) normalised to sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    return torch.outer(f, f).unsqueeze(0).unsqueeze(1) / f.sum().square()


def _depthwise(f, channels):
    """Repeat a [1, 1, k, k] filter into a grouped-conv weight [channels, 1, k, k]."""
    return f.tile([channels, 1, 1, 1])


class GroupNorm(torch.nn.Module):
    """Group normalisation with at least `min_channels_per_group` channels per group: [N, C, H, W] -> same."""

    def __init__(self, num_channels, num_groups=32, min_channels_per_group=4, eps=1e-5):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(num_channels))
        self.bias = torch.nn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        return torch.nn.functional.group_norm(
            x, num_groups=self.num_groups, weight=self.weight.to(x.dtype), bias=self.bias.to(x.dtype), eps=self.eps)


def attention_weights(q, k):
    """softmax(q^T k / sqrt(C)) over keys, computed in fp32 like EDM's AttentionOp: [n, C, Q], [n, C, K] -> [n, Q, K]."""
    logits = torch.einsum("ncq,nck->nqk", q.to(torch.float32), (k / np.sqrt(k.shape[1])).to(torch.float32))
    return logits.softmax(dim=2).to(q.dtype)


# EDM's unified U-Net block: the union of the DDPM++, NCSN++ and ADM residual blocks, with
# optional up/downsampling and single- or multi-head self-attention.
class UNetBlock(torch.nn.Module):
    """Residual block conditioned on an embedding: x [N, Cin, H, W], emb [N, E] -> [N, Cout, H', W']."""

    def __init__(self, in_channels, out_channels, emb_channels, up=False, down=False, attention=False,
                 num_heads=None, channels_per_head=64, dropout=0, skip_scale=1, eps=1e-5,
                 resample_filter=[1, 1], resample_proj=False, adaptive_scale=True,
                 init=dict(), init_zero=dict(init_weight=0), init_attn=None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.emb_channels = emb_channels
        self.num_heads = _num_heads(attention, num_heads, out_channels, channels_per_head)
        self.dropout = dropout
        self.skip_scale = skip_scale
        self.adaptive_scale = adaptive_scale

        self.norm0 = GroupNorm(num_channels=in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels=in_channels, out_channels=out_channels, kernel=3, up=up, down=down,
                            resample_filter=resample_filter, **init)
        self.affine = Linear(in_features=emb_channels, out_features=out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(num_channels=out_channels, eps=eps)
        self.conv1 = Conv2d(in_channels=out_channels, out_channels=out_channels, kernel=3, **init_zero)

        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels=in_channels, out_channels=out_channels, kernel=kernel, up=up, down=down,
                               resample_filter=resample_filter, **init)

        if self.num_heads:
            self.norm2 = GroupNorm(num_channels=out_channels, eps=eps)
            self.qkv = Conv2d(in_channels=out_channels, out_channels=out_channels * 3, kernel=1,
                              **(init_attn if init_attn is not None else init))
            self.proj = Conv2d(in_channels=out_channels, out_channels=out_channels, kernel=1, **init_zero)

    def forward(self, x, emb):
        orig = x
        x = self.conv0(silu(self.norm0(x)))

        params = self.affine(emb).unsqueeze(2).unsqueeze(3).to(x.dtype)
        if self.adaptive_scale:  # ADM: scale-and-shift after the norm
            scale, shift = params.chunk(chunks=2, dim=1)
            x = silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        else:  # DDPM++/NCSN++: additive bias before the norm
            x = silu(self.norm1(x + params))

        x = self.conv1(torch.nn.functional.dropout(x, p=self.dropout, training=self.training))
        x = (x + (self.skip(orig) if self.skip is not None else orig)) * self.skip_scale

        if self.num_heads:
            n, c = x.shape[0] * self.num_heads, x.shape[1] // self.num_heads
            q, k, v = self.qkv(self.norm2(x)).reshape(n, c, 3, -1).unbind(2)
            a = torch.einsum("nqk,nck->ncq", attention_weights(q, k), v)
            x = (self.proj(a.reshape(*x.shape)) + x) * self.skip_scale
        return x


def _num_heads(attention, num_heads, out_channels, channels_per_head):
    """Heads of a block's self-attention; 0 means the block has none."""
    if not attention:
        return 0
    return num_heads if num_heads is not None else out_channels // channels_per_head


# Sinusoidal timestep embedding of DDPM++ and ADM (Vaswani et al. 2017; Ho et al. 2020).
class PositionalEmbedding(torch.nn.Module):
    """Noise labels [N] -> [N, num_channels] as [cos(x f_i), sin(x f_i)]."""

    def __init__(self, num_channels, max_positions=10000, endpoint=False):
        super().__init__()
        self.num_channels = num_channels
        self.max_positions = max_positions
        self.endpoint = endpoint

    def forward(self, x):
        half = self.num_channels // 2
        freqs = torch.arange(start=0, end=half, dtype=torch.float32, device=x.device)
        freqs = (1 / self.max_positions) ** (freqs / (half - (1 if self.endpoint else 0)))
        x = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


# Random Fourier feature embedding of NCSN++ (Tancik et al. 2020; Song et al. 2021).
class FourierEmbedding(torch.nn.Module):
    """Noise labels [N] -> [N, num_channels] with fixed random frequencies (a buffer, saved in the state dict)."""

    def __init__(self, num_channels, scale=16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x):
        x = torch.outer(x, (2 * np.pi * self.freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


# ----------------------------------------------------------------------------------------------
# DDPM++ and NCSN++ of Song et al., "Score-Based Generative Modeling through Stochastic
# Differential Equations" (ICLR 2021), as re-implemented in EDM.


class SongUNet(torch.nn.Module):
    """DDPM++ / NCSN++ U-Net: x [N, in_channels, R, R], noise_labels [N] -> [N, out_channels, R, R].

    Modules live in two ModuleDicts named by resolution: `enc['32x32_conv']`, `enc['16x16_down']`,
    `enc['16x16_block0']`, ..., `dec['8x8_in0']`, `dec['16x16_up']`, `dec['16x16_block1']`, ...
    """

    def __init__(self,
                 img_resolution,                 # Image resolution at input/output.
                 in_channels,                    # Number of color channels at input.
                 out_channels,                   # Number of color channels at output.
                 label_dim=0,                    # Number of class labels, 0 = unconditional.
                 augment_dim=0,                  # Augmentation label dimensionality, 0 = no augmentation.
                 model_channels=128,             # Base multiplier for the number of channels.
                 channel_mult=[1, 2, 2, 2],      # Per-resolution multipliers for the number of channels.
                 channel_mult_emb=4,             # Multiplier for the dimensionality of the embedding vector.
                 num_blocks=4,                   # Number of residual blocks per resolution.
                 attn_resolutions=[16],          # List of resolutions with self-attention.
                 dropout=0.10,                   # Dropout probability of intermediate activations.
                 label_dropout=0,                # Dropout probability of class labels for classifier-free guidance.
                 embedding_type="positional",    # Timestep embedding: 'positional' for DDPM++, 'fourier' for NCSN++.
                 channel_mult_noise=1,           # Timestep embedding size: 1 for DDPM++, 2 for NCSN++.
                 encoder_type="standard",        # Encoder: 'standard' for DDPM++, 'residual' for NCSN++.
                 decoder_type="standard",        # Decoder: 'standard' for both DDPM++ and NCSN++.
                 resample_filter=[1, 1],         # Resampling filter: [1,1] for DDPM++, [1,3,3,1] for NCSN++.
                 ):
        assert embedding_type in ["fourier", "positional"]
        assert encoder_type in ["standard", "skip", "residual"]
        assert decoder_type in ["standard", "skip"]
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=np.sqrt(0.2))
        block_kwargs = dict(
            emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=np.sqrt(0.5), eps=1e-6,
            resample_filter=resample_filter, resample_proj=True, adaptive_scale=False,
            init=init, init_zero=init_zero, init_attn=init_attn)

        # Mapping network: noise label (+ class, augmentation labels) -> embedding.
        if embedding_type == "positional":
            self.map_noise = PositionalEmbedding(num_channels=noise_channels, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(num_channels=noise_channels)
        self.map_label = Linear(in_features=label_dim, out_features=noise_channels, **init) if label_dim else None
        self.map_augment = Linear(in_features=augment_dim, out_features=noise_channels, bias=False, **init) \
            if augment_dim else None
        self.map_layer0 = Linear(in_features=noise_channels, out_features=emb_channels, **init)
        self.map_layer1 = Linear(in_features=emb_channels, out_features=emb_channels, **init)

        # Encoder. `caux` tracks the channels of the auxiliary (skip/residual) image pyramid.
        self.enc = torch.nn.ModuleDict()
        cout = in_channels
        caux = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels
                self.enc[f"{res}x{res}_conv"] = Conv2d(in_channels=cin, out_channels=cout, kernel=3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(in_channels=cout, out_channels=cout, down=True, **block_kwargs)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(in_channels=caux, out_channels=caux, kernel=0, down=True,
                                                               resample_filter=resample_filter)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(in_channels=caux, out_channels=cout, kernel=1, **init)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(
                        in_channels=caux, out_channels=cout, kernel=3, down=True,
                        resample_filter=resample_filter, fused_resample=True, **init)
                    caux = cout
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(
                    in_channels=cin, out_channels=cout, attention=(res in attn_resolutions), **block_kwargs)
        skips = [block.out_channels for name, block in self.enc.items() if "aux" not in name]

        # Decoder. Attention only in the last block of a level (and always in the bottleneck's in0).
        self.dec = torch.nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(in_channels=cout, out_channels=cout, attention=True, **block_kwargs)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(in_channels=cout, out_channels=cout, **block_kwargs)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(in_channels=cout, out_channels=cout, up=True, **block_kwargs)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attn = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(in_channels=cin, out_channels=cout, attention=attn,
                                                                **block_kwargs)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(in_channels=out_channels, out_channels=out_channels,
                                                             kernel=0, up=True, resample_filter=resample_filter)
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(num_channels=cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(in_channels=cout, out_channels=out_channels, kernel=3,
                                                           **init_zero)

    def forward(self, x, noise_labels, class_labels, augment_labels=None):
        emb = self.map_noise(noise_labels)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(*emb.shape)  # swap to [sin, cos] as in Song et al.
        if self.map_label is not None:
            labels = _drop_labels(class_labels, self.label_dropout, self.training, x.shape[0])
            emb = emb + self.map_label(labels * np.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = silu(self.map_layer0(emb))
        emb = silu(self.map_layer1(emb))

        skips = []
        aux = x
        for name, block in self.enc.items():
            if "aux_down" in name:
                aux = block(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + block(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + block(aux)) / np.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)

        aux = None
        tmp = None
        for name, block in self.dec.items():
            if "aux_up" in name:
                aux = block(aux)
            elif "aux_norm" in name:
                tmp = block(x)
            elif "aux_conv" in name:
                tmp = block(silu(tmp))
                aux = tmp if aux is None else tmp + aux
            else:
                if x.shape[1] != block.in_channels:  # a block that consumes a skip connection
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return aux


def _drop_labels(labels, p, training, n):
    """Zero whole label rows with probability p during training (classifier-free guidance)."""
    if not (training and p):
        return labels
    keep = torch.rand([n, 1], device=labels.device) >= p
    return labels * keep.to(labels.dtype)


# ----------------------------------------------------------------------------------------------
# ADM of Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis" (NeurIPS 2021), as
# re-implemented in EDM.


class DhariwalUNet(torch.nn.Module):
    """ADM U-Net: x [N, in_channels, R, R], noise_labels [N] -> [N, out_channels, R, R].

    Same ModuleDict naming as SongUNet, plus `out_norm` / `out_conv` at the end.
    """

    def __init__(self,
                 img_resolution,                 # Image resolution at input/output.
                 in_channels,                    # Number of color channels at input.
                 out_channels,                   # Number of color channels at output.
                 label_dim=0,                    # Number of class labels, 0 = unconditional.
                 augment_dim=0,                  # Augmentation label dimensionality, 0 = no augmentation.
                 model_channels=192,             # Base multiplier for the number of channels.
                 channel_mult=[1, 2, 3, 4],      # Per-resolution multipliers for the number of channels.
                 channel_mult_emb=4,             # Multiplier for the dimensionality of the embedding vector.
                 num_blocks=3,                   # Number of residual blocks per resolution.
                 attn_resolutions=[32, 16, 8],   # List of resolutions with self-attention.
                 dropout=0.10,                   # Dropout probability of intermediate activations.
                 label_dropout=0,                # Dropout probability of class labels for classifier-free guidance.
                 ):
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode="kaiming_uniform", init_weight=np.sqrt(1 / 3), init_bias=np.sqrt(1 / 3))
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)
        block_kwargs = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=init,
                            init_zero=init_zero)

        # Mapping network. Attribute order follows EDM so that random init draws match it.
        self.map_noise = PositionalEmbedding(num_channels=model_channels)
        self.map_augment = Linear(in_features=augment_dim, out_features=model_channels, bias=False, **init_zero) \
            if augment_dim else None
        self.map_layer0 = Linear(in_features=model_channels, out_features=emb_channels, **init)
        self.map_layer1 = Linear(in_features=emb_channels, out_features=emb_channels, **init)
        self.map_label = Linear(in_features=label_dim, out_features=emb_channels, bias=False,
                                init_mode="kaiming_normal", init_weight=np.sqrt(label_dim)) if label_dim else None

        self.enc = torch.nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_conv"] = Conv2d(in_channels=cin, out_channels=cout, kernel=3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(in_channels=cout, out_channels=cout, down=True, **block_kwargs)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(
                    in_channels=cin, out_channels=cout, attention=(res in attn_resolutions), **block_kwargs)
        skips = [block.out_channels for block in self.enc.values()]

        self.dec = torch.nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(in_channels=cout, out_channels=cout, attention=True, **block_kwargs)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(in_channels=cout, out_channels=cout, **block_kwargs)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(in_channels=cout, out_channels=cout, up=True, **block_kwargs)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(
                    in_channels=cin, out_channels=cout, attention=(res in attn_resolutions), **block_kwargs)
        self.out_norm = GroupNorm(num_channels=cout)
        self.out_conv = Conv2d(in_channels=cout, out_channels=out_channels, kernel=3, **init_zero)

    def forward(self, x, noise_labels, class_labels, augment_labels=None):
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = silu(self.map_layer0(emb))
        emb = self.map_layer1(emb)
        if self.map_label is not None:  # ADM adds the class after the MLP, EDM's SongUNet before it
            emb = emb + self.map_label(_drop_labels(class_labels, self.label_dropout, self.training, x.shape[0]))
        emb = silu(emb)

        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        for block in self.dec.values():
            if x.shape[1] != block.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(silu(self.out_norm(x)))


NETWORKS = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}


# ----------------------------------------------------------------------------------------------
# Preconditioning: D(x; sigma) = c_skip x + c_out F(c_in x; c_noise), EDM paper Table 1.
# None of the wrappers has parameters; only iDDPMPrecond has a buffer (`u`). The wrapped network
# is `self.model`, hence the `model.` prefix on every key of a checkpoint's state dict.


def _network(model_type, **kwargs):
    """Instantiate NETWORKS[model_type] (EDM looks the class name up in globals())."""
    if model_type not in NETWORKS:
        raise ValueError(f"model_type must be one of {sorted(NETWORKS)}, got {model_type!r}")
    return NETWORKS[model_type](**kwargs)


def _condition(x, sigma, class_labels, label_dim):
    """Cast to fp32: x [N, C, H, W], sigma -> [N or 1, 1, 1, 1], labels -> [N or 1, label_dim] or None."""
    x = x.to(torch.float32)
    sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
    if label_dim == 0:
        return x, sigma, None
    if class_labels is None:  # unconditional use of a conditional net: the all-zero label
        return x, sigma, torch.zeros([1, label_dim], device=x.device)
    return x, sigma, class_labels.to(torch.float32).reshape(-1, label_dim)


def _net_dtype(use_fp16, force_fp32, x):
    """fp16 only when asked for and on CUDA, as in EDM."""
    return torch.float16 if (use_fp16 and not force_fp32 and x.device.type == "cuda") else torch.float32


# VP preconditioning (Song et al. 2021 VP SDE), EDM Table 1 column "VP".
class VPPrecond(torch.nn.Module):
    """Denoiser D(x; sigma): x [N, C, R, R], sigma [N] -> [N, C, R, R]. c_noise = (M - 1) t(sigma)."""

    def __init__(self,
                 img_resolution,           # Image resolution.
                 img_channels,             # Number of color channels.
                 label_dim=0,              # Number of class labels, 0 = unconditional.
                 use_fp16=False,           # Execute the underlying model at FP16 precision?
                 beta_d=19.9,              # Extent of the noise level schedule.
                 beta_min=0.1,             # Initial slope of the noise level schedule.
                 M=1000,                   # Original number of timesteps in the DDPM formulation.
                 epsilon_t=1e-5,           # Minimum t-value used during training.
                 model_type="SongUNet",    # Class name of the underlying model.
                 **model_kwargs,           # Keyword arguments for the underlying model.
                 ):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        self.beta_d = beta_d
        self.beta_min = beta_min
        self.M = M
        self.epsilon_t = epsilon_t
        with torch.device("cpu"):  # float() must work even when built under `with torch.device("meta")`
            self.sigma_min = float(self.sigma(epsilon_t))
            self.sigma_max = float(self.sigma(1))
        self.model = _network(model_type, img_resolution=img_resolution, in_channels=img_channels,
                              out_channels=img_channels, label_dim=label_dim, **model_kwargs)

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        x, sigma, class_labels = _condition(x, sigma, class_labels, self.label_dim)
        dtype = _net_dtype(self.use_fp16, force_fp32, x)
        c_skip = 1
        c_out = -sigma
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        c_noise = (self.M - 1) * self.sigma_inv(sigma)
        F_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=class_labels, **model_kwargs)
        return c_skip * x + c_out * F_x.to(torch.float32)

    def sigma(self, t):
        """sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
        t = torch.as_tensor(t)
        return ((0.5 * self.beta_d * (t ** 2) + self.beta_min * t).exp() - 1).sqrt()

    def sigma_inv(self, sigma):
        """t(sigma), the inverse of `sigma(t)`."""
        sigma = torch.as_tensor(sigma)
        return ((self.beta_min ** 2 + 2 * self.beta_d * (1 + sigma ** 2).log()).sqrt() - self.beta_min) / self.beta_d

    def round_sigma(self, sigma):
        return torch.as_tensor(sigma)


# VE preconditioning (Song et al. 2021 VE SDE), EDM Table 1 column "VE".
class VEPrecond(torch.nn.Module):
    """Denoiser D(x; sigma): x [N, C, R, R], sigma [N] -> [N, C, R, R]. c_noise = ln(sigma / 2)."""

    def __init__(self,
                 img_resolution,           # Image resolution.
                 img_channels,             # Number of color channels.
                 label_dim=0,              # Number of class labels, 0 = unconditional.
                 use_fp16=False,           # Execute the underlying model at FP16 precision?
                 sigma_min=0.02,           # Minimum supported noise level.
                 sigma_max=100,            # Maximum supported noise level.
                 model_type="SongUNet",    # Class name of the underlying model.
                 **model_kwargs,           # Keyword arguments for the underlying model.
                 ):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.model = _network(model_type, img_resolution=img_resolution, in_channels=img_channels,
                              out_channels=img_channels, label_dim=label_dim, **model_kwargs)

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        x, sigma, class_labels = _condition(x, sigma, class_labels, self.label_dim)
        dtype = _net_dtype(self.use_fp16, force_fp32, x)
        c_skip = 1
        c_out = sigma
        c_in = 1
        c_noise = (0.5 * sigma).log()
        F_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=class_labels, **model_kwargs)
        return c_skip * x + c_out * F_x.to(torch.float32)

    def round_sigma(self, sigma):
        return torch.as_tensor(sigma)


# iDDPM preconditioning (Nichol & Dhariwal 2021, cosine schedule), EDM Table 1 column "iDDPM".
class iDDPMPrecond(torch.nn.Module):
    """Denoiser D(x; sigma): x [N, C, R, R], sigma [N] -> [N, C, R, R]. c_noise = M - 1 - argmin_j |u_j - sigma|.

    The network outputs 2C channels (mean and learned variance); only the first C are used.
    """

    def __init__(self,
                 img_resolution,               # Image resolution.
                 img_channels,                 # Number of color channels.
                 label_dim=0,                  # Number of class labels, 0 = unconditional.
                 use_fp16=False,               # Execute the underlying model at FP16 precision?
                 C_1=0.001,                    # Timestep adjustment at low noise levels.
                 C_2=0.008,                    # Timestep adjustment at high noise levels.
                 M=1000,                       # Original number of timesteps in the DDPM formulation.
                 model_type="DhariwalUNet",    # Class name of the underlying model.
                 **model_kwargs,               # Keyword arguments for the underlying model.
                 ):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        self.C_1 = C_1
        self.C_2 = C_2
        self.M = M
        self.model = _network(model_type, img_resolution=img_resolution, in_channels=img_channels,
                              out_channels=img_channels * 2, label_dim=label_dim, **model_kwargs)
        u = self._noise_levels()
        self.register_buffer("u", u.to(torch.empty(0).device))  # follow a `with torch.device(...)` context
        self.sigma_min = float(u[M - 1])
        self.sigma_max = float(u[0])

    def _noise_levels(self):
        """u [M + 1]: the discrete sigmas u_j, by EDM's recursion from u_M = 0 (computed on the CPU in fp32)."""
        with torch.device("cpu"):
            u = torch.zeros(self.M + 1)
            for j in range(self.M, 0, -1):  # M, ..., 1
                ratio = (self.alpha_bar(j - 1) / self.alpha_bar(j)).clip(min=self.C_1)
                u[j - 1] = ((u[j] ** 2 + 1) / ratio - 1).sqrt()
        return u

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        x, sigma, class_labels = _condition(x, sigma, class_labels, self.label_dim)
        dtype = _net_dtype(self.use_fp16, force_fp32, x)
        c_skip = 1
        c_out = -sigma
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        c_noise = self.M - 1 - self.round_sigma(sigma, return_index=True).to(torch.float32)
        F_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=class_labels, **model_kwargs)
        return c_skip * x + c_out * F_x[:, :self.img_channels].to(torch.float32)

    def alpha_bar(self, j):
        """Cosine schedule alpha_bar(j) = sin^2(pi j / (2 M (C_2 + 1)))."""
        j = torch.as_tensor(j)
        return (0.5 * np.pi * j / self.M / (self.C_2 + 1)).sin() ** 2

    def round_sigma(self, sigma, return_index=False):
        """Snap each sigma to the nearest u_j (or return j)."""
        sigma = torch.as_tensor(sigma)
        flat = sigma.to(self.u.device).to(torch.float32).reshape(1, -1, 1)
        index = torch.cdist(flat, self.u.reshape(1, -1, 1)).argmin(2)
        result = index if return_index else self.u[index.flatten()].to(sigma.dtype)
        return result.reshape(sigma.shape).to(sigma.device)


# EDM preconditioning, EDM Table 1 column "Ours" (Karras et al. 2022, Section 5).
class EDMPrecond(torch.nn.Module):
    """Denoiser D(x; sigma): x [N, C, R, R], sigma [N] -> [N, C, R, R]. c_noise = ln(sigma) / 4."""

    def __init__(self,
                 img_resolution,               # Image resolution.
                 img_channels,                 # Number of color channels.
                 label_dim=0,                  # Number of class labels, 0 = unconditional.
                 use_fp16=False,               # Execute the underlying model at FP16 precision?
                 sigma_min=0,                  # Minimum supported noise level.
                 sigma_max=float("inf"),       # Maximum supported noise level.
                 sigma_data=0.5,               # Expected standard deviation of the training data.
                 model_type="DhariwalUNet",    # Class name of the underlying model.
                 **model_kwargs,               # Keyword arguments for the underlying model.
                 ):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = sigma_data
        self.model = _network(model_type, img_resolution=img_resolution, in_channels=img_channels,
                              out_channels=img_channels, label_dim=label_dim, **model_kwargs)

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        x, sigma, class_labels = _condition(x, sigma, class_labels, self.label_dim)
        dtype = _net_dtype(self.use_fp16, force_fp32, x)
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1 / (sd2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        F_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=class_labels, **model_kwargs)
        return c_skip * x + c_out * F_x.to(torch.float32)

    def round_sigma(self, sigma):
        return torch.as_tensor(sigma)


PRECONDS = {"edm": EDMPrecond, "vp": VPPrecond, "ve": VEPrecond, "iddpm": iDDPMPrecond}

# Network presets of NVlabs/edm train.py `--arch`. train.py also sets dropout (default 0.13) and,
# when --augment > 0 (default 0.12, used for the CIFAR-10 checkpoints), augment_dim=9.
EDM_PRESETS = {
    "ddpmpp": dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                   decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1],
                   model_channels=128, channel_mult=[2, 2, 2]),
    "ncsnpp": dict(model_type="SongUNet", embedding_type="fourier", encoder_type="residual",
                   decoder_type="standard", channel_mult_noise=2, resample_filter=[1, 3, 3, 1],
                   model_channels=128, channel_mult=[2, 2, 2]),
    "adm": dict(model_type="DhariwalUNet", model_channels=192, channel_mult=[1, 2, 3, 4]),
}


def build_edm(precond, model_type, **kwargs):
    """PRECONDS[precond](model_type=model_type, **kwargs); kwargs = img_resolution, img_channels, label_dim, net kwargs.

    Example: build_edm("edm", **EDM_PRESETS["ddpmpp"], img_resolution=32, img_channels=3).
    """
    if precond not in PRECONDS:
        raise UserError(f"Unknown EDM preconditioning {precond!r}. Use one of: {', '.join(PRECONDS)}.")
    if model_type not in NETWORKS:
        raise UserError(f"Unknown EDM network {model_type!r}. Use one of: {', '.join(NETWORKS)}.")
    return PRECONDS[precond](model_type=model_type, **kwargs)
