"""Image datasets: one random-access view over folders, archives, arrays and classic dataset files.

`open_images(path)` returns an `ImageSet`: `len(s)`, `s.channels/height/width`, `s.labels` (int64 or
None), `s.get(idx)` (uint8 NCHW, or float32 NCHW in [0, 1] when the source holds floats; `s.dtype`
says which), `s.get_float(idx)` (always float32 NCHW in [0, 1]), `s.source_files()` and `s.describe()`.

Memory stays bounded: folders and archives are listed up front and decoded on demand, .npy and
uncompressed IDX files are memory-mapped. Compressed sources (.npz, .gz, CIFAR pickles, .tar.gz)
are held in memory; for .tar.gz only the encoded bytes are kept, since a gzip stream cannot be
seeked cheaply.

Grey stays grey (1 channel) and colour stays colour (3 channels; alpha is dropped for decoded images,
kept for arrays); `to_channels` converts when a model needs another count.

Untrusted archives: no archive member is read past MAX_MEMBER_BYTES (64 MiB; $ICR_MAX_MEMBER_BYTES), checked
on its declared size and again while reading, since a declared size can lie; a compressed tar holds at most
MAX_HELD_BYTES of encoded images in memory. A file that cannot be read or decoded is named in a UserError
(`UndecodableImage`); `open_images(..., skip_bad_images=True)` and `ImageSet.decodable(indices)` let a
caller drop such files instead.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import tarfile
import threading
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np

from icrcli.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_NAMES = (*CIFAR_TRAIN, "test_batch", "train", "test")
SUPPORTED = (
    "a folder of images (.png/.jpg/.jpeg/.bmp/.webp; class sub-folders give labels), the same in a "
    ".zip or .tar/.tar.gz (NVlabs dataset.json labels honoured), .npy (NHWC/NCHW/NHW), .npz (key "
    "images/x/data, labels/y/targets), CIFAR-10/100 python batches (data_batch_N, test_batch, train, "
    "test, or their folder), MNIST-style IDX (*-idx3-ubyte[.gz] with its idx1 labels), and .csv[.gz] "
    "digit tables (square pixel count, label last)"
)
MAX_MEMBER_BYTES = 64 << 20    # per archive member: a 64 MiB encoded image is already far beyond any dataset's
MEMBER_ENV = "ICR_MAX_MEMBER_BYTES"
MAX_HELD_BYTES = 4 << 30       # encoded bytes a compressed tar may keep in memory in all
_READ_PIECE = 1 << 20          # a member is read in pieces this big, so a lying one stops near the cap
# What reading a damaged archive member can raise: zip/tar format errors, a bad deflate stream, a short file.
_ARCHIVE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, zlib.error, OSError, EOFError,
                   ValueError, KeyError, NotImplementedError, RuntimeError)
_GREY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights PIL and torchvision use for RGB -> L


class ImageSet:
    """N images of one size, C x H x W, with optional int64 labels; subclasses supply `_read`.

    `_read(idx)` returns the raw NCHW block for sorted-or-not int64 indices: uint8, or float32 already
    mapped to [0, 1] (then `dtype` is float32).
    """

    def __init__(self, path: Path, kind: str, n: int, chw: tuple[int, int, int], dtype, labels=None,
                 class_names: list[str] | None = None, files: list[Path] | None = None, note: str = ""):
        if n == 0:
            raise UserError(f"'{path}' holds no images. Point at a file or folder that contains some.")
        self.path, self.kind, self._n = path, kind, n
        self.channels, self.height, self.width = chw
        self.dtype = np.dtype(dtype)
        self.labels = None if labels is None else _check_labels(np.asarray(labels), n, path)
        self.class_names = class_names
        self._files = files if files is not None else [path]
        self._note = note

    def __len__(self) -> int:
        return self._n

    def get(self, indices: Sequence[int]) -> np.ndarray:
        """Images at `indices` as an array (len(indices), C, H, W) of `self.dtype` (uint8 or float32 in [0, 1])."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -self._n or idx.max() >= self._n):
            raise IndexError(f"image index out of range for {self._n} images")
        return self._read(idx % self._n)

    def get_float(self, indices: Sequence[int]) -> np.ndarray:
        """Images at `indices` as float32 (len(indices), C, H, W) in [0, 1]."""
        x = self.get(indices)
        return x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x

    def source_files(self) -> list[Path]:
        """The files whose bytes define the data (for content hashing), in a fixed order."""
        return list(self._files)

    def decodable(self, indices: Sequence[int]) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
        """(kept, bad): the int64 indices among `indices` whose images decode, in order, and one
        (index, file name, reason) per image that does not. Arrays always decode."""
        return np.asarray(indices, dtype=np.int64).reshape(-1), []

    def describe(self) -> str:
        """One line: source, count, shape, dtype, labels."""
        text = (f"{self.kind} '{self.path}': {self._n} images, {self.channels}x{self.height}x{self.width} "
                f"{self.dtype.name}")
        if self.labels is not None:
            n_cls = len(self.class_names) if self.class_names else int(self.labels.max()) + 1
            text += f", labels for {n_cls} classes"
            if self.class_names:
                shown = ", ".join(self.class_names[:5]) + (", ..." if n_cls > 5 else "")
                text += f" ({shown})"
        else:
            text += ", no labels"
        return text + (f"; {self._note}" if self._note else "")

    def _read(self, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _check_labels(labels: np.ndarray, n: int, path: Path) -> np.ndarray:
    """Labels as int64 (N,); a wrong length or non-integer values are the user's to fix."""
    if labels.ndim != 1 or len(labels) != n:
        raise UserError(f"'{path}' has {n} images but labels of shape {labels.shape}. "
                        "Give one integer label per image, or none.")
    if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
        raise UserError(f"'{path}' has non-integer labels. Labels must be class indices.")
    return labels.astype(np.int64)


# ----------------------------------------------------------------------------- arrays

class ArrayImageSet(ImageSet):
    """Images held in an array (possibly a memmap) laid out NCHW, NHWC or NHW."""

    def __init__(self, path: Path, kind: str, array: np.ndarray, layout: str, **kw):
        self._array, self._layout = array, layout
        n, c, h, w = _nchw_shape(array.shape, layout)
        self._scale = _value_scale(array, path)  # None for uint8, else (scale, offset) onto [0, 1]
        dtype = np.uint8 if self._scale is None else np.float32
        super().__init__(path, kind, n, (c, h, w), dtype, **kw)

    def _read(self, idx: np.ndarray) -> np.ndarray:
        x = np.asarray(self._array[idx])
        x = x[:, None] if self._layout == "NHW" else x.transpose(0, 3, 1, 2) if self._layout == "NHWC" else x
        if self._scale is None:
            return np.ascontiguousarray(x if x.dtype == np.uint8 else np.clip(x, 0, 255).astype(np.uint8))
        scale, offset = self._scale
        x = np.ascontiguousarray(x, dtype=np.float32) * np.float32(scale) + np.float32(offset)
        return np.clip(x, 0.0, 1.0, out=x)


def _nchw_shape(shape: tuple, layout: str) -> tuple[int, int, int, int]:
    if layout == "NHW":
        return shape[0], 1, shape[1], shape[2]
    if layout == "NHWC":
        return shape[0], shape[3], shape[1], shape[2]
    return tuple(shape)


def detect_layout(shape: tuple, path: Path) -> str:
    """'NHW', 'NCHW' or 'NHWC' from the shape: the channel axis is the one of size 1, 3 or 4.

    When both axes 1 and 3 could be channels, the layout whose spatial axes are equal wins, then NHWC.
    """
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        raise UserError(f"'{path}' holds an array of shape {shape}; images need (N,H,W), (N,H,W,C) or (N,C,H,W).")
    first, last = shape[1] in (1, 3, 4), shape[3] in (1, 3, 4)
    if first and last:
        return "NCHW" if shape[2] == shape[3] and shape[1] != shape[2] else "NHWC"
    if first or last:
        return "NCHW" if first else "NHWC"
    raise UserError(f"'{path}' holds an array of shape {shape} with no channel axis of size 1, 3 or 4 "
                    "at position 1 or 3. Save images as (N,H,W,C), (N,C,H,W) or (N,H,W).")


def _value_scale(array: np.ndarray, path: Path):
    """None for uint8 (or integer arrays within 0..255); else (scale, offset) mapping floats onto [0, 1].

    Float ranges are read off the first (up to) 256 images: [0, 1] as is, [-1, 1] (the diffusion
    convention) and [0, 255] are rescaled. Other ranges are refused rather than guessed.
    """
    if array.dtype == np.uint8:
        return None
    if array.dtype.kind not in "iuf" or array.size == 0:
        raise UserError(f"'{path}' holds {array.dtype} data; images must be uint8, integers 0-255 or floats.")
    sample = np.asarray(array[:256])
    lo, hi = float(sample.min()), float(sample.max())
    if array.dtype.kind in "iu":
        if lo >= 0 and hi <= 255:
            return None
        raise UserError(f"'{path}' holds integer pixels in [{lo:g}, {hi:g}]; expected 0-255.")
    if not np.isfinite(sample).all():
        raise UserError(f"'{path}' contains NaN or infinite pixel values. Clean the array first.")
    if lo >= 0 and hi <= 1:
        return 1.0, 0.0
    if lo >= -1 and hi <= 1:
        return 0.5, 0.5
    if lo >= 0 and hi <= 255:
        return 1 / 255, 0.0
    raise UserError(f"'{path}' holds float pixels in [{lo:g}, {hi:g}]; expected [0, 1], [-1, 1] or [0, 255].")


def _open_npy(path: Path) -> ImageSet:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"'{path}' is not a readable .npy array ({e or 'empty file'}). Save it with numpy.save.") \
            from e
    return ArrayImageSet(path, "npy", array, detect_layout(array.shape, path))


