"""Your own checkpoint, from the command line alone (issue 9): one test per situation that used to need icr's
source, with a small network built here (tests/own_nets.py): a 1x28x28 LayerNorm model, a wrapper saved whole
(every key under `network.`), a DDPM CNN keeping `alpha_t`/`beta_t` (1001 entries, T = 1000), a VE-SDE score
network taking continuous t, a DiT-like model needing y. Each runs through the real entry point; where the tool
must stop, the exact message is asserted.

Checked against something independent of the pipeline: the step and time fed (minDiffusion's own schedule code,
the SDE closed forms of Song et al.), features recomputed by a fresh forward pass, and invariances (pad 0 is no
augmentation; sigma 0 and 0.002 on a discrete model are the same step; a list of indices is the same subset
whatever its order or file type).

Second pass (issue 20), tests 11-16: a schedule kept beside the network taken with --key (`gt.*` next to
`alpha_t`/`beta_t`), constructor arguments as Python literals (a tuple n_hidden), the null class only where the label
table has a spare row (10 rows for 10 digits have none), activations that are functions (F.silu, a lambda passed to
the constructor) named by `icr layers` and the `file.py:function` builder, a reference split for the probe in one
sweep, and the README's command lines.
"""

import functools
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import own_nets
from icrcli.data import augment
from icrcli.models import noise
from conftest import answer

NETS = f"{Path(__file__).resolve().parent / 'own_nets.py'}"
N_IMG = 12


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def save(net, path, wrap=None):
    torch.manual_seed(0)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    torch.save({f"{wrap}.{k}": v for k, v in sd.items()} if wrap else sd, path)
    return net.eval()


@pytest.fixture
def mnist(tmp_path):
    """12 random 28x28 grey images (NHWC uint8), and the same as 32x32 RGB."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "mnist.npy", rng.integers(0, 256, (N_IMG, 28, 28, 1), dtype=np.uint8))
    np.save(tmp_path / "rgb32.npy", rng.integers(0, 256, (N_IMG, 32, 32, 3), dtype=np.uint8))
    return tmp_path / "mnist.npy"


def extract(icr, ckpt, data, out, *args):
    r = icr("extract", ckpt, "--data", data, "--images", 8, "--batch-size", 4, "--augment", "none", "-o", out, *args)
    assert r.code == 0, r.err
    return r


def feats(path, layer):
    with h5py.File(path, "r") as f:
        return f[f"features/{layer}"][:], f["index"][:], dict(f.attrs), json.loads(f.attrs["config"])


def message(r):
    """The error paragraph of a run that ended with exit 2 (after the progress lines), whitespace-normalised."""
    assert r.code == 2, (r.code, r.err)
    assert "icr: error: " in r.err, r.err
    return " ".join(r.err.split("icr: error: ", 1)[1].split())


# ------------------------------------------------------------------------------------------------- 1. image shape

@pytest.mark.slow
def test_image_shape_defaults_to_the_data_and_is_never_a_constructor_argument(icr, mnist, tmp_path):
    net = save(own_nets.LayerNormNet(), tmp_path / "ln.pt")
    arch = ["--arch", f"{NETS}:LayerNormNet", "--param", "edm", "--layer", "norm"]
    # The data's shape (1x28x28), though the constructor knows nothing of it.
    extract(icr, tmp_path / "ln.pt", mnist, tmp_path / "a.h5", "--sigma", "0", *arch)
    got, index, _, config = feats(tmp_path / "a.h5", "norm")
    x = torch.from_numpy(np.load(mnist)[index].transpose(0, 3, 1, 2)).float() / 255 * 2 - 1
    out = {}
    net.norm.register_forward_hook(lambda m, i, o: out.setdefault("norm", o))
    net(x, torch.full((len(x),), 0.002))  # sigma 0 is conditioned on EDM's 0.002
    np.testing.assert_allclose(got[:, 0], out["norm"].mean((2, 3)).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert "image_shape" not in config  # not given: the key is what it always was
    # 32x32 RGB data: the model's shape from --image-shape (or the sidecar), reached with --resize.
    rgb = tmp_path / "rgb32.npy"
    assert "but the model takes 1x28x28" in message(icr("extract", tmp_path / "ln.pt", "--data", rgb, "--sigma", 0.5,
                                                         "--image-shape", "1x28x28", *arch))
    extract(icr, tmp_path / "ln.pt", rgb, tmp_path / "b.h5", "--sigma", "0.5", *arch, "--image-shape", "1x28x28",
            "--resize")
    assert feats(tmp_path / "b.h5", "norm")[3]["image_shape"] == "1x28x28"
    (tmp_path / "ln.pt.icr.json").write_text(json.dumps({"image_shape": "1x28x28"}))
    r = extract(icr, tmp_path / "ln.pt", rgb, tmp_path / "c.h5", "--sigma", "0.5", *arch, "--resize")
    assert "gives: image_shape" in r.err
    np.testing.assert_array_equal(feats(tmp_path / "c.h5", "norm")[0], feats(tmp_path / "b.h5", "norm")[0])
    assert message(icr("extract", tmp_path / "ln.pt", "--data", mnist, "--sigma", 0.5, *arch, "--image-shape",
                       "28x28")) == ("--image-shape (or the sidecar's image_shape) '28x28': write the shape the "
                                     "network takes as CxHxW, e.g. 1x28x28 or 3x32x32.")


# ------------------------------------------------------------------------------------------------- 2. icr layers

def test_layers_probes_with_the_image_shape_and_shows_no_default(icr, tmp_path):
    save(own_nets.LayerNormNet(), tmp_path / "ln.pt")
    arch = ["--arch", f"{NETS}:LayerNormNet", "--param", "edm"]
    err = message(icr("layers", tmp_path / "ln.pt", *arch))
    assert err.startswith(f"Your network {NETS}:LayerNormNet failed on an input of shape 1x3x32x32 with time 1: "
                          "RuntimeError: ")
    assert err.endswith("Give the input shape it takes with --image-shape CxHxW (and --resize if the images "
                        "differ), and check --call, --time-input and --time-shape. `icr layers` tried 3x32x32, its "
                        "guess when no --image-shape is given.")
    r = icr("layers", tmp_path / "ln.pt", *arch, "--image-shape", "1x28x28", "--json")
    assert r.code == 0, r.err
    rows = {row["name"]: row for row in r.json}
    assert rows["norm"]["output_shape"] == [1, 4, 28, 28]
    assert not any(row["default"] for row in r.json)  # not <root>: a user architecture has no default tap
    assert "no default layer for this architecture: pass --layer NAME to `icr extract`" in r.err
    text = icr("layers", tmp_path / "ln.pt", *arch, "--image-shape", "1x28x28").out
    assert not any(line.startswith("*") for line in text.splitlines())


# ------------------------------------------------------------------------------------------------- 3. wrapper prefix

def test_a_wrapper_saved_whole_is_taken_with_key_prefix(icr, mnist, tmp_path):
    save(own_nets.LayerNormNet(), tmp_path / "plain.pt")
    save(own_nets.LayerNormNet(), tmp_path / "wrapped.pt", wrap="network")
    args = ["--sigma", "0.3", "--arch", f"{NETS}:LayerNormNet", "--param", "edm", "--layer", "norm"]
    assert message(icr("extract", tmp_path / "wrapped.pt", "--data", mnist, *args)) == (
        f"The weights do not fit {NETS}:LayerNormNet as they are: every key in the file starts with 'network.' (the "
        "network was saved inside a wrapper), and without that prefix they fit. Pass --key network to take the "
        "weights under it.")
    extract(icr, tmp_path / "wrapped.pt", mnist, tmp_path / "w.h5", *args, "--key", "network")
    extract(icr, tmp_path / "plain.pt", mnist, tmp_path / "p.h5", *args)
    np.testing.assert_array_equal(feats(tmp_path / "w.h5", "norm")[0], feats(tmp_path / "p.h5", "norm")[0])
    assert feats(tmp_path / "w.h5", "norm")[3]["weights"] == "network"
    err = message(icr("extract", tmp_path / "wrapped.pt", "--data", mnist, *args, "--key", "netw"))
    assert "has no entry 'netw': the entries at the top level are ['network']." in err
    # A long list of names is cut to a few and a count.
    torch.save({f"block{i}.weight": torch.zeros(2) for i in range(40)}, tmp_path / "many.pt")
    err = message(icr("extract", tmp_path / "many.pt", "--data", mnist, *args, "--key", "nope"))
    assert "['block0', 'block1', 'block10', 'block11', 'block12', 'block13', 'block14', 'block15', ...] (40 in all)" \
        in err and len(err) < 600


# ------------------------------------------------------------------------------------------------- 4. stored schedules

def _step_for(sigma, alphabar):
    """The nearest step in log sigma, from minDiffusion's own alphabar_t (float64)."""
    ab = alphabar.double().numpy()
    return int(np.argmin(np.abs(np.log(np.sqrt((1 - ab) / ab)) - math.log(sigma))))


