"""Noise schedules: the EDM/VE sigma <-> each parametrization's own time, and the discrete schedules behind it.

Discrete VP (DDPM) schedules from a spec (linear, cosine, scaled-linear, betas) or from a buffer a checkpoint holds
(alphas_cumprod, betas, alpha_t, ...); the continuous VP SDE of EDM's VPPrecond; the linear interpolants of flow
matching. Sigma is always the EDM/VE noise level in the model's units (noise.py converts from [-1, 1] data).
"""

import math

import numpy as np
import torch

from icrcli.errors import UserError

# ---------------------------------------------------------------------------------------------
# Discrete VP (DDPM) schedules. Each returns alpha_bar (T,) float64, alpha_bar_t = prod_{s<=t} (1 - beta_s).

SCHEDULE_FORMS = (
    "linear:T (DiT/ADM named 'linear': betas 1e-4..0.02 scaled by 1000/T)",
    "linear:BETA_START:BETA_END:T (np.linspace(BETA_START, BETA_END, T), e.g. linear:1e-4:0.02:1000)",
    "cosine:T (Nichol & Dhariwal 2021 squaredcos_cap_v2, s = 0.008, beta <= 0.999)",
    "scaled-linear:BETA_START:BETA_END:T (Stable Diffusion, e.g. scaled-linear:0.00085:0.012:1000)",
)


def _schedule_error(spec, why):
    forms = "; ".join(SCHEDULE_FORMS)
    return UserError(f"Cannot read the noise schedule {spec!r}: {why}. Write it as one of: {forms}.")


# DiT diffusion/gaussian_diffusion.py get_named_beta_schedule("linear") (from ADM/IDDPM).
def _linear_betas(start, end, T):
    return np.linspace(start, end, T, dtype=np.float64)


# Nichol & Dhariwal 2021 Eq. 17; DiT/IDDPM betas_for_alpha_bar with max_beta = 0.999.
def _cosine_betas(T, s=0.008, max_beta=0.999):
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return np.array([min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)])


# diffusers DDPMScheduler "scaled_linear" (LDM/Stable Diffusion): linear in sqrt(beta).
def _scaled_linear_betas(start, end, T):
    return np.linspace(start ** 0.5, end ** 0.5, T, dtype=np.float64) ** 2


MAX_STEPS = 1_000_000   # discrete schedules train with 1000 (DDPM) to a few thousand steps


def _parse_steps(spec, text):
    try:
        T = int(text)
    except ValueError:
        raise _schedule_error(spec, f"the step count {text!r} is not an integer") from None
    if not 2 <= T <= MAX_STEPS:     # a schedule is an array of T floats: 10**12 would never be made
        raise _schedule_error(spec, f"the step count must lie in 2..{MAX_STEPS}, got {T}")
    return T


def _parse_betas(spec, texts):
    try:
        b = [float(v) for v in texts]
    except ValueError:
        raise _schedule_error(spec, f"the betas {':'.join(texts)!r} are not numbers") from None
    if not all(0 < v < 1 for v in b):
        raise _schedule_error(spec, f"betas must lie in (0, 1), got {b}")
    return b


def parse_schedule(spec):
    """'linear:1e-4:0.02:1000' | 'linear:1000' | 'cosine:1000' | 'scaled-linear:0.00085:0.012:1000' -> alpha_bar (T,)."""
    parts = str(spec).strip().split(":")
    name = parts[0].lower().replace("_", "-")
    if name == "squaredcos-cap-v2":
        name = "cosine"
    if name == "linear" and len(parts) == 2:
        T = _parse_steps(spec, parts[1])
        betas = _linear_betas(1000 / T * 1e-4, 1000 / T * 0.02, T)
    elif name in ("linear", "scaled-linear") and len(parts) == 4:
        start, end = _parse_betas(spec, parts[1:3])
        T = _parse_steps(spec, parts[3])
        betas = (_linear_betas if name == "linear" else _scaled_linear_betas)(start, end, T)
    elif name == "cosine" and len(parts) == 2:
        betas = _cosine_betas(_parse_steps(spec, parts[1]))
    else:
        raise _schedule_error(spec, "unknown form")
    if not np.all((betas > 0) & (betas < 1)):
        raise _schedule_error(spec, "some betas fall outside (0, 1) (1000/T scaling with small T?)")
    return np.cumprod(1.0 - betas)


