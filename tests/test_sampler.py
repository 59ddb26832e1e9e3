"""The EDM Heun sampler over every noise convention (icrcli.models.sampler).

The data are N(mu, s^2 I), whose exact denoiser is known: D(x; sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu), and
whose probability-flow ODE is linear, so the exact sample of a starting point x_T = sigma_max z is
mu + s (x_T - mu) / sqrt(s^2 + sigma_max^2). The same function is posed as an EDM denoiser, an eps-predicting
DDPM network (discrete schedule, integer timesteps), a continuous VP network, flow-matching velocity networks
in both time conventions, a score network and an x0 network on [0, 1] data. Every wrapping gives the EDM
denoiser's samples to float32 rounding on the same noise levels, and the samples have the data's mean and
variance.
"""

import math

import numpy as np
import pytest
import torch

from icrcli.models import noise, sampler

MU, S = 0.3, 0.5
SHAPE = (2, 3, 3)


def exact_d(x, sigma):
    """The Gaussian data's denoiser, in float64, on the [-1, 1] EDM axis."""
    return MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)


def as_sigma(t, b):
    """A per-sample time tensor -> a float64 (B, 1, 1, 1) column."""
    return t.to(torch.float64).reshape(-1, 1, 1, 1).expand(b, 1, 1, 1)


class EDMNet(torch.nn.Module):
    """call(x, sigma, y) -> D, as EDM's Precond wrappers."""
    def forward(self, x, sigma, y=None):
        return exact_d(x.double(), as_sigma(sigma, len(x))).float()


class DDPMEps(torch.nn.Module):
    """call(x_t, index, y) -> eps, on alpha_bar of a discrete schedule; x_t = sqrt(ab)(x + sigma eps)."""
    def __init__(self, alpha_bar):
        super().__init__()
        self.ab = torch.as_tensor(alpha_bar)

    def forward(self, x, t, y=None):
        ab = self.ab[t.long()].reshape(-1, 1, 1, 1)
        sigma = torch.sqrt((1 - ab) / ab)
        xs = x.double() / torch.sqrt(ab)
        return ((xs - exact_d(xs, sigma)) / sigma).float()


class VPEps(torch.nn.Module):
    """call(x_t, 999 t, y) -> eps under EDM's continuous VP SDE."""
    def forward(self, x, t, y=None):
        sigma = torch.as_tensor(noise.vp_sigma_of_t(as_sigma(t, len(x)).numpy() / 999))
        xs = x.double() * torch.sqrt(1 + sigma ** 2)
        return ((xs - exact_d(xs, sigma)) / sigma).float()


class FlowV(torch.nn.Module):
    """call(x_t, t, y) -> velocity of the linear interpolant, REPA (t = 0 clean) or SiT (t = 1 clean)."""
    def __init__(self, convention):
        super().__init__()
        self.convention = convention

    def forward(self, x, t, y=None):
        t = as_sigma(t, len(x))
        sigma = t / (1 - t) if self.convention == "repa" else (1 - t) / t
        xs = x.double() * (1 + sigma)
        d = exact_d(xs, sigma)
        eps = (xs - d) / sigma
        return (eps - d if self.convention == "repa" else d - eps).float()


class EDMScore(torch.nn.Module):
    def forward(self, x, sigma, y=None):
        sigma = as_sigma(sigma, len(x))
        return ((exact_d(x.double(), sigma) - x.double()) / sigma ** 2).float()


class UnitX0(torch.nn.Module):
    """An x0-predicting EDM-style network on [0, 1] data: sigma and x in its own units (half the [-1, 1] ones)."""
    def forward(self, x, sigma, y=None):
        sigma = as_sigma(sigma, len(x))
        return ((exact_d(x.double() * 2 - 1, sigma * 2) + 1) / 2).float()


def run(net, conv, prediction, sigmas, n=64, seed=0, data_range=(-1.0, 1.0)):
    call = lambda x, t, y: net(x, t, y)
    den = sampler.make_denoise(call, conv, prediction, data_range)
    z = sampler.sample_latents(seed, np.arange(n), SHAPE)
    return sampler.heun_sample(den, z, sigmas), z


def edm_conv():
    return noise.from_options("edm", time_kind="sigma")


def test_edm_sigmas_follow_karras_eq5():
    s = sampler.edm_sigmas(18)
    assert len(s) == 19 and s[-1] == 0 and s[0] == 80 and s[-2] == pytest.approx(0.002)
    i = 7
    ref = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert s[i] == pytest.approx(ref, rel=1e-12)
    assert np.all(np.diff(s) < 0)


def heun_gain(sigmas):
    """The Gaussian's ODE is linear in x - mu, dx/dsigma = k(sigma) (x - mu) with k = sigma / (s^2 + sigma^2), so
    every Heun step multiplies x - mu by a number: their product, computed here independently of the sampler."""
    k = lambda s: s / (S ** 2 + s ** 2)
    g = 1.0
    for s, t in zip(sigmas[:-1], sigmas[1:]):
        euler = 1 + (t - s) * k(s)
        g *= euler if t == 0 else 1 + (t - s) / 2 * (k(s) + k(t) * euler)
    return g


