"""Probe evaluation without a test file, and paired comparison of two probes on the same images.

- `stratified_folds`: k folds, each class dealt round-robin after a shuffle seeded by (seed, class), so every
  fold holds each class in proportion and the folds depend only on the labels and the seed.
- `cross_validate`: every image predicted once, by the probe trained on the other k-1 folds (same protocol as
  icrcli.stats.probe: the training folds' standardisation, the same L-BFGS fit). Accuracy is over all N
  out-of-fold predictions; its standard error is the binomial one (approximate: the folds' models share data).
- `mcnemar`: the exact McNemar test of two probes scored on the same images (per-image correctness), the paired
  test for "is the accuracy at level a different from that at level b".
"""

from __future__ import annotations

import numpy as np

from icrcli.errors import UserError


def shuffled_by_class(labels: np.ndarray, seed: int):
    """(class, its image indices shuffled) for each class in order; each class by its own generator, seeded by
    (seed, class), so a class's order does not depend on the others."""
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        yield c, idx[np.random.default_rng([seed, int(c) & 0x7FFFFFFF]).permutation(len(idx))]


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N,) fold index in 0..k-1 per image."""
    if k < 2:
        raise UserError(f"--folds {k}: cross-validation needs at least two folds.")
    labels = np.asarray(labels)
    fold = np.empty(len(labels), dtype=np.int64)
    start = 0  # classes continue the round-robin where the last stopped, so small classes do not pile into fold 0
    for c, perm in shuffled_by_class(labels, seed):   # the same per-class shuffle as the train/test split
        if len(perm) < 2:
            raise UserError(f"class {int(c)} has {len(perm)} image; cross-validation needs at least two per class "
                            "(one to train on while the other is tested). Use more images or a --probe-test-data file.")
        fold[perm] = (start + np.arange(len(perm))) % k
        start = (start + len(perm)) % k
    return fold


def cross_validate(x: np.ndarray, y: np.ndarray, k: int = 5, seed: int = 0, l2: float = 1e-4,
                   knn: int | None = None) -> dict:
    """k-fold cross-validated linear (and k-NN) probe of features x (N, D) with integer labels y (N,).

    Returns {"correct": (N,) bool, "test_accuracy", "fold_accuracies", "train_accuracy" (mean over folds),
    "classes", "n_classes", "n_folds", "optimizer": the worst fold's {"converged", "grad_max", "iterations", "solver"},
    "knn_correct" with knn}."""
    from icrcli.stats.probe import fit_logistic, knn_predict, predict, standardise
    x, y = np.asarray(x), np.asarray(y)
    if not np.all(np.isfinite(x)):
        raise UserError("the probe's features hold NaN or Inf; the probe needs finite features.")
    classes = np.unique(y)
    if len(classes) < 2:
        raise UserError(f"the labels hold {len(classes)} class(es); a probe needs at least two.")
    yi = np.searchsorted(classes, y)
    fold = stratified_folds(y, k, seed)
    k = int(fold.max()) + 1
    correct = np.zeros(len(y), dtype=bool)
    knn_correct = np.zeros(len(y), dtype=bool) if knn is not None else None
    fold_acc, train_acc, infos = [], [], []
    for f in range(k):
        te, tr = fold == f, fold != f
        ztr, zte = standardise(x[tr], x[te])
        W, b, info = fit_logistic(ztr, yi[tr], len(classes), l2)
        correct[te] = predict(zte, W, b) == yi[te]
        fold_acc.append(float(correct[te].mean()))
        train_acc.append(float(np.mean(predict(ztr, W, b) == yi[tr])))
        infos.append(info)
        if knn is not None:
            knn_correct[te] = knn_predict(ztr, yi[tr], zte, knn, len(classes)) == yi[te]
    worst = max(infos, key=lambda i: i["grad_max"])
    out = {"correct": correct, "test_accuracy": float(correct.mean()), "fold_accuracies": fold_acc,
           "train_accuracy": float(np.mean(train_acc)), "classes": [int(c) for c in classes],
           "n_classes": int(len(classes)), "n_folds": k,
           "optimizer": {"converged": all(i["converged"] for i in infos), "grad_max": worst["grad_max"],
                         "iterations": max(i["iterations"] for i in infos), "solver": worst.get("solver")}}
    if knn_correct is not None:
        out["knn_correct"] = knn_correct
    return out


def mcnemar(correct_a, correct_b) -> dict:
    """Exact two-sided McNemar test of two classifiers on the same images: under the null (equal accuracy) the
    b images only a gets right and the c only b gets right split as Binomial(b + c, 1/2).
    Returns {"only_a", "only_b", "p_value"} (p = 1 when they never differ)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("mcnemar needs per-image correctness of the same images")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return {"only_a": 0, "only_b": 0, "p_value": 1.0}
    import scipy.stats
    p = scipy.stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    return {"only_a": only_a, "only_b": only_b, "p_value": float(min(1.0, p))}


def pack(correct) -> str:
    """Per-image correctness as a string of 0/1 (one character per image, in row order): compact in JSON, and
    what a reader needs for paired tests between levels."""
    return "".join("1" if c else "0" for c in np.asarray(correct, dtype=bool))


def unpack(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8) == ord("1")
