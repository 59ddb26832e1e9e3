"""Images held as arrays: .npy (memory-mapped) and .npz, in NHWC, NCHW or NHW layout, uint8 or floats."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icrcli.data.imageset import _ARCHIVE_ERRORS, ImageSet
from icrcli.errors import UserError

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