def alpha_bar_from_buffer(t):
    """A checkpoint's `alphas_cumprod` (T,) or `betas` (T,) -> alpha_bar (T,) float64, validated.

    Told apart by the first entry: alpha_bar_0 = 1 - beta_0 is near 1, beta_0 is small.
    """
    a = t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64)
    if a.ndim != 1 or a.size < 2 or not np.all(np.isfinite(a)):
        raise UserError(f"The schedule buffer must be a finite 1-D array of at least 2 entries (alphas_cumprod "
                        f"or betas); got shape {a.shape}. Pass the checkpoint's alphas_cumprod or betas buffer.")
    ab = a if a[0] >= 0.5 else np.cumprod(1.0 - a)
    if not (np.all((ab > 0) & (ab <= 1)) and np.all(np.diff(ab) <= 0) and ab[-1] < ab[0]):
        raise UserError("The schedule buffer is neither alphas_cumprod (decreasing, in (0, 1]) nor betas "
                        "(in (0, 1)). Pass the checkpoint's alphas_cumprod or betas buffer, or use --schedule.")
    return ab


# Names under which training code stores its discrete schedule, in order of preference, by what they hold.
# A key matches when its last dotted part is the name ("diffusion.alphas_cumprod"); the bare "alpha"/"beta"/
# "alphas" only at the top level, where they cannot be a layer's parameter.
BUFFER_NAMES = {
    "alpha_bar": ("alphas_cumprod", "alphas_bar", "alpha_bar", "alphabar", "alphabar_t", "alpha_bar_t",
                  "alphas_hat", "alpha_hat", "alphas_cumprod_t"),
    "sqrt_alpha_bar": ("sqrt_alphas_cumprod", "sqrt_alpha_bar", "sqrt_alphas_bar", "sqrtab"),
    "sqrt_one_minus_alpha_bar": ("sqrt_one_minus_alphas_cumprod", "sqrt_one_minus_alpha_bar", "sqrtmab"),
    "log_snr": ("log_snr", "logsnr", "log_snrs"),
    "alpha": ("alpha_t", "alphas_t", "alphas", "alpha"),      # per-step or cumulative: told from the values
    "beta": ("betas", "beta_t", "betas_t", "beta"),
}
_TOP_LEVEL_ONLY = ("alpha", "alphas", "beta")
_LEGACY_BUFFERS = ("alphas_cumprod", "betas")  # read before icr knew other names: their records stay as they were


def find_schedule_buffer(state_dict) -> tuple[str, object] | None:
    """(key, 1-D tensor) of the schedule a checkpoint stores, the first of BUFFER_NAMES found; None if none."""
    for names in BUFFER_NAMES.values():
        for name in names:
            for key, v in state_dict.items():
                last = key.rsplit(".", 1)[-1]
                if (key == name or (last == name and name not in _TOP_LEVEL_ONLY)) and _vector(v):
                    return key, v
    return None


def _vector(v) -> bool:
    return isinstance(v, torch.Tensor) and v.ndim == 1 and v.numel() >= 2 and v.is_floating_point()


def _buffer_kind(key: str) -> str:
    last = key.rsplit(".", 1)[-1]
    return next(kind for kind, names in BUFFER_NAMES.items() if last in names)


