"""From a checkpoint file to a frozen network and the way to call it: which family, and the options it runs with.

Resolution order for the architecture: --arch (built-in name, `module:function` or `file.py:Class`), else the
JSON sidecar next to the checkpoint (a built-in name only), else recognition from the state-dict keys (the
registered families' adapters, asked in order: registry.py), else a model folder (Hugging Face diffusers). What the
weights cannot tell (noise parametrization, how time is fed, the data range, the call signature) comes from the
family's defaults, the sidecar, or the command line, in rising priority. Each family's adapter (archs/edm.py,
archs/dit.py, archs/diffusers_models.py, or an installed package's) builds its Denoiser; a user's own network is
built here.

A sidecar describes data. It never makes icr run code: a module or file architecture and --trust-pickle come
from the command line only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import math
import sys
import typing
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from icrcli.errors import UserError
from icrcli.models import noise, registry
from icrcli.models.checkpoints import load_checkpoint
from icrcli.models.denoiser import (
    Denoiser,
    ModelOptions,
    check_class_label,
    jsonable,
    key_diff,
    load_strict,
)
from icrcli.models.options import parse_image_shape, sidecar_candidates

__all__ = ["BUILTIN_ARCHS", "Denoiser", "ModelOptions", "Sidecar", "check_class_label", "import_target",
           "load_model", "merge_sidecar", "noise_convention", "parse_call", "read_sidecar", "sidecar_for"]

BUILTIN_ARCHS = registry.BUILTIN_ARCHS


def load_model(path: str | Path, opts: ModelOptions, device: torch.device | str = "cpu") -> Denoiser:
    """The frozen network in `path` (a checkpoint file or a diffusers folder) on `device`. The sidecar's options
    fill what `opts` leaves unset; den.options holds the result, den.description["sidecar"] the file's path,
    sha256 and the options it gave (or why it was ignored)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint. Pass {registry.checkpoint_formats()}.")
    opts, side = merge_sidecar(path, opts)
    den = _from_folder(path, opts) if path.is_dir() else _from_checkpoint(path, opts)
    if opts.image_shape:
        _take_image_shape(den, opts.image_shape)
    den.net.eval().requires_grad_(False).to(device)
    den.options = opts
    den.data_range = opts.data_range or den.data_range  # callers read `their --data-range or den.data_range`
    den.description["sidecar"] = side.provenance() if side else None
    return den


def _take_image_shape(den: Denoiser, spec: str) -> None:
    """--image-shape CxHxW: the input your own network takes; a built-in network's must agree with its weights."""
    c, h, w = parse_image_shape(spec, "--image-shape (or the sidecar's image_shape)")
    if h != w:
        raise UserError(f"--image-shape {spec}: icr feeds square inputs (H = W). Pass --resize to make the images "
                        f"square, with --image-shape {c}x{max(h, w)}x{max(h, w)} or the side your network takes.")
    if den.family == "user":
        den.in_channels, den.resolution = c, h
        return
    if (den.in_channels, den.resolution) != (c, h) and den.resolution is not None:
        r = den.resolution
        raise UserError(f"--image-shape {spec}: this {den.title or den.family} takes {den.in_channels}x{r}x{r}, "
                        "as its weights say. Drop --image-shape (it is for your own architectures).")


def noise_convention(den: Denoiser, opts: ModelOptions, t_mode: str = "nearest"):
    """The model's NoiseConvention: the family's defaults, overridden by the user's options (those `opts` leaves
    unset come from the options the model was loaded with, sidecar included). Naming another --param drops the
    family's schedule/time defaults, which belong to its own parametrization."""
    opts = _fill_unset(opts, den.options)
    nd = dict(den.noise_defaults)
    if opts.param is not None and opts.param != nd.get("param"):
        nd = {"param": opts.param}
    for k in ("schedule", "time_input", "time_convention"):
        if getattr(opts, k) is not None:
            nd[k] = getattr(opts, k)
    nd["param"] = nd.get("param") or noise.implied_param(nd.get("time_input"))
    if not nd["param"]:
        raise UserError("Unknown noise parametrization: pass --param edm|vp|ddpm|flow|ve.")
    buffer = den.schedule_buffer if opts.schedule is None and nd["param"] in ("ddpm", "vp") else None
    # One data range for the noise and for the record: the options' (sidecar included), else the family's.
    data_range = noise.parse_data_range(opts.data_range or den.data_range)
    return noise.from_options(nd["param"], schedule_spec=nd.get("schedule") if buffer is None else None,
                              schedule_buffer=buffer, time_kind=nd.get("time_input"),
                              time_convention=nd.get("time_convention"), t_mode=t_mode,
                              time_shape=opts.time_shape or "(B,)", data_range=data_range,
                              schedule_buffer_name=den.schedule_buffer_name if buffer is not None else None,
                              schedule_buffer_beside=den.schedule_buffer_beside)


