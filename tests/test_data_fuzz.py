"""Damaged data files never end in an unexpected error: truncated and bit-flipped copies of every supported
data format, opened and read whole, either work or raise UserError (exit 2 through the CLI, never exit 1).

Fixed seeds; each format gets the same bounded set of damages: truncations at a few lengths and a few random
bit flips (in the payload, where decoders are reached, and anywhere, where headers break)."""

import gzip
import io
import json
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icrcli.data.images import open_images
from icrcli.errors import UserError

RNG_SEED = 20260607
N, S = 6, 8  # images, side


def _pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (N, S, S, 3), dtype=np.uint8)


def _encoded(fmt: str) -> dict[str, bytes]:
    out = {}
    for i, a in enumerate(_pixels()):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG" if fmt == "png" else "JPEG")
        out[f"{'cat' if i % 2 else 'dog'}/{i}.{fmt}"] = buf.getvalue()
    return out


def _write_tar(path: Path, files: dict[str, bytes], mode: str) -> None:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _idx(dims: tuple, data: np.ndarray) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + np.array(dims, dtype=">i4").tobytes() + data.astype(np.uint8).tobytes()


def make(fmt: str, root: Path) -> tuple[Path, Path]:
    """(what to open, the one file to damage) for a small valid source of format `fmt` under root."""
    root.mkdir(parents=True)
    if fmt in ("png", "jpg"):
        for name, data in _encoded(fmt).items():
            (root / name).parent.mkdir(exist_ok=True)
            (root / name).write_bytes(data)
        return root, root / f"cat/1.{fmt}"
    if fmt == "zip":
        files = _encoded("png")
        with zipfile.ZipFile(root / "d.zip", "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in files.items():
                z.writestr(name, data)
            z.writestr("dataset.json", json.dumps({"labels": [[n, i] for i, n in enumerate(files)]}))
        return root / "d.zip", root / "d.zip"
    if fmt in ("tar", "tar.gz"):
        path = root / f"d.{fmt}"
        _write_tar(path, _encoded("png"), "w" if fmt == "tar" else "w:gz")
        return path, path
    if fmt == "npy":
        np.save(root / "d.npy", _pixels())
        return root / "d.npy", root / "d.npy"
    if fmt == "npz":
        np.savez_compressed(root / "d.npz", images=_pixels(), labels=np.arange(N))
        return root / "d.npz", root / "d.npz"
    if fmt == "cifar":
        for b in ("data_batch_1", "data_batch_2"):
            d = {b"data": np.random.default_rng(1).integers(0, 256, (N, 3072), dtype=np.uint8),
                 b"labels": list(range(N))}
            (root / b).write_bytes(pickle.dumps(d))
        return root, root / "data_batch_2"
    if fmt in ("idx", "idx.gz"):
        imgs = _idx((N, S, S), _pixels()[..., 0])
        labels = _idx((N,), np.arange(N))
        gz = fmt == "idx.gz"
        suffix = ".gz" if gz else ""
        (root / f"train-images-idx3-ubyte{suffix}").write_bytes(gzip.compress(imgs, mtime=0) if gz else imgs)
        (root / f"train-labels-idx1-ubyte{suffix}").write_bytes(gzip.compress(labels, mtime=0) if gz else labels)
        return root / f"train-images-idx3-ubyte{suffix}", root / f"train-labels-idx1-ubyte{suffix}"
    if fmt in ("csv", "csv.gz"):
        rows = np.concatenate([_pixels()[..., 0].reshape(N, -1), np.arange(N)[:, None]], axis=1)
        text = "\n".join(",".join(map(str, r)) for r in rows).encode()
        path = root / f"d.{fmt}"
        path.write_bytes(gzip.compress(text, mtime=0) if fmt == "csv.gz" else text)
        return path, path
    raise ValueError(fmt)


FORMATS = ["png", "jpg", "zip", "tar", "tar.gz", "npy", "npz", "cifar", "idx", "idx.gz", "csv", "csv.gz"]


def damages(data: bytes, seed: int) -> list[tuple[str, bytes]]:
    """A fixed set of damaged copies of `data`: truncations, and bit flips in the whole file and in its tail."""
    rng = np.random.default_rng(seed)
    n = len(data)
    out = [(f"truncated to {k}", data[:k]) for k in sorted({0, 1, 16, n // 3, n // 2, n - 9, n - 1}) if 0 <= k < n]
    for flips, lo in ((1, 0), (3, 0), (24, 0), (1, n // 2), (8, n // 2)):
        b = bytearray(data)
        for pos in rng.integers(lo, n, flips):
            b[pos] ^= 1 << int(rng.integers(8))
        out.append((f"{flips} bit flip(s) from byte {lo}", bytes(b)))
    return out


def read_all(path: Path) -> None:
    s = open_images(path)
    x = s.get_float(np.arange(len(s)))
    assert x.dtype == np.float32 and x.shape[0] == len(s)


@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_copies_work_or_raise_user_error(tmp_path, fmt):
    src, victim = make(fmt, tmp_path / "clean")
    read_all(src)                       # the undamaged source is fine
    original = victim.read_bytes()
    outcomes = {"ok": 0, "refused": 0}
    for i, (what, damaged) in enumerate(damages(original, RNG_SEED + FORMATS.index(fmt))):
        victim.write_bytes(damaged)
        try:
            read_all(src)
            outcomes["ok"] += 1
        except UserError as e:
            assert str(e), what
            outcomes["refused"] += 1
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{fmt}, {what}: {type(e).__name__}: {e}")
    assert outcomes["refused"] >= 1, outcomes   # truncating to 0 or 1 byte must be refused
    victim.write_bytes(original)


@pytest.mark.slow
@pytest.mark.parametrize("fmt, damage", [("zip", "truncated to 1"), ("npy", "truncated to 16"),
                                         ("png", "1 bit flip(s) from byte 0"), ("tar.gz", "truncated to 16")])
def test_damaged_data_through_the_cli_is_exit_2(tmp_path, icr, monkeypatch, fmt, damage):
    """The real command, up to the point where the data are read: exit 2 with a message naming the file."""
    from test_safety import tiny_checkpoint
    monkeypatch.setenv("ICR_CACHE_DIR", str(tmp_path / "cache"))
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    src, victim = make(fmt, tmp_path / "data")
    damaged = dict(damages(victim.read_bytes(), RNG_SEED + FORMATS.index(fmt)))[damage]
    victim.write_bytes(damaged)
    before = ckpt.read_bytes()
    r = icr("extract", ckpt, "--data", src, "--sigma", "0.3", "--images", "4", "--views", "2",
            "--resize", "-o", tmp_path / "f.h5", "-q")
    assert r.code == 2, r.err
    assert "icr: error:" in r.err and "unexpected" not in r.err
    assert ckpt.read_bytes() == before and not (tmp_path / "f.h5").exists()
