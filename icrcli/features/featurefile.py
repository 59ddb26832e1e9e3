"""The multi-view feature file: layout, writing, and block-wise reading. The layout is specified in
docs/FORMAT.md; this module is its only implementation.

Reading also accepts any HDF5 file holding an (N, K, D) dataset and a .npy array of shape (N, K, D).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from icrcli import __version__
from icrcli.errors import UserError
from icrcli.features.prefetch import prefetch

FORMAT_NAME = "icr-features"
FORMAT_VERSION = 1
FEATURES_GROUP = "features"
FLOAT_DTYPES = (np.float16, np.float32, np.float64)
# Aim for blocks of this many bytes (two are held: one read ahead) when reading: large enough for efficient GEMMs, small enough that memory
# does not depend on N.
_BLOCK_BYTES = 16 << 20


@dataclass
class FeatureSource:
    """An (N, K, D) array on disk, read in blocks of whole images."""
    path: Path
    dataset: str | None          # HDF5 path of the dataset; None for .npy
    shape: tuple[int, int, int]
    dtype: np.dtype
    attrs: dict = field(default_factory=dict)        # file-level provenance (feature files)
    layer_attrs: dict = field(default_factory=dict)  # dataset-level attributes
    complete: bool = True
    chunk_rows: int | None = None                    # HDF5 chunk length along N

    def block_images(self, requested: int | None = None) -> int:
        if requested:
            return requested
        n, k, d = self.shape
        rows = max(1, _BLOCK_BYTES // max(1, k * d * self.dtype.itemsize))
        if self.chunk_rows:  # whole HDF5 chunks, so no chunk is decoded twice
            rows = max(self.chunk_rows, rows // self.chunk_rows * self.chunk_rows)
        return min(rows, n)

    def iter_blocks(self, block_images: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first image index, block (b, K, D)) in order, reusing one buffer."""
        n, k, d = self.shape
        step = self.block_images(block_images)
        if self.dataset is None:
            arr = np.load(self.path, mmap_mode="r")
            for a in range(0, n, step):
                yield a, np.asarray(arr[a:a + step])
            return
        import h5py
        # Two buffers in turn: the next block is read in the background (h5py releases the GIL in HDF5 I/O)
        # while the caller computes on the current one, so reading overlaps the GEMMs instead of adding to them.
        bufs = [np.empty((step, k, d), dtype=self.dtype) for _ in range(2)]
        with h5py.File(self.path, "r") as f:
            ds = f[self.dataset]

            def read(item):
                j, a = item
                out = bufs[j % 2][: min(n, a + step) - a]
                ds.read_direct(out, np.s_[a:a + len(out)])
                return out

            for (_, a), out in prefetch(enumerate(range(0, n, step)), read):
                yield a, out


def _float_dtype(dt: np.dtype, where: str) -> np.dtype:
    if dt not in [np.dtype(t) for t in FLOAT_DTYPES]:
        raise UserError(f"{where} has dtype {dt}; icr reads float16, float32 or float64 features.")
    return np.dtype(dt)


def _check_shape(shape: tuple, where: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise UserError(
            f"{where} has shape {tuple(shape)}; icr needs a rank-3 array (N images, K views, D features). "
            "Reshape it to (N, K, D), or pick another dataset with --dataset."
        )
    if shape[1] == 0 or shape[2] == 0:  # N = 0 is a partial file just begun; no views or features is no data
        raise UserError(f"{where} has shape {tuple(shape)}: K = {shape[1]} views of D = {shape[2]} features per "
                        "image, nothing to read. Check the extraction that wrote it (the tapped layer, --views), "
                        "or pick another dataset with --dataset.")
    return tuple(int(x) for x in shape)


def open_hdf5(path: Path):
    """h5py.File(path, "r"), with a damaged file (truncated, or a corrupt header) as a UserError."""
    import h5py
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path} looks like HDF5 but cannot be opened ({e}): the file is truncated or damaged, "
                        "e.g. an interrupted copy. Copy it again, or re-run the `icr extract` that wrote it.") from None


