"""What `icr layers` cannot offer as a tap: activations computed by a function inside a forward (F.relu(h),
torch.sigmoid(h), h.relu()) or by a function the module holds (self.act = F.silu, a lambda passed to the
constructor). A forward hook sees module outputs only, so no --layer reaches them.

Found in the same dry forward pass as the shapes: a TorchFunctionMode sees every torch function call and the
module running it (a stack kept by forward pre-hooks and hooks), and each function held as a module attribute is
wrapped for the pass. An activation is reported unless it is its module's own output (nn.ReLU, or a block that
ends in F.relu: tapping that module gives it), with the module before it and the one after it in the same
forward, the tap nearest to it.
"""

from __future__ import annotations

import functools
import types
from typing import Callable

import torch
from torch.overrides import TorchFunctionMode

# Torch functions (by __name__: F.relu, torch.relu and Tensor.relu alike) that are activations a user may want
# to tap. Other functions (add, cat, reshape, ...) are not reported: nobody looks for them as layers.
ACTIVATIONS = frozenset(
    "relu relu_ relu6 silu silu_ gelu sigmoid sigmoid_ tanh tanh_ softplus leaky_relu leaky_relu_ elu elu_ selu "
    "selu_ celu celu_ mish hardswish hardsigmoid hardtanh hardtanh_ logsigmoid softsign tanhshrink softmax "
    "log_softmax glu prelu rrelu".split())
_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType, functools.partial)
HOW = ("make it a module (e.g. self.act = nn.SiLU(), called in forward, instead of F.silu or a function passed "
       "in), or tap the module that follows it")


class _Calls(TorchFunctionMode):
    def __init__(self, seen: Callable):
        super().__init__()
        self.seen = seen

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in ACTIVATIONS:
            self.seen(name, out)
        return out


class Untapped:
    """with Untapped(net) as u: net(x) -> u.found(): one dict per activation that is not a tap."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.stack = [""]            # the modules running, innermost last ("" is the whole network)
        self.last_child = {}         # module -> the last of its children that finished
        self.events = []             # {"module", "op", "after", "next", "_out"}
        self.waiting = {}            # module -> its events that wait for the next child to start
        self.inside_function = 0     # > 0 while a wrapped attribute function runs: its own calls are its
        self._handles, self._wrapped, self._mode = [], [], None

    def __enter__(self):
        names = {m: n for n, m in self.model.named_modules()}
        for mod, name in names.items():
            self._handles.append(mod.register_forward_pre_hook(functools.partial(self._start, name)))
            self._handles.append(mod.register_forward_hook(functools.partial(self._end, name)))
            for attr, value in list(vars(mod).items()):
                if not attr.startswith("_") and isinstance(value, _FUNCTIONS):
                    self._wrap(mod, name, attr, value)
        self._mode = _Calls(self._seen)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        for h in self._handles:
            h.remove()
        for mod, attr, value in self._wrapped:
            setattr(mod, attr, value)
        self._handles.clear()
        self._wrapped.clear()

    def _wrap(self, mod, name, attr, fn):
        label = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", type(fn).__name__)

        def held(*args, **kwargs):
            self.inside_function += 1
            try:
                out = fn(*args, **kwargs)
            finally:
                self.inside_function -= 1
            if torch.is_tensor(out) and not self.inside_function:
                self._record(f"{name + '.' if name else 'self.'}{attr} ({label})", out)
            return out
        try:
            setattr(mod, attr, held)
        except (AttributeError, TypeError, RuntimeError):  # a scripted or frozen module: its calls are still seen
            return
        self._wrapped.append((mod, attr, fn))

    def _start(self, name, module, inputs):
        parent = self.stack[-1]
        for e in self.waiting.pop(parent, []):
            e["next"] = name
        self.stack.append(name)

    def _end(self, name, module, inputs, output):
        if self.stack[-1] == name:
            self.stack.pop()
        self.last_child[self.stack[-1]] = name
        outs = output if isinstance(output, (tuple, list)) else (output,)
        for e in self.events:  # its own output: tapping this module gives it
            if e["module"] == name and any(e["_out"] is o for o in outs):
                e["is_output"] = True

    def _seen(self, op, out):
        if not self.inside_function and torch.is_tensor(out):
            self._record(op, out)

    def _record(self, op, out):
        module = self.stack[-1]
        e = {"module": module, "op": op, "after": self.last_child.get(module), "next": None, "_out": out}
        self.events.append(e)
        self.waiting.setdefault(module, []).append(e)

    def found(self) -> list[dict]:
        """Each activation that no --layer reaches, once per place ({"module", "op", "after", "next", "calls"}):
        "module" computes it inside its forward ("" for the network's own), "after" is the child module that ran
        just before it in that forward, "next" the one that ran just after (the tap nearest to it; None if
        none)."""
        out = {}
        for e in self.events:
            if e.get("is_output"):
                continue
            key = (e["module"], e["op"], e["after"], e["next"])
            out.setdefault(key, {"module": e["module"], "op": e["op"], "after": e["after"], "next": e["next"],
                                 "calls": 0})["calls"] += 1
        return list(out.values())


def describe(found: list[dict], own: bool = True, limit: int = 10) -> list[str]:
    """Lines for stderr: which activations are not taps, where, and how to make one. A built-in architecture
    (own=False), whose code is not the user's to change, gets one line."""
    if not found:
        return []
    if not own:
        f = found[0]
        return [f"note: {len(found)} activation(s) are computed by functions inside a forward (e.g. {f['op']} in "
                f"{f['module'] or 'the network'}) and are not taps; `icr layers --json` lists them (not_taps)."]
    lines = ["not taps: these activations are computed by functions inside a forward, not by modules, so no "
             "--layer reaches them:"]
    for f in found[:limit]:
        where = f"in {f['module'] or 'the network'}'s forward"
        around = ", ".join(x for x in (f"after {f['after']}" if f["after"] else "",
                                       f"before {f['next']}" if f["next"] else "") if x)
        times = f" ({f['calls']} calls)" if f["calls"] > 1 else ""
        lines.append(f"  {f['op']} {where}{', ' + around if around else ''}{times}")
    if len(found) > limit:
        lines.append(f"  ... and {len(found) - limit} more (`icr layers --json` lists each, under not_taps)")
    lines.append(f"to tap one, {HOW} (named after 'before': its output comes next).")
    return lines