def read_schedule_buffer(key: str, values) -> tuple[np.ndarray, str]:
    """A checkpoint's schedule buffer named `key` -> (alpha_bar (n,) float64, how it was read, in words).

    An "alpha" buffer is cumulative (alpha_bar) when it falls below 0.5, per-step (alpha_t = 1 - beta_t, near 1
    throughout) otherwise: per-step alphas of any schedule in use stay above 0.9, alpha_bar ends near 0."""
    a = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    kind = _buffer_kind(key)
    if not (a.ndim == 1 and a.size >= 2 and np.all(np.isfinite(a))):
        raise UserError(f"The checkpoint's schedule buffer {key!r} must be a finite 1-D array of at least 2 "
                        f"entries; it has shape {a.shape}. Pass --schedule to give the schedule instead.")
    if kind == "alpha_bar":
        ab, how = a, "alpha_bar"
    elif kind == "sqrt_alpha_bar":
        ab, how = a ** 2, "sqrt(alpha_bar), squared"
    elif kind == "sqrt_one_minus_alpha_bar":
        ab, how = 1 - a ** 2, "sqrt(1 - alpha_bar): alpha_bar = 1 - its square"
    elif kind == "log_snr":
        ab, how = 1 / (1 + np.exp(-a)), "log SNR: alpha_bar = sigmoid(log SNR)"
    elif kind == "alpha" and a.min() < 0.5:
        ab, how = a, f"alpha_bar (cumulative: it falls to {a.min():.3g})"
    elif kind == "alpha":
        ab, how = np.cumprod(a), f"per-step alphas (all >= {a.min():.3g}), cumulated: alpha_bar = cumprod(alpha)"
    else:
        ab, how = np.cumprod(1 - a), "betas, cumulated: alpha_bar = cumprod(1 - beta)"
    if not (np.all((ab > 0) & (ab <= 1)) and np.all(np.diff(ab) <= 0) and ab[-1] < ab[0]):
        raise UserError(f"The checkpoint's buffer {key!r}, read as {how}, is not a noise schedule (alpha_bar must "
                        "decrease within (0, 1]). Pass --schedule to give the schedule instead.")
    return ab, how


def steps_of_buffer(n: int) -> int:
    """T for `index/T` from a buffer of n entries: training code that stores T + 1 entries (steps 0..T, e.g.
    1001 for T = 1000) divides by T; a length one above a multiple of 10 is read that way."""
    return n - 1 if n > 11 and (n - 1) % 10 == 0 else n


def sigma_of_alpha_bar(ab):
    """The EDM sigma of a VP marginal: x_t / sqrt(ab) = x + sigma eps with sigma = sqrt((1 - ab) / ab)."""
    ab = np.asarray(ab, dtype=np.float64)
    return np.sqrt((1.0 - ab) / ab)


def vp_input_scale(sigma):
    """sqrt(alpha_bar) = 1 / sqrt(1 + sigma^2): the VP input is the VE input times this."""
    return 1.0 / np.sqrt(1.0 + np.asarray(sigma, dtype=np.float64) ** 2)


def _check_sigma(sigma):
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise UserError(f"--sigma must be a finite number >= 0 (the EDM/VE noise level on [-1, 1] data); "
                        f"got {sigma!r}. Use 0 for augmentation-only views.")
    return value


def _log_sigmas(alpha_bar):
    # The floor keeps log finite when a buffer starts at alpha_bar = 1 (sigma 0 at index 0).
    return np.log(np.maximum(sigma_of_alpha_bar(alpha_bar), np.finfo(np.float64).tiny))


def ddpm_t_for_sigma(sigma, alpha_bar, mode="nearest"):
    """sigma -> a timestep of the discrete schedule alpha_bar (T,), as a float.

    "nearest": the index whose sigma is closest in log space; "interp": a fractional index,
    log sigma interpolated linearly between steps. Below the schedule's first sigma (sigma = 0
    included) it returns 0: index 0 still carries noise, read it with `ddpm_sigma_at(0, ...)`.
    """
    sigma = _check_sigma(sigma)
    if mode not in ("nearest", "interp"):
        raise UserError(f"The timestep mode must be 'nearest' or 'interp', got {mode!r}.")
    sigmas = sigma_of_alpha_bar(alpha_bar)
    if sigma > sigmas[-1] * (1 + 1e-9):
        raise UserError(f"--sigma {sigma:g} (in model units) is above the largest noise level of this "
                        f"{len(sigmas)}-step schedule ({sigmas[-1]:.4g}). Choose a smaller --sigma.")
    if sigma <= sigmas[0]:
        return 0.0
    log_sigma, log_sigmas = math.log(sigma), _log_sigmas(alpha_bar)
    if mode == "nearest":
        return float(np.argmin(np.abs(log_sigmas - log_sigma)))
    return float(np.interp(log_sigma, log_sigmas, np.arange(len(log_sigmas))))


