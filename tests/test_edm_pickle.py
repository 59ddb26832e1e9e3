"""Tests for icrcli.models.edm_pickle: EDM network pickles load without running their embedded code.

The pickles are built here the way NVlabs EDM builds them: a fake `torch_utils.persistence` and
`dnnlib` package (a compact re-implementation of the persistence decorator's pickling side)
decorates small networks, `pickle.dump` writes an EDM-style snapshot dict, and the fake packages
are removed again before icr reads the file, as on a user's machine without the EDM code.
"""
import importlib.util
import os
import pickle
import sys
import textwrap
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
import torch

from icrcli.models.edm_pickle import is_edm_pickle, load_edm_pickle
from icrcli.errors import UserError

DNNLIB_INIT = "from .util import EasyDict\n"
DNNLIB_UTIL = textwrap.dedent('''
    class EasyDict(dict):
        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name)
        def __setattr__(self, name, value):
            self[name] = value
''')

# Same mechanism as NVlabs/edm torch_utils/persistence.py: the object pickles as
# _reconstruct_persistent_obj(meta) with the module's source and the object's state
# (super().__reduce__()[2], i.e. Module.__getstate__() = a copy of __dict__); unpickling
# execs that source in a fresh module.
PERSISTENCE = textwrap.dedent('''
    import copy, inspect, sys, types, uuid
    import dnnlib

    _decorators = set()
    _module_to_src = {}
    _src_to_module = {}

    def _source_of(module):
        if module not in _module_to_src:
            src = inspect.getsource(module)
            _module_to_src[module] = src
            _src_to_module[src] = module
        return _module_to_src[module]

    def persistent_class(orig_class):
        if orig_class in _decorators:
            return orig_class
        src = _source_of(sys.modules[orig_class.__module__])

        class Decorator(orig_class):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self._init_args = copy.deepcopy(args)
                self._init_kwargs = copy.deepcopy(kwargs)

            def __reduce__(self):
                fields = list(super().__reduce__()) + [None] * 3
                meta = dict(type="class", version=6, module_src=src,
                            class_name=orig_class.__name__, state=fields[2])
                return (_reconstruct_persistent_obj, (meta,), None)

        Decorator.__name__ = orig_class.__name__
        Decorator.__module__ = orig_class.__module__
        _decorators.add(Decorator)
        return Decorator

    def _reconstruct_persistent_obj(meta):
        meta = dnnlib.EasyDict(meta)
        module = _src_to_module.get(meta.module_src)
        if module is None:
            module = types.ModuleType("_imported_module_" + uuid.uuid4().hex)
            sys.modules[module.__name__] = module
            _module_to_src[module] = meta.module_src
            _src_to_module[meta.module_src] = module
            exec(meta.module_src, module.__dict__)
        cls = persistent_class(module.__dict__[meta.class_name])
        obj = cls.__new__(cls)
        if callable(getattr(obj, "__setstate__", None)):
            obj.__setstate__(dict(meta.state))
        else:
            obj.__dict__.update(meta.state)
        return obj
''')

