"""How icr's OpenMP threads wait (icrcli.threads): PASSIVE on a busy machine unless the user chose, set before torch
loads its runtime.
(The effect on a busy machine is measured by bench/contention.py, not asserted here.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from icrcli import threads

DEMO_CKPT = sorted((Path(__file__).resolve().parents[1] / "icrcli" / "demo_data" / "rich").glob("*.safetensors"))[-1]


def test_passive_on_a_busy_machine_unless_the_user_chose():
    env = {"PATH": "/bin"}
    assert threads.configure(env, busy=True) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {"PATH": "/bin"}
    assert threads.configure(env, busy=False) == {} and env == {"PATH": "/bin"}   # quiet: the runtime's own spin
    for var, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "1000"), ("KMP_BLOCKTIME", "1")):
        env = {var: value}
        assert threads.configure(env, busy=True) == {} and env == {var: value}, var
    env = {"OMP_WAIT_POLICY": " "}          # set but empty: the runtime ignores it, and so do we
    assert threads.configure(env, busy=True) == {"OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.parametrize("counts, busy", [([1, 1, 1, 1, 1], False), ([1, 3, 1, 1, 2], False),
                                          ([2, 2, 1, 3, 2], True), ([4, 4, 4, 4, 4], True)])
def test_busy_is_the_median_of_runnable_counts(tmp_path, monkeypatch, counts, busy):
    """procs_running counts this process too: another runnable one makes 2. The median ignores a kernel thread
    that is runnable for one sample."""
    stat = tmp_path / "stat"
    seq = iter(counts)
    real_open = open

    def fake_open(path, mode="r", *a, **k):
        if str(path) == str(stat):
            stat.write_text(f"cpu  1 2 3\nprocs_running {next(seq)}\nprocs_blocked 0\n")
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    assert threads.others_runnable(samples=5, interval=0, stat=str(stat)) is busy
    assert threads.others_runnable(stat=str(tmp_path / "missing")) is None
    (tmp_path / "nostat").write_text("cpu 1 2 3\n")
    assert threads.others_runnable(stat=str(tmp_path / "nostat")) is None


def test_a_busy_process_beside_is_seen():
    if threads.others_runnable() is None:
        pytest.skip("no /proc/stat here")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time
        time.sleep(0.3)
        assert threads.others_runnable(samples=7)
    finally:
        hog.kill()
        hog.wait()


def _runtime_env(extra: dict) -> str:
    """stderr of `icr layers` (a command that loads torch) with libgomp asked to print its settings."""
    env = {k: v for k, v in os.environ.items() if k not in threads.WAIT_VARS}
    env.update({"OMP_DISPLAY_ENV": "VERBOSE", **extra})
    p = subprocess.run([sys.executable, "-m", "icrcli", "layers", str(DEMO_CKPT)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    if "OPENMP DISPLAY ENVIRONMENT" not in p.stderr or "GOMP_SPINCOUNT" not in p.stderr:
        pytest.skip("torch's OpenMP runtime here is not libgomp (it does not print GOMP_SPINCOUNT)")
    return p.stderr


@pytest.mark.slow
def test_the_runtime_torch_loads_gets_it_and_a_users_setting_stands():
    # libgomp spins 300,000 times when OMP_WAIT_POLICY is unset, and not at all when it is PASSIVE; a busy process
    # beside makes the machine busy for icr's start-up check
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert "GOMP_SPINCOUNT = '0'" in _runtime_env({})
        assert "GOMP_SPINCOUNT = '1234'" in _runtime_env({"GOMP_SPINCOUNT": "1234"})
    finally:
        hog.kill()
        hog.wait()


def test_the_entry_point_loads_neither_torch_nor_numpy_before_it_sets_the_policy():
    code = ("import sys, icrcli.cli.main, icrcli.threads\n"
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
    main = Path(threads.__file__).parent / "cli" / "main.py"
    body = main.read_text().split("def main()", 1)[1]
    assert body.index("threads.configure(") < body.index("register(")   # before any command module loads