def ddpm_sigma_at(t, alpha_bar):
    """The actual sigma at (possibly fractional) timestep t of alpha_bar (T,): log sigma interpolated."""
    return float(np.exp(np.interp(t, np.arange(len(alpha_bar)), _log_sigmas(alpha_bar))))


# ---------------------------------------------------------------------------------------------
# Continuous VP: NVlabs/edm training/networks.py VPPrecond (Song et al. 2021 VP SDE; EDM Table 1).

VP_BETA_D, VP_BETA_MIN, VP_M = 19.9, 0.1, 1000


def vp_sigma_of_t(t, beta_d=VP_BETA_D, beta_min=VP_BETA_MIN):
    """sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), t in [0, 1]."""
    t = np.asarray(t, dtype=np.float64)
    return np.sqrt(np.expm1(0.5 * beta_d * t ** 2 + beta_min * t))


def vp_t_of_sigma(sigma, beta_d=VP_BETA_D, beta_min=VP_BETA_MIN):
    """t(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d, the inverse of sigma(t)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    return (np.sqrt(beta_min ** 2 + 2 * beta_d * np.log1p(sigma ** 2)) - beta_min) / beta_d


# ---------------------------------------------------------------------------------------------
# Linear interpolants (flow matching): x_t = alpha_t x + sigma_t eps with alpha_t + sigma_t = 1.
# Dividing by alpha_t gives x + (sigma_t / alpha_t) eps, so the EDM sigma is sigma_t / alpha_t.

FLOW_CONVENTIONS = {
    # sihyun-yu/REPA loss.py SILoss "linear": alpha_t = 1 - t, sigma_t = t.
    "repa": "t = sigma / (1 + sigma), t = 0 is clean (REPA's training code: x_t = (1 - t) x + t eps)",
    # willisma/SiT transport/path.py ICPlan: alpha_t = t (data), sigma_t = 1 - t (noise).
    "sit": "t = 1 / (1 + sigma), t = 1 is clean (the original SiT code: x_t = t x + (1 - t) eps)",
}


def _check_convention(convention):
    if convention not in FLOW_CONVENTIONS:
        lines = "; ".join(f"'{k}': {v}" for k, v in FLOW_CONVENTIONS.items())
        raise UserError(f"A flow model needs its time convention, got {convention!r}. The two in use: {lines}. "
                        f"Pass --time-convention repa|sit.")


def flow_t_for_sigma(sigma, convention):
    """EDM sigma -> interpolant time t in [0, 1] under `convention` ('repa' or 'sit')."""
    sigma = _check_sigma(sigma)
    _check_convention(convention)
    return sigma / (1 + sigma) if convention == "repa" else 1 / (1 + sigma)


def flow_sigma_for_t(t, convention):
    """Interpolant time t -> EDM sigma = sigma_t / alpha_t; the inverse of `flow_t_for_sigma`."""
    _check_convention(convention)
    noise = t if convention == "repa" else 1 - t
    if not 0 <= noise < 1:
        raise UserError(f"Flow time t = {t} is outside the range with finite noise for convention "
                        f"{convention!r} ({FLOW_CONVENTIONS[convention]}). Pick t strictly inside (0, 1).")
    return noise / (1 - noise)


def flow_input_scale(sigma):
    """alpha_t = 1 / (1 + sigma): the flow input is the VE input times this."""
    return 1.0 / (1.0 + sigma)