# The networks: nested persistent modules, a ModuleDict and a ModuleList, a plain torch module,
# None parameters/buffers, a non-persistent buffer, numpy scalars in the recorded kwargs. The
# top-level side effect only fires when a pickle's embedded copy of this source is executed.
NETWORKS = textwrap.dedent('''
    import numpy as np
    import torch
    from torch_utils import persistence

    if __name__ != "fake_edm_networks":
        open(SENTINEL, "w").write("module_src was executed")

    @persistence.persistent_class
    class Leaf(torch.nn.Module):
        def __init__(self, cin, cout, bias=True, scale=1.0):
            super().__init__()
            self.scale = scale
            self.weight = torch.nn.Parameter(torch.randn(cout, cin))
            self.bias = torch.nn.Parameter(torch.randn(cout)) if bias else None
            self.register_buffer("filt", torch.randn(2, 2))
            self.register_buffer("cache", torch.randn(3), persistent=False)
            self.register_buffer("absent", None)

    @persistence.persistent_class
    class Body(torch.nn.Module):
        def __init__(self, channels, channel_mult=(1, 2), init=dict()):
            super().__init__()
            self.enc = torch.nn.ModuleDict()
            for i, mult in enumerate(channel_mult):
                self.enc[f"{8 >> i}x{8 >> i}_block"] = Leaf(channels, channels * mult, **init)
            self.norm = torch.nn.GroupNorm(2, channels)
            self.heads = torch.nn.ModuleList([Leaf(channels, channels, bias=False), Leaf(channels, 2)])
            self.skip = None

    @persistence.persistent_class
    class Precond(torch.nn.Module):
        def __init__(self, img_resolution, img_channels, label_dim=0, sigma_data=0.5,
                     model_type="Body", **model_kwargs):
            super().__init__()
            self.img_resolution = img_resolution
            self.img_channels = img_channels
            self.sigma_data = sigma_data
            self.model = globals()[model_type](**model_kwargs)

    @persistence.persistent_class
    class Loss:
        def __init__(self, P_mean=-1.2, P_std=1.2):
            self.P_mean = P_mean
            self.P_std = P_std
''')

FAKE_MODULES = ("dnnlib", "dnnlib.util", "torch_utils", "torch_utils.persistence", "fake_edm_networks")

INIT_KWARGS = dict(img_resolution=8, img_channels=3, label_dim=10, sigma_data=0.5,
                   model_type="Body", channels=4, channel_mult=[1, 2],
                   init=dict(scale=np.sqrt(0.5)))


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@contextmanager
def fake_edm_code(root, sentinel):
    """Make `torch_utils`, `dnnlib` and `fake_edm_networks` importable; remove all trace after."""
    _write(root / "dnnlib" / "__init__.py", DNNLIB_INIT)
    _write(root / "dnnlib" / "util.py", DNNLIB_UTIL)
    _write(root / "torch_utils" / "__init__.py", "")
    _write(root / "torch_utils" / "persistence.py", PERSISTENCE)
    _write(root / "fake_edm_networks.py", NETWORKS.replace("SENTINEL", repr(str(sentinel))))
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield importlib.import_module("fake_edm_networks")
    finally:
        sys.path.remove(str(root))
        for name in list(sys.modules):
            if name in FAKE_MODULES or name.startswith("_imported_module_"):
                del sys.modules[name]
        importlib.invalidate_caches()


def make_snapshot(net, loss_fn, dnnlib):
    """What EDM's training loop pickles (training/training_loop.py)."""
    return {"ema": net, "loss_fn": loss_fn, "augment_pipe": None,
            "dataset_kwargs": dnnlib.EasyDict(path="cifar10-32x32.zip", xflip=False)}


def build_edm_pickle(tmp_path, protocol=4, location=None):
    """Write an EDM-style pickle; returns (path, expected state dict, sentinel path)."""
    sentinel = tmp_path / "sentinel.txt"
    path = tmp_path / "network-snapshot-000000.pkl"
    with fake_edm_code(tmp_path / "code", sentinel) as networks:
        torch.manual_seed(0)
        net = networks.Precond(**INIT_KWARGS).eval().requires_grad_(False)
        expected = {k: v.clone() for k, v in net.state_dict().items()}
        snapshot = make_snapshot(net, networks.Loss(), sys.modules["dnnlib"])
        with open(path, "wb") as f, mock.patch("torch.serialization.location_tag",
                                               return_value=location) if location else _nothing():
            pickle.dump(snapshot, f, protocol=protocol)
    assert importlib.util.find_spec("torch_utils") is None  # gone, as on a user's machine
    return path, expected, sentinel


@contextmanager
def _nothing():
    yield


