"""One noise axis for every model: the EDM/VE noise level sigma -> each model family's own inputs.

`icr extract --sigma S` always means the EDM/VE noise level on data scaled to [-1, 1]: a view is
x = a(x0) + sigma * eps (paper Sec. 3; App. C uses sigma_t = 0.29 for EDM and t = 0.2 for SiT).
Every family is the same corruption written differently (Karras et al. 2022, Sec. 2 and Table 1):

  edm / ve  x_in = x + sigma eps                       time: sigma (the Precond wrappers take sigma)
  vp        x_in = (x + sigma eps) / sqrt(1 + sigma^2)  continuous VP SDE, time (M - 1) t(sigma)
  ddpm      x_in = sqrt(ab_t) x + sqrt(1 - ab_t) eps    discrete steps; ab_t sets the ACTUAL sigma
  flow      x_in = (x + sigma eps) / (1 + sigma)        x_t = alpha_t x + sigma_t eps, alpha_t + sigma_t = 1

Data ranges: sigma lives on [-1, 1] data. A model trained on [lo, hi] data sees the same view with
noise sigma * (hi - lo) / 2 in its own units, so `NoiseConvention.model_inputs` takes x already in
the model's range and converts sigma before choosing t. "Model units" below means that range.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from icrcli.errors import UserError

PARAMS = ("edm", "ve", "vp", "ddpm", "flow")

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


def _parse_steps(spec, text):
    try:
        T = int(text)
    except ValueError:
        raise _schedule_error(spec, f"the step count {text!r} is not an integer") from None
    if T < 2:
        raise _schedule_error(spec, f"the step count must be >= 2, got {T}")
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


# ---------------------------------------------------------------------------------------------
# Time encodings: how a network is told the noise level.

TIME_KINDS = {
    "index": "integer timestep, int64 (DiT/ADM/DDPM)",
    "index-float": "timestep index as float32",
    "index/T": "timestep index divided by T (index/T:N divides by N)",
    "t": "continuous time t",
    "sigma": "sigma itself (EDM's Precond wrappers)",
    "log-sigma": "ln(sigma)",
    "c-noise-edm": "ln(sigma) / 4 (EDMPrecond c_noise)",
    "c-noise-ve": "ln(sigma / 2) (VEPrecond c_noise)",
    "999t": "999 t ((M - 1) t, VPPrecond c_noise)",
    "ve-sde": "ve-sde:SIGMA_MIN:SIGMA_MAX, t in (0, 1] with sigma(t) = SIGMA_MIN (SIGMA_MAX / SIGMA_MIN)^t "
              "(Song et al. 2021 VE SDE)",
    "ve-tutorial": "ve-tutorial:B, t in (0, 1] with sigma(t) = sqrt((B^(2t) - 1) / (2 ln B)) (Song's score-based "
                   "tutorial, B = 25)",
    "vp-sde": "vp-sde:BETA_MIN:BETA_MAX, t in (0, 1] of the VP SDE beta(t) = BETA_MIN + t (BETA_MAX - BETA_MIN) "
              "(Song et al. 2021: 0.1:20)",
}
TIME_SHAPES = ("(B,)", "scalar", "(B,1)")
# How many numbers follow the name: "ve-sde:0.01:50" (index/T takes an optional T).
_TIME_PARAMS = {"ve-sde": ("SIGMA_MIN", "SIGMA_MAX"), "ve-tutorial": ("B",), "vp-sde": ("BETA_MIN", "BETA_MAX"),
                "index/T": ("T",)}
SDE_KINDS = ("ve-sde", "ve-tutorial", "vp-sde")
# Song et al. train the SDE models on t ~ U(eps, 1) with eps = 1e-5 (score_sde, the tutorial's loss_fn): below
# sigma(eps) a model has not learned; it is conditioned on eps there.
SDE_T_MIN = 1e-5


def parse_time_kind(spec: str) -> tuple[str, tuple[float, ...]]:
    """'ve-sde:0.01:50' -> ('ve-sde', (0.01, 50.0)); 'index' -> ('index', ()). Checked."""
    name, *rest = str(spec).split(":")
    if name not in TIME_KINDS:
        raise UserError(f"Unknown time kind {spec!r} (--time-input). Choose one of: {', '.join(_kind_forms())}.")
    want = _TIME_PARAMS.get(name, ())
    optional = name == "index/T" and not rest
    if len(rest) != len(want) and not optional:
        form = ":".join((name, *want))
        raise UserError(f"--time-input {spec!r}: write it as {form} ({TIME_KINDS[name]}).")
    try:
        values = tuple(float(v) for v in rest)
    except ValueError:
        raise UserError(f"--time-input {spec!r}: the parameters {':'.join(rest)!r} are not numbers.") from None
    _check_time_params(spec, name, values)
    return name, values


def _kind_forms():
    return [":".join((k, *_TIME_PARAMS[k])) if k in SDE_KINDS else k for k in TIME_KINDS]


def _check_time_params(spec, name, v):
    ok = {"ve-sde": lambda: 0 < v[0] < v[1], "ve-tutorial": lambda: v[0] > 1, "vp-sde": lambda: 0 <= v[0] < v[1],
          "index/T": lambda: not v or (v[0] >= 1 and v[0] == int(v[0]))}.get(name, lambda: True)
    if not (all(math.isfinite(x) for x in v) and ok()):
        need = {"ve-sde": "0 < SIGMA_MIN < SIGMA_MAX", "ve-tutorial": "B > 1", "vp-sde": "0 <= BETA_MIN < BETA_MAX",
                "index/T": "T a whole number >= 1"}[name]
        raise UserError(f"--time-input {spec!r}: expected {need}.")


# Closed forms of the continuous-time SDEs, sigma in the model's units (Song et al. 2021, Sec. 3.4 and App. B).
def ve_sde_sigma(t, sigma_min, sigma_max):
    """sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
    return sigma_min * (sigma_max / sigma_min) ** np.asarray(t, dtype=np.float64)


