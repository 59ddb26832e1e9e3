"""Exact nearest neighbours, the memorization ratio (icrcli.stats.neighbours) and `icr memorization`.

Independent checks: neighbours against a dense float64 distance matrix (blocks much smaller than the data);
the ratio is 1 when the samples are the training images themselves (or near copies) and 0 for images of
another split; through the CLI with a tiny EDM network, the ratio is 1 when the training set is the model's
own samples, the samples do not depend on the batch size, and a repeat draws nothing.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import SHARED_DATA
from icrcli.stats import neighbours as nb


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def images(n, seed, shape=(3, 8, 8)):
    return np.random.default_rng(seed).random((n, *shape)).astype(np.float32)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("as_function", [False, True])
def test_nearest_matches_dense_float64(metric, as_function):
    rng = np.random.default_rng(0)
    ref = torch.as_tensor(rng.normal(size=(300, 12)) + 3.0)            # an offset: the expanded form cancels
    q = torch.cat([ref[:5] + 1e-6, torch.as_tensor(rng.normal(size=(40, 12)) + 3.0)])
    reference = (lambda rows: ref[torch.as_tensor(rows)]) if as_function else ref
    values, index = nb.nearest(q.float(), reference, len(ref), k=2, metric=metric, max_elems=500)
    if metric == "l2":
        dense = torch.cdist(q, ref).numpy()
        order = np.argsort(dense, axis=1, kind="stable")[:, :2]
        np.testing.assert_allclose(values, np.take_along_axis(dense, order, 1), rtol=1e-6, atol=1e-6)
        assert values[:5, 0].max() < 1e-5                                # the near-copies, not cancelled away
    else:
        unit = lambda a: a / a.norm(dim=1, keepdim=True)
        dense = (unit(q) @ unit(ref).T).numpy()
        order = np.argsort(-dense, axis=1, kind="stable")[:, :2]
        np.testing.assert_allclose(values, np.take_along_axis(dense, order, 1), atol=1e-6)
    assert np.array_equal(index, order)


def test_ratio_is_one_for_the_training_images_and_zero_for_another_split():
    train, other = images(200, 1), images(100, 2)
    flat = lambda a: torch.as_tensor(a).reshape(len(a), -1)
    v, _ = nb.nearest(flat(train[:50]), flat(train), len(train))
    r = nb.memorization_ratio(v)
    assert (r["ratio"], r["n_memorized"], r["ratio_se"]) == (1.0, 50, 0.0)
    v, _ = nb.nearest(flat(other), flat(train), len(train))
    r = nb.memorization_ratio(v)
    assert r["ratio"] == 0.0 and r["distance_ratio"]["min"] > 0.8
    near = train[:30] + np.random.default_rng(3).normal(0, 0.01, train[:30].shape).astype(np.float32)
    v, i = nb.nearest(flat(near), flat(train), len(train))
    assert nb.memorization_ratio(v)["ratio"] == 1.0 and np.array_equal(i[:, 0], np.arange(30))
    v, _ = nb.nearest(flat(near * 2 - 1), flat(train * 2 - 1), len(train), metric="cosine")
    assert nb.memorization_ratio(v, "cosine", 0.6)["ratio"] == 1.0
    v, _ = nb.nearest(flat(other * 2 - 1), flat(train * 2 - 1), len(train), metric="cosine")
    assert nb.memorization_ratio(v, "cosine", 0.6)["ratio"] == 0.0


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "cifar10-test").exists(), reason="real images not present")
def test_real_images_of_another_split_are_not_copies():
    from icrcli.data.images import open_images
    tar = next((SHARED_DATA / "cifar10-test").glob("*.tar"), None)
    if tar is None:
        pytest.skip("no CIFAR-10 tar")
    s = open_images(tar)
    a = torch.as_tensor(s.get_float(np.arange(0, 400))).reshape(400, -1)
    b = torch.as_tensor(s.get_float(np.arange(400, 500))).reshape(100, -1)
    v, _ = nb.nearest(b, a, 400)
    assert nb.memorization_ratio(v)["ratio"] <= 0.02
    v, _ = nb.nearest(a[:100], a, 400)
    assert nb.memorization_ratio(v)["ratio"] == 1.0


# ----------------------------------------------------------------------------------------------------------
# The CLI with a tiny EDM network.

@pytest.fixture
def tiny(tmp_path):
    from icrcli.models.archs import edm
    torch.manual_seed(0)
    net = edm.build_edm("edm", "SongUNet", img_resolution=8, img_channels=3, model_channels=8,
                        channel_mult=[1, 2], num_blocks=1, attn_resolutions=[])
    ckpt = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, ckpt)
    data = tmp_path / "train.npy"
    np.save(data, (np.random.default_rng(0).random((20, 3, 8, 8)) * 255).astype(np.uint8))
    return ckpt, data


@pytest.mark.slow
def test_cli_memorization(icr, tiny, tmp_path, cache_dir):
    ckpt, data = tiny
    base = ("memorization", ckpt, "--data", data, "--samples", "6", "--steps", "4", "--device", "cpu")
    r = icr(*base, "--batch-size", "4", "--grid", tmp_path / "grid.png")
    assert r.code == 0, r.err
    j = r.json
    assert j["schema"] == 1 and j["version"] and j["n_samples"] == 6 and j["n_train"] == 20
    assert j["samples_drawn"] == 6 and not j["cached"] and 0 <= j["ratio"] <= 1
    assert len(j["sampler"]["sigmas"]) == 5 and j["sampler"]["prediction"] == "denoised"
    from PIL import Image
    assert Image.open(tmp_path / "grid.png").size[1] > 8

    again = icr(*base, "--batch-size", "5")                          # another batch size: the same samples
    assert again.code == 0 and again.json["cached"] and again.json["samples_drawn"] == 0
    for key in ("ratio", "nearest_distance", "nearest_index"):
        assert again.json[key] == j[key]

    # The model's own samples as its training set: every sample is a copy.
    chunk = np.load(next((cache_dir / "samples").rglob("chunk-000000.npy")))
    assert chunk.shape == (6, 3, 8, 8) and 0 <= chunk.min() and chunk.max() <= 1
    np.save(tmp_path / "own.npy", np.concatenate([chunk, images(10, 5)]))
    r = icr("memorization", ckpt, "--data", tmp_path / "own.npy", "--samples", "6", "--steps", "4",
            "--device", "cpu", "-o", tmp_path / "own.json", "-q")
    assert r.code == 0, r.err
    own = json.loads((tmp_path / "own.json").read_text())
    assert own["ratio"] == 1.0 and own["cached"] and own["nearest_index"] == list(range(6))
    assert own["nearest_distance"]["max"] < 1e-6

    # More samples extend the cache; the first six are unchanged.
    r = icr(*base, "--samples", "8", "--criterion", "cosine")
    assert r.code == 0 and r.json["samples_drawn"] == 8 and r.json["criterion"] == "cosine"
    assert any("calibrated for SSCD" in w for w in r.json["warnings"])  # 0.6 on pixels
    assert r.json["threshold"] == 0.6


@pytest.mark.slow
def test_cli_memorization_in_features_of_a_layer(icr, tiny):
    ckpt, data = tiny
    r = icr("memorization", ckpt, "--data", data, "--samples", "3", "--steps", "2", "--device", "cpu",
            "--criterion", "cosine", "--embed", ckpt, "--embed-layer", "model.enc.8x8_block0")
    assert r.code == 0, r.err
    assert "model.enc.8x8_block0" in r.json["space"] and r.json["n_samples"] == 3
    assert r.json["warnings"] == []  # cosine in a layer's features: no pixel warning


@pytest.mark.slow
def test_cli_memorization_refuses_bad_input(icr, tiny, tmp_path):
    ckpt, data = tiny
    np.save(tmp_path / "big.npy", np.zeros((4, 3, 16, 16), np.uint8))
    r = icr("memorization", ckpt, "--data", tmp_path / "big.npy", "--samples", "2", "--steps", "2")
    assert r.code == 2 and "3x8x8" in r.err and "3x16x16" in r.err
    r = icr("memorization", ckpt, "--data", data, "--embed", ckpt)
    assert r.code == 2 and "--embed-layer" in r.err
    r = icr("memorization", ckpt, "--data", data, "-o", data)
    assert r.code == 2 and "never writes over its input" in r.err
    r = icr("memorization", ckpt, "--data", data, "--samples", "2", "--steps", "2", "--param", "ve",
            "--prediction", "v")
    assert r.code == 2 and "no meaning" in r.err


@pytest.mark.slow
def test_forged_cached_samples_are_said_removed_and_drawn_again(icr, tiny, cache_dir):
    """A cached samples chunk edited on disk (the training images planted as 'samples' would fake a ratio of 1)
    does not verify: said on stderr, removed, drawn again, and the answer is the fresh one."""
    ckpt, data = tiny
    base = ("memorization", ckpt, "--data", data, "--samples", "6", "--steps", "4", "--device", "cpu")
    fresh = icr(*base)
    assert fresh.code == 0, fresh.err
    chunk_path = next((cache_dir / "samples").rglob("chunk-000000.npy"))
    train = np.load(data)[:6].astype(np.float32) / 255
    np.save(chunk_path, train)                       # forged: now every 'sample' is a training image
    forged = icr(*base)
    assert forged.code == 0, forged.err
    assert "does not carry a valid authentication code" in forged.err
    assert not forged.json["cached"] and forged.json["samples_drawn"] == 6
    for key in ("ratio", "nearest_distance", "nearest_index"):
        assert forged.json[key] == fresh.json[key]
    again = icr(*base)                               # the redrawn chunk is sealed again
    assert again.json["cached"] and "authentication" not in again.err
