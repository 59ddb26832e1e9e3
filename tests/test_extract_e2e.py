"""End-to-end tests of `icr extract` and `icr layers`: tiny random networks of every built-in architecture,
saved in every supported file format, a user's own architecture, a diffusers model and real images, run
through the real CLI and then `icr score`.

What is checked against something independent of the pipeline: features recomputed by a fresh network
(full forward pass, hook on the layer) from the inputs the CLI fed the model; the noise the model saw
(its standard deviation is the requested sigma in the model's own units); the time input (DDPM step 121
at sigma 0.416 for DiT's linear schedule, t = sigma / (1 + sigma) for REPA, 1 / (1 + sigma) for original
SiT); the null class; labels against the source files' own labels.
"""

import argparse
import gzip
import math
import pickle
import sys
import tarfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import SHARED_DATA
from icrcli.models.archs import dit, edm

TESTS = Path(__file__).resolve().parent
N_IMG = 12  # images in the synthetic sets; runs take --images 8 of them
EDM32 = "model.dec.16x16_block1"  # the paper's tap, the default for a 32x32 EDM U-Net


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread than on two here. On a GPU, the test's own forward passes
    compute in IEEE float32 as `icr extract --dtype float32` does (cuDNN's default is TF32)."""
    n, tf32 = torch.get_num_threads(), torch.backends.cudnn.allow_tf32
    torch.set_num_threads(1)
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.set_num_threads(n)
    torch.backends.cudnn.allow_tf32 = tf32


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ------------------------------------------------------------------------------------------------------------
# Building the models and files once.

def state(net):
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


def randomize(net, seed, scale=0.2):
    """DiT/SiT zero their adaLN and output layers at init (every block starts as the identity), ADM its
    embedding projections: fill every trainable tensor with noise so each one changes the features."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return net


def edm_net(precond, seed, **kw):
    torch.manual_seed(seed)
    return edm.build_edm(precond, **kw).eval()


DDPMPP32 = dict(edm.EDM_PRESETS["ddpmpp"], img_resolution=32, img_channels=3, model_channels=8,
                channel_mult=[1, 2, 2], num_blocks=2, attn_resolutions=[16])
NCSNPP16 = dict(edm.EDM_PRESETS["ncsnpp"], img_resolution=16, img_channels=3, model_channels=8,
                channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8])
ADM16 = dict(model_type="DhariwalUNet", img_resolution=16, img_channels=3, label_dim=10, model_channels=8,
             channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8])
TRANSFORMER = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
                   num_classes=10)
REPA = dict(TRANSFORMER, decoder_hidden_size=32, encoder_depth=1, z_dims=[16], projector_dim=32)


def write_edm_pickle(path, tmp, precond, kwargs, seed):
    """An EDM training snapshot {"ema": net, ...} pickled the way NVlabs EDM does it (every network class
    a torch_utils.persistence class, with its source embedded), by the fake persistence code of
    test_edm_pickle, which is removed again before icr reads the file. Returns the net's state dict."""
    from test_edm_pickle import fake_edm_code, make_snapshot
    nets = sys.modules[edm.SongUNet.__module__]  # the port's own module (edm_networks), edm re-exports it
    classes = [n for n, c in vars(nets).items() if isinstance(c, type)
               and issubclass(c, torch.nn.Module) and c.__module__ == nets.__name__]
    with fake_edm_code(tmp, tmp / "sentinel") as networks, pytest.MonkeyPatch.context() as patch:
        persistence = sys.modules["torch_utils.persistence"]
        for name in classes:
            persistent = persistence.persistent_class(getattr(nets, name))
            patch.setattr(nets, name, persistent)
            if hasattr(edm, name):
                patch.setattr(edm, name, persistent)
        for table in (edm.NETWORKS, edm.PRECONDS):
            for name, cls in list(table.items()):
                patch.setitem(table, name, getattr(nets, cls.__name__))
        net = edm_net(precond, seed, **kwargs)
        with open(path, "wb") as f:
            pickle.dump(make_snapshot(net, networks.Loss(), sys.modules["dnnlib"]), f)
        return state(net)


def training_checkpoint(path, model_sd, ema_sd, **args):
    """What DiT/SiT/REPA train.py save: {"model", "ema", "opt", "args": argparse.Namespace}."""
    opt = {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]}
    torch.save({"model": model_sd, "ema": ema_sd, "opt": opt, "args": argparse.Namespace(**args)}, path)
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Every model, in every file format, plus synthetic data. Returns a dict of paths and state dicts."""
    d = tmp_path_factory.mktemp("zoo")
    z = {"dir": d}
    rng = np.random.default_rng(0)
    z["img32"] = d / "img32.npy"
    np.save(z["img32"], rng.integers(0, 256, (N_IMG, 32, 32, 3), dtype=np.uint8))
    z["img16"] = d / "img16.npy"
    np.save(z["img16"], rng.integers(0, 256, (N_IMG, 16, 16, 3), dtype=np.uint8))
    z["grey28"] = d / "grey28.npy"
    np.save(z["grey28"], rng.integers(0, 256, (N_IMG, 28, 28), dtype=np.uint8))
    z["lat"] = d / "latents.npy"  # like DiT's pre-extracted SD-VAE latents: (N, 4, H, W), roughly N(0, 1)
    np.save(z["lat"], rng.standard_normal((N_IMG, 4, 8, 8)).astype(np.float32))
    z["lat_npz"] = d / "latents.npz"  # the same latents with class labels
    z["lat_labels"] = rng.integers(0, 10, N_IMG)
    np.savez(z["lat_npz"], latents=np.load(z["lat"]), labels=z["lat_labels"])

    # EDM DDPM++ (SongUNet) under EDMPrecond, 32x32: every file format.
    sd = state(edm_net("edm", 0, **DDPMPP32))
    z["ddpmpp_sd"] = sd
    z["ddpmpp"] = d / "ddpmpp.safetensors"
    save_file(sd, z["ddpmpp"])
    z["ddpmpp_pt"] = d / "ddpmpp.pt"
    torch.save(sd, z["ddpmpp_pt"])
    z["ddpmpp_ddp"] = d / "ddpmpp-ddp.pt"
    torch.save({"module." + k: v for k, v in sd.items()}, z["ddpmpp_ddp"])  # DDP(net).state_dict()
    z["ddpmpp_pkl"] = d / "ddpmpp.pkl"
    pickled = write_edm_pickle(z["ddpmpp_pkl"], d / "code1", "edm", DDPMPP32, 0)
    assert pickled.keys() == sd.keys() and all(torch.equal(pickled[k], sd[k]) for k in sd)  # same seed

    # EDM NCSN++ (SongUNet) under VPPrecond, 16x16: a pickle (which records VPPrecond) and bare weights.
    z["ncsnpp_pkl"] = d / "ncsnpp-vp.pkl"
    sd = write_edm_pickle(z["ncsnpp_pkl"], d / "code2", "vp", NCSNPP16, 1)
    z["ncsnpp"] = d / "ncsnpp.safetensors"
    save_file(sd, z["ncsnpp"])

    # ADM (DhariwalUNet), class-conditional, bare U-Net weights (no `model.` prefix) in a .pt.
    net = randomize(edm_net("edm", 2, **ADM16), 2, 0.1)  # ADM zero-inits its embedding projections
    z["adm"] = d / "adm.pt"
    torch.save(state(net.model), z["adm"])

    # DiT / SiT / REPA-SiT: training checkpoints whose EMA differs from the raw weights.
    for fam, kw, args in (("dit", TRANSFORMER, dict(image_size=64, num_classes=10, num_heads=2)),
                          ("sit", TRANSFORMER, dict(image_size=64, num_classes=10, num_heads=2,
                                                    path_type="Linear", prediction="velocity")),
                          ("repa", REPA, dict(resolution=64, num_classes=10, num_heads=2, encoder_depth=1,
                                              path_type="linear", proj_coeff=0.5, enc_type="dinov2-vit-b"))):
        raw = state(randomize(dit.FAMILIES[fam](**kw), 10))
        ema = state(randomize(dit.FAMILIES[fam](**kw), 11))
        z[f"{fam}_ema_sd"] = ema
        z[fam] = training_checkpoint(d / f"{fam}.pt", raw, ema, **args)
        z[f"{fam}_ema"] = d / f"{fam}-ema.safetensors"
        save_file(ema, z[f"{fam}_ema"])
        z[f"{fam}_raw"] = d / f"{fam}-raw.safetensors"
        save_file(raw, z[f"{fam}_raw"])

    # The user's architecture (tests/user_arch.py).
    import user_arch
    torch.manual_seed(3)
    z["user_sd"] = state(user_arch.TinyDenoiser(width=8, depth=2))
    z["user"] = d / "user.pt"
    torch.save(z["user_sd"], z["user"])
    return z


# ------------------------------------------------------------------------------------------------------------
# Running and reading.

def ok(r):
    assert r.code == 0, r.err
    assert "Traceback" not in r.err, r.err
    return r.json


def extract(icr, ckpt, data, out, *args, sigma=0.5, images=8):
    """Run `icr extract` to `out`; returns its JSON summary."""
    return ok(icr("extract", ckpt, "--data", data, "--sigma", sigma, "--images", images, "-o", out, "-q",
                  *args))


def read(path):
    """{"features": {layer: (N, K, D)}, "index", "labels" (or None), "attrs"}."""
    with h5py.File(path, "r") as f:
        return {"features": {k: f["features"][k][()] for k in f["features"]}, "index": f["index"][()],
                "labels": f["labels"][()] if "labels" in f else None, "attrs": dict(f.attrs)}


def only(path):
    """The (N, K, D) features of a one-layer file."""
    (x,) = read(path)["features"].values()
    return x


def scored(icr, path):
    """`icr score` on an extracted file: a finite ICR over the right N, K, D."""
    x = only(path)
    r = ok(icr("score", path, "-q"))
    assert (r["n_images"], r["n_views"], r["dim"]) == x.shape
    assert math.isfinite(r["icr"]) and r["icr"] >= 0
    return r


def fail(r, *needles):
    """Exit 2, a one-paragraph error that mentions every needle, no traceback."""
    assert r.code == 2, (r.code, r.err)
    assert "Traceback" not in r.err
    for n in needles:
        assert n in r.err, (n, r.err)
    return r.err


class Spy:
    """Records what the CLI's model receives: the root forward's inputs, a submodule's inputs, call counts."""

    def __init__(self, watch=(), count=()):
        self.watch, self.count = ("", *watch), count
        self.inputs = {name: [] for name in self.watch}
        self.calls = {name: 0 for name in count}

    def attach(self, net):
        mods = dict(net.named_modules())
        for name in self.watch:
            mods[name].register_forward_pre_hook(self._record(name), with_kwargs=True)
        for name in self.count:
            mods[name].register_forward_hook(self._count(name))

    def _record(self, name):
        def hook(module, args, kwargs):
            clone = lambda v: v.clone() if torch.is_tensor(v) else v
            self.inputs[name].append(([clone(a) for a in args], {k: clone(v) for k, v in kwargs.items()}))
        return hook

    def _count(self, name):
        def hook(module, args, output):
            self.calls[name] += 1
        return hook


