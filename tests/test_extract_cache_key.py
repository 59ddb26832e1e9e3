"""The content key of an extraction changes with everything that changes the features, and nothing else."""

import numpy as np
import pytest
import torch

from icrcli.features.extract import ExtractOptions, plan
from icrcli.models.resolve import ModelOptions


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("key")
    from icrcli.models.archs.edm import build_edm
    torch.manual_seed(0)
    nets = [build_edm("edm", "SongUNet", img_resolution=16, img_channels=3, model_channels=8,
                      channel_mult=[1, 2], num_blocks=1, attn_resolutions=[]) for _ in range(2)]
    torch.save({"ema": nets[0].state_dict(), "model": nets[1].state_dict()}, d / "ckpt.pt")
    np.save(d / "imgs.npy", np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
    return d


def _key(d, monkeypatch, tmp_path, mopts=None, **kw):
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    opts = ExtractOptions(**{"sigma": 0.3, "images": 12, "device": "cpu", **kw})
    return plan(d / "ckpt.pt", d / "imgs.npy", opts, mopts or ModelOptions()).key


def test_key_tracks_what_changes_features(files, monkeypatch, tmp_path):
    base = _key(files, monkeypatch, tmp_path)
    assert base == _key(files, monkeypatch, tmp_path)
    assert base == _key(files, monkeypatch, tmp_path, batch_size=3)       # batch size: same features
    assert base == _key(files, monkeypatch, tmp_path, mopts=ModelOptions(key="ema"))  # the default choice
    changed = {
        "weights": _key(files, monkeypatch, tmp_path, mopts=ModelOptions(key="model")),
        "sigma": _key(files, monkeypatch, tmp_path, sigma=0.31),
        "views": _key(files, monkeypatch, tmp_path, views=3),
        "seed": _key(files, monkeypatch, tmp_path, seed=1),
        "augment": _key(files, monkeypatch, tmp_path, augment="crop"),
        "images": _key(files, monkeypatch, tmp_path, images=10),
        "param": _key(files, monkeypatch, tmp_path, mopts=ModelOptions(param="ve")),
        "data range": _key(files, monkeypatch, tmp_path, mopts=ModelOptions(data_range="0:1")),
    }
    for what, key in changed.items():
        assert key != base, what
    assert len(set(changed.values())) == len(changed)
