"""The sidecar (CKPT.icr.json / icr.json) describes data and never makes icr run code; an icr result that happens to
be called icr.json is not a sidecar; the sidecar used is said on stderr and recorded with its sha256."""

import hashlib
import json
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from icrcli.errors import UserError
from icrcli.models.archs import edm
from icrcli.models.resolve import ModelOptions, load_model, merge_sidecar, noise_convention

TESTS = Path(__file__).parent


def tiny_edm(path: Path) -> Path:
    """A 3x8x8 EDM SongUNet (DDPM++) as a flat .safetensors state dict."""
    torch.manual_seed(0)
    net = edm.build_edm("edm", **{**edm.EDM_PRESETS["ddpmpp"], "model_channels": 8, "channel_mult": [1, 2]},
                        img_resolution=8, img_channels=3, num_blocks=1, attn_resolutions=[])
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path


def user_net(path: Path) -> Path:
    import user_arch
    torch.manual_seed(1)
    torch.save(user_arch.TinyDenoiser(width=8, depth=2).state_dict(), path)
    return path


def refused(r, *words):
    assert r.code == 2, (r.code, r.err)
    assert "Traceback" not in r.err and "unexpected error" not in r.err, r.err
    for w in words:
        assert w in r.err, (w, r.err)


# ------------------------------------------------------------------------------------------- no code from a sidecar

def test_sidecar_naming_a_module_function_runs_nothing(icr, tmp_path):
    ckpt = tiny_edm(tmp_path / "m.safetensors")
    marker = tmp_path / "pwned"
    (tmp_path / "icr.json").write_text(json.dumps({"arch": "os:system", "arch_args": {"command": f"touch {marker}"}}))
    refused(icr("layers", ckpt), str(tmp_path / "icr.json"), '"arch"', "--arch os:system", "may not make icr run code")
    assert not marker.exists()


def test_sidecar_naming_a_python_file_runs_nothing(icr, tmp_path):
    ckpt = user_net(tmp_path / "m.pt")
    marker = tmp_path / "pwned"
    (tmp_path / "net.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nfrom user_arch import TinyDenoiser\n")
    spec = f"{tmp_path / 'net.py'}:TinyDenoiser"
    ckpt.with_name("m.pt.icr.json").write_text(json.dumps({"arch": spec, "param": "edm"}))
    # --data: a folder that exists (a missing one is refused before the checkpoint is read); the model loads first
    for command in (("layers", ckpt), ("extract", ckpt, "--data", tmp_path, "--sigma", "1", "-q")):
        refused(icr(*command), "m.pt.icr.json", f"--arch {spec}")
    assert not marker.exists()
    assert f"icr_user_arch_{abs(hash(str((tmp_path / 'net.py').resolve())))}" not in sys.modules  # nor imported
    # The same network named on the command line is the user's choice: it loads, and the sidecar still gives data.
    ckpt.with_name("m.pt.icr.json").write_text(json.dumps({"param": "edm", "arch_args": {"width": 8}}))
    r = icr("layers", ckpt, "--arch", spec, "--json")
    assert r.code == 0, r.err
    assert marker.exists()


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_sidecar_cannot_trust_a_pickle(icr, tmp_path):
    _Payload.marker = tmp_path / "pwned"
    ckpt = tmp_path / "m.pkl"
    ckpt.write_bytes(pickle.dumps({"ema": _Payload()}, protocol=4))
    (tmp_path / "icr.json").write_text(json.dumps({"trust_pickle": True}))
    refused(icr("layers", ckpt), '"trust_pickle"', "pass --trust-pickle on the command line")
    assert not _Payload.marker.exists()
    # Named false it is harmless (the default), and the pickle is still refused by the safe loader.
    (tmp_path / "icr.json").write_text(json.dumps({"trust_pickle": False}))
    refused(icr("layers", ckpt), "system", "--trust-pickle")
    assert not _Payload.marker.exists()


def test_sidecar_may_name_a_builtin_only(tmp_path):
    ckpt = tiny_edm(tmp_path / "m.safetensors")
    (tmp_path / "icr.json").write_text(json.dumps({"arch": "resnet"}))
    with pytest.raises(UserError, match=r"'resnet' is not a built-in architecture \(edm, dit, sit, repa\)"):
        load_model(ckpt, ModelOptions())
    (tmp_path / "icr.json").write_text(json.dumps({"arch": "edm", "arch_args": {"precond": "vp"}}))
    den = load_model(ckpt, ModelOptions())
    assert den.description["arch"] == "edm/vp/SongUNet"  # the sidecar's precond reached the EDM adapter