@pytest.fixture
def spy(monkeypatch):
    """spy(watch=[...], count=[...]) -> a Spy attached to every network the next extractions load."""
    import icrcli.models.resolve as models
    real = models.load_model

    def make(watch=(), count=()):
        s = Spy(watch, count)

        def load(*a, **k):
            den = real(*a, **k)
            s.attach(den.net)
            return den
        monkeypatch.setattr(models, "load_model", load)
        return s
    return make


def recompute(net, layer, calls):
    """Mean-pooled features of `layer` from full forward passes of a fresh `net` on recorded calls:
    (calls, B, C) for (B, C, H, W) maps, (calls, B, D) for (B, T, D) tokens."""
    out = []
    net.to(calls[0][0][0].device if calls[0][0] else next(iter(calls[0][1].values())).device)
    mod = dict(net.named_modules())[layer]
    h = mod.register_forward_hook(lambda m, i, o: out.append(o[0] if isinstance(o, tuple) else o))
    try:
        with torch.inference_mode():
            for args, kwargs in calls:
                net(*args, **kwargs)
    finally:
        h.remove()
    return torch.stack([o.mean((2, 3)) if o.ndim == 4 else o.mean(1) for o in out]).cpu().numpy()


def loaded(net, sd):
    net.load_state_dict(sd, strict=True)
    return net.eval()


