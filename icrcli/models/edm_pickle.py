"""Read NVlabs EDM network pickles without running the code they carry.

An EDM snapshot (`network-snapshot-*.pkl`, `edm-cifar10-32x32-cond-vp.pkl`, ...) is a plain
`pickle.dump` of {"ema": net, "loss_fn": ..., "augment_pipe": ..., "dataset_kwargs": ...}.
Every network class is a `torch_utils.persistence.persistent_class`, which pickles as
`_reconstruct_persistent_obj(meta)` with meta = {type, version, module_src, class_name, state}:
the original unpickler `exec`s `module_src` (arbitrary code) and fills a fresh object with
`state` (the module's `__dict__`). We never exec: the reconstructor is replaced by a stub that
keeps `meta`, and the state dict is read straight out of the nested `_parameters` / `_buffers` /
`_modules` entries. Only the handful of globals such a pickle needs are allowed.
"""
# Format reference: NVlabs/edm torch_utils/persistence.py (persistent_class.__reduce__,
# _reconstruct_persistent_obj) and training/training_loop.py (what a snapshot holds).

import _compat_pickle
import io
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

try:  # numpy >= 2
    import numpy._core.multiarray as _numpy_multiarray
except ImportError:  # numpy 1.x
    import numpy.core.multiarray as _numpy_multiarray

from icrcli.errors import UserError

_SNIFF_BYTES = 1 << 20  # the first persistent object's global sits within the first KBs
_PERSISTENCE_MODULE = b"torch_utils.persistence"


class UnsafeGlobalError(UserError):
    """The pickle names a global outside the allowlist (loading it would run code)."""


class PersistentMeta(dict):
    """The meta dict of one persistent object: type, version, module_src, class_name, state.

    `module_src` is kept as an inert string and never executed.
    """


class EasyDict(dict):
    """Stand-in for `dnnlib.util.EasyDict`: the data, without dnnlib."""


class TorchModuleState:
    """Stand-in for a plain `torch.nn` module (ModuleDict, ModuleList, ...) met inside a network.

    Unpickling a torch module is `cls.__new__` then `__setstate__(module.__dict__)`; we keep that
    dict instead of building a real module, so no torch module code runs.
    """

    torch_class = "torch.nn.Module"

    def __setstate__(self, state):
        self.state = state


def _persistent_stub(meta):
    """Replaces `_reconstruct_persistent_obj`: keep meta, never exec meta["module_src"]."""
    return PersistentMeta(meta)


def _load_storage_from_bytes(b):
    """Replaces `torch.storage._load_from_bytes`, which calls torch.load(weights_only=False).

    The bytes are torch's legacy format for one storage; weights_only=True reads it without
    arbitrary globals, and map_location="cpu" lets storages saved on a GPU load on any machine.
    """
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


def _torch_module_stub(module, name):
    """A TorchModuleState subclass named after the torch.nn class it stands in for."""
    return type(name, (TorchModuleState,), {"torch_class": f"{module}.{name}"})


def _latin1_encode(text, encoding="latin1"):
    """Replaces `_codecs.encode`, which protocol-2 pickles use to store bytes as latin-1 text."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} refused")
    return text.encode("latin1")


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_stub,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("torch", "device"): torch.device,
    ("torch", "Size"): torch.Size,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
}
# torch dtypes pickle as globals (torch.float16). The table is read from torch's own namespace once, so a
# name the pickle gives is only looked up here: `getattr(torch, name)` would import any lazily loaded
# submodule the file names (torch._dynamo, torch.onnx, ...) before refusing it.
_TORCH_DTYPES = {name: value for name, value in vars(torch).items() if isinstance(value, torch.dtype)}
# numpy scalars (EDM stores np.sqrt(0.5) as skip_scale) pickle via numpy's own rebuilders, found
# under numpy.core before numpy 2 and numpy._core since.
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "scalar")] = _numpy_multiarray.scalar
    _ALLOWED[(_mod, "_reconstruct")] = _numpy_multiarray._reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals an EDM network pickle needs.

    Anything else (os.system, a class from the file's own code, ...) raises UserError.
    """

    def __init__(self, file, path="the pickle"):
        super().__init__(file)
        self._path = path

    def find_class(self, module, name):
        # Protocols < 3 write Python 2 names (__builtin__.set); map them as pickle's own
        # find_class does. The result still has to pass the allowlist below.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module.startswith("torch.nn.modules.") and name.isidentifier():
            return _torch_module_stub(module, name)
        if module == "torch" and name in _TORCH_DTYPES:
            return _TORCH_DTYPES[name]
        raise UnsafeGlobalError(
            f"{self._path} needs the Python global `{module}.{name}`, which icr will not load from "
            "a pickle: rebuilding it means running code named by the file (icr reads tensors, "
            "dicts and NVlabs EDM networks without that). If you trust the file, pass "
            "--trust-pickle to load it with Python's pickle, which runs the file's embedded code; "
            "better, re-save just the weights (a state dict) as .safetensors or .pt.")