def test_alpha_t_beta_t_buffers_are_the_schedule_and_none_is_assumed(icr, mnist, tmp_path):
    save(own_nets.DDPMNet(), tmp_path / "ddpm.pt")
    args = ["--arch", f"{NETS}:DDPMNet", "--param", "ddpm", "--time-input", "index/T", "--layer", "norm"]
    r = extract(icr, tmp_path / "ddpm.pt", mnist, tmp_path / "d.h5", "--sigma", "0.3", *args)
    assert ("noise: --param ddpm, time input index/T; schedule from the checkpoint's buffer 'alpha_t', read as "
            "per-step alphas (all >= 0.98), cumulated: alpha_bar = cumprod(alpha) (1001 entries, steps 0..1000: "
            "T = 1000)") in r.err
    _, _, attrs, config = feats(tmp_path / "d.h5", "norm")
    step = _step_for(0.3, own_nets.ddpm_schedules()["alphabar_t"])
    assert attrs["effective_step"] == step and config["noise"]["schedule"]["T"] == 1000
    assert attrs["time_value"] == pytest.approx(step / 1000, rel=1e-6)  # minDiffusion feeds t / n_T
    # Without the buffers, and without --schedule: refused, where it used to assume linear 1e-4..0.02.
    save(own_nets.LayerNormNet(), tmp_path / "bare.pt")
    bare = ["--arch", f"{NETS}:LayerNormNet", "--param", "ddpm", "--layer", "norm"]
    assert message(icr("extract", tmp_path / "bare.pt", "--data", mnist, "--sigma", 0.3, *bare)) == (
        "This is a discrete-time model (--param ddpm) and no noise schedule was given: none is stored in the "
        "checkpoint (icr looks for alphas_cumprod, alpha_bar, alpha_t, betas, beta_t, sqrt_alphas_cumprod, log_snr "
        "and similar names), none in the sidecar, none on the command line. A wrong schedule gives wrong features "
        "with no sign, so icr does not assume one: pass the schedule the model was trained with, e.g. --schedule "
        "linear:1e-4:0.02:1000 (DDPM), --schedule cosine:1000, or \"schedule\" in the sidecar.")
    extract(icr, tmp_path / "bare.pt", mnist, tmp_path / "b.h5", "--sigma", "0.3", *bare, "--schedule",
            "linear:1e-4:0.02:1000")


def test_schedule_buffers_are_read_by_name_and_value():
    s = {k: v.double() for k, v in own_nets.ddpm_schedules().items()}  # float64: no cancellation in 1 - ab
    ab = s["alphabar_t"].numpy()
    for key, values in [("alpha_t", s["alpha_t"]), ("beta_t", s["beta_t"]), ("model.alphabar_t", s["alphabar_t"]),
                        ("alpha_t", s["alphabar_t"]),  # named alpha_t but cumulative: told from the values
                        ("sqrt_alphas_cumprod", s["alphabar_t"].sqrt()),
                        ("sqrtmab", (1 - s["alphabar_t"]).sqrt()),
                        ("log_snr", torch.log(s["alphabar_t"] / (1 - s["alphabar_t"])))]:
        got, how = noise.read_schedule_buffer(key, values)
        np.testing.assert_allclose(got, ab, rtol=2e-4, err_msg=f"{key}: {how}")
    assert noise.find_schedule_buffer({"norm.beta": torch.rand(4), "conv.weight": torch.rand(4)}) is None
    assert noise.find_schedule_buffer({"beta_t": s["beta_t"], "alpha_t": s["alpha_t"]})[0] == "alpha_t"
    assert noise.steps_of_buffer(1001) == 1000 and noise.steps_of_buffer(1000) == 1000


