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

One module per reader family: imageset.py (the ImageSet every reader returns), arrays.py (.npy, .npz),
classic.py (CIFAR pickles, IDX, CSV digit tables), and this one: encoded images in folders and archives, and
`open_images`, which picks the reader.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np

# The readers of arrays and of the classic dataset files are modules of their own; images.X stays the one name
# callers use for them. This module reads encoded images (folders, .zip, .tar) and picks the reader.
from icrcli.data.arrays import ArrayImageSet, _open_npy, _open_npz, detect_layout  # noqa: F401
from icrcli.data.classic import (  # noqa: F401
    CIFAR_NAMES, CIFAR_TRAIN, _cifar_batches, _is_idx, _open_cifar, _open_csv, _open_idx,
)
from icrcli.data.imageset import _ARCHIVE_ERRORS, ImageSet  # noqa: F401
from icrcli.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
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
_GREY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights PIL and torchvision use for RGB -> L


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


def unsafe_member(name: str) -> bool:
    """An archive member named outside the archive's root: absolute (/x, C:\\x) or climbing up (../x)."""
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    return posix.startswith("/") or (len(posix) > 1 and posix[1] == ":") or ".." in parts


def _encoded_set(path: Path, kind: str, all_names: list[str], read: Callable[[str], bytes],
                 files: list[Path] | None = None, skip_bad: bool = False) -> ImageSet:
    unsafe = [n for n in all_names if unsafe_member(n)] if kind in ("zip", "tar") else []
    if unsafe:      # never read, and said: an archive made to be unpacked over other files is not a data set
        all_names = [n for n in all_names if n not in set(unsafe)]
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
    if unsafe:
        shown = ", ".join(repr(n) for n in unsafe[:3]) + (", ..." if len(unsafe) > 3 else "")
        note = "; ".join(x for x in (note, f"left out {len(unsafe)} member(s) with an absolute or ../ name "
                                            f"({shown})") if x)
    imgs = EncodedImageSet(path, kind, names, read, skip_bad=skip_bad, labels=labels, class_names=classes,
                           files=files, note=note)
    imgs.unsafe_members = unsafe
    return imgs


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
