"""The classic dataset files: CIFAR-10/100 python batches (read by an unpickler that allows arrays only),
MNIST-style IDX files with their labels, and CSV digit tables."""

from __future__ import annotations

import gzip
import pickle
import warnings
import zlib
from pathlib import Path

import numpy as np

from icrcli.data import labelfiles
from icrcli.data.arrays import ArrayImageSet
from icrcli.data.imageset import ImageSet
from icrcli.errors import UserError

CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_NAMES = (*CIFAR_TRAIN, "test_batch", "train", "test")


# ----------------------------------------------------------------------------- CIFAR pickles

class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain dicts/lists of numpy arrays and nothing else: no code runs from the file."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10/100 python batch -> (uint8 (N, 3, 32, 32), int64 labels (N,))."""
    try:
        with open(path, "rb") as f:
            d = _ArrayOnlyUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d.get(b"labels", d.get(b"fine_labels")), dtype=np.int64)
    except Exception as e:  # any malformed pickle lands here; the message names the file
        raise UserError(f"'{path}' is not a CIFAR python batch (a pickled dict with b'data' and "
                        f"b'labels'/b'fine_labels'): {e}") from e
    if data.size % 3072 or labels.shape != (data.size // 3072,):
        raise UserError(f"'{path}' holds {data.size} pixel values and {labels.size} labels; a CIFAR batch holds "
                        "3072 values (3x32x32) per image and one label per image. The file is damaged.")
    # Krizhevsky (2009) layout: each row is 1024 R, then 1024 G, then 1024 B values, row-major 32x32.
    return data.reshape(-1, 3, 32, 32), labels


def _open_cifar(path: Path, batches: list[Path]) -> ImageSet:
    parts = [_load_cifar_batch(b) for b in batches]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return ArrayImageSet(path, "CIFAR batches", images, "NCHW", labels=labels, files=batches)


def _cifar_batches(folder: Path) -> list[Path]:
    """The training split of a CIFAR python folder, else its test split; [] when it is not one.

    CIFAR-10 folders hold data_batch_1..5 and test_batch; CIFAR-100 folders hold train, test and meta.
    """
    train = [folder / n for n in CIFAR_TRAIN if (folder / n).is_file()]
    cifar100 = (folder / "meta").is_file()
    for group in (train, [folder / "train"] if cifar100 else [], [folder / "test_batch"],
                  [folder / "test"] if cifar100 else []):
        if group and all(p.is_file() for p in group):
            return group
    return []


# ----------------------------------------------------------------------------- IDX

def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX array (LeCun's MNIST format): magic 0 0 0x08 ndim, big-endian int32 dims, uint8 data."""
    gz = path.name.endswith(".gz")
    try:
        if gz:
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read(4 + 4 * ndim)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"'{path}' cannot be read as (gzipped) IDX: {e}") from e
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != ndim:
        raise UserError(f"'{path}' is not a uint8 IDX file with {ndim} dimensions (bad magic number).")
    head = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(raw[4:head], dtype=">i4"))
    size = head + int(np.prod(shape))
    actual = len(raw) if gz else path.stat().st_size
    if actual != size:
        raise UserError(f"'{path}' should hold {size} bytes for shape {shape} but holds {actual}; it is truncated.")
    if gz:
        return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(shape)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=head, shape=shape)


_idx_labels_path = labelfiles.idx_labels_path   # named without numpy there, so cache keys can name the labels file


def _open_idx(path: Path) -> ImageSet:
    if "idx1" in path.name:
        raise UserError(f"'{path}' is an IDX labels file. Point at the matching *-idx3-ubyte images file.")
    images = _read_idx(path, 3)
    lpath = _idx_labels_path(path)
    labels = None if lpath is None else _read_idx(lpath, 1)
    return ArrayImageSet(path, "IDX", images, "NHW", labels=labels,
                         files=[path] + ([lpath] if lpath else []),
                         note="" if lpath else "no matching idx1 labels file found")


_is_idx = labelfiles.is_idx


# ----------------------------------------------------------------------------- CSV digit tables

def _open_csv(path: Path) -> ImageSet:
    """Rows of P = S*S integer pixels then a label; pixels 0-16 (UCI digits) are scaled to 0-255."""
    try:
        with warnings.catch_warnings():     # an empty file: numpy warns, and we refuse below with a message
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)  # non-integers fail here
    except (ValueError, OSError, EOFError, zlib.error) as e:
        raise UserError(f"'{path}' is not a clean numeric CSV table ({e}). Expected rows of S*S "
                        "pixels followed by an integer label, with no header.") from e
    n_pix = table.shape[1] - 1
    side = int(round(n_pix ** 0.5))
    if table.size == 0 or n_pix < 1 or side * side != n_pix or table.min() < 0:
        raise UserError(f"'{path}' has {table.shape[1]} columns; expected S*S non-negative integer pixels "
                        "and an integer label last.")
    pixels = table[:, :-1]
    peak = pixels.max()
    if peak > 255:
        raise UserError(f"'{path}' has pixel values up to {peak}; expected 0-16 or 0-255.")
    if peak <= 16:  # 4-bit intensities of the UCI optical digits
        pixels = np.round(pixels * (255 / 16))
    images = pixels.astype(np.uint8).reshape(-1, side, side)
    return ArrayImageSet(path, "CSV table", images, "NHW", labels=table[:, -1],
                         note="pixels 0-16 scaled to 0-255" if peak <= 16 else "")