def _unset(value) -> bool:
    """None, False or {}: what an option left out on the command line holds (0 is a value: --class-label 0)."""
    return value is None or value is False or (isinstance(value, dict) and not value)


def _fill_unset(opts: ModelOptions, base: ModelOptions | None) -> ModelOptions:
    if base is None or base is opts:
        return opts
    return dataclasses.replace(opts, **{f.name: getattr(base, f.name) for f in fields(ModelOptions)
                                        if _unset(getattr(opts, f.name)) and not _unset(getattr(base, f.name))})


# --------------------------------------------------------------------------------------------------------------
# The sidecar: options as data in CKPT.icr.json, or icr.json in the checkpoint's folder.

# Options a sidecar may give: all but trust_pickle, and "arch" only as a built-in name (see _refuse_code).
SIDECAR_KEYS = tuple(f.name for f in fields(ModelOptions) if f.name != "trust_pickle")
# An icr result (score, extract's summary, info) has some of these; a sidecar has none. README examples once
# wrote `icr score ... -o icr.json`, which must not break every later command in that folder.
_RESULT_KEYS = frozenset({"icr", "eigenvalues", "schema", "version", "config_key", "features", "provenance",
                          "datasets"})
_MAX_SIDECAR_BYTES = 16 << 20


@dataclass(frozen=True)
class Sidecar:
    """A sidecar file as read: its options (checked), or why it is not one (ignored)."""
    path: Path
    sha256: str
    values: dict
    ignored: str | None = None
    applied: tuple[str, ...] = ()       # the options it gave that the command line had left unset

    def provenance(self) -> dict:
        out = {"path": str(self.path), "sha256": self.sha256}
        return out | ({"ignored": self.ignored} if self.ignored else {"applied": list(self.applied)})


def sidecar_for(path: Path) -> Path | None:
    """`CKPT.icr.json` next to the checkpoint, else `icr.json` in its folder (one file for a run's checkpoints)."""
    for cand in sidecar_candidates(path):
        if cand.is_file():
            return cand
    return None


def read_sidecar(checkpoint: Path) -> Sidecar | None:
    """The sidecar of `checkpoint`, checked: known keys with values of the right type, nothing that runs code.
    A JSON that is an icr result (or a list, as `icr layers --json` writes) is returned as ignored, with why."""
    side = sidecar_for(checkpoint)
    if side is None:
        return None
    try:
        with open(side, "rb") as f:
            raw = f.read(_MAX_SIDECAR_BYTES + 1)
    except OSError as e:
        raise UserError(f"{side}: cannot be read ({e.strerror or e}). Fix its permissions or remove it.") from None
    sha = hashlib.sha256(raw).hexdigest()
    if len(raw) > _MAX_SIDECAR_BYTES:
        return Sidecar(side, "", {}, f"it is larger than {_MAX_SIDECAR_BYTES >> 20} MiB, so not a sidecar")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{side}: not valid JSON ({str(e)[:200]}). See README 'Sidecar' for the schema, or "
                        "remove the file.") from None
    why = _result_like(data)
    if why:
        return Sidecar(side, sha, {}, why)
    if not isinstance(data, dict):
        raise UserError(f"{side}: a sidecar is a JSON object of model options, not a {type(data).__name__}. See "
                        "README 'Sidecar'.")
    _refuse_code(side, data)
    try:
        _check_numbers(side, data)
    except RecursionError:
        raise UserError(f"{side}: nested too deeply to be a sidecar. See README 'Sidecar'.") from None
    unknown = sorted(set(data) - set(SIDECAR_KEYS) - {"comment", "trust_pickle"})
    if unknown:
        raise UserError(f"{side}: unknown keys {unknown}; the keys a sidecar may hold are "
                        f"{', '.join(SIDECAR_KEYS)} and comment.")
    return Sidecar(side, sha, {k: _checked(side, k, v) for k, v in data.items() if k in SIDECAR_KEYS})


