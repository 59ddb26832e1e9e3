"""A third-party family plugs in through the `icr.architectures` entry-point group: a package installed into the
environment (here a folder on PYTHONPATH holding the package and its .dist-info, which is what pip leaves in
site-packages) registers an adapter, and `icr layers`, `icr extract` and `icr sweep` recognise its checkpoints with
no --arch flag. Each command runs in its own interpreter, so importlib.metadata really finds the entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

PACKAGE = '''
"""A toy family: a stem, three stages, a head."""
import torch
from icrcli.models.adapter import Adapter
from icrcli.models.denoiser import Denoiser, load_strict

WIDTH = 5


class ToyNet(torch.nn.Module):
    def __init__(self, channels=3, width=WIDTH):
        super().__init__()
        self.stem = torch.nn.Conv2d(channels, width, 3, padding=1)
        self.stages = torch.nn.ModuleList(torch.nn.Conv2d(width, width, 3, padding=1) for _ in range(3))
        self.head = torch.nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x, sigma):
        h = self.stem(x) / (1 + sigma.reshape(-1, 1, 1, 1))
        for stage in self.stages:
            h = h + torch.tanh(stage(h))
        return self.head(h)


class ToyAdapter(Adapter):
    what = "toy nets"

    def recognises(self, sd, meta):
        return {"stem.weight", "head.weight", "stages.0.weight"} <= set(sd)

    def build(self, sd, meta, opts, arch):
        with torch.device("meta"):
            net = ToyNet(width=sd["stem.weight"].shape[0])
        load_strict(net, sd, "the toy net")
        return Denoiser(net=net, family="toy", default_layer="stages.1", in_channels=3, resolution=None,
                        latent=False, noise_defaults={"param": "edm", "time_input": "sigma"}, data_range="-1:1",
                        call=lambda x, t, y: net(x, t), labels=lambda b, device: None,
                        description={"arch": "toy", "config": {"width": net.stem.out_channels}},
                        title="toy net from the plugin")

    def layer_candidates(self, module_names):
        return [n for n in ("stages.0", "stages.2") if n in module_names]

    def default_prediction(self, den):
        return "denoised"


ADAPTER = ToyAdapter()
'''


def _install(site):
    """The package and the .dist-info that pip would leave in site-packages, entry point included."""
    (site / "icr_toy_family").mkdir(parents=True)
    (site / "icr_toy_family" / "__init__.py").write_text(textwrap.dedent(PACKAGE))
    info = site / "icr_toy_family-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: icr-toy-family\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[icr.architectures]\ntoy = icr_toy_family:ADAPTER\n")
    (info / "RECORD").write_text("")


def _checkpoint(folder, site):
    """net.safetensors written by the plugin's own class, and 24 random 16x16 RGB images."""
    code = ("import sys, torch; from safetensors.torch import save_file; sys.path.insert(0, sys.argv[1]); "
            "from icr_toy_family import ToyNet; torch.manual_seed(0); "
            "save_file({k: v.contiguous() for k, v in ToyNet().state_dict().items()}, sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(site), str(folder / "net.safetensors")], check=True)
    np.save(folder / "imgs.npy", np.random.default_rng(0).integers(0, 256, size=(24, 16, 16, 3), dtype=np.uint8))


def _icr(tmp_path, site, *args):
    env = dict(os.environ, ICR_CACHE_DIR=str(tmp_path / "cache"))
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "icrcli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=tmp_path)


@pytest.mark.slow
def test_an_installed_family_is_used_by_layers_extract_and_sweep_with_no_arch_flag(tmp_path):
    site = tmp_path / "site"
    _install(site)
    _checkpoint(tmp_path, site)
    ckpt, data = tmp_path / "net.safetensors", tmp_path / "imgs.npy"

    # Not installed: nothing recognises the checkpoint.
    r = _icr(tmp_path, None, "layers", ckpt)
    assert r.returncode == 2 and "Could not recognise" in r.stderr, r.stderr

    r = _icr(tmp_path, site, "layers", ckpt, "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert "toy net from the plugin" in r.stderr
    assert rows["stages.1"]["default"] and rows["stages.1"]["output_shape"][1] == 5   # the plugin's default tap
    assert not any(row["default"] for name, row in rows.items() if name != "stages.1")

    r = _icr(tmp_path, site, "extract", ckpt, "--data", data, "--sigma", "0.5", "--images", "8",
             "-o", tmp_path / "f.h5", "-q")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["layers"] == ["stages.1"]          # the plugin's default layer
    import h5py
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["features/stages.1"].shape == (8, 2, 5)          # 8 images, 2 views, the toy's 5 channels

    r = _icr(tmp_path, site, "sweep", ckpt, "--data", data, "--sigmas", "0.5", "--layer", "auto", "--images", "16",
             "--chunk-images", "8", "--batch-size", "8", "-q")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["layers"] == ["stages.0", "stages.2"]               # the plugin's --layer auto candidates
    assert [lv["layer"] for lv in res["levels"]] == ["stages.0", "stages.2"]


@pytest.mark.slow
def test_an_installed_family_is_listed_in_messages_and_a_broken_one_names_its_package(tmp_path):
    site = tmp_path / "site"
    _install(site)
    _checkpoint(tmp_path, site)
    r = _icr(tmp_path, site, "layers", tmp_path / "net.safetensors", "--arch", "nosuch")
    assert r.returncode == 2 and "installed: toy" in r.stderr, r.stderr
    (site / "icr_toy_family" / "__init__.py").write_text("raise ImportError('broken on purpose')\n")
    r = _icr(tmp_path, site, "layers", tmp_path / "net.safetensors")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "'toy'" in r.stderr and "icr-toy-family" in r.stderr and "broken on purpose" in r.stderr


def test_nothing_above_models_tests_a_family_name():
    """scans/, features/, cli/ and the sampler ask a Denoiser's adapter (registry.adapter_of), never compare a
    family's name: the next family is one module (and on the old code, sampler.class_count compared
    den.family with "edm")."""
    import ast
    from pathlib import Path

    import icrcli
    from icrcli.models import registry
    root = Path(icrcli.__file__).parent
    names = {*registry.BUILTIN, *registry.FOLDERS}
    files = [root / "models" / "sampler.py", *[p for d in ("scans", "features", "cli") for p in (root / d).glob("*.py")]]
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            # --time-convention repa|sit names a flow's time axis (noise.py), not a family
            if isinstance(node, ast.Compare) and getattr(node.left, "attr", None) != "time_convention":
                consts = [c for side in (node.left, *node.comparators) for c in ast.walk(side)
                          if isinstance(c, ast.Constant) and c.value in names]
                found += [f"{path.relative_to(root)}:{node.lineno} {c.value!r}" for c in consts]
            if isinstance(node, ast.Dict):   # a table keyed by family name (the old DEFAULT_PREDICTION)
                found += [f"{path.relative_to(root)}:{node.lineno} {k.value!r}" for k in node.keys
                          if isinstance(k, ast.Constant) and k.value in names and len(node.keys) > 2]
    assert not found


def test_help_and_messages_name_the_registry():
    from icrcli.models import registry
    assert all(name in registry.arch_help() for name in registry.BUILTIN_ARCHS)
    assert registry.checkpoint_formats() == ("a .safetensors/.pt/.pth/.ckpt file, an EDM .pkl, or a diffusers "
                                             "model folder")
    assert all(long in registry.checkpoint_formats() for long, _ in registry.FORMATS.values())
