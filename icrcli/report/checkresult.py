"""A saved scan result (a sweep, a timeline, any registered scan) checked before it is drawn: `icr plot` reads JSON
from anywhere, so anything that is not the shape icr writes is a UserError naming the first bad value, and what is
drawn is capped (records, series, label lengths), so no file can hang or crash the plot."""

from __future__ import annotations

import math

from icrcli.errors import UserError

MAX_RECORDS = 100_000       # levels or points drawn
MAX_SERIES = 64             # layers of a sweep, (sigma, layer) series of a timeline
MAX_LABEL = 48              # characters of a layer or file name shown
MAX_MAGNITUDE = 1e30        # no value icr writes comes near this; beyond it axes overflow
MAX_BYTES = 256 << 20       # a result file larger than this is not one icr wrote


def short(text, n: int = MAX_LABEL) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def check_result(result, where: str = "the result"):
    """A copy of a scan result fit to draw (labels shortened), typed (scans.result); UserError if it is not one."""
    from icrcli.scans.result import ScanResult, kinds, result_class
    if isinstance(result, ScanResult):
        result = result.to_dict()
    if not isinstance(result, dict):
        raise _bad(where, f"is a JSON {type(result).__name__}, not an object")
    kind = result.get("kind")
    if kind not in kinds():
        raise UserError(f"{where} is not a sweep or timeline result (its \"kind\" is {short(repr(kind))}); `icr plot` "
                        "redraws the JSON that `icr sweep` or `icr timeline` wrote.")
    cls = result_class(kind)
    records, name = result.get(cls.records_key), cls.records_key
    if not isinstance(records, list) or not records:
        raise _bad(where, f"has no list of {name}")
    if len(records) > MAX_RECORDS:
        raise _bad(where, f"has {len(records)} {name}; icr draws at most {MAX_RECORDS}")
    out = [_record(r, i, cls.axis, kind, f"{where}: {name}[{i}]") for i, r in enumerate(records)]
    series = {cls.axis.key_of(r) for r in out}
    if len(series) > MAX_SERIES:
        raise _bad(where, f"has {len(series)} series (layers, sigmas); icr draws at most {MAX_SERIES}")
    clean = {**result, name: out}
    for k in ("checkpoint", "folder", "kind"):
        if k in clean:
            clean[k] = short(clean[k], 200)
    return cls(clean)


def _record(r, i: int, axis, kind: str, where: str) -> dict:
    if not isinstance(r, dict):
        raise _bad(where, f"is a JSON {type(r).__name__}, not an object")
    out = dict(r)
    _number(r, "sigma", where, low=0.0, optional=axis.name != "sigma" and kind != "timeline")
    _number(r, axis.name, where)
    _number(r, "icr", where)
    if kind == "timeline":
        _number(r, "trace_s", where)
        _number(r, "trace_xi", where)
        _number(r, "memorization_ratio", where, optional=True)
    else:
        _number(r, "probe_test_accuracy", where, optional=True)
    ci = r.get("icr_ci")
    if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(_finite(v) for v in ci)):
        raise _bad(where, f"has icr_ci {short(repr(ci))}, not a pair of numbers")
    for key in axis.series:     # what splits the records into curves: names (or numbers), shortened as labels
        v = r.get(key)
        if v is not None and not isinstance(v, str) and not (key != "layer" and _finite(v)):
            raise _bad(where, f"has {key} {short(repr(v))}, not a name")
        if isinstance(v, str):
            out[key] = short(v)
    if "layer" not in axis.series:
        layer = r.get("layer")
        if layer is not None and not isinstance(layer, str):
            raise _bad(where, f"has layer {short(repr(layer))}, not a name")
        out["layer"] = short(layer) if layer is not None else None
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= MAX_MAGNITUDE


def _number(r: dict, key: str, where: str, low: float | None = None, optional: bool = False) -> None:
    v = r.get(key)
    if v is None and optional:
        return
    if not _finite(v) or (low is not None and v < low):
        what = "missing" if key not in r else short(repr(v))
        raise _bad(where, f"has {key} {what}, not a finite number{'' if low is None else f' >= {low:g}'}")


def _bad(where: str, what: str) -> UserError:
    return UserError(f"{where} {what}: it is not a result icr wrote. Give the JSON that `icr sweep` or `icr timeline` "
                     "wrote (-o FILE, or their stdout).")