def ve_sde_t(sigma, sigma_min, sigma_max):
    """The inverse of ve_sde_sigma: t = ln(sigma / sigma_min) / ln(sigma_max / sigma_min)."""
    return np.log(np.asarray(sigma, dtype=np.float64) / sigma_min) / math.log(sigma_max / sigma_min)


def ve_tutorial_sigma(t, b):
    """The tutorial's marginal_prob_std: sqrt((b^(2t) - 1) / (2 ln b))."""
    return np.sqrt(np.expm1(2 * np.asarray(t, dtype=np.float64) * math.log(b)) / (2 * math.log(b)))


def ve_tutorial_t(sigma, b):
    """The inverse of ve_tutorial_sigma: t = ln(1 + 2 ln(b) sigma^2) / (2 ln b)."""
    return np.log1p(2 * math.log(b) * np.asarray(sigma, dtype=np.float64) ** 2) / (2 * math.log(b))


def _sde_sigma_t(name, params):
    """(sigma(t), t(sigma)) of one SDE time input, in the model's units."""
    if name == "ve-sde":
        return (lambda t: float(ve_sde_sigma(t, *params))), (lambda s: float(ve_sde_t(s, *params)))
    if name == "ve-tutorial":
        return (lambda t: float(ve_tutorial_sigma(t, *params))), (lambda s: float(ve_tutorial_t(s, *params)))
    bmin, bmax = params  # VP SDE: sigma_edm(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), beta_d = bmax - bmin
    return ((lambda t: float(vp_sigma_of_t(t, bmax - bmin, bmin))),
            (lambda s: float(vp_t_of_sigma(s, bmax - bmin, bmin))))


def _need(kind, name, value):
    if value is None:
        raise ValueError(f"time kind {kind!r} needs {name}=")
    return value


def _time_value(kind, index, T, t, sigma):
    """(value, dtype) of one time encoding, see TIME_KINDS."""
    name, params = parse_time_kind(kind)
    if name == "index":
        i = _need(kind, "index", index)
        if abs(i - round(i)) > 1e-9:
            raise UserError(f"Time kind 'index' feeds an integer timestep but the timestep is {i:g} (t_mode "
                            f"'interp'). Use --time-input index-float, or --t-mode nearest.")
        return int(round(i)), torch.int64
    if name == "index-float":
        return float(_need(kind, "index", index)), torch.float32
    if name == "index/T":
        return _need(kind, "index", index) / (params[0] if params else _need(kind, "T", T)), torch.float32
    if name in ("t", "999t") or name in SDE_KINDS:
        tt = _need(kind, "t", t)
        return (VP_M - 1) * tt if name == "999t" else tt, torch.float32
    s = _need(kind, "sigma", sigma)
    if name == "sigma":
        return s, torch.float32
    if s <= 0:
        raise UserError(f"Time kind {kind!r} takes the log of sigma, which is 0 here. Use --sigma > 0.")
    log_s = math.log(s)
    return {"log-sigma": log_s, "c-noise-edm": log_s / 4, "c-noise-ve": log_s + math.log(0.5)}[name], torch.float32


