"""Tests for icrcli.models.archs.edm: key names/shapes of the public EDM configurations, forward passes,
the preconditioners' formulas (EDM paper Table 1), the default tap layer and config inference."""

import math

import numpy as np
import pytest
import torch

from icrcli.models.archs.edm import (
    EDM_PRESETS, NETWORKS, PRECONDS, DhariwalUNet, EDMPrecond, SongUNet, build_edm, default_layer,
    edm_from_state_dict, infer_edm_config,
)
from icrcli.errors import UserError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions are dominated by thread hand-off; on a busy 2-core box 2 threads are ~100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------
# Independent parameter count, written from the block structure of NVlabs/edm training/networks.py
# (arithmetic on channel counts, no modules built).


def _block_params(cin, cout, emb, attn, resample, song):
    n = 2 * cin + 9 * cin * cout + cout                               # norm0, conv0
    n += (emb + 1) * cout * (1 if song else 2)                        # affine (ADM: scale and shift)
    n += 2 * cout + 9 * cout * cout + cout                            # norm1, conv1
    if cin != cout or (resample and song):                            # 1x1 skip (SongUNet: resample_proj)
        n += cin * cout + cout
    if attn:
        n += 2 * cout + 3 * cout * cout + 3 * cout + cout * cout + cout  # norm2, qkv, proj
    return n


def _unet_params(song, res, img_ch, out_ch, mc, mult, nb, attn_res, label_dim=0, augment_dim=0, noise_mult=1):
    emb, noise = 4 * mc, mc * (noise_mult if song else 1)
    n = (noise + 1) * emb + (emb + 1) * emb                                                 # map_layer0/1
    n += (label_dim * noise + noise) if song and label_dim else label_dim * emb             # map_label
    n += augment_dim * noise                                                                # map_augment
    c = mc if song else mc * mult[0]
    n += 9 * img_ch * c + c                                                                 # enc conv
    skips = [c]
    for level, m in enumerate(mult):
        r = res >> level
        if level:
            n += _block_params(c, c, emb, False, True, song)
            skips.append(c)
        for _ in range(nb):
            n += _block_params(c, mc * m, emb, r in attn_res, False, song)
            c = mc * m
            skips.append(c)
    for level, m in reversed(list(enumerate(mult))):
        r = res >> level
        if level == len(mult) - 1:
            n += _block_params(c, c, emb, True, False, song) + _block_params(c, c, emb, False, False, song)
        else:
            n += _block_params(c, c, emb, False, True, song)
        for idx in range(nb + 1):
            attn = (idx == nb if song else True) and r in attn_res
            n += _block_params(c + skips.pop(), mc * m, emb, attn, False, song)
            c = mc * m
    return n + 2 * c + 9 * c * out_ch + out_ch                                             # output norm + conv


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _count(module):
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------------------
# The public CIFAR-10 DDPM++ network (edm-cifar10-32x32-uncond-vp.pkl): `train.py --arch=ddpmpp`
# with the default --augment=0.12, which adds a 9-dim augmentation-label mapping.


@pytest.fixture(scope="module")
def cifar_ddpmpp():
    with torch.device("meta"):
        return build_edm("edm", **EDM_PRESETS["ddpmpp"], img_resolution=32, img_channels=3, label_dim=0, augment_dim=9)


def test_cifar10_ddpmpp_parameter_count(cifar_ddpmpp):
    assert isinstance(cifar_ddpmpp, EDMPrecond) and isinstance(cifar_ddpmpp.model, SongUNet)
    expected = _unet_params(True, 32, 3, 3, 128, [2, 2, 2], 4, [16], augment_dim=9)
    assert expected == 55_733_891  # published 55.73M
    assert _count(cifar_ddpmpp) == expected


