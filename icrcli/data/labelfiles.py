"""Which files beside a data file it reads its labels from (named here without numpy, so cache keys can name them
without opening the data)."""

from __future__ import annotations

from pathlib import Path


def is_idx(name: str) -> bool:
    return "idx3-ubyte" in name or "idx1-ubyte" in name or name.endswith((".idx3", ".idx1"))


def idx_labels_path(images: Path) -> Path | None:
    """An IDX images file's idx1 labels file beside it (train-images-idx3-ubyte -> train-labels-idx1-ubyte[.gz])."""
    name = images.name.replace("idx3", "idx1").replace("images", "labels")
    base = name[:-3] if name.endswith(".gz") else name
    return next((images.parent / n for n in (name, base, base + ".gz") if (images.parent / n).is_file()), None)


def label_file(data: Path) -> Path | None:
    """The file beside a data file from which its labels are read, if any: an IDX images file's idx1 labels."""
    name = data.name.lower()
    if is_idx(name) and "idx1" not in name:
        return idx_labels_path(data)
    return None
