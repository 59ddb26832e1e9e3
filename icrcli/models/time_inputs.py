"""Time inputs: how a network is told the noise level (an index, t, sigma, log-sigma, EDM's c_noise, the SDE
tutorials' t, ...), parsed from --time-input and encoded as the tensor it takes (--time-shape)."""

import math

import numpy as np
import torch

from icrcli.errors import UserError
from icrcli.models.schedules import VP_M, vp_sigma_of_t, vp_t_of_sigma

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
    if not (all(math.isfinite(x) and abs(x) <= 1e12 for x in v) and ok()):
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
