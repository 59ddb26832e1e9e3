"""Linear and k-NN probes on per-image features: how well a class can be read off a representation.

The protocol (docs/PROBE.md): a stratified split deterministic by seed; features standardised with the training
split's mean and std; multinomial logistic regression with bias in float64, loss = mean cross-entropy +
l2 * ||W||_F^2 (the bias is not penalised), minimised by full-batch L-BFGS with a strong Wolfe line search from
W = 0, b = 0, so the same input gives the same answer. Solver: Newton's method with the exact Hessian and a
backtracking line search while the Hessian is small (NEWTON_MAX_PARAMS), which reaches the gradient tolerance in
about ten steps; L-BFGS otherwise. (L-BFGS alone took 900-2,000 iterations on the correlated features of real
networks, and often stopped at its cap; Newton's steps do not care how the features are correlated.) The k-NN probe (cosine similarity, majority vote) needs
no parameters at all. Pure functions over arrays; nothing here reads files or prints.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from icrcli.errors import UserError
from icrcli.stats.crossval import pack, shuffled_by_class

# Stopping rule: the largest gradient entry below GRAD_TOL (first-order optimality) or MAX_ITER iterations
# (NEWTON_MAX_ITER for Newton). The loss is smooth and strongly convex in W for l2 > 0.
GRAD_TOL, CHANGE_TOL, MAX_ITER, HISTORY = 1e-9, 1e-14, 2000, 20
NEWTON_MAX_ITER = 100
NEWTON_MAX_PARAMS = 2600  # (D + 1) * C up to this: the Hessian (at most 54 MB) is formed and solved
_STD_FLOOR = 1e-12        # a feature constant on the training split is centred, not scaled (no 0/0)
CONVERGED_GRAD = 1e-6     # reported as converged when the largest gradient entry is below this
_KNN_BLOCK_ELEMS = 1 << 24  # similarities held at once in the k-NN search: 128 MB of float64


def classes_of(train_y: np.ndarray, test_y: np.ndarray) -> np.ndarray:
    """The sorted class labels, checked: at least two, each present in both splits."""
    train_c, test_c = np.unique(train_y), np.unique(test_y)
    if len(train_c) < 2:
        raise UserError(f"the training split holds {len(train_c)} class(es); a probe needs at least two. "
                        "Use labelled data with several classes.")
    missing_test = np.setdiff1d(train_c, test_c)
    missing_train = np.setdiff1d(test_c, train_c)
    if len(missing_test) or len(missing_train):
        where = []
        if len(missing_train):
            where.append(f"class(es) {_few(missing_train)} have no training image")
        if len(missing_test):
            where.append(f"class(es) {_few(missing_test)} have no test image")
        raise UserError(f"every class must appear in both splits, but {' and '.join(where)}. Use more images "
                        "per class, another --split, or a --test file with the same classes.")
    return train_c


def _few(values) -> str:
    v = [str(int(x)) for x in values[:8]]
    return ", ".join(v) + (f" (+{len(values) - 8} more)" if len(values) > 8 else "")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """labels (N,) -> (train indices, test indices), both sorted. Each class is shuffled by its own generator,
    seeded by (seed, class), and its first round(fraction * n_c) images (at least one, at most n_c - 1) train."""
    if not 0 < fraction < 1:
        raise UserError(f"--split {fraction}: the training fraction must lie strictly between 0 and 1.")
    labels = np.asarray(labels)
    train, test = [], []
    for c, perm in shuffled_by_class(labels, seed):
        if len(perm) < 2:
            raise UserError(f"class {int(c)} has {len(perm)} image; it cannot appear in both the training and the "
                            "test split. Use more images, or a --test file.")
        n_train = min(len(perm) - 1, max(1, round(fraction * len(perm))))
        train.append(perm[:n_train])
        test.append(perm[n_train:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def standardise(train_x: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """(n, D) arrays -> float64 copies centred and scaled by the FIRST array's per-feature mean and std."""
    train_x = np.asarray(train_x, dtype=np.float64)
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0)
    # constant up to rounding (the mean of equal numbers need not be exact): centred, not blown up
    std = np.where((std > 0) & (std > _STD_FLOOR * np.abs(mean)), std, 1.0)
    return [(np.asarray(x, dtype=np.float64) - mean) / std for x in (train_x, *others)]