def is_edm_pickle(path) -> bool:
    """Cheap sniff: a pickle header (protocol >= 2) that names `torch_utils.persistence` early."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False
    return len(head) > 2 and head[0] == 0x80 and 2 <= head[1] <= 5 and _PERSISTENCE_MODULE in head


class _Damaged(Exception):
    """The unpickled objects are not shaped like torch modules (said with the file's name by load_edm_pickle)."""


# A real EDM network nests modules 5 deep and has a few hundred; these bounds only stop crafted files.
_MAX_DEPTH = 64
_MAX_NODES = 1_000_000


def _module_state(obj):
    """The `__dict__` state of a pickled module-like object ({} if it has none), or None if obj is not one."""
    if isinstance(obj, PersistentMeta):
        state = obj.get("state")
    elif isinstance(obj, TorchModuleState):
        state = getattr(obj, "state", None)
    else:
        return None
    if state is None:
        return {}
    if not isinstance(state, dict):
        raise _Damaged(f"a module's state is a {type(state).__name__}, not a dict")
    return state


def _table(state, name, kinds=(dict,)):
    """state[name] ({} when absent or None), checked to be one of `kinds`."""
    value = state.get(name)
    if value is None:
        return {}
    if not isinstance(value, kinds):
        raise _Damaged(f"a module's {name} is a {type(value).__name__}, not a {kinds[0].__name__}")
    return value


def _collect_tensors(obj, prefix, out, ancestors=(), budget=None):
    """Walk nested module states and fill `out` with name -> tensor, named as net.state_dict().

    Mirrors torch.nn.Module.state_dict: own parameters, then own persistent buffers (None
    entries skipped), then children in registration order with "child." prefixes. A module that
    contains itself, nesting deeper than _MAX_DEPTH, more than _MAX_NODES modules, or a non-tensor
    where a tensor belongs raise _Damaged.
    """
    budget = [_MAX_NODES] if budget is None else budget
    state = _module_state(obj)
    if state is None:
        return
    where = prefix[:-1] or "the network"
    if any(obj is a for a in ancestors):
        raise _Damaged(f"the module {where} contains itself")
    if len(ancestors) >= _MAX_DEPTH or budget[0] <= 0:
        raise _Damaged(f"modules nest deeper than {_MAX_DEPTH} or number more than {_MAX_NODES}")
    budget[0] -= 1
    skip = _table(state, "_non_persistent_buffers_set", (set, frozenset, list, tuple, dict))
    for table in ("_parameters", "_buffers"):
        for name, tensor in _table(state, table).items():
            if tensor is None or (table == "_buffers" and name in skip):
                continue
            if not isinstance(name, str) or not torch.is_tensor(tensor):
                raise _Damaged(f"{where} holds a {type(tensor).__name__} named {name!r} among its {table[1:]}, "
                               "where a tensor belongs")
            out[prefix + name] = tensor.detach()
    for name, child in _table(state, "_modules").items():
        if child is not None:
            if not isinstance(name, str):
                raise _Damaged(f"{where} has a child module named by a {type(name).__name__}")
            _collect_tensors(child, prefix + name + ".", out, (*ancestors, obj), budget)


def _plain(value, depth=0):
    """EasyDicts/OrderedDicts -> dicts, recursively, so recorded kwargs read as ordinary data."""
    if depth > _MAX_DEPTH:
        raise _Damaged(f"the recorded constructor arguments nest deeper than {_MAX_DEPTH} (or contain themselves)")
    if isinstance(value, dict):
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, depth + 1) for v in value)
    return value


