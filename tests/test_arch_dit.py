"""DiT / SiT / REPA-SiT ports: state-dict layout pinned to the originals, forward, config inference."""

import math

import numpy as np
import pytest
import torch

from icrcli.models.archs import dit
from icrcli.errors import UserError

# ----------------------------------------------------------------------------------------------
# Independent references, written from the original models.py, not from our module.


def expected_shapes(depth, D, p, C, num_labels, T, out_channels, mlp=4):
    """Every key and shape of DiT models.py's DiT (timm PatchEmbed/Attention/Mlp parameter names)."""
    shapes = {
        "pos_embed": (1, T, D),
        "x_embedder.proj.weight": (D, C, p, p), "x_embedder.proj.bias": (D,),
        "t_embedder.mlp.0.weight": (D, 256), "t_embedder.mlp.0.bias": (D,),
        "t_embedder.mlp.2.weight": (D, D), "t_embedder.mlp.2.bias": (D,),
        "y_embedder.embedding_table.weight": (num_labels, D),
        "final_layer.linear.weight": (p * p * out_channels, D), "final_layer.linear.bias": (p * p * out_channels,),
        "final_layer.adaLN_modulation.1.weight": (2 * D, D), "final_layer.adaLN_modulation.1.bias": (2 * D,),
    }
    for i in range(depth):
        shapes.update({
            f"blocks.{i}.attn.qkv.weight": (3 * D, D), f"blocks.{i}.attn.qkv.bias": (3 * D,),
            f"blocks.{i}.attn.proj.weight": (D, D), f"blocks.{i}.attn.proj.bias": (D,),
            f"blocks.{i}.mlp.fc1.weight": (mlp * D, D), f"blocks.{i}.mlp.fc1.bias": (mlp * D,),
            f"blocks.{i}.mlp.fc2.weight": (D, mlp * D), f"blocks.{i}.mlp.fc2.bias": (D,),
            f"blocks.{i}.adaLN_modulation.1.weight": (6 * D, D), f"blocks.{i}.adaLN_modulation.1.bias": (6 * D,),
        })
    return shapes


def formula_params(depth, D, p, C, num_labels, T, out_channels):
    """Parameter count by hand: per block qkv + proj + fc1 + fc2 + adaLN = 18 D^2 + 15 D."""
    block = 18 * D * D + 15 * D
    embed = (p * p * C * D + D) + (256 * D + D + D * D + D) + num_labels * D + T * D
    final = (2 * D * D + 2 * D) + (D * p * p * out_channels + p * p * out_channels)
    return depth * block + embed + final


def projector_params(D, proj, z):
    return (D * proj + proj) + (proj * proj + proj) + (proj * z + z)