def _open_npz(path: Path) -> ImageSet:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except _ARCHIVE_ERRORS as e:
        raise UserError(f"'{path}' is not a readable .npz archive ({e or type(e).__name__}).") from e
    key = next((k for k in ("images", "x", "data") if k in arrays), None)
    if key is None:
        candidates = [k for k, a in arrays.items() if a.ndim in (3, 4)]
        if len(candidates) != 1:
            raise UserError(f"'{path}' has arrays {sorted(arrays)}; cannot tell which holds the images. "
                            "Name it 'images' (and the labels 'labels').")
        key = candidates[0]
    lkey = next((k for k in ("labels", "y", "targets") if k in arrays), None)
    images = arrays[key]
    return ArrayImageSet(path, "npz", images, detect_layout(images.shape, path),
                         labels=None if lkey is None else arrays[lkey])


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


def _idx_labels_path(images: Path) -> Path | None:
    name = images.name.replace("idx3", "idx1").replace("images", "labels")
    base = name[:-3] if name.endswith(".gz") else name
    return next((images.parent / n for n in (name, base, base + ".gz") if (images.parent / n).is_file()), None)


def _open_idx(path: Path) -> ImageSet:
    if "idx1" in path.name:
        raise UserError(f"'{path}' is an IDX labels file. Point at the matching *-idx3-ubyte images file.")
    images = _read_idx(path, 3)
    lpath = _idx_labels_path(path)
    labels = None if lpath is None else _read_idx(lpath, 1)
    return ArrayImageSet(path, "IDX", images, "NHW", labels=labels,
                         files=[path] + ([lpath] if lpath else []),
                         note="" if lpath else "no matching idx1 labels file found")


