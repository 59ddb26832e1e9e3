"""Safety: no command writes over one of its inputs or over a file that is not its own kind of output, every
output is checked before any model is loaded, and files follow the user's umask."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

S = 16  # the tiny model's resolution


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A small random EDM DDPM++ network (16x16 RGB) as .safetensors."""
    from icrcli.models.archs import edm
    torch.manual_seed(seed)
    kw = dict(edm.EDM_PRESETS["ddpmpp"], img_resolution=S, img_channels=3, model_channels=8, channel_mult=[1, 2],
              num_blocks=1, attn_resolutions=[8])
    net = edm.build_edm("edm", **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, path)
    return path


def tiny_data(path: Path, n: int = 6) -> Path:
    np.save(path, np.random.default_rng(0).integers(0, 256, (n, S, S, 3), dtype=np.uint8))
    return path


def _junk(path: Path, text: bytes = b"not a checkpoint at all") -> Path:
    """A file icr cannot load: a test passing with it proves the refusal came before any model was loaded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)
    return path


def _snapshot(*paths: Path) -> dict:
    """Every file's bytes under the given files and folders, to compare after the command."""
    out = {}
    for p in paths:
        for f in ([p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())):
            out[f] = f.read_bytes()
    return out


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------------------ extract -o
def _extract(icr, ckpt, data, out, *extra):
    return icr("extract", ckpt, "--data", data, "--sigma", "0.3", "--images", "4", "--resize", "-o", out, "-q",
               *extra)


@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)])
def test_extract_refuses_to_write_over_the_checkpoint_or_the_data(tmp_path, icr, overwrite):
    ckpt, data = _junk(tmp_path / "ck.safetensors"), tiny_data(tmp_path / "d.npy")
    before = _snapshot(ckpt, data)
    r = _extract(icr, ckpt, data, ckpt, *overwrite)
    assert r.code == 2 and f"-o {ckpt} is the checkpoint ({ckpt}); icr never writes over its inputs" in r.err
    r = _extract(icr, ckpt, data, data, *overwrite)
    assert r.code == 2 and f"-o {data} is the data ({data})" in r.err
    assert _snapshot(ckpt, data) == before


def test_extract_sees_through_symlinks_hard_links_and_relative_paths(tmp_path, icr, monkeypatch):
    ckpt, data = _junk(tmp_path / "ck.safetensors"), tiny_data(tmp_path / "d.npy")
    before = _snapshot(ckpt, data)
    (tmp_path / "link.h5").symlink_to(ckpt)
    r = _extract(icr, ckpt, data, tmp_path / "link.h5", "--overwrite")
    assert r.code == 2 and "link.h5 is the checkpoint" in r.err
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "hard.h5").hardlink_to(data)
    r = _extract(icr, ckpt, data, tmp_path / "sub" / "hard.h5", "--overwrite")
    assert r.code == 2 and "hard.h5 is another name of the data" in r.err
    monkeypatch.chdir(tmp_path / "sub")
    r = _extract(icr, ckpt, data, "../sub/../d.npy", "--overwrite")
    assert r.code == 2 and "-o ../sub/../d.npy is the data" in r.err
    assert _snapshot(ckpt, data) == before


def test_extract_output_inside_an_input_folder_is_refused(tmp_path, icr):
    model = tmp_path / "diffusers-model"            # a checkpoint folder
    _junk(model / "config.json", b"{}")
    images = tmp_path / "images"                    # an image folder
    _junk(images / "a.png", b"png?")
    vae = tmp_path / "vae"
    _junk(vae / "config.json", b"{}")
    before = _snapshot(model, images, vae)
    r = _extract(icr, model, images, model / "feats.h5")
    assert r.code == 2 and f"lies inside the checkpoint ({model})" in r.err
    r = _extract(icr, model, images, images / "new" / "feats.h5")
    assert r.code == 2 and f"lies inside the data ({images})" in r.err
    r = _extract(icr, model, images, vae / "feats.h5", "--vae", vae)
    assert r.code == 2 and f"lies inside the VAE ({vae})" in r.err
    assert _snapshot(model, images, vae) == before
    assert not (images / "new").exists()