def pixels(path, index):
    """The source images at `index` in [-1, 1], (n, C, H, W) float32."""
    x = np.load(path)[index]
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return torch.from_numpy(x.astype(np.float32) / 255 * 2 - 1)


def noise_std(x_in, x, scale=1.0):
    """Std of what the model saw minus the clean view, in the model's units before its input scaling."""
    return float((x_in.cpu() / scale - x).std())


# ------------------------------------------------------------------------------------------------------------
# Built-in architectures and file formats.

@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["ddpmpp", "ddpmpp_pt", "ddpmpp_ddp", "ddpmpp_pkl"])
def test_edm_songunet_every_format(zoo, icr, tmp_path, spy, fmt):
    """Each file format loads the same DDPM++ weights; the features are those of a fresh EDMPrecond fed the
    recorded inputs, which are the clean images plus noise of std sigma, conditioned on sigma itself."""
    s = spy()
    out = tmp_path / "f.h5"
    r = extract(icr, zoo[fmt], zoo["img32"], out, "--augment", "none", "--batch-size", "8", sigma=0.5)
    assert r["layers"] == [EDM32]
    f = read(out)
    x = f["features"][EDM32]
    assert x.shape == (8, 2, 16) and np.isfinite(x).all()
    assert len(s.inputs[""]) == 2  # one forward pass per view
    clean = pixels(zoo["img32"], f["index"])
    for args, _ in s.inputs[""]:
        x_in, sigma = args[0], args[1]
        assert torch.all(sigma == 0.5)
        assert abs(noise_std(x_in, clean) / 0.5 - 1) < 0.05
    fresh = loaded(edm.build_edm("edm", **DDPMPP32), zoo["ddpmpp_sd"])
    np.testing.assert_allclose(x.transpose(1, 0, 2), recompute(fresh, EDM32, s.inputs[""]), rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(x[:, 0], x[:, 1])  # the two views carry different noise
    scored(icr, out)


@pytest.mark.slow
def test_edm_pickle_records_its_preconditioning(zoo, icr, tmp_path):
    """A VPPrecond pickle is run as VPPrecond (its class name is in the pickle): the same as bare weights
    with --arch-arg precond=vp, and not the same as those weights under the default EDMPrecond."""
    a, b, c = tmp_path / "pkl.h5", tmp_path / "vp.h5", tmp_path / "edm.h5"
    extract(icr, zoo["ncsnpp_pkl"], zoo["img16"], a)
    extract(icr, zoo["ncsnpp"], zoo["img16"], b, "--arch-arg", "precond=vp")
    extract(icr, zoo["ncsnpp"], zoo["img16"], c)
    assert read(a)["attrs"]["arch"].startswith("edm/vp/SongUNet")
    np.testing.assert_array_equal(only(a), only(b))
    assert not np.allclose(only(a), only(c), rtol=1e-3)
    assert read(a)["attrs"]["layers"] == '["model.dec.16x16_block1"]'  # 16x16 is the level above 8x8
    assert only(a).shape == (8, 2, 8)  # model_channels 8 x channel_mult 1
    scored(icr, a)


@pytest.mark.slow
def test_dhariwal_unet_null_class_and_class_label(zoo, icr, tmp_path, spy):
    """Class-conditional EDM models get EDM's null class (an all-zero label vector) unless --class-label."""
    s = spy()
    extract(icr, zoo["adm"], zoo["img16"], tmp_path / "null.h5", "--batch-size", "8")
    labels = s.inputs[""][0][0][2]  # EDMPrecond(x, sigma, class_labels)
    assert labels.shape == (8, 10) and torch.all(labels == 0)
    s = spy()
    extract(icr, zoo["adm"], zoo["img16"], tmp_path / "c3.h5", "--batch-size", "8", "--class-label", "3")
    labels = s.inputs[""][0][0][2]  # EDMPrecond(x, sigma, class_labels)
    assert torch.all(labels[:, 3] == 1) and labels.sum() == 8
    assert not np.allclose(only(tmp_path / "null.h5"), only(tmp_path / "c3.h5"), rtol=1e-3)
    assert read(tmp_path / "null.h5")["attrs"]["arch"] == "edm/edm/DhariwalUNet"
    scored(icr, tmp_path / "null.h5")


@pytest.mark.slow
@pytest.mark.parametrize("fam", ["dit", "sit", "repa"])
def test_transformer_training_checkpoint_uses_ema(zoo, icr, tmp_path, fam):
    """A {"model", "ema", "opt", "args"} checkpoint is read EMA-first: its features equal those of a
    safetensors file of the EMA weights, and differ from the raw weights'. Latent --data, crop-flip."""
    args = ["--augment", "crop-flip", "--arch", fam, "--arch-arg", "num_heads=2"]  # what the args told
    ckpt, ema, raw = tmp_path / "ckpt.h5", tmp_path / "ema.h5", tmp_path / "raw.h5"
    r = extract(icr, zoo[fam], zoo["lat"], ckpt, "--augment", "crop-flip")
    assert r["layers"] == ["blocks.0"]  # the middle block of two
    extract(icr, zoo[f"{fam}_ema"], zoo["lat"], ema, *args)
    extract(icr, zoo[f"{fam}_raw"], zoo["lat"], raw, *args)
    assert only(ckpt).shape == (8, 2, 32)
    np.testing.assert_array_equal(only(ckpt), only(ema))
    assert not np.allclose(only(ckpt), only(raw), rtol=1e-3)
    scored(icr, ckpt)


def test_dit_time_is_ddpm_step_and_null_class(zoo, icr, tmp_path, spy):
    """DiT at sigma 0.416 on its linear schedule: t is the integer step 121 (alpha_bar_121 gives sigma
    0.4156), x_in = sqrt(ab) x + sqrt(1 - ab) eps, and y is the null class (num_classes) unless given."""
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - betas)
    step = int(np.argmin(np.abs(np.log(np.sqrt((1 - ab) / ab)) - np.log(0.416))))
    assert step == 121
    s = spy(watch=["t_embedder"])
    out = tmp_path / "f.h5"
    extract(icr, zoo["dit"], zoo["lat_npz"], out, "--augment", "none", "--batch-size", "8", sigma=0.416)
    (t,), _ = s.inputs["t_embedder"][0]
    assert t.dtype == torch.int64 and torch.all(t == 121)
    args, _ = s.inputs[""][0]
    assert torch.all(args[2] == 10)  # num_classes = the null class
    f = read(out)
    np.testing.assert_array_equal(f["labels"], zoo["lat_labels"][f["index"]])
    clean = torch.from_numpy(np.load(zoo["lat"])[f["index"]])
    eff = math.sqrt((1 - ab[121]) / ab[121])
    assert abs(noise_std(args[0], clean, math.sqrt(ab[121])) / eff - 1) < 0.05
    fresh = loaded(dit.DiT(**TRANSFORMER), zoo["dit_ema_sd"])
    np.testing.assert_allclose(only(out).transpose(1, 0, 2), recompute(fresh, "blocks.0", s.inputs[""]),
                               rtol=1e-5, atol=1e-6)
    s = spy()
    extract(icr, zoo["dit"], zoo["lat"], tmp_path / "c7.h5", "--augment", "none", "--class-label", "7")
    assert torch.all(s.inputs[""][0][0][2] == 7)


