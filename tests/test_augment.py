"""icrcli.data.augment: per-sample determinism, exact geometry, torchvision-convention colour ops, ranges."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from icrcli.data.augment import (POLICIES, apply_params, augment, describe_policy, draw_params, pad_px,
                            view_seeds)
from icrcli.errors import UserError

GEN = torch.Generator().manual_seed(0)


def _images(b=24, c=3, h=32, w=32):
    return torch.rand(b, c, h, w, generator=GEN)


def _seeds(n, view=0):
    return view_seeds(7, np.arange(n), view)


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("policy", POLICIES)
def test_output_of_a_sample_ignores_the_rest_of_the_batch(policy, c):
    x, s = _images(c=c), _seeds(24)
    full = augment(x, s, policy)
    perm = np.random.default_rng(0).permutation(24)[:9]
    assert torch.equal(augment(x[perm], s[perm], policy), full[perm])  # other order, other size
    for i in (0, 13):
        assert torch.equal(augment(x[i:i + 1], s[i:i + 1], policy), full[i:i + 1])  # alone
    other = torch.cat([_images(3, c), x[5:6]])  # among different images
    assert torch.equal(augment(other, np.r_[_seeds(3, view=9), s[5]], policy)[3], full[5])
    assert torch.equal(augment(x, torch.from_numpy(s), policy), full)  # torch seeds are fine too


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["paper", "simclr"])
def test_large_lone_image_matches_itself_in_a_batch(policy):
    # torch splits a single-output reduction over 65k pixels across threads; a lone image must
    # still come out bitwise as it does inside a batch (the contrast mean is the risk)
    x, s = _images(3, 3, 256, 256), _seeds(3)
    full = augment(x, s, policy)
    for i in range(3):
        assert torch.equal(augment(x[i:i + 1], s[i:i + 1], policy), full[i:i + 1])


@pytest.mark.parametrize("policy", [p for p in POLICIES if p != "none"])
def test_different_seeds_give_different_views(policy):
    x = _images(32)
    a, b = augment(x, _seeds(32, 0), policy), augment(x, _seeds(32, 1), policy)
    differ = (a != b).flatten(1).any(1)
    assert differ.sum() >= 28  # crop alone repeats with chance 1/81 per sample
    assert not torch.equal(a, x)


def test_none_is_the_identity():
    x = _images()
    assert torch.equal(augment(x, _seeds(24), "none"), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("policy", POLICIES)
def test_shape_dtype_and_range_are_kept(policy, dtype):
    x = _images(8, 3, 24, 40).to(dtype)  # non-square
    y = augment(x, _seeds(8), policy)
    assert y.shape == x.shape and y.dtype == dtype
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.slow
def test_batch_of_256_cifar_images_runs():
    # speed sanity (not timed): one batched pass, no per-image Python work on the tensors
    y = augment(_images(256), _seeds(256), "paper")
    assert y.shape == (256, 3, 32, 32)


# ----------------------------------------------------------------------------- geometry

def test_flip_is_an_exact_mirror_and_centred_crop_is_identity():
    x = _images(4)
    p = pad_px(32)
    params = {"crop_top": np.full(4, p), "crop_left": np.full(4, p), "flip": np.array([1, 0, 1, 0], bool)}
    y = apply_params(x, params, "crop-flip")
    assert torch.equal(y[[0, 2]], x[[0, 2]].flip(-1))
    assert torch.equal(y[[1, 3]], x[[1, 3]])


def test_crop_offset_is_a_zero_padded_shift():
    x = _images(2, 1, 28, 28)
    assert pad_px(32) == 4 and pad_px(28) == 4 and pad_px(256) == 32 and pad_px(8) == 1
    y = apply_params(x, {"crop_top": np.array([0, 8]), "crop_left": np.array([8, 3])}, "crop")
    xn = x.numpy()
    padded = np.pad(xn, ((0, 0), (0, 0), (4, 4), (4, 4)))  # independent: numpy zero padding
    np.testing.assert_array_equal(y[0].numpy(), padded[0, :, 0:28, 8:36])
    np.testing.assert_array_equal(y[1].numpy(), padded[1, :, 8:36, 3:31])


def test_crop_flip_views_are_shifted_possibly_mirrored_copies():
    x = _images(6, 3, 16, 16)
    y = augment(x, _seeds(6), "crop-flip").numpy()
    p = pad_px(16)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (p, p), (p, p)))
    for b in range(6):
        candidates = [win[..., ::-1] if flip else win
                      for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                      for win in [padded[b, :, dy:dy + 16, dx:dx + 16]] for flip in (0, 1)]
        assert any(np.array_equal(y[b], c) for c in candidates)


def test_resized_crop_matches_interpolating_the_crop():
    x = _images(3, 3, 20, 24)
    box = {"crop_top": np.array([2, 0, 5]), "crop_left": np.array([3, 0, 11]),
           "crop_h": np.array([9, 20, 6]), "crop_w": np.array([14, 24, 13])}
    from icrcli.data.augment import _apply_resized_crop, _RESIZED_CROP
    y = _apply_resized_crop(x, box, _RESIZED_CROP)
    for b in range(3):
        t, l, h, w = (int(box[k][b]) for k in ("crop_top", "crop_left", "crop_h", "crop_w"))
        ref = F.interpolate(x[b:b + 1, :, t:t + h, l:l + w], size=(20, 24), mode="bilinear", align_corners=False)
        torch.testing.assert_close(y[b:b + 1], ref, atol=2e-6, rtol=0)


# ----------------------------------------------------------------------------- colour

def _jitter_params(n, b=1.0, c=1.0, s=1.0, h=0.0, on=True):
    return {"crop_top": np.full(n, 4), "crop_left": np.full(n, 4), "flip": np.zeros(n, bool),
            "jitter": np.full(n, on), "brightness": np.full(n, b), "contrast": np.full(n, c),
            "saturation": np.full(n, s), "hue": np.full(n, h), "order": np.tile(np.arange(4), (n, 1))}


def _luma(x: np.ndarray) -> np.ndarray:
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def test_brightness_contrast_saturation_follow_torchvision_formulas():
    x = _images(4)
    xn = x.double().numpy()
    y = apply_params(x, _jitter_params(4, b=1.3), "paper").numpy()
    np.testing.assert_allclose(y, np.clip(1.3 * xn, 0, 1), atol=1e-5)
    y = apply_params(x, _jitter_params(4, c=0.6), "paper").numpy()
    mean = _luma(xn).mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(y, np.clip(0.6 * xn + 0.4 * mean, 0, 1), atol=1e-5)
    y = apply_params(x, _jitter_params(4, s=0.0), "paper").numpy()
    np.testing.assert_allclose(y, np.repeat(_luma(xn), 3, axis=1), atol=1e-5)


def test_hue_rotates_by_a_fraction_of_a_turn():
    red = torch.zeros(2, 3, 32, 32)
    red[:, 0] = 1.0
    y = apply_params(red, _jitter_params(2, h=0.5), "paper")
    torch.testing.assert_close(y[:, :, 4:28, 4:28], torch.tensor([0.0, 1.0, 1.0]).view(1, 3, 1, 1).expand(2, 3, 24, 24),
                               atol=1e-5, rtol=0)  # red -> cyan
    y = apply_params(red, _jitter_params(2, h=1 / 3), "paper")
    torch.testing.assert_close(y[:, :, 10, 10], torch.tensor([[0.0, 1.0, 0.0]] * 2), atol=1e-5, rtol=0)  # -> green


def test_grey_images_get_only_brightness_and_contrast():
    x = _images(4, 1)
    # saturation 0 and hue 0.5 would change a colour image; on grey they must be skipped exactly
    p = _jitter_params(4, s=0.0, h=0.5)
    assert torch.equal(apply_params(x, p, "paper"), x)
    y = apply_params(x, _jitter_params(4, b=0.7, c=1.2, s=0.0, h=0.5), "paper").numpy()
    xn = x.double().numpy()
    bright = np.clip(0.7 * xn, 0, 1)
    ref = np.clip(1.2 * bright - 0.2 * bright.mean(axis=(1, 2, 3), keepdims=True), 0, 1)
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_jitter_off_leaves_the_image_alone():
    x = _images(3)
    assert torch.equal(apply_params(x, _jitter_params(3, b=0.1, s=0.0, h=0.4, on=False), "paper"), x)


def test_simclr_grayscale_gives_equal_channels():
    x = _images(40)
    params = draw_params(_seeds(40), "simclr", 32, 32)
    y = apply_params(x, params, "simclr")
    grey = params["gray"]
    assert grey.any() and not grey.all()
    assert torch.equal(y[grey][:, 0], y[grey][:, 1]) and torch.equal(y[grey][:, 0], y[grey][:, 2])


# ----------------------------------------------------------------------------- parameter statistics

N = 4000


def _rate_ok(flags, p):
    return abs(flags.mean() - p) < 4 * np.sqrt(p * (1 - p) / len(flags))


def test_paper_parameters_follow_the_documented_ranges():
    spec = {op["op"]: op for op in describe_policy("paper")["ops"]}
    jit = spec["color_jitter"]
    # SimCLR's CIFAR-10 strength s=0.5: 0.8s = 0.4 for brightness/contrast/saturation, 0.2s = 0.1 hue
    assert jit["brightness"] == [0.6, 1.4] and jit["saturation"] == [0.6, 1.4] and jit["hue"] == [-0.1, 0.1]
    assert spec["hflip"]["p"] == 0.5 and jit["p"] == 0.8
    p = draw_params(view_seeds(1, np.arange(N), 0), "paper", 32, 32)
    assert _rate_ok(p["flip"], 0.5) and _rate_ok(p["jitter"], 0.8)
    for name in ("brightness", "contrast", "saturation", "hue"):
        lo, hi = jit[name]
        v = p[name]
        assert v.min() >= lo and v.max() <= hi
        assert v.min() < lo + 0.01 * (hi - lo) and v.max() > hi - 0.01 * (hi - lo)  # the whole range is used
        assert abs(v.mean() - (lo + hi) / 2) < 4 * (hi - lo) / np.sqrt(12 * N)
    for k in ("crop_top", "crop_left"):
        counts = np.bincount(p[k], minlength=9)
        assert len(counts) == 9 and counts.min() > N / 9 * 0.75  # offsets 0..8 = shifts -4..4, uniform
    assert (np.sort(p["order"], axis=1) == np.arange(4)).all()
    assert len({tuple(o) for o in p["order"]}) == 24  # all orders occur


def test_simclr_parameters_follow_the_documented_ranges():
    spec = {op["op"]: op for op in describe_policy("simclr")["ops"]}
    assert spec["resized_crop"]["scale"] == [0.08, 1.0] and spec["grayscale"]["p"] == 0.2
    assert spec["color_jitter"]["brightness"] == [0.2, 1.8] and spec["color_jitter"]["hue"] == [-0.2, 0.2]
    p = draw_params(view_seeds(2, np.arange(N), 0), "simclr", 64, 64)
    assert _rate_ok(p["flip"], 0.5) and _rate_ok(p["jitter"], 0.8) and _rate_ok(p["gray"], 0.2)
    area = p["crop_h"] * p["crop_w"] / 64 ** 2
    aspect = p["crop_w"] / p["crop_h"]
    # rounding h and w to integers moves area and aspect a little past the nominal bounds
    assert area.min() > 0.06 and area.max() <= 1 and area.min() < 0.1 and area.max() > 0.95
    assert aspect.min() > 0.7 and aspect.max() < 1.45
    assert (p["crop_top"] >= 0).all() and (p["crop_top"] + p["crop_h"] <= 64).all()
    assert (p["crop_left"] >= 0).all() and (p["crop_left"] + p["crop_w"] <= 64).all()


# ----------------------------------------------------------------------------- seeds and API

def test_view_seeds():
    idx = np.arange(10000)
    a = view_seeds(3, idx, 0)
    assert a.dtype == np.int64 and (a >= 0).all()
    perm = np.random.default_rng(0).permutation(10000)
    np.testing.assert_array_equal(view_seeds(3, idx[perm], 0), a[perm])  # per element
    np.testing.assert_array_equal(view_seeds(3, idx[17:18], 0), a[17:18])
    every = np.concatenate([a, view_seeds(3, idx, 1), view_seeds(3, idx, 2), view_seeds(4, idx, 0)])
    assert len(np.unique(every)) == len(every)
    assert a.max() > 2 ** 62  # uses the full 63 bits


def test_describe_policy_and_unknown_names():
    for name in POLICIES:
        d = describe_policy(name)
        assert d["policy"] == name and json.loads(json.dumps(d)) == d
    assert describe_policy("none")["ops"] == []
    assert describe_policy("paper")["ops"][0]["fill"] == 0.0
    with pytest.raises(UserError, match="unknown augmentation policy 'heavy'.*paper, crop, crop-flip, simclr, digits, none"):
        augment(_images(1), _seeds(1), "heavy")


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 images but 3 seeds"):
        augment(_images(2), _seeds(3), "crop")
    with pytest.raises(ValueError, match="1- or 3-channel"):
        augment(_images(2, 4), _seeds(2), "paper")
    assert augment(_images(2, 4), _seeds(2), "crop-flip").shape == (2, 4, 32, 32)  # geometry takes any C
    with pytest.raises(ValueError, match="non-negative"):
        augment(_images(1), np.array([-1]), "crop")


# ----------------------------------------------------------------------------------------------------------
# digits: small rotations, shifts and zooms (issue 18), against exact rotations and shifts.

def _affine(angle, sx, sy, zoom=1.0):
    return {"angle": np.array([angle], float), "shift_x": np.array([sx], float), "shift_y": np.array([sy], float),
            "zoom": np.array([zoom], float)}


@pytest.mark.parametrize("h,w", [(9, 9), (8, 12)])
def test_digits_affine_against_exact_rotations_and_shifts(h, w):
    x = torch.rand(1, 1, h, w)
    if h == w:  # 90 degrees counter-clockwise is torch.rot90 (first towards second spatial axis)
        y = apply_params(x, _affine(90, 0, 0), "digits")
        torch.testing.assert_close(y, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    y = apply_params(x, _affine(0, 2, -1), "digits")  # 2 px right, 1 px up, zero fill
    want = torch.zeros_like(x)
    want[..., : h - 1, 2:] = x[..., 1:, : w - 2]
    torch.testing.assert_close(y, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(apply_params(x, _affine(0, 0, 0), "digits"), x, atol=1e-6, rtol=0)
    # a zoom of 2 about the centre: the centre pixel stays, a pixel one step away reads half a step away
    big = apply_params(x, _affine(0, 0, 0, 2.0), "digits")
    assert big.shape == x.shape


def test_digits_never_flips_and_takes_its_strengths():
    assert all(o["op"] != "hflip" for o in describe_policy("digits")["ops"])
    d = describe_policy("digits:rotate=15,translate=0.05,zoom=0")
    (op,) = d["ops"]
    assert (op["degrees"], op["translate"], op["zoom"]) == (15.0, 0.05, [1.0, 1.0])
    x = torch.rand(4, 1, 12, 12)
    flat = augment(x, np.arange(4), "digits:rotate=0,translate=0,zoom=0")
    torch.testing.assert_close(flat, x, atol=1e-6, rtol=0)
    views = augment(x, np.arange(4), "digits")
    assert not torch.allclose(views, x)