def shapes_of(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def sincos_reference(D, grid):
    """MAE/DiT 2-D sin-cos table by explicit loops: token k = row * grid + col;
    [sin(col w) | cos(col w) | sin(row w) | cos(row w)], w_m = 10000^(-m / (D/4))."""
    quarter = D // 4
    out = np.zeros((grid * grid, D))
    for row in range(grid):
        for col in range(grid):
            for m in range(quarter):
                w = 10000.0 ** (-m / quarter)
                k = row * grid + col
                out[k, m], out[k, quarter + m] = math.sin(col * w), math.cos(col * w)
                out[k, 2 * quarter + m], out[k, 3 * quarter + m] = math.sin(row * w), math.cos(row * w)
    return out


# ----------------------------------------------------------------------------------------------
# Published sizes, built on the meta device (no memory, no init cost).


def test_dit_xl2_layout_and_published_param_count():
    with torch.device("meta"):
        model = dit.DiT_models["DiT-XL/2"](input_size=32, num_classes=1000)
    # DiT-XL/2 at 256px: 28 blocks, D = 1152, 4 latent channels, 16x16 = 256 tokens, 1000 + null labels.
    assert shapes_of(model) == expected_shapes(28, 1152, 2, 4, 1001, 256, out_channels=8)
    n = sum(p.numel() for p in model.parameters())
    assert n == formula_params(28, 1152, 2, 4, 1001, 256, out_channels=8)
    assert abs(n - 675e6) / 675e6 < 0.01  # DiT paper, Table 4: 675M
    assert model.num_heads == 16 and not model.pos_embed.requires_grad


def test_sit_b2_layout_and_published_param_count():
    with torch.device("meta"):
        model = dit.SiT_models["SiT-B/2"]()
    assert shapes_of(model) == expected_shapes(12, 768, 2, 4, 1001, 256, out_channels=8)
    n = sum(p.numel() for p in model.parameters())
    assert n == formula_params(12, 768, 2, 4, 1001, 256, out_channels=8)
    assert abs(n - 130e6) / 130e6 < 0.01  # SiT paper, Table 1: SiT-B 130M


def test_repa_sit_xl2_projector_keys():
    with torch.device("meta"):
        model = dit.SiTREPA_models["SiT-XL/2"](z_dims=[768], projector_dim=2048, encoder_depth=8)
    shapes = shapes_of(model)
    projector = {k: v for k, v in shapes.items() if k.startswith("projectors.")}
    assert projector == {
        "projectors.0.0.weight": (2048, 1152), "projectors.0.0.bias": (2048,),
        "projectors.0.2.weight": (2048, 2048), "projectors.0.2.bias": (2048,),
        "projectors.0.4.weight": (768, 2048), "projectors.0.4.bias": (768,),
    }
    rest = {k: v for k, v in shapes.items() if not k.startswith("projectors.")}
    assert rest == expected_shapes(28, 1152, 2, 4, 1001, 256, out_channels=4)  # no learn_sigma in REPA
    n = sum(p.numel() for p in model.parameters())
    assert n == formula_params(28, 1152, 2, 4, 1001, 256, 4) + projector_params(1152, 2048, 768)


@pytest.mark.parametrize("table,prefix", [(dit.DiT_models, "DiT"), (dit.SiT_models, "SiT"),
                                          (dit.SiTREPA_models, "SiT")])
def test_size_tables_match_original_configs(table, prefix):
    # DiT models.py: XL 28/1152/16, L 24/1024/16, B 12/768/12, S 12/384/6, patches 2, 4, 8.
    sizes = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}
    assert set(table) == {f"{prefix}-{s}/{p}" for s in sizes for p in (2, 4, 8)}
    for s, (depth, hidden, heads) in sizes.items():
        for p in (2, 4, 8):
            kw = table[f"{prefix}-{s}/{p}"].keywords
            assert (kw["depth"], kw["hidden_size"], kw["num_heads"], kw["patch_size"]) == (depth, hidden, heads, p)


def test_default_layer_is_the_middle_block():
    with torch.device("meta"):
        model = dit.SiT_models["SiT-XL/2"]()
    assert dit.default_layer(model) == "blocks.13"  # block 14 of 28 (paper, appendix C)
    assert "blocks.13" in dict(model.named_modules())
    with torch.device("meta"):
        assert dit.default_layer(dit.SiT_models["SiT-B/2"]()) == "blocks.5"


# ----------------------------------------------------------------------------------------------
# Tiny random models on CPU.

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=4, num_heads=4, num_classes=10)