def _is_idx(name: str) -> bool:
    return "idx3-ubyte" in name or "idx1-ubyte" in name or name.endswith((".idx3", ".idx1"))


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


# ----------------------------------------------------------------------------- encoded images

class UndecodableImage(UserError):
    """One image file (or archive member) that cannot be read or decoded; `.name` says which."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


def member_cap() -> int:
    """Bytes one archive member may hold: $ICR_MAX_MEMBER_BYTES, else MAX_MEMBER_BYTES."""
    env = os.environ.get(MEMBER_ENV, "").strip()
    if not env:
        return MAX_MEMBER_BYTES
    try:
        cap = int(env)
    except ValueError:
        cap = 0
    if cap < 1:
        raise UserError(f"${MEMBER_ENV}={env!r}: expected a positive number of bytes, e.g. {MAX_MEMBER_BYTES}.")
    return cap


def _too_big(name: str, where, size: str, cap: int) -> UndecodableImage:
    return UndecodableImage(name, f"'{name}' in '{where}' holds {size} bytes, more than the {cap} bytes icr reads "
                            f"per archive member (an image is far smaller; this looks like a zip bomb). Remove "
                            f"it, or raise ${MEMBER_ENV} if it is a genuine image.")


def read_capped(f, cap: int, name: str, where) -> bytes:
    """All of the stream `f`, read in pieces; UndecodableImage as soon as more than `cap` bytes arrive, so
    at most cap + one piece is ever held whatever the member's header claims."""
    buf = bytearray()
    while piece := f.read(min(_READ_PIECE, cap + 1 - len(buf))):
        buf += piece
        if len(buf) > cap:
            raise _too_big(name, where, f"more than {cap}", cap)
    return bytes(buf)


