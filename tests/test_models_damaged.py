"""Damaged or crafted model files a user can hand to icr end in exit 2 with a message, never in a crash (exit 1):
a diffusers folder without weights, EDM-shaped pickles whose modules are malformed, recorded arguments that build
no network, weights of the wrong kind."""

import json
import pickle
import sys
import types
from contextlib import contextmanager
from unittest import mock

import pytest
import torch
from safetensors.torch import save_file

from icrcli.models.archs import edm


def refused(r, *words):
    assert r.code == 2, (r.code, r.err)
    assert "Traceback" not in r.err and "unexpected error" not in r.err, r.err
    for w in words:
        assert w in r.err, (w, r.err)


def tiny_edm():
    torch.manual_seed(0)
    return edm.build_edm("edm", **{**edm.EDM_PRESETS["ddpmpp"], "model_channels": 8, "channel_mult": [1, 2]},
                         img_resolution=8, img_channels=3, num_blocks=1, attn_resolutions=[])


# ------------------------------------------------------------------------------------------- diffusers folders

@pytest.fixture
def diffusers():
    return pytest.importorskip("diffusers", reason="the diffusers extra is not installed")


def tiny_unet_config(diffusers, folder):
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    unet.save_config(folder)
    return unet


def test_diffusers_folder_without_weights(icr, tmp_path, diffusers):
    folder = tmp_path / "unet"
    tiny_unet_config(diffusers, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    r = icr("layers", folder)
    refused(r, f"{folder} has a config.json but no weights", "diffusion_pytorch_model.safetensors", "config.json")
    assert "unsafe serialization" not in r.err and "An error occurred" not in r.err


def test_diffusers_folder_with_damaged_weights_or_config(icr, tmp_path, diffusers):
    folder = tmp_path / "unet"
    unet = tiny_unet_config(diffusers, folder)
    unet.save_pretrained(folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    refused(icr("layers", folder), "diffusers could not load the UNet2DModel", "download it again")
    (folder / "config.json").write_text("{")
    refused(icr("layers", folder), "config.json could not be read as JSON")
    (folder / "config.json").write_text(json.dumps(["UNet2DModel"]))
    refused(icr("layers", folder), "holds a JSON list")


def test_diffusers_class_must_be_a_model_not_a_pipeline(icr, tmp_path, diffusers):
    folder = tmp_path / "unet"
    tiny_unet_config(diffusers, folder).save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    for name in ("DDPMPipeline", "logging", "no_such_class"):
        (folder / "config.json").write_text(json.dumps({**cfg, "_class_name": name}))
        refused(icr("layers", folder), f"{name!r} is not a diffusers model class")


# ------------------------------------------------------------------------------------------- crafted EDM pickles

def _reconstruct_persistent_obj(meta):  # pickled by name only; icr's stub stands in for it
    raise AssertionError("never called")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
_reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"


class Persistent:
    """Pickles as EDM's persistent objects do: `_reconstruct_persistent_obj(meta)`; `later` items are set on the
    result after it is memoised, which is how a pickle makes an object contain itself."""

    def __init__(self, meta, later=None):
        self.meta, self.later = meta, later

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,), None, None,
                iter(self.later.items()) if self.later else None)


@contextmanager
def _persistence_importable():
    pkg, mod = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    pkg.persistence = mod
    with mock.patch.dict(sys.modules, {"torch_utils": pkg, "torch_utils.persistence": mod}):
        yield


def edm_pickle(path, net):
    with _persistence_importable():
        path.write_bytes(pickle.dumps({"ema": net, "loss_fn": None}, protocol=4))
    return path


def _module(state=None, later=None):
    return Persistent({"type": "class", "version": 6, "module_src": "raise SystemExit('ran')",
                       "class_name": "EDMPrecond", **({"state": state} if state is not None else {})}, later)


def _self_containing():
    children = {}
    net = _module(later={"state": {"_parameters": {}, "_buffers": {}, "_modules": children}})
    children["loop"] = net
    return net


def _self_containing_kwargs():
    kwargs = {"img_resolution": 8}
    kwargs["again"] = kwargs
    return _module({"_parameters": {"w": torch.zeros(2)}, "_init_kwargs": kwargs})


@pytest.mark.parametrize("make, words", [
    (lambda: _module({"_parameters": {"weight": "not a tensor"}}), ["holds a str named 'weight'", "tensor"]),
    (lambda: _module([1, 2, 3]), ["a module's state is a list, not a dict"]),
    (lambda: _module({"_parameters": [torch.zeros(1)]}), ["_parameters is a list, not a dict"]),
    (lambda: _module({"_parameters": {}, "_modules": {3: _module({})}}), ["child module named by a int"]),
    (_self_containing, ["the module loop contains itself"]),
    (_self_containing_kwargs, ["nest deeper than 64 (or contain themselves)"]),
], ids=["string-tensor", "state-list", "parameters-list", "int-child-name", "contains-itself", "kwargs-loop"])
def test_malformed_edm_pickles(icr, tmp_path, make, words):
    path = edm_pickle(tmp_path / "network-snapshot.pkl", make())
    refused(icr("layers", path), str(path), *words)


def test_recorded_arguments_that_build_no_network(icr, tmp_path):
    """Right weights, junk constructor arguments: the build fails, and says so."""
    sd = tiny_edm().state_dict()
    path = edm_pickle(tmp_path / "net.pkl", _module({"_parameters": dict(sd),
                                                     "_init_kwargs": {"model_channels": "wide"}}))
    refused(icr("layers", path), "The EDM network cannot be built", "--arch-arg")


def test_weights_of_the_wrong_kind(icr, tmp_path):
    sd = {k: v.contiguous() for k, v in tiny_edm().state_dict().items()}
    name = next(k for k, v in sd.items() if v.is_floating_point())
    sd[name] = torch.zeros(sd[name].shape, dtype=torch.int32)
    save_file(sd, tmp_path / "m.safetensors")
    refused(icr("layers", tmp_path / "m.safetensors"), "shapes or dtypes differ", f"{name} (file torch.int32")
