"""icr beside a busy process (issue: one competing busy process slows it by at most 1.5x on 2 cores, and the thread
settings that achieve this slow a quiet machine by at most 5%).

Prints, measured in one run on this machine, for two workloads, each run as a fresh `icr` process with an empty
cache (ICR_CACHE_DIR in a temporary folder):
  quick demo   icr demo --quick
  sweep        icr sweep of the shipped data-rich model, 3 levels, 256 images, with --probe
the wall time quiet and beside one busy process (a `python -c "while True: pass"` child, started before and
killed after the run), and their ratio busy / quiet (goal <= 1.5). With --before it also runs icr as it was
before icrcli.threads (GOMP_SPINCOUNT=300000: libgomp's spin when OMP_WAIT_POLICY is unset, which a user's own
setting keeps), quiet, and prints quiet now / quiet before (goal <= 1.05); --before-busy adds that one beside the
busy process too (slow: minutes). Runs are interleaved REPEAT times (so a drifting load hits all alike) and the
median is taken. The load average is printed: on a machine shared with other work, "quiet" is not quiet.

Usage: python bench/contention.py [--repeat 1] [--before] [--before-busy] [--only demo|sweep]
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

DEMO = Path(__file__).resolve().parents[1] / "icrcli" / "demo_data"
BEFORE = {"GOMP_SPINCOUNT": "300000"}   # libgomp's default spin without OMP_WAIT_POLICY (its manual)


def icr_command() -> list[str]:
    """The installed `icr` script next to this Python, else `python -m icrcli`."""
    script = Path(sys.executable).with_name("icr")
    return [str(script)] if script.exists() else [sys.executable, "-m", "icrcli"]


def workloads(tmp: Path) -> dict[str, list[str]]:
    icr = icr_command()
    rich = sorted((DEMO / "rich").glob("*.safetensors"))[-1]
    return {
        "quick demo": [*icr, "demo", "--quick", "-q", "-o", str(tmp / "demo")],
        "sweep": [*icr, "sweep", str(rich), "--data", str(DEMO / "rich-images.npz"), "--sigmas", "0.05,0.3,1.5",
                  "--images", "256", "--probe", "-q", "-o", str(tmp / "sweep.json")],
    }


def clean_env(extra: dict) -> dict:
    """This environment without a wait policy of its own (so icr's is measured), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    return {**env, **extra}


def timed(cmd: list[str], env: dict, tmp: Path, busy: bool) -> float:
    cache = Path(tempfile.mkdtemp(dir=tmp, prefix="cache-"))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if hog is not None:
            time.sleep(0.5)   # the busy process is running before icr starts
        t = time.perf_counter()
        subprocess.run(cmd, env={**env, "ICR_CACHE_DIR": str(cache)}, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
        return time.perf_counter() - t
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
        shutil.rmtree(cache, ignore_errors=True)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--before", action="store_true", help="also time icr's old thread behaviour, quiet")
    ap.add_argument("--before-busy", action="store_true", help="and beside the busy process (slow)")
    ap.add_argument("--only", choices=("demo", "sweep"), default=None)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="icr-contention-"))
    try:
        loads = [load()]
        runs = {"now, quiet": ({}, False), "now, busy": ({}, True)}
        if a.before or a.before_busy:
            runs["before, quiet"] = (BEFORE, False)
        if a.before_busy:
            runs["before, busy"] = (BEFORE, True)
        jobs = {k: v for k, v in workloads(tmp).items() if a.only is None or k.endswith(a.only)}
        times = {(w, r): [] for w in jobs for r in runs}
        for _ in range(a.repeat):
            for w, cmd in jobs.items():
                for r, (extra, busy) in runs.items():
                    times[w, r].append(timed(cmd, clean_env(extra), tmp, busy))
                    loads.append(load())
        print(f"{os.cpu_count()} CPUs; load average (1, 5, 15 min) at the start {loads[0]}, after each run: "
              + "; ".join(loads[1:]))
        for w in jobs:
            med = {r: statistics.median(times[w, r]) for r in runs}
            print(f"{w}: " + ", ".join(f"{r} {med[r]:.1f} s" for r in runs))
            print(f"  busy / quiet = {med['now, busy'] / med['now, quiet']:.2f}   (goal <= 1.5)")
            if "before, quiet" in med:
                print(f"  quiet now / quiet before = {med['now, quiet'] / med['before, quiet']:.3f}   (goal <= 1.05)")
            if "before, busy" in med:
                print(f"  before: busy / quiet = {med['before, busy'] / med['before, quiet']:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