class EncodedImageSet(ImageSet):
    """Image files (in a folder or an archive) listed up front and decoded with Pillow on demand.

    skip_bad: an undecodable file among those probed for the shape is passed over rather than refused
    (the caller then drops undecodable images with `decodable`)."""

    def __init__(self, path: Path, kind: str, names: list[str], read: Callable[[str], bytes],
                 skip_bad: bool = False, **kw):
        self.path, self._names, self._read_bytes = path, names, read
        self._skip_bad = skip_bad
        chw = self._probe()
        super().__init__(path, kind, len(names), chw, np.uint8, **kw)

    def _probe(self) -> tuple[int, int, int]:
        """Channels and size from up to 16 evenly spaced headers: colour if any of them is colour."""
        picks = np.unique(np.linspace(0, len(self._names) - 1, min(16, len(self._names))).astype(int))
        images = [(self._names[i], im) for i in picks if (im := self._probe_one(self._names[i])) is not None]
        if not images:  # only with skip_bad: every probe failed, so look for any image that decodes
            images = next(([(n, im)] for n in self._names if (im := self._probe_one(n)) is not None), [])
        if not images:
            raise UserError(f"none of the {len(self._names)} images in '{self.path}' can be decoded "
                            f"(e.g. '{self._names[0]}'). Check the files.")
        (name0, im0), grey = images[0], all(im.mode in _GREY_MODES for _, im in images)
        for name, im in images[1:]:
            if im.size != im0.size:
                raise self._mixed(name0, im0.size, name, im.size)
        self._first = (name0, im0.size)
        return (1 if grey else 3), im0.size[1], im0.size[0]

    def _probe_one(self, name: str):
        try:
            return self._open(name)
        except UndecodableImage:
            if not self._skip_bad:
                raise
            return None

    def _mixed(self, name0, size0, name, size) -> UserError:
        return UserError(f"'{self.path}' mixes image sizes: '{name0}' is "
                         f"{size0[0]}x{size0[1]} but '{name}' is {size[0]}x{size[1]}. "
                         "Resize all images to one size (e.g. center-crop and resize) first.")

    def _open(self, name: str):
        from PIL import Image
        raw = self._read_bytes(name)    # UndecodableImage when the file or member cannot be read
        try:
            im = Image.open(io.BytesIO(raw))
            im.load()
            return im
        except Exception as e:  # Pillow raises many types on damaged data (OSError, SyntaxError, struct.error, ...)
            raise UndecodableImage(name, f"cannot decode image '{name}' in '{self.path}': {e}. Remove or re-encode "
                                   "that file, or pass --skip-bad-images to leave out such files.") from e

    def decodable(self, indices: Sequence[int]) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
        """(kept, bad) as ImageSet.decodable, by decoding each image once (in the decode threads). An image
        of another size is not "bad": it still stops the run."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)

        def check(i: int) -> str | None:
            try:
                self._decode(self._names[i])
            except UndecodableImage as e:
                return str(e)
            return None

        reasons = list(_pool().map(check, idx.tolist()))
        bad = [(int(i), self._names[i], r) for i, r in zip(idx, reasons) if r is not None]
        return idx[[r is None for r in reasons]], bad

    def _decode(self, name: str) -> np.ndarray:
        im = self._open(name)
        if im.size != self._first[1]:
            raise self._mixed(self._first[0], self._first[1], name, im.size)
        if im.mode.startswith("I;16"):  # 16-bit grey: keep the top 8 bits' worth, rounded
            a = np.round(np.asarray(im, dtype=np.float64) / 257.0).astype(np.uint8)
            a = a if self.channels == 1 else np.repeat(a[..., None], 3, axis=-1)
        else:
            a = np.asarray(im.convert("L" if self.channels == 1 else "RGB"), dtype=np.uint8)
        return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)

    def _read(self, idx: np.ndarray) -> np.ndarray:
        names = [self._names[i] for i in idx]
        decoded = list(_pool().map(self._decode, names)) if len(names) > 8 else [self._decode(n) for n in names]
        out = np.empty((len(names), self.channels, self.height, self.width), dtype=np.uint8)
        for i, a in enumerate(decoded):
            out[i] = a
        return out


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """Decode threads (Pillow releases the GIL while decoding); one pool per process, since a
    pool inherited through fork (e.g. by DataLoader workers) has no live threads."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)))
    return _POOL[1]


