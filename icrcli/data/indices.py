"""A list of image indices given by the user (`--indices FILE`), read as data: a text file of integers or a .npy
integer array. The images used are then exactly these, e.g. the subset of another study."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from icrcli.errors import UserError

_MAX_TEXT_BYTES = 64 << 20
_INT64_MAX = 2 ** 63 - 1


def read_indices(path: str | Path, flag: str = "--indices") -> tuple[int, ...]:
    """The indices in `path`, in file order: a .npy 1-D integer array (no pickles), or text with integers
    separated by spaces, commas or newlines ('#' starts a comment). Checked: at least one, none negative. `flag`
    names the option in messages (--indices, --probe-train, ...)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file. Pass a text file of image indices (one per line) or a "
                        ".npy integer array.")
    values = _npy(path, flag) if path.suffix.lower() == ".npy" else _text(path, flag)
    if values.size == 0:
        raise UserError(f"{flag} {path}: the file lists no indices.")
    if (values < 0).any():
        raise UserError(f"{flag} {path}: index {int(values[values < 0][0])} is negative; indices count images "
                        "from 0.")
    return tuple(int(v) for v in values)


def _npy(path: Path, flag: str) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{flag} {path}: not a readable .npy array ({e}).") from None
    if not isinstance(a, np.ndarray) or a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise UserError(f"{flag} {path}: expected a 1-D integer array, got shape {getattr(a, 'shape', '?')} "
                        f"{getattr(a, 'dtype', '')}.")
    if a.size and a.dtype.kind == "u" and int(a.max()) > _INT64_MAX:
        raise UserError(f"{flag} {path}: index {int(a.max())} is larger than any data set holds; indices count "
                        "images from 0.")
    return a.astype(np.int64)


def _text(path: Path, flag: str) -> np.ndarray:
    if path.stat().st_size > _MAX_TEXT_BYTES:
        raise UserError(f"{flag} {path}: larger than {_MAX_TEXT_BYTES >> 20} MiB; that is not a list of indices.")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{flag} {path}: not text. Pass a text file of integers or a .npy array.") from None
    tokens = [t for line in text.splitlines() for t in re.split(r"[\s,;]+", line.split("#", 1)[0]) if t]
    bad = next((t for t in tokens if not re.fullmatch(r"[+-]?\d+", t)), None)
    if bad is not None:
        raise UserError(f"{flag} {path}: {bad!r} is not an integer index.")
    values = [int(t) for t in tokens]
    big = next((v for v in values if abs(v) > _INT64_MAX), None)
    if big is not None:
        raise UserError(f"{flag} {path}: index {str(big)[:40]} is larger than any data set holds; indices count "
                        "images from 0.")
    return np.array(values, dtype=np.int64)
