"""`icr probe`: linear (and k-NN) probe accuracy of a labelled feature file, under one of two protocols.

- `paper` (the default; Li et al. 2026, Sec. 4 and App. C): the features of ONE view of each image (view 0),
  which is the clean image noised at the file's sigma when it was extracted with `--augment none`; trained on
  the training file and tested on a held-out file (`--test`, extracted with the same plan), or, without one,
  k-fold cross-validated (every image predicted once by the probe trained on the other folds).
- `view-mean`: the mean over the K views, s_i = (1/K) sum_k h_ik (the invariant part ICR scores), on a
  stratified split of one file or a --test file (this tool's first protocol, kept for comparison).

The fitting itself lives in icrcli.stats.probe, the folds and paired tests in icrcli.stats.crossval, and the
mapping to the paper in docs/PROBE.md.
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


from icrcli.scans.options import PROTOCOLS, ProbeOptions  # noqa: E402  (declared with the probe's options)

_P = ProbeOptions()     # the defaults below are the options' (one declaration)


def first_views(src: FeatureSource) -> np.ndarray:
    """(N, D) float64 features of view 0 of each image, read in blocks of whole images."""
    n, _, d = src.shape
    out = np.empty((n, d), dtype=np.float64)
    for a, block in src.iter_blocks():
        out[a:a + len(block)] = block[:, 0]
    return out


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


def load_labelled(path: str | Path, layer: str | None = None,
                  protocol: str = "view-mean") -> tuple[np.ndarray, np.ndarray, dict]:
    """(x (N, D) float64, labels (N,) int64, facts) of the labelled rows of a complete feature file: x is view 0
    under the paper's protocol, the mean over views under view-mean."""
    src = open_features(path, layer_dataset(layer) if layer else None)
    if not src.complete:
        raise UserError(f"{path}: the extraction did not finish ({src.shape[0]} of {src.attrs.get('n_images')} "
                        "images). Run the same `icr extract` again to complete it.")
    labels = read_labels(src)
    s = first_views(src) if protocol == "paper" else image_means(src)
    keep = labels >= 0
    facts = {"path": str(path), "dataset": src.dataset, "n_images": int(src.shape[0]),
             "n_views": int(src.shape[1]), "dim": int(src.shape[2]), "n_unlabelled": int((~keep).sum()),
             "sigma": src.attrs.get("sigma"), "checkpoint_sha256": src.attrs.get("checkpoint_sha256"),
             "augment": src.attrs.get("augment")}
    return s[keep], labels[keep], facts


def probe_file(path: str | Path, test: str | Path | None = None, split: float = _P.split, seed: int = _P.seed,
               l2: float = _P.l2, knn: int | None = _P.knn, layer: str | None = None, protocol: str = _P.protocol,
               folds: int = _P.folds) -> dict:
    """Probe a feature file under `protocol` (module docstring): trained on `path` and tested on `test`; without
    `test`, k-fold cross-validated (paper) or a stratified `split` (view-mean). Returns the JSON-ready result
    (see probe_features, plus the inputs, the protocol, `correct`: per-test-image correctness as 0/1 text)."""
    from icrcli.stats.crossval import cross_validate, pack
    from icrcli.stats.probe import binomial_se
    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol {protocol!r}: choose paper or view-mean.")
    x, y, facts = load_labelled(path, layer, protocol)
    warnings = _protocol_warnings(facts, protocol)
    if test is not None:
        tx, ty, test_facts = load_labelled(test, layer, protocol)
        warnings += [w.replace("the training file", "the test file") for w in _protocol_warnings(test_facts, protocol)]
        how = {"kind": "file", "test": test_facts}
        fitted = probe_features(x, y, tx, ty, l2=l2, knn=knn)
    elif protocol == "paper":
        cv = cross_validate(x, y, folds, seed, l2, knn)
        how = {"kind": "cv", "folds": cv["n_folds"], "seed": seed, "fold_accuracies": cv["fold_accuracies"]}
        acc = cv["test_accuracy"]
        fitted = {"train_accuracy": cv["train_accuracy"], "test_accuracy": acc,
                  "test_accuracy_se": binomial_se(acc, len(y)), "n_classes": cv["n_classes"],
                  "n_train": int(len(y)), "n_test": int(len(y)), "dim": int(x.shape[1]), "classes": cv["classes"],
                  "chance": float(np.bincount(np.searchsorted(cv["classes"], y)).max() / len(y)),
                  "optimizer": cv["optimizer"], "correct": pack(cv["correct"])}
        if knn is not None:
            kacc = float(cv["knn_correct"].mean())
            fitted["knn"] = {"k": int(knn), "test_accuracy": kacc, "test_accuracy_se": binomial_se(kacc, len(y)),
                             "metric": "cosine"}
    else:
        tr, te = stratified_split(y, split, seed)
        how = {"kind": "split", "fraction": split, "seed": seed}
        fitted = probe_features(x[tr], y[tr], x[te], y[te], l2=l2, knn=knn)
    result = {"schema": 1, "command": "probe", "features": facts,
              "layer": layer or str(facts["dataset"]).removeprefix("features/"), "split": how,
              "protocol": describe_protocol(protocol, how["kind"], folds)}
    result.update(fitted)
    result["warnings"] = warnings + result.get("warnings", [])   # the protocol's, then the solver's
    result["options"] = {"l2": l2, "knn": knn, "split": split if how["kind"] == "split" else None, "seed": seed,
                         "folds": folds if how["kind"] == "cv" else None, "protocol": protocol,
                         "standardise": "training split mean and std", "optimizer": "Newton (exact "
                         "Hessian) or L-BFGS for large problems, float64, from zero"}
    result["version"] = __version__
    return result