def _is_image_name(name: str) -> bool:
    parts = PurePosixPath(name).parts
    hidden = any(p.startswith(".") or p == "__MACOSX" for p in parts)
    return not hidden and name.lower().endswith(IMAGE_SUFFIXES)


def labels_from_dirs(names: list[str]) -> tuple[np.ndarray | None, list[str] | None]:
    """Class labels from the first directory below the common prefix of `names` (posix paths).

    `test/cat/1.jpg, test/dog/2.jpg` -> labels [0, 1], classes ['cat', 'dog'] (sorted names). Images
    in the root, or at mixed depths, give no labels.
    """
    dirs = [PurePosixPath(n).parts[:-1] for n in names]
    k = 0
    while dirs and all(len(d) > k and d[k] == dirs[0][k] for d in dirs):
        k += 1
    if not dirs or any(len(d) <= k for d in dirs):
        return None, None
    classes = sorted({d[k] for d in dirs})
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[d[k]] for d in dirs], dtype=np.int64), classes


def _labels_from_json(raw: bytes, names: list[str], where: str):
    """NVlabs dataset.json: {"labels": [[fname, label], ...]} or {"labels": null} (EDM dataset_tool)."""
    try:
        table = json.loads(raw).get("labels")
    except (ValueError, AttributeError) as e:
        raise UserError(f"'{where}': dataset.json is not valid JSON with a 'labels' entry ({e}).") from e
    if table is None:
        return None, "dataset.json has no labels"
    try:
        lookup = {str(f).replace("\\", "/"): lab for f, lab in table}
    except (TypeError, ValueError) as e:
        raise UserError(f"'{where}': dataset.json 'labels' is not a list of [file name, label] pairs ({e}). "
                        "Regenerate dataset.json or remove it.") from e
    missing = [n for n in names if n not in lookup]
    if missing:
        raise UserError(f"'{where}': dataset.json gives no label for '{missing[0]}' "
                        f"({len(missing)} images unlabelled). Regenerate dataset.json or remove it.")
    labels = [lookup[n] for n in names]
    if not all(isinstance(v, int) and abs(v) < 2 ** 62 for v in labels):
        return None, "dataset.json labels are not integer classes; ignored"
    return np.array(labels, dtype=np.int64), "labels from dataset.json"


def _encoded_set(path: Path, kind: str, all_names: list[str], read: Callable[[str], bytes],
                 files: list[Path] | None = None, skip_bad: bool = False) -> ImageSet:
    names = sorted(n for n in all_names if _is_image_name(n))
    if not names:
        raise UserError(f"no images (.png/.jpg/.jpeg/.bmp/.webp) found in '{path}'. Supported inputs: "
                        f"{SUPPORTED}.")
    if "dataset.json" in all_names:
        labels, note = _labels_from_json(read("dataset.json"), names, str(path))
        classes = None
    else:
        (labels, classes), note = labels_from_dirs(names), ""
        note = "labels from sub-folder names" if classes else ""
    return EncodedImageSet(path, kind, names, read, skip_bad=skip_bad, labels=labels, class_names=classes,
                           files=files, note=note)


def _open_folder(path: Path, skip_bad: bool = False) -> ImageSet:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    rel = {p.relative_to(path).as_posix(): p for p in files}
    keep = [p for n, p in sorted(rel.items()) if _is_image_name(n) or n == "dataset.json"]
    return _encoded_set(path, "folder", list(rel), _FolderReader(rel), files=keep, skip_bad=skip_bad)