def test_edm_sampler_is_heun_on_the_gaussian_ode():
    sig = sampler.edm_sigmas(18)
    x, z = run(EDMNet(), edm_conv(), "denoised", sig, n=64)
    heun = MU + heun_gain(sig) * (80 * z.double() - MU)
    np.testing.assert_allclose(x.numpy(), heun.numpy(), atol=1e-5)
    # 18 steps widen this narrow Gaussian by 5.5% against the exact flow (a known truncation error of the
    # sampler, shrinking as 1/steps^2: 0.4% at 64 steps)
    exact = MU + S * (80 * z.double() - MU) / math.sqrt(S ** 2 + 80 ** 2)
    np.testing.assert_allclose((x - MU).numpy(), (exact - MU).numpy() * 1.0552, rtol=1e-3, atol=1e-4)


def test_edm_sampler_reproduces_the_gaussian():
    x, _ = run(EDMNet(), edm_conv(), "denoised", sampler.edm_sigmas(64), n=1024)
    v = x.numpy().ravel()
    assert abs(v.mean() - MU) < 4 * S / math.sqrt(v.size)
    assert v.var() == pytest.approx(S ** 2, rel=0.04)     # 1% sampling error, 0.7% truncation at 64 steps


@pytest.mark.parametrize("make,param,kw,pred", [
    (VPEps, "vp", {}, "eps"),
    (lambda: FlowV("repa"), "flow", {"time_convention": "repa"}, "v"),
    (lambda: FlowV("sit"), "flow", {"time_convention": "sit"}, "v"),
    (EDMScore, "edm", {"time_kind": "sigma"}, "score"),
])
def test_every_prediction_gives_the_edm_samples(make, param, kw, pred):
    sig = sampler.edm_sigmas(8)
    ref, _ = run(EDMNet(), edm_conv(), "denoised", sig, n=16)
    got, _ = run(make(), noise.from_options(param, **kw), pred, sig, n=16)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=2e-4)


def test_data_range_is_respected():
    sig = sampler.edm_sigmas(8)
    ref, _ = run(EDMNet(), edm_conv(), "denoised", sig, n=16)
    got, _ = run(UnitX0(), edm_conv(), "x0", sig, n=16, data_range=(0.0, 1.0))
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-5)


def test_ddpm_eps_network_matches_edm_denoiser():
    """A discrete schedule sees only its own 1000 levels: on the snapped levels the DDPM network and the EDM
    denoiser wrapped around the same function must give the same samples (float32 rounding); on EDM's own
    levels both sample the Gaussian, differing only by where the ODE is evaluated."""
    conv = noise.from_options("ddpm", schedule_spec="linear:1e-4:0.02:1000")
    snapped = sampler.round_sigmas(sampler.edm_sigmas(18), conv)
    sig_ddpm = noise.sigma_of_alpha_bar(conv.schedule)
    assert abs(snapped[0] - 80) < 0.5 and snapped[-1] == 0 and snapped[-2] == pytest.approx(sig_ddpm[0])
    assert all(np.isclose(sig_ddpm, s).any() for s in snapped[:-1])
    ddpm, _ = run(DDPMEps(conv.schedule), conv, "eps", snapped, n=64)
    edm, _ = run(EDMNet(), edm_conv(), "denoised", snapped, n=64)
    np.testing.assert_allclose(ddpm.numpy(), edm.numpy(), atol=2e-4)
    edm18, _ = run(EDMNet(), edm_conv(), "denoised", sampler.edm_sigmas(18), n=64)
    np.testing.assert_allclose(ddpm.numpy(), edm18.numpy(), atol=0.02)
    v = ddpm.numpy().ravel()
    assert abs(v.mean() - MU) < 0.03 and v.var() == pytest.approx(S ** 2, rel=0.1)


def test_samples_do_not_depend_on_the_batch():
    a = sampler.sample_latents(3, np.arange(10), SHAPE)
    b = torch.cat([sampler.sample_latents(3, np.arange(0, 4), SHAPE), sampler.sample_latents(3, np.arange(4, 10),
                                                                                              SHAPE)])
    assert torch.equal(a, b)
    assert not torch.equal(a, sampler.sample_latents(4, np.arange(10), SHAPE))
    c = sampler.sample_classes(0, np.arange(4000), 10)
    assert set(c) == set(range(10)) and np.bincount(c).min() > 330


def test_v_on_an_edm_model_is_a_user_error():
    from icrcli.errors import UserError
    den = sampler.make_denoise(lambda x, t, y: x, edm_conv(), "v")
    with pytest.raises(UserError, match="no meaning"):
        den(torch.zeros(1, *SHAPE, dtype=torch.float64), 1.0)


def test_class_inputs_per_family():
    from types import SimpleNamespace
    edm = SimpleNamespace(family="edm", description={"config": {"label_dim": 4}})
    dit = SimpleNamespace(family="dit", description={"config": {"num_classes": 10}})
    user = SimpleNamespace(family="user", description={"config": {}})
    assert (sampler.class_count(edm), sampler.class_count(dit), sampler.class_count(user)) == (4, 10, 0)
    y = sampler.class_input(edm, np.array([2, 0]), "cpu")
    assert torch.equal(y, torch.tensor([[0, 0, 1, 0], [1, 0, 0, 0]], dtype=torch.float32))
    assert torch.equal(sampler.class_input(dit, np.array([7]), "cpu"), torch.tensor([7]))
    assert sampler.prediction_for(dit, None) == "eps" and sampler.prediction_for(edm, "x0") == "x0"
    from icrcli.errors import UserError
    with pytest.raises(UserError, match="--prediction"):
        sampler.prediction_for(user, None)