@pytest.mark.parametrize("fam, t", [("repa", 0.2), ("sit", 0.8)])
def test_flow_time_conventions(zoo, icr, tmp_path, spy, fam, t):
    """sigma 0.25 is t = 0.2 for REPA (t = 0 clean) and t = 0.8 for original SiT (t = 1 clean); both feed
    x_in = (x + sigma eps) / (1 + sigma)."""
    s = spy(watch=["t_embedder"])
    out = tmp_path / "f.h5"
    extract(icr, zoo[fam], zoo["lat"], out, "--augment", "none", "--batch-size", "8", sigma=0.25)
    (tt,), _ = s.inputs["t_embedder"][0]
    assert tt.dtype.is_floating_point and torch.allclose(tt, torch.full_like(tt, t))
    args, _ = s.inputs[""][0]
    assert torch.all(args[2] == 10)
    clean = torch.from_numpy(np.load(zoo["lat"])[read(out)["index"]])
    assert abs(noise_std(args[0], clean, 1 / 1.25) / 0.25 - 1) < 0.05
    conv = read(out)["attrs"]["config"]
    assert ('"time_convention": "%s"' % ("repa" if fam == "repa" else "sit")) in conv


# ------------------------------------------------------------------------------------------------------------
# The user's own architecture.

@pytest.mark.slow
def test_user_arch_by_file_and_by_module(zoo, icr, tmp_path, spy):
    """--arch file.py:Class and --arch module:function build the same network; --param/--call/--layer are
    honoured; the features are the fresh network's at the recorded inputs."""
    import user_arch
    common = ["--param", "edm", "--layer", "body.0", "--arch-arg", "width=8", "--arch-arg", "img_resolution=16",
              "--batch-size", "8"]
    s = spy()
    a = tmp_path / "file.h5"
    extract(icr, zoo["user"], zoo["img16"], a, "--arch", f"{TESTS / 'user_arch.py'}:TinyDenoiser", *common)
    (x_in, t), _ = s.inputs[""][0]
    assert torch.all(t == 0.5)  # --param edm feeds sigma
    fresh = loaded(user_arch.TinyDenoiser(width=8), zoo["user_sd"])
    np.testing.assert_allclose(only(a).transpose(1, 0, 2), recompute(fresh, "body.0", s.inputs[""]),
                               rtol=1e-5, atol=1e-6)
    b = tmp_path / "module.h5"
    extract(icr, zoo["user"], zoo["img16"], b, "--arch", "user_arch:build", *common)
    np.testing.assert_array_equal(only(a), only(b))
    s = spy()
    c = tmp_path / "kw.h5"
    extract(icr, zoo["user"], zoo["img16"], c, "--arch", "user_arch:KeywordDenoiser",
            "--call", "sample=x,timestep=t", *common)
    args, kwargs = s.inputs[""][0]
    assert not args and set(kwargs) == {"sample", "timestep"}
    np.testing.assert_array_equal(only(a), only(c))
    s = spy()
    d = tmp_path / "flow.h5"
    extract(icr, zoo["user"], zoo["img16"], d, "--arch", "user_arch:build", *common[4:], "--param", "flow",
            "--time-convention", "repa", "--layer", "body.1")
    (_, t), _ = s.inputs[""][0]
    assert torch.allclose(t, torch.full_like(t, 0.5 / 1.5))
    assert list(read(d)["features"]) == ["body.1"]
    # --data-range 0:1: the images enter in [0, 1] and the noise is sigma * (1 - 0) / 2 there.
    s = spy()
    e = tmp_path / "unit.h5"
    extract(icr, zoo["user"], zoo["img16"], e, "--arch", "user_arch:build", *common, "--data-range", "0:1",
            "--augment", "none")
    (x_in, t), _ = s.inputs[""][0]
    clean = (pixels(zoo["img16"], read(e)["index"]) + 1) / 2
    assert abs(noise_std(x_in, clean) / 0.25 - 1) < 0.05 and torch.all(t == 0.25)
    scored(icr, a)


