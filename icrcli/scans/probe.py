"""`icr probe`: linear (and k-NN) probe accuracy of the per-image features s_i of a labelled feature file.

The features of image i are the mean over its K views, s_i = (1/K) sum_k h_ik: the invariant part ICR scores.
The protocol itself lives in icrcli.stats.probe and docs/PROBE.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icrcli import __version__
from icrcli.errors import UserError
from icrcli.features.featurefile import FeatureSource, layer_dataset, open_features
from icrcli.stats.probe import probe_features, stratified_split


def image_means(src: FeatureSource) -> np.ndarray:
    """(N, D) float64 mean over views of a feature source, read in blocks of whole images."""
    n, _, d = src.shape
    out = np.empty((n, d), dtype=np.float64)
    for a, block in src.iter_blocks():
        out[a:a + len(block)] = block.mean(axis=1, dtype=np.float64)
    return out


def read_labels(src: FeatureSource) -> np.ndarray:
    """(N,) int64 labels of a feature file's rows; UserError when it has none."""
    if src.dataset is None:
        raise UserError(f"{src.path} is a .npy array and holds no labels; the probe needs a feature file from "
                        "`icr extract` on labelled data (class sub-folders, CIFAR, MNIST, ... ).")
    import h5py
    with h5py.File(src.path, "r") as f:
        if "labels" not in f:
            raise UserError(f"{src.path} has no /labels: its images were unlabelled. Extract from labelled data "
                            "(class sub-folders, CIFAR, MNIST, an NVlabs zip with dataset.json, ...).")
        labels = _checked_labels(f["labels"], src)
    if np.all(labels < 0):
        raise UserError(f"{src.path}: every label is -1 (unknown); the probe needs labelled images.")
    return labels


def _checked_labels(ds, src: FeatureSource) -> np.ndarray:
    """The first N labels of the file's /labels, which must be what icr writes: a 1-D integer dataset with a
    label per row (-1 for unknown); anything else is a UserError, not a crash."""
    import h5py
    n = src.shape[0]
    what = None
    if not isinstance(ds, h5py.Dataset):
        what = "is not a dataset"
    elif ds.ndim != 1 or ds.shape[0] < n:
        what = f"has shape {ds.shape}, not one label per row ({n},)"
    elif ds.dtype.kind not in "iuf":
        what = f"holds {ds.dtype} values, not integer classes"
    if what is None:
        try:
            raw = np.asarray(ds[:n])
        except (OSError, RuntimeError, KeyError) as e:
            raise UserError(f"{src.path}: its /labels cannot be read ({e}). Re-run the `icr extract` that wrote "
                            "it.") from None
        ok = np.isfinite(raw).all() and (raw == np.round(raw)).all() and (np.abs(raw) < 2 ** 62).all() \
            if raw.dtype.kind == "f" else (raw.astype(np.float64) < 2 ** 62).all()
        if ok:
            return raw.astype(np.int64)
        what = "holds values that are not integer classes"
    raise UserError(f"{src.path}: its /labels {what}. icr writes one integer class per image (-1 for unknown); the "
                    "file was altered or not written by icr. Re-run `icr extract` on labelled data.")


def load_labelled(path: str | Path, layer: str | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(s (N, D) float64, labels (N,) int64, facts) of the labelled rows of a complete feature file."""
    src = open_features(path, layer_dataset(layer) if layer else None)
    if not src.complete:
        raise UserError(f"{path}: the extraction did not finish ({src.shape[0]} of {src.attrs.get('n_images')} "
                        "images). Run the same `icr extract` again to complete it.")
    labels = read_labels(src)
    s = image_means(src)
    keep = labels >= 0
    facts = {"path": str(path), "dataset": src.dataset, "n_images": int(src.shape[0]),
             "n_views": int(src.shape[1]), "dim": int(src.shape[2]), "n_unlabelled": int((~keep).sum()),
             "sigma": src.attrs.get("sigma"), "checkpoint_sha256": src.attrs.get("checkpoint_sha256")}
    return s[keep], labels[keep], facts


def probe_file(path: str | Path, test: str | Path | None = None, split: float = 0.75, seed: int = 0,
               l2: float = 1e-4, knn: int | None = None, layer: str | None = None) -> dict:
    """Probe a feature file: trained on `path` and tested on `test`, or on a stratified `split` of `path`.
    Returns the JSON-ready result (see probe_features, plus the inputs and options)."""
    x, y, facts = load_labelled(path, layer)
    if test is not None:
        tx, ty, test_facts = load_labelled(test, layer)
        train_x, train_y, test_x, test_y = x, y, tx, ty
        how = {"kind": "file", "test": test_facts}
    else:
        tr, te = stratified_split(y, split, seed)
        train_x, train_y, test_x, test_y = x[tr], y[tr], x[te], y[te]
        how = {"kind": "split", "fraction": split, "seed": seed}
    result = {"schema": 1, "command": "probe", "features": facts, "layer": layer or str(facts["dataset"]).removeprefix("features/"),
              "split": how}
    result.update(probe_features(train_x, train_y, test_x, test_y, l2=l2, knn=knn))
    result["options"] = {"l2": l2, "knn": knn, "split": None if test is not None else split, "seed": seed,
                         "standardise": "training split mean and std", "optimizer": "Newton (exact "
                         "Hessian) or L-BFGS for large problems, float64, from zero"}
    result["version"] = __version__
    return result


def probe_images(path: str | Path, train: tuple[int, ...], test: tuple[int, ...], l2: float = 1e-4,
                 knn: int | None = None, layer: str | None = None) -> dict:
    """Probe a feature file on a given split by image index (the data's, as in the file's /index): trained on the
    rows of the images `train`, tested on those of `test` (a reference split, e.g. the first 1,500 images another
    study listed and the last 500). Every image of the split needs a labelled row."""
    x, y, facts = load_labelled(path, layer)
    index = _labelled_index(path)
    rows = {int(i): r for r, i in enumerate(index)}
    missing = [i for i in (*train, *test) if i not in rows]
    if missing:
        raise UserError(f"{path}: image {missing[0]} of the probe's split has no labelled row in this file (it "
                        "was not extracted, or is unlabelled). Split only images the extraction took.")
    tr, te = [rows[i] for i in train], [rows[i] for i in test]
    result = {"schema": 1, "command": "probe", "features": facts,
              "layer": layer or str(facts["dataset"]).removeprefix("features/"),
              "split": {"kind": "indices", "n_train": len(tr), "n_test": len(te)}}
    result.update(probe_features(x[tr], y[tr], x[te], y[te], l2=l2, knn=knn))
    result["options"] = {"l2": l2, "knn": knn, "split": None, "standardise": "training split mean and std",
                         "optimizer": "L-BFGS strong Wolfe, float64, from zero"}
    result["version"] = __version__
    return result


def _labelled_index(path: str | Path) -> np.ndarray:
    """The data index of each labelled row of a feature file, in the order load_labelled returns the rows."""
    import h5py
    with h5py.File(path, "r") as f:
        n = int(f["labels"].shape[0]) if "labels" in f else 0
        index, labels = np.asarray(f["index"][:n], dtype=np.int64), np.asarray(f["labels"][:n], dtype=np.int64)
    return index[labels >= 0]
