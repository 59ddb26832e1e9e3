"""Speed and memory of `icr score` (issue: floor ratio <= 1.2, not slower than in-memory numpy, flat RSS).

Prints, measured in one run on this machine:
  (a) time of `icr score` / floor, where floor = reading the same dataset chunk by chunk + one float32 X^T X
      over all N*K rows (the least any exact method must do);
  (b) time of `icr score` / an in-memory numpy implementation of the definitions (float64, as a user would write);
  (c) peak RSS of `icr score` at N=40,000 / peak RSS at N=5,000, each in a fresh process.

Usage: python bench/score.py [--n 40000] [--k 8] [--d 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def make(path: Path, n: int, k: int, d: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("features/bench", shape=(n, k, d), dtype="float32", chunks=(256, k, d))
        basis = rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d)
        for a in range(0, n, 4096):
            b = min(n, a + 4096)
            s = rng.standard_normal((b - a, 1, d), dtype=np.float32) * 2
            ds[a:b] = (s + rng.standard_normal((b - a, k, d), dtype=np.float32)) @ basis
        f.attrs["complete"] = True


def floor(path: Path) -> float:
    t = time.perf_counter()
    with h5py.File(path, "r") as f:
        ds = f["features/bench"]
        n, k, d = ds.shape
        step = 4096
        buf = np.empty((step, k, d), np.float32)
        acc = np.zeros((d, d))
        for a in range(0, n, step):
            out = buf[: min(n, a + step) - a]
            ds.read_direct(out, np.s_[a:a + len(out)])
            x = out.reshape(-1, d)
            acc += x.T @ x
    return time.perf_counter() - t


def in_memory_numpy(path: Path) -> float:
    import scipy.linalg
    t = time.perf_counter()
    with h5py.File(path, "r") as f:
        h = f["features/bench"][:].astype(np.float64)
    n, k, d = h.shape
    s = h.mean(axis=1)
    xi = (h - s[:, None]).reshape(-1, d)
    sc = s - s.mean(0)
    sigma_xi = xi.T @ xi / (n * (k - 1))
    sigma_s = sc.T @ sc / n - sigma_xi / k
    tau = 1e-3 * np.trace(sigma_xi) / d
    lam = scipy.linalg.eigh(sigma_s, sigma_xi + tau * np.eye(d), eigvals_only=True)
    _ = 1 / (1 + lam.mean())
    return time.perf_counter() - t


def icr_score(path: Path) -> float:
    from icrcli.stats.score import ScoreOptions, score_file
    t = time.perf_counter()
    score_file(path, opts=ScoreOptions(), use_cache=False)  # the computation, not the score cache
    return time.perf_counter() - t


def peak_rss_mib(path: Path) -> float:
    """Peak RSS of a fresh process that imports icr and scores the file (MiB). VmHWM, not ru_maxrss: Linux
    carries ru_maxrss across exec, so a child would report this (large) benchmark process's peak."""
    code = ("import sys; from icrcli.stats.score import score_file; score_file(sys.argv[1], use_cache=False); "
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40000)
    ap.add_argument("--n-small", type=int, default=5000)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3, help="best of R for each timing")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "big.h5", Path(tmp) / "small.h5"
        make(big, a.n, a.k, a.d)
        make(small, a.n_small, a.k, a.d, seed=1)
        floor(big), icr_score(big)  # warm the page cache and BLAS threads
        # Interleave the three so drift on a shared machine hits each alike; report the best of each.
        tf, ts, tn = [], [], []
        for _ in range(a.repeat):
            tf.append(floor(big))
            ts.append(icr_score(big))
            tn.append(in_memory_numpy(big))
        rss_big, rss_small = peak_rss_mib(big), peak_rss_mib(small)
    print(f"N={a.n} K={a.k} D={a.d} float32, {os.cpu_count()} CPUs, best of {a.repeat}")
    print(f"floor (chunked read + float32 X^T X): {min(tf):.3f} s")
    print(f"icr score:                            {min(ts):.3f} s")
    print(f"in-memory numpy (float64):            {min(tn):.3f} s")
    print(f"(a) icr score / floor          = {min(ts) / min(tf):.3f}   (goal <= 1.2)")
    print(f"(b) icr score / in-memory numpy = {min(ts) / min(tn):.3f}   (goal <= 1.0)")
    print(f"(c) peak RSS N={a.n} / N={a.n_small} = {rss_big:.0f} / {rss_small:.0f} MiB = "
          f"{rss_big / rss_small:.3f}   (goal <= 1.1)")


if __name__ == "__main__":
    main()
