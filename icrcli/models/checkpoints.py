"""Load model weights from a checkpoint file without running code from it (unless told to).

Formats, recognised by content rather than extension:
  safetensors            -> safetensors.torch.load_file (preferred: no code, no pickle)
  torch zip / legacy     -> torch.load(weights_only=True), argparse.Namespace allowed
  NVlabs EDM pickle      -> icrcli.models.edm_pickle (restricted unpickler, embedded code never runs)
  other pickles          -> the same restricted unpickler (tensors, dicts, lists only)
`trust_pickle=True` falls back to full unpickling, which runs whatever code the file names.

Training checkpoints nest the weights; the sub-dict is chosen EMA-first, the way DiT/SiT/REPA
sample.py and EDM's generate.py pick the weights to sample with.
"""
# Checkpoint layouts: facebookresearch/DiT, willisma/SiT and sihyun-yu/REPA train.py save
# {"model", "ema", "opt", "args": argparse.Namespace} (REPA adds "steps"); Lightning saves
# {"state_dict", "optimizer_states", "hyper_parameters", ...}; NVlabs/edm training_loop.py
# pickles {"ema", "loss_fn", "augment_pipe", "dataset_kwargs"}.

import argparse
import io
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from icrcli.models.edm_pickle import (RestrictedUnpickler, UnsafeGlobalError, is_edm_pickle,
                               load_edm_pickle)
from icrcli.errors import UserError

# EMA weights first: they are what every one of these codebases samples with.
WEIGHT_KEYS = ("ema", "ema_model", "model_ema", "ema_state_dict",
               "model", "state_dict", "net", "module", "model_state_dict")
# Added by DataParallel/DDP ("module.") and torch.compile ("_orig_mod."); never part of an
# architecture's own names. Lightning's "model." is left alone: the arch may expect it.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_CONFIG_KEYS = ("args", "config", "cfg", "hyper_parameters", "hparams")
_COUNTER_KEYS = ("step", "steps", "train_steps", "global_step", "epoch")
_ZIP_MAGIC = b"PK\x03\x04"
# torch's legacy (pre-1.6) format opens with this number pickled (torch.serialization.MAGIC_NUMBER).
_LEGACY_MAGICS = tuple(pickle.dumps(0x1950a86a20f9469cfc6c, protocol=p) for p in (2, 3, 4, 5))
_TRUST_HINT = ("If you trust the file, pass --trust-pickle: it loads the file by running the "
               "code it names, so do that only for files from a source you trust. Better, "
               "re-save just the weights: torch.save(model.state_dict(), 'weights.pt') or "
               "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors').")


@dataclass
class Checkpoint:
    """Weights plus what the file says about them.

    state_dict: name -> tensor (on map_location). source: where in the file they came from
    ("ema", "ema.model", "<root>"). meta: e.g. {"args": {...}} from a saved Namespace, or
    {"class_name", "init_kwargs", ...} from an EDM pickle. format: "safetensors" | "torch" |
    "edm-pickle" | "pickle". candidates: every entry of the file that held weights. beside: the 1-D
    floating-point tensors elsewhere in the file, outside the weights taken (full dotted name -> tensor), where a
    training script may keep its noise schedule next to the network (`gt.*` beside `alpha_t`).
    """

    state_dict: dict[str, torch.Tensor]
    source: str
    meta: dict = field(default_factory=dict)
    format: str = "torch"
    candidates: list[str] = field(default_factory=list)
    beside: dict[str, torch.Tensor] = field(default_factory=dict)


def load_checkpoint(path, key=None, trust_pickle=False, map_location="cpu") -> Checkpoint:
    """Load the weights in `path`; `key` is a dotted path to them ("ema", "ema.model")."""
    path = _existing_file(path)
    kind = _sniff(path)
    if kind == "safetensors":
        return _load_safetensors(path, key, map_location)
    if kind == "pickle" and is_edm_pickle(path):
        try:
            return _load_edm(path, key)
        except UnsafeGlobalError:  # an EDM-like pickle with extra code: full load if trusted
            if not trust_pickle:
                raise
    if kind in ("zip", "legacy"):
        root, fmt = _torch_load(path, kind, trust_pickle, map_location), "torch"
    else:
        root, fmt = _pickle_load(path, trust_pickle, map_location), "pickle"
    return _from_root(root, key, fmt, path)


