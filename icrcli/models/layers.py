"""`icr layers`: the module tree with output shapes from one dry forward pass, to choose --layer."""

from __future__ import annotations

from pathlib import Path

import torch

from icrcli.errors import UserError
from icrcli.models.denoiser import Denoiser
from icrcli.models.resolve import ModelOptions, load_model, noise_convention
from icrcli.models.taps import trace_shapes
from icrcli.models.untapped import Untapped


def list_layers(checkpoint: str | Path, mopts: ModelOptions, depth: int | None = None) -> tuple[Denoiser, list[dict]]:
    """(the loaded network, one row per module: name, type, output_shape, default, not_taps), down to `depth`.
    The dry forward pass takes one input of the network's shape: its own, --image-shape, else 3x32x32. not_taps:
    the activations its forward computes by functions (F.relu, a lambda it holds), which no --layer reaches
    (icrcli.models.untapped); den.description["not_taps"] has them for every module."""
    den = load_model(checkpoint, mopts, "cpu")
    c = den.in_channels or 3
    r = den.resolution or 32
    x = torch.zeros(1, c, r, r)
    conv = noise_convention(den, mopts)
    x_in, t, _ = conv.model_inputs(x, torch.randn_like(x), 0.5)
    try:
        with torch.inference_mode(), Untapped(den.net) as untapped:
            shapes = trace_shapes(den.net, lambda: den.call(x_in, t, den.labels(1, torch.device("cpu"))))
    except UserError as e:
        tried = "" if den.resolution else f" `icr layers` tried {c}x{r}x{r}, its guess when no --image-shape is given."
        raise UserError(f"{e}{tried}") from None
    found = untapped.found()
    rows = []
    for name, cls, shape in shapes:
        d = name.count(".") + 1 if name else 0
        if depth is not None and d > depth:
            continue
        rows.append({"name": name or "<root>", "type": cls, "output_shape": list(shape) if shape else None,
                     "default": bool(den.default_layer) and name == den.default_layer,
                     "not_taps": [{k: f[k] for k in ("op", "after", "next", "calls")}
                                  for f in found if f["module"] == name]})
    den.description["not_taps"] = found  # for the CLI's lines on stderr (every module, whatever --depth)
    return den, rows


def render(rows: list[dict]) -> str:
    width = max(len(r["name"]) for r in rows) + 2
    lines = []
    for r in rows:
        shape = "x".join(map(str, r["output_shape"][1:])) if r["output_shape"] else "(not run)"
        mark = "*" if r["default"] else " "
        lines.append(f"{mark} {r['name']:<{width}} {r['type']:<22} {shape}")
    return "\n".join(lines)