def merge_sidecar(path: Path, opts: ModelOptions) -> tuple[ModelOptions, Sidecar | None]:
    """`opts` with what the command line left unset taken from the sidecar; the sidecar as read (or None)."""
    side = read_sidecar(path) if path.exists() else None
    if side is None or side.ignored:
        return opts, side
    changes, applied = {}, []
    for k, v in side.values.items():
        if k == "arch_args":
            changes[k] = {**v, **opts.arch_args}  # per argument, the command line wins
            if set(v) - set(opts.arch_args):
                applied.append(k)
        elif _unset(getattr(opts, k)) and v is not None:
            changes[k] = v
            applied.append(k)
    return dataclasses.replace(opts, **changes), dataclasses.replace(side, applied=tuple(applied))


def _result_like(data) -> str | None:
    if isinstance(data, list):
        return "it holds a JSON list (as `icr layers --json` writes), not a sidecar's object of model options"
    found = sorted(set(data) & _RESULT_KEYS) if isinstance(data, dict) else []
    if found:
        return f"it holds an icr result (keys {', '.join(found)}), not model options"
    return None


def _refuse_code(side: Path, data: dict) -> None:
    """A sidecar lies in a folder with the checkpoint, written by whoever wrote the checkpoint: it may not make
    icr import, execute or unpickle code. Only the command line may."""
    if data.get("trust_pickle"):
        raise UserError(f'{side} sets "trust_pickle", which lets a pickle run its code; a file next to a '
                        'checkpoint may not decide that. If you trust the checkpoint, pass --trust-pickle on the '
                        f'command line, and remove "trust_pickle" from {side.name}.')
    arch = data.get("arch")
    if arch is None or (isinstance(arch, str) and arch in BUILTIN_ARCHS):
        return
    if not isinstance(arch, str):       # a list, an object, a number: not a name (and not hashable for a lookup)
        raise UserError(f'{side}: "arch" is {json.dumps(arch)[:60]}, not the name of a built-in architecture '
                        f'({", ".join(BUILTIN_ARCHS)}). See README \'Sidecar\'.')
    names = ", ".join(registry.arch_names())
    if isinstance(arch, str) and ":" in arch:
        raise UserError(f'{side} names the architecture "arch": {arch!r}, which is code to import and run; a file '
                        'next to a checkpoint may not make icr run code. Pass it on the command line, '
                        f'--arch {arch}, and remove "arch" from {side.name} (a sidecar may name only a built-in '
                        f'or installed architecture: {names}).')
    if arch in registry.installed():   # a family the user installed into the environment: theirs to run
        return
    extra = f" nor an installed one ({', '.join(registry.installed())})" if registry.installed() else ""
    raise UserError(f'{side}: "arch": {arch!r} is not a built-in architecture ({", ".join(BUILTIN_ARCHS)}){extra}. '
                    'Name one of them, or pass your own network on the command line with --arch.')


_MAX_SIDECAR_NUMBER = 1e15     # no option is near this (class labels, layer widths); NaN and 1e308 break the math


def _check_numbers(side: Path, data, where: str = "") -> None:
    """Every number in the sidecar finite and of a sane size (JSON allows NaN, Infinity and 1e400 = inf)."""
    if isinstance(data, dict):
        for k, v in data.items():
            _check_numbers(side, v, f"{where}.{k}" if where else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _check_numbers(side, v, f"{where}[{i}]")
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        sane = abs(data) <= _MAX_SIDECAR_NUMBER     # exact for ints of any size (math.isfinite would overflow)
        if not (sane and (isinstance(data, int) or math.isfinite(data))):
            raise UserError(f'{side}: "{where}" is {str(data)[:40]}, not a finite number of sane size (at most '
                            f"{_MAX_SIDECAR_NUMBER:g}). Fix the sidecar, or remove it. See README 'Sidecar'.")


_HINTS = typing.get_type_hints(ModelOptions)
_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object",
               list: "a list"}