def _class_name(obj):
    if isinstance(obj, PersistentMeta):
        return obj.get("class_name", "?")
    return type(obj).torch_class


def _is_network(obj):
    """A pickled torch module (it has a parameter table), as opposed to e.g. EDM's loss_fn."""
    try:
        state = _module_state(obj)
    except _Damaged:
        return False
    return state is not None and "_parameters" in state


def _network_entries(top):
    """Top-level entries of the file that are networks, e.g. ["ema"]."""
    return [str(k) for k, v in top.items() if _is_network(v)] if isinstance(top, dict) else []


def _net_info(obj, top):
    """What the pickle records about the network: class, constructor kwargs, simple attributes."""
    state = _module_state(obj)
    attributes = {k: v for k, v in state.items()
                  if isinstance(k, str) and not k.startswith("_") and k != "training"
                  and isinstance(v, (bool, int, float, str, np.generic))}
    return {"class_name": _class_name(obj),
            "init_kwargs": _plain(_table(state, "_init_kwargs")),
            "init_args": _plain(list(_table(state, "_init_args", (list, tuple)))),
            "attributes": attributes,
            "keys_in_file": [str(k) for k in top] if isinstance(top, dict) else [],
            "networks_in_file": _network_entries(top)}


def read_edm_pickle(path):
    """Unpickle `path` with RestrictedUnpickler; returns the top object (a dict for EDM)."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, path=str(path)).load()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001  damaged bytes fail in many ways (EOF, bad opcode, bad tensor args, ...)
        raise UserError(
            f"{path} could not be read as a pickle ({type(e).__name__}: {str(e)[:200]}). The file may be "
            "truncated or corrupt: download it again, or convert it to .safetensors on a "
            "machine where it loads.") from e


def _select(top, key, path):
    """The object stored under `key` in the top-level dict (or the top object itself)."""
    if _module_state(top) is not None:
        return top
    if not isinstance(top, dict):
        raise UserError(f"{path} holds a {type(top).__name__}, not an EDM snapshot dict or a "
                        "network: nothing icr can take weights from. Pass a network pickle.")
    if key not in top:
        raise UserError(f"{path} has no entry {key!r}; its entries are {[str(k) for k in top]}. "
                        "Pass one of them with --key (EDM snapshots keep the weights in 'ema').")
    return top[key]


def load_edm_pickle(path, key="ema"):
    """Weights of the network under `key` in an EDM pickle, without executing its code.

    Returns (state_dict, info): state_dict maps the names net.state_dict() would use to CPU
    tensors; info = {"class_name": "EDMPrecond" (the pickle stores the bare class name, not
    its module), "init_kwargs": the recorded constructor kwargs, "init_args": positional ones,
    "attributes": scalar attributes of the net (img_resolution, sigma_data, ...),
    "keys_in_file": top-level entries, "networks_in_file": those that are networks}.
    """
    path = Path(path)
    top = read_edm_pickle(path)
    try:
        net = _select(top, key, path)
        info = _net_info(net, top) if _module_state(net) is not None else None
        state_dict = {}
        _collect_tensors(net, "", state_dict)
    except _Damaged as e:
        raise UserError(f"{path}: {e}. The file is damaged, or was not written by EDM's training code; icr cannot "
                        "take weights from it.") from None
    if not state_dict:
        what = _class_name(net) if info else type(net).__name__
        raise UserError(f"{path}: entry {key!r} (a {what}) holds no weights. "
                        f"Pick a network entry with --key: {_network_entries(top)}.")
    return state_dict, info