# ---------------------------------------------------------------- reading the file


def _existing_file(path):
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a checkpoint file. Pass the weights file "
                        "inside it (e.g. diffusion_pytorch_model.safetensors or model.pt).")
    if not path.is_file():
        raise UserError(f"Checkpoint {path} does not exist. Check the path and that the "
                        "download finished.")
    return path


def _sniff(path):
    """'safetensors' | 'zip' (torch.save) | 'legacy' (old torch.save) | 'pickle'; else UserError."""
    with open(path, "rb") as f:
        head = f.read(64)
    size = path.stat().st_size
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(_LEGACY_MAGICS):
        return "legacy"
    if len(head) > 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    raise UserError(
        f"{path} is not a checkpoint format icr reads (safetensors, a torch.save file such as "
        ".pt/.pth/.ckpt/.bin, or a pickle such as an EDM .pkl); it may be corrupt or a partial "
        f"download (first bytes: {head[:8]!r}). Check the file, or convert it to .safetensors.")


def _load_safetensors(path, key, map_location):
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file
    try:
        state_dict = load_file(str(path), device=str(map_location))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, OverflowError, RuntimeError) as e:
        raise UserError(f"{path} could not be read as safetensors ({_first_line(e)}). The file may be "
                        "truncated or corrupt: download it again.") from e
    source, whole = "<root>", state_dict
    if key is not None:  # a flat file: --key selects the entries under "key."
        state_dict = _under_prefix(state_dict, key, path)
        source = key
    beside = _vectors_beside(whole, state_dict)
    state_dict, stripped = _strip_wrapper_prefixes(state_dict)
    meta = {"metadata": dict(metadata)} | ({"stripped_prefixes": stripped} if stripped else {})
    return Checkpoint(state_dict, source, meta, "safetensors", [], beside)


def _under_prefix(state_dict, key, path):
    picked = _prefixed(state_dict, key)
    if not picked:
        tops = sorted({k.split(".")[0] for k in state_dict})
        raise UserError(f"{path} has no tensors under {key!r}; its top-level names are {few(tops)}. "
                        "Pass one of them with --key, or leave --key out to use all tensors.")
    return picked


def _prefixed(mapping, key):
    """The entries of a flat mapping under the dotted prefix `key`, with the prefix stripped ({} if none):
    `--key network` on {"network.conv.weight": ...} gives {"conv.weight": ...}."""
    prefix = key.rstrip(".") + "."
    return {k[len(prefix):]: v for k, v in mapping.items() if isinstance(k, str) and k.startswith(prefix)}


def few(names, n=8):
    """A list for a message: the first n names, then how many more (a state dict can have thousands of keys)."""
    names = [str(x) for x in names]
    if len(names) <= n:
        return str(names)
    return f"[{', '.join(map(repr, names[:n]))}, ...] ({len(names)} in all)"


def _load_edm(path, key):
    state_dict, info = load_edm_pickle(path, key or "ema")
    state_dict, stripped = _strip_wrapper_prefixes(state_dict)
    meta = {k: info[k] for k in ("class_name", "init_kwargs", "init_args", "attributes")}
    if stripped:
        meta["stripped_prefixes"] = stripped
    return Checkpoint(state_dict, key or "ema", meta, "edm-pickle", info["networks_in_file"])


def _torch_load(path, kind, trust_pickle, map_location):
    """torch.load, weights_only unless trusted; mmap for zip files so optimizer state and
    unused copies stay on disk instead of in memory."""
    try:
        # DiT/SiT/REPA store their argparse.Namespace next to the weights; it holds only data.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True,
                              mmap=kind == "zip")
    except pickle.UnpicklingError as e:
        if trust_pickle:
            return _trusted(lambda: torch.load(path, map_location=map_location,
                                               weights_only=False), path)
        raise UserError(_refusal(path, str(e))) from e
    except Exception as e:  # noqa: BLE001  damaged bytes fail in many ways (zip records, storages, opcodes)
        raise UserError(f"{path} could not be read as a torch checkpoint ({_first_line(e)}). "
                        "The file may be truncated or corrupt: download it again.") from e