@pytest.mark.slow
def test_user_arch_mismatch_names_the_keys(zoo, icr, tmp_path):
    io = ["extract", zoo["user"], "--data", zoo["img16"], "--sigma", "0.5", "-o", tmp_path / "f.h5"]
    base = io + ["--param", "edm", "--layer", "body.0", "--arch", "user_arch:build"]
    fail(icr(*base, "--arch-arg", "depth=3"), "missing keys", "body.2.0.weight")
    fail(icr(*base, "--arch-arg", "depth=1"), "unexpected keys", "body.1.0.weight")
    fail(icr(*base, "--arch-arg", "width=16"), "stem.weight", "file 8x3x3x3", "network 16x3x3x3")
    fail(icr(*base, "--arch-arg", "colour=1"), "colour")  # not a constructor argument
    fail(icr(*io, "--layer", "body.0", "--arch", "user_arch:build"), "--param")
    fail(icr(*io, "--param", "edm", "--arch", "user_arch:build"), "--layer")
    fail(icr(*base[:-1], "user_arch:nothing"), "nothing")
    fail(icr(*base[:-1], f"{TESTS / 'no_such_file.py'}:Net"), "no_such_file.py")
    assert not (tmp_path / "f.h5").exists()


# ------------------------------------------------------------------------------------------------------------
# diffusers.

@pytest.mark.slow
def test_diffusers_unet_pipeline_folder(icr, tmp_path, spy):
    """A UNet2DModel + DDPMScheduler folder (cosine betas): the time is the DDPM step whose sigma (from the
    scheduler's own alphas_cumprod) is nearest; the default tap is the mid block."""
    diffusers = pytest.importorskip("diffusers", reason="the diffusers extra is not installed")
    pipe = tmp_path / "pipe"
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    unet.save_pretrained(pipe / "unet")
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    sched.save_pretrained(pipe / "scheduler")
    ab = sched.alphas_cumprod.double().numpy()
    step = int(np.argmin(np.abs(np.log(np.sqrt((1 - ab) / ab)) - np.log(0.5))))
    rng = np.random.default_rng(1)
    data = tmp_path / "img.npy"
    np.save(data, rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8))
    s = spy()
    out = tmp_path / "f.h5"
    r = extract(icr, pipe, data, out, "--batch-size", "8", sigma=0.5)
    assert r["layers"] == ["mid_block"]
    (_, t), _ = s.inputs[""][0]
    assert torch.all(t == step)
    assert only(out).shape == (8, 2, 16)
    scored(icr, out)