def logistic_loss(x: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, l2: float) -> torch.Tensor:
    """Mean cross-entropy of softmax(x W + b) against y, plus l2 * ||W||_F^2. x (n, D), y (n,) in 0..C-1,
    W (D, C), b (C,)."""
    return torch.nn.functional.cross_entropy(x @ W + b, y) + l2 * (W * W).sum()


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-4, max_iter: int | None = None,
                 solver: str = "auto") -> tuple[np.ndarray, np.ndarray, dict]:
    """Multinomial logistic regression in float64 from zero: Newton (solver "newton", or "auto" while
    (D + 1) * C <= NEWTON_MAX_PARAMS and l2 > 0) or full-batch L-BFGS with a strong Wolfe line search.

    x (n, D) standardised features, y (n,) int in 0..n_classes-1. Returns W (D, C), b (C,) and {"solver",
    "iterations", "loss", "grad_max", "converged"}: grad_max is the largest gradient entry at the solution,
    converged that it is at most CONVERGED_GRAD."""
    if l2 < 0:
        raise UserError(f"--l2 {l2}: the penalty must be >= 0.")
    if solver not in ("auto", "newton", "lbfgs"):
        raise ValueError(f"solver must be auto, newton or lbfgs, not {solver!r}")
    small = (np.shape(x)[1] + 1) * n_classes <= NEWTON_MAX_PARAMS
    if solver == "newton" or (solver == "auto" and small and l2 > 0):
        return _fit_newton(x, y, n_classes, l2, NEWTON_MAX_ITER if max_iter is None else max_iter)
    max_iter = MAX_ITER if max_iter is None else max_iter
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    W = torch.zeros(xt.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter,
                            tolerance_grad=GRAD_TOL, tolerance_change=CHANGE_TOL, history_size=HISTORY,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = logistic_loss(xt, yt, W, b, l2)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
        loss = closure()
    grad_max = max(float(W.grad.abs().max()), float(b.grad.abs().max()))
    iterations = int(opt.state[W].get("n_iter", 0))  # LBFGS keeps its state under the first parameter
    info = {"solver": "lbfgs", "iterations": iterations, "loss": float(loss.detach()), "grad_max": grad_max,
            "converged": grad_max <= CONVERGED_GRAD}
    return W.detach().numpy(), b.detach().numpy(), info


def _fit_newton(x, y, n_classes: int, l2: float, max_iter: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Newton's method on T = [W; b] ((D + 1, C), row-major), exact Hessian, Armijo backtracking, from zero.

    The loss does not change when the same constant is added to every bias (softmax), so the Hessian is singular
    along that direction; its gradient there is zero, so adding (sum b)^2 / C to the quadratic model fixes the
    step to keep sum(b) = 0, where L-BFGS from zero stays too: the same answer."""
    X = torch.as_tensor(np.asarray(x, dtype=np.float64))
    n, d = X.shape
    X = torch.cat([X, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    C = n_classes
    onehot = torch.nn.functional.one_hot(yt, C).to(torch.float64)
    pen = torch.ones(d + 1, 1, dtype=torch.float64)
    pen[-1] = 0.0                                           # the bias is not penalised
    gauge = torch.zeros((d + 1) * C, dtype=torch.float64)
    gauge[d * C:] = 1.0 / math.sqrt(C)
    T = torch.zeros(d + 1, C, dtype=torch.float64)

    def loss_of(T):
        return float(torch.nn.functional.cross_entropy(X @ T, yt) + l2 * ((T * pen) ** 2).sum())

    it, loss = 0, loss_of(T)
    while True:
        Pr = torch.softmax(X @ T, dim=1)
        G = X.T @ (Pr - onehot) / n + 2 * l2 * T * pen
        grad_max = float(G.abs().max())
        if grad_max <= GRAD_TOL or it >= max_iter:
            break
        # H[(a,c),(b,e)] = 1/n sum_i x_ia x_ib (p_ic [c=e] - p_ic p_ie) + 2 l2 pen_a [a=b][c=e]
        B = (X[:, :, None] * Pr[:, None, :]).reshape(n, -1)
        H = -(B.T @ B) / n
        for c in range(C):
            H[c::C, c::C] += (X * Pr[:, c:c + 1]).T @ X / n
        H.diagonal().add_((2 * l2 * pen).expand(d + 1, C).reshape(-1))
        H += torch.outer(gauge, gauge)
        step = -torch.linalg.solve(H, G.reshape(-1)).reshape(d + 1, C)
        slope, t = float((G * step).sum()), 1.0
        while t > 1e-12:
            new = loss_of(T + t * step)
            if new <= loss + 1e-4 * t * slope:
                break
            t /= 2
        if t <= 1e-12:      # no decrease left at float64 precision: as close as this arithmetic gets
            break
        T, loss, it = T + t * step, new, it + 1
    info = {"solver": "newton", "iterations": it, "loss": loss, "grad_max": grad_max,
            "converged": grad_max <= CONVERGED_GRAD}
    return T[:-1].numpy(), T[-1].numpy(), info


def predict(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, D) -> (n,) class indices of the largest logit (the first one on a tie)."""
    return np.argmax(np.asarray(x, dtype=np.float64) @ W + b, axis=1)


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int,
                n_classes: int) -> np.ndarray:
    """Cosine k-NN: each test row gets the class most frequent among its k most similar training rows; a tie
    goes to the class whose tied neighbours are more similar in sum (then to the lower class). train_x (n, D),
    train_y (n,) in 0..C-1, test_x (m, D) -> (m,) class indices. Exact, in blocks of test rows."""
    if k < 1:
        raise UserError(f"--knn {k}: k must be >= 1.")
    k = min(k, len(train_x))
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
    tr = torch.as_tensor(unit(np.asarray(train_x, dtype=np.float64)))
    te = torch.as_tensor(unit(np.asarray(test_x, dtype=np.float64)))
    ty = torch.as_tensor(np.asarray(train_y, dtype=np.int64))
    rows = max(1, _KNN_BLOCK_ELEMS // max(1, len(tr)))
    out = []
    for a in range(0, len(te), rows):
        sim, nn = (te[a:a + rows] @ tr.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), n_classes, dtype=torch.float64)
        votes.scatter_add_(1, ty[nn], torch.ones_like(sim))
        # similarity sums lie in (-k, k): scaled by 1/(2k + 1) they break ties between equal counts only
        sims = torch.zeros_like(votes).scatter_add_(1, ty[nn], sim)
        out.append((votes + sims / (2 * k + 1)).argmax(dim=1))
    return torch.cat(out).numpy()


def binomial_se(p: float, n: int) -> float:
    """Standard error sqrt(p (1 - p) / n) of an accuracy p measured on n independent images."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def probe_features(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   l2: float = 1e-4, knn: int | None = None) -> dict:
    """The linear probe (and the k-NN probe with knn=K) on given splits. x (n, D) features, y (n,) integer labels.

    Returns {"train_accuracy", "test_accuracy", "test_accuracy_se", "n_classes", "n_train", "n_test",
    "classes", "chance", "optimizer": {...}, "correct": 0/1 text per test image, "knn": {...} or absent}."""
    train_x, test_x = np.asarray(train_x), np.asarray(test_x)
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise UserError(f"the probe needs (n, D) features with the same D in both splits; got {train_x.shape} "
                        f"and {test_x.shape}.")
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise UserError("every image needs a label: feature and label counts differ.")
    for name, a in (("training", train_x), ("test", test_x)):
        if not np.all(np.isfinite(a)):
            raise UserError(f"the {name} features hold NaN or Inf; the probe needs finite features.")
    classes = classes_of(np.asarray(train_y), np.asarray(test_y))
    ytr, yte = np.searchsorted(classes, train_y), np.searchsorted(classes, test_y)
    ztr, zte = standardise(train_x, test_x)
    W, b, info = fit_logistic(ztr, ytr, len(classes), l2)
    hit = predict(zte, W, b) == yte
    test_acc = float(np.mean(hit))
    result = {
        "train_accuracy": float(np.mean(predict(ztr, W, b) == ytr)),
        "test_accuracy": test_acc,
        "test_accuracy_se": binomial_se(test_acc, len(yte)),
        "n_classes": int(len(classes)), "n_train": int(len(ytr)), "n_test": int(len(yte)),
        "dim": int(train_x.shape[1]), "classes": [int(c) for c in classes],
        "chance": float(np.bincount(yte, minlength=len(classes)).max() / len(yte)),  # always the commonest class
        "optimizer": info,
        "correct": pack(hit),  # per test image, for paired tests between probes on the same images
        "warnings": [] if info["converged"] else [
            f"the probe's solver ({info['solver']}) stopped after {info['iterations']} iterations with its largest "
            f"gradient entry at {info['grad_max']:.2g}, above {CONVERGED_GRAD:g}: its accuracy may be a little off "
            "(a larger penalty, `icr probe --l2`, makes the problem easier)"],
    }
    if knn is not None:
        acc = float(np.mean(knn_predict(ztr, ytr, zte, knn, len(classes)) == yte))
        result["knn"] = {"k": int(min(knn, len(ytr))), "test_accuracy": acc,
                         "test_accuracy_se": binomial_se(acc, len(yte)), "metric": "cosine"}
    return result