# ------------------------------------------------------------------------------------------------- 5. continuous time

def test_continuous_time_closed_forms():
    t = np.linspace(1e-3, 1, 50)
    np.testing.assert_allclose(noise.ve_sde_t(0.01 * (50 / 0.01) ** t, 0.01, 50), t, rtol=1e-12)
    # Song's tutorial, marginal_prob_std(t, sigma=25), written out.
    std = np.sqrt((25.0 ** (2 * t) - 1) / 2 / np.log(25.0))
    np.testing.assert_allclose(noise.ve_tutorial_sigma(t, 25), std, rtol=1e-12)
    np.testing.assert_allclose(noise.ve_tutorial_t(std, 25), t, rtol=1e-10)
    # Song et al.'s VPSDE(beta_min=0.1, beta_max=20).marginal_prob: mean coefficient and std; EDM sigma = std/mean.
    lmc = -0.25 * t ** 2 * (20 - 0.1) - 0.5 * t * 0.1
    sigma = np.sqrt(1 - np.exp(2 * lmc)) / np.exp(lmc)
    conv = noise.from_options("vp", time_kind="vp-sde:0.1:20")
    for ti, si in zip(t[::7], sigma[::7]):
        x = torch.zeros(1, 1, 2, 2)
        x_in, time, info = conv.model_inputs(x, torch.ones_like(x), float(si))
        assert float(time[0]) == pytest.approx(ti, rel=1e-5)
        assert float(x_in[0, 0, 0, 0]) == pytest.approx(math.sqrt(1 - math.exp(2 * (-0.25 * ti ** 2 * 19.9
                                                                                   - 0.05 * ti))), rel=1e-5)
    with pytest.raises(Exception, match="write it as ve-sde:SIGMA_MIN:SIGMA_MAX"):
        noise.parse_time_kind("ve-sde:0.01")


