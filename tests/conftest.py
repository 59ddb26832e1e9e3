import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py and friends

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class Ran:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    @property
    def json(self):
        return json.loads(self.out)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Each test its own cache ($ICR_CACHE_DIR; a test may set another): no test is answered from the entries of
    another test, of an earlier run, or of the user (scores are cached by content, and tests share contents)."""
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path_factory.mktemp("icr-cache")))
    # The cache secret (icrcli.seal) is made in the config folder: a test's own, never the user's.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("icr-config")))
    monkeypatch.delenv("ICR_CACHE_SECRET", raising=False)


@pytest.fixture
def icr(capsys, monkeypatch):
    """Run the real console entry point in-process: icr("score", "f.h5") -> Ran(code, stdout, stderr)."""
    from icrcli.cli.main import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["icr", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


def tiny_songunet(seed: int = 0):
    """A 16x16 EDM SongUNet (VP preconditioning) small enough for tests: random weights drawn from `seed`."""
    import torch
    from icrcli.models.archs.edm import build_edm
    torch.manual_seed(seed)
    return build_edm("edm", "SongUNet", img_resolution=16, img_channels=3, model_channels=8,
                     channel_mult=[1, 2], num_blocks=1, attn_resolutions=[]).eval()


@pytest.fixture
def count_calls(monkeypatch):
    """count_calls(module, "name") wraps module.name so that every call's positional arguments land in the list
    it returns (for tests that count decodes and forward passes rather than time them)."""
    def wrap(module, name):
        real, calls = getattr(module, name), []

        def counted(*a, **k):
            calls.append(a)
            return real(*a, **k)
        monkeypatch.setattr(module, name, counted)
        return calls
    return wrap


@pytest.fixture(scope="module")
def tiny_edm(tmp_path_factory):
    """A folder with net.safetensors (tiny_songunet(0)) and imgs.npy: 48 random 16x16 RGB uint8 images."""
    import numpy as np
    from safetensors.torch import save_file
    d = tmp_path_factory.mktemp("tiny_edm")
    save_file({k: v.contiguous() for k, v in tiny_songunet(0).state_dict().items()}, d / "net.safetensors")
    np.save(d / "imgs.npy", np.random.default_rng(0).integers(0, 256, size=(48, 16, 16, 3), dtype=np.uint8))
    return d


def answer(obj):
    """A result without what says where it came from ("cached", "cache_entry", at any depth): the answer itself,
    to compare a cached answer with a fresh one."""
    if isinstance(obj, dict):
        return {k: answer(v) for k, v in obj.items() if k not in ("cached", "cache_entry")}
    if isinstance(obj, list):
        return [answer(v) for v in obj]
    return obj
