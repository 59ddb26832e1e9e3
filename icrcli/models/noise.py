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
    "index/T": "timestep index divided by T",
    "t": "continuous time t",
    "sigma": "sigma itself (EDM's Precond wrappers)",
    "log-sigma": "ln(sigma)",
    "c-noise-edm": "ln(sigma) / 4 (EDMPrecond c_noise)",
    "c-noise-ve": "ln(sigma / 2) (VEPrecond c_noise)",
    "999t": "999 t ((M - 1) t, VPPrecond c_noise)",
}
TIME_SHAPES = ("(B,)", "scalar", "(B,1)")


def _need(kind, name, value):
    if value is None:
        raise ValueError(f"time kind {kind!r} needs {name}=")
    return value


def _time_value(kind, index, T, t, sigma):
    """(value, dtype) of one time encoding, see TIME_KINDS."""
    if kind == "index":
        i = _need(kind, "index", index)
        if abs(i - round(i)) > 1e-9:
            raise UserError(f"Time kind 'index' feeds an integer timestep but the timestep is {i:g} (t_mode "
                            f"'interp'). Use --time-input index-float, or --t-mode nearest.")
        return int(round(i)), torch.int64
    if kind == "index-float":
        return float(_need(kind, "index", index)), torch.float32
    if kind == "index/T":
        return _need(kind, "index", index) / _need(kind, "T", T), torch.float32
    if kind in ("t", "999t"):
        tt = _need(kind, "t", t)
        return (tt if kind == "t" else (VP_M - 1) * tt), torch.float32
    s = _need(kind, "sigma", sigma)
    if kind == "sigma":
        return s, torch.float32
    if s <= 0:
        raise UserError(f"Time kind {kind!r} takes the log of sigma, which is 0 here. Use --sigma > 0.")
    log_s = math.log(s)
    return {"log-sigma": log_s, "c-noise-edm": log_s / 4, "c-noise-ve": log_s + math.log(0.5)}[kind], torch.float32


def encode_time(kind, batch, device, *, index=None, T=None, t=None, sigma=None, shape="(B,)"):
    """The time input for `batch` images: a (B,), (B, 1) or 0-d tensor holding one value, see TIME_KINDS."""
    if kind not in TIME_KINDS:
        raise UserError(f"Unknown time kind {kind!r}. Choose one of: {', '.join(TIME_KINDS)}.")
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
    "edm": _SIGMA_KINDS, "ve": _SIGMA_KINDS,
    "vp": ("999t", "t") + _SIGMA_KINDS,
    "ddpm": ("index", "index-float", "index/T") + _SIGMA_KINDS,
    "flow": ("t", "999t") + _SIGMA_KINDS,
}
_X_IN = {
    "edm": "x + sigma eps", "ve": "x + sigma eps",
    "vp": "(x + sigma eps) / sqrt(1 + sigma^2), t = VPPrecond sigma_inv(sigma)",
    "ddpm": "sqrt(ab_t) x + sqrt(1 - ab_t) eps, t = the step nearest sigma, sigma_t its actual sigma",
    "flow": "(x + sigma eps) / (1 + sigma)",
}


