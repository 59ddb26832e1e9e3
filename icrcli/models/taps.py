"""Reading features out of a frozen network: forward hooks on named modules, pooling, and stopping the
forward pass right after the last tapped layer (nothing after it can change the features)."""

from __future__ import annotations

import difflib
from typing import Callable

import torch

from icrcli.errors import UserError

from icrcli.features.options import POOLS  # noqa: E402  (declared with the --pool option)
# Flattened features past this many dimensions make D x D covariances impractical: warn.
LARGE_DIM = 16384


class _Stop(Exception):
    """Raised from a hook once every tapped layer has produced its output."""


def pool(out, how: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, C) and (B, T, D) -> (B, D) by the mean over positions/tokens (paper App. C);
    'none' flattens everything after the batch dimension."""
    if isinstance(out, (tuple, list)):
        out = out[0]  # blocks that return (hidden, extras)
    if not torch.is_tensor(out):
        raise UserError(f"a tapped layer returned {type(out).__name__}, not a tensor; tap a module that outputs "
                        "a feature map or token sequence (see `icr layers`).")
    if how == "none" or out.ndim == 2:
        return out.flatten(1)
    if out.ndim == 3:      # tokens
        return out.mean(dim=1)
    return out.flatten(2).mean(dim=2)  # channels first, spatial dims last


def resolve_layers(model: torch.nn.Module, layers: list[str]) -> dict[str, torch.nn.Module]:
    names = dict(model.named_modules())
    out = {}
    for layer in layers:
        if layer not in names:
            close = difflib.get_close_matches(layer, [n for n in names if n], n=5, cutoff=0.4)
            hint = f" Closest names: {', '.join(close)}." if close else ""
            raise UserError(f"The network has no layer {layer!r}.{hint} List them all with `icr layers CKPT`.")
        out[layer] = names[layer]
    return out


class Taps:
    """Capture pooled outputs of `layers` during a forward pass.

    with Taps(net, ["model.dec.16x16_block1"], "mean") as taps:
        feats = taps.run(lambda: net(x, sigma))   # {layer: (B, D) float32}
    """

    def __init__(self, model: torch.nn.Module, layers: list[str], how: str = "mean", stop_early: bool = True):
        self.modules = resolve_layers(model, layers)
        self.how, self.stop_early = how, stop_early
        self.captured: dict[str, torch.Tensor] = {}
        self._want = set(self.modules)
        self._handles = []

    def __enter__(self):
        for name, mod in self.modules.items():
            self._handles.append(mod.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if name not in self._want:
                return
            if name not in self.captured:  # a module called twice (weight sharing) keeps its first output
                self.captured[name] = pool(output, self.how).float()
            if self.stop_early and len(self.captured) == len(self._want):
                raise _Stop
        return hook

    def run(self, forward: Callable[[], object], only: list[str] | None = None) -> dict[str, torch.Tensor]:
        """One forward pass, the tapped layers' features. only: these of the tapped layers (the pass stops after
        the last of them), so plans with different layers share one set of hooks."""
        self.captured = {}
        self._want = set(self.modules if only is None else only)
        try:
            forward()
        except _Stop:
            pass
        missing = [n for n in self.modules if n in self._want and n not in self.captured]
        if missing:
            raise UserError(f"Layer(s) {', '.join(missing)} did not run during the forward pass (modules that "
                            "exist but are unused). Pick another layer; `icr layers CKPT` shows which run.")
        return {n: self.captured[n] for n in self.modules if n in self._want}


def trace_shapes(model: torch.nn.Module, forward: Callable[[], object]) -> list[tuple[str, str, tuple | None]]:
    """[(module name, class name, output shape or None if it did not run)] from one full forward pass,
    in named_modules() order."""
    shapes: dict[str, tuple] = {}
    handles = []
    for name, mod in model.named_modules():
        def hook(m, i, o, name=name):
            if name not in shapes:
                t = o[0] if isinstance(o, (tuple, list)) and o and torch.is_tensor(o[0]) else o
                shapes[name] = tuple(t.shape) if torch.is_tensor(t) else None
        handles.append(mod.register_forward_hook(hook))
    try:
        forward()
    finally:
        for h in handles:
            h.remove()
    return [(n, type(m).__name__, shapes.get(n)) for n, m in model.named_modules()]