@pytest.mark.slow
def test_ve_sde_model_takes_continuous_t(icr, mnist, tmp_path):
    net = save(own_nets.ScoreNet(), tmp_path / "score.pt")
    args = ["--arch", f"{NETS}:ScoreNet", "--time-input", "ve-sde:0.01:50", "--data-range", "0:1", "--layer", "norm"]
    extract(icr, tmp_path / "score.pt", mnist, tmp_path / "s.h5", "--sigma", "2", *args)  # --param ve implied
    _, _, attrs, config = feats(tmp_path / "s.h5", "norm")
    s_model = 2 * (1 - 0) / 2  # sigma 2 on [-1, 1] data is sigma (hi - lo) / 2 = 1 on the model's [0, 1] data
    assert attrs["time_value"] == pytest.approx(math.log(s_model / 0.01) / math.log(50 / 0.01), rel=1e-6)
    assert config["noise"]["param"] == "ve" and config["noise"]["sde"]["params"] == [0.01, 50.0]
    # Below sigma_min: the noise asked for, conditioned on t = 1e-5, and a warning. At sigma 0 the features are
    # the network's on the clean [0, 1] images at t = 1e-5, recomputed here.
    r = extract(icr, tmp_path / "score.pt", mnist, tmp_path / "z.h5", "--sigma", "0", *args)
    assert "warning: --sigma 0 is below this model's smallest noise level (0.02 on [-1, 1] data)" in r.err
    got, index, attrs, _ = feats(tmp_path / "z.h5", "norm")
    assert attrs["time_value"] == pytest.approx(1e-5) and attrs["effective_sigma"] == 0
    x = torch.from_numpy(np.load(mnist)[index].transpose(0, 3, 1, 2)).float() / 255
    out = {}
    net.norm.register_forward_hook(lambda m, i, o: out.setdefault("norm", o))
    net(x, torch.full((len(x),), 1e-5))
    np.testing.assert_allclose(got[:, 1], out["norm"].mean((2, 3)).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert "is for --param ve models" in message(icr("extract", tmp_path / "score.pt", "--data", mnist, "--sigma", 1,
                                                     *args, "--param", "edm"))


# ------------------------------------------------------------------------------------------------- 6. class input

def test_a_model_needing_y_stops_before_the_first_forward(icr, mnist, tmp_path):
    save(own_nets.DiTLike(), tmp_path / "dit.pt")
    args = ["--sigma", "0.3", "--arch", f"{NETS}:DiTLike", "--param", "edm", "--layer", "block"]
    err = message(icr("extract", tmp_path / "dit.pt", "--data", mnist, *args, "-o", tmp_path / "x.h5"))
    assert err == (f"Your network {NETS}:DiTLike is called as forward(x, t, y), which --call x,t does not fit "
                   "(missing a required argument: 'y'). Pass --call to match it: positional roles x, t, y in order "
                   "(e.g. --call x,t,y, with --class-label N for a class-conditional model), or keywords such as "
                   "--call sample=x,timestep=t.")
    err = message(icr("extract", tmp_path / "dit.pt", "--data", mnist, *args, "--call", "x,t,y", "-o",
                      tmp_path / "x.h5"))
    assert err == ("--call x,t,y feeds your network a class y, but no class was given: pass --class-label N, the "
                   "class to condition on. Your network's y_embedder has 11 rows for 10 classes (the constructor's "
                   "default num_classes=10): the extra row, 10, is its null class (classifier-free guidance, as "
                   "DiT), which conditions on no class as the paper does: --class-label 10.")
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.h5.parts").exists()
    extract(icr, tmp_path / "dit.pt", mnist, tmp_path / "n.h5", *args, "--call", "x,t,y", "--class-label", "10")
    extract(icr, tmp_path / "dit.pt", mnist, tmp_path / "c.h5", *args, "--call", "x,t,y", "--class-label", "3")
    null, three = feats(tmp_path / "n.h5", "block"), feats(tmp_path / "c.h5", "block")
    assert null[3]["class_label"] == 10 and three[3]["class_label"] == 3
    assert not np.allclose(null[0], three[0])


# ------------------------------------------------------------------------------------------------- 7. augmentation strength

@pytest.mark.slow
def test_augmentation_strengths_are_options_recorded_and_keyed(icr, mnist, tmp_path):
    save(own_nets.LayerNormNet(), tmp_path / "ln.pt")
    args = ["--sigma", "0.2", "--arch", f"{NETS}:LayerNormNet", "--param", "edm", "--layer", "norm"]
    runs = {}
    for name, spec in [("none", "none"), ("pad0", "crop:pad=0"), ("pad2", "crop:pad=2"), ("crop", "crop"),
                       ("paper", "paper:pad=2,jitter=0.3,p=0.5")]:
        extract(icr, tmp_path / "ln.pt", mnist, tmp_path / f"{name}.h5", *args, "--augment", spec)
        runs[name] = feats(tmp_path / f"{name}.h5", "norm")
    np.testing.assert_array_equal(runs["pad0"][0], runs["none"][0])  # padding 0 crops the image itself
    assert not np.array_equal(runs["pad2"][0], runs["crop"][0])
    keys = {n: r[2]["config_key"] for n, r in runs.items()}
    assert len(set(keys.values())) == len(keys)
    assert runs["pad2"][3]["augment"] == "crop:pad=2" and runs["pad2"][2]["augment_pad_px"] == 2
    assert runs["crop"][2]["augment_pad_px"] == 4  # side/8 at 28x28, rounded
    assert runs["pad2"][3]["augment_params"]["ops"][0]["pad"] == 2
    paper = runs["paper"][3]["augment_params"]["ops"]
    assert paper[2]["brightness"] == [0.7, 1.3] and paper[2]["p"] == 0.5 and paper[2]["hue"] == [-0.1, 0.1]
    assert runs["crop"][3]["augment_params"] == augment.describe_policy("crop")  # the default's record as before
    assert message(icr("extract", tmp_path / "ln.pt", "--data", mnist, *args, "--augment", "crop:jitter=0.4")) == (
        "--augment 'crop:jitter=0.4': 'jitter=0.4' is not a strength of 'crop', which takes pad (zero padding in px "
        "on each side (default: side/8, rounded)). Write them as crop:name=value,name=value.")
    assert "out of range" in message(icr("extract", tmp_path / "ln.pt", "--data", mnist, *args, "--augment",
                                         "paper:p=2"))


# ------------------------------------------------------------------------------------------------- 8. recorded truth

@pytest.mark.slow
def test_sigma_below_the_first_step_is_recorded_and_warned(icr, mnist, tmp_path):
    save(own_nets.DDPMNet(), tmp_path / "ddpm.pt")
    args = ["--arch", f"{NETS}:DDPMNet", "--param", "ddpm", "--time-input", "index/T", "--layer", "norm",
            "--augment", "crop"]
    out = {}
    for sigma in ("0", "0.002"):
        r = extract(icr, tmp_path / "ddpm.pt", mnist, tmp_path / f"{sigma}.h5", "--sigma", sigma, *args)
        assert (f"warning: --sigma {sigma} is below this model's smallest noise level (0.01 on [-1, 1] data): its "
                "views carry sigma = 0.01 (step 0), whatever smaller sigma is asked, so such sigmas give the same "
                "features.") in " ".join(r.err.split())
        out[sigma] = feats(tmp_path / f"{sigma}.h5", "norm")
    np.testing.assert_array_equal(out["0"][0], out["0.002"][0])
    # minDiffusion: alphabar_0 = alpha_0 = 1 - beta_1, so step 0 carries sigma sqrt((1 - alpha_0) / alpha_0), about
    # 0.01 (alpha_0 as the float32 buffer holds it).
    a0 = float(own_nets.ddpm_schedules()["alpha_t"][0])
    attrs = out["0"][2]
    assert attrs["effective_sigma"] == pytest.approx(math.sqrt((1 - a0) / a0), rel=1e-9)
    assert attrs["effective_step"] == 0 and attrs["time_value"] == 0
    info = icr("info", tmp_path / "0.h5", "--json")
    assert info.json["provenance"]["effective_sigma"] == attrs["effective_sigma"]
    assert "effective_step: 0" in icr("info", tmp_path / "0.h5").out
    score = icr("score", tmp_path / "0.h5", "-o", "-")
    assert score.code == 0, score.err
    prov = json.loads(score.out)["provenance"]
    assert prov["effective_sigma"] == attrs["effective_sigma"] and prov["effective_step"] == 0
    r = extract(icr, tmp_path / "ddpm.pt", mnist, tmp_path / "hi.h5", "--sigma", "0.3", *args)
    assert "warning" not in r.err


# ------------------------------------------------------------------------------------------------- 9. one data range

def test_data_range_is_one_truth(icr, mnist, tmp_path):
    save(own_nets.LayerNormNet(), tmp_path / "ln.pt")
    args = ["--sigma", "0.4", "--arch", f"{NETS}:LayerNormNet", "--param", "edm", "--layer", "norm"]
    extract(icr, tmp_path / "ln.pt", mnist, tmp_path / "a.h5", *args, "--data-range", "0:1")
    _, _, attrs, config = feats(tmp_path / "a.h5", "norm")
    assert config["data_range"] == "0:1" and config["noise"]["data_range"] == [0.0, 1.0]
    assert attrs["time_value"] == pytest.approx(0.2)  # --param edm feeds sigma in the model's units: 0.4 / 2
    (tmp_path / "ln.pt.icr.json").write_text(json.dumps({"data_range": "0:1"}))  # the same from the sidecar
    extract(icr, tmp_path / "ln.pt", mnist, tmp_path / "b.h5", *args)
    assert feats(tmp_path / "b.h5", "norm")[3]["noise"]["data_range"] == [0.0, 1.0]
    assert feats(tmp_path / "b.h5", "norm")[2]["config_key"] == attrs["config_key"]


# ------------------------------------------------------------------------------------------------- 10. given indices

@pytest.mark.slow
def test_indices_file_gives_the_subset_and_the_key(icr, mnist, tmp_path):
    save(own_nets.LayerNormNet(), tmp_path / "ln.pt")
    args = ["--sigma", "0.3", "--arch", f"{NETS}:LayerNormNet", "--param", "edm", "--layer", "norm"]
    (tmp_path / "ids.txt").write_text("# the other study's images\n7\n1, 3\n10 # last\n")
    np.save(tmp_path / "ids.npy", np.array([10, 3, 7, 1]))
    extract(icr, tmp_path / "ln.pt", mnist, tmp_path / "t.h5", *args, "--indices", tmp_path / "ids.txt")
    extract(icr, tmp_path / "ln.pt", mnist, tmp_path / "n.h5", *args, "--indices", tmp_path / "ids.npy")
    t, n = feats(tmp_path / "t.h5", "norm"), feats(tmp_path / "n.h5", "norm")
    assert t[1].tolist() == [1, 3, 7, 10] and t[3]["n_images"] == 4
    assert t[2]["config_key"] == n[2]["config_key"]  # the same list, whatever the file: the same request
    np.testing.assert_array_equal(t[0], n[0])
    (tmp_path / "other.txt").write_text("1 3 7 11")
    extract(icr, tmp_path / "ln.pt", mnist, tmp_path / "o.h5", *args, "--indices", tmp_path / "other.txt")
    assert feats(tmp_path / "o.h5", "norm")[2]["config_key"] != t[2]["config_key"]
    # Each image keeps its views whatever else is in the list: rows 1, 3, 7 are the same.
    np.testing.assert_array_equal(feats(tmp_path / "o.h5", "norm")[0][:3], t[0][:3])
    (tmp_path / "bad.txt").write_text("1 3 12")
    assert message(icr("extract", tmp_path / "ln.pt", "--data", mnist, *args, "--indices", tmp_path / "bad.txt")) \
        == (f"--indices lists image 12, but {mnist} holds 12 images (indices 0..11). Check that the list was made for "
            "this data set.")
    (tmp_path / "dup.txt").write_text("1 3 3")
    assert "lists image 3 more than once" in message(icr("extract", tmp_path / "ln.pt", "--data", mnist, *args,
                                                         "--indices", tmp_path / "dup.txt"))
    (tmp_path / "word.txt").write_text("1 three")
    assert message(icr("extract", tmp_path / "ln.pt", "--data", mnist, *args, "--indices", tmp_path / "word.txt")) \
        == f"--indices {tmp_path / 'word.txt'}: 'three' is not an integer index."


def test_sweep_takes_the_same_options(icr, mnist, tmp_path):
    """--indices, --image-shape and augmentation strengths reach `icr sweep` through the shared option groups."""
    save(own_nets.LayerNormNet(), tmp_path / "ln.pt")
    (tmp_path / "ids.txt").write_text("2 4 6 8")
    r = icr("sweep", tmp_path / "ln.pt", "--data", mnist, "--sigmas", "0.3", "--arch", f"{NETS}:LayerNormNet",
            "--param", "edm", "--layer", "norm", "--indices", tmp_path / "ids.txt", "--image-shape", "1x28x28",
            "--augment", "crop:pad=1", "--batch-size", "4", "-o", tmp_path / "sweep.json")
    assert r.code == 0, r.err
    level = json.loads((tmp_path / "sweep.json").read_text())["levels"][0]
    got, index, attrs, config = feats(level["features"], "norm")
    assert index.tolist() == [2, 4, 6, 8] and config["augment"] == "crop:pad=1" and attrs["augment_pad_px"] == 1
    assert config["image_shape"] == "1x28x28"


def test_memorization_takes_a_user_network_its_shape_from_the_data(icr, mnist, tmp_path):
    """A user network says no image shape: memorization samples at the training images' shape."""
    save(own_nets.LayerNormNet(), tmp_path / "ln.pt")
    r = icr("memorization", tmp_path / "ln.pt", "--data", mnist, "--arch", f"{NETS}:LayerNormNet", "--param", "edm",
            "--prediction", "denoised", "--samples", "4", "--steps", "4", "-q")
    assert r.code == 0, r.err
    assert r.json["n_samples"] == 4 and 0 <= r.json["ratio"] <= 1


# ------------------------------------------------------------------------------------------------- second pass (issue 20)
# 11. a schedule beside the weights taken with --key

def test_a_schedule_beside_the_weights_taken_with_key_is_found_and_named(icr, mnist, tmp_path):
    """`gt.*` (the network) next to `alpha_t`/`beta_t` (the schedule): --key gt takes the network, and the schedule
    outside it is used and named. The features equal those of the same network saved with its buffers inside."""
    from safetensors.torch import save_file

    from icrcli.models.checkpoints import load_checkpoint
    save(own_nets.GTWrapper(), tmp_path / "gt.pt")
    save(own_nets.DDPMNet(), tmp_path / "inside.pt")  # the same weights (seed 0), the buffers among them
    sd = torch.load(tmp_path / "gt.pt")
    assert sorted(k for k in sd if not k.startswith("gt.")) == ["alpha_t", "beta_t"]
    save_file(sd, str(tmp_path / "gt.safetensors"))
    ckpt = load_checkpoint(tmp_path / "gt.pt", key="gt")
    assert sorted(ckpt.beside) == ["alpha_t", "beta_t"] and "alpha_t" not in ckpt.state_dict
    args = ["--sigma", "0.3", "--arch", f"{NETS}:LayerNormNet", "--param", "ddpm", "--time-input", "index/T",
            "--layer", "norm"]
    said = ("schedule from the checkpoint's buffer 'alpha_t' beside the weights, read as per-step alphas (all >= "
            "0.98), cumulated: alpha_bar = cumprod(alpha) (1001 entries, steps 0..1000: T = 1000)")
    for name in ("gt.pt", "gt.safetensors"):
        r = extract(icr, tmp_path / name, mnist, tmp_path / f"{name}.h5", *args, "--key", "gt")
        assert said in " ".join(r.err.split())
    extract(icr, tmp_path / "inside.pt", mnist, tmp_path / "inside.h5", *args[:3], f"{NETS}:DDPMNet", *args[4:])
    got, inside = feats(tmp_path / "gt.pt.h5", "norm"), feats(tmp_path / "inside.h5", "norm")
    np.testing.assert_array_equal(got[0], inside[0])
    np.testing.assert_array_equal(feats(tmp_path / "gt.safetensors.h5", "norm")[0], inside[0])
    assert got[2]["effective_step"] == _step_for(0.3, own_nets.ddpm_schedules()["alphabar_t"])
    assert got[3]["noise"]["schedule"]["source"].startswith("buffer 'alpha_t' beside the weights")
    assert got[3]["weights"] == "gt"
    # Nested, without --key: the EMA weights' own buffer wins over one beside them; without one, the one beside.
    from icrcli.models.resolve import ModelOptions, load_model, noise_convention
    inner = {k: v for k, v in torch.load(tmp_path / "inside.pt").items()}
    cosine = torch.from_numpy(noise.parse_schedule("cosine:1000")).float()
    net_only = {k: v for k, v in inner.items() if k not in ("alpha_t", "beta_t")}
    for arch, ckpt, want in [
            ("DDPMNet", {"ema": inner, "alphas_cumprod": cosine}, "buffer 'alpha_t', read as per-step"),
            ("LayerNormNet", {"ema": net_only, "step": 3, "alphas_cumprod": cosine},
             "buffer 'alphas_cumprod' beside the weights, read as alpha_bar")]:
        torch.save(ckpt, tmp_path / "nested.pt")
        opts = ModelOptions(arch=f"{NETS}:{arch}", param="ddpm", time_input="index/T")
        den = load_model(tmp_path / "nested.pt", opts)
        conv = noise_convention(den, den.options)
        assert conv.schedule_source.startswith(want), conv.schedule_source
    np.testing.assert_allclose(conv.schedule, cosine.double().numpy(), rtol=1e-6)
    # --schedule still wins over a stored buffer, beside the weights or not.
    r = extract(icr, tmp_path / "gt.pt", mnist, tmp_path / "spec.h5", *args, "--key", "gt", "--schedule",
                "linear:1e-4:0.02:1000")
    assert "beside the weights" not in r.err
    assert feats(tmp_path / "spec.h5", "norm")[3]["noise"]["schedule"]["source"] == "linear:1e-4:0.02:1000"


# 12. constructor arguments as written

def test_arch_arg_reads_python_literals_and_runs_no_code(icr, mnist, tmp_path):
    from icrcli.models.options import parse_arch_value
    for text, want in [("(16,32,32,16)", (16, 32, 32, 16)), ("[1, 2]", [1, 2]), ("128", 128), ("1e-4", 1e-4),
                       ("-3", -3), ("True", True), ("true", True), ("None", None), ("null", None),
                       ("'silu'", "silu"), ('"a b"', "a b"), ("silu", "silu"), ("runs/a.pt", "runs/a.pt"),
                       ("{'dropout': 0.1, 'mult': (1, 2)}", {"dropout": 0.1, "mult": (1, 2)}), ("", "")]:
        got = parse_arch_value("k", text)
        assert got == want and type(got) is type(want), (text, got)
    save(own_nets.HiddenNet((4, 8)), tmp_path / "hidden.pt")
    args = ["--sigma", "0.3", "--arch", f"{NETS}:HiddenNet", "--param", "edm", "--layer", "blocks.1"]
    extract(icr, tmp_path / "hidden.pt", mnist, tmp_path / "t.h5", *args, "--arch-arg", "n_hidden=(4, 8)")
    config = feats(tmp_path / "t.h5", "blocks.1")[3]
    assert config["model"] == {"n_hidden": [4, 8], "__python_literals__": {"n_hidden": "(4, 8)"}}
    # The same tuple however it is spaced is the same request; the JSON list is another (this class refuses it).
    extract(icr, tmp_path / "hidden.pt", mnist, tmp_path / "u.h5", *args, "--arch-arg", "n_hidden=(4,8)")
    assert feats(tmp_path / "u.h5", "blocks.1")[2]["config_key"] == feats(tmp_path / "t.h5", "blocks.1")[2]["config_key"]
    err = message(icr("extract", tmp_path / "hidden.pt", "--data", mnist, *args, "--arch-arg", "n_hidden=[4,8]"))
    assert err.startswith(f"--arch {NETS}:HiddenNet: constructing it with (n_hidden=[4, 8]) failed: TypeError: "
                          "n_hidden must be a tuple, got list.")
    forms = ("Write a Python or JSON literal: a number (128, 0.1, 1e-4), True/False/None (or true/false/null), a "
             "quoted string ('silu'), a tuple (16,32,32,16), a list [1,2,2], a dict {'dropout': 0.1}; or a bare "
             "word, taken as a string (silu).")
    err = message(icr("extract", tmp_path / "hidden.pt", "--data", mnist, *args, "--arch-arg", "n_hidden=(4,8"))
    assert err.startswith(f"--arch-arg n_hidden=(4,8: '(4,8' is not a value icr can read. {forms}")
    assert forms in message(icr("extract", tmp_path / "hidden.pt", "--data", mnist, *args, "--arch-arg",
                                "n_hidden={4, 8}"))
    # Code is never evaluated: the call is refused, and nothing ran.
    pwned = tmp_path / "pwned"
    err = message(icr("extract", tmp_path / "hidden.pt", "--data", mnist, *args, "--arch-arg",
                      f"n_hidden=__import__('pathlib').Path({str(pwned)!r}).touch()"))
    assert "is not a value icr can read" in err and "Code (calls, names of functions) is never run" in err
    assert not pwned.exists()
    # A bare word is a string; a function is not something to write on the command line (the builder form is).
    err = message(icr("extract", tmp_path / "hidden.pt", "--data", mnist, *args, "--arch-arg", "n_hidden=(4, 8)",
                      "--arch-arg", "act=F.silu"))
    assert "A bare word is passed as a string (act='F.silu')" in err and "--arch file.py:build_fn" in err


# 13. the right null class

def test_null_class_only_where_the_table_has_one_row_more_than_the_classes(icr, mnist, tmp_path):
    save(own_nets.DigitTable(), tmp_path / "digits.pt")
    args = ["--sigma", "0.3", "--param", "edm", "--layer", "conv", "--call", "x,t,y"]
    err = message(icr("extract", tmp_path / "digits.pt", "--data", mnist, "--arch", f"{NETS}:DigitTable", *args))
    assert err == ("--call x,t,y feeds your network a class y, but no class was given: pass --class-label N, the "
                   "class to condition on. Your network's label_emb has 10 rows for its 10 classes (the "
                   "constructor's default n_classes=10): no row is left for a null class (--class-label 9 is the "
                   "real class 9), so the model has none: pick one real class, e.g. --class-label 0, and keep it "
                   "the same for every checkpoint you compare (README 'Your own checkpoint').")
    assert "null class is" not in err
    save(own_nets.DiTLike(), tmp_path / "dit.pt")  # 11 rows for 10 classes: the eleventh is the null class
    err = message(icr("extract", tmp_path / "dit.pt", "--data", mnist, "--arch", f"{NETS}:DiTLike", *args,
                      "--arch-arg", "num_classes=10"))
    assert err.endswith("Your network's y_embedder has 11 rows for 10 classes (--arch-arg num_classes=10): the extra "
                        "row, 10, is its null class (classifier-free guidance, as DiT), which conditions on no class "
                        "as the paper does: --class-label 10.")
    # Built by a function that does not say the number of classes: both readings, and how to let icr tell.
    err = message(icr("extract", tmp_path / "digits.pt", "--data", mnist, "--arch", f"{NETS}:digit_table", *args))
    assert err.endswith("Your network's label_emb has 10 rows. If that is the classes plus one row for a dropped "
                        "label (classifier-free guidance, as DiT), the null class is 9: --class-label 9; if every "
                        "row is a real class, there is no null class: pick one real class, e.g. --class-label 0, "
                        "and keep it the same for every checkpoint you compare (README 'Your own checkpoint'). Pass "
                        "--arch-arg num_classes=N (the name your constructor uses) to let icr tell.")
    # A fixed real class runs, and the label reaches the table.
    extract(icr, tmp_path / "digits.pt", mnist, tmp_path / "c0.h5", "--arch", f"{NETS}:DigitTable", *args,
            "--class-label", "0")
    assert feats(tmp_path / "c0.h5", "conv")[3]["class_label"] == 0


# 14. a reference split in a sweep

def _probe_on(features: str, train: list[int], test: list[int]) -> float:
    """The probe's test accuracy on the given images of a feature file, rows picked here from its /index: view 0
    of each image, as the paper's probe (the default protocol) reads them."""
    from icrcli.stats.probe import probe_features
    with h5py.File(features, "r") as f:
        s, index, labels = f["features/norm"][:, 0].astype(np.float64), f["index"][:], f["labels"][:]
    row = {int(i): r for r, i in enumerate(index)}
    tr, te = [row[i] for i in train], [row[i] for i in test]
    return probe_features(s[tr], labels[tr], s[te], labels[te])["test_accuracy"]


def test_a_reference_split_in_a_sweep_takes_one_extraction(icr, tmp_path):
    """"Train the probe on the first 8 images listed and test on the last 8": --probe-first keeps --indices'
    order for the probe; --probe-train/--probe-test give the same split by files. One extraction serves every
    split of the same images, and each split is its own sweep record."""
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "digits.npz", images=rng.integers(0, 256, (24, 28, 28, 1), dtype=np.uint8),
             labels=np.arange(24) % 3)
    save(own_nets.LayerNormNet(), tmp_path / "ln.pt")
    listed = [int(i) for i in rng.permutation(24)[:16]]  # another study's order, not sorted
    (tmp_path / "ref.txt").write_text("\n".join(map(str, listed)))
    (tmp_path / "rev.txt").write_text("\n".join(map(str, listed[::-1])))
    (tmp_path / "train.txt").write_text(" ".join(map(str, listed[:8])))
    np.save(tmp_path / "test.npy", np.array(listed[8:]))
    base = ["sweep", tmp_path / "ln.pt", "--data", tmp_path / "digits.npz", "--sigmas", "0.2,0.5", "--arch",
            f"{NETS}:LayerNormNet", "--param", "edm", "--layer", "norm", "--augment", "none", "--batch-size", "8"]

    def sweep(name, *args):
        r = icr(*base, *args, "-o", tmp_path / f"{name}.json")
        assert r.code == 0, r.err
        return json.loads((tmp_path / f"{name}.json").read_text()), r.err

    first, _ = sweep("first", "--indices", tmp_path / "ref.txt", "--probe-first", "8")
    for lv in first["levels"]:
        assert lv["probe_test_accuracy"] == _probe_on(lv["features"], listed[:8], listed[8:])
    assert first["options"]["probe"]["train"] == sorted(listed[:8])
    # The same images listed the other way round: the same features (no new extraction), another split.
    rev, err = sweep("rev", "--indices", tmp_path / "rev.txt", "--probe-first", "8")
    assert "answered from the cache" not in err
    assert [lv["features"] for lv in rev["levels"]] == [lv["features"] for lv in first["levels"]]
    for lv in rev["levels"]:
        assert lv["probe_test_accuracy"] == _probe_on(lv["features"], listed[8:], listed[:8])
    assert rev["options"]["probe"]["train"] == sorted(listed[8:])
    # By files, without --indices: the images extracted are the two lists, and the split is the first one's.
    files, _ = sweep("files", "--probe-train", tmp_path / "train.txt", "--probe-test", tmp_path / "test.npy")
    assert [lv["features"] for lv in files["levels"]] == [lv["features"] for lv in first["levels"]]
    assert [lv["probe_test_accuracy"] for lv in files["levels"]] == [lv["probe_test_accuracy"]
                                                                      for lv in first["levels"]]
    again, err = sweep("again", "--indices", tmp_path / "ref.txt", "--probe-first", "8")
    assert "answered from the cache" in err and answer(again["levels"]) == answer(first["levels"])
    assert again["cached"] and all(lv["cached"] for lv in again["levels"])
    # Mistakes are named before any work.
    assert "needs at least 2 of each" in message(icr(*base, "--probe-train", tmp_path / "train.txt",
                                                     "--indices", tmp_path / "train.txt"))
    assert message(icr(*base, "--probe-first", "8")).startswith(
        "--probe-first N splits the images as --indices FILE lists them")
    (tmp_path / "out.txt").write_text(f"{listed[0]} {next(i for i in range(24) if i not in listed)}")
    assert "which --indices does not" in message(icr(*base, "--indices", tmp_path / "ref.txt", "--probe-test",
                                                     tmp_path / "out.txt"))


