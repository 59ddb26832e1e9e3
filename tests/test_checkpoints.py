"""Tests for icrcli.models.checkpoints.load_checkpoint: formats, nested training checkpoints, errors."""
import argparse
import os
import pickle
from collections import OrderedDict
from unittest import mock

import pytest
import torch
from safetensors.torch import save_file

from icrcli.models.checkpoints import Checkpoint, load_checkpoint
from icrcli.errors import UserError


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.register_buffer("pos", torch.randn(1, 4))


def tiny_state_dict(seed=0):
    torch.manual_seed(seed)
    return TinyNet().state_dict()


def assert_same(actual, expected, ordered=True):
    if ordered:
        assert list(actual) == list(expected)
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


def dit_checkpoint():
    """The layout facebookresearch/DiT (and SiT, REPA) train.py saves every ckpt_every steps."""
    args = argparse.Namespace(model="DiT-XL/2", image_size=256, num_classes=1000)
    opt = torch.optim.AdamW(TinyNet().parameters(), lr=1e-4)
    return {"model": tiny_state_dict(1), "ema": tiny_state_dict(2), "opt": opt.state_dict(),
            "args": args}


def test_safetensors_round_trip(tmp_path):
    expected = tiny_state_dict()
    path = tmp_path / "w.safetensors"
    save_file(dict(expected), str(path), metadata={"arch": "tiny"})
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.format == "safetensors" and ckpt.source == "<root>"
    assert ckpt.meta["metadata"] == {"arch": "tiny"}
    assert_same(ckpt.state_dict, expected, ordered=False)  # safetensors stores names sorted


def test_safetensors_key_selects_a_prefix(tmp_path):
    inner = tiny_state_dict()
    path = tmp_path / "w.safetensors"
    save_file({**{f"ema.{k}": v for k, v in inner.items()}, "other.x": torch.zeros(1)}, str(path))
    assert_same(load_checkpoint(path, key="ema").state_dict, inner, ordered=False)
    with pytest.raises(UserError, match=r"no tensors under 'nope'.*\['ema', 'other'\]"):
        load_checkpoint(path, key="nope")


def test_plain_state_dict_pt(tmp_path):
    expected = tiny_state_dict()
    path = tmp_path / "DiT-XL-2-256x256.pt"  # the released DiT weights are a bare state dict
    torch.save(expected, path)
    ckpt = load_checkpoint(path)
    assert (ckpt.format, ckpt.source, ckpt.candidates) == ("torch", "<root>", [])
    assert_same(ckpt.state_dict, expected)


def test_dit_training_checkpoint_loads_weights_only_and_prefers_ema(tmp_path):
    checkpoint = dit_checkpoint()
    path = tmp_path / "0050000.pt"
    torch.save(checkpoint, path)
    # The Namespace really does need the allowlist: torch's safe loader refuses it by default.
    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):
        torch.load(path, weights_only=True)
    ckpt = load_checkpoint(path)
    assert ckpt.source == "ema" and ckpt.candidates == ["model", "ema"]
    assert ckpt.meta["args"] == vars(checkpoint["args"])
    assert_same(ckpt.state_dict, checkpoint["ema"])
    assert_same(load_checkpoint(path, key="model").state_dict, checkpoint["model"])