@pytest.mark.parametrize("protocol", [2, 4])
def test_recovers_state_dict_and_kwargs_without_running_code(tmp_path, protocol):
    path, expected, sentinel = build_edm_pickle(tmp_path, protocol)
    assert is_edm_pickle(path)
    state_dict, info = load_edm_pickle(path)
    assert list(state_dict) == list(expected)  # same names, same order as net.state_dict()
    for name, tensor in expected.items():
        assert torch.equal(state_dict[name], tensor), name
        assert state_dict[name].dtype == tensor.dtype and state_dict[name].device.type == "cpu"
    assert "model.enc.8x8_block.filt" in state_dict and "model.norm.weight" in state_dict
    assert not any(k.endswith((".cache", ".absent")) for k in state_dict)
    assert info["class_name"] == "Precond"
    assert info["init_kwargs"] == INIT_KWARGS
    assert info["attributes"]["img_resolution"] == 8 and info["attributes"]["sigma_data"] == 0.5
    assert info["keys_in_file"] == ["ema", "loss_fn", "augment_pipe", "dataset_kwargs"]
    assert info["networks_in_file"] == ["ema"]
    assert not sentinel.exists()


def test_sentinel_fires_when_pickle_is_loaded_the_original_way(tmp_path):
    """Control for the test above: the embedded source really does run under plain pickle."""
    path, expected, sentinel = build_edm_pickle(tmp_path)
    with fake_edm_code(tmp_path / "code", sentinel):
        sys.modules["torch_utils.persistence"]._src_to_module.clear()  # as in a fresh process
        with open(path, "rb") as f:
            net = pickle.load(f)["ema"]
        assert sentinel.read_text() == "module_src was executed"
        assert list(net.state_dict()) == list(expected)


def test_storages_saved_on_gpu_load_on_cpu(tmp_path):
    # torch records each storage's device via torch.serialization.location_tag; claiming
    # "cuda:0" makes plain unpickling fail here (no CUDA), which load_edm_pickle must avoid.
    with mock.patch("torch.serialization.location_tag", return_value="cuda:0"):
        blob = pickle.dumps(torch.ones(2))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            pickle.loads(blob)
    path, expected, _ = build_edm_pickle(tmp_path, location="cuda:0")
    state_dict, _ = load_edm_pickle(path)
    assert all(torch.equal(state_dict[k], v) for k, v in expected.items())


def test_key_selection_and_errors(tmp_path):
    path, _, _ = build_edm_pickle(tmp_path)
    with pytest.raises(UserError, match=r"no entry 'G_ema'.*'ema', 'loss_fn'"):
        load_edm_pickle(path, key="G_ema")
    with pytest.raises(UserError, match=r"a Loss\) holds no weights.*\[.ema.\]"):
        load_edm_pickle(path, key="loss_fn")
    with pytest.raises(UserError, match=r"a EasyDict\) holds no weights.*\[.ema.\]"):
        load_edm_pickle(path, key="dataset_kwargs")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > " + _Evil.target,))


def test_refuses_code_globals_with_clear_message(tmp_path):
    _Evil.target = str(tmp_path / "pwned")
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"ema": _Evil()}))
    with pytest.raises(UserError) as err:
        load_edm_pickle(path)
    message = str(err.value)
    assert f"{os.system.__module__}.system" in message  # posix.system on Linux
    assert "--trust-pickle" in message and "embedded code" in message
    assert not (tmp_path / "pwned").exists()


def test_refuses_persistence_lookalikes(tmp_path):
    """Only the exact reconstructor is stubbed; other names from the same module are refused."""
    # protocol 4: push module and name, STACK_GLOBAL, call it with ("x",)
    payload = b"\x80\x04\x8c\x17torch_utils.persistence\x8c\x0e_src_to_module\x93\x8c\x01x\x85R."
    path = tmp_path / "lookalike.pkl"
    path.write_bytes(payload)
    with pytest.raises(UserError, match=r"torch_utils\.persistence\._src_to_module"):
        load_edm_pickle(path)