class _FolderReader:
    """Reads a folder's files by relative posix name (a class, not a lambda, so it pickles)."""

    def __init__(self, rel: dict[str, Path]):
        self.rel = rel

    def __call__(self, name: str) -> bytes:
        try:
            return self.rel[name].read_bytes()
        except OSError as e:
            raise UndecodableImage(name, f"cannot read '{self.rel[name]}': {e.strerror or e}. Check the file "
                                   "and its permissions.") from e


class _ArchiveReader:
    """Reads members of a zip or uncompressed tar by name; one handle per process, reads serialised."""

    def __init__(self, path: Path, kind: str):
        self.path, self.kind = path, kind
        self._handle, self._pid, self._lock = None, None, threading.Lock()
        self._members = None

    def __getstate__(self):  # handles and locks do not cross process boundaries; reopen there
        return {"path": self.path, "kind": self.kind, "_members": None}

    def __setstate__(self, state):
        self.__init__(state["path"], state["kind"])

    def handle(self):
        if self._pid != os.getpid():
            self._handle = zipfile.ZipFile(self.path) if self.kind == "zip" else tarfile.open(self.path, "r:")
            self._pid, self._members = os.getpid(), None
        return self._handle

    def names(self) -> list[str]:
        if self.kind == "zip":
            return [i.filename for i in self.handle().infolist() if not i.is_dir()]
        return [_tar_name(m) for m in self.handle().getmembers() if m.isfile()]

    def __call__(self, name: str) -> bytes:
        cap = member_cap()
        with self._lock:
            try:
                h = self.handle()
                if self.kind == "zip":
                    info = h.getinfo(name)
                    if info.file_size > cap:     # refused on the header, before reading a byte
                        raise _too_big(name, self.path, str(info.file_size), cap)
                    with h.open(info) as f:
                        return read_capped(f, cap, name, self.path)
                if self._members is None:
                    self._members = {_tar_name(m): m for m in h.getmembers() if m.isfile()}
                m = self._members[name]
                if m.size > cap:
                    raise _too_big(name, self.path, str(m.size), cap)
                return read_capped(h.extractfile(m), cap, name, self.path)
            except UndecodableImage:
                raise
            except _ARCHIVE_ERRORS as e:
                raise UndecodableImage(name, f"cannot read '{name}' from '{self.path}' ({type(e).__name__}: "
                                       f"{e}); the archive is damaged. Re-create it, or pass --skip-bad-images "
                                       "to leave out such members.") from e


def _tar_name(member: tarfile.TarInfo) -> str:
    return member.name[2:] if member.name.startswith("./") else member.name


def _open_zip(path: Path, skip_bad: bool = False) -> ImageSet:
    reader = _ArchiveReader(path, "zip")
    try:
        names = reader.names()
    except _ARCHIVE_ERRORS as e:
        raise UserError(f"'{path}' is not a readable zip archive ({e}).") from e
    return _encoded_set(path, "zip", names, reader, skip_bad=skip_bad)


def _open_tar(path: Path, skip_bad: bool = False) -> ImageSet:
    try:
        if tarfile.is_tarfile(path) and _tar_is_plain(path):
            reader = _ArchiveReader(path, "tar")
            names = reader.names()
        else:
            names, reader = _read_compressed_tar(path, skip_bad)
    except UserError:
        raise
    except _ARCHIVE_ERRORS as e:
        raise UserError(f"'{path}' is not a readable tar archive ({e}).") from e
    return _encoded_set(path, "tar", names, reader, skip_bad=skip_bad)


def _read_compressed_tar(path: Path, skip_bad: bool) -> tuple[list[str], Callable[[str], bytes]]:
    """One streaming pass keeping the encoded bytes (small next to decoded pixels), each member capped.
    A member that cannot be read is remembered and reported (UndecodableImage) when it is asked for."""
    cap, held = member_cap(), 0
    blobs: dict[str, bytes | UndecodableImage] = {}
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            name = _tar_name(m)
            if not (m.isfile() and (_is_image_name(name) or name == "dataset.json")):
                continue
            try:
                if m.size > cap:
                    raise _too_big(name, path, str(m.size), cap)
                blobs[name] = read_capped(tf.extractfile(m), cap, name, path)
            except UndecodableImage as e:
                if not skip_bad:
                    raise
                blobs[name] = e
                continue
            held += len(blobs[name])
            if held > MAX_HELD_BYTES:
                raise UserError(f"'{path}' holds more than {MAX_HELD_BYTES} bytes of images; a compressed tar is "
                                "kept in memory. Unpack it, or make an uncompressed .tar (read on demand).")
    return list(blobs), _Blobs(blobs)


