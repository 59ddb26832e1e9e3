"""How icr's OpenMP threads wait (icrcli.threads): PASSIVE unless the user chose, set before torch loads its runtime.
(The effect on a busy machine is measured by bench/contention.py, not asserted here.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from icrcli import threads

DEMO_CKPT = sorted((Path(__file__).resolve().parents[1] / "icrcli" / "demo_data" / "rich").glob("*.safetensors"))[-1]


def test_passive_unless_the_user_chose():
    env = {"PATH": "/bin"}
    assert threads.configure(env) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    for var, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "1000"), ("KMP_BLOCKTIME", "1")):
        env = {var: value}
        assert threads.configure(env) == {} and env == {var: value}, var
    env = {"OMP_WAIT_POLICY": " "}          # set but empty: the runtime ignores it, and so do we
    assert threads.configure(env) == {"OMP_WAIT_POLICY": "PASSIVE"}


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
    # libgomp spins 300,000 times when OMP_WAIT_POLICY is unset, and not at all when it is PASSIVE
    assert "GOMP_SPINCOUNT = '0'" in _runtime_env({})
    assert "GOMP_SPINCOUNT = '1234'" in _runtime_env({"GOMP_SPINCOUNT": "1234"})


def test_the_entry_point_loads_neither_torch_nor_numpy_before_it_sets_the_policy():
    code = ("import sys, icrcli.cli.main, icrcli.threads\n"
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
    main = Path(threads.__file__).parent / "cli" / "main.py"
    body = main.read_text().split("def main()", 1)[1]
    assert body.index("threads.configure()") < body.index("register(")   # before any command module loads