def _refusal(path, message):
    """One paragraph for torch's weights_only refusal, naming the global it stopped at."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        what = (f"a Python object of type `{found.group(1)}`, which only code named by the file "
                "can rebuild, so icr will not load it by default")
    else:
        detail = re.search(r"WeightsUnpickler error: (.*?)(?:\n\n|$)", message, re.S)
        what = ("content that torch's safe loader refuses"
                + (f" ({detail.group(1).strip()})" if detail else ""))
    return f"{path} holds {what}. {_TRUST_HINT}"


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _pickle_load(path, trust_pickle, map_location):
    """A pickle that is not torch.save output: tensors/dicts only, unless trusted.

    The restricted path always maps storages to the CPU; the trusted one honours map_location.
    """
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, path=str(path)).load()
    except UnsafeGlobalError:
        if not trust_pickle:
            raise
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001  damaged bytes fail in many ways (EOF, bad opcode, bad tensor args)
        raise UserError(f"{path} could not be read as a pickle ({_first_line(e)}). The file "
                        "may be truncated or corrupt: download it again.") from e
    with open(path, "rb") as f:
        return _trusted(lambda: _MappedUnpickler(f, map_location).load(), path)


class _MappedUnpickler(pickle.Unpickler):
    """Full unpickling, except that tensor storages honour map_location (plain pickle.load
    calls torch.load without one, which fails for CUDA tensors on a CPU-only machine)."""

    def __init__(self, file, map_location):
        super().__init__(file)
        self._map_location = map_location

    def find_class(self, module, name):
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return lambda b: torch.load(io.BytesIO(b), map_location=self._map_location,
                                        weights_only=False)
        return super().find_class(module, name)


def _trusted(load, path):
    """Run a full (code-executing) load; missing code becomes a UserError."""
    try:
        return load()
    except (ImportError, AttributeError) as e:
        raise UserError(f"{path} needs Python code that is not installed here to unpickle "
                        f"({_first_line(e)}). Run icr where that code is importable, or "
                        "re-save just the weights as .safetensors there.") from e


# ---------------------------------------------------------------- finding the weights


def _is_state_dict(obj):
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _holds_weights(obj):
    """A state dict, or (only reachable with --trust-pickle) a pickled nn.Module."""
    return _is_state_dict(obj) or isinstance(obj, torch.nn.Module)


def _candidates(root):
    if not isinstance(root, Mapping) or _holds_weights(root):
        return []
    return [str(k) for k, v in root.items() if _holds_weights(v)]


def _auto_pick(obj, path, depth=0):
    """(dotted key parts, weights) chosen EMA-first; None if obj holds none."""
    if _holds_weights(obj):
        return [], obj
    if not isinstance(obj, Mapping) or depth > 2:
        return None
    for key in WEIGHT_KEYS:
        found = _auto_pick(obj[key], path, depth + 1) if key in obj else None
        if found:
            return [key] + found[0], found[1]
    held = _candidates(obj)
    if len(held) == 1:
        return held, obj[held[0]]
    if len(held) > 1:
        raise UserError(f"{path} holds several sets of weights ({few(held)}) and none has a name icr "
                        f"prefers ({', '.join(WEIGHT_KEYS)}). Pick one with --key.")
    return None


def _lookup(root, key, path):
    """Follow a dotted key; a part may itself contain dots (the longest match wins)."""
    obj, parts, walked = root, key.split("."), []
    while parts:
        if not isinstance(obj, Mapping):
            raise UserError(f"{path}: --key {key!r} goes past {'.'.join(walked) or 'the top'}, "
                            f"which is a {type(obj).__name__}, not a dict. Pass a shorter --key.")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in obj:
                walked.append(".".join(parts[:n]))
                obj, parts = obj[walked[-1]], parts[n:]
                break
        else:
            # A flat state dict whose keys carry the rest as a prefix (a wrapper saved whole): that sub-tree.
            picked = _prefixed(obj, ".".join(parts))
            if picked:
                return picked
            where = f"under {'.'.join(walked)!r}" if walked else "at the top level"
            raise UserError(f"{path} has no entry {key!r}: the entries {where} are "
                            f"{few(_entry_names(obj))}. Pass one of them with --key "
                            "(dotted for nested entries, e.g. ema.model; a key prefix such as 'network' takes "
                            "the tensors under it).")
    return obj


def _select(root, key, path):
    """(source label, weights object) for --key or the automatic EMA-first choice."""
    if key is not None:
        obj = _lookup(root, key, path)
        found = _auto_pick(obj, path)
        if found is None:
            raise UserError(f"{path}: entry {key!r} holds no named tensors (it is a "
                            f"{type(obj).__name__}). Pick an entry that holds weights with "
                            f"--key; these do: {few(_candidates(root))}.")
        return ".".join([key] + found[0]), found[1]
    found = _auto_pick(root, path)
    if found is None:
        entries = [str(k) for k in root] if isinstance(root, Mapping) else []
        raise UserError(f"{path} holds no tensors icr recognises as model weights (a "
                        f"{type(root).__name__} with entries {few(entries)}). Pass the entry that "
                        "holds them with --key (dotted for nested entries, e.g. ema.model).")
    return ".".join(found[0]) or "<root>", found[1]


def _entry_names(obj):
    """The entries at one level, for a message; for a flat state dict, its distinct first name parts (so a
    wrapper's 8,000 keys read as `network`)."""
    keys = [str(k) for k in obj]
    if _is_state_dict(obj):
        return sorted({k.split(".")[0] for k in keys})
    return keys


def _strip_wrapper_prefixes(state_dict):
    """Drop "module." / "_orig_mod." when EVERY key has it (a wrapper, not the arch's own name).

    Returns (state_dict, prefixes removed, in order). Applied repeatedly: DDP around a compiled
    model gives "module._orig_mod.".
    """
    stripped = []
    while state_dict:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state_dict)),
                      None)
        if prefix is None:
            break
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
        stripped.append(prefix)
    return state_dict, stripped