@pytest.mark.parametrize("name", ["ck.safetensors.icr.json", "icr.json"])
def test_extract_never_writes_where_a_sidecar_is_read(tmp_path, icr, name):
    ckpt, data = _junk(tmp_path / "ck.safetensors"), tiny_data(tmp_path / "d.npy")
    r = _extract(icr, ckpt, data, tmp_path / name, "--overwrite")
    assert r.code == 2 and f"is the checkpoint's sidecar ({tmp_path / name})" in r.err
    assert not (tmp_path / name).exists()


@pytest.mark.slow
def test_extract_overwrite_replaces_only_icr_feature_files(tmp_path, icr):
    ckpt, data = tiny_checkpoint(tmp_path / "ck.safetensors"), tiny_data(tmp_path / "d.npy")
    other = _junk(tmp_path / "notes.h5", b"my notes, not features")
    r = _extract(icr, ckpt, data, other, "--overwrite")
    assert r.code == 2 and f"-o {other} exists and is not an icr feature file" in r.err
    assert "--overwrite replaces only an icr feature file of another configuration" in r.err
    assert other.read_bytes() == b"my notes, not features"
    feats = tmp_path / "feats.h5"
    assert _extract(icr, ckpt, data, feats).code == 0
    first = feats.read_bytes()
    r = icr("extract", ckpt, "--data", data, "--sigma", "0.5", "--images", "4", "--resize", "-o", feats, "-q")
    assert r.code == 2 and feats.read_bytes() == first                  # another configuration, no --overwrite
    r = icr("extract", ckpt, "--data", data, "--sigma", "0.5", "--images", "4", "--resize", "-o", feats, "-q",
            "--overwrite")
    assert r.code == 0, r.err
    assert feats.read_bytes() != first                                   # an icr feature file: replaced


def test_extract_refuses_a_foreign_parts_folder_it_would_remove(tmp_path, icr):
    ckpt, data = _junk(tmp_path / "ck.safetensors"), tiny_data(tmp_path / "d.npy")
    parts = tmp_path / "feats.h5.parts"
    _junk(parts / "thesis.tex", b"years of work")
    r = _extract(icr, ckpt, data, tmp_path / "feats.h5", "--overwrite")
    assert r.code == 2 and f"{parts} exists and is not an unfinished icr extraction" in r.err
    assert (parts / "thesis.tex").read_bytes() == b"years of work"
    r = _extract(icr, ckpt, parts / "thesis.tex", tmp_path / "feats.h5")
    assert r.code == 2 and "(its by-product feats.h5.parts) holds the data" in r.err


def test_extract_output_that_cannot_be_written_is_refused_first(tmp_path, icr):
    ckpt, data = _junk(tmp_path / "ck.safetensors"), tiny_data(tmp_path / "d.npy")
    (tmp_path / "folder").mkdir()
    r = _extract(icr, ckpt, data, tmp_path / "folder")
    assert r.code == 2 and f"-o {tmp_path / 'folder'} is a folder" in r.err and "disk" not in r.err
    r = _extract(icr, ckpt, data, data / "x.h5")
    assert r.code == 2 and f"cannot be written: {data} is a file, not a folder" in r.err
    r = _extract(icr, ckpt, data, "/proc/icr-no-such-dir/x.h5")
    assert r.code == 2 and "cannot be written: cannot create files in /proc" in r.err


def test_extract_output_in_a_read_only_folder_is_refused(tmp_path, icr):
    import os
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: a read-only folder is writable")
        ckpt, data = _junk(tmp_path / "ck.safetensors"), tiny_data(tmp_path / "d.npy")
        r = _extract(icr, ckpt, data, ro / "x.h5")
        assert r.code == 2 and f"cannot create files in {ro} (Permission denied)" in r.err
    finally:
        ro.chmod(0o700)