@pytest.mark.slow
def test_vae_turns_pixel_views_into_latents(zoo, icr, tmp_path):
    """--vae PATH: images (64x64) are encoded by the VAE (posterior mean x scaling_factor) for the latent
    DiT; with --augment none the features equal those of the same latents given directly."""
    diffusers = pytest.importorskip("diffusers", reason="the diffusers extra is not installed")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4,
                                  up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8,) * 4,
                                  layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=64)
    vae.save_pretrained(tmp_path / "vae")
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    np.save(tmp_path / "img64.npy", images)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
    np.save(tmp_path / "lat.npy", latents.numpy())
    common = ["--augment", "none", "--batch-size", "8", "--arch-arg", "num_heads=2"]
    extract(icr, zoo["dit_ema"], tmp_path / "img64.npy", tmp_path / "vae.h5", "--vae", tmp_path / "vae", *common)
    extract(icr, zoo["dit_ema"], tmp_path / "lat.npy", tmp_path / "lat.h5", *common)
    np.testing.assert_allclose(only(tmp_path / "vae.h5"), only(tmp_path / "lat.h5"), rtol=1e-4, atol=1e-5)
    extract(icr, zoo["dit_ema"], tmp_path / "img64.npy", tmp_path / "paper.h5", "--vae", tmp_path / "vae",
            *common[2:])  # colour jitter is fine in pixel space


# ------------------------------------------------------------------------------------------------------------
# Real images.

def _need(path):
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared real-image data)")
    return path


@pytest.mark.slow
def test_mnist_idx_resized_into_colour_model(zoo, icr, tmp_path):
    """28x28 grey MNIST digits (IDX) --resize into a 3x32x32 model; their labels are kept by index."""
    folder = _need(SHARED_DATA / "mnist-test")
    out = tmp_path / "mnist.h5"
    fail(icr("extract", zoo["ddpmpp"], "--data", folder, "--sigma", "0.3", "-o", out), "--resize", "1x28x28")
    extract(icr, zoo["ddpmpp"], folder, out, "--resize", "--images", "16", sigma=0.3)
    f = read(out)
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as g:
        labels = np.frombuffer(g.read(), np.uint8, offset=8)
    assert len(labels) == 10000 and len(f["index"]) == 16 and f["index"].max() < 10000
    np.testing.assert_array_equal(f["labels"], labels[f["index"]])
    scored(icr, out)


@pytest.mark.slow
def test_cifar10_tar_labels_from_class_folders(zoo, icr, tmp_path):
    """The CIFAR-10 test tar (32x32 JPEGs in test/<class>/) goes in as is; label = the class's index in
    CIFAR-10's order (alphabetical, as the folders sort)."""
    tar = _need(SHARED_DATA / "cifar10-test" / "cifar10_test_jpg.tar")
    out = tmp_path / "cifar.h5"
    extract(icr, zoo["ddpmpp"], tar, out, "--images", "16", sigma=0.3)
    f = read(out)
    with tarfile.open(tar) as t:
        names = sorted(n for n in t.getnames() if n.endswith(".jpg"))
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    want = [classes.index(Path(names[i]).parent.name) for i in f["index"]]
    np.testing.assert_array_equal(f["labels"], want)
    scored(icr, out)


# ------------------------------------------------------------------------------------------------------------
# Determinism.

