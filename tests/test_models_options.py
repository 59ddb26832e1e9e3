"""Model options: sidecar files, the noise-convention resolution, call signatures, user architecture import."""

import json

import pytest
import torch

from icrcli.errors import UserError
from icrcli.models.resolve import (Denoiser, ModelOptions, import_target, merge_sidecar, noise_convention, parse_call,
                           sidecar_for)
from icrcli.models.taps import Taps, pool, resolve_layers


def _den(**noise_defaults):
    return Denoiser(net=torch.nn.Identity(), family="x", default_layer="", in_channels=3, resolution=8,
                    latent=False, noise_defaults=noise_defaults, data_range="-1:1", call=None, labels=None,
                    description={})


def test_sidecar_next_to_checkpoint_and_cli_wins(tmp_path):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"")
    assert sidecar_for(ckpt) is None
    (tmp_path / "icr.json").write_text(json.dumps({"param": "ve", "arch_args": {"a": 1}}))
    assert sidecar_for(ckpt) == tmp_path / "icr.json"
    side = ckpt.with_name("model.pt.icr.json")
    side.write_text(json.dumps({"param": "ddpm", "schedule": "cosine:1000", "class_label": 3,
                                "arch_args": {"a": 1, "b": 2}}))
    assert sidecar_for(ckpt) == side  # the checkpoint's own sidecar wins over the folder's
    merged, used = merge_sidecar(ckpt, ModelOptions(param="edm", arch_args={"b": 5}))
    assert used.path == side and used.applied == ("schedule", "class_label", "arch_args")
    assert merged.param == "edm"                   # the command line wins
    assert merged.schedule == "cosine:1000" and merged.class_label == 3
    assert merged.arch_args == {"a": 1, "b": 5}


def test_sidecar_errors(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"")
    side = tmp_path / "m.pt.icr.json"
    side.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        merge_sidecar(ckpt, ModelOptions())
    side.write_text(json.dumps({"parm": "edm"}))
    with pytest.raises(UserError, match="unknown keys \\['parm'\\]"):
        merge_sidecar(ckpt, ModelOptions())


def test_noise_convention_defaults_and_overrides():
    dit = _den(param="ddpm", schedule="linear:1e-4:0.02:1000", time_input="index")
    conv = noise_convention(dit, ModelOptions())
    assert conv.param == "ddpm" and conv.time_kind == "index" and len(conv.schedule) == 1000
    # Naming another parametrization drops the family's schedule and time defaults instead of failing.
    conv = noise_convention(dit, ModelOptions(param="edm"))
    assert conv.param == "edm" and conv.schedule is None and conv.time_kind == "sigma"
    sit = _den(param="flow", time_input="t", time_convention="sit")
    assert noise_convention(sit, ModelOptions()).time_convention == "sit"
    assert noise_convention(sit, ModelOptions(time_convention="repa")).time_convention == "repa"
    assert noise_convention(sit, ModelOptions(param="ddpm", schedule="cosine:1000")).param == "ddpm"
    with pytest.raises(UserError, match="no noise schedule was given"):  # no silent default (issue 9)
        noise_convention(sit, ModelOptions(param="ddpm"))
    with pytest.raises(UserError, match="--param"):
        noise_convention(_den(), ModelOptions())


def test_schedule_buffer_wins_over_default():
    den = _den(param="ddpm", schedule="linear:1e-4:0.02:1000", time_input="index")
    betas = torch.linspace(1e-4, 0.05, 50, dtype=torch.float64)
    den.schedule_buffer = torch.cumprod(1 - betas, 0)
    conv = noise_convention(den, ModelOptions())
    assert len(conv.schedule) == 50
    assert len(noise_convention(den, ModelOptions(schedule="cosine:100")).schedule) == 100  # explicit wins


def test_parse_call():
    assert parse_call(None) == [(None, "x"), (None, "t")]
    assert parse_call("x,t,y") == [(None, "x"), (None, "t"), (None, "y")]
    assert parse_call("sample=x, timestep=t") == [("sample", "x"), ("timestep", "t")]
    with pytest.raises(UserError, match="each entry is x, t or y"):
        parse_call("x,time")


def test_import_target(tmp_path):
    f = tmp_path / "net.py"
    f.write_text("import torch\nclass Net(torch.nn.Linear):\n    pass\n")
    assert import_target(f"{f}:Net").__name__ == "Net"
    with pytest.raises(UserError, match="has no attribute 'Nope'"):
        import_target(f"{f}:Nope")
    with pytest.raises(UserError, match="no such file"):
        import_target(f"{tmp_path / 'missing.py'}:Net")
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UserError, match="boom"):
        import_target(f"{tmp_path / 'broken.py'}:Net")
    with pytest.raises(UserError, match="expected"):
        import_target("justaname")


def test_pooling_shapes_and_values():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    assert torch.equal(pool(x, "mean"), x.mean(dim=(2, 3)))
    assert pool(x, "none").shape == (2, 60)
    tokens = torch.randn(2, 7, 6)
    assert torch.allclose(pool(tokens, "mean"), tokens.mean(dim=1))
    assert torch.equal(pool((tokens, "extra"), "mean"), pool(tokens, "mean"))


def test_taps_stop_early_and_unknown_layers():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    ran = []
    net[2].register_forward_hook(lambda *a: ran.append(1))
    x = torch.randn(3, 4)
    with Taps(net, ["0", "1"], "mean") as taps:
        feats = taps.run(lambda: net(x))
    assert not ran  # the last layer never ran
    assert torch.allclose(feats["1"], torch.relu(net[0](x)))
    with pytest.raises(UserError, match="no layer '3'"):
        resolve_layers(net, ["3"])
    with pytest.raises(UserError, match="Closest names: 0"):
        resolve_layers(torch.nn.Sequential(torch.nn.ModuleDict({"block1": torch.nn.Identity()})), ["0.blok1"])