def encode_time(kind, batch, device, *, index=None, T=None, t=None, sigma=None, shape="(B,)"):
    """The time input for `batch` images: a (B,), (B, 1) or 0-d tensor holding one value, see TIME_KINDS."""
    parse_time_kind(kind)
    if shape not in TIME_SHAPES:
        raise UserError(f"Unknown time shape {shape!r}. Choose one of: {', '.join(TIME_SHAPES)}.")
    value, dtype = _time_value(kind, index, T, t, sigma)
    if shape == "scalar":
        return torch.tensor(value, dtype=dtype, device=device)
    out = torch.full((batch,), value, dtype=dtype, device=device)
    return out[:, None] if shape == "(B,1)" else out


# ---------------------------------------------------------------------------------------------
# Data ranges.

def parse_data_range(spec):
    """'-1:1' | '0:1' | '-0.5:0.5' -> (lo, hi) floats with lo < hi."""
    parts = str(spec).strip().split(":")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        lo = hi = float("nan")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise UserError(f"Cannot read the data range {spec!r}. Write it as LO:HI with LO < HI, "
                        f"e.g. -1:1 (EDM, DiT, SiT), 0:1 or -0.5:0.5.")
    return lo, hi


def to_model_range(x01, lo, hi):
    """Images in [0, 1] -> the model's [lo, hi]."""
    return lo + (hi - lo) * x01


def to_unit(x, lo, hi):
    """The model's [lo, hi] -> [0, 1]."""
    return (x - lo) / (hi - lo)


def sigma_in_model_units(sigma, lo, hi):
    """sigma on [-1, 1] data -> the same noise on [lo, hi] data: sigma * (hi - lo) / 2 (halved for [0, 1])."""
    return sigma * (hi - lo) / 2


# ---------------------------------------------------------------------------------------------
# One convention per model.

EDM_SIGMA_FLOOR = 0.002  # EDM's sampling sigma_min: its Precond wrappers take ln(sigma), -inf at 0.

_SIGMA_KINDS = ("sigma", "log-sigma", "c-noise-edm", "c-noise-ve")
_KINDS_FOR = {  # the time kinds that make sense per family; the first is the default
    "edm": _SIGMA_KINDS, "ve": _SIGMA_KINDS + ("ve-sde", "ve-tutorial"),
    "vp": ("999t", "t") + _SIGMA_KINDS + ("vp-sde",),
    "ddpm": ("index", "index-float", "index/T") + _SIGMA_KINDS,
    "flow": ("t", "999t") + _SIGMA_KINDS,
}
_X_IN = {
    "edm": "x + sigma eps", "ve": "x + sigma eps",
    "vp": "(x + sigma eps) / sqrt(1 + sigma^2), t = VPPrecond sigma_inv(sigma)",
    "ddpm": "sqrt(ab_t) x + sqrt(1 - ab_t) eps, t = the step nearest sigma, sigma_t its actual sigma",
    "flow": "(x + sigma eps) / (1 + sigma)",
}
_SDE_FORMS = {
    "ve-sde": "sigma(t) = sigma_min (sigma_max / sigma_min)^t",
    "ve-tutorial": "sigma(t) = sqrt((B^(2t) - 1) / (2 ln B))",
    "vp-sde": "sigma(t) = sqrt(exp((beta_max - beta_min) t^2 / 2 + beta_min t) - 1), input scaled by 1/sqrt(1 + sigma^2)",
}


def implied_param(time_kind: str | None) -> str | None:
    """The parametrization an SDE time input implies (ve-sde, ve-tutorial -> ve; vp-sde -> vp), else None."""
    if not time_kind:
        return None
    name = str(time_kind).split(":")[0]
    return {"ve-sde": "ve", "ve-tutorial": "ve", "vp-sde": "vp"}.get(name)