# 15. functional activations are not taps; the builder form

class _EndsInRelu(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return torch.nn.functional.relu(self.conv(x))  # the block's own output: tapping the block gives it


def test_untapped_activations_and_the_module_after_each():
    """Each reported activation is what the module named `next` receives (checked by a pre-hook of our own);
    one that is its module's own output is not reported; the functions a module holds are put back."""
    from icrcli.models.untapped import Untapped
    torch.manual_seed(0)
    net = own_nets.LambdaNet()
    act = net.act
    net.conv = torch.nn.Sequential(_EndsInRelu(), torch.nn.Conv2d(1, 4, 3, padding=1))
    seen = {}

    def keep(name, module, inputs):
        seen.setdefault(name, inputs[0])
    for name, mod in net.named_modules():
        mod.register_forward_pre_hook(functools.partial(keep, name))
    with torch.no_grad(), Untapped(net) as u:
        net(torch.randn(2, 1, 28, 28), torch.rand(2))
    events = [e for e in u.events if not e.get("is_output")]
    assert [(e["module"], e["op"], e["after"], e["next"]) for e in events] == [
        ("", "silu", "time", "mid"), ("", "self.act (<lambda>)", "mid", "out_act")]
    for e in events:
        assert e["_out"] is seen[e["next"]]  # the next module's input is that very tensor
    assert net.act is act and "act" in vars(net)
    assert [e["module"] for e in u.events if e.get("is_output")] == ["conv.0", "out_act"]


def test_layers_names_what_is_not_a_tap_and_the_builder_form_takes_a_function(icr, mnist, tmp_path):
    save(own_nets.LambdaNet(), tmp_path / "lam.pt")
    shape = ["--param", "edm", "--image-shape", "1x28x28"]
    for arch, held in ((f"{NETS}:LambdaNet", "self.act (<lambda>)"), (f"{NETS}:build_lambda_net", "self.act (gelu)")):
        r = icr("layers", tmp_path / "lam.pt", "--arch", arch, *shape, "--json")
        assert r.code == 0, r.err
        rows = {row["name"]: row for row in r.json}
        assert rows["<root>"]["not_taps"] == [{"op": "silu", "after": "time", "next": "mid", "calls": 1},
                                              {"op": held, "after": "mid", "next": "out_act", "calls": 1}]
        assert rows["out_act"]["type"] == "SiLU" and all(not row["not_taps"] for n, row in rows.items() if n != "<root>")
        err = " ".join(r.err.split())
        assert (f"not taps: these activations are computed by functions inside a forward, not by modules, so no "
                f"--layer reaches them: silu in the network's forward, after time, before mid {held} in the "
                "network's forward, after mid, before out_act to tap one, make it a module (e.g. self.act = "
                "nn.SiLU(), called in forward, instead of F.silu or a function passed in), or tap the module that "
                "follows it (named after 'before': its output comes next).") in err
    # The builder's gelu is what the network computes: extracting `out_act` (a module after it) works, and the
    # features are those of LambdaNet(act=gelu) run here.
    r = extract(icr, tmp_path / "lam.pt", mnist, tmp_path / "b.h5", "--sigma", "0", "--arch",
                f"{NETS}:build_lambda_net", "--param", "edm", "--layer", "out_act")
    got, index, _, _ = feats(tmp_path / "b.h5", "out_act")
    net = save(own_nets.LambdaNet(act=torch.nn.functional.gelu), tmp_path / "again.pt")
    out = {}
    net.out_act.register_forward_hook(lambda m, i, o: out.setdefault("o", o))
    x = torch.from_numpy(np.load(mnist)[index].transpose(0, 3, 1, 2)).float() / 255 * 2 - 1
    net(x, torch.full((len(x),), 0.002))
    np.testing.assert_allclose(got[:, 0], out["o"].mean((2, 3)).detach().numpy(), rtol=1e-5, atol=1e-6)


# 16. the README's command lines

def test_readme_own_checkpoint_commands_use_real_options():
    """Every `icr` command line in README 'Your own checkpoint' names a command and options that exist, and the
    corrected forms of issue 20 are among them."""
    import shlex

    import typer.main

    from icrcli.cli.main import app
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Your own checkpoint", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```bash\n")[1:]]
    lines = " ".join(b.replace("\\\n", " ") for b in blocks).replace(" icr ", "\nicr ").splitlines()
    commands = [shlex.split(ln.split("#", 1)[0]) for ln in lines if ln.strip().startswith("icr ")]
    root = typer.main.get_command(app)
    for argv in commands:
        cmd = root.commands[argv[1]]
        known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        assert {a for a in argv if a.startswith("--")} <= known, argv
    flat = [" ".join(a) for a in commands]
    assert any("--key gt" in c and "n_hidden=(16,32,32,16)" in c for c in flat)
    assert any("--probe-first 1500" in c for c in flat) and any("--probe-test" in c for c in flat)
    assert any("--class-label 0" in c for c in flat) and any("build.py:unet" in c for c in flat)