def probe_images(path: str | Path, train: tuple[int, ...], test: tuple[int, ...], l2: float = _P.l2,
                 knn: int | None = _P.knn, layer: str | None = None, protocol: str = "view-mean") -> dict:
    """Probe a feature file on a given split by image index (the data's, as in the file's /index): trained on the
    rows of the images `train`, tested on those of `test` (a reference split, e.g. the first 1,500 images another
    study listed and the last 500). Every image of the split needs a labelled row. `protocol` as probe_file's:
    which features of each image are probed."""
    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol {protocol!r}: choose paper or view-mean.")
    x, y, facts = load_labelled(path, layer, protocol)
    index = _labelled_index(path)
    rows = {int(i): r for r, i in enumerate(index)}
    missing = [i for i in (*train, *test) if i not in rows]
    if missing:
        raise UserError(f"{path}: image {missing[0]} of the probe's split has no labelled row in this file (it "
                        "was not extracted, or is unlabelled). Split only images the extraction took.")
    tr, te = [rows[i] for i in train], [rows[i] for i in test]
    result = {"schema": 1, "command": "probe", "features": facts,
              "layer": layer or str(facts["dataset"]).removeprefix("features/"),
              "split": {"kind": "indices", "n_train": len(tr), "n_test": len(te)},
              "protocol": describe_protocol(protocol, "indices", 0)}
    result.update(probe_features(x[tr], y[tr], x[te], y[te], l2=l2, knn=knn))
    result["warnings"] = _protocol_warnings(facts, protocol)
    result["options"] = {"l2": l2, "knn": knn, "split": None, "protocol": protocol,
                         "standardise": "training split mean and std",
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


def describe_protocol(protocol: str, evaluation: str, folds: int) -> dict:
    """What was trained and tested on, in words, for the JSON (docs/PROBE.md maps it to the paper)."""
    features = ("view 0 of each image: one view, the clean image noised at the file's sigma when extracted with "
                "--augment none (the paper's)" if protocol == "paper" else "the mean of the K views of each image")
    how = {"file": "trained on the training file, tested on the held-out --test file",
           "cv": f"{folds}-fold stratified cross-validation of one file (no held-out file given): each image "
                 "predicted once, by the probe trained on the other folds",
           "split": "a stratified split of one file",
           "indices": "a reference split of one file by image index (--probe-first, --probe-train/--probe-test)"
           }[evaluation]
    return {"name": protocol, "features": features, "evaluation": how}


def _protocol_warnings(facts: dict, protocol: str) -> list[str]:
    aug = facts.get("augment")
    if protocol == "paper" and aug not in (None, "none"):
        return [f"the training file's views were augmented ({aug}): the paper's probe reads clean images noised "
                "at sigma, so extract with --augment none for it (icr sweep --probe does)."]
    return []
