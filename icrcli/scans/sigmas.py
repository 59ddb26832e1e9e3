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


MANY_LEVELS = 24   # more than any grid the docs suggest (the paper's has 11, edm18 18)


def spec_warnings(spec: str | None, levels: list[float]) -> list[str]:
    """What to say about a grid before its work starts: a grid far larger than usual (each level is a full
    extraction), with a guess at the spec meant when it looks like a slip (edm81 for edm18)."""
    if len(levels) <= MANY_LEVELS:
        return []
    m = re.search(r"edm(\d+)", spec or "")
    meant = " Did you mean edm18 (the paper's levels; edm18:..3.3 is the default grid)?" if (
        m and m.group(1) != "18" and sorted(m.group(1)) == sorted("18")) else ""
    return [f"--sigmas {spec}: {len(levels)} levels, from {levels[0]:g} to {levels[-1]:g}, each a full extraction "
            f"of every image (the default grid has 11).{meant}"]


def edge_warnings(levels: list[dict]) -> list[str]:
    """A minimum of ICR at the lowest or highest level of the grid, per layer (and augmentation): the true
    minimum may lie beyond the grid. records: dicts with sigma, icr, layer (and augment)."""
    out = []
    groups = dict.fromkeys((r.get("augment"), r["layer"]) for r in levels)
    for aug, layer in groups:
        recs = sorted((r for r in levels if r.get("augment") == aug and r["layer"] == layer), key=lambda r: r["sigma"])
        if len(recs) < 2 or any(not math.isfinite(r["icr"]) for r in recs):
            continue
        low = min(recs, key=lambda r: (r["icr"], r["sigma"]))["sigma"]
        where = ((f", layer {layer}" if len({g[1] for g in groups}) > 1 else "")
                 + (f", augment {aug}" if len({g[0] for g in groups}) > 1 else ""))
        if low == recs[0]["sigma"] and low == 0:
            out.append(f"ICR is lowest at sigma 0 (augmentation only), the lowest level of the grid{where}: no "
                       f"noise level tried does better; levels between 0 and {recs[1]['sigma']:g} would show whether "
                       "a little noise does.")
        elif low == recs[0]["sigma"]:
            out.append(f"ICR is lowest at sigma {low:g}, the lowest level of the grid{where}: the minimum may lie "
                       f"below it; add smaller levels to --sigmas (e.g. 0 and {low / 4:.3g}) to find it.")
        elif low == recs[-1]["sigma"]:
            out.append(f"ICR is lowest at sigma {low:g}, the highest level of the grid{where}: the minimum may lie "
                       f"above it; add larger levels to --sigmas (e.g. {low * 2:.3g} and {low * 4:.3g}) to find it.")
    return out
