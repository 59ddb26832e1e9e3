"""What the companions' intervals (trace_s, trace_xi, effective_rank; issue 17) add to `--ci`: the jackknife with
every jackknifed statistic of stats.statistics.TABLE against the jackknife of ICR alone, on the same G groups of
moments, measured in one run (the ratio, not seconds, is the figure to compare between machines). CPU time of
this process, one BLAS thread: on a shared machine wall time mostly measures the neighbours.

Usage: python bench/jackknife.py [--d 256 512] [--groups 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):   # before numpy loads its BLAS
    os.environ.setdefault(_v, "1")

import numpy as np

from icrcli.stats.jackknife import jackknife
from icrcli.stats.moments import from_block, merge_all
from icrcli.stats.options import ScoreOptions
from icrcli.stats.statistics import BY_NAME, Parts, replicate


def groups_of(d: int, g: int, n_per_group: int = 64, k: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(d, d)) / np.sqrt(d)
    out = []
    for _ in range(g):
        n = max(n_per_group, d // (k - 1) + 2)      # enough residual degrees of freedom per group
        s = rng.normal(size=(n, 1, d)) * 2
        out.append(from_block((s + rng.normal(size=(n, k, d))) @ basis))
    return out


def interleaved(f, g, repeat: int) -> tuple[float, float]:
    """The fastest of `repeat` runs of each, taken in turns, so that a busy machine slows both alike."""
    tf, tg = [], []
    for _ in range(repeat):
        for fn, times in ((f, tf), (g, tg)):
            t = time.process_time()
            fn()
            times.append(time.process_time() - t)
    return min(tf), min(tg)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    opts = ScoreOptions(ci=True, ci_groups=a.groups)
    icr = BY_NAME["icr"]
    for d in a.d:
        groups = groups_of(d, a.groups)
        total = merge_all(groups)
        est_icr = {"icr": icr.compute(Parts(total, opts))}
        est_all = {k: v for k, v in replicate(total, opts).items()}
        t_icr, t_all = interleaved(lambda: jackknife(groups, lambda m: {"icr": icr.compute(Parts(m, opts))}, est_icr),
                                   lambda: jackknife(groups, lambda m: replicate(m, opts), est_all), a.repeat)
        print(f"D = {d}, G = {a.groups}: ICR alone {t_icr:.2f} s CPU, with trace_s, trace_xi, effective_rank "
              f"{t_all:.2f} s: ratio {t_all / t_icr:.2f}")


if __name__ == "__main__":
    main()
