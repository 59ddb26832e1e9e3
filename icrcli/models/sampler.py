"""Drawing samples from any Denoiser: the deterministic EDM Heun sampler through the same noise adapters as
`icr extract` (Karras et al. 2022, Alg. 1 without churn; sigma_min 0.002, sigma_max 80, rho 7, 18 steps).

The sampler works on the EDM axis: x_sigma = x + sigma * eps on data in [-1, 1]. Every network is wrapped as
D(x_sigma; sigma), the denoised estimate: x_sigma goes to the model's own range and input (NoiseConvention.
model_inputs), and its output becomes D according to what it predicts (PREDICTIONS). With s the noise level and
c the input scale in model units (x_in = c (x_m + s eps)), and x_m = x_in / c the noisy image in model units:

  denoised, x0   D = out
  eps            D = x_m - s out
  score          D = x_m + c s^2 out          (the score of x_in's marginal: eps = -c s score)
  v (vp, ddpm)   D = c x_in - c s out          (v = alpha eps - sigma_t x0, alpha = c, sigma_t = c s)
  v (flow)       D = x_in - t out (repa), x_in + (1 - t) out (sit): the velocity of the linear interpolant

Discrete schedules (ddpm) see only their own noise levels: the sampling levels are snapped to the nearest
level of the schedule (EDM's round_sigma) and those above its largest are clipped to it, so every step
evaluates the network at exactly the noise it was trained for.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from icrcli.data.augment import view_seeds
from icrcli.data.rng import normal
from icrcli.errors import UserError
from icrcli.models import noise, registry

PREDICTIONS = ("eps", "x0", "v", "score", "denoised")
SIGMA_MIN, SIGMA_MAX, RHO, STEPS = 0.002, 80.0, 7.0, 18   # EDM's defaults (Karras et al. 2022, Table 1)
_NOISE_STREAM = 0x5A3D_1E5   # seeds of the initial noise: a stream apart from the views' and the labels'
_LABEL_STREAM = 0x1AB_E15

Denoise = Callable[[torch.Tensor, float], torch.Tensor]


def edm_sigmas(steps: int = STEPS, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
               rho: float = RHO) -> np.ndarray:
    """(steps + 1,) float64 descending: Karras et al. 2022 Eq. 5, then a final 0."""
    if steps < 1:
        raise UserError(f"--steps {steps}: the sampler needs at least one step.")
    if not 0 < sigma_min < sigma_max:
        raise UserError(f"sigma_min {sigma_min} and sigma_max {sigma_max}: need 0 < sigma_min < sigma_max.")
    i = np.arange(steps, dtype=np.float64)
    ramp = i / max(steps - 1, 1)
    s = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return np.append(s, 0.0)


def round_sigmas(sigmas: np.ndarray, conv, data_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Sampling levels the model can take: for a discrete schedule each level > 0 becomes the nearest of the
    schedule's own ([-1, 1] units; the largest is the schedule's top), repeated levels dropped. Others as given."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if conv.family != "ddpm":
        return sigmas
    lo, hi = data_range
    a = (hi - lo) / 2
    top = float(noise.sigma_of_alpha_bar(conv.schedule[-1]))
    out = []
    for s in sigmas:
        if s > 0:
            t = noise.ddpm_t_for_sigma(min(s * a, top), conv.schedule, conv.t_mode)
            s = noise.ddpm_sigma_at(t, conv.schedule) / a
        if not out or s < out[-1]:
            out.append(float(s))
    return np.array(out)


def _tensor_output(out) -> torch.Tensor:
    """The prediction tensor out of what a network returns (diffusers' output objects, tuples)."""
    if hasattr(out, "sample"):
        out = out.sample
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not torch.is_tensor(out):
        raise UserError(f"the network returned {type(out).__name__}, not a tensor; sampling needs its prediction.")
    return out


def to_denoised(out: torch.Tensor, x_m: torch.Tensor, x_in: torch.Tensor, info: dict, prediction: str,
                conv) -> torch.Tensor:
    """The denoised estimate in model units from the network's output; see the module docstring."""
    s, c = info["effective_sigma_model"], info["input_scale"]
    if out.shape != x_m.shape and out.shape[1] == 2 * x_m.shape[1]:
        out = out[:, : x_m.shape[1]]   # DiT/ADM with learned variance: [prediction, variance] on channels
    if out.shape != x_m.shape:
        raise UserError(f"the network's output has shape {tuple(out.shape)}, its input {tuple(x_m.shape)}; "
                        "sampling needs a prediction of the input's shape.")
    if prediction in ("denoised", "x0"):
        return out
    if prediction == "eps":
        return x_m - s * out
    if prediction == "score":
        return x_m + c * s * s * out
    if prediction == "v":
        if conv.family in ("vp", "ddpm"):
            return c * x_in - c * s * out
        if conv.family == "flow":
            t = info["t"]
            return x_in - t * out if conv.time_convention == "repa" else x_in + (1 - t) * out
        raise UserError(f"--prediction v has no meaning for a {conv.family!r} model (v is defined for VP and flow "
                        "models). Pass --prediction denoised, eps, x0 or score.")
    raise UserError(f"--prediction {prediction!r}: choose one of {', '.join(PREDICTIONS)}.")


def make_denoise(call: Callable, conv, prediction: str, data_range: tuple[float, float] = (-1.0, 1.0),
                 y: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> Denoise:
    """D(x; sigma) on the EDM axis for a network called as call(x_in, t, y).

    x (B, C, H, W) float64 on [-1, 1] data with noise sigma (a float) -> the denoised estimate, float64, same
    axis. The network runs in `dtype` on the model's own range `data_range` (lo, hi)."""
    if prediction not in PREDICTIONS:
        raise UserError(f"--prediction {prediction!r}: choose one of {', '.join(PREDICTIONS)}.")
    lo, hi = data_range
    a, mid = (hi - lo) / 2, (hi + lo) / 2

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        x_m = mid + a * x                         # the same noisy image in model units (noise a * sigma)
        x_in, t, info = conv.model_inputs(x_m.to(dtype), torch.zeros_like(x_m, dtype=dtype), float(sigma),
                                          (lo, hi))
        out = _tensor_output(call(x_in, t, y)).to(torch.float64)
        d_m = to_denoised(out, x_m, x_in.to(torch.float64), info, prediction, conv)
        return (d_m - mid) / a

    return denoise


def heun_sample(denoise: Denoise, latents: torch.Tensor, sigmas: np.ndarray,
                progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Karras et al. 2022 Alg. 1 with S_churn = 0 (deterministic): the probability-flow ODE
    dx/dsigma = (x - D(x; sigma)) / sigma from x = sigma_0 * latents down to sigma = 0, Heun's method with an
    Euler last step. latents (B, ...) standard normal -> samples (B, ...) float64 on [-1, 1] data."""
    x = latents.to(torch.float64) * float(sigmas[0])
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        s, s_next = float(s), float(s_next)
        d = (x - denoise(x, s)) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:                            # second-order correction
            d_next = (x_next - denoise(x_next, s_next)) / s_next
            x_next = x + (s_next - s) * 0.5 * (d + d_next)
        x = x_next
        if progress:
            progress(1)
    return x


def sample_latents(seed: int, indices: np.ndarray, shape: tuple) -> torch.Tensor:
    """(len(indices), *shape) standard normals, each sample's from its own (seed, index) stream: the same
    sample whatever batch it is drawn in."""
    return torch.from_numpy(normal(view_seeds(seed ^ _NOISE_STREAM, indices, 0), tuple(shape)))


def sample_classes(seed: int, indices: np.ndarray, n_classes: int) -> np.ndarray:
    """(len(indices),) int64 class labels uniform over 0..n_classes-1, one per (seed, index)."""
    from icrcli.data.rng import uniform
    u = uniform(view_seeds(seed ^ _LABEL_STREAM, indices, 0), 1)[:, 0]
    return np.minimum((u * n_classes).astype(np.int64), n_classes - 1)


def class_count(den) -> int:
    """How many classes a Denoiser is conditioned on (0: unconditional or unknown): its family's answer."""
    return registry.adapter_of(den).class_count(den)


def class_input(den, classes: np.ndarray, device) -> torch.Tensor:
    """The class input of a batch with the given labels, as its family takes it (EDM: one-hot vectors, else
    int64 indices)."""
    return registry.adapter_of(den).class_input(den, classes, device)


def prediction_for(den, given: str | None) -> str:
    """--prediction if given, else the family's default; UserError when neither says."""
    pred = given or registry.adapter_of(den).default_prediction(den)
    if pred is None:
        raise UserError(f"sampling needs to know what this {den.family} network predicts: pass --prediction "
                        f"{'|'.join(PREDICTIONS)} (or set \"prediction\" in the sidecar).")
    if pred not in PREDICTIONS:
        raise UserError(f"--prediction {pred!r}: choose one of {', '.join(PREDICTIONS)}.")
    return pred