def test_weights_only_is_really_used(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save(dit_checkpoint(), path)
    real_load = torch.load
    with mock.patch("torch.load", side_effect=real_load) as spy:
        load_checkpoint(path)
    assert spy.call_args.kwargs["weights_only"] is True
    assert spy.call_args.kwargs["map_location"] == "cpu"


@pytest.mark.parametrize("keys, chosen", [
    (("model", "ema_model"), "ema_model"),
    (("state_dict", "model_ema"), "model_ema"),
    (("model_state_dict", "ema_state_dict"), "ema_state_dict"),
    (("net", "model"), "model"),
    (("module",), "module"),
])
def test_ema_first_preference(tmp_path, keys, chosen):
    weights = {k: tiny_state_dict(i) for i, k in enumerate(keys)}
    path = tmp_path / "ckpt.pth"
    torch.save({**weights, "epoch": 7}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.source == chosen and sorted(ckpt.candidates) == sorted(keys)
    assert ckpt.meta["epoch"] == 7
    assert_same(ckpt.state_dict, weights[chosen])


def test_single_unnamed_weight_entry_is_used_and_ambiguity_is_an_error(tmp_path):
    one = tmp_path / "one.pt"
    torch.save({"raw_weights": tiny_state_dict(), "step": 3}, one)
    assert load_checkpoint(one).source == "raw_weights"
    two = tmp_path / "two.pt"
    torch.save({"gen": tiny_state_dict(0), "disc": tiny_state_dict(1)}, two)
    with pytest.raises(UserError, match=r"several sets of weights \(\['gen', 'disc'\]\).*--key"):
        load_checkpoint(two)
    assert_same(load_checkpoint(two, key="disc").state_dict, tiny_state_dict(1))


def test_dotted_key_and_wrong_key(tmp_path):
    inner = tiny_state_dict()
    path = tmp_path / "nested.ckpt"
    torch.save({"ema": {"model": inner, "decay": torch.tensor(0.999)}, "opt": {}}, path)
    ckpt = load_checkpoint(path, key="ema.model")
    assert ckpt.source == "ema.model"
    assert_same(ckpt.state_dict, inner)
    assert load_checkpoint(path).source == "ema.model"  # automatic choice looks one level down
    with pytest.raises(UserError, match=r"no entry 'ema.shadow'.*under 'ema' are \['model', 'decay'\]"):
        load_checkpoint(path, key="ema.shadow")
    with pytest.raises(UserError, match=r"no entry 'emma'.*top level are \['ema', 'opt'\]"):
        load_checkpoint(path, key="emma")
    with pytest.raises(UserError, match="'opt' holds no named tensors"):
        load_checkpoint(path, key="opt")


def test_key_containing_dots(tmp_path):
    path = tmp_path / "dots.pt"
    torch.save({"ema.v2": tiny_state_dict()}, path)
    assert load_checkpoint(path, key="ema.v2").source == "ema.v2"


def test_lightning_checkpoint_keeps_model_prefix(tmp_path):
    inner = {f"model.{k}": v for k, v in tiny_state_dict().items()}
    path = tmp_path / "epoch=3.ckpt"
    torch.save({"state_dict": inner, "epoch": 3, "global_step": 1000,
                "hyper_parameters": {"lr": 1e-4}, "optimizer_states": []}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.source == "state_dict"
    assert_same(ckpt.state_dict, inner)
    assert ckpt.meta == {"hyper_parameters": {"lr": 1e-4}, "epoch": 3, "global_step": 1000}


@pytest.mark.parametrize("prefix, stripped", [
    ("module.", ["module."]),
    ("_orig_mod.", ["_orig_mod."]),
    ("module._orig_mod.", ["module.", "_orig_mod."]),
])
def test_wrapper_prefixes_are_stripped(tmp_path, prefix, stripped):
    expected = tiny_state_dict()
    path = tmp_path / "ddp.pt"
    torch.save({"ema": {prefix + k: v for k, v in expected.items()}}, path)
    ckpt = load_checkpoint(path)
    assert_same(ckpt.state_dict, expected)
    assert ckpt.meta["stripped_prefixes"] == stripped


def test_prefix_kept_unless_every_key_has_it(tmp_path):
    mixed = {"module.a": torch.ones(1), "b": torch.ones(1)}
    path = tmp_path / "mixed.pt"
    torch.save(mixed, path)
    ckpt = load_checkpoint(path)
    assert list(ckpt.state_dict) == ["module.a", "b"]
    assert "stripped_prefixes" not in ckpt.meta


@pytest.mark.parametrize("legacy", [False, True])
def test_tensors_saved_on_gpu_load_on_cpu(tmp_path, legacy):
    # torch records each storage's device through torch.serialization.location_tag; claiming
    # "cuda:0" writes the same bytes a GPU save would. Honest limit: the storages' bytes are
    # CPU bytes, so this tests the device mapping, not a real device-to-host copy.
    expected = tiny_state_dict()
    path = tmp_path / "gpu.pt"
    with mock.patch("torch.serialization.location_tag", return_value="cuda:0"):
        torch.save({"ema": expected}, path, _use_new_zipfile_serialization=not legacy)
    if not torch.cuda.is_available():  # on a CPU-only machine a naive torch.load fails
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    ckpt = load_checkpoint(path)
    assert_same(ckpt.state_dict, expected)
    assert all(t.device.type == "cpu" for t in ckpt.state_dict.values())


def test_mps_tensors_load_on_cpu(tmp_path):
    path = tmp_path / "mps.pt"
    with mock.patch("torch.serialization.location_tag", return_value="mps"):
        torch.save(tiny_state_dict(), path)
    assert_same(load_checkpoint(path).state_dict, tiny_state_dict())


class Config:  # a class torch's safe loader does not know
    def __init__(self):
        self.lr = 1e-4


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > " + Evil.target,))


def test_pickle_needing_code_is_refused_with_the_global_named(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": tiny_state_dict(), "config": Config()}, path)
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert f"`{Config.__module__}.Config`" in message
    assert "--trust-pickle" in message and "running the code" in message
    ckpt = load_checkpoint(path, trust_pickle=True)
    assert_same(ckpt.state_dict, tiny_state_dict())


def test_code_in_torch_file_does_not_run(tmp_path):
    Evil.target = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    torch.save({"model": tiny_state_dict(), "x": Evil()}, path)
    with pytest.raises(UserError, match=r"\.system`"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_trusted_pickled_module_gives_its_state_dict(tmp_path):
    torch.manual_seed(0)
    net = TinyNet()
    path = tmp_path / "model.pth"
    torch.save({"ema": net}, path)  # torch.save(model): needs --trust-pickle
    with pytest.raises(UserError, match="TinyNet"):
        load_checkpoint(path)
    ckpt = load_checkpoint(path, trust_pickle=True)
    assert ckpt.meta["class_name"] == f"{TinyNet.__module__}.TinyNet"
    assert ckpt.source == "ema"
    assert_same(ckpt.state_dict, net.state_dict())


def test_plain_pickle_of_tensors_loads_without_trust(tmp_path):
    expected = tiny_state_dict()
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"ema": OrderedDict(expected)}))
    ckpt = load_checkpoint(path)
    assert ckpt.format == "pickle" and ckpt.source == "ema"
    assert_same(ckpt.state_dict, expected)


def test_plain_pickle_with_code_needs_trust(tmp_path):
    Evil.target = str(tmp_path / "pwned")
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": tiny_state_dict(), "x": Evil()}))
    with pytest.raises(UserError, match="--trust-pickle"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
    path.write_bytes(pickle.dumps({"model": tiny_state_dict(), "cfg": Config()}))
    assert_same(load_checkpoint(path, trust_pickle=True).state_dict, tiny_state_dict())


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_unknown_or_corrupt_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a checkpoint")
    with pytest.raises(UserError, match="not a checkpoint format"):
        load_checkpoint(text)
    path = tmp_path / "w.pt"
    torch.save(tiny_state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_checkpoint(path)
    st = tmp_path / "w.safetensors"
    save_file(dict(tiny_state_dict()), str(st))
    st.write_bytes(st.read_bytes()[:-20])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_checkpoint(st)


def test_no_tensors_found(tmp_path):
    path = tmp_path / "empty.pt"
    torch.save({"step": 5, "opt": {"lr": 0.1}}, path)
    with pytest.raises(UserError, match=r"no tensors icr recognises.*\['step', 'opt'\]"):
        load_checkpoint(path)