def _checked(side: Path, key: str, value):
    """`value` if it has the type ModelOptions declares for `key` (or is null), else a UserError."""
    if value is None:
        return None
    want = tuple(t for t in (typing.get_args(_HINTS[key]) or (_HINTS[key],)) if t is not type(None))
    if isinstance(value, bool) and bool not in want or not isinstance(value, want):
        names = " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in want)
        raise UserError(f'{side}: "{key}" is {json.dumps(value)[:60]}, which is not {names}. See README '
                        "'Sidecar'.")
    return value


# --------------------------------------------------------------------------------------------------------------
# Checkpoint files: the weights, then the family.

def _from_checkpoint(path: Path, opts: ModelOptions) -> Denoiser:
    ckpt = load_checkpoint(path, key=opts.key, trust_pickle=opts.trust_pickle, map_location="cpu")
    sd, meta = ckpt.state_dict, ckpt.meta
    desc = {"checkpoint": str(path), "format": ckpt.format, "weights": ckpt.source,
            "weights_found": ckpt.candidates}
    # A schedule in the weights taken, else anywhere else in the file (`alpha_t` beside `gt.*` under --key gt).
    buffer, beside = noise.find_schedule_buffer(sd), False
    if buffer is None:
        buffer = noise.find_schedule_buffer(ckpt.beside)
        beside = buffer is not None
    arch = opts.arch
    if arch and ":" in arch:
        den = _user_arch(arch, opts, sd)
    else:
        adapter = registry.recognise(sd, meta) if arch is None else registry.adapter(arch)
        if adapter is None or adapter.reads_folders:
            raise registry.unknown_arch(arch)
        den = adapter.build(sd, meta, opts, arch)
        den.adapter = adapter
    den.description.update(desc)
    den.schedule_buffer_name, den.schedule_buffer = buffer or (None, None)
    den.schedule_buffer_beside = beside
    return den


def _from_folder(path: Path, opts: ModelOptions) -> Denoiser:
    adapter = registry.for_folder(path)
    den = adapter.open_folder(path, opts)
    den.adapter = adapter
    return den


# --------------------------------------------------------------------------------------------------------------
# The user's own architecture (named on the command line only).