def test_extract_output_follows_the_umask_and_leaves_no_lock(tmp_path, icr):
    import os
    ckpt, data = tiny_checkpoint(tmp_path / "ck.safetensors"), tiny_data(tmp_path / "d.npy")
    old = os.umask(0o022)
    try:
        r = _extract(icr, ckpt, data, tmp_path / "out" / "feats.h5")
    finally:
        os.umask(old)
    assert r.code == 0, r.err
    assert (tmp_path / "out" / "feats.h5").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["feats.h5"]      # no .lock, no .parts


# ------------------------------------------------------------------------------------------------ score -o
def _features(path: Path) -> Path:
    np.save(path, np.random.default_rng(0).standard_normal((12, 2, 5)).astype(np.float32))
    return path


def test_score_refuses_its_features_naming_the_flag_used(tmp_path, icr):
    feats = _features(tmp_path / "f.npy")
    before = feats.read_bytes()
    r = icr("score", feats, "-o", feats, "-q")
    assert r.code == 2 and f"-o {feats} is the features being scored" in r.err
    r = icr("score", feats, "--directions", feats, "-q")
    assert r.code == 2 and f"--directions {feats} is the features being scored" in r.err
    r = icr("score", feats, "--directions", tmp_path / "f", "-q")      # np.save would add .npy
    assert r.code == 2 and f"--directions {feats} is the features being scored" in r.err
    r = icr("score", feats, "-o", tmp_path / "r.json", "--directions", tmp_path / "r.json.npy", "-q")
    assert r.code == 0, r.err
    r = icr("score", feats, "-o", tmp_path / "same.npy", "--directions", tmp_path / "same.npy", "-q")
    assert r.code == 2 and "--directions" in r.err and "is the -o result" in r.err
    assert feats.read_bytes() == before


@pytest.mark.parametrize("content", [b'{"a": 1}', b'{"version": "1.0", "name": "my package"}', b"\x00binary",
                                     b"[1, 2, 3]"])
def test_score_o_replaces_only_an_icr_result(tmp_path, icr, content):
    feats = _features(tmp_path / "f.npy")
    other = _junk(tmp_path / "other.json", content)
    r = icr("score", feats, "-o", other, "-q")
    assert r.code == 2 and f"-o {other} exists and is not an icr result" in r.err
    assert other.read_bytes() == content


def test_score_o_over_a_checkpoint_or_a_folder_is_refused(tmp_path, icr):
    feats = _features(tmp_path / "f.npy")
    ckpt = tiny_checkpoint(tmp_path / "ck.safetensors")
    before = ckpt.read_bytes()
    r = icr("score", feats, "-o", ckpt, "-q")
    assert r.code == 2 and "is not an icr result" in r.err and ckpt.read_bytes() == before
    r = icr("score", feats, "-o", tmp_path, "-q")
    assert r.code == 2 and f"-o {tmp_path} is a folder" in r.err and "disk" not in r.err


def test_score_replaces_its_own_result_and_directions(tmp_path, icr):
    feats = _features(tmp_path / "f.npy")
    out, dirs = tmp_path / "result.json", tmp_path / "dirs.npy"
    assert icr("score", feats, "-o", out, "--directions", dirs, "--top", "3", "-q").code == 0
    first = out.read_text()
    r = icr("score", feats, "-o", out, "--directions", dirs, "--top", "2", "--tau", "0.5", "-q")
    assert r.code == 0, r.err
    assert out.read_text() != first and np.load(dirs).shape == (2, 5)
    _junk(tmp_path / "empty.json", b"")                                  # nothing to lose
    assert icr("score", feats, "-o", tmp_path / "empty.json", "-q").code == 0


@pytest.mark.parametrize("array", [np.zeros((4, 2, 5), np.float64), np.zeros((2, 5), np.float32),
                                   np.zeros((9, 5), np.float64)])
def test_score_directions_replace_only_what_icr_writes(tmp_path, icr, array):
    feats = _features(tmp_path / "f.npy")
    np.save(tmp_path / "mine.npy", array)
    before = (tmp_path / "mine.npy").read_bytes()
    r = icr("score", feats, "--directions", tmp_path / "mine.npy", "-q")
    assert r.code == 2 and "--directions" in r.err and "is not Fisher directions written by icr" in r.err
    assert (tmp_path / "mine.npy").read_bytes() == before


