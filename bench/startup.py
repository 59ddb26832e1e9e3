"""Start-up time of `icr` against a baseline, in one run (issue: --help <= 1.0x, a tiny `icr score` <= 1.5x).

Baseline: `python -c "import numpy, h5py, scipy.linalg"`, the least a tool that scores HDF5 features must load.
Measured, each as a fresh process, REPEAT times interleaved (so a busy machine slows all alike), median wall time:
  icr --help
  icr score TINY --no-cache      the statistics computed (imports numpy, h5py, scipy.linalg)
  icr score TINY                 the same request again: answered from the score cache
TINY is a 64-image HDF5 feature file (K=2, D=16) in a temporary folder, with a temporary ICR_CACHE_DIR.

Usage: python bench/startup.py [--repeat 11]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def icr_command() -> list[str]:
    """The installed `icr` script next to this Python, else `python -m icrcli`."""
    script = Path(sys.executable).with_name("icr")
    return [str(script)] if script.exists() else [sys.executable, "-m", "icrcli"]


def make_tiny(path: Path) -> None:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=rng.normal(size=(64, 2, 16)).astype(np.float32))


def wall(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=11)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="icr-startup-"))
    try:
        env = {**os.environ, "ICR_CACHE_DIR": str(tmp / "cache")}
        tiny = tmp / "tiny.h5"
        make_tiny(tiny)
        icr = icr_command()
        runs = {
            "baseline": [sys.executable, "-c", "import numpy, h5py, scipy.linalg"],
            "icr --help": [*icr, "--help"],
            "icr score (computed, --no-cache)": [*icr, "score", str(tiny), "-q", "--no-cache"],
            "icr score (cached)": [*icr, "score", str(tiny), "-q"],
        }
        wall(runs["icr score (cached)"], env)   # fills the cache (and warms the OS file cache for every run)
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.repeat):
            for name, cmd in runs.items():
                times[name].append(wall(cmd, env))
        base = statistics.median(times["baseline"])
        print(f"{'command':36s} {'median s':>9s} {'ratio':>6s}   goal")
        goals = {"icr --help": 1.0, "icr score (computed, --no-cache)": 1.5, "icr score (cached)": 1.5}
        for name, ts in times.items():
            med = statistics.median(ts)
            goal = f"<= {goals[name]:.1f}" if name in goals else ""
            print(f"{name:36s} {med:9.3f} {med / base:6.2f}   {goal}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