# ------------------------------------------------------------------------------------------- what a sidecar is

def test_icr_result_named_icr_json_is_not_a_sidecar(icr, tmp_path):
    ckpt = tiny_edm(tmp_path / "m.safetensors")
    result = {"icr": 0.87, "eigenvalues": [0.9, 0.8], "tau": 1e-6, "version": "0.1", "provenance": {}}
    (tmp_path / "icr.json").write_text(json.dumps(result))
    r = icr("layers", ckpt, "--json")
    assert r.code == 0, r.err
    assert f"not using {tmp_path / 'icr.json'} as a sidecar" in r.err and "icr result" in r.err
    assert any(row["default"] for row in json.loads(r.out))
    (tmp_path / "icr.json").write_text(r.out)  # `icr layers --json > icr.json`: a list, not a sidecar either
    r = icr("layers", ckpt)
    assert r.code == 0 and "JSON list" in r.err, r.err


@pytest.mark.slow
@pytest.mark.parametrize("content, words", [
    ({"layer": "model.dec.4x4_block0"}, ["unknown keys ['layer']", "arch, arch_args, key, param", "comment"]),
    ({"class_label": "3"}, ['"class_label" is "3"', "which is not an integer"]),
    ({"arch_args": [1, 2]}, ['"arch_args" is [1, 2], which is not an object']),
    ({"param": True}, ['"param" is true, which is not a string']),
    ("[1, {]", ["not valid JSON"]),
    ('"edm"', ["a sidecar is a JSON object of model options, not a str"]),
    ("[" * 100000, ["not valid JSON"]),
])
def test_bad_sidecar_is_a_user_error(icr, tmp_path, content, words):
    ckpt = tiny_edm(tmp_path / "m.safetensors")
    side = ckpt.with_name("m.safetensors.icr.json")
    side.write_text(content if isinstance(content, str) else json.dumps(content))
    refused(icr("layers", ckpt), str(side), *words)


@pytest.mark.slow
def test_sidecar_used_is_said_and_recorded(icr, tmp_path):
    ckpt = tiny_edm(tmp_path / "m.safetensors")
    side = tmp_path / "icr.json"
    side.write_text(json.dumps({"class_label": None, "data_range": "0:1", "comment": "run 7"}))
    sha = hashlib.sha256(side.read_bytes()).hexdigest()
    r = icr("layers", ckpt, "--json")
    assert r.code == 0, r.err
    assert f"sidecar {side} (sha256 {sha[:12]}) gives: data_range" in r.err
    assert "EDM SongUNet (DDPM++), EDM preconditioning, 3x8x8 images, unconditional, weights: the checkpoint's top " \
           "level" in r.err
    den = load_model(ckpt, ModelOptions(param="edm"))
    assert den.description["sidecar"] == {"path": str(side), "sha256": sha, "applied": ["data_range"]}
    assert den.options.data_range == "0:1" and den.options.param == "edm"
    assert den.data_range == "0:1"  # what callers read when their own --data-range is unset
    assert load_model(ckpt, ModelOptions(data_range="-1:1")).description["sidecar"]["applied"] == []


def test_command_line_wins_even_with_zero(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"")
    (tmp_path / "icr.json").write_text(json.dumps({"class_label": 3, "param": "ve"}))
    merged, side = merge_sidecar(ckpt, ModelOptions(class_label=0))
    assert merged.class_label == 0 and merged.param == "ve"  # --class-label 0 is a value, not "unset"
    assert side.applied == ("param",)


def test_sidecar_options_reach_the_noise_convention(tmp_path):
    """What the sidecar says (param, time input) is what the model is run with, whoever asks afterwards."""
    ckpt = user_net(tmp_path / "m.pt")
    (tmp_path / "icr.json").write_text(json.dumps({"param": "ve", "time_input": "log-sigma"}))
    den = load_model(ckpt, ModelOptions(arch=f"{TESTS / 'user_arch.py'}:TinyDenoiser"))
    conv = noise_convention(den, ModelOptions())  # the caller's own options leave both unset
    assert conv.param == "ve" and conv.time_kind == "log-sigma"
    assert noise_convention(den, ModelOptions(param="edm")).param == "edm"  # the caller's options still win