def import_target(spec: str):
    """`pkg.module:attr` or `path/to/file.py:attr` -> the attribute (a class or a factory function)."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise UserError(f"--arch {spec!r}: expected `my.module:build_fn` or `path/to/file.py:ClassName`.")
    try:
        if target.endswith(".py"):
            file = Path(target)
            if not file.is_file():
                raise UserError(f"--arch {spec!r}: no such file {file}.")
            name = f"icr_user_arch_{abs(hash(str(file.resolve())))}"
            mod_spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except UserError:
        raise
    except Exception as e:  # the user's code failed to import: show why, it is theirs to fix
        raise UserError(f"--arch {spec!r}: importing {target} failed: {type(e).__name__}: {e}") from None
    if not hasattr(module, attr):
        raise UserError(f"--arch {spec!r}: {target} has no attribute {attr!r}.")
    return getattr(module, attr)


def parse_call(spec: str | None) -> list[tuple[str | None, str]]:
    """"x,t,y" -> positional [(None,'x'),(None,'t'),(None,'y')]; "sample=x,timestep=t" -> keywords."""
    spec = spec or "x,t"
    out = []
    for part in spec.split(","):
        name, eq, role = part.strip().partition("=")
        kw, role = (name, role) if eq else (None, name)
        if role not in ("x", "t", "y"):
            raise UserError(f"--call {spec!r}: each entry is x, t or y, optionally as keyword=x; got {part!r}.")
        out.append((kw, role))
    return out


def _user_arch(spec: str, opts: ModelOptions, sd: dict) -> Denoiser:
    build = import_target(spec)
    try:
        net = build(**opts.arch_args)
    except Exception as e:  # noqa: BLE001  the user's constructor, with the user's arguments
        words = [f"{k}={v!r}" for k, v in opts.arch_args.items() if isinstance(v, str)]
        hint = (f" A bare word is passed as a string ({', '.join(words)}): a constructor that takes a function or "
                "an object needs a builder of your own, --arch file.py:build_fn, that calls it (README 'Your own "
                "checkpoint').") if words else ""
        raise UserError(f"--arch {spec}: constructing it with {_args_words(opts.arch_args)} failed: "
                        f"{type(e).__name__}: {_first_line(e)}. Pass constructor arguments with --arch-arg "
                        f"name=value (Python literals: 128, (16,32), [1,2], True, None, 'text').{hint}") from None
    if not isinstance(net, torch.nn.Module):
        raise UserError(f"--arch {spec} returned {type(net).__name__}, not a torch.nn.Module.")
    _refuse_wrapped(net, sd, spec)
    load_strict(net, sd, spec, "Hints: check --arch-arg values (layer widths, depth); pick the right sub-dict "
                                "with --key; a common prefix (e.g. 'model.') in the file but not in your class "
                                "means the file wraps the network: pass that prefix with --key.", assign=False)
    if not opts.param and not noise.implied_param(opts.time_input):
        raise UserError("A user architecture needs its noise parametrization: --param edm|vp|ddpm|flow|ve "
                        "(and --schedule / --time-input / --time-convention as applicable; see README).")
    roles = parse_call(opts.call)
    _check_signature(net, roles, spec, opts, build)

    def call(x, t, y):
        values = {"x": x, "t": t, "y": y}
        args = [values[r] for k, r in roles if k is None]
        kwargs = {k: values[r] for k, r in roles if k is not None}
        try:
            return net(*args, **kwargs)
        except (RuntimeError, TypeError, ValueError, IndexError) as e:  # the user's forward, with our inputs
            raise UserError(f"Your network {spec} failed on an input of shape {_shape(x)} with time {_shape(t)}: "
                            f"{type(e).__name__}: {_first_line(e)}. Give the input shape it takes with "
                            "--image-shape CxHxW (and --resize if the images differ), and check --call, "
                            "--time-input and --time-shape.") from e

    def labels(b, device):
        if opts.class_label is None:
            return None
        return torch.full((b,), opts.class_label, dtype=torch.long, device=device)

    # The input shape: --image-shape (applied by load_model), else the constructor arguments that say it, else
    # the data's (None: taken from the images).
    in_ch = opts.arch_args.get("in_channels", opts.arch_args.get("img_channels"))
    res = opts.arch_args.get("img_resolution", opts.arch_args.get("resolution"))
    return Denoiser(
        net=net, family="user", default_layer="", in_channels=int(in_ch) if in_ch is not None else None,
        resolution=res, latent=False, noise_defaults={}, data_range="-1:1", call=call, labels=labels,
        description={"arch": spec, "config": arch_config(opts.arch_args)}, title=f"your network {spec}",
    )


def _args_words(args: dict) -> str:
    return "(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")" if args else "no arguments"


def arch_config(args: dict) -> dict:
    """The constructor arguments as JSON (part of the cache key). JSON has no tuples: an argument holding one is
    also kept as written (Python repr), so (16, 32) and [16, 32], which a constructor may treat differently, are
    different requests; arguments without tuples give the JSON they always gave."""
    config = jsonable(args)
    tuples = {k: repr(v) for k, v in args.items() if _holds_tuple(v)}
    return config | ({"__python_literals__": tuples} if tuples else {})


def _holds_tuple(v) -> bool:
    if isinstance(v, tuple):
        return True
    if isinstance(v, list):
        return any(_holds_tuple(x) for x in v)
    return isinstance(v, dict) and any(_holds_tuple(x) for x in v.values())


def _shape(t) -> str:
    return "x".join(map(str, t.shape)) if torch.is_tensor(t) and t.ndim else "a scalar" if torch.is_tensor(t) else "None"


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _refuse_wrapped(net: torch.nn.Module, sd: dict, spec: str) -> None:
    """A wrapper saved whole: every key in the file starts with one prefix ("network.") that the class does not
    have, and without it the weights fit. Say which --key takes them."""
    heads = {k.split(".", 1)[0] for k in sd}
    if len(heads) != 1 or not any(key_diff(net, sd, kinds=False)):
        return
    prefix = heads.pop()
    inner = {k[len(prefix) + 1:]: v for k, v in sd.items() if "." in k}
    if len(inner) == len(sd) and not any(key_diff(net, inner, kinds=False)):
        raise UserError(f"The weights do not fit {spec} as they are: every key in the file starts with "
                        f"'{prefix}.' (the network was saved inside a wrapper), and without that prefix they fit. "
                        f"Pass --key {prefix} to take the weights under it.")


def _check_signature(net: torch.nn.Module, roles: list, spec: str, opts: ModelOptions, build=None) -> None:
    """Before any forward pass: --call must fit forward's signature, and a class input needs its class."""
    import inspect
    call = opts.call or "x,t"
    try:
        sig = inspect.signature(net.forward)
    except (TypeError, ValueError):  # a builtin or C forward: nothing to check here
        sig = None
    if sig is not None:
        try:
            sig.bind(*[None for k, _ in roles if k is None], **{k: None for k, _ in roles if k is not None})
        except TypeError as e:
            raise UserError(f"Your network {spec} is called as forward{sig}, which --call {call} does not fit "
                            f"({e}). Pass --call to match it: positional roles x, t, y in order (e.g. --call x,t,y, "
                            "with --class-label N for a class-conditional model), or keywords such as "
                            "--call sample=x,timestep=t.") from None
    if any(r == "y" for _, r in roles) and opts.class_label is None:
        raise UserError(f"--call {call} feeds your network a class y, but no class was given: pass --class-label N, "
                        "the class to condition on." + _null_class_hint(net, build, opts.arch_args))


