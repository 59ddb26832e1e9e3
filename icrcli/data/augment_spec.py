"""The augmentation policies as data, and their specs parsed: `paper`, `crop:pad=2`, ... (icrcli.data.augment says
what each policy does and applies them). Torch-free, so a mistyped --augment is refused before torch is loaded."""

from __future__ import annotations

import copy
import functools
import math

from icrcli.errors import UserError

_PAD_CROP = {"op": "pad_crop", "pad_fraction": 0.125, "fill": 0.0,
             "padding": "round(side * 0.125) px on each side (4 px at 32x32); offset uniform over all positions"}
_FLIP = {"op": "hflip", "p": 0.5}
_RESIZED_CROP = {"op": "resized_crop", "scale": [0.08, 1.0], "ratio": [3 / 4, 4 / 3], "attempts": 10,
                 "resize": "bilinear, half-pixel centres, edge-clamped to the crop (torchvision, no antialias)"}
_GRAY = {"op": "grayscale", "p": 0.2, "weights": [0.299, 0.587, 0.114]}
_AFFINE = {"op": "affine", "degrees": 10.0, "translate": 0.1, "zoom": [0.9, 1.1],
           "resample": "bilinear, zero fill, about the image centre; angle counter-clockwise, shift a fraction of "
                       "the side"}


def _span(v: float) -> list[float]:
    """A jitter strength v -> its factor range [1 - v, 1 + v] (0.2, not 0.19999999999999996)."""
    return [round(1 - v, 9), round(1 + v, 9)]


def _jitter(b: float, c: float, s: float, h: float, p: float) -> dict:
    """torchvision ColorJitter(b, c, s, h) inside RandomApply(p)."""
    return {"op": "color_jitter", "p": p, "brightness": _span(b), "contrast": _span(c),
            "saturation": _span(s), "hue": [-h, h], "order": "random permutation per sample",
            "grey_images": "brightness and contrast only"}


_POLICY_OPS = {
    "paper": [_PAD_CROP, _FLIP, _jitter(0.4, 0.4, 0.4, 0.1, p=0.8)],
    "crop": [_PAD_CROP],
    "crop-flip": [_PAD_CROP, _FLIP],
    "simclr": [_RESIZED_CROP, _FLIP, _jitter(0.8, 0.8, 0.8, 0.2, p=0.8), _GRAY],
    "digits": [_AFFINE],
    "none": [],
}
POLICIES = tuple(_POLICY_OPS)

# Strengths a policy spec may set, `crop:pad=2`, `paper:pad=4,jitter=0.4,p=0.8`: name -> (the op it changes, what
# it is, the check on its value). A policy takes those whose op it has. The order here is the canonical order.
STRENGTHS = {
    "pad": ("pad_crop", "zero padding in px on each side (default: side/8, rounded)", lambda v: v >= 0 and v == int(v)),
    "flip": ("hflip", "probability of a horizontal flip", lambda v: 0 <= v <= 1),
    "scale": ("resized_crop", "least area fraction of the resized crop", lambda v: 0 < v <= 1),
    "jitter": ("color_jitter", "brightness, contrast and saturation strength s: factors in [1-s, 1+s]",
               lambda v: 0 <= v <= 1),
    "brightness": ("color_jitter", "brightness strength", lambda v: 0 <= v <= 1),
    "contrast": ("color_jitter", "contrast strength", lambda v: 0 <= v <= 1),
    "saturation": ("color_jitter", "saturation strength", lambda v: 0 <= v <= 1),
    "hue": ("color_jitter", "hue shift in turns, in [-h, h]", lambda v: 0 <= v <= 0.5),
    "p": ("color_jitter", "probability that the colour jitter applies", lambda v: 0 <= v <= 1),
    "gray": ("grayscale", "probability of grey", lambda v: 0 <= v <= 1),
    "rotate": ("affine", "largest rotation in degrees, either way", lambda v: 0 <= v <= 180),
    "translate": ("affine", "largest shift, a fraction of the side, each axis", lambda v: 0 <= v <= 0.5),
    "zoom": ("affine", "largest zoom z: scale in [1-z, 1+z]", lambda v: 0 <= v < 1),
}


