"""The noise levels of a sweep: `--sigmas SPEC` parsed into an ascending list of sigma (EDM units on [-1, 1]).

Forms: `start:stop:num` geometric (both ends included), `lin:start:stop:num` linear, `0,0.1,0.5` a list,
`edmN` the N EDM/Karras sampling levels (Karras et al. 2022, Eq. 5: sigma_min 0.002, sigma_max 80, rho 7),
optionally cut as `edmN:LO..HI` (either bound may be left out). The default is the paper's grid: 0 plus the
EDM-18 levels up to about 3.3 (App. C), eleven levels. Levels are rounded to six significant digits.
"""

from __future__ import annotations

import math
import re

import numpy as np

from icrcli.errors import UserError

EDM_SIGMA_MIN, EDM_SIGMA_MAX, EDM_RHO = 0.002, 80.0, 7.0
DEFAULT_SPEC = "0,edm18:..3.3"
MAX_LEVELS = 1000
_FORMS = ("start:stop:num (geometric, e.g. 0.1:10:5), lin:start:stop:num, a list such as 0,0.1,0.5,2, "
          "or edmN / edmN:LO..HI (e.g. edm18:..3.3)")


def edm_levels(n: int, sigma_min: float = EDM_SIGMA_MIN, sigma_max: float = EDM_SIGMA_MAX,
               rho: float = EDM_RHO) -> np.ndarray:
    """The n Karras sampling levels, descending from sigma_max to sigma_min (the sampler's order)."""
    if n == 1:
        return np.array([sigma_max])
    i = np.arange(n)
    return (sigma_max ** (1 / rho) + i / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def _bad(spec: str, why: str) -> UserError:
    return UserError(f"--sigmas {spec!r}: {why}. Expected {_FORMS}.")


def _number(spec: str, text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise _bad(spec, f"{what} {text!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise _bad(spec, f"{what} {text!r} must be a finite number >= 0")
    return v


def _count(spec: str, text: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()) or not 1 <= int(text) <= MAX_LEVELS:
        raise _bad(spec, f"the number of levels {text!r} must be a whole number from 1 to {MAX_LEVELS}")
    return int(text)


def _edm(spec: str, part: str) -> list[float]:
    m = re.fullmatch(r"edm(\d+)(?::(.*?)\.\.(.*))?", part)
    if not m:
        raise _bad(spec, f"{part!r} is not edmN or edmN:LO..HI")
    n = _count(spec, m.group(1))
    if n < 2:
        raise _bad(spec, "edmN needs N >= 2")
    levels = edm_levels(n)
    lo = _number(spec, m.group(2), "the lower cut") if m.group(2) else 0.0
    hi = _number(spec, m.group(3), "the upper cut") if m.group(3) else math.inf
    if lo > hi:
        raise _bad(spec, f"the cut {lo:g}..{hi:g} is empty (LO > HI)")
    kept = [float(s) for s in levels if lo * (1 - 1e-9) <= s <= hi * (1 + 1e-9)]
    if not kept:
        raise _bad(spec, f"no EDM-{n} level lies in {lo:g}..{hi:g}")
    return kept


def _range(spec: str, part: str) -> list[float]:
    fields = part.split(":")
    linear = fields[0] == "lin"
    if linear:
        fields = fields[1:]
    if len(fields) != 3:
        raise _bad(spec, f"{part!r} needs exactly start:stop:num")
    start, stop = (_number(spec, f, w) for f, w in zip(fields[:2], ("start", "stop")))
    num = _count(spec, fields[2])
    if num == 1:
        if start != stop:
            raise _bad(spec, "one level needs start == stop")
        return [start]
    if linear:
        return [float(v) for v in np.linspace(start, stop, num)]
    if start <= 0 or stop <= 0:
        raise _bad(spec, "geometric spacing needs start > 0 and stop > 0 (use lin:... or add 0 to a list)")
    return [float(v) for v in np.geomspace(start, stop, num)]


def parse_sigmas(spec: str | None = None) -> list[float]:
    """Ascending, distinct sigma levels of a SPEC (None or '' = the paper's grid). Parts may be joined by
    commas: `0,edm18:..3.3` or `0,0.5,1:10:3`."""
    spec = DEFAULT_SPEC if spec is None or not spec.strip() else spec.strip()
    out: list[float] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            raise _bad(spec, "an empty item in the list")
        if part.startswith("edm"):
            out += _edm(spec, part)
        elif ":" in part:
            out += _range(spec, part)
        else:
            out.append(_number(spec, part, "the level"))
    # Six significant digits: a level shown in a table can be typed back as `icr extract --sigma` exactly.
    levels = sorted({float(f"{v:.6g}") for v in out})
    if len(levels) > MAX_LEVELS:
        raise _bad(spec, f"{len(levels)} levels; at most {MAX_LEVELS}")
    return levels