def _training_meta(root):
    """Run settings saved next to the weights: a Namespace/dict under "args" etc., counters."""
    if not isinstance(root, Mapping) or _is_state_dict(root):
        return {}
    meta = {}
    for key in _CONFIG_KEYS:
        value = root.get(key)
        if isinstance(value, argparse.Namespace):
            meta[key] = vars(value)
        elif isinstance(value, Mapping):
            meta[key] = dict(value)
    for key in _COUNTER_KEYS:
        if isinstance(root.get(key), (int, float)) and not isinstance(root.get(key), bool):
            meta[key] = root[key]
    return meta


def _from_root(root, key, fmt, path):
    meta = _training_meta(root)
    source, weights = _select(root, key, path)
    if isinstance(weights, torch.nn.Module):
        meta["class_name"] = f"{type(weights).__module__}.{type(weights).__qualname__}"
        weights = weights.state_dict()
    beside = _vectors_beside(root, weights)
    state_dict, stripped = _strip_wrapper_prefixes(dict(weights))
    if stripped:
        meta["stripped_prefixes"] = stripped
    return Checkpoint(state_dict, source, meta, fmt, _candidates(root), beside)


def _vectors_beside(root, weights) -> dict:
    """The 1-D floating-point tensors of `root` outside `weights`, by full dotted name (at most 4 levels down):
    where a schedule kept next to the network is (`alpha_t` beside `gt.*`, taken with --key gt)."""
    if isinstance(weights, torch.nn.Module):
        weights = weights.state_dict()
    taken = {id(v) for v in weights.values()} if isinstance(weights, Mapping) else set()
    out = {}

    def walk(obj, prefix, depth):
        if obj is weights or depth > 4 or not isinstance(obj, Mapping):
            return
        for k, v in obj.items():
            name = f"{prefix}{k}"
            if isinstance(v, torch.Tensor):
                if id(v) not in taken and v.ndim == 1 and v.numel() >= 2 and v.is_floating_point():
                    out[name] = v
            else:
                walk(v, f"{name}.", depth + 1)

    walk(root, "", 0)
    return out