def randomize(model, seed=0):
    """Overwrite the zero-initialised gates and outputs so the forward pass is not trivially zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "pos_embed":
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def inputs(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, 8, 8, generator=g)
    t = torch.tensor([0.2, 0.5, 0.9])[:n]
    y = torch.tensor([0, 3, 10])[:n]  # 10 = num_classes: the null class
    return x, t, y


def test_tiny_dit_and_sit_forward():
    model = randomize(dit.DiT(**TINY))
    x, t, y = inputs()
    with torch.no_grad():
        out = model(x, t, y)
        assert out.shape == (3, 8, 8, 8)  # learn_sigma: eps and sigma channels
        assert torch.isfinite(out).all()
        # the null-class row is a real embedding: it changes the output
        assert not torch.allclose(model(x[:1], t[:1], torch.tensor([10])), model(x[:1], t[:1], torch.tensor([0])))
        sit = dit.SiT(**TINY).eval()
        sit.load_state_dict(model.state_dict(), strict=True)
        torch.testing.assert_close(sit(x, t, y), out[:, :4])  # SiT returns the first half only


def test_tiny_repa_forward_projects_block_encoder_depth():
    model = randomize(dit.SiTREPA(**TINY, decoder_hidden_size=64, encoder_depth=2, z_dims=[32, 16],
                                  projector_dim=48))
    x, t, y = inputs()
    captured = {}
    model.blocks[1].register_forward_hook(lambda m, i, o: captured.setdefault("h", o))
    with torch.no_grad():
        out, zs = model(x, t, y)
        assert out.shape == (3, 4, 8, 8)
        assert [z.shape for z in zs] == [(3, 16, 32), (3, 16, 16)]
        torch.testing.assert_close(zs[1], model.projectors[1](captured["h"]))


def test_initial_output_is_zero_as_in_adaln_zero():
    # DiT zero-initialises the final linear layer, so a fresh model predicts exactly 0.
    x, t, y = inputs()
    with torch.no_grad():
        assert torch.count_nonzero(dit.DiT(**TINY)(x, t, y)) == 0


def test_wrong_input_size_is_a_user_error():
    model = dit.DiT(**TINY)
    with pytest.raises(UserError, match="8x8"):
        model(torch.zeros(1, 4, 16, 16), torch.zeros(1), torch.zeros(1, dtype=torch.long))


def test_unpatchify_places_patch_values_row_major():
    # DiT unpatchify: token k = (row, col) holds a p x p x C patch flattened as (p_row, p_col, channel).
    model = dit.DiT(**TINY)  # out_channels 8, patch 2, 4x4 tokens
    tokens = torch.randn(2, 16, 2 * 2 * 8)
    image = model.unpatchify(tokens)
    assert image.shape == (2, 8, 8, 8)
    for row, col, pr, pc, c in [(0, 0, 0, 0, 0), (1, 3, 0, 1, 5), (3, 2, 1, 0, 7), (2, 1, 1, 1, 2)]:
        assert image[1, c, 2 * row + pr, 2 * col + pc] == tokens[1, 4 * row + col, (pr * 2 + pc) * 8 + c]


@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_matches_timm_unfused_formula(qk_norm):
    torch.manual_seed(0)
    attn = dit.Attention(32, num_heads=4, qkv_bias=True, qk_norm=qk_norm)
    if qk_norm:  # non-trivial LayerNorm affine parameters
        torch.nn.init.normal_(attn.q_norm.weight), torch.nn.init.normal_(attn.k_norm.bias)
    x = torch.randn(2, 5, 32)
    # timm Attention, fused_attn=False branch
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 4, 8).permute(2, 0, 3, 1, 4)
    if qk_norm:
        q = torch.nn.functional.layer_norm(q, (8,), attn.q_norm.weight, attn.q_norm.bias, 1e-5)
        k = torch.nn.functional.layer_norm(k, (8,), attn.k_norm.weight, attn.k_norm.bias, 1e-5)
    weights = ((q * 8 ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 32))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected)
    keys = {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
    assert set(attn.state_dict()) == keys | ({"q_norm.weight", "q_norm.bias", "k_norm.weight", "k_norm.bias"}
                                             if qk_norm else set())


def test_pos_embed_is_the_2d_sincos_table():
    model = dit.DiT(**TINY)
    assert "pos_embed" in model.state_dict() and not model.pos_embed.requires_grad
    np.testing.assert_allclose(model.pos_embed[0].numpy(), sincos_reference(64, 4), atol=1e-6)
    np.testing.assert_allclose(dit.get_2d_sincos_pos_embed(1152, 16), sincos_reference(1152, 16), atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Config inference.

ROUND_TRIPS = [
    ("dit", dit.DiT(**TINY), {"num_heads": 4}),
    ("sit", dit.SiT(**TINY, learn_sigma=False), {"num_heads": 4, "path_type": "Linear"}),
    ("repa", dit.SiTREPA(**TINY, decoder_hidden_size=64, encoder_depth=3, z_dims=[32], projector_dim=48),
     {"num_heads": 4, "encoder_depth": 3}),
]


@pytest.mark.parametrize("family,model,args", ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS])
def test_infer_round_trip(family, model, args):
    randomize(model)
    cfg = dit.infer_transformer_config(model.state_dict(), args)
    assert cfg["family"] == family and cfg["name"] is None  # hidden 64 is no standard size
    rebuilt = dit.build_transformer(cfg).eval()
    assert shapes_of(rebuilt) == shapes_of(model)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x, t, y = inputs()
    with torch.no_grad():
        a, b = model(x, t, y), rebuilt(x, t, y)
    torch.testing.assert_close(a, b)  # same heads, same encoder_depth: same function
    assert cfg["kwargs"]["num_classes"] == 10 and cfg["kwargs"]["depth"] == 4


def test_infer_published_dit_with_training_args():
    with torch.device("meta"):
        sd = dit.DiT_models["DiT-XL/2"]().state_dict()
    cfg = dit.infer_transformer_config(sd, {"model": "DiT-XL/2", "image_size": 256, "num_classes": 1000})
    assert cfg["family"] == "dit" and cfg["name"] == "DiT-XL/2"
    kw = cfg["kwargs"]
    assert (kw["depth"], kw["hidden_size"], kw["num_heads"], kw["patch_size"]) == (28, 1152, 16, 2)
    assert (kw["input_size"], kw["num_classes"], kw["learn_sigma"]) == (32, 1000, True)
    # without args the standard head table and the null row still give the same config
    assert dit.infer_transformer_config(sd)["kwargs"] == kw
    with pytest.raises(UserError, match="latent size"):
        dit.infer_transformer_config(sd, {"image_size": 512})
    with pytest.raises(UserError, match="depth"):
        dit.infer_transformer_config(sd, {"model": "DiT-B/2"})


def test_infer_published_sit_and_repa():
    with torch.device("meta"):
        sit_sd = dit.SiT_models["SiT-B/2"]().state_dict()
        repa_sd = dit.SiTREPA_models["SiT-XL/2"](z_dims=[768]).state_dict()
    sit = dit.infer_transformer_config(sit_sd, {"model": "SiT-B/2", "path_type": "Linear", "image_size": 256})
    assert (sit["family"], sit["name"], sit["kwargs"]["num_heads"]) == ("sit", "SiT-B/2", 12)
    repa = dit.infer_transformer_config(repa_sd, {"model": "SiT-XL/2", "encoder_depth": 8, "resolution": 256})
    assert (repa["family"], repa["name"]) == ("repa", "SiT-XL/2")
    assert {k: repa["kwargs"][k] for k in ("z_dims", "projector_dim", "encoder_depth", "decoder_hidden_size")} == \
        {"z_dims": [768], "projector_dim": 2048, "encoder_depth": 8, "decoder_hidden_size": 1152}
    with torch.device("meta"):
        assert shapes_of(dit.build_transformer(repa)) == {k: tuple(v.shape) for k, v in repa_sd.items()}


def test_heads_from_qk_norm_and_unknown_hidden_size():
    model = dit.SiTREPA(**{**TINY, "num_heads": 8}, decoder_hidden_size=64, encoder_depth=2, qk_norm=True)
    assert dit.infer_transformer_config(model.state_dict())["kwargs"]["num_heads"] == 8  # 64 / head_dim 8
    with pytest.raises(UserError, match="num_heads"):
        dit.infer_transformer_config(dit.DiT(**TINY).state_dict())


def test_legacy_repa_split_stack():
    model = randomize(dit.SiTREPA(**TINY, decoder_hidden_size=64, encoder_depth=3, z_dims=[32], projector_dim=48))
    legacy = {}
    for k, v in model.state_dict().items():  # REPA's early layout: blocks 3.. stored as decoder_blocks 0..
        parts = k.split(".")
        if parts[0] == "blocks" and int(parts[1]) >= 3:
            k = ".".join(["decoder_blocks", str(int(parts[1]) - 3)] + parts[2:])
        legacy[k] = v
    cfg = dit.infer_transformer_config(legacy, {"num_heads": 4})
    assert (cfg["kwargs"]["depth"], cfg["kwargs"]["encoder_depth"]) == (4, 3)
    dit.build_transformer(cfg).load_state_dict(dit.upgrade_legacy_repa(legacy), strict=True)


def test_not_a_transformer_is_none():
    assert dit.infer_transformer_config({"map_noise.freqs": torch.zeros(8), "enc.0.weight": torch.zeros(1)}) is None