def test_cifar10_ddpmpp_keys(cifar_ddpmpp):
    shapes = _shapes(cifar_ddpmpp)
    assert all(k.startswith("model.") for k in shapes)
    expected = {
        "model.map_augment.weight": (128, 9),
        "model.map_layer0.weight": (512, 128),
        "model.map_layer1.bias": (512,),
        "model.enc.32x32_conv.weight": (128, 3, 3, 3),
        "model.enc.32x32_block0.conv0.weight": (256, 128, 3, 3),
        "model.enc.32x32_block0.skip.weight": (256, 128, 1, 1),
        "model.enc.32x32_block0.affine.weight": (256, 512),  # additive bias only in DDPM++
        "model.enc.16x16_down.conv0.resample_filter": (1, 1, 2, 2),
        "model.enc.16x16_down.skip.weight": (256, 256, 1, 1),  # resample_proj=True
        "model.enc.16x16_block0.qkv.weight": (768, 256, 1, 1),
        "model.dec.8x8_in0.proj.weight": (256, 256, 1, 1),
        "model.dec.16x16_block1.conv0.weight": (256, 512, 3, 3),
        "model.dec.16x16_block4.qkv.weight": (768, 256, 1, 1),
        "model.dec.32x32_block4.conv0.weight": (256, 384, 3, 3),  # last skip is the 128-ch enc conv
        "model.dec.32x32_aux_norm.weight": (256,),
        "model.dec.32x32_aux_conv.weight": (3, 256, 3, 3),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    absent = ["model.map_label.weight", "model.map_noise.freqs", "model.dec.8x8_in1.qkv.weight",
              "model.dec.16x16_block3.qkv.weight", "model.enc.32x32_block0.qkv.weight",
              "model.enc.32x32_block1.skip.weight", "model.u"]
    assert not [k for k in absent if k in shapes]


def test_cifar10_ddpmpp_decoder_blocks(cifar_ddpmpp):
    blocks = [f"{r}x{r}_block{i}" for r in (8, 16, 32) for i in range(5)]
    expected = {"8x8_in0", "8x8_in1", "16x16_up", "32x32_up", "32x32_aux_norm", "32x32_aux_conv", *blocks}
    assert set(cifar_ddpmpp.model.dec.keys()) == expected
    assert list(cifar_ddpmpp.model.dec.keys())[:2] == ["8x8_in0", "8x8_in1"]  # bottleneck first


def test_ddpmpp_without_augment_drops_one_matrix():
    with torch.device("meta"):
        net = build_edm("edm", **EDM_PRESETS["ddpmpp"], img_resolution=32, img_channels=3)
    assert _count(net) == 55_733_891 - 9 * 128


# The public ImageNet-64 ADM network (edm-imagenet-64x64-cond-adm.pkl): EDMPrecond + DhariwalUNet.
def test_imagenet64_adm_count_and_keys():
    with torch.device("meta"):
        net = build_edm("edm", **EDM_PRESETS["adm"], img_resolution=64, img_channels=3, label_dim=1000)
    assert isinstance(net.model, DhariwalUNet)
    n = _count(net)
    assert n == _unet_params(False, 64, 3, 3, 192, [1, 2, 3, 4], 3, [32, 16, 8], label_dim=1000)
    assert round(n / 1e6) == 296  # published ~296M
    shapes = _shapes(net)
    expected = {
        "model.map_label.weight": (768, 1000),
        "model.map_layer0.weight": (768, 192),
        "model.enc.64x64_conv.weight": (192, 3, 3, 3),
        "model.enc.32x32_block0.qkv.weight": (1152, 384, 1, 1),
        "model.enc.16x16_block0.conv0.weight": (576, 384, 3, 3),
        "model.dec.16x16_block1.conv0.weight": (576, 1152, 3, 3),
        "model.dec.16x16_block1.affine.weight": (1152, 768),  # adaptive scale and shift
        "model.out_conv.weight": (3, 192, 3, 3),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    assert "model.map_label.bias" not in shapes and "model.enc.64x64_block0.qkv.weight" not in shapes
    assert "model.enc.16x16_down.skip.weight" not in shapes  # ADM resamples the skip without a projection


# ----------------------------------------------------------------------------------------------
# Small random networks on the CPU.

TINY_SONG = dict(model_type="SongUNet", model_channels=16, channel_mult=[1, 2, 2], num_blocks=2,
                 attn_resolutions=[16])
TINY_ADM = dict(model_type="DhariwalUNet", model_channels=64, channel_mult=[1, 1, 2], num_blocks=1,
                attn_resolutions=[8])


@pytest.mark.parametrize("kwargs", [TINY_SONG, TINY_ADM], ids=["SongUNet", "DhariwalUNet"])
def test_tiny_forward_shapes(kwargs):
    torch.manual_seed(0)
    kwargs = dict(kwargs)
    net = NETWORKS[kwargs.pop("model_type")](img_resolution=32, in_channels=3, out_channels=5, label_dim=4, **kwargs)
    x, labels = torch.randn(2, 3, 32, 32), torch.eye(4)[[0, 2]]
    y = net(x, torch.tensor([0.1, -0.3]), labels)
    assert y.shape == (2, 5, 32, 32) and torch.isfinite(y).all()


@pytest.mark.slow
@pytest.mark.parametrize("precond", ["edm", "vp", "ve", "iddpm"])
def test_precond_forward_shape(precond):
    torch.manual_seed(0)
    net = build_edm(precond, **TINY_SONG, img_resolution=16, img_channels=3, label_dim=10).eval()
    x = torch.randn(3, 3, 16, 16)
    d = net(x, torch.tensor([0.5, 2.0, 10.0]), torch.eye(10)[[1, 2, 3]])
    assert d.shape == x.shape and d.dtype == torch.float32 and torch.isfinite(d).all()
    if precond == "iddpm":
        assert net.model.dec["16x16_aux_conv"].out_channels == 6  # mean + variance outputs


def test_dhariwal_attention_heads_follow_channels_per_head():
    net = DhariwalUNet(img_resolution=16, in_channels=3, out_channels=3, model_channels=64,
                       channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8])
    assert net.enc["8x8_block0"].num_heads == 2 and net.enc["16x16_block0"].num_heads == 0


# ----------------------------------------------------------------------------------------------
# Preconditioning formulas of EDM Table 1, checked on what reaches the inner network.


class _Recorder(torch.nn.Module):
    """Stands in for the U-Net: remembers its inputs and returns a fixed F."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, noise_labels, class_labels=None):
        self.x, self.c_noise = x, noise_labels
        return self.out


def _run_with_recorder(net, x, sigma, channels=3):
    f = torch.full((x.shape[0], channels, *x.shape[2:]), 0.7)
    net.model = _Recorder(f)
    d = net(x, sigma)
    return d, net.model, f[:, :3]


def _tiny(precond, **kw):
    return build_edm(precond, **TINY_SONG, img_resolution=16, img_channels=3, **kw)


SIGMAS = torch.tensor([0.002, 0.29, 1.0, 80.0])


def test_edm_precond_formulas():
    x = torch.randn(4, 3, 16, 16)
    d, rec, f = _run_with_recorder(_tiny("edm"), x, SIGMAS)
    s, sd = SIGMAS.double().view(-1, 1, 1, 1), 0.5
    assert torch.allclose(rec.c_noise.double(), SIGMAS.double().log() / 4, atol=1e-6)
    assert torch.allclose(rec.x.double(), x / (s ** 2 + sd ** 2).sqrt(), rtol=1e-5, atol=1e-6)
    ref = sd ** 2 / (s ** 2 + sd ** 2) * x + s * sd / (s ** 2 + sd ** 2).sqrt() * f
    assert torch.allclose(d.double(), ref, rtol=1e-5, atol=1e-5)


def test_ve_precond_formulas():
    x = torch.randn(4, 3, 16, 16)
    d, rec, f = _run_with_recorder(_tiny("ve"), x, SIGMAS)
    assert torch.allclose(rec.c_noise.double(), (SIGMAS.double() / 2).log(), atol=1e-6)
    assert torch.equal(rec.x, x)
    assert torch.allclose(d, x + SIGMAS.view(-1, 1, 1, 1) * f, rtol=1e-6)


def test_vp_precond_formulas():
    beta_d, beta_min, M = 19.9, 0.1, 1000
    t = np.array([1e-3, 0.1, 0.5, 1.0])
    sigma = np.sqrt(np.exp(0.5 * beta_d * t ** 2 + beta_min * t) - 1)  # VP SDE marginal, EDM eq. in Table 1
    x = torch.randn(4, 3, 16, 16)
    net = _tiny("vp")
    assert net.sigma_max == pytest.approx(math.sqrt(math.exp(0.5 * beta_d + beta_min) - 1), rel=1e-6)
    d, rec, f = _run_with_recorder(net, x, torch.tensor(sigma, dtype=torch.float32))
    assert np.allclose(rec.c_noise.numpy(), (M - 1) * t, rtol=1e-4, atol=1e-3)
    s = torch.tensor(sigma).view(-1, 1, 1, 1)
    assert torch.allclose(rec.x.double(), x / (s ** 2 + 1).sqrt(), rtol=1e-5, atol=1e-6)
    assert torch.allclose(d.double(), x - s * f, rtol=1e-5, atol=1e-5)


def _iddpm_levels(M=1000, C_1=0.001, C_2=0.008):
    """u_j of EDM Table 1 (iDDPM column), in float64: u_M = 0, recursion downwards."""
    alpha_bar = lambda j: math.sin(0.5 * math.pi * j / M / (C_2 + 1)) ** 2  # noqa: E731
    u = [0.0] * (M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(alpha_bar(j - 1) / alpha_bar(j), C_1) - 1)
    return np.array(u)


def test_iddpm_precond_formulas():
    u = _iddpm_levels()
    net = _tiny("iddpm")
    # EDM runs the recursion in fp32; near u_M the cancellation in (.. / ratio - 1) costs ~1e-3 relative.
    assert np.allclose(net.u.numpy(), u, rtol=2e-3)
    assert net.sigma_min == pytest.approx(u[999], rel=2e-3) and net.sigma_max == pytest.approx(u[0], rel=1e-4)
    j = np.array([999, 700, 300, 10])
    sigma = torch.tensor(u[j] * 1.0001, dtype=torch.float32)  # slightly off-grid: rounds to u_j
    x = torch.randn(4, 3, 16, 16)
    d, rec, f = _run_with_recorder(net, x, sigma, channels=6)
    assert rec.c_noise.tolist() == (999 - j).tolist()
    assert torch.allclose(d, x - sigma.view(-1, 1, 1, 1) * f, rtol=1e-5)


def test_unconditional_call_of_conditional_net_uses_zero_label():
    torch.manual_seed(0)
    net = _tiny("edm", label_dim=10).eval()
    x, s = torch.randn(1, 3, 16, 16), torch.tensor([1.0])
    assert torch.equal(net(x, s), net(x, s, torch.zeros(1, 10)))
    assert not torch.equal(net(x, s), net(x, s, torch.eye(10)[:1]))  # tiny difference: aux_conv starts at 1e-5


# ----------------------------------------------------------------------------------------------
# Default tap layer (paper Appendix C: "dec.16x16 block1").


@pytest.mark.parametrize("kwargs, channels", [(TINY_SONG, 32), (TINY_ADM, 64)], ids=["SongUNet", "DhariwalUNet"])
def test_default_layer_is_hookable(kwargs, channels):
    torch.manual_seed(0)
    net = build_edm("edm", **kwargs, img_resolution=32, img_channels=3).eval()
    name = default_layer(net)
    assert name == "model.dec.16x16_block1"
    assert default_layer(net.model) == "dec.16x16_block1"
    captured = []
    dict(net.named_modules())[name].register_forward_hook(lambda m, i, o: captured.append(o))
    net(torch.randn(2, 3, 32, 32), torch.tensor([0.29, 0.29]))
    assert len(captured) == 1 and captured[0].shape == (2, channels, 16, 16)


@pytest.mark.slow
def test_default_layer_imagenet64_matches_paper():
    # Appendix C: the ImageNet-64 EDM tap "dec.16x16 block1" gives tensors of shape (576, 16, 16).
    with torch.device("meta"):
        net = build_edm("edm", **EDM_PRESETS["adm"], img_resolution=64, img_channels=3, label_dim=1000)
    name = default_layer(net)
    assert name == "model.dec.16x16_block1"
    assert dict(net.named_modules())[name].out_channels == 576


# ----------------------------------------------------------------------------------------------
# Inferring the constructor arguments back from a state dict.

ROUND_TRIP = {
    "ddpmpp_uncond": ("edm", dict(TINY_SONG, **EDM_PRESETS["ddpmpp"] | dict(model_channels=16, channel_mult=[1, 2]))),
    "ddpmpp_cond_aug": ("edm", dict(TINY_SONG, label_dim=10, augment_dim=9)),
    "ncsnpp_cond": ("ve", dict(EDM_PRESETS["ncsnpp"], model_channels=16, channel_mult=[1, 2, 2], num_blocks=1,
                               attn_resolutions=[8, 4], label_dim=10)),
    "song_skip_skip": ("vp", dict(TINY_SONG, encoder_type="skip", decoder_type="skip", resample_filter=[1, 3, 3, 1])),
    "song_one_block": ("edm", dict(TINY_SONG, num_blocks=1, channel_mult_emb=2, attn_resolutions=[])),
    "adm_cond": ("edm", dict(TINY_ADM, label_dim=10, attn_resolutions=[16, 8])),
    "adm_iddpm": ("iddpm", dict(TINY_ADM, channel_mult=[1, 2, 3, 4], M=500)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ROUND_TRIP))
@pytest.mark.parametrize("bare", [False, True], ids=["precond", "bare"])
def test_infer_config_round_trip(name, bare):
    precond, kwargs = ROUND_TRIP[name]
    with torch.device("meta"):
        net = build_edm(precond, **kwargs, img_resolution=16, img_channels=3)
    source = net.model if bare else net
    config = infer_edm_config(source.state_dict())
    assert config is not None
    with torch.device("meta"):
        rebuilt = build_edm(**config)
    assert _shapes(rebuilt.model if bare else rebuilt) == _shapes(source)
    for key in ("model_type", "model_channels", "channel_mult", "num_blocks", "label_dim"):
        assert config[key] == kwargs.get(key, 0), key
    assert config["img_resolution"] == 16 and config["img_channels"] == 3
    assert config["precond"] == ("iddpm" if precond == "iddpm" else "edm")  # vp/ve leave no trace


def test_infer_config_song_switches():
    _, kwargs = ROUND_TRIP["ncsnpp_cond"]
    with torch.device("meta"):
        net = build_edm("ve", **kwargs, img_resolution=16, img_channels=3)
    config = infer_edm_config(net.state_dict())
    expected = dict(embedding_type="fourier", encoder_type="residual", decoder_type="standard",
                    channel_mult_noise=2, resample_filter=[1, 3, 3, 1], attn_resolutions=[8, 4])
    assert {k: config[k] for k in expected} == expected


def test_infer_config_cifar10(cifar_ddpmpp):
    config = infer_edm_config(cifar_ddpmpp.state_dict())
    assert config == dict(precond="edm", **EDM_PRESETS["ddpmpp"], img_resolution=32, img_channels=3, label_dim=0,
                          augment_dim=9, channel_mult_emb=4, num_blocks=4, attn_resolutions=[16])


def test_infer_config_rejects_other_state_dicts():
    assert infer_edm_config(torch.nn.Linear(3, 4).state_dict()) is None
    assert infer_edm_config({}) is None
    with torch.device("meta"):
        sd = _tiny("edm").state_dict()
    assert infer_edm_config({**sd, "pos_embed": torch.zeros(1)}) is None  # a foreign precond-level key
    assert infer_edm_config({k: v for k, v in sd.items() if "aux_conv" not in k}) is None


@pytest.mark.slow
def test_edm_from_state_dict_loads_strictly():
    torch.manual_seed(0)
    src = build_edm("edm", **TINY_ADM, img_resolution=16, img_channels=3, label_dim=10).eval()
    for p in src.parameters():  # the output conv is zero-initialised; make the comparison meaningful
        p.data += 0.01 * torch.randn_like(p)
    x, s, c = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 3.0]), torch.eye(10)[:2]
    for state in (src.state_dict(), src.model.state_dict()):
        loaded = edm_from_state_dict(state).eval()
        assert torch.equal(loaded(x, s, c), src(x, s, c))
    with pytest.raises(UserError, match="EDM"):
        edm_from_state_dict({"weight": torch.zeros(2)})


@pytest.mark.slow
def test_edm_from_state_dict_bare_iddpm_net_gets_its_noise_levels():
    src = build_edm("iddpm", **TINY_SONG, img_resolution=16, img_channels=3)
    loaded = edm_from_state_dict(src.model.state_dict())
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert torch.equal(loaded.u, src.u)


def test_build_edm_rejects_unknown_names():
    with pytest.raises(UserError, match="'foo'.*edm, vp, ve, iddpm"):
        build_edm("foo", "SongUNet", img_resolution=16, img_channels=3)
    with pytest.raises(UserError, match="'UNet2D'"):
        build_edm("edm", "UNet2D", img_resolution=16, img_channels=3)
    assert set(PRECONDS) == {"edm", "vp", "ve", "iddpm"} and set(NETWORKS) == {"SongUNet", "DhariwalUNet"}
