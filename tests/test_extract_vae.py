"""A latent model (DiT) with its VAE: pixel views are augmented, encoded (posterior mean x scale), then
noised in latent space. The features equal an independent recomputation from the same per-view seeds."""

import argparse

import h5py
import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers is an optional extra")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("vae")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                                  down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                  norm_num_groups=4, sample_size=16, scaling_factor=0.5)
    vae.save_pretrained(d / "vae")
    from icrcli.models.archs.dit import DiT
    net = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=5)
    for p in net.parameters():  # adaLN-Zero init makes blocks the identity; randomise so features depend on t
        p.data.normal_(0, 0.1)
    torch.save({"model": net.state_dict(), "ema": net.state_dict(),
                "args": argparse.Namespace(model="DiT-custom", num_heads=2, num_classes=5)},
               d / "dit.pt")
    rng = np.random.default_rng(0)
    np.save(d / "imgs.npy", rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))
    return d, vae.eval(), net.eval()


def test_vae_features_match_independent_recomputation(files, icr, tmp_path, monkeypatch):
    d, vae, net = files
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    r = icr("extract", d / "dit.pt", "--data", d / "imgs.npy", "--vae", d / "vae", "--sigma", "0.416",
            "--images", "6", "--augment", "crop-flip", "--layer", "blocks.0", "--batch-size", "4",
            "-o", tmp_path / "f.h5", "-q")
    assert r.code == 0, r.err
    with h5py.File(tmp_path / "f.h5") as f:
        feats = f["features/blocks.0"][:]
        index = f["index"][:]
        config = f.attrs["config"]
    assert feats.shape == (6, 2, 32) and '"vae"' in config

    from icrcli.data.augment import augment, view_seeds
    from icrcli.features.compute import gaussian, noise_seeds
    x01 = torch.from_numpy(np.load(d / "imgs.npy")[index]).permute(0, 3, 1, 2).float() / 255
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    t = int(np.argmin(np.abs(np.log(np.sqrt((1 - ab) / ab)) - np.log(0.416))))
    assert t == 121
    captured = {}
    net.blocks[0].register_forward_hook(lambda m, i, o: captured.__setitem__("h", o))
    for v in range(2):
        x = augment(x01, view_seeds(0, index, v), "crop-flip")
        with torch.no_grad():
            z = vae.encode(x * 2 - 1).latent_dist.mean * 0.5
            eps = gaussian(noise_seeds(0, index, v), tuple(z.shape[1:]), "cpu")
            x_in = np.sqrt(ab[t]) * z + np.sqrt(1 - ab[t]) * eps
            net(x_in.float(), torch.full((6,), t), torch.full((6,), 5))  # null class = num_classes
        np.testing.assert_allclose(feats[:, v], captured["h"].mean(dim=1).numpy(), rtol=1e-4, atol=1e-5)


def test_vae_refuses_wrong_image_size(files, icr, tmp_path, monkeypatch):
    d, _, _ = files
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    np.save(tmp_path / "big.npy", np.zeros((4, 32, 32, 3), np.uint8))
    r = icr("extract", d / "dit.pt", "--data", tmp_path / "big.npy", "--vae", d / "vae", "--sigma", "0.3",
            "--images", "4", "-q")
    assert r.code == 2 and "3x16x16" in r.err and "--resize" in r.err


@pytest.mark.slow
def test_memorization_of_a_latent_model_decodes_its_samples(files, icr, tmp_path):
    """A DiT draws latents; with --vae they are decoded to pixels and compared with the training images."""
    d, vae, net = files
    no_vae = icr("memorization", d / "dit.pt", "--data", d / "imgs.npy", "--samples", "2", "--steps", "3", "-q")
    assert no_vae.code == 2 and "give its VAE with --vae" in no_vae.err
    r = icr("memorization", d / "dit.pt", "--data", d / "imgs.npy", "--vae", d / "vae", "--samples", "3",
            "--steps", "3", "--grid", tmp_path / "g.png", "-q")
    assert r.code == 0, r.err
    assert r.json["n_samples"] == 3 and 0 <= r.json["ratio"] <= 1
    from PIL import Image
    assert Image.open(tmp_path / "g.png").size[1] == 16 + 4 + 4  # one row of 16-pixel pairs, framed and padded
    # The decoded samples are the VAE's decoding of the latents the sampler drew (independent recomputation).
    from icrcli.models.options import ModelOptions
    from icrcli.scans.memorization import SampleSource
    src = SampleSource(d / "dit.pt", ModelOptions(vae=str(d / "vae")), 3, 0, torch.device("cpu"), (3, 16))
    x = src.draw(np.arange(2))
    assert x.shape == (2, 3, 16, 16)
    from icrcli.models import sampler
    with torch.no_grad():  # the latents the sampler draws, then the test's own VAE and latent scale (0.5)
        denoise = sampler.make_denoise(src.den.call, src.conv, src.prediction, src.data_range,
                                       src._labels(np.arange(2)))
        z = sampler.heun_sample(denoise, sampler.sample_latents(0, np.arange(2), src.shape), src.sigmas)
        ref = ((vae.decode(z.float() / 0.5).sample + 1) / 2).clamp(0, 1).numpy()
    np.testing.assert_allclose(x, ref, atol=1e-5)


def test_editing_the_vae_recomputes_extract_and_sweep(files, icr, tmp_path):
    """The VAE folder is in the key by content (issue 15): other weights under the same folder name recompute."""
    import shutil
    d, vae, _ = files
    shutil.copytree(d / "vae", tmp_path / "vae")
    common = ["--data", d / "imgs.npy", "--vae", tmp_path / "vae", "--images", "6", "--augment", "crop-flip",
              "--layer", "blocks.0", "-q"]
    extract = ["extract", d / "dit.pt", "--sigma", "0.4", *common]
    sweep = ["sweep", d / "dit.pt", "--sigmas", "0.4", *common]
    for args in (extract, sweep):
        assert not icr(*args).json["cached"] and icr(*args).json["cached"]
    torch.manual_seed(1)
    other = diffusers.AutoencoderKL(**vae.config)
    other.save_pretrained(tmp_path / "vae")
    for args in (extract, sweep):
        r = icr(*args)
        assert r.code == 0 and not r.json["cached"], r.err