class _Blobs:
    """The members of a compressed tar, kept in memory; a member that could not be read raises its error."""

    def __init__(self, blobs: dict):
        self.blobs = blobs

    def __call__(self, name: str) -> bytes:
        got = self.blobs[name]
        if isinstance(got, UndecodableImage):
            raise got
        return got


def _tar_is_plain(path: Path) -> bool:
    try:
        tarfile.open(path, "r:").close()
        return True
    except tarfile.ReadError:
        return False


# ----------------------------------------------------------------------------- dispatch

def open_images(path: str | Path, skip_bad_images: bool = False) -> ImageSet:
    """Open any supported image source (see SUPPORTED) as an ImageSet; UserError if it cannot be used.

    skip_bad_images: undecodable image files do not stop the opening (arrays are unaffected); drop them
    with `ImageSet.decodable` before reading."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"'{path}' does not exist. Give the path of an image folder or dataset file.")
    if path.is_dir():
        return _open_dir(path, skip_bad_images)
    name = path.name.lower()
    if name.endswith(".npy"):
        return _open_npy(path)
    if name.endswith(".npz"):
        return _open_npz(path)
    if name.endswith(".zip"):
        return _open_zip(path, skip_bad_images)
    if name.endswith(TAR_SUFFIXES):
        return _open_tar(path, skip_bad_images)
    if _is_idx(name):
        return _open_idx(path)
    if name.endswith((".csv", ".csv.gz")):
        return _open_csv(path)
    if path.name in CIFAR_NAMES:
        return _open_cifar(path, [path])
    raise UserError(f"'{path}' is not a supported image source. Supported inputs: {SUPPORTED}.")


def _open_dir(path: Path, skip_bad: bool = False) -> ImageSet:
    """A CIFAR python folder, a folder with one IDX image file, else a folder of images."""
    batches = _cifar_batches(path)
    if batches:
        return _open_cifar(path, batches)
    idx3 = sorted(p for p in path.iterdir() if "idx3" in p.name and p.is_file())
    if idx3:
        train = [p for p in idx3 if p.name.startswith("train")]
        if len(idx3) > 1 and len(train) != 1:
            raise UserError(f"'{path}' holds several IDX image files ({', '.join(p.name for p in idx3)}). "
                            "Point at one of them.")
        return _open_idx(idx3[0] if len(idx3) == 1 else train[0])
    return _open_folder(path, skip_bad)


# ----------------------------------------------------------------------------- helpers for callers

def to_channels(x, c: int):
    """NCHW images (numpy or torch, any dtype) with `c` channels.

    1 -> 3 repeats the grey plane; 4 -> 3 drops alpha; 3 or 4 -> 1 takes BT.601 luma (only when the
    caller asks for c=1: colour is never dropped silently). Integer inputs are rounded back.
    """
    have = x.shape[1]
    if have == c:
        return x
    if have == 1 and c == 3:
        return x[:, [0, 0, 0]]
    if have == 4 and c == 3:
        return x[:, :3]
    if have in (3, 4) and c == 1:
        y = x[:, 0:1] * _LUMA[0] + x[:, 1:2] * _LUMA[1] + x[:, 2:3] * _LUMA[2]
        if type(x).__module__.startswith("torch"):
            return y.to(x.dtype) if x.is_floating_point() else y.round().clamp(0, 255).to(x.dtype)
        return y.astype(x.dtype) if x.dtype.kind == "f" else np.clip(np.rint(y), 0, 255).astype(x.dtype)
    raise ValueError(f"cannot convert {have}-channel images to {c} channels")


def subset_indices(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted int64 indices of a deterministic n-subset of range(n_total); all of them when n is None or >= n_total.

    Fixed by (n_total, n, seed) alone. The subset is the first n of one seeded permutation, so a
    larger n extends a smaller one with the same seed (nested subsets).
    """
    if n is None or n >= n_total:
        return np.arange(n_total, dtype=np.int64)
    if n < 1:
        raise UserError(f"a subset of {n} images was asked for; ask for at least 1.")
    perm = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(n_total)]))).permutation(n_total)
    return np.sort(perm[:n]).astype(np.int64)
