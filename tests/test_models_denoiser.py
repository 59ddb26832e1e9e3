"""The Denoiser seam: one module low in the house that every family's adapter returns, with a headline in words;
the architectures never import the resolver that picks among them."""

import argparse
import subprocess
import sys

import pytest
import torch

from icrcli.models.archs import dit, edm
from icrcli.models.denoiser import Denoiser, check_class_label, weights_in_words
from icrcli.errors import UserError


def _den(**kw):
    base = dict(net=torch.nn.Identity(), family="x", default_layer="", in_channels=3, resolution=8, latent=False,
                noise_defaults={}, data_range="-1:1", call=None, labels=None, description={})
    return Denoiser(**{**base, **kw})


def test_headline_and_notes_in_words():
    den = _den(title="EDM SongUNet (DDPM++), EDM preconditioning", description={"arch": "edm/edm/SongUNet",
                                                                                 "weights": "<root>"})
    assert den.headline() == "EDM SongUNet (DDPM++), EDM preconditioning, weights: the checkpoint's top level"
    assert _den(description={"arch": "dit", "weights": "ema.model"}).headline() == "dit, weights: ema.model"
    assert _den().headline() == "x" and _den().notes() == []
    assert weights_in_words("ema") == "ema"
    side = {"path": "/c/icr.json", "sha256": "ab" * 32, "applied": ["param", "schedule"]}
    assert _den(description={"sidecar": side}).notes() == ["sidecar /c/icr.json (sha256 abababababab) gives: param, "
                                                           "schedule"]
    ignored = {"path": "/c/icr.json", "sha256": "00", "ignored": "it holds an icr result (keys icr), not model options"}
    assert _den(description={"sidecar": ignored}).notes() == [
        "not using /c/icr.json as a sidecar: it holds an icr result (keys icr), not model options"]


def test_check_class_label():
    check_class_label(None, 0, "EDM")
    check_class_label(9, 10, "EDM")
    with pytest.raises(UserError, match="unconditional"):
        check_class_label(0, 0, "EDM")
    with pytest.raises(UserError, match="classes 0..9"):
        check_class_label(10, 10, "EDM")


@pytest.mark.slow
@pytest.mark.parametrize("module", ["edm", "dit", "diffusers_models"])
def test_architectures_do_not_import_the_resolver(module):
    """Each archs module loads alone, and loading it pulls in neither resolve.py nor a sibling architecture (its
    own verbatim port, archs/<family>_networks.py, and the Adapter base class are its own parts)."""
    code = (f"import sys, icrcli.models.archs.{module}; "
            "print(sorted(m for m in sys.modules if m.startswith('icrcli.models.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(eval(out))
    assert f"icrcli.models.archs.{module}" in loaded
    assert "icrcli.models.resolve" not in loaded
    assert loaded <= {"icrcli.models.archs", f"icrcli.models.archs.{module}", "icrcli.models.denoiser",
                      "icrcli.models.options", "icrcli.models.adapter", f"icrcli.models.archs.{module}_networks"}


def test_headlines_of_the_families(icr, tmp_path):
    """What `icr layers` says about an EDM snapshot (EMA weights), a DiT training checkpoint and a bare DiT."""
    from test_extract_e2e import write_edm_pickle
    song = dict(edm.EDM_PRESETS["ddpmpp"], img_resolution=8, img_channels=3, model_channels=8, channel_mult=[1, 2],
                num_blocks=1, attn_resolutions=[], label_dim=10)
    write_edm_pickle(tmp_path / "snap.pkl", tmp_path / "code", "vp", song, 0)
    r = icr("layers", tmp_path / "snap.pkl", "--depth", "1")
    assert r.code == 0, r.err
    assert "EDM SongUNet (DDPM++), VP preconditioning, 3x8x8 images, 10 classes, weights: ema" in r.err
    assert "edm/vp/SongUNet" not in r.err and "<root>" not in r.err

    torch.manual_seed(0)
    sd = dit.FAMILIES["dit"](input_size=4, patch_size=2, in_channels=4, hidden_size=16, depth=2, num_heads=2,
                             num_classes=4).state_dict()
    torch.save({"model": sd, "ema": sd, "args": argparse.Namespace(image_size=32, num_classes=4, num_heads=2)},
               tmp_path / "dit.pt")
    r = icr("layers", tmp_path / "dit.pt", "--depth", "1")
    assert r.code == 0, r.err
    assert "DiT (depth 2, width 16) (DDPM, 1000 linear steps), 4x4x4 latents, 4 classes, weights: ema" in r.err