def test_is_edm_pickle_rejects_other_files(tmp_path):
    zipped = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(1)}, zipped)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"w": 1}))
    assert not is_edm_pickle(zipped)
    assert not is_edm_pickle(plain)
    assert not is_edm_pickle(tmp_path / "missing.pkl")


def test_corrupt_edm_pickle_is_a_user_error(tmp_path):
    path, _, _ = build_edm_pickle(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_edm_pickle(path)


@pytest.mark.slow
def test_pickled_edmprecond_loads_strictly_into_icr_edm_port(tmp_path):
    """A snapshot of a tiny EDMPrecond(SongUNet), pickled as EDM does (every network class
    persistent), rebuilds in icrcli.models.archs.edm from the recovered kwargs and computes the same."""
    edm = pytest.importorskip("icrcli.models.archs.edm")
    kwargs = dict(edm.EDM_PRESETS["ddpmpp"], img_resolution=8, img_channels=3, label_dim=0,
                  model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                  augment_dim=9, dropout=0.13)
    nets = sys.modules[edm.SongUNet.__module__]  # the port's own module (edm_networks), edm re-exports it
    classes = [n for n, c in vars(nets).items() if isinstance(c, type)
               and issubclass(c, torch.nn.Module) and c.__module__ == nets.__name__]
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor([0.5, 2.0])
    path = tmp_path / "edm-tiny.pkl"
    with fake_edm_code(tmp_path / "code", tmp_path / "sentinel") as networks, \
            pytest.MonkeyPatch.context() as patch:
        persistence = sys.modules["torch_utils.persistence"]
        for name in classes:  # what @persistence.persistent_class does in EDM's networks.py
            persistent = persistence.persistent_class(getattr(nets, name))
            patch.setattr(nets, name, persistent)
            if hasattr(edm, name):
                patch.setattr(edm, name, persistent)
        for table in (edm.NETWORKS, edm.PRECONDS):
            for name, cls in list(table.items()):
                patch.setitem(table, name, getattr(nets, cls.__name__))
        torch.manual_seed(0)
        net = edm.EDMPrecond(**kwargs).eval().requires_grad_(False)
        with torch.no_grad():
            expected = net(x, sigma)
        with open(path, "wb") as f:
            pickle.dump(make_snapshot(net, networks.Loss(), sys.modules["dnnlib"]), f)
    assert edm.SongUNet.__bases__ == (torch.nn.Module,)  # the undecorated port again
    state_dict, info = load_edm_pickle(path)
    assert info["class_name"] == "EDMPrecond" and info["init_kwargs"] == kwargs
    rebuilt = edm.build_edm("edm", **info["init_kwargs"]).eval()
    rebuilt.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x, sigma), expected, atol=1e-6)


def _global(module, name):
    """A protocol-2 pickle that is just the global `module.name`."""
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."


@pytest.mark.slow
@pytest.mark.parametrize("payload", [
    _global("torch", "_dynamo"),                                     # a plain pickle
    b"\x80\x02ctorch_utils.persistence\n_reconstruct_persistent_obj\n0" + _global("torch", "_dynamo")[2:],  # EDM
], ids=["pickle", "edm-pickle"])
def test_refused_torch_global_imports_nothing(tmp_path, payload):
    """Refusing `torch._dynamo` must not import it first (torch imports such submodules lazily on getattr)."""
    import subprocess
    path = tmp_path / "m.pkl"
    path.write_bytes(payload)
    script = textwrap.dedent(f"""
        import sys
        from icrcli.errors import UserError
        from icrcli.models.checkpoints import load_checkpoint
        assert "torch._dynamo" not in sys.modules
        try:
            load_checkpoint({str(path)!r})
        except UserError as e:
            print("refused:", e)
        print("imported:", sorted(m for m in ("torch._dynamo", "torch.onnx", "torch._inductor") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "refused:" in out and "`torch._dynamo`" in out
    assert "imported: []" in out