def _null_class_hint(net: torch.nn.Module, build, arch_args: dict) -> str:
    """What --class-label to pass: the null class only where the label table has one row more than the classes
    (classifier-free guidance's dropped label, as DiT's y_embedder); a table of exactly the classes has none."""
    table = next(((n, m) for n, m in net.named_modules() if isinstance(m, torch.nn.Embedding)
                  and any(w in n.lower() for w in ("y_emb", "label", "class", "cond"))), None)
    classes, said = _number_of_classes(net, build, arch_args)
    fixed = ("pick one real class, e.g. --class-label 0, and keep it the same for every checkpoint you compare "
             "(README 'Your own checkpoint')")
    if table is None:
        return (" No label table (nn.Embedding) was found to tell whether the model has a null class: if it was "
                "trained with one (a dropped label as an extra class, classifier-free guidance), pass that; if not, "
                f"{fixed}.")
    name, rows = table[0], table[1].num_embeddings
    if classes is not None and rows == classes + 1:
        return (f" Your network's {name} has {rows} rows for {classes} classes ({said}): the extra row, {classes}, "
                "is its null class (classifier-free guidance, as DiT), which conditions on no class as the paper "
                f"does: --class-label {classes}.")
    if classes is not None and rows == classes:
        return (f" Your network's {name} has {rows} rows for its {classes} classes ({said}): no row is left for a "
                f"null class (--class-label {rows - 1} is the real class {rows - 1}), so the model has none: "
                f"{fixed}.")
    about = f" ({said}, which does not match)" if classes is not None else ""
    return (f" Your network's {name} has {rows} rows{about}. If that is the classes plus one row for a dropped "
            f"label (classifier-free guidance, as DiT), the null class is {rows - 1}: --class-label {rows - 1}; if "
            f"every row is a real class, there is no null class: {fixed}. Pass --arch-arg num_classes=N (the name "
            "your constructor uses) to let icr tell.")


_CLASS_COUNTS = ("num_classes", "n_classes", "n_class", "num_class", "nclass", "nclasses", "class_num",
                 "num_labels", "n_labels", "label_dim", "classes")


def _number_of_classes(net: torch.nn.Module, build, arch_args: dict) -> tuple[int | None, str]:
    """(the number of classes, where it was read) from --arch-arg, the constructor's default, or an attribute of
    the network (DiT's LabelEmbedder.num_classes); (None, "") when none says it."""
    import inspect
    for k in _CLASS_COUNTS:
        if isinstance(arch_args.get(k), int) and not isinstance(arch_args[k], bool):
            return arch_args[k], f"--arch-arg {k}={arch_args[k]}"
    try:
        params = inspect.signature(build).parameters
    except (TypeError, ValueError):
        params = {}
    for k in _CLASS_COUNTS:
        d = params[k].default if k in params else None
        if isinstance(d, int) and not isinstance(d, bool):
            return d, f"the constructor's default {k}={d}"
    for n, m in net.named_modules():
        for k in _CLASS_COUNTS:
            v = getattr(m, k, None)
            if isinstance(v, int) and not isinstance(v, bool):
                return v, f"{n + '.' if n else ''}{k} = {v}"
    return None, ""
