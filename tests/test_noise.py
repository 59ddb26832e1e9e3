"""icrcli.models.noise against closed forms, the originals' formulas (DiT, IDDPM, diffusers, EDM, REPA, SiT)."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from icrcli.models import noise
from icrcli.errors import UserError

DDPM = "linear:1e-4:0.02:1000"  # the schedule DDPM, ADM and DiT train with; icr assumes none (issue 9)


def _alpha_bar_product(betas, t):
    """alpha_bar_t = prod_{s <= t} (1 - beta_s), in plain Python (independent of np.cumprod)."""
    return math.prod(1.0 - b for b in betas[: t + 1])


def _dit_linear_betas(T):
    """DiT get_named_beta_schedule('linear', T), written out: 1000/T-scaled 1e-4..0.02, evenly spaced."""
    scale = 1000 / T
    lo, hi = scale * 1e-4, scale * 0.02
    return [lo + (hi - lo) * i / (T - 1) for i in range(T)]


# ------------------------------------------------------------------------------- schedules

def test_dit_linear_step_121_has_sigma_0416():
    ab = _alpha_bar_product(_dit_linear_betas(1000), 121)
    assert round(math.sqrt((1 - ab) / ab), 3) == 0.416
    schedule = noise.parse_schedule("linear:1e-4:0.02:1000")
    assert round(float(noise.sigma_of_alpha_bar(schedule[121])), 3) == 0.416
    assert noise.ddpm_t_for_sigma(0.416, schedule) == 121


def test_linear_specs_match_dit_named_schedule():
    for T in (1000, 250):
        betas = _dit_linear_betas(T)
        expected = [_alpha_bar_product(betas, t) for t in (0, T // 2, T - 1)]
        got = noise.parse_schedule(f"linear:{T}")
        assert got.shape == (T,) and got.dtype == np.float64
        np.testing.assert_allclose(got[[0, T // 2, T - 1]], expected, rtol=1e-12)
    np.testing.assert_array_equal(noise.parse_schedule("linear:1000"), noise.parse_schedule("linear:1e-4:0.02:1000"))


def test_cosine_schedule_matches_closed_form():
    T, s = 1000, 0.008
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    ab = noise.parse_schedule(f"cosine:{T}")
    # Telescoping product: alpha_bar_i = f((i + 1) / T) / f(0) wherever beta was not clipped at 0.999.
    closed = np.array([f((i + 1) / T) / f(0) for i in range(T - 1)])
    np.testing.assert_allclose(ab[:-1], closed, rtol=1e-9)
    assert 1 - ab[-1] / ab[-2] == pytest.approx(0.999)  # f(1) = 0: the last beta is the cap
    np.testing.assert_array_equal(noise.parse_schedule("squaredcos_cap_v2:1000"), ab)


def test_scaled_linear_is_linear_in_sqrt_beta():
    ab = noise.parse_schedule("scaled-linear:0.00085:0.012:3")
    betas = 1 - ab / np.concatenate([[1.0], ab[:-1]])
    mid = ((math.sqrt(0.00085) + math.sqrt(0.012)) / 2) ** 2
    np.testing.assert_allclose(betas, [0.00085, mid, 0.012], rtol=1e-12)


def test_buffer_betas_or_alphas_cumprod():
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - betas)
    np.testing.assert_allclose(noise.alpha_bar_from_buffer(torch.tensor(betas)), ab, rtol=1e-12)
    np.testing.assert_allclose(noise.alpha_bar_from_buffer(torch.tensor(ab, dtype=torch.float32)), ab, rtol=1e-6)
    bumped = ab.copy()
    bumped[500] = ab[400]  # alpha_bar must not increase
    with pytest.raises(UserError, match="neither alphas_cumprod .* nor betas"):
        noise.alpha_bar_from_buffer(bumped)
    with pytest.raises(UserError, match="neither alphas_cumprod .* nor betas"):
        noise.alpha_bar_from_buffer(np.r_[0.1, 0.5, 1.5])  # a beta above 1
    with pytest.raises(UserError, match="1-D"):
        noise.alpha_bar_from_buffer(np.ones((2, 3)))


# ------------------------------------------------------------------------------- discrete t

def test_nearest_and_interp_round_trips():
    ab = noise.parse_schedule("linear:1000")
    sig = np.sqrt((1 - ab) / ab)
    for i in (1, 17, 121, 500, 998):
        assert noise.ddpm_t_for_sigma(sig[i], ab) == i
        # Just off a step's sigma (in log space, towards its lower neighbour) still picks that step.
        assert noise.ddpm_t_for_sigma(sig[i] * (sig[i - 1] / sig[i]) ** 0.4, ab) == i
    for sigma in (0.05, 0.29, 0.416, 3.0, 80.0):
        t = noise.ddpm_t_for_sigma(sigma, ab, mode="interp")
        assert noise.ddpm_sigma_at(t, ab) == pytest.approx(sigma, rel=1e-12)
        lo = int(t)
        assert sig[lo] <= sigma <= sig[lo + 1]


def test_sigma_zero_is_step_zero_with_its_actual_sigma():
    ab = noise.parse_schedule("linear:1000")
    assert noise.ddpm_t_for_sigma(0.0, ab) == 0
    conv = noise.from_options("ddpm", schedule_spec=DDPM)
    x = torch.zeros(2, 3, 4, 4)
    _, time, info = conv.model_inputs(x, torch.randn_like(x), 0.0)
    assert time.tolist() == [0, 0]
    assert info["effective_sigma"] == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=1e-12)
    assert "index 0" in info["note"]


def test_sigma_above_schedule_is_an_error():
    with pytest.raises(UserError, match="above the largest noise level .* 1000-step schedule"):
        noise.ddpm_t_for_sigma(200.0, noise.parse_schedule("linear:1000"))


# ------------------------------------------------------------------------------- continuous VP, flow

def test_vp_sigma_matches_edm_formula_and_inverts():
    beta_d, beta_min = 19.9, 0.1
    for t in (1e-5, 0.1, 0.5, 1.0):
        assert noise.vp_sigma_of_t(t) == pytest.approx(math.sqrt(math.exp(0.5 * beta_d * t * t + beta_min * t) - 1))
        assert noise.vp_t_of_sigma(noise.vp_sigma_of_t(t)) == pytest.approx(t, rel=1e-9)


def test_vp_time_is_vpprecond_c_noise():
    from icrcli.models.archs.edm import VPPrecond
    self_ = SimpleNamespace(beta_d=19.9, beta_min=0.1)
    x = torch.zeros(1, 3, 4, 4)
    _, time, info = noise.from_options("vp").model_inputs(x, torch.randn_like(x), 0.29)
    c_noise = 999 * float(VPPrecond.sigma_inv(self_, torch.tensor(0.29, dtype=torch.float64)))
    assert float(time[0]) == pytest.approx(c_noise, rel=1e-6)
    assert info["input_scale"] == pytest.approx(1 / math.sqrt(1 + 0.29 ** 2))


def test_flow_conventions_sit_t02_is_sigma_025():
    assert noise.flow_t_for_sigma(0.25, "repa") == pytest.approx(0.2)
    assert noise.flow_t_for_sigma(0.25, "sit") == pytest.approx(0.8)
    assert noise.flow_sigma_for_t(0.2, "repa") == pytest.approx(0.25)
    assert noise.flow_sigma_for_t(0.8, "sit") == pytest.approx(0.25)
    for sigma in (0.0, 0.1, 1.0, 7.5):
        for conv in ("repa", "sit"):
            assert noise.flow_sigma_for_t(noise.flow_t_for_sigma(sigma, conv), conv) == pytest.approx(sigma)


def test_flow_inputs_match_repa_and_sit_interpolants():
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    x_repa, t_repa, _ = noise.from_options("flow", time_convention="repa").model_inputs(x, eps, 0.25)
    x_sit, t_sit, _ = noise.from_options("flow", time_convention="sit").model_inputs(x, eps, 0.25)
    torch.testing.assert_close(x_repa, (1 - 0.2) * x + 0.2 * eps)  # REPA: alpha_t = 1 - t, sigma_t = t
    torch.testing.assert_close(x_sit, 0.8 * x + (1 - 0.8) * eps)   # SiT ICPlan: alpha_t = t, sigma_t = 1 - t
    assert t_repa.tolist() == pytest.approx([0.2] * 3) and t_sit.tolist() == pytest.approx([0.8] * 3)


def test_flow_without_convention_explains_both():
    with pytest.raises(UserError, match=r"repa.*sit.*--time-convention repa\|sit"):
        noise.from_options("flow")


# ------------------------------------------------------------------------------- model inputs

def test_ddpm_input_is_sqrt_alpha_bar_mix():
    betas = _dit_linear_betas(1000)
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    x_in, time, info = noise.from_options("ddpm", schedule_spec=DDPM).model_inputs(x, eps, 0.416)
    ab = _alpha_bar_product(betas, 121)
    torch.testing.assert_close(x_in, math.sqrt(ab) * x + math.sqrt(1 - ab) * eps)
    assert time.dtype == torch.int64 and time.tolist() == [121, 121]
    assert info["effective_sigma"] == pytest.approx(math.sqrt((1 - ab) / ab), rel=1e-10)
    assert info["input_scale"] == pytest.approx(math.sqrt(ab), rel=1e-12)
    assert noise.vp_input_scale(noise.sigma_of_alpha_bar(ab)) == pytest.approx(math.sqrt(ab))


@pytest.mark.parametrize("param, options, variance", [
    ("edm", {}, lambda s: s ** 2),
    ("ve", {}, lambda s: s ** 2),
    ("vp", {}, lambda s: s ** 2 / (1 + s ** 2)),
    ("ddpm", {"t_mode": "interp", "time_kind": "index-float", "schedule_spec": "linear:1e-4:0.02:1000"}, lambda s: s ** 2 / (1 + s ** 2)),
    ("flow", {"time_convention": "repa"}, lambda s: (s / (1 + s)) ** 2),
])
def test_noise_only_input_has_expected_variance(param, options, variance):
    g = torch.Generator().manual_seed(2)
    x = torch.zeros(16, 3, 64, 64)
    eps = torch.randn(x.shape, generator=g)
    for sigma in (0.29, 2.0):
        x_in, _, _ = noise.from_options(param, **options).model_inputs(x, eps, sigma)
        assert float(x_in.var()) == pytest.approx(variance(sigma), rel=0.02)


def test_zero_one_data_halves_the_noise():
    g = torch.Generator().manual_seed(3)
    x_pm1 = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(x_pm1.shape, generator=g)
    conv = noise.from_options("edm", data_range=(0.0, 1.0))
    x01 = noise.to_model_range(noise.to_unit(x_pm1, -1, 1), 0, 1)
    x_in, time, info = conv.model_inputs(x01, eps, 0.5)
    # The [-1, 1] view, carried to [0, 1]: same image, noise sigma / 2.
    torch.testing.assert_close(x_in, noise.to_model_range(noise.to_unit(x_pm1 + 0.5 * eps, -1, 1), 0, 1))
    assert info["sigma_model"] == 0.25 and info["effective_sigma"] == 0.5
    assert float(time[0]) == pytest.approx(0.25)
    assert noise.sigma_in_model_units(0.5, -0.5, 0.5) == 0.25
    var = float(conv.model_inputs(torch.zeros(8, 3, 64, 64), torch.randn(8, 3, 64, 64, generator=g), 0.5)[0].var())
    assert var == pytest.approx(0.25 ** 2, rel=0.03)


def test_zero_one_ddpm_picks_the_step_of_half_sigma():
    ab = noise.parse_schedule("linear:1000")
    x = torch.zeros(1, 3, 4, 4)
    _, time, _ = noise.from_options("ddpm", schedule_spec=DDPM).model_inputs(x, torch.randn_like(x), 0.832, data_range=(0, 1))
    assert int(time[0]) == noise.ddpm_t_for_sigma(0.416, ab) == 121


def test_edm_sigma_zero_is_the_clean_image_at_a_finite_condition():
    x = torch.randn(2, 3, 4, 4)
    x_in, time, info = noise.from_options("edm").model_inputs(x, torch.randn_like(x), 0)
    torch.testing.assert_close(x_in, x)
    assert torch.isfinite(time.log()).all() and info["effective_sigma"] == 0 and "sigma = 0" in info["note"]


def test_negative_sigma_is_a_user_error():
    x = torch.zeros(1, 3, 4, 4)
    for bad in (-0.1, float("nan"), float("inf"), "abc"):
        with pytest.raises(UserError, match=r"--sigma must be a finite number >= 0"):
            noise.from_options("edm").model_inputs(x, x, bad)


# ------------------------------------------------------------------------------- time encodings

def test_time_encodings():
    enc = lambda kind, **kw: noise.encode_time(kind, 3, "cpu", **kw)
    assert enc("index", index=121).dtype == torch.int64
    assert enc("index-float", index=121).dtype == torch.float32
    assert enc("index/T", index=250, T=1000).tolist() == pytest.approx([0.25] * 3)
    assert enc("999t", t=0.5).tolist() == pytest.approx([499.5] * 3)
    assert float(enc("c-noise-edm", sigma=0.29)[0]) == pytest.approx(math.log(0.29) / 4)
    assert float(enc("c-noise-ve", sigma=0.29)[0]) == pytest.approx(math.log(0.145))
    assert float(enc("log-sigma", sigma=2.0)[0]) == pytest.approx(math.log(2.0))
    assert enc("t", t=0.2, shape="scalar").shape == ()
    assert enc("t", t=0.2, shape="(B,1)").shape == (3, 1)
    with pytest.raises(UserError, match="index-float"):
        enc("index", index=121.4)
    with pytest.raises(UserError, match="log of sigma"):
        enc("c-noise-edm", sigma=0.0)
    with pytest.raises(UserError, match="Unknown time kind 'tau'"):
        enc("tau", t=0.2)


# ------------------------------------------------------------------------------- options, ranges, provenance

def test_from_options_defaults_and_buffer_wins():
    ddpm = noise.from_options("ddpm", schedule_spec=DDPM)
    assert ddpm.time_kind == "index" and ddpm.schedule_source == "linear:1e-4:0.02:1000"
    with pytest.raises(UserError, match=r"no noise schedule was given.*icr does not assume one: pass the schedule"):
        noise.from_options("ddpm")  # no silent default (issue 9, item 4)
    assert noise.from_options("edm").time_kind == "sigma"
    assert noise.from_options("vp").family == "vp" and noise.from_options("vp").time_kind == "999t"
    assert noise.from_options("flow", time_convention="sit").time_kind == "t"
    cos = noise.parse_schedule("cosine:1000")
    conv = noise.from_options("ddpm", schedule_spec="linear:1000", schedule_buffer=torch.tensor(cos))
    np.testing.assert_allclose(conv.schedule, cos)
    assert conv.schedule_source == "buffer"
    vp = noise.from_options("vp", schedule_spec="cosine:1000")
    assert vp.family == "ddpm" and vp.time_kind == "index"


def test_option_errors_name_the_fix():
    with pytest.raises(UserError, match=r"Choose one of: edm, ve, vp, ddpm, flow"):
        noise.from_options("score-sde")
    with pytest.raises(UserError, match="--schedule applies to ddpm and vp"):
        noise.from_options("edm", schedule_spec="linear:1000")
    with pytest.raises(UserError, match="--time-convention applies to flow models only"):
        noise.from_options("ddpm", time_convention="repa")
    with pytest.raises(UserError, match="does not fit a 'edm' model"):
        noise.from_options("edm", time_kind="index")
    with pytest.raises(UserError, match=r"Write it as one of: linear:T .*cosine:T .*scaled-linear"):
        noise.parse_schedule("sigmoid:1000")
    with pytest.raises(UserError, match="not an integer"):
        noise.parse_schedule("cosine:1e3x")


def test_data_ranges():
    assert noise.parse_data_range("-1:1") == (-1.0, 1.0)
    assert noise.parse_data_range("0:1") == (0.0, 1.0)
    assert noise.parse_data_range("-0.5:0.5") == (-0.5, 0.5)
    for bad in ("1:0", "0-1", "a:b", "0:1:2"):
        with pytest.raises(UserError, match="LO:HI"):
            noise.parse_data_range(bad)
    x01 = torch.rand(5)
    torch.testing.assert_close(noise.to_unit(noise.to_model_range(x01, -0.5, 0.5), -0.5, 0.5), x01)
    assert noise.to_model_range(torch.tensor([0.0, 1.0]), -1, 1).tolist() == [-1.0, 1.0]


def test_describe_is_json_and_info_is_json():
    for conv in (noise.from_options("ddpm", schedule_spec=DDPM), noise.from_options("flow", time_convention="repa"),
                 noise.from_options("vp"), noise.from_options("edm", data_range=(0, 1))):
        d = json.loads(json.dumps(conv.describe()))
        assert d["param"] == conv.param and d["sigma_axis"].startswith("EDM/VE sigma")
        x = torch.zeros(1, 3, 4, 4)
        json.dumps(conv.model_inputs(x, torch.randn_like(x), 0.29)[2])
    assert noise.from_options("ddpm", schedule_spec=DDPM).describe()["schedule"]["T"] == 1000
    assert "t = 0 is clean" in noise.from_options("flow", time_convention="repa").describe()["time_convention_meaning"]
