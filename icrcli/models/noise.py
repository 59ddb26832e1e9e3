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

This module holds the conventions (one NoiseConvention per model, from_options) and the data ranges; the
schedules (sigma <-> each parametrization's time) are in schedules.py, the time inputs in time_inputs.py.
"""

import math
from dataclasses import dataclass

import numpy as np

from icrcli.errors import UserError
# The schedules and time inputs are modules of their own; noise.X stays the one name callers use for them.
from icrcli.models.schedules import (  # noqa: F401
    _LEGACY_BUFFERS, BUFFER_NAMES, FLOW_CONVENTIONS, SCHEDULE_FORMS, VP_BETA_D, VP_BETA_MIN, VP_M,
    _check_convention, _check_sigma, alpha_bar_from_buffer, ddpm_sigma_at, ddpm_t_for_sigma, find_schedule_buffer,
    flow_input_scale, flow_sigma_for_t, flow_t_for_sigma, parse_schedule, read_schedule_buffer, sigma_of_alpha_bar,
    steps_of_buffer, vp_input_scale, vp_sigma_of_t, vp_t_of_sigma,
)
from icrcli.models.time_inputs import (  # noqa: F401
    SDE_KINDS, SDE_T_MIN, TIME_KINDS, TIME_SHAPES, _sde_sigma_t, encode_time, parse_time_kind, ve_sde_sigma,
    ve_sde_t, ve_tutorial_sigma, ve_tutorial_t,
)

from icrcli.models.options import PARAMS  # noqa: E402  (declared with the --param option)


# ---------------------------------------------------------------------------------------------
# Data ranges.

def parse_data_range(spec):
    """'-1:1' | '0:1' | '-0.5:0.5' -> (lo, hi) floats with lo < hi."""
    parts = str(spec).strip().split(":")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        lo = hi = float("nan")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and max(abs(lo), abs(hi)) <= 1e6):
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
