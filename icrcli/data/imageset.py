"""What every image reader hands back: an `ImageSet`, N images of one size with optional labels, read on
demand by index (the readers are arrays.py, classic.py and the encoded images of images.py)."""

from __future__ import annotations

import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from icrcli.errors import UserError


# What reading a damaged archive member can raise: zip/tar format errors, a bad deflate stream, a short file.
_ARCHIVE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, zlib.error, OSError, EOFError,
                   ValueError, KeyError, NotImplementedError, RuntimeError)


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
        self.unsafe_members: list[str] = []    # archive members left out for their names (absolute, ../)

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
