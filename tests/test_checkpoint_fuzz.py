"""Truncated and bit-flipped copies of each checkpoint format icr reads, handed to `icr layers` (which loads the
model, builds it and runs one forward pass): each ends in exit 0 or 2 (a message), never 1 (a crash), and never
runs code. Mutations come from a fixed seed, and are biased to where a format keeps its structure (headers,
pickle opcodes, zip directories) rather than tensor bytes, where a flip only changes a weight."""

import argparse
import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from icrcli.models.archs import dit, edm

N_CUTS, N_FLIPS = 4, 10

SONG = dict(edm.EDM_PRESETS["ddpmpp"], img_resolution=8, img_channels=3, model_channels=8, channel_mult=[1, 2],
            num_blocks=1, attn_resolutions=[4])
DIT = dict(input_size=4, patch_size=2, in_channels=4, hidden_size=16, depth=2, num_heads=2, num_classes=4)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny forward passes: threads only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _state(net):
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


def _edm_net():
    torch.manual_seed(0)
    return edm.build_edm("edm", **SONG).eval()


def safetensors_file(tmp_path):
    path = tmp_path / "net.safetensors"
    save_file(_state(_edm_net()), path)
    return path, path


def training_checkpoint(tmp_path):
    """DiT's train.py layout: {"model", "ema", "opt", "args": Namespace}."""
    torch.manual_seed(1)
    sd = _state(dit.FAMILIES["dit"](**DIT))
    path = tmp_path / "ckpt.pt"
    torch.save({"model": sd, "ema": sd, "opt": {"state": {}, "param_groups": [{"lr": 1e-4, "params": []}]},
                "args": argparse.Namespace(image_size=32, num_classes=4, num_heads=2)}, path)
    return path, path


def edm_snapshot(tmp_path):
    """An NVlabs-style snapshot: nested persistent modules with their source embedded (never executed)."""
    from test_extract_e2e import write_edm_pickle
    path = tmp_path / "network-snapshot.pkl"
    write_edm_pickle(path, tmp_path / "code", "edm", SONG, 0)
    return path, path


def plain_pickle(tmp_path):
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"state_dict": _state(_edm_net())}, protocol=2))
    return path, path


def diffusers_weights(tmp_path):
    diffusers = pytest.importorskip("diffusers", reason="the diffusers extra is not installed")
    folder = tmp_path / "unet"
    diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                          block_out_channels=(8, 16), norm_num_groups=4, down_block_types=("DownBlock2D",) * 2,
                          up_block_types=("UpBlock2D",) * 2).save_pretrained(folder)
    return folder, folder / "diffusion_pytorch_model.safetensors"


def diffusers_config(tmp_path):
    folder, _ = diffusers_weights(tmp_path)
    return folder, folder / "config.json"


FORMATS = [safetensors_file, training_checkpoint, edm_snapshot, plain_pickle, diffusers_weights, diffusers_config]


def mutations(data: bytes, seed: int):
    """(name, bytes): the empty file, N_CUTS truncations, N_FLIPS copies with 1-3 flipped bits."""
    rng = np.random.default_rng(seed)
    yield "empty", b""
    for cut in sorted(set(rng.integers(1, len(data), N_CUTS).tolist())):
        yield f"first {cut} of {len(data)} bytes", data[:cut]
    for _ in range(N_FLIPS):
        out = bytearray(data)
        flips = []
        for _ in range(int(rng.integers(1, 4))):
            region = rng.random()  # structure sits at the start (headers, pickle opcodes) and end (zip directory)
            pos = int(rng.integers(0, min(2048, len(data)))) if region < 0.5 else \
                int(rng.integers(max(0, len(data) - 1024), len(data))) if region < 0.75 else \
                int(rng.integers(0, len(data)))
            bit = int(rng.integers(0, 8))
            out[pos] ^= 1 << bit
            flips.append(f"{pos}:{bit}")
        yield f"bits flipped at {', '.join(flips)}", bytes(out)


@pytest.mark.slow
@pytest.mark.parametrize("make", FORMATS, ids=[f.__name__ for f in FORMATS])
def test_damaged_checkpoints_never_crash(icr, tmp_path, make, monkeypatch):
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    target, victim = make(tmp_path)
    first = icr("layers", target, "--json")
    assert first.code == 0, first.err  # the intact file loads: the mutations below start from a working model
    assert any(row["default"] for row in json.loads(first.out))
    original = victim.read_bytes()
    bad, codes = [], {0: 0, 2: 0}
    for seed_name, data in mutations(original, seed=FORMATS.index(make)):
        victim.write_bytes(data)
        r = icr("layers", target, "--json")
        if r.code not in (0, 2) or "Traceback" in r.err or "unexpected error" in r.err:
            bad.append(f"{seed_name}: exit {r.code}: {r.err.strip()[-300:]}")
        else:
            codes[r.code] += 1
    assert not bad, "\n".join(bad)
    assert codes[2] >= 1 + N_CUTS // 2  # the damage was seen (the empty file and most cuts are refused)
    assert not (tmp_path / "code" / "sentinel").exists()  # an EDM snapshot's embedded source never ran