def describe_policy(name: str) -> dict:
    """The exact parameters of a policy or policy spec ("crop:pad=2"), as a JSON-serialisable dict (for
    provenance records). A spec with strengths adds its canonical text as "spec"."""
    base, strengths = parse_policy(name)
    out = {"policy": base, "ops": copy.deepcopy(_ops(name))}
    if strengths:
        out["spec"] = canonical_policy(name)
    out["rng"] = "numpy Generator(PCG64(seed)) per sample; view seeds from view_seeds (SplitMix64)"
    return out


def parse_policy(spec: str) -> tuple[str, tuple[tuple[str, float], ...]]:
    """'crop:pad=2' -> ('crop', (('pad', 2.0),)), strengths in canonical order; 'paper' -> ('paper', ())."""
    return _parse(str(spec))


def policy_name(spec: str) -> str:
    """The policy a spec names: 'crop:pad=2' -> 'crop'."""
    return parse_policy(spec)[0]


def canonical_policy(spec: str) -> str:
    """One spelling per spec (strengths in STRENGTHS order, numbers as %g): the key and the record use it."""
    base, strengths = parse_policy(spec)
    return base + (":" + ",".join(f"{k}={v:g}" for k, v in strengths) if strengths else "")


@functools.lru_cache(maxsize=64)
def _parse(spec: str):
    base, colon, rest = spec.strip().partition(":")
    if base not in _POLICY_OPS:
        import difflib
        near = difflib.get_close_matches(base, POLICIES, n=1)
        raise UserError(f"unknown augmentation policy '{base}'{f' (did you mean {near[0]}?)' if near else ''}. "
                        f"Choose one of: {', '.join(POLICIES)} (strengths as e.g. crop:pad=2 or "
                        "paper:pad=4,jitter=0.4,p=0.8; see README 'Views').")
    allowed = [k for k, (op, _, _) in STRENGTHS.items() if any(o["op"] == op for o in _POLICY_OPS[base])]
    given = {}
    for item in rest.split(",") if colon else []:
        k, eq, v = item.strip().partition("=")
        if k not in allowed or not eq:
            takes = ", ".join(f"{a} ({STRENGTHS[a][1]})" for a in allowed) or "no strengths"
            raise UserError(f"--augment {spec!r}: {item.strip()!r} is not a strength of '{base}', which takes "
                            f"{takes}. Write them as {base}:name=value,name=value.")
        try:
            value = float(v)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and STRENGTHS[k][2](value)):
            raise UserError(f"--augment {spec!r}: {k}={v} is out of range ({STRENGTHS[k][1]}).")
        given[k] = value
    return base, tuple((k, given[k]) for k in STRENGTHS if k in given)


@functools.lru_cache(maxsize=64)
def _ops_of(spec: str) -> tuple:
    base, strengths = _parse(spec)
    ops = copy.deepcopy(_POLICY_OPS[base])
    for k, v in strengths:
        op = next(o for o in ops if o["op"] == STRENGTHS[k][0])
        if k == "pad":
            del op["pad_fraction"]
            op["pad"] = int(v)
            op["padding"] = f"{int(v)} px on each side; offset uniform over all positions"
        elif k in ("flip", "gray", "p"):
            op["p"] = v
        elif k == "scale":
            op["scale"] = [v, 1.0]
        elif k == "hue":
            op["hue"] = [-v, v]
        elif k == "rotate":
            op["degrees"] = v
        elif k == "translate":
            op["translate"] = v
        elif k == "zoom":
            op["zoom"] = [round(1 - v, 9), round(1 + v, 9)]
        else:
            for name in (("brightness", "contrast", "saturation") if k == "jitter" else (k,)):
                op[name] = _span(v)
    return tuple(ops)


def _ops(name: str) -> list[dict]:
    return list(_ops_of(str(name)))