# ------------------------------------------------------------------------------------------------ usage lines
@pytest.mark.parametrize("command, name", [("extract", "CHECKPOINT"), ("layers", "CHECKPOINT"),
                                           ("score", "FEATURES"), ("info", "FEATURES")])
def test_usage_lines_name_arguments_in_capitals(icr, command, name):
    r = icr(command, "--help")
    usage = next(line for line in r.out.splitlines() if "Usage:" in line)
    assert name in usage and name.lower() not in usage


# ------------------------------------------------------------------------------------------------ bad images
@pytest.mark.slow
def test_skip_bad_images_leaves_out_undecodable_files_and_records_them(tmp_path, icr):
    import json

    import h5py
    from PIL import Image
    ckpt = tiny_checkpoint(tmp_path / "ck.safetensors")
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (6, S, S, 3), dtype=np.uint8)
    for i, a in enumerate(pixels):
        Image.fromarray(a).save(images / f"{i}.png")
    (images / "1.png").write_bytes(b"\x89PNG but no image")
    (images / "4.png").write_bytes((images / "4.png").read_bytes()[:60])
    args = ("extract", ckpt, "--data", images, "--sigma", "0.3", "--images", "6", "-q")
    r = icr(*args, "-o", tmp_path / "a.h5")
    assert r.code == 2 and "cannot decode image '1.png'" in r.err and "--skip-bad-images" in r.err
    r = icr(*args, "-o", tmp_path / "b.h5", "--skip-bad-images", "--quiet")
    assert r.code == 0, r.err
    with h5py.File(tmp_path / "b.h5", "r") as f:
        config = json.loads(f.attrs["config"])
    assert config["skipped_images"] == {"count": 2, "names": ["1.png", "4.png"]}
    assert config["n_images"] == 4 and r.json["n_images"] == 4
    from icrcli.features.featurefile import open_features
    assert open_features(tmp_path / "b.h5").shape[0] == 4


def test_skip_bad_images_says_so_on_stderr(tmp_path, icr):
    ckpt = tiny_checkpoint(tmp_path / "ck.safetensors")
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image
    for i, a in enumerate(np.random.default_rng(0).integers(0, 256, (4, S, S, 3), dtype=np.uint8)):
        Image.fromarray(a).save(images / f"{i}.png")
    (images / "2.png").write_bytes(b"junk")
    r = icr("extract", ckpt, "--data", images, "--sigma", "0.3", "-o", tmp_path / "f.h5", "--skip-bad-images")
    assert r.code == 0, r.err
    assert "left out 1 of 4 images that cannot be decoded (2.png)" in r.err


@pytest.mark.slow
def test_plot_outputs_replace_only_icr_plots(tmp_path, icr):
    """--plot, --csv and memorization's --grid write only over their own kind: a photo or a CSV of someone
    else's stays untouched; icr's own plot may be redrawn."""
    pytest.importorskip("matplotlib")
    import json
    res = {"kind": "sweep", "checkpoint": "ck.pt", "version": "0", "schema": 1,
           "levels": [{"layer": "a", "sigma": s, "icr": 0.5 + s / 10, "trace_s": 1, "trace_xi": 1} for s in (0.1, 1)]}
    (tmp_path / "r.json").write_text(json.dumps(res))
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + b"someone else's picture")
    before = photo.read_bytes()
    r = icr("plot", tmp_path / "r.json", "-o", photo)
    assert r.code == 2 and "not a plot drawn by icr" in r.err and photo.read_bytes() == before
    ok = icr("plot", tmp_path / "r.json", "-o", tmp_path / "mine.png")
    again = icr("plot", tmp_path / "r.json", "-o", tmp_path / "mine.png")
    assert ok.code == 0 and again.code == 0
    same = icr("plot", tmp_path / "r.json", "-o", tmp_path / "r.json")
    assert same.code == 2 and json.loads((tmp_path / "r.json").read_text()) == res