@dataclass
class NoiseConvention:
    """How one model family wants a view at EDM noise level sigma. Build with `from_options`.

    param "vp" with a schedule behaves as "ddpm" (discrete VP); without one it is EDM's continuous VP.
    """
    param: str
    schedule: np.ndarray | None = None     # alpha_bar (T,) for discrete VP
    time_kind: str = "sigma"               # a TIME_KINDS name, with its parameters ("ve-sde:0.01:50")
    time_convention: str | None = None     # flow only: "repa" | "sit"
    t_mode: str = "nearest"                # discrete VP: "nearest" | "interp"
    time_shape: str = "(B,)"
    data_range: tuple = (-1.0, 1.0)        # the model's data range
    schedule_source: str | None = None     # provenance: the spec, "buffer", or "buffer NAME (how it was read)"
    steps: int | None = None               # T of index/T for discrete VP (default: the schedule's length)

    def __post_init__(self):
        if self.param not in PARAMS:
            raise UserError(f"Unknown noise parametrization {self.param!r}. Choose one of: {', '.join(PARAMS)}.")
        name, _ = parse_time_kind(self.time_kind)
        allowed = _KINDS_FOR[self.family]
        if name not in allowed:
            fits = next((p for p in PARAMS if name in _KINDS_FOR[p]), None)
            hint = f" ({self.time_kind} is for --param {fits} models)" if name in SDE_KINDS and fits else ""
            raise UserError(f"Time kind {self.time_kind!r} does not fit a {self.family!r} model{hint}. "
                            f"Choose one of: {', '.join(allowed)}.")
        if self.param == "flow":
            _check_convention(self.time_convention)
        if self.t_mode not in ("nearest", "interp"):
            raise UserError(f"The timestep mode must be 'nearest' or 'interp', got {self.t_mode!r}.")
        if self.time_shape not in TIME_SHAPES:
            raise UserError(f"Unknown time shape {self.time_shape!r}. Choose one of: {', '.join(TIME_SHAPES)}.")

    @property
    def family(self):
        """The param, with "vp" split into continuous "vp" and discrete "ddpm" by the schedule."""
        return "ddpm" if self.param == "vp" and self.schedule is not None else self.param

    @property
    def sde(self):
        """(name, parameters) of an SDE time input, else None."""
        name, params = parse_time_kind(self.time_kind)
        return (name, params) if name in SDE_KINDS else None

    def smallest_sigma_model(self) -> float:
        """The least noise the model was trained on, in its own units: the first step of a discrete schedule,
        sigma(1e-5) of an SDE time input; 0 for the others (they take any sigma >= 0)."""
        if self.family == "ddpm":
            return float(sigma_of_alpha_bar(self.schedule[0]))
        if self.sde:
            return _sde_sigma_t(*self.sde)[0](SDE_T_MIN)
        return 0.0

    def _plan(self, s):
        """Model-units sigma s -> (effective sigma, input scale, time values, note)."""
        fam, note = self.family, None
        if self.sde:
            sigma_of_t, t_of_sigma = _sde_sigma_t(*self.sde)
            top = sigma_of_t(1.0)
            if s > top * (1 + 1e-9):
                raise UserError(f"--sigma {s:g} (in model units) is above the largest noise level of "
                                f"--time-input {self.time_kind} ({top:.4g}, at t = 1). Choose a smaller --sigma.")
            t = t_of_sigma(s) if s > 0 else -math.inf
            if t < SDE_T_MIN:
                t = SDE_T_MIN
                note = (f"sigma below the model's smallest ({sigma_of_t(SDE_T_MIN):.4g} at t = {SDE_T_MIN:g}): "
                        f"noise added as asked, conditioned on t = {SDE_T_MIN:g}")
            scale = float(vp_input_scale(s)) if fam == "vp" else 1.0
            return s, scale, dict(t=t, sigma=s), note
        if fam in ("edm", "ve"):
            cond = s if s > 0 else EDM_SIGMA_FLOOR
            if s == 0:
                note = f"sigma = 0: clean input, conditioned on sigma = {EDM_SIGMA_FLOOR} (ln 0 is -inf)"
            return s, 1.0, dict(sigma=cond), note
        if fam == "vp":
            t = float(vp_t_of_sigma(s))
            return s, float(vp_input_scale(s)), dict(t=t, sigma=s), note
        if fam == "ddpm":
            ab = self.schedule
            t = ddpm_t_for_sigma(s, ab, self.t_mode)
            eff = ddpm_sigma_at(t, ab)
            if s < sigma_of_alpha_bar(ab[0]):
                note = f"sigma below the schedule's first step: DDPM index 0 carries sigma = {eff:.4g}"
            return eff, float(vp_input_scale(eff)), dict(index=t, T=self.steps or len(ab), sigma=eff), note
        t = flow_t_for_sigma(s, self.time_convention)
        return s, flow_input_scale(s), dict(t=t, sigma=s), note

    def at(self, sigma, data_range=None) -> dict:
        """What a view at `sigma` ([-1, 1] data) really gets, JSON-able: sigma, sigma_model, effective_sigma
        ([-1, 1] units: the ACTUAL noise of the view, differs from sigma only for discrete schedules),
        effective_sigma_model, t (step index or continuous time; None when sigma itself is fed), input_scale,
        time_kind, time_value (what the network is fed), data_range, below_smallest (sigma is under the least
        noise the model was trained on) and, where something is not as asked, a note."""
        sigma = _check_sigma(sigma)
        lo, hi = data_range if data_range is not None else self.data_range
        s = sigma_in_model_units(sigma, lo, hi)
        eff, scale, times, note = self._plan(s)
        value = float(encode_time(self.time_kind, 1, "cpu", shape="scalar", **times))
        info = dict(param=self.param, sigma=sigma, sigma_model=s, effective_sigma=eff * 2 / (hi - lo),
                    effective_sigma_model=eff, t=times.get("index", times.get("t")), input_scale=scale,
                    time_kind=self.time_kind, time_value=value, data_range=[lo, hi],
                    below_smallest=s < self.smallest_sigma_model())
        if note:
            info["note"] = note
        return info

    def model_inputs(self, x, eps, sigma, data_range=None):
        """x (B, ...) in the MODEL's data range, eps (B, ...) ~ N(0, I), sigma on [-1, 1] data.

        -> (x_in (B, ...), time (B,) / (B, 1) / 0-d, info). data_range (lo, hi) defaults to the
        convention's; the noise is applied in model units, sigma * (hi - lo) / 2. info: see `at`.
        """
        sigma = _check_sigma(sigma)
        if eps.shape != x.shape:
            raise ValueError(f"eps {tuple(eps.shape)} must have x's shape {tuple(x.shape)}")
        lo, hi = data_range if data_range is not None else self.data_range
        s = sigma_in_model_units(sigma, lo, hi)
        eff, scale, times, note = self._plan(s)
        x_in = scale * (x + eff * eps)
        time = encode_time(self.time_kind, x.shape[0], x.device, shape=self.time_shape, **times)
        info = dict(param=self.param, sigma=sigma, sigma_model=s, effective_sigma=eff * 2 / (hi - lo),
                    effective_sigma_model=eff, t=times.get("index", times.get("t")), input_scale=scale,
                    time_kind=self.time_kind, time_value=float(time.flatten()[0]), data_range=[lo, hi])
        if note:
            info["note"] = note
        return x_in, time, info

    def describe(self):
        """JSON-able provenance: the convention and, for discrete VP, a summary of its schedule."""
        d = dict(sigma_axis="EDM/VE sigma on [-1, 1] data", param=self.param, family=self.family,
                 x_in=_X_IN[self.family], time_kind=self.time_kind, time_shape=self.time_shape,
                 data_range=[float(v) for v in self.data_range])
        if self.param == "flow":
            d["time_convention"] = self.time_convention
            d["time_convention_meaning"] = FLOW_CONVENTIONS[self.time_convention]
        if self.family == "vp" and not self.sde:
            d["vp"] = dict(beta_d=VP_BETA_D, beta_min=VP_BETA_MIN, M=VP_M)
        if self.sde:
            d["sde"] = dict(form=_SDE_FORMS[self.sde[0]], params=list(self.sde[1]), t_min=SDE_T_MIN)
        if self.family == "ddpm":
            sig = sigma_of_alpha_bar(self.schedule)
            d["t_mode"] = self.t_mode
            d["schedule"] = dict(source=self.schedule_source, T=self.steps or len(self.schedule),
                                 sigma_first=float(sig[0]), sigma_last=float(sig[-1]))
            if self.steps and self.steps != len(self.schedule):
                d["schedule"]["entries"] = len(self.schedule)
        return d

    def summary(self) -> str:
        """One line for stderr: how sigma reaches the network, and where the schedule came from."""
        line = f"noise: --param {self.param}, time input {self.time_kind}"
        if self.family == "ddpm":
            n = len(self.schedule)
            steps = f"{n} entries" + (f", steps 0..{self.steps}: T = {self.steps}" if self.steps != n else "")
            line += f"; schedule {_schedule_words(self.schedule_source)} ({steps})"
        return line


