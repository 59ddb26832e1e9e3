"""How icr's worker threads wait for work: set in the entry point, before torch or numpy start their thread pools.

torch runs its parallel loops (and MKL) on OpenMP threads. By default a thread that finishes its share keeps the
CPU busy for a while (libgomp: about 300,000 spins, a few milliseconds) in case more work comes at once. On an idle
machine that saves a wake-up; beside another busy process the spinning threads take the time slices the working
thread needs, and each of the many short parallel regions of a forward pass then waits for a thread the scheduler
has put off: `icr demo --quick` ran 6.4x slower beside one busy process on 2 cores. With OMP_WAIT_POLICY=PASSIVE
a waiting thread sleeps at once. On a quiet machine sleeping costs a wake-up per region, 13-25% of a small model's
forward passes (bench/contention.py), so PASSIVE is chosen only when another process is runnable as icr starts
(`procs_running` of /proc/stat, sampled a few times over ~20 ms): a load that begins after start-up is not seen.

The runtimes read these variables once, when they are loaded, so `configure` must run before torch (or numpy)
is imported; a user's own choice of any of them is kept. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# Any of these set by the user means they chose how OpenMP threads wait: GNU (libgomp, torch's on Linux), LLVM and
# Intel (libomp/libiomp5: KMP_BLOCKTIME, torch's on macOS).
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
POLICY = "PASSIVE"


def others_runnable(samples: int = 5, interval: float = 0.004, stat: str = "/proc/stat") -> bool | None:
    """Whether another process wants a CPU now: the median over `samples` reads of /proc/stat's procs_running
    (runnable threads, this one included) is 2 or more. None where /proc/stat cannot tell (not Linux)."""
    import time
    counts = []
    for i in range(samples):
        try:
            with open(stat, "rb") as f:
                line = next((ln for ln in f if ln.startswith(b"procs_running ")), None)
        except OSError:
            return None
        if line is None:
            return None
        counts.append(int(line.split()[1]))
        if i + 1 < samples:
            time.sleep(interval)
    return sorted(counts)[len(counts) // 2] >= 2


def configure(environ: MutableMapping[str, str] | None = None, busy: bool | None = None) -> dict[str, str]:
    """Set OMP_WAIT_POLICY=PASSIVE in `environ` (default: this process's environment) when the machine is busy
    (`busy`; None: others_runnable(), and where that cannot tell, busy), unless one of WAIT_VARS is already set.
    Returns the variables it set ({} when the user's choice stands or the machine is quiet). Call it before
    importing torch; after that it changes nothing for this process (its children still inherit it)."""
    env = os.environ if environ is None else environ
    if any(env.get(v, "").strip() for v in WAIT_VARS):
        return {}
    if busy is None:
        busy = others_runnable() is not False
    if not busy:
        return {}
    env["OMP_WAIT_POLICY"] = POLICY
    return {"OMP_WAIT_POLICY": POLICY}