@pytest.mark.slow
def test_same_command_same_features_batch_size_and_seed(zoo, icr, tmp_path):
    def run(name, *args):
        extract(icr, zoo["ddpmpp"], zoo["img32"], tmp_path / name, *args)
        return only(tmp_path / name)

    a = run("a.h5", "--batch-size", "4")
    np.testing.assert_array_equal(a, run("b.h5", "--batch-size", "4"))
    # Another batch size and chunking: the same augmentation and noise per (image, view).
    np.testing.assert_allclose(a, run("c.h5", "--batch-size", "3", "--chunk-images", "5"), rtol=1e-5, atol=1e-6)
    d = run("d.h5", "--batch-size", "4", "--seed", "1")
    assert not np.allclose(a, d, rtol=1e-2)
    # More views: the first two are the same views as before.
    np.testing.assert_allclose(run("e.h5", "--batch-size", "4", "--views", "3")[:, :2], a, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_subset_is_the_same_for_every_sigma(zoo, icr, tmp_path):
    idx = []
    for s in (0.0, 0.2, 1.5):
        extract(icr, zoo["ddpmpp"], zoo["img32"], tmp_path / f"{s}.h5", sigma=s)
        idx.append(read(tmp_path / f"{s}.h5")["index"])
    assert len(np.unique(idx[0])) == 8 and np.all(np.diff(idx[0]) > 0)
    for other in idx[1:]:
        np.testing.assert_array_equal(idx[0], other)
    assert not np.allclose(only(tmp_path / "0.2.h5"), only(tmp_path / "1.5.h5"), rtol=1e-2)


@pytest.mark.slow
def test_several_layers_at_once_equal_separate_runs(zoo, icr, tmp_path):
    layers = [EDM32, "model.enc.16x16_block0", "model.dec.8x8_block0"]
    extract(icr, zoo["ddpmpp"], zoo["img32"], tmp_path / "all.h5", *sum((["--layer", n] for n in layers), []))
    together = read(tmp_path / "all.h5")["features"]
    assert sorted(together) == sorted(layers)
    for i, n in enumerate(layers):
        extract(icr, zoo["ddpmpp"], zoo["img32"], tmp_path / f"{i}.h5", "--layer", n)
        np.testing.assert_allclose(together[n], only(tmp_path / f"{i}.h5"), rtol=1e-6, atol=1e-7)
    r = ok(icr("score", tmp_path / "all.h5", "--layer", "model.dec.8x8_block0", "-q"))
    assert r["dim"] == together["model.dec.8x8_block0"].shape[-1]


@pytest.mark.slow
def test_pool_none_flattens(zoo, icr, tmp_path):
    """--pool none gives D = C*H*W (16 channels at 16x16), whose spatial mean is the pooled feature."""
    extract(icr, zoo["ddpmpp"], zoo["img32"], tmp_path / "flat.h5", "--pool", "none")
    extract(icr, zoo["ddpmpp"], zoo["img32"], tmp_path / "mean.h5")
    flat, mean = only(tmp_path / "flat.h5"), only(tmp_path / "mean.h5")
    assert flat.shape == (8, 2, 16 * 16 * 16)
    np.testing.assert_allclose(flat.reshape(8, 2, 16, 256).mean(-1), mean, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_low_precision_compute_stores_float32(zoo, icr, tmp_path):
    extract(icr, zoo["ddpmpp"], zoo["img32"], tmp_path / "f32.h5")
    extract(icr, zoo["ddpmpp"], zoo["img32"], tmp_path / "bf16.h5", "--dtype", "bfloat16")
    a, b = only(tmp_path / "f32.h5"), only(tmp_path / "bf16.h5")
    assert b.dtype == np.float32 and not np.array_equal(a, b)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


# ------------------------------------------------------------------------------------------------------------
# Caching.

@pytest.mark.slow
def test_cache_hit_changed_option_and_foreign_output(zoo, icr, tmp_path, cache_dir, monkeypatch):
    import icrcli.features.extract as ex
    real = ex.compute_levels
    args = ["extract", zoo["ddpmpp"], "--data", zoo["img32"], "--sigma", "0.5", "--images", "8", "-q"]
    first = ok(icr(*args))
    path = Path(first["features"])
    assert first["cached"] is False and path.is_file() and path.is_relative_to(cache_dir)
    assert first["config_key"] in path.name
    feats = only(path)

    def boom(*a, **k):
        raise AssertionError("recomputed a cached request")
    monkeypatch.setattr(ex, "compute_levels", boom)
    t0 = time.perf_counter()
    again = ok(icr(*args))
    assert again["cached"] is True and again["features"] == str(path)
    assert time.perf_counter() - t0 < 5
    np.testing.assert_array_equal(only(path), feats)

    monkeypatch.setattr(ex, "compute_levels", real)
    changed = ok(icr("extract", zoo["ddpmpp"], "--data", zoo["img32"], "--sigma", "0.25", "--images", "8", "-q"))
    assert changed["cached"] is False
    assert changed["config_key"] != first["config_key"] and changed["features"] != first["features"]
    assert path.is_file()

    # An -o file written by another configuration is never mixed or replaced silently.
    out = tmp_path / "mine.h5"
    extract(icr, zoo["ddpmpp"], zoo["img32"], out, sigma=0.5)
    fail(icr("extract", zoo["ddpmpp"], "--data", zoo["img32"], "--sigma", "0.3", "--images", "8", "-o", out),
         str(out), "--overwrite")
    np.testing.assert_array_equal(only(out), feats)
    extract(icr, zoo["ddpmpp"], zoo["img32"], out, "--overwrite", sigma=0.3)
    assert read(out)["attrs"]["sigma"] == 0.3


# ------------------------------------------------------------------------------------------------------------
# Early stop.

@pytest.mark.slow
def test_early_stop_skips_later_modules(zoo, icr, tmp_path, spy):
    """Tapping dec.16x16_block1 runs nothing after it (the output conv never runs); the features equal
    the tapped layer's output in a full forward pass of a fresh network on the same inputs."""
    s = spy(count=["model.enc.32x32_conv", "model.dec.16x16_block2", "model.dec.32x32_up",
                    "model.dec.32x32_aux_conv"])
    out = tmp_path / "f.h5"
    extract(icr, zoo["ddpmpp"], zoo["img32"], out, "--batch-size", "4")
    assert s.calls["model.enc.32x32_conv"] == 4  # 2 batches x 2 views
    assert s.calls["model.dec.16x16_block2"] == s.calls["model.dec.32x32_up"] == 0
    assert s.calls["model.dec.32x32_aux_conv"] == 0
    fresh = loaded(edm.build_edm("edm", **DDPMPP32), zoo["ddpmpp_sd"])
    full = Spy(count=["model.dec.32x32_aux_conv"])
    full.attach(fresh)
    got = recompute(fresh, EDM32, s.inputs[""])  # (batch x view, 4, D)
    assert full.calls["model.dec.32x32_aux_conv"] == 4
    want = got.reshape(2, 2, 4, -1).transpose(0, 2, 1, 3).reshape(8, 2, -1)
    np.testing.assert_allclose(only(out), want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# icr layers.

@pytest.mark.slow
def test_layers_lists_shapes_and_marks_default(zoo, icr):
    r = icr("layers", zoo["ddpmpp"])
    assert r.code == 0, r.err
    marked = [line for line in r.out.splitlines() if line.startswith("*")]
    assert len(marked) == 1 and EDM32 in marked[0] and "16x16x16" in marked[0]
    assert any("model.enc.32x32_conv" in line and "8x32x32" in line for line in r.out.splitlines())
    rows = ok(icr("layers", zoo["ddpmpp"], "--json"))
    by_name = {row["name"]: row for row in rows}
    assert [row["name"] for row in rows if row["default"]] == [EDM32]
    assert by_name[EDM32]["output_shape"] == [1, 16, 16, 16]
    assert by_name["model.dec.8x8_block0"]["output_shape"] == [1, 16, 8, 8]
    shallow = ok(icr("layers", zoo["ddpmpp"], "--json", "--depth", "2"))
    assert shallow and all(row["name"].count(".") <= 1 for row in shallow)
    rows = ok(icr("layers", zoo["dit"], "--json"))
    assert [row["name"] for row in rows if row["default"]] == ["blocks.0"]
    assert {row["name"]: row for row in rows}["blocks.0"]["output_shape"] == [1, 16, 32]


# ------------------------------------------------------------------------------------------------------------
# Bad input: exit 2, a clear message, no traceback.

@pytest.mark.slow
def test_bad_checkpoints(zoo, icr, tmp_path):
    data = ["--data", zoo["img32"], "--sigma", "0.5", "-o", tmp_path / "f.h5"]
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint at all" * 10)
    fail(icr("extract", junk, *data), "junk.pt", "not a checkpoint format")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(zoo["ddpmpp"].read_bytes()[:5000])  # inside the header
    fail(icr("extract", cut, *data), "cut.safetensors", "corrupt")
    cut.write_bytes(zoo["ddpmpp"].read_bytes()[:-100])  # inside the tensors
    fail(icr("extract", cut, *data), "cut.safetensors", "corrupt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(zoo["ddpmpp_pt"].read_bytes()[:-100])
    fail(icr("extract", cut, *data), "cut.pt", "corrupt")
    fail(icr("extract", tmp_path / "absent.pt", *data), "absent.pt")
    fail(icr("extract", zoo["dit"], *data, "--key", "nope"), "'nope'", "'model'", "'ema'", "'opt'")
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(4, 4), "decoder.bias": torch.zeros(4)}, other)
    fail(icr("extract", other, *data), "--arch")
    fail(icr("extract", zoo["ddpmpp"], *data, "--arch", "unet9000"), "unet9000", "--arch")
    fail(icr("extract", zoo["ddpmpp"], *data, "--layer", "model.dec.16x16_blok1"),
         "model.dec.16x16_blok1", EDM32, "icr layers")
    assert not (tmp_path / "f.h5").exists()


def test_pickle_with_code_needs_trust(zoo, icr, tmp_path):
    """A whole pickled nn.Module names its class: refused without --trust-pickle, loaded with it."""
    import user_arch
    net = loaded(user_arch.TinyDenoiser(width=8), zoo["user_sd"])
    whole = tmp_path / "whole.pt"
    torch.save(net, whole)
    args = ["extract", whole, "--data", zoo["img16"], "--sigma", "0.5", "--images", "8", "--arch",
            "user_arch:build", "--param", "edm", "--layer", "body.0", "-q"]
    fail(icr(*args, "-o", tmp_path / "a.h5"), "--trust-pickle", "TinyDenoiser")
    extract(icr, zoo["user"], zoo["img16"], tmp_path / "b.h5", *args[6:])
    ok(icr(*args, "-o", tmp_path / "a.h5", "--trust-pickle"))
    np.testing.assert_array_equal(only(tmp_path / "a.h5"), only(tmp_path / "b.h5"))


@pytest.mark.slow
def test_bad_data_and_options(zoo, icr, tmp_path):
    from PIL import Image
    run = lambda data, *a: icr("extract", zoo["ddpmpp"], "--data", data, "--sigma", "0.5", "-o",
                               tmp_path / "f.h5", *a)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    fail(run(folder), "zz-broken.png")  # found while probing the folder
    big = tmp_path / "many"  # 20 images: the header probe reads 16 of them, not 04.png; decoding does
    big.mkdir()
    for i in range(20):
        Image.fromarray(np.full((32, 32, 3), 10 * i, np.uint8)).save(big / f"{i:02d}.png")
    (big / "04.png").write_bytes((big / "04.png").read_bytes()[:60])
    fail(run(big, "--images", "20", "--chunk-images", "8"), "04.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    fail(run(empty), "no images", "empty")
    fail(run(tmp_path / "nowhere"), "nowhere")
    fail(run(zoo["img32"], "--sigma=-0.1"), "sigma")
    fail(run(zoo["img32"], "--views", "1"), "views")
    fail(run(zoo["img16"]), "3x16x16", "3x32x32", "--resize")
    fail(run(zoo["grey28"]), "--resize")
    fail(icr("extract", zoo["dit"], "--data", zoo["img16"], "--sigma", "0.5", "-o", tmp_path / "f.h5"),
         "latent", "--vae")
    fail(icr("extract", zoo["dit"], "--data", zoo["lat"], "--sigma", "0.5", "-o", tmp_path / "f.h5"),
         "--augment")  # colour jitter on latents
    big = tmp_path / "lat16.npy"
    np.save(big, np.zeros((4, 4, 16, 16), np.float32))
    fail(icr("extract", zoo["dit"], "--data", big, "--sigma", "0.5", "--augment", "none", "--resize", "-o",
             tmp_path / "f.h5"), "4x16x16", "4x8x8")
    fail(icr("extract", zoo["dit"], "--data", zoo["lat"], "--sigma", "0.5", "--augment", "none",
             "--class-label", "10", "-o", tmp_path / "f.h5"), "--class-label 10", "0..9")
    fail(icr("extract", zoo["adm"], "--data", zoo["img16"], "--sigma", "0.5", "--class-label", "12", "-o",
             tmp_path / "f.h5"), "--class-label 12", "0..9")
    fail(run(zoo["img32"], "--class-label", "1"), "unconditional")
    assert not (tmp_path / "f.h5").exists()