def _schedule_words(source: str) -> str:
    if source == "buffer":
        return "from the checkpoint's buffer"
    if source and source.startswith("buffer "):
        return "from the checkpoint's " + source
    return source


_SCHEDULE_NEEDED = (
    "This is a discrete-time model (--param ddpm) and no noise schedule was given: none is stored in the checkpoint "
    "(icr looks for alphas_cumprod, alpha_bar, alpha_t, betas, beta_t, sqrt_alphas_cumprod, log_snr and similar "
    "names), none in the sidecar, none on the command line. A wrong schedule gives wrong features with no sign, so "
    "icr does not assume one: pass the schedule the model was trained with, e.g. --schedule linear:1e-4:0.02:1000 "
    "(DDPM), --schedule cosine:1000, or \"schedule\" in the sidecar.")


def _resolve_schedule(param, schedule_spec, schedule_buffer, buffer_name=None, beside=False):
    """-> (alpha_bar or None, source). A checkpoint's buffer wins over a spec, a spec over defaults."""
    if param in ("edm", "ve", "flow"):
        if schedule_spec is not None or schedule_buffer is not None:
            raise UserError(f"A {param!r} model has no discrete schedule; --schedule applies to ddpm and vp "
                            f"models only. Drop --schedule, or pick --param ddpm.")
        return None, None
    if schedule_buffer is not None and buffer_name is None:
        return alpha_bar_from_buffer(schedule_buffer), "buffer"
    if schedule_buffer is not None:
        ab, how = read_schedule_buffer(buffer_name, schedule_buffer)
        legacy = (not beside and buffer_name in _LEGACY_BUFFERS
                  and how in ("alpha_bar", "betas, cumulated: alpha_bar = cumprod(1 - beta)"))
        where = " beside the weights" if beside else ""
        return ab, "buffer" if legacy else f"buffer {buffer_name!r}{where}, read as {how}"
    if schedule_spec is not None:
        return parse_schedule(schedule_spec), str(schedule_spec)
    if param == "ddpm":
        raise UserError(_SCHEDULE_NEEDED)
    return None, None  # vp without a schedule: EDM's continuous VP