@dataclass
class NoiseConvention:
    """How one model family wants a view at EDM noise level sigma. Build with `from_options`.

    param "vp" with a schedule behaves as "ddpm" (discrete VP); without one it is EDM's continuous VP.
    """
    param: str
    schedule: np.ndarray | None = None     # alpha_bar (T,) for discrete VP
    time_kind: str = "sigma"
    time_convention: str | None = None     # flow only: "repa" | "sit"
    t_mode: str = "nearest"                # discrete VP: "nearest" | "interp"
    time_shape: str = "(B,)"
    data_range: tuple = (-1.0, 1.0)        # the model's data range
    schedule_source: str | None = None     # provenance: the spec, or "buffer"

    def __post_init__(self):
        if self.param not in PARAMS:
            raise UserError(f"Unknown noise parametrization {self.param!r}. Choose one of: {', '.join(PARAMS)}.")
        allowed = _KINDS_FOR[self.family]
        if self.time_kind not in allowed:
            raise UserError(f"Time kind {self.time_kind!r} does not fit a {self.family!r} model. "
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

    def _plan(self, s):
        """Model-units sigma s -> (effective sigma, input scale, time values, note)."""
        fam, note = self.family, None
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
            return eff, float(vp_input_scale(eff)), dict(index=t, T=len(ab), sigma=eff), note
        t = flow_t_for_sigma(s, self.time_convention)
        return s, flow_input_scale(s), dict(t=t, sigma=s), note

    def model_inputs(self, x, eps, sigma, data_range=None):
        """x (B, ...) in the MODEL's data range, eps (B, ...) ~ N(0, I), sigma on [-1, 1] data.

        -> (x_in (B, ...), time (B,) / (B, 1) / 0-d, info). data_range (lo, hi) defaults to the
        convention's; the noise is applied in model units, sigma * (hi - lo) / 2. info (JSON-able):
        sigma, sigma_model, effective_sigma ([-1, 1] units: the ACTUAL noise of the view, differs
        from sigma only for discrete schedules), effective_sigma_model, t, input_scale, time_value.
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
        if self.family == "vp":
            d["vp"] = dict(beta_d=VP_BETA_D, beta_min=VP_BETA_MIN, M=VP_M)
        if self.family == "ddpm":
            sig = sigma_of_alpha_bar(self.schedule)
            d["t_mode"] = self.t_mode
            d["schedule"] = dict(source=self.schedule_source, T=len(self.schedule),
                                 sigma_first=float(sig[0]), sigma_last=float(sig[-1]))
        return d


_DEFAULT_SCHEDULE = "linear:1e-4:0.02:1000"  # DDPM (Ho et al. 2020), DiT and ADM


def _resolve_schedule(param, schedule_spec, schedule_buffer):
    """-> (alpha_bar or None, source). A checkpoint's buffer wins over a spec, a spec over defaults."""
    if param in ("edm", "ve", "flow"):
        if schedule_spec is not None or schedule_buffer is not None:
            raise UserError(f"A {param!r} model has no discrete schedule; --schedule applies to ddpm and vp "
                            f"models only. Drop --schedule, or pick --param ddpm.")
        return None, None
    if schedule_buffer is not None:
        return alpha_bar_from_buffer(schedule_buffer), "buffer"
    if schedule_spec is not None:
        return parse_schedule(schedule_spec), str(schedule_spec)
    if param == "ddpm":
        return parse_schedule(_DEFAULT_SCHEDULE), _DEFAULT_SCHEDULE
    return None, None  # vp without a schedule: EDM's continuous VP


def from_options(param, schedule_spec=None, schedule_buffer=None, time_kind=None, time_convention=None,
                 t_mode="nearest", data_range=(-1.0, 1.0), time_shape="(B,)"):
    """CLI options -> NoiseConvention, with each family's defaults (ddpm: linear 1e-4..0.02 x 1000, index)."""
    if param not in PARAMS:
        raise UserError(f"Unknown noise parametrization {param!r}. Choose one of: {', '.join(PARAMS)}.")
    if time_convention is not None and param != "flow":
        raise UserError(f"--time-convention applies to flow models only, but the parametrization is "
                        f"{param!r}. Drop it, or pick --param flow.")
    schedule, source = _resolve_schedule(param, schedule_spec, schedule_buffer)
    family = "ddpm" if param == "vp" and schedule is not None else param
    return NoiseConvention(param=param, schedule=schedule, time_kind=time_kind or _KINDS_FOR[family][0],
                           time_convention=time_convention, t_mode=t_mode, time_shape=time_shape,
                           data_range=tuple(float(v) for v in data_range), schedule_source=source)
