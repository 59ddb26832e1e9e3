"""The content key of an extraction changes with everything that changes the features (and with the chunk
size, which changes the file's HDF5 layout), and with nothing else: not with how it runs, not with what is
only recorded (--prediction, a requested --images beyond the data)."""

import dataclasses

import numpy as np
import pytest
import torch

from conftest import tiny_songunet
from icrcli.features.plan import Request, RunOptions, load_data, load_model, make_plan
from icrcli.models.resolve import ModelOptions


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("key")
    torch.save({"ema": tiny_songunet(0).state_dict(), "model": tiny_songunet(1).state_dict()}, d / "ckpt.pt")
    np.save(d / "imgs.npy", np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
    return d


@pytest.fixture
def key(files, monkeypatch, tmp_path):
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    loaded = {}

    def key(mopts=ModelOptions(), **kw):
        name = repr(mopts)
        if name not in loaded:
            m = load_model(files / "ckpt.pt", mopts, "cpu")
            loaded[name] = m, load_data(files / "imgs.npy", m)
        return make_plan(*loaded[name], Request(**{"sigma": 0.3, "images": 12, **kw})).key
    return key


@pytest.mark.slow
def test_key_tracks_what_changes_features(key):
    base = key()
    assert base == key()
    assert base == key(mopts=ModelOptions(key="ema"))          # the default choice of weights
    assert base == key(images=None) == key(images=10**12)     # all 12 images, however asked for
    assert base == key(mopts=ModelOptions(prediction="eps"))  # recorded in the file, not in the key
    changed = {
        "weights": key(mopts=ModelOptions(key="model")),
        "sigma": key(sigma=0.31),
        "views": key(views=3),
        "seed": key(seed=1),
        "augment": key(augment="crop"),
        "images": key(images=10),
        "param": key(mopts=ModelOptions(param="ve")),
        "data range": key(mopts=ModelOptions(data_range="0:1")),
        "layer": key(layers=("model.enc.8x8_block0",)),
        "pool": key(pool="none"),
        "dtype": key(dtype="bfloat16"),
        "resize": key(resize=True),
        "chunk images": key(chunk_images=5),  # same features, another HDF5 chunk layout: another file
    }
    for what, k in changed.items():
        assert k != base, what
    assert len(set(changed.values())) == len(changed)


def test_how_it_runs_is_not_part_of_the_request():
    """Batch size, device and overwrite live in RunOptions only, so no plan (and no key) can depend on them."""
    request_fields = {f.name for f in dataclasses.fields(Request)}
    assert not request_fields & {f.name for f in dataclasses.fields(RunOptions)}
    assert {"sigma", "chunk_images", "t_mode"} <= request_fields


@pytest.mark.parametrize("sigma", [float("nan"), float("inf"), -0.1])
def test_bad_sigma_is_refused_before_loading(sigma):
    from icrcli.errors import UserError
    with pytest.raises(UserError, match="finite number >= 0"):
        Request(sigma=sigma)


@pytest.mark.slow
def test_sidecar_options_reach_the_key(tiny_edm, tmp_path, icr, monkeypatch):
    """A class label said in the sidecar shapes the features as one said on the command line: same key."""
    import json
    import shutil
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    ck = tmp_path / "net.safetensors"
    shutil.copy(tiny_edm / "net.safetensors", ck)
    args = ["extract", ck, "--data", tiny_edm / "imgs.npy", "--sigma", "0.4", "--images", "8", "-q"]
    plain = icr(*args)
    (tmp_path / "net.safetensors.icr.json").write_text(json.dumps({"call": "x,t"}))
    side = icr(*args)
    flag = icr(*args[:-1], "--call", "x,t", "-q")
    assert plain.code == side.code == flag.code == 0, plain.err + side.err + flag.err
    assert side.json["config_key"] == flag.json["config_key"] != plain.json["config_key"]