def from_options(param, schedule_spec=None, schedule_buffer=None, time_kind=None, time_convention=None,
                 t_mode="nearest", data_range=(-1.0, 1.0), time_shape="(B,)", schedule_buffer_name=None,
                 schedule_buffer_beside=False):
    """CLI options -> NoiseConvention, with each family's default time input (ddpm: index). A discrete (ddpm)
    model needs its schedule: a spec, or the checkpoint's buffer (schedule_buffer, named schedule_buffer_name
    when it came from a checkpoint key; see read_schedule_buffer; schedule_buffer_beside when it lay outside the
    weights taken, e.g. `alpha_t` beside `gt.*` under --key gt)."""
    if param not in PARAMS:
        raise UserError(f"Unknown noise parametrization {param!r}. Choose one of: {', '.join(PARAMS)}.")
    if time_convention is not None and param != "flow":
        raise UserError(f"--time-convention applies to flow models only, but the parametrization is "
                        f"{param!r}. Drop it, or pick --param flow.")
    sde = time_kind is not None and implied_param(time_kind) is not None
    if sde and param == "vp" and (schedule_spec is not None or schedule_buffer is not None):
        if schedule_spec is not None:
            raise UserError(f"--time-input {time_kind} is continuous time; it takes no --schedule. Drop --schedule.")
        schedule_buffer = None  # a stored discrete schedule does not apply to a continuous-time input
    schedule, source = _resolve_schedule(param, schedule_spec, schedule_buffer, schedule_buffer_name,
                                         schedule_buffer_beside)
    family = "ddpm" if param == "vp" and schedule is not None else param
    steps = None
    if schedule is not None:
        steps = steps_of_buffer(len(schedule)) if source and source.startswith("buffer") else len(schedule)
    return NoiseConvention(param=param, schedule=schedule, time_kind=time_kind or _KINDS_FOR[family][0],
                           time_convention=time_convention, t_mode=t_mode, time_shape=time_shape,
                           data_range=tuple(float(v) for v in data_range), schedule_source=source, steps=steps)