def _decode(v):
    """An attribute as plain JSON-ready values; bytes that are not UTF-8 are kept with replacement characters."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray):
        return [_decode(x) for x in v.tolist()] if v.dtype.kind in "OSUV" else v.tolist()
    if isinstance(v, np.generic):
        v = v.item()
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else v if isinstance(v, (int, float, str, bool)) \
            else str(v)
    if isinstance(v, (list, tuple)):
        return [_decode(x) for x in v]
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def _h5_candidates(f) -> list[str]:
    import h5py
    found = []
    f.visititems(lambda name, obj: found.append(name)
                 if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None)
    return found


CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".pkl", ".bin")


def refuse_checkpoint(path: Path) -> None:
    """UserError saying to extract first when `path` is a checkpoint by its name, or a diffusers model folder
    (model_index.json or config.json inside), not features."""
    if path.is_dir():
        model = (path / "model_index.json").is_file() or (path / "config.json").is_file()
    else:
        model = path.suffix.lower() in CHECKPOINT_SUFFIXES
    if model:
        raise UserError(f"{path} looks like a checkpoint, not features: extract its features first, `icr extract "
                        f"{path} --data IMAGES --sigma 0.5 -o feats.h5`, then score feats.h5 (or let `icr sweep "
                        f"{path} --data IMAGES` do both at every noise level).")


def open_features(path: str | Path, dataset: str | None = None, follow_external: bool = False) -> FeatureSource:
    """Open a feature file (or plain HDF5 / .npy) for block-wise reading, validating what can be checked
    without reading the data. An HDF5 file that reads other files (external links, virtual datasets, external
    storage) is refused unless follow_external (h5reach)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file. Pass a feature file written by `icr extract`, an HDF5 file "
                        "with an (N, K, D) dataset, or a .npy array of shape (N, K, D).")
    refuse_checkpoint(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; pass a feature file (.h5 or .npy).")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as e:
            raise UserError(f"{path} is not a readable .npy file ({e}).") from None
        return FeatureSource(path, None, _check_shape(arr.shape, str(path)), _float_dtype(arr.dtype, str(path)))
    import h5py
    if not h5py.is_hdf5(path):
        raise UserError(f"{path} is neither an HDF5 file nor a .npy array. icr reads feature files written by "
                        "`icr extract`, HDF5 files with an (N, K, D) dataset, and .npy arrays of shape (N, K, D).")
    with open_hdf5(path) as f:
        if not follow_external:
            from icrcli.features.h5reach import refuse_outside
            refuse_outside(f, path)
        try:
            return _open_dataset(f, path, dataset)
        except (KeyError, OSError, RuntimeError) as e:     # e.g. a broken external link, with follow_external
            from icrcli.features.h5reach import outside
            links = "; ".join(f"/{name} is {how} to {target}" for name, how, target in outside(f)[:3])
            raise UserError(f"{path}: {dataset or 'the dataset'} cannot be read ({e}){': ' + links if links else ''}."
                            " Check that the file it points to exists and holds what it names.") from None


def _open_dataset(f, path: Path, dataset: str | None) -> FeatureSource:
    import h5py
    if dataset is None:
        cands = _h5_candidates(f)
        layers = [c for c in cands if c.startswith(FEATURES_GROUP + "/")]
        cands = layers or cands
        if not cands:
            raise UserError(f"{path} holds no rank-3 (N, K, D) dataset; nothing to score.")
        if len(cands) > 1:
            raise UserError(f"{path} holds several candidate datasets: {', '.join(cands)}. "
                            "Choose one with --dataset PATH (or --layer NAME for a feature file).")
        dataset = cands[0]
    if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
        choices = ", ".join(_h5_candidates(f)) or "none"
        raise UserError(f"{path} has no dataset {dataset!r}; rank-3 datasets in the file: {choices}.")
    ds = f[dataset]
    where = f"{path}:{dataset}"
    attrs = {k: _decode(v) for k, v in f.attrs.items()}
    if "config" in attrs:
        attrs["config"] = _config(attrs["config"], path)
    shape = _check_shape(ds.shape, where)
    if "rows_done" in attrs:  # a partial feature file: only the first rows_done rows hold data
        shape = (min(shape[0], _rows_done(attrs["rows_done"], path)),) + shape[1:]
    dtype = _float_dtype(ds.dtype, where)
    _check_stored(ds, shape, where)
    complete = attrs.get("complete", True)
    if not isinstance(complete, (bool, int)):
        raise UserError(f"{path}: its attribute complete is {str(complete)[:60]!r}, not true or false as icr writes "
                        "it. The file was altered; re-run the `icr extract` that wrote it.")
    return FeatureSource(path, dataset, shape, dtype, attrs, {k: _decode(v) for k, v in ds.attrs.items()},
                         complete=bool(complete), chunk_rows=ds.chunks[0] if ds.chunks else None)


def _config(value, path: Path):
    """The config attribute: the JSON object icr wrote (anything else is a UserError)."""
    try:
        out = json.loads(value) if isinstance(value, str) else value
    except (ValueError, RecursionError):
        out = None
    if not isinstance(out, dict):
        raise UserError(f"{path}: its attribute config is not the JSON object icr writes ({str(value)[:60]!r}). "
                        "The file was altered or not written by icr; re-run `icr extract`, or remove the attribute.")
    return out


def _rows_done(value, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() or value < 0:
        raise UserError(f"{path}: its attribute rows_done is {str(value)[:60]!r}, not a count of rows as icr writes "
                        "it. The file was altered; re-run the `icr extract` that wrote it.")
    return int(value)


def _check_stored(ds, shape: tuple[int, int, int], where: str) -> None:
    """A dataset must hold the rows it declares: rows never written read as fill values, so a tiny file that
    declares 10**12 rows would be read for ever. Counted on the storage, without reading it."""
    if ds.is_virtual or ds.external:
        return
    n, k, d = shape
    if n == 0:
        return
    if ds.chunks is None:
        have = ds.id.get_storage_size()
        need = n * k * d * ds.dtype.itemsize
    else:
        c0, c1, c2 = ds.chunks
        have = ds.id.get_num_chunks()
        need = -(-n // c0) * -(-k // c1) * -(-d // c2)
    if have < need:
        raise UserError(f"{where} declares {n} x {k} x {d} values, but the file stores "
                        f"{'only part of them' if have else 'none of them'}: it is truncated, damaged or not a "
                        "feature file. Re-run the `icr extract` that wrote it.")


def layer_dataset(layer: str) -> str:
    return f"{FEATURES_GROUP}/{layer}"


def write_feature_file(path: str | Path, layers: dict[str, int], n_images: int, n_views: int, dtype: str,
                       attrs: dict, parts: Iterator[dict], chunk_images: int = 256) -> None:
    """Write a feature file in one pass from an iterator of row blocks.

    Each part is {"start": row, "features": {layer: (b, K, D)}, "index": (b,), "labels": (b,) or None}.
    No timestamps are stored and every write happens in row order, so the same inputs give a byte-identical
    file (a resumed extraction is checked against an uninterrupted one this way).
    """
    import h5py
    with h5py.File(path, "w", libver=("earliest", "v110")) as f:
        for k, v in {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "tool_version": __version__,
                     "n_images": n_images, "n_views": n_views, "dtype": dtype, **attrs}.items():
            f.attrs[k] = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
        rows = max(1, min(chunk_images, n_images))
        g = f.create_group(FEATURES_GROUP)
        dsets = {name: g.create_dataset(name, shape=(n_images, n_views, d), dtype=dtype,
                                        chunks=(rows, n_views, d), track_times=False)
                 for name, d in layers.items()}
        index = f.create_dataset("index", shape=(n_images,), dtype="int64", track_times=False)
        labels = None
        done = 0
        for part in parts:
            a = part["start"]
            b = a + len(part["index"])
            for name, arr in part["features"].items():
                dsets[name][a:b] = arr
            index[a:b] = part["index"]
            if part.get("labels") is not None:
                if labels is None:
                    labels = f.create_dataset("labels", shape=(n_images,), dtype="int64",
                                              fillvalue=-1, track_times=False)
                labels[a:b] = part["labels"]
            done = b
        f.attrs["rows_done"] = done
        f.attrs["complete"] = done == n_images
